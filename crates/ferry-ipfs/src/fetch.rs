//! Fetching a UnixFS file over Bitswap into the content store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use ferry_bitswap::Bitswap;
use ferry_content::{BlockEntry, BlockLocation, Store};
use ferry_oci::Digest;
use ferry_unixfs::{decode_file_node, FileNode, RAW};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::Error;

/// How many blocks of one file are requested at once.
const BLOCKS_IN_FLIGHT: usize = 128;

/// Called with the number of file bytes each arriving leaf carried.
pub type FetchProgress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// Fetches the UnixFS file `root` into the store as a blob and indexes its blocks, so this node
/// can serve them on. Blocks already in the local store are read locally; the others come over
/// Bitswap, each verified against its CID. Leaves are written at their offsets as they arrive,
/// in any order. The whole file is then verified against `expected` (digest and size) when
/// given; without it the file must not exceed `max_size`. `timeout` bounds the wait for any
/// one block. Returns the blob's digest and size. Cancel-safe: dropping the future discards the
/// partial file.
///
/// Every verified block is served on at once, before the file is complete: it goes into the CID
/// index (raw leaves as ranges of the ingest file, [`ferry_content::Ingest::index_blocks`];
/// nodes inline), where this node's Bitswap server and every other process of the same root
/// find it, and peers that were told DONT_HAVE for it are told HAVE. The leaves are asked for
/// in an order of this fetch's own, so that nodes fetching the same file at once hold different
/// blocks early and trade them (issue 9).
pub async fn fetch_blob(
    bitswap: &Bitswap,
    store: &Arc<Store>,
    root: Cid,
    expected: Option<(&Digest, u64)>,
    max_size: u64,
    timeout: Duration,
    progress: FetchProgress<'_>,
) -> Result<(Digest, u64), Error> {
    if let Some((digest, size)) = expected {
        if store.has_blob(digest) {
            return Ok((digest.clone(), size));
        }
    }
    if expected.is_none() {
        if let Some(digest) = store.file_blob(&root)? {
            let size = std::fs::metadata(store.blob_path(&digest)).map_or(0, |m| m.len());
            return Ok((digest, size));
        }
    }
    let limit = expected.map_or(max_size, |(_, size)| size);
    let mut ingest = store.ingest()?;
    let mut order = Shuffle::new(&root);
    let mut inline = Vec::new();
    let mut leaves = Vec::new();
    let mut pending = FuturesUnordered::new();
    pending.push(get_block(bitswap, store, root, 0, timeout, true));
    let mut queued: VecDeque<(Cid, u64)> = VecDeque::new();
    let mut file_size = None;
    while let Some(result) = pending.next().await {
        let (cid, offset, data) = result?;
        let node = decode_file_node(&cid, &data).map_err(|e| Error::BadBlock {
            cid,
            why: e.to_string(),
        })?;
        match node {
            FileNode::Data(bytes) => {
                check_range(root, offset, bytes.len() as u64, limit)?;
                file_size.get_or_insert(bytes.len() as u64);
                ingest.write_at(offset, &bytes)?;
                progress(bytes.len() as u64);
                if cid.codec() == RAW {
                    let leaf = (cid, offset, bytes.len() as u64);
                    ingest.index_blocks(&[leaf])?;
                    leaves.push(leaf);
                } else {
                    let entry = BlockEntry {
                        cid,
                        location: BlockLocation::Inline(data.to_vec()),
                    };
                    store.put_blocks(std::slice::from_ref(&entry))?;
                    inline.push(entry);
                }
                bitswap.announce(&cid);
            }
            FileNode::Links { children, filesize } => {
                check_range(root, offset, filesize, limit)?;
                file_size.get_or_insert(filesize);
                let entry = BlockEntry {
                    cid,
                    location: BlockLocation::Inline(data.to_vec()),
                };
                store.put_blocks(std::slice::from_ref(&entry))?;
                inline.push(entry);
                bitswap.announce(&cid);
                let mut links: Vec<(Cid, u64)> = children
                    .iter()
                    .map(|c| (c.cid, offset + c.offset))
                    .collect();
                order.shuffle(&mut links);
                queued.extend(links);
            }
        }
        while pending.len() < BLOCKS_IN_FLIGHT {
            let Some((cid, offset)) = queued.pop_front() else {
                break;
            };
            pending.push(get_block(bitswap, store, cid, offset, timeout, false));
        }
    }
    let (digest, size) = ingest.commit(expected)?;
    if file_size.is_some_and(|s| s != size) {
        return Err(Error::BadBlock {
            cid: root,
            why: format!("file size {size} does not add up"),
        });
    }
    crate::add::index_file(store, root, &digest, inline, leaves)?;
    Ok((digest, size))
}

/// A small xorshift generator seeded per fetch (time, process, file), to ask for the links of
/// a node in an order no other node shares. Not for anything secret.
struct Shuffle(u64);

impl Shuffle {
    fn new(root: &Cid) -> Shuffle {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        root.hash().digest().hash(&mut hasher);
        std::process::id().hash(&mut hasher);
        std::time::SystemTime::now().hash(&mut hasher);
        Shuffle(hasher.finish() | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

fn check_range(root: Cid, offset: u64, len: u64, limit: u64) -> Result<(), Error> {
    match offset.checked_add(len) {
        Some(end) if end <= limit => Ok(()),
        _ => Err(Error::TooLarge { cid: root, limit }),
    }
}

/// One block, from the store or over Bitswap. For the file's `root`, the DHT is asked for
/// providers when no connected peer sends it soon (see [`crate::Node::routed`]); the other
/// blocks come from the peers that sent the root, as boxo's sessions do (formats 2.7).
async fn get_block(
    bitswap: &Bitswap,
    store: &Arc<Store>,
    cid: Cid,
    offset: u64,
    timeout: Duration,
    root: bool,
) -> Result<(Cid, u64, Bytes), Error> {
    let local = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.get_block(&cid))
            .await
            .map_err(|e| Error::Node(e.to_string()))??
    };
    if let Some(data) = local {
        if ferry_unixfs::verify_block(&cid, &data).is_ok() {
            return Ok((cid, offset, Bytes::from(data)));
        }
        tracing::warn!(%cid, "local block does not match its CID; fetching it again");
    }
    let data = if root {
        crate::routing::get_searching(bitswap, cid, timeout).await?
    } else {
        bitswap.get(cid, timeout).await?
    };
    Ok((cid, offset, data))
}
