//! The content store: every blob once by digest, and the metadata beside it.
//!
//! Layout under the root (`--root`):
//!
//! - `blobs/sha256/<hex>`: each blob, written to `ingest/` first, verified (size and digest),
//!   then renamed into place and the directory synced. A blob file never changes once there.
//! - `meta.db`: SQLite in WAL mode, so several ferry processes (the CLI while a daemon runs)
//!   read and write it at once. It holds images (a name bound to a descriptor), the CID index
//!   (where each IPFS block's bytes are: a byte range of a blob file, or inline for dag-pb
//!   nodes) and pins.
//! - `gc.lock`: shared by operations that add content ([`Store::lease`]), taken alone by the
//!   garbage collector ([`Store::exclusive`]).
//!
//! Lifecycle of a blob: [`Store::ingest`] gives an [`Ingest`] (a temporary file); writes go to it
//! in order or at offsets; [`Ingest::commit`] verifies and makes the blob visible; dropping an
//! uncommitted ingest deletes its file. A crash leaves at most a file in `ingest/`, never a
//! partial blob under `blobs/`.
//!
//! Blocks of a blob still being written can be served at once (issue 9): once the caller has
//! checked a block's bytes against its CID, [`Ingest::index_blocks`] records it in the CID index
//! (`ingest_blocks` rows of `meta.db`, naming the ingest file and the byte range), so every
//! process of the same root finds it through [`Store::get_block`]. The commit points those rows
//! at the blob, dropping the ingest removes them, and [`Store::open`] removes rows whose ingest
//! file is gone (a crash). Such a block is hashed again each time it is read, so a crash can
//! never make unverified bytes visible.
#![warn(missing_docs)]

mod blobs;
mod error;
mod gc;
mod meta;
mod partial;

pub use blobs::{Ingest, ScratchDir, VerifiedBlob};
pub use error::{Error, ErrorKind};
pub use gc::{Exclusive, GcReport, Lease};
pub use meta::{BlockEntry, BlockLocation, ImageRecord};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The content store of one root directory. Cheap to share behind an `Arc`; every method takes
/// `&self` and is safe to call from several threads and processes at once.
pub struct Store {
    root: PathBuf,
    db: Arc<Mutex<rusqlite::Connection>>,
}

impl Store {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, Error> {
        let root = root.into();
        for dir in ["blobs/sha256", "ingest", "tmp"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        let db_path = root.join("meta.db");
        let db = meta::open_db(&db_path).map_err(|e| explain_open_failure(&db_path, e))?;
        blobs::sweep_ingest(&root.join("ingest"));
        blobs::sweep_tmp(&root.join("tmp"));
        let store = Store {
            root,
            db: Arc::new(Mutex::new(db)),
        };
        store.sweep_ingest_rows()?;
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A directory for scratch files on the same filesystem as the blobs (so they can be
    /// renamed into the store).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// SQLite reports a full or read-only filesystem as a generic I/O or open error; say which.
fn explain_open_failure(db_path: &Path, e: Error) -> Error {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Some(dir) = db_path.parent() else {
        return e;
    };
    match statvfs(dir) {
        Ok(fs) if fs.flags().contains(FsFlags::ST_RDONLY) => {
            Error::io(db_path, std::io::Error::from_raw_os_error(libc::EROFS))
        }
        Ok(fs) if fs.blocks_available() == 0 => {
            Error::io(db_path, std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests;
