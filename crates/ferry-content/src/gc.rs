//! Garbage collection: removing blobs, CID-index rows and file rows that nothing refers to.
//!
//! Roots are the image names (each bound to a manifest or index), the pins (each an IPFS DAG)
//! and digests the caller names (the images of kept containers). From the roots, marking
//! follows every descriptor (`{"digest", "size"}` object) inside JSON blobs (top descriptors,
//! manifests, indexes) and every link of the DAGs of live files. Everything unmarked goes.
//!
//! Operations that add content hold a [`Lease`] from [`Store::lease`] for their whole run:
//! a blob committed by a pull is referred to by no name until the pull binds one at the end,
//! and the lease is what keeps the collector away from it meanwhile. Leases are shared
//! `flock`s on `ROOT/gc.lock`, so they span processes (a CLI and the daemon) and vanish with
//! a process that dies; the collector takes the lock exclusively ([`Store::exclusive`]), waiting
//! a bounded time.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use cid::Cid;
use ferry_oci::Digest;
use rusqlite::params;

use crate::{Error, Store};

/// JSON blobs larger than this are not searched for descriptors (manifests are a few KiB).
const MAX_JSON: u64 = 4 << 20;

/// A hold on the store that keeps the collector from running; dropped, it lets it run.
pub struct Lease {
    _lock: File,
}

/// The collector's hold on the store: no lease can be taken while it lives.
pub struct Exclusive {
    _lock: File,
}

/// What a collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// The blobs removed, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// CID-index rows removed (blocks and files).
    pub rows: usize,
}

impl GcReport {
    /// Bytes of blobs removed.
    pub fn bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, size)| size).sum()
    }
}

impl Store {
    /// Takes a lease: until it is dropped, [`Store::exclusive`] in any process waits.
    pub fn lease(&self) -> Result<Lease, Error> {
        let lock = self.gc_lock_file()?;
        flock(&lock, libc::LOCK_SH).map_err(|e| Error::io(&self.root.join("gc.lock"), e))?;
        Ok(Lease { _lock: lock })
    }

    /// Takes the collector's lock: waits up to `wait` for leases held by running operations
    /// to end; past that fails with [`Error::Busy`]. While the returned guard lives no lease
    /// can be taken (in any process), so the caller can read names and collect. The caller
    /// must not hold a lease itself.
    pub fn exclusive(&self, wait: Duration) -> Result<Exclusive, Error> {
        let lock = self.gc_lock_file()?;
        let deadline = Instant::now() + wait;
        while let Err(e) = flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(Error::io(&self.root.join("gc.lock"), e));
            }
            if Instant::now() >= deadline {
                return Err(Error::Busy);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Exclusive { _lock: lock })
    }

    /// Removes every blob, block row and file row not reachable from an image name, a pin or
    /// `extra_roots`, under the lock `_held` proves is taken.
    pub fn collect(&self, _held: &Exclusive, extra_roots: &[Digest]) -> Result<GcReport, Error> {
        let live = self.mark(extra_roots)?;
        let rows = self.sweep_rows(&live)? + self.sweep_ingest_rows()?;
        let blobs = self.sweep_blobs(&live.blobs)?;
        tracing::info!(blobs = blobs.len(), rows, "collected");
        Ok(GcReport { blobs, rows })
    }

    fn gc_lock_file(&self) -> Result<File, Error> {
        let path = self.root.join("gc.lock");
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))
    }

    /// Every live blob and block.
    fn mark(&self, extra_roots: &[Digest]) -> Result<Live, Error> {
        let mut live = Live::default();
        let mut todo: Vec<Digest> = extra_roots.to_vec();
        todo.extend(self.list_images()?.into_iter().map(|i| i.target.digest));
        let mut dags: Vec<Vec<u8>> = Vec::new();
        for (cid, _) in self.pins()? {
            let Ok(cid) = cid.parse::<Cid>() else {
                continue;
            };
            if let Some(blob) = self.file_blob(&cid)? {
                todo.push(blob);
            }
            dags.push(cid.hash().to_bytes());
        }
        while let Some(digest) = todo.pop() {
            if !live.blobs.insert(digest.clone()) {
                continue;
            }
            todo.extend(self.descriptors_in(&digest));
        }
        // The DAG of every live blob stored as a UnixFS file stays with it.
        for (multihash, blob) in self.file_rows()? {
            if live.blobs.contains(&blob) {
                dags.push(multihash);
            }
        }
        while let Some(multihash) = dags.pop() {
            if !live.blocks.insert(multihash.clone()) {
                continue;
            }
            if let Some(data) = self.inline_block(&multihash)? {
                dags.extend(dag_pb_links(&data));
            }
        }
        Ok(live)
    }

    /// The digests of the descriptors in a JSON blob (none for other blobs).
    fn descriptors_in(&self, digest: &Digest) -> Vec<Digest> {
        let path = self.blob_path(digest);
        let small = std::fs::metadata(&path).is_ok_and(|m| m.len() <= MAX_JSON);
        let Some(bytes) = small.then(|| std::fs::read(&path).ok()).flatten() else {
            return Vec::new();
        };
        if bytes.first() != Some(&b'{') {
            return Vec::new();
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        descriptors(&value, &mut out);
        out
    }

    fn file_rows(&self) -> Result<Vec<(Vec<u8>, Digest)>, Error> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT multihash, blob FROM files")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(mh, blob)| Some((mh, blob.parse().ok()?)))
            .collect())
    }

    fn inline_block(&self, multihash: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        use rusqlite::OptionalExtension;
        let data = self
            .db()
            .query_row(
                "SELECT data FROM blocks WHERE multihash = ?1",
                params![multihash],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()?;
        Ok(data.flatten())
    }

    /// Deletes block rows not marked and not pointing into a live blob, and file rows of dead
    /// blobs, in one transaction.
    fn sweep_rows(&self, live: &Live) -> Result<usize, Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut dead_blocks = Vec::new();
        let mut dead_files = Vec::new();
        {
            let mut stmt = tx.prepare("SELECT multihash, blob FROM blocks")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let mh: Vec<u8> = row.get(0)?;
                let blob: Option<String> = row.get(1)?;
                let in_live_blob = blob
                    .and_then(|b| b.parse::<Digest>().ok())
                    .is_some_and(|d| live.blobs.contains(&d));
                if !in_live_blob && !live.blocks.contains(&mh) {
                    dead_blocks.push(mh);
                }
            }
            let mut stmt = tx.prepare("SELECT multihash, blob FROM files")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let mh: Vec<u8> = row.get(0)?;
                let blob: String = row.get(1)?;
                if !blob
                    .parse::<Digest>()
                    .is_ok_and(|d| live.blobs.contains(&d))
                {
                    dead_files.push(mh);
                }
            }
        }
        for mh in &dead_blocks {
            tx.execute("DELETE FROM blocks WHERE multihash = ?1", params![mh])?;
        }
        for mh in &dead_files {
            tx.execute("DELETE FROM files WHERE multihash = ?1", params![mh])?;
        }
        tx.commit()?;
        Ok(dead_blocks.len() + dead_files.len())
    }

    /// Deletes the blob files not in `live`; rows pointing at them are gone already.
    fn sweep_blobs(&self, live: &HashSet<Digest>) -> Result<Vec<(Digest, u64)>, Error> {
        let dir = self.root.join("blobs/sha256");
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if live.contains(&digest) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed.push((digest, size));
        }
        sync_dir(&dir);
        removed.sort();
        Ok(removed)
    }
}

