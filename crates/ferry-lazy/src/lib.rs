//! Lazy pulling of eStargz layers (`../shared/reference/formats.md` section 5): a layer is
//! mounted read-only through FUSE from its TOC alone, and a file's bytes are fetched when a
//! process reads them, one chunk (gzip member) at a time, each verified against the TOC's
//! `chunkDigest` before it is served.
//!
//! - [`Tree`]: the layer's inodes built from the TOC, as an overlayfs lower directory shows
//!   them (whiteouts, opaque directories, hardlinks).
//! - [`Layer`]: the tree plus a [`ChunkSource`] (byte ranges of the compressed blob) and a
//!   cache of verified chunks; [`IpfsSource`] reads ranges of the layer's UnixFS file.
//! - [`mount`]: serves a [`Layer`] at a directory; [`sweep_stale`] lazily unmounts the mounts
//!   left by a server that died.
#![warn(missing_docs)]

pub mod fs;
pub mod layer;
pub mod source;
pub mod tree;

pub use fs::{is_mounted, mount, sweep_stale, unmount};
pub use layer::Layer;
pub use source::{ChunkSource, IpfsSource};
pub use tree::{Chunk, Inode, Kind, Tree, ROOT_INO};

/// What failed while serving a lazy layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TOC or footer is not usable.
    #[error("eStargz TOC: {0}")]
    Toc(String),
    /// The layer's footer or TOC did not check out.
    #[error(transparent)]
    Estargz(#[from] ferry_estargz::Error),
    /// Fetching a byte range of the blob failed.
    #[error("fetch bytes {start}..{end} of the layer: {why}")]
    Fetch {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// Why.
        why: String,
    },
    /// A chunk's bytes do not match the TOC's `chunkDigest`.
    #[error("chunk at blob offset {offset}: digest {got}, the TOC says {want}")]
    ChunkDigest {
        /// The chunk's member offset.
        offset: u64,
        /// What the bytes hash to.
        got: ferry_oci::Digest,
        /// What the TOC says.
        want: ferry_oci::Digest,
    },
    /// A chunk's gzip member does not decompress to the bytes the TOC promises.
    #[error("chunk at blob offset {offset}: {why}")]
    BadChunk {
        /// The chunk's member offset.
        offset: u64,
        /// Why.
        why: String,
    },
    /// A local file or mount operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    }
}
