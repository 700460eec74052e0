//! Reading a UnixFS file as a stream, in file order, while its blocks arrive.
//!
//! Two readers, for the registry endpoint and anything else that serves bytes before a whole
//! file is here:
//!
//! - [`read_range`] walks the file's DAG and yields the bytes of one byte range in order,
//!   fetching only the blocks that overlap it (a subtree outside the range is never asked
//!   for). Nothing is written to the store: this is the lazy path, for Range requests.
//! - [`BlobDownload`] fetches a whole file into the content store (one ingest file, verified
//!   against its descriptor's digest and size, then committed and indexed as
//!   [`fetch_blob`](crate::fetch_blob) does), and lets any number of readers stream the bytes
//!   already written while the rest is still arriving.
//!
//! Both keep a bounded window of block requests in flight and yield leaves in file order, so a
//! client starts receiving the first bytes after the first leaf arrives, not after the last.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use ferry_bitswap::Bitswap;
use ferry_content::{BlockEntry, BlockLocation, Store};
use ferry_oci::Digest;
use ferry_unixfs::{decode_file_node, FileNode, RAW};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::watch;

use crate::Error;

/// Blocks of one file requested at once by one reader; also the most leaves it buffers.
const WINDOW: usize = 64;

/// Where blocks that are not in the local store come from.
pub trait BlockSource: Send + Sync + 'static {
    /// Fetches one block and returns its bytes, verified against `cid`, or fails after
    /// `timeout`. Must be cancel-safe: the reader drops the future when its client goes away.
    fn get_block(&self, cid: Cid, timeout: Duration) -> BoxFuture<'_, Result<Bytes, Error>>;

    /// Whether a fetch can succeed at all (a peer is connected); when false, a block that is not
    /// local fails at once instead of after the timeout.
    fn can_fetch(&self) -> bool {
        true
    }

    /// Says that the store now holds `cid` (a block of a download in progress, indexed in its
    /// ingest file), so peers that asked for it can be told. Does nothing by default.
    fn announce(&self, _cid: &Cid) {}
}

impl BlockSource for Bitswap {
    fn get_block(&self, cid: Cid, timeout: Duration) -> BoxFuture<'_, Result<Bytes, Error>> {
        Box::pin(async move { Ok(self.get(cid, timeout).await?) })
    }

    fn can_fetch(&self) -> bool {
        !self.peers().is_empty()
    }

    fn announce(&self, cid: &Cid) {
        Bitswap::announce(self, cid);
    }
}

/// How long to wait for a block and how often to ask again.
#[derive(Clone, Copy, Debug)]
pub struct ReadOptions {
    /// The wait for one block, per attempt.
    pub timeout: Duration,
    /// Further attempts after a block's first attempt failed.
    pub retries: u32,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            timeout: Duration::from_secs(180),
            retries: 0,
        }
    }
}

/// A block of the file that is to be fetched: its CID and the file offset of its first byte.
#[derive(Clone, Copy)]
struct Pending {
    cid: Cid,
    offset: u64,
}

/// One leaf of the file, in file order.
struct Leaf {
    cid: Cid,
    offset: u64,
    data: Bytes,
    /// The block itself when it is not a raw leaf (a dag-pb leaf carries a UnixFS wrapper).
    wrapped: Option<Bytes>,
}

type Fetched = Result<(Pending, Bytes), Error>;

/// The DAG walk shared by both readers: yields the leaves overlapping `range` in file order.
struct Walk {
    source: Arc<dyn BlockSource>,
    store: Arc<Store>,
    root: Cid,
    range: Range<u64>,
    /// No node may claim bytes past this (the size the descriptor promised).
    limit: u64,
    opts: ReadOptions,
    /// Blocks not yet asked for, in file order.
    queue: VecDeque<Pending>,
    in_flight: FuturesUnordered<BoxFuture<'static, Fetched>>,
    /// The file offsets of the blocks in flight, with counts.
    in_flight_offsets: BTreeMap<u64, usize>,
    /// Leaves that arrived before a leaf in front of them.
    arrived: BTreeMap<u64, Leaf>,
    /// Interior nodes seen, for the CID index.
    interior: Vec<(Cid, Bytes)>,
}