/// What marking found alive.
#[derive(Default)]
struct Live {
    blobs: HashSet<Digest>,
    /// Block multihashes.
    blocks: HashSet<Vec<u8>>,
}

/// Collects the digest of every object with a `digest` string and a `size` number.
fn descriptors(value: &serde_json::Value, out: &mut Vec<Digest>) {
    match value {
        serde_json::Value::Object(map) => {
            if let (Some(d), Some(s)) = (map.get("digest"), map.get("size")) {
                if let (Some(d), true) = (d.as_str(), s.is_u64()) {
                    if let Ok(digest) = d.parse() {
                        out.push(digest);
                    }
                }
            }
            map.values().for_each(|v| descriptors(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| descriptors(v, out)),
        _ => {}
    }
}

/// The multihashes a dag-pb node links to (PBNode field 2, PBLink field 1), read with just
/// enough protobuf to find them; anything malformed ends the walk of that node.
fn dag_pb_links(node: &[u8]) -> Vec<Vec<u8>> {
    let mut links = Vec::new();
    let mut rest = node;
    while let Some((field, wire, body, after)) = protobuf_field(rest) {
        rest = after;
        if field == 2 && wire == 2 {
            let mut link = body;
            while let Some((f, w, b, after)) = protobuf_field(link) {
                link = after;
                if f == 1 && w == 2 {
                    if let Ok(cid) = Cid::try_from(b) {
                        links.push(cid.hash().to_bytes());
                    }
                }
            }
        }
    }
    links
}

/// One protobuf field: (number, wire type, length-delimited body or empty, the rest).
fn protobuf_field(buf: &[u8]) -> Option<(u64, u8, &[u8], &[u8])> {
    let (key, mut rest) = varint(buf)?;
    let wire = (key & 7) as u8;
    let body: &[u8];
    match wire {
        0 => {
            rest = varint(rest)?.1;
            body = &[];
        }
        1 => {
            body = rest.get(..8)?;
            rest = &rest[8..];
        }
        2 => {
            let (len, after) = varint(rest)?;
            let len = usize::try_from(len).ok()?;
            body = after.get(..len)?;
            rest = &after[len..];
        }
        5 => {
            body = rest.get(..4)?;
            rest = &rest[4..];
        }
        _ => return None,
    }
    Some((key >> 3, wire, body, rest))
}

fn varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &buf[i + 1..]));
        }
    }
    None
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
