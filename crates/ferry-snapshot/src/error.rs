//! Errors of layer application and the snapshotter.

use std::io;
use std::path::PathBuf;

/// An error of this crate.
///
/// Each message says only its own part; the cause (if any) is its [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The start of a layer blob could not be read.
    #[error("read layer blob")]
    ReadBlob(#[source] io::Error),

    /// The tar stream could not be read or parsed.
    #[error("read layer tar stream")]
    ReadTar(#[source] io::Error),

    /// One entry of a layer could not be applied.
    #[error("layer entry {entry:?}")]
    Entry {
        /// The entry's name as written in the tar stream.
        entry: String,
        /// Why it was not applied.
        #[source]
        reason: EntryError,
    },

    /// A diff ID or chain ID is not `sha256:` and 64 lowercase hex digits.
    #[error("invalid layer digest {0:?}")]
    InvalidDigest(String),

    /// The applied tar stream's digest differs from the diff ID the image records.
    #[error("layer tar stream has digest {actual}, the image expects {expected}")]
    DiffIdMismatch {
        /// The diff ID from the image config.
        expected: String,
        /// The digest of the stream that was applied.
        actual: String,
    },

    /// An active snapshot key is empty or not a plain file name.
    #[error("invalid active snapshot key {0:?}")]
    InvalidKey(String),

    /// An active snapshot with this key exists already.
    #[error("active snapshot {0:?} already exists")]
    ActiveExists(String),

    /// A path cannot be written into overlayfs mount options.
    #[error("path {0:?} cannot be used as an overlay layer (it contains ',', ':' or '\\\\')")]
    OverlayPath(PathBuf),

    /// The overlayfs mount options are longer than the kernel accepts.
    #[error("overlay mount options for {layers} layers are {len} bytes, over the limit of {max}")]
    MountOptionsTooLong {
        /// How many lower directories were given.
        layers: usize,
        /// Length of the option string.
        len: usize,
        /// The longest option string the kernel takes.
        max: usize,
    },

    /// Mounting overlayfs failed.
    #[error("mount overlay at {target:?}")]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The error from mount(2).
        #[source]
        source: io::Error,
    },

    /// Unmounting failed.
    #[error("unmount {target:?}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The error from umount2(2).
        #[source]
        source: io::Error,
    },

    /// A filesystem operation of the snapshotter failed.
    #[error("{op} {path:?}")]
    Io {
        /// What was being done, as a short verb phrase.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error from the system.
        #[source]
        source: io::Error,
    },
}

/// Why one tar entry was not applied.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The name has a `..` component that climbs above the layer root.
    #[error("path climbs above the layer root")]
    EscapesRoot,

    /// A hardlink's target climbs above the layer root.
    #[error("hardlink target {0:?} climbs above the layer root")]
    HardlinkEscapesRoot(String),

    /// A hardlink's target, resolved inside the layer root, names nothing.
    #[error("hardlink target {0:?} does not exist inside the layer root")]
    HardlinkTargetMissing(String),

    /// A hardlink's target is a directory.
    #[error("hardlink target {0:?} is a directory")]
    HardlinkToDirectory(String),

    /// Resolving the parent directory met more than 40 symlinks (as Linux's ELOOP).
    #[error("more than 40 symlinks met while resolving {0:?}")]
    TooManySymlinks(String),

    /// A parent of the entry exists and is not a directory.
    #[error("parent {0:?} is not a directory")]
    NotADirectory(String),

    /// The entry names the layer root itself and is not a directory.
    #[error("the layer root can only be a directory")]
    RootNotDirectory,

    /// A whiteout `.wh.NAME` whose NAME is empty, `.` or `..`.
    #[error("whiteout names no file")]
    BadWhiteout,

    /// The tar entry type is not one a layer may hold.
    #[error("unsupported tar entry type {0}")]
    UnsupportedType(u8),

    /// The header could not be decoded (a number, a PAX record, a link name).
    #[error("bad tar header")]
    Header(#[source] io::Error),

    /// The stream ended before the entry's data did.
    #[error("tar stream ends after {written} of {size} bytes of the entry")]
    Truncated {
        /// Bytes that were read.
        written: u64,
        /// Bytes the header promised.
        size: u64,
    },

    /// A filesystem operation failed.
    #[error("{op} {path:?}")]
    Io {
        /// What was being done, as a short verb phrase.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error from the system.
        #[source]
        source: io::Error,
    },
}

impl EntryError {
    /// Wrap an I/O error with the operation and path it came from.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| EntryError::Io { op, path, source }
    }
}

impl Error {
    /// Wrap an I/O error with the operation and path it came from.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
