//! Conversions of images. For now: the IPFS image format that nerdctl defines
//! (reference/nerdctl-ipfs.md section 1), in both directions.
#![warn(missing_docs)]

pub mod ipfs;

/// What went wrong converting an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] ferry_content::Error),
    /// The IPFS node failed.
    #[error(transparent)]
    Ipfs(#[from] ferry_ipfs::Error),
    /// A manifest, index or descriptor could not be decoded.
    #[error("{what}: {why}")]
    Invalid {
        /// The blob or CID involved.
        what: String,
        /// Why it was refused.
        why: String,
    },
    /// The image has nothing for the wanted platform.
    #[error("image {image} has no manifest for {platform}")]
    NoPlatform {
        /// The image.
        image: String,
        /// The platform asked for.
        platform: String,
    },
}

impl Error {
    pub(crate) fn invalid(what: impl ToString, why: impl ToString) -> Error {
        Error::Invalid {
            what: what.to_string(),
            why: why.to_string(),
        }
    }
}
