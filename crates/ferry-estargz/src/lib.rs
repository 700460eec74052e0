//! The eStargz layer format (`../shared/reference/formats.md` section 5): a gzip layer whose
//! members start at every regular file's payload and chunk, ending with a table of contents
//! (`stargz.index.json`) and a 51-byte footer that says where the TOC starts. Any gzip/tar
//! reader still reads the layer; a lazy reader fetches the footer, the TOC, then only the
//! chunks it needs, each verified against the TOC's `chunkDigest`.
#![warn(missing_docs)]

pub mod build;
pub mod footer;
pub mod read;
mod scan;
pub mod toc;
pub mod verify;

#[cfg(test)]
mod tests;

pub use build::{build, BuildOptions, Built, DEFAULT_COMPRESSION_LEVEL};
pub use footer::{build_footer, parse_footer, FOOTER_SIZE};
pub use read::{
    footer_range, read_toc, toc_from_member, toc_json_from_member, toc_range, ReadToc, MAX_TOC_SIZE,
};
pub use toc::{Toc, TocEntry};
pub use verify::verify_layer;

/// Layer annotation: the digest of the TOC's JSON bytes (as stored in `stargz.index.json`).
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Layer annotation: the size of the decompressed layer (its DiffID stream), decimal.
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// The TOC's name in the layer's tar stream.
pub const TOC_NAME: &str = "stargz.index.json";
/// Landmark: the files before it are prioritized (prefetched).
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Landmark: nothing is prioritized.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// The single byte a landmark file holds.
pub const LANDMARK_CONTENTS: u8 = 0x0f;
/// The default size of a chunk of a large file (4 MiB), as stargz-snapshotter's builder.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// What is wrong with an eStargz layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The last bytes of the blob are not an eStargz footer.
    #[error("not an eStargz footer: {0}")]
    Footer(String),
    /// The TOC could not be decoded or breaks the format's rules.
    #[error("eStargz TOC: {0}")]
    Toc(String),
    /// The layer's tar stream is malformed or holds what the format cannot carry.
    #[error("layer tar: {0}")]
    Tar(String),
    /// Reading or writing a layer failed.
    #[error("{0}")]
    Io(String),
    /// A build option is out of range.
    #[error("invalid eStargz option: {0}")]
    Options(String),
    /// A chunk's bytes do not match the TOC.
    #[error("eStargz chunk: {0}")]
    Chunk(String),
}
