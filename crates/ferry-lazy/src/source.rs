//! Where the compressed bytes of a layer come from.

use std::ops::Range;
use std::sync::Arc;

use cid::Cid;
use ferry_content::Store;
use ferry_ipfs::{read_range, BlockSource, ReadOptions};
use futures::future::BoxFuture;
use futures::TryStreamExt;

use crate::Error;

/// Byte ranges of a layer's compressed blob.
pub trait ChunkSource: Send + Sync + 'static {
    /// The blob's size.
    fn size(&self) -> u64;

    /// The bytes of `range` (within the blob), all of them or an error.
    fn fetch(&self, range: Range<u64>) -> BoxFuture<'_, Result<Vec<u8>, Error>>;
}

/// A layer read from IPFS: byte ranges of its UnixFS file, fetching only the blocks under
/// each range (blocks already in the store are read from there).
pub struct IpfsSource {
    blocks: Arc<dyn BlockSource>,
    store: Arc<Store>,
    cid: Cid,
    size: u64,
    opts: ReadOptions,
}

impl IpfsSource {
    /// The UnixFS file `cid` of `size` bytes (the layer descriptor's), its blocks from
    /// `blocks`, each waited for and retried as `opts` says.
    pub fn new(
        blocks: Arc<dyn BlockSource>,
        store: Arc<Store>,
        cid: Cid,
        size: u64,
        opts: ReadOptions,
    ) -> IpfsSource {
        IpfsSource {
            blocks,
            store,
            cid,
            size,
            opts,
        }
    }
}

impl ChunkSource for IpfsSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn fetch(&self, range: Range<u64>) -> BoxFuture<'_, Result<Vec<u8>, Error>> {
        Box::pin(async move {
            let fail = |why: String| Error::Fetch {
                start: range.start,
                end: range.end,
                why,
            };
            if range.end > self.size || range.start > range.end {
                return Err(fail(format!("past the layer's {} bytes", self.size)));
            }
            let stream = read_range(
                self.blocks.clone(),
                self.store.clone(),
                self.cid,
                range.clone(),
                self.size,
                self.opts,
            );
            let want = (range.end - range.start) as usize;
            let mut out = Vec::with_capacity(want);
            let mut stream = std::pin::pin!(stream);
            while let Some(bytes) = stream.try_next().await.map_err(|e| fail(e.to_string()))? {
                out.extend_from_slice(&bytes);
            }
            if out.len() != want {
                return Err(fail(format!("got {} bytes", out.len())));
            }
            Ok(out)
        })
    }
}