impl Walk {
    fn new(
        source: Arc<dyn BlockSource>,
        store: Arc<Store>,
        root: Cid,
        range: Range<u64>,
        limit: u64,
        opts: ReadOptions,
    ) -> Walk {
        Walk {
            source,
            store,
            root,
            range,
            limit,
            opts,
            queue: VecDeque::from([Pending {
                cid: root,
                offset: 0,
            }]),
            in_flight: FuturesUnordered::new(),
            in_flight_offsets: BTreeMap::new(),
            arrived: BTreeMap::new(),
            interior: Vec::new(),
        }
    }

    /// The next leaf in file order; None when the range is covered.
    async fn next(&mut self) -> Option<Result<Leaf, Error>> {
        loop {
            if let Some(leaf) = self.ready_leaf() {
                return Some(Ok(leaf));
            }
            self.launch();
            let fetched = self.in_flight.next().await?;
            if let Err(e) = self.accept(fetched) {
                return Some(Err(e));
            }
        }
    }

    /// The first arrived leaf when nothing in front of it is still to come.
    fn ready_leaf(&mut self) -> Option<Leaf> {
        let (&offset, _) = self.arrived.first_key_value()?;
        let queued = self.queue.front().map(|p| p.offset);
        let flying = self.in_flight_offsets.keys().next().copied();
        let blocked = [queued, flying].into_iter().flatten().any(|o| o < offset);
        if blocked {
            return None;
        }
        self.arrived.pop_first().map(|(_, leaf)| leaf)
    }

    fn launch(&mut self) {
        while self.in_flight.len() + self.arrived.len() < WINDOW {
            let Some(pending) = self.queue.pop_front() else {
                return;
            };
            *self.in_flight_offsets.entry(pending.offset).or_default() += 1;
            let source = self.source.clone();
            let store = self.store.clone();
            let opts = self.opts;
            self.in_flight
                .push(Box::pin(fetch_one(source, store, pending, opts)));
        }
    }

    fn accept(&mut self, fetched: Fetched) -> Result<(), Error> {
        let (pending, block) = fetched?;
        if let Some(n) = self.in_flight_offsets.get_mut(&pending.offset) {
            *n -= 1;
            if *n == 0 {
                self.in_flight_offsets.remove(&pending.offset);
            }
        }
        let bad = |why: String| Error::BadBlock {
            cid: pending.cid,
            why,
        };
        match decode_file_node(&pending.cid, &block).map_err(|e| bad(e.to_string()))? {
            FileNode::Data(data) => {
                self.check_bounds(pending.offset, data.len() as u64)?;
                let wrapped = (pending.cid.codec() != RAW).then(|| block.clone());
                let data = if wrapped.is_some() {
                    Bytes::from(data)
                } else {
                    block
                };
                let leaf = Leaf {
                    cid: pending.cid,
                    offset: pending.offset,
                    data,
                    wrapped,
                };
                self.arrived.insert(pending.offset, leaf);
            }
            FileNode::Links { children, filesize } => {
                self.check_bounds(pending.offset, filesize)?;
                self.interior.push((pending.cid, block));
                let wanted = children.iter().rev().filter_map(|c| {
                    let start = pending.offset + c.offset;
                    let overlaps = c.size > 0
                        && start < self.range.end
                        && start.saturating_add(c.size) > self.range.start;
                    overlaps.then_some(Pending {
                        cid: c.cid,
                        offset: start,
                    })
                });
                // children come before every block still queued (the queue is in file order)
                for p in wanted.collect::<Vec<_>>() {
                    self.queue.push_front(p);
                }
            }
        }
        Ok(())
    }

    fn check_bounds(&self, offset: u64, len: u64) -> Result<(), Error> {
        match offset.checked_add(len) {
            Some(end) if end <= self.limit => Ok(()),
            _ => Err(Error::TooLarge {
                cid: self.root,
                limit: self.limit,
            }),
        }
    }
}

