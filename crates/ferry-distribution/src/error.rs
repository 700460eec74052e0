//! The errors of pulling and loading images.

use std::fmt;
use std::path::{Path, PathBuf};

use ferry_oci::Digest;

/// What went wrong getting an image into the store. Each message is one line naming the
/// reference or archive, then what failed (with the digest involved).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pull from a registry failed.
    #[error("pull {reference}: {why}")]
    Pull {
        /// The reference as given, normalised (`127.0.0.1:5000/nope:latest`).
        reference: String,
        /// The kind of failure.
        kind: ErrorKind,
        /// What failed.
        why: String,
    },
    /// A push to a registry failed.
    #[error("push {reference}: {why}")]
    Push {
        /// The reference pushed to, normalised.
        reference: String,
        /// The kind of failure.
        kind: ErrorKind,
        /// What failed.
        why: String,
    },
    /// Checking credentials against a registry (`login`) failed.
    #[error("login {registry}: {why}")]
    Login {
        /// The registry, `HOST[:PORT]`.
        registry: String,
        /// The kind of failure.
        kind: ErrorKind,
        /// What failed.
        why: String,
    },
    /// Recompressing an image's layers failed.
    #[error("compress {image}: {why}")]
    Compress {
        /// The image's manifest or index digest.
        image: String,
        /// The kind of failure.
        kind: ErrorKind,
        /// What failed.
        why: String,
    },
    /// Converting an image's layers (to eStargz) failed.
    #[error("convert {image}: {why}")]
    Convert {
        /// The image's manifest or index digest.
        image: String,
        /// The kind of failure.
        kind: ErrorKind,
        /// What failed.
        why: String,
    },
    /// Saving images to an archive failed.
    #[error("save {what}: {why}")]
    Save {
        /// The image involved (its name or digest), or `archive` for a failed write.
        what: String,
        /// The kind of failure.
        kind: ErrorKind,
        /// What failed.
        why: String,
    },
    /// Loading an archive or layout directory failed.
    #[error("load {}: {why}", path.display())]
    Load {
        /// The archive file or layout directory.
        path: PathBuf,
        /// The kind of failure.
        kind: ErrorKind,
        /// What failed.
        why: String,
    },
}

/// The kinds of failure that survive wrapping (DESIGN.md "Errors and exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The image, manifest or blob does not exist (in the registry or the archive).
    NotFound,
    /// The registry wants credentials, or refused the ones given.
    Unauthorized,
    /// The input is wrong: a bad reference, a blob that does not match its digest, a hostile
    /// or malformed archive.
    InvalidInput,
    /// Something ferry does not handle (a schema 1 manifest, an IPFS reference here).
    Unsupported,
    /// The registry, the network or the local disk failed; trying again may work.
    Unavailable,
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Pull { kind, .. }
            | Error::Push { kind, .. }
            | Error::Login { kind, .. }
            | Error::Save { kind, .. }
            | Error::Compress { kind, .. }
            | Error::Convert { kind, .. }
            | Error::Load { kind, .. } => *kind,
        }
    }
}

/// A failure inside this crate before it is tied to the reference or archive it concerns.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) kind: ErrorKind,
    pub(crate) why: String,
}

impl Fail {
    pub(crate) fn new(kind: ErrorKind, why: impl fmt::Display) -> Fail {
        Fail {
            kind,
            why: one_line(&why.to_string()),
        }
    }

    pub(crate) fn invalid(why: impl fmt::Display) -> Fail {
        Fail::new(ErrorKind::InvalidInput, why)
    }

    /// A content store failure while handling `digest`.
    pub(crate) fn store(digest: &Digest, e: ferry_content::Error) -> Fail {
        Fail::new(content_kind(&e), format!("blob {digest}: {e}"))
    }

    /// A content store failure not tied to one blob (binding a name, opening an ingest).
    pub(crate) fn store_other(e: ferry_content::Error) -> Fail {
        Fail::new(content_kind(&e), e)
    }

    /// A file operation on `path` failed.
    pub(crate) fn io(path: &Path, e: std::io::Error) -> Fail {
        if e.kind() == std::io::ErrorKind::StorageFull {
            let dir = path.parent().unwrap_or(path);
            let why = format!("no space left on device (writing in {})", dir.display());
            return Fail::new(ErrorKind::Unavailable, why);
        }
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                ErrorKind::InvalidInput
            }
            _ => ErrorKind::Unavailable,
        };
        match path.as_os_str().is_empty() {
            true => Fail::new(kind, e.to_string()),
            false => Fail::new(kind, format!("{}: {e}", path.display())),
        }
    }

    /// The same failure, prefixed with what it concerns (`blob sha256:...`).
    pub(crate) fn context(self, what: &str) -> Fail {
        Fail {
            kind: self.kind,
            why: format!("{what}: {}", self.why),
        }
    }

    pub(crate) fn into_pull(self, reference: &str) -> Error {
        Error::Pull {
            reference: reference.to_string(),
            kind: self.kind,
            why: self.why,
        }
    }

    pub(crate) fn into_push(self, reference: &str) -> Error {
        Error::Push {
            reference: reference.to_string(),
            kind: self.kind,
            why: self.why,
        }
    }

    pub(crate) fn into_convert(self, image: &str) -> Error {
        Error::Convert {
            image: image.to_string(),
            kind: self.kind,
            why: self.why,
        }
    }

    pub(crate) fn into_compress(self, image: &str) -> Error {
        Error::Compress {
            image: image.to_string(),
            kind: self.kind,
            why: self.why,
        }
    }

    pub(crate) fn into_save(self, what: &str) -> Error {
        Error::Save {
            what: what.to_string(),
            kind: self.kind,
            why: self.why,
        }
    }

    pub(crate) fn into_load(self, path: &Path) -> Error {
        Error::Load {
            path: path.to_path_buf(),
            kind: self.kind,
            why: self.why,
        }
    }
}

fn content_kind(e: &ferry_content::Error) -> ErrorKind {
    match e.kind() {
        ferry_content::ErrorKind::NotFound => ErrorKind::NotFound,
        ferry_content::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
        ferry_content::ErrorKind::Unavailable => ErrorKind::Unavailable,
    }
}

/// Messages from registries and libraries may span lines; ours are one line each.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_error_names_the_reference_and_keeps_its_kind() {
        let e = Fail::new(ErrorKind::NotFound, "manifest\nunknown ").into_pull("r:5000/a:b");
        assert_eq!(e.to_string(), "pull r:5000/a:b: manifest unknown");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
