//! Layer application and the overlay snapshotter.
//!
//! An image layer is a tar stream (gzip, zstd or uncompressed). [`decompress`] opens a layer
//! blob as a plain tar stream, [`apply_layer`] writes one tar stream into an empty directory in
//! overlayfs diff form, and [`Snapshotter`] keeps one such directory per chain ID and mounts
//! overlayfs over a stack of them for a container.
//!
//! # Lifecycle of a snapshot
//!
//! - **committed** (a `name`, the chain ID): created by [`Snapshotter::ensure`], which applies
//!   the layer into a temporary directory, checks its diff ID and renames it into place. A
//!   committed snapshot is never changed again; it is shared by every image and container that
//!   has the same chain of layers.
//! - **active** (a `key`): created by [`Snapshotter::mount_active`] as an upper and a work
//!   directory over a stack of committed snapshots, mounted at a target; removed (unmounted and
//!   deleted) by [`Snapshotter::remove_active`].
//!
//! # Safety of layer application
//!
//! A layer is untrusted input. No entry can create or change anything outside the target
//! directory: names that climb above the root are refused, symlinks met in parent directories
//! are followed as if the target were `/` (as containerd confines them), the last component of a
//! name is never followed, and hardlinks must point at a file inside the target.
#![warn(missing_docs)]

mod apply;
mod decompress;
mod error;
mod fs;
mod resolve;
mod snapshotter;

pub use apply::{apply_layer, ApplyStats};
pub use decompress::{decompress, limit};
pub use error::{EntryError, Error};
pub use snapshotter::{Snapshot, Snapshotter};