/// Gets one block: from the store when it is there (checked against its CID), else from the
/// source, retrying as `opts` says.
async fn fetch_one(
    source: Arc<dyn BlockSource>,
    store: Arc<Store>,
    pending: Pending,
    opts: ReadOptions,
) -> Fetched {
    let cid = pending.cid;
    let local = tokio::task::spawn_blocking(move || store.get_block(&cid))
        .await
        .map_err(|e| Error::Node(e.to_string()))??;
    if let Some(data) = local {
        if ferry_unixfs::verify_block(&cid, &data).is_ok() {
            return Ok((pending, Bytes::from(data)));
        }
        tracing::warn!(%cid, "local block does not match its CID; fetching it again");
    }
    if !source.can_fetch() {
        return Err(Error::NoPeers { cid: Box::new(cid) });
    }
    let mut attempt = 0;
    loop {
        match source.get_block(cid, opts.timeout).await {
            Ok(data) => return Ok((pending, data)),
            Err(e) if attempt >= opts.retries => return Err(e),
            Err(e) => tracing::debug!(%cid, attempt, error = %e, "block read failed; retrying"),
        }
        attempt += 1;
    }
}

/// The bytes of `range` of the UnixFS file `root`, in order, as their blocks arrive. `size` is
/// the file's size as its descriptor states it; a DAG that claims more is refused. Blocks come
/// from the store when there, else from `source`. Nothing is stored. Dropping the stream
/// cancels the block requests in flight.
pub fn read_range(
    source: Arc<dyn BlockSource>,
    store: Arc<Store>,
    root: Cid,
    range: Range<u64>,
    size: u64,
    opts: ReadOptions,
) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
    let walk = Walk::new(source, store, root, range.clone(), size, opts);
    futures::stream::unfold(Some(walk), move |walk| {
        let range = range.clone();
        async move {
            let mut walk = walk?;
            match walk.next().await? {
                Ok(leaf) => Some((Ok(clip(&leaf, &range)), Some(walk))),
                Err(e) => Some((Err(e), None)),
            }
        }
    })
}

/// The part of `leaf` inside `range`.
fn clip(leaf: &Leaf, range: &Range<u64>) -> Bytes {
    let len = leaf.data.len() as u64;
    let from = range.start.saturating_sub(leaf.offset).min(len);
    let to = range.end.saturating_sub(leaf.offset).min(len);
    leaf.data.slice(from as usize..to.max(from) as usize)
}

/// How far a [`BlobDownload`] has got.
#[derive(Clone, Debug, Default)]
struct Progress {
    /// Bytes written from the start of the file without a gap.
    written: u64,
    /// Set once the blob is committed (Ok) or the download failed (the reason).
    done: Option<Result<(), Arc<str>>>,
}

/// A whole UnixFS file being fetched into the store as a blob, readable while it arrives.
///
/// Lifecycle: [`BlobDownload::start`] creates the ingest file and spawns the fetch; leaves are
/// written in file order and readers see them at once through [`BlobDownload::read`]. At the
/// end the file is verified against the expected digest and size, committed, and its blocks
/// are indexed, so this node serves them to peers. The fetch runs to its end even when every
/// reader has gone, so the blob completes; it stops only on an error.
pub struct BlobDownload {
    root: Cid,
    digest: Digest,
    size: u64,
    file: Arc<File>,
    progress: watch::Receiver<Progress>,
}

