//! Moving images between the content store and the outside: from and to a registry ([`pull`],
//! [`push`]), from image archives and OCI layout directories ([`load_archive`]) and to
//! archives ([`save_archive`]).
//!
//! Both paths keep the bytes they are given: manifests and indexes are stored exactly as served
//! or archived (their digests are what other tools print), and every blob is verified against
//! its digest and size before it becomes visible in the store. An image name is bound only
//! after every blob it needs is in the store, so a failed pull or load never leaves a name
//! pointing at missing content (blobs already committed stay, for garbage collection to judge).
//!
//! The one exception to "bytes as given" is a Docker archive (`docker save`), which carries no
//! manifest: [`load_archive`] writes a Docker schema 2 manifest over the archived config and
//! layers, byte for byte as containerd's importer does, so the image digest matches
//! `ctr images import`.
#![warn(missing_docs)]

mod archive;
mod auth;
mod compress;
mod connect;
mod docker;
mod error;
mod estargz;
mod json;
mod layout;
mod pull;
mod push;
mod save;
pub mod server;

pub use archive::{load_archive, LoadedImage};
pub use auth::Auth;
pub use compress::{recompress, Compression};
pub use connect::login;
pub use error::{Error, ErrorKind};
pub use estargz::{convert_estargz, ConvertEvent, EstargzOptions};
pub use pull::{pull, BlobRanges, PullEvent, PullOptions};
pub use push::{push, PlatformChoice, PushEvent, PushOptions};
pub use save::{save_archive, ArchiveFormat, SaveImage, SaveOptions};
