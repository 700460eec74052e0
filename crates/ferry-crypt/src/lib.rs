//! Encrypted image layers as containers/ocicrypt makes them, so images encrypted by ferry open
//! in skopeo, containerd's imgcrypt and nerdctl, and theirs open in ferry.
//!
//! A layer is encrypted with `AES_256_CTR_HMAC_SHA256` ([`cipher`]); its key, nonce and plaintext
//! digest (the private options) are wrapped for the recipients of each scheme ([`jwe`],
//! [`pkcs7`], [`openpgp`]) and stored with the
//! public options (the HMAC) as annotations of the layer descriptor. The config stays in clear.
//! [`image`] converts whole images in a [`ferry_content::Store`] and opens encrypted layers for
//! unpacking.
#![warn(missing_docs)]

pub mod cipher;
pub mod image;
pub mod jwe;
pub mod keys;
pub mod openpgp;
pub mod pkcs7;

pub use image::{decrypt_image, encrypt_image, open_layer, KeyRing, Recipient};
pub use keys::{KeySpec, PrivateKey, PublicKey};

use std::path::Path;

/// What went wrong encrypting or decrypting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key or recipient file cannot be used.
    #[error("key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An encrypted layer none of the keys opens.
    #[error(
        "layer {layer} is encrypted and no key opens it (tried {tried}; the layer has {wrapped})"
    )]
    NoKey {
        /// The layer's digest.
        layer: ferry_oci::Digest,
        /// The keys tried, by kind.
        tried: String,
        /// The key wrappings the layer carries.
        wrapped: String,
    },
    /// Authentication failed: the data was altered, truncated or is not what it claims.
    #[error("integrity check failed: {0}")]
    Integrity(&'static str),
    /// Annotations, options or JWE text that cannot be read.
    #[error("invalid encryption metadata: {0}")]
    Format(String),
    /// A request that makes no sense for this image.
    #[error("{0}")]
    Invalid(String),
    /// The system random source failed.
    #[error("random number generator: {0}")]
    Random(String),
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] ferry_content::Error),
    /// Reading or writing a layer failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Error {
    fn key(path: &Path, reason: impl std::fmt::Display) -> Error {
        Error::Key {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}
