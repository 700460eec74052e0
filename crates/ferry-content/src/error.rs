//! The content store's errors.

use std::path::{Path, PathBuf};

use ferry_oci::Digest;

/// What went wrong in the content store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Stored metadata could not be decoded.
    #[error("metadata of {what} is corrupt: {why}")]
    Corrupt {
        /// The record.
        what: String,
        /// The decoding error.
        why: String,
    },
    /// Written bytes did not hash to the expected digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What the descriptor said.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Written bytes were not the expected size.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// What the descriptor said.
        expected: u64,
        /// What was written.
        actual: u64,
    },
    /// A stored blob no longer hashes to its name (the disk or someone changed it).
    #[error("blob {digest} is corrupt: its bytes hash to {actual}")]
    CorruptBlob {
        /// The blob.
        digest: Digest,
        /// What its bytes hash to now.
        actual: Digest,
    },
    /// Something asked for is not in the store.
    #[error("{0} not found")]
    NotFound(String),
    /// Garbage collection waited too long for running operations (their leases) to end.
    #[error("other operations on this root (a pull, load, push or run) are still running")]
    Busy,
}

/// The kinds of error that survive wrapping (DESIGN.md "Errors and exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not in the store.
    NotFound,
    /// Bad input: a digest or size that does not match.
    InvalidInput,
    /// The machine failed us: I/O or database.
    Unavailable,
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => ErrorKind::InvalidInput,
            Error::CorruptBlob { .. } => ErrorKind::Unavailable,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            _ => ErrorKind::Unavailable,
        }
    }
}
