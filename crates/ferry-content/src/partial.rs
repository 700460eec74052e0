//! Blocks of blobs still being written (issue 9): each block whose bytes the caller checked
//! against its CID is recorded in the CID index (`ingest_blocks` rows: the ingest file's name
//! and the byte range), so this node and every other process of the same root serve it before
//! the whole blob is committed.
//!
//! Rows are written only after the block's bytes are in the ingest file and verified; on
//! [`Ingest::commit`] they move to the `blocks` table, pointing at the blob, in the same step as
//! the blob appears; dropping an uncommitted ingest deletes them; [`Store::open`] deletes the
//! rows of ingest files that are gone (a process that crashed). Reading such a block hashes it
//! again, so a crash (even one that lost file data the row had promised) never makes unverified
//! bytes visible.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cid::Cid;
use ferry_oci::Digest;
use rusqlite::{params, Connection};
use sha2::{Digest as _, Sha256};

use crate::{Error, Ingest, Store};

/// The multihash code of sha2-256, the only hash whose blocks are indexed here.
const SHA2_256: u64 = 0x12;

/// The link between an [`Ingest`] and the CID index: set by [`Store::ingest`].
pub(crate) struct IngestIndex {
    pub(crate) db: Arc<Mutex<Connection>>,
    /// The ingest file's name in `ingest/`, the key of its rows.
    pub(crate) name: String,
    /// Whether any row was written (so commit and drop need to touch the index).
    pub(crate) used: bool,
}

impl IngestIndex {
    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Points the rows of this ingest at the committed blob `digest`, in one transaction.
    pub(crate) fn switch_to_blob(&self, digest: &Digest) -> Result<(), Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO blocks (multihash, codec, blob, offset, length, data) \
             SELECT multihash, codec, ?1, offset, length, NULL FROM ingest_blocks \
             WHERE ingest = ?2",
            params![digest.to_string(), self.name],
        )?;
        tx.execute(
            "DELETE FROM ingest_blocks WHERE ingest = ?1",
            params![self.name],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes the rows of this ingest (it was abandoned).
    pub(crate) fn forget(&self) -> Result<(), Error> {
        self.db().execute(
            "DELETE FROM ingest_blocks WHERE ingest = ?1",
            params![self.name],
        )?;
        Ok(())
    }
}

/// One place where an in-progress block's bytes are.
struct IngestRange {
    path: PathBuf,
    offset: u64,
    length: u64,
}

impl Ingest {
    /// Records blocks of this blob, given as `(cid, offset, length)` in the file, in the CID
    /// index, so that [`Store::get_block`] (in any process of the same root) finds them before
    /// the blob is committed. The caller must have written the bytes and checked them against
    /// each CID first. Only sha2-256 blocks are recorded; others are skipped.
    pub fn index_blocks(&mut self, blocks: &[(Cid, u64, u64)]) -> Result<(), Error> {
        let Some(index) = self.index.as_mut() else {
            return Ok(());
        };
        let mut db = index.db.lock().unwrap_or_else(|p| p.into_inner());
        let tx = db.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO ingest_blocks (multihash, ingest, codec, offset, length) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (cid, offset, length) in blocks {
                if cid.hash().code() != SHA2_256 {
                    continue;
                }
                stmt.execute(params![
                    cid.hash().to_bytes(),
                    index.name,
                    cid.codec() as i64,
                    *offset as i64,
                    *length as i64
                ])?;
            }
        }
        tx.commit()?;
        index.used = true;
        Ok(())
    }
}

impl Store {
    /// Every recorded place of `cid` in an ingest file.
    fn ingest_ranges(&self, cid: &Cid) -> Result<Vec<IngestRange>, Error> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT ingest, offset, length FROM ingest_blocks WHERE multihash = ?1",
        )?;
        let rows = stmt.query_map(params![cid.hash().to_bytes()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut ranges = Vec::new();
        for row in rows {
            let (name, offset, length) = row?;
            // a name is a plain file name; anything else is not ours to open
            if name.contains('/') || name.starts_with('.') {
                continue;
            }
            ranges.push(IngestRange {
                path: self.root.join("ingest").join(name),
                offset: offset as u64,
                length: length as u64,
            });
        }
        Ok(ranges)
    }

    /// The bytes of `cid` from an ingest file, checked against the CID; None when no ingest
    /// file holds it (any more).
    pub(crate) fn ingest_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, Error> {
        for range in self.ingest_ranges(cid)? {
            let file = match File::open(&range.path) {
                Ok(file) => file,
                // committed or abandoned since the look-up
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&range.path, e)),
            };
            let mut buf = vec![0u8; range.length as usize];
            match file.read_exact_at(&mut buf, range.offset) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => continue,
                Err(e) => return Err(Error::io(&range.path, e)),
            }
            if matches_cid(cid, &buf) {
                return Ok(Some(buf));
            }
            tracing::warn!(%cid, path = %range.path.display(), "ingest block does not match its CID");
        }
        Ok(None)
    }

    /// The size of `cid` in an ingest file that still exists, if any.
    pub(crate) fn ingest_block_size(&self, cid: &Cid) -> Result<Option<usize>, Error> {
        let ranges = self.ingest_ranges(cid)?;
        Ok(ranges
            .into_iter()
            .find(|range| range.path.is_file())
            .map(|range| range.length as usize))
    }

    /// Deletes the `ingest_blocks` rows whose ingest file no longer exists (its writer crashed
    /// after the file was removed, or the file was swept).
    pub(crate) fn sweep_ingest_rows(&self) -> Result<usize, Error> {
        let names: Vec<String> = {
            let db = self.db();
            let mut stmt = db.prepare("SELECT DISTINCT ingest FROM ingest_blocks")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let dir = self.root.join("ingest");
        let gone: Vec<&String> = names
            .iter()
            .filter(|name| !Path::new(&dir).join(name).exists())
            .collect();
        let mut removed = 0;
        for name in gone {
            removed += self
                .db()
                .execute("DELETE FROM ingest_blocks WHERE ingest = ?1", params![name])?;
        }
        if removed > 0 {
            tracing::info!(rows = removed, "removed index rows of interrupted ingests");
        }
        Ok(removed)
    }
}

/// Whether `data` hashes to `cid` (sha2-256 only).
fn matches_cid(cid: &Cid, data: &[u8]) -> bool {
    cid.hash().code() == SHA2_256 && cid.hash().digest() == Sha256::digest(data).as_slice()
}
