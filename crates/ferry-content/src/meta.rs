//! Metadata in SQLite: images, the CID index, pins.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use cid::Cid;
use ferry_oci::{Descriptor, Digest};
use rusqlite::{params, Connection, OptionalExtension};

use crate::{Error, Store};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blocks (
    multihash BLOB PRIMARY KEY,
    codec INTEGER NOT NULL,
    blob TEXT,
    offset INTEGER,
    length INTEGER,
    data BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    multihash BLOB PRIMARY KEY,
    blob TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ingest_blocks (
    multihash BLOB NOT NULL,
    ingest TEXT NOT NULL,
    codec INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    PRIMARY KEY (multihash, ingest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ingest_blocks_by_file ON ingest_blocks (ingest);
CREATE TABLE IF NOT EXISTS pins (
    cid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created INTEGER NOT NULL
);
";

pub(crate) fn open_db(path: &Path) -> Result<Connection, Error> {
    let db = Connection::open(path)?;
    // Another process (the daemon or a second CLI) may hold the write lock for a moment.
    db.busy_timeout(Duration::from_secs(30))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.execute_batch(SCHEMA)?;
    Ok(db)
}

/// An image: a name bound to the descriptor of a manifest or index.
#[derive(Clone, Debug)]
pub struct ImageRecord {
    /// The full reference (`127.0.0.1:5000/a:b`) or, for IPFS images, the bare CID.
    pub name: String,
    /// The manifest or index the name points at.
    pub target: Descriptor,
    /// When the name was last bound (Unix seconds).
    pub updated: i64,
}

/// Where a block's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockLocation {
    /// A byte range of a stored blob file (raw leaves: the blob bytes are not copied).
    Blob {
        /// The blob holding the bytes.
        digest: Digest,
        /// Offset in the blob.
        offset: u64,
        /// Number of bytes.
        length: u64,
    },
    /// The block's bytes themselves (dag-pb nodes, a few hundred bytes each).
    Inline(Vec<u8>),
}

/// One row of the CID index.
#[derive(Clone, Debug)]
pub struct BlockEntry {
    /// The block's CID.
    pub cid: Cid,
    /// Where its bytes are.
    pub location: BlockLocation,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Store {
    pub(crate) fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (it has its own
        // transactions), so a poisoned lock is still usable.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds `name` to `target`, replacing an earlier binding.
    pub fn put_image(&self, name: &str, target: &Descriptor) -> Result<(), Error> {
        let json = serde_json::to_string(target).map_err(|e| Error::Corrupt {
            what: name.into(),
            why: e.to_string(),
        })?;
        self.db().execute(
            "INSERT OR REPLACE INTO images (name, target, updated) VALUES (?1, ?2, ?3)",
            params![name, json, now()],
        )?;
        Ok(())
    }

    /// Removes the name `name`; true when it existed. The content stays until collected.
    pub fn delete_image(&self, name: &str) -> Result<bool, Error> {
        let n = self
            .db()
            .execute("DELETE FROM images WHERE name = ?1", params![name])?;
        Ok(n > 0)
    }

    /// The image called `name`, if any.
    pub fn get_image(&self, name: &str) -> Result<Option<ImageRecord>, Error> {
        let row = self
            .db()
            .query_row(
                "SELECT name, target, updated FROM images WHERE name = ?1",
                params![name],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(image_record).transpose()
    }

    /// Every image, sorted by name.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, Error> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT name, target, updated FROM images ORDER BY name")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(image_record).collect()
    }

    /// Records where the bytes of `entries` are, in one transaction. Blocks already indexed
    /// keep their first location.
    pub fn put_blocks(&self, entries: &[BlockEntry]) -> Result<(), Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO blocks (multihash, codec, blob, offset, length, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in entries {
                let mh = e.cid.hash().to_bytes();
                let codec = e.cid.codec() as i64;
                match &e.location {
                    BlockLocation::Blob {
                        digest,
                        offset,
                        length,
                    } => stmt.execute(params![
                        mh,
                        codec,
                        digest.to_string(),
                        *offset as i64,
                        *length as i64,
                        None::<Vec<u8>>
                    ])?,
                    BlockLocation::Inline(data) => stmt.execute(params![
                        mh,
                        codec,
                        None::<String>,
                        None::<i64>,
                        None::<i64>,
                        data
                    ])?,
                };
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Where the block `cid` is, if indexed. Blocks are keyed by multihash, as kubo keys them,
    /// so a CIDv0 and a CIDv1 of the same block find the same bytes.
    pub fn block_location(&self, cid: &Cid) -> Result<Option<BlockLocation>, Error> {
        let row = self
            .db()
            .query_row(
                "SELECT blob, offset, length, data FROM blocks WHERE multihash = ?1",
                params![cid.hash().to_bytes()],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<Vec<u8>>>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some(row) = row else { return Ok(None) };
        let corrupt = |why: &str| Error::Corrupt {
            what: format!("block {cid}"),
            why: why.into(),
        };
        match row {
            (_, _, _, Some(data)) => Ok(Some(BlockLocation::Inline(data))),
            (Some(blob), Some(offset), Some(length), None) => Ok(Some(BlockLocation::Blob {
                digest: blob.parse().map_err(|_| corrupt("bad blob digest"))?,
                offset: offset as u64,
                length: length as u64,
            })),
            _ => Err(corrupt("neither inline bytes nor a blob range")),
        }
    }

    /// Whether the block `cid` is indexed and its bytes present, in a blob or in the ingest
    /// file of a blob still being written ([`crate::Ingest::index_blocks`]).
    pub fn has_block(&self, cid: &Cid) -> Result<bool, Error> {
        Ok(self.block_size(cid)?.is_some())
    }

    /// The size of block `cid`, if held (indexed in a blob or inline, or in an ingest file).
    pub fn block_size(&self, cid: &Cid) -> Result<Option<usize>, Error> {
        match self.block_location(cid)? {
            Some(BlockLocation::Inline(data)) => Ok(Some(data.len())),
            Some(BlockLocation::Blob { digest, length, .. }) if self.has_blob(&digest) => {
                Ok(Some(length as usize))
            }
            Some(BlockLocation::Blob { .. }) => Ok(None),
            None => self.ingest_block_size(cid),
        }
    }

    /// The bytes of block `cid`, if held (indexed, or in the ingest file of a blob still being
    /// written, then checked against the CID).
    pub fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, Error> {
        if let Some(location) = self.block_location(cid)? {
            return self.read_location(location);
        }
        if let Some(data) = self.ingest_block(cid)? {
            return Ok(Some(data));
        }
        // The ingest may have been committed between the two look-ups.
        match self.block_location(cid)? {
            Some(location) => self.read_location(location),
            None => Ok(None),
        }
    }

    fn read_location(&self, location: BlockLocation) -> Result<Option<Vec<u8>>, Error> {
        match location {
            BlockLocation::Inline(data) => Ok(Some(data)),
            BlockLocation::Blob {
                digest,
                offset,
                length,
            } => {
                let path = self.blob_path(&digest);
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io(&path, e)),
                };
                let mut buf = vec![0u8; length as usize];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| Error::io(&path, e))?;
                Ok(Some(buf))
            }
        }
    }

    /// Records that the UnixFS file `cid` holds exactly the bytes of blob `digest`.
    pub fn put_file(&self, cid: &Cid, digest: &Digest) -> Result<(), Error> {
        self.db().execute(
            "INSERT OR REPLACE INTO files (multihash, blob) VALUES (?1, ?2)",
            params![cid.hash().to_bytes(), digest.to_string()],
        )?;
        Ok(())
    }

    /// The blob holding the bytes of UnixFS file `cid`, if it is stored whole.
    pub fn file_blob(&self, cid: &Cid) -> Result<Option<Digest>, Error> {
        let blob: Option<String> = self
            .db()
            .query_row(
                "SELECT blob FROM files WHERE multihash = ?1",
                params![cid.hash().to_bytes()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(blob) = blob else { return Ok(None) };
        let digest: Digest = blob.parse().map_err(|_| Error::Corrupt {
            what: format!("file {cid}"),
            why: "bad blob digest".into(),
        })?;
        Ok(self.has_blob(&digest).then_some(digest))
    }

    /// Pins `cid` (recursively: the DAGs of everything it refers to) under `name`.
    pub fn pin(&self, cid: &Cid, name: &str) -> Result<(), Error> {
        self.db().execute(
            "INSERT OR REPLACE INTO pins (cid, name, created) VALUES (?1, ?2, ?3)",
            params![cid.to_string(), name, now()],
        )?;
        Ok(())
    }

    /// Removes the pin of `cid` (its content stays until collected); true when it was pinned.
    pub fn unpin(&self, cid: &Cid) -> Result<bool, Error> {
        let n = self
            .db()
            .execute("DELETE FROM pins WHERE cid = ?1", params![cid.to_string()])?;
        Ok(n > 0)
    }

    /// Every pinned CID with the name it was pinned under.
    pub fn pins(&self) -> Result<Vec<(String, String)>, Error> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT cid, name FROM pins ORDER BY cid")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

fn image_record((name, target, updated): (String, String, i64)) -> Result<ImageRecord, Error> {
    let target = serde_json::from_str(&target).map_err(|e| Error::Corrupt {
        what: format!("image {name}"),
        why: e.to_string(),
    })?;
    Ok(ImageRecord {
        name,
        target,
        updated,
    })
}