impl BlobDownload {
    /// Starts fetching the file `root`, whose bytes must hash to `digest` and number `size`.
    /// Must be called inside tokio.
    pub fn start(
        source: Arc<dyn BlockSource>,
        store: Arc<Store>,
        root: Cid,
        digest: Digest,
        size: u64,
        opts: ReadOptions,
    ) -> Result<Arc<BlobDownload>, Error> {
        let ingest = store.ingest()?;
        let file = File::open(ingest.path()).map_err(|e| {
            Error::Node(format!("open ingest file {}: {e}", ingest.path().display()))
        })?;
        let (tx, progress) = watch::channel(Progress::default());
        let walk = Walk::new(source, store.clone(), root, 0..size, size, opts);
        let expected = (digest.clone(), size);
        tokio::spawn(async move {
            let result = run_download(walk, ingest, &store, expected, &tx).await;
            if let Err(e) = &result {
                tracing::warn!(cid = %root, error = %e, "blob download failed");
            }
            tx.send_modify(|p| p.done = Some(result.map_err(|e| Arc::from(e.to_string()))));
        });
        Ok(Arc::new(BlobDownload {
            root,
            digest,
            size,
            file: Arc::new(file),
            progress,
        }))
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Whether the download has ended (committed or failed).
    pub fn is_done(&self) -> bool {
        self.progress.borrow().done.is_some()
    }

    /// Bytes available from the start of the file.
    pub fn written(&self) -> u64 {
        self.progress.borrow().written
    }

    /// The bytes of `range` (clamped to the file), in order, each as soon as it is written.
    /// Ends with an error if the download fails before the range is covered.
    pub fn read(&self, range: Range<u64>) -> impl Stream<Item = Result<Bytes, Error>> + Send {
        let end = range.end.min(self.size);
        let state = (
            range.start,
            self.progress.clone(),
            self.file.clone(),
            self.root,
        );
        futures::stream::unfold(Some(state), move |state| async move {
            let (pos, mut progress, file, root) = state?;
            if pos >= end {
                return None;
            }
            match next_chunk(pos, end, &mut progress, &file, root).await {
                Ok(chunk) => {
                    let next = pos + chunk.len() as u64;
                    Some((Ok(chunk), Some((next, progress, file, root))))
                }
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

/// Waits until bytes at `pos` are written, then reads up to 256 KiB of them.
async fn next_chunk(
    pos: u64,
    end: u64,
    progress: &mut watch::Receiver<Progress>,
    file: &File,
    root: Cid,
) -> Result<Bytes, Error> {
    loop {
        let state = progress.borrow_and_update().clone();
        if state.written > pos {
            let len = (state.written.min(end) - pos).min(256 * 1024) as usize;
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, pos)
                .map_err(|e| Error::Node(format!("read file {root} at {pos}: {e}")))?;
            return Ok(Bytes::from(buf));
        }
        if let Some(Err(why)) = &state.done {
            return Err(Error::BadBlock {
                cid: root,
                why: why.to_string(),
            });
        }
        if progress.changed().await.is_err() && progress.borrow().written <= pos {
            return Err(Error::Node(format!("download of {root} stopped")));
        }
    }
}

async fn run_download(
    mut walk: Walk,
    mut ingest: ferry_content::Ingest,
    store: &Arc<Store>,
    expected: (Digest, u64),
    progress: &watch::Sender<Progress>,
) -> Result<(), Error> {
    let mut entries = Vec::new();
    let mut written = 0u64;
    let mut interior_indexed = 0;
    while let Some(leaf) = walk.next().await {
        let leaf = leaf?;
        ingest.write_at(leaf.offset, &leaf.data)?;
        written = written.max(leaf.offset + leaf.data.len() as u64);
        progress.send_modify(|p| p.written = written);
        // Served on at once (issue 9): the nodes seen so far and this leaf go into the CID
        // index, the leaf as a range of the ingest file.
        let nodes: Vec<BlockEntry> = walk.interior[interior_indexed..]
            .iter()
            .map(|(cid, block)| (cid, block))
            .chain(leaf.wrapped.as_ref().map(|block| (&leaf.cid, block)))
            .map(|(cid, block)| BlockEntry {
                cid: *cid,
                location: BlockLocation::Inline(block.to_vec()),
            })
            .collect();
        if !nodes.is_empty() {
            store.put_blocks(&nodes)?;
        }
        let length = leaf.data.len() as u64;
        if leaf.wrapped.is_none() {
            ingest.index_blocks(&[(leaf.cid, leaf.offset, length)])?;
        }
        for cid in walk.interior[interior_indexed..].iter().map(|(cid, _)| cid) {
            walk.source.announce(cid);
        }
        walk.source.announce(&leaf.cid);
        interior_indexed = walk.interior.len();
        // only what the index needs: holding the leaves' bytes would hold the whole file
        entries.push((leaf.cid, leaf.offset, length, leaf.wrapped));
    }

    let (digest, size) = expected;
    let store = store.clone();
    let root = walk.root;
    let interior = std::mem::take(&mut walk.interior);
    tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let (digest, _) = ingest.commit(Some((&digest, size)))?;
        let mut index: Vec<BlockEntry> = interior
            .into_iter()
            .map(|(cid, block)| BlockEntry {
                cid,
                location: BlockLocation::Inline(block.to_vec()),
            })
            .collect();
        index.extend(
            entries
                .into_iter()
                .map(|(cid, offset, length, wrapped)| BlockEntry {
                    cid,
                    location: match wrapped {
                        Some(block) => BlockLocation::Inline(block.to_vec()),
                        None => BlockLocation::Blob {
                            digest: digest.clone(),
                            offset,
                            length,
                        },
                    },
                }),
        );
        store.put_blocks(&index)?;
        store.put_file(&root, &digest)?;
        Ok(())
    })
    .await
    .map_err(|e| Error::Node(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use ferry_unixfs::Profile;
    use tokio::sync::Semaphore;

    /// Blocks from another store; the block `held` waits until `gate` gets a permit.
    struct Gated {
        source: Arc<Store>,
        held: Cid,
        gate: Semaphore,
        announced: Mutex<Vec<Cid>>,
    }

    impl BlockSource for Gated {
        fn get_block(&self, cid: Cid, _timeout: Duration) -> BoxFuture<'_, Result<Bytes, Error>> {
            Box::pin(async move {
                if cid == self.held {
                    let _permit = self
                        .gate
                        .acquire()
                        .await
                        .map_err(|e| Error::Node(e.to_string()))?;
                }
                let data = self.source.get_block(&cid)?;
                data.map(Bytes::from)
                    .ok_or_else(|| Error::Node(format!("no block {cid}")))
            })
        }

        fn announce(&self, cid: &Cid) {
            self.announced.lock().unwrap().push(*cid);
        }
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn blocks_of_a_download_in_progress_are_served_by_every_store_of_the_root() {
        let source_dir = tempfile::tempdir().unwrap();
        let source = Arc::new(Store::open(source_dir.path()).unwrap());
        let profile = Profile {
            chunk_size: 1024,
            max_links: 174,
        };
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let (digest, root) = crate::add_bytes(&source, &data, profile).unwrap();
        let root_block = source.get_block(&root).unwrap().unwrap();
        let FileNode::Links { children, .. } = decode_file_node(&root, &root_block).unwrap() else {
            panic!("root {root} is not an interior node");
        };
        let leaves: Vec<Cid> = children.iter().map(|c| c.cid).collect();
        assert_eq!(leaves.len(), 4);

        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let gated = Arc::new(Gated {
            source,
            held: leaves[3],
            gate: Semaphore::new(0),
            announced: Mutex::new(Vec::new()),
        });
        let download = BlobDownload::start(
            gated.clone(),
            store,
            root,
            digest.clone(),
            data.len() as u64,
            ReadOptions::default(),
        )
        .unwrap();
        wait_for("three leaves", || download.written() == 3072).await;

        // another process of the same root serves what arrived, and only that
        let other = Store::open(dir.path()).unwrap();
        assert_eq!(other.get_block(&root).unwrap(), Some(root_block));
        assert_eq!(
            other.get_block(&leaves[1]).unwrap().as_deref(),
            Some(&data[1024..2048])
        );
        assert_eq!(other.get_block(&leaves[3]).unwrap(), None);
        assert_eq!(
            *gated.announced.lock().unwrap(),
            vec![root, leaves[0], leaves[1], leaves[2]]
        );

        gated.gate.add_permits(1);
        wait_for("the commit", || download.is_done()).await;
        assert!(other.has_blob(&digest));
        assert_eq!(
            other.block_location(&leaves[1]).unwrap(),
            Some(BlockLocation::Blob {
                digest,
                offset: 1024,
                length: 1024,
            })
        );
        assert_eq!(
            other.get_block(&leaves[3]).unwrap().as_deref(),
            Some(&data[3072..])
        );
    }
}
