//! References, media types, platforms and the OCI image structures ferry reads and writes.
//!
//! The structures mirror the OCI image-spec Go types field for field and in the same order, and
//! [`go_json`] encodes them as Go's `encoding/json` does, because the IPFS image format hashes
//! re-encoded manifests: the same image must give the same bytes (and so the same CID) as
//! nerdctl gives it.
#![warn(missing_docs)]

mod digest;
pub mod go_json;
pub mod media;
mod reference;
mod spec;

pub use digest::{Digest, DigestError, Sha256Writer};
pub use reference::{Reference, ReferenceError};
pub use spec::{Descriptor, ImageConfig, Index, Manifest, Platform, ProcessConfig, RootFs};
