//! Blocks of blobs still being fetched (issue 9): each verified block is readable from its
//! ingest file at once, so this node serves it on before the whole blob is committed. The
//! index of these blocks lives in memory only, so a crash leaves only the committed, verified
//! blocks of the SQLite index visible.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, RwLock};

use cid::Cid;

use crate::{Error, Store};

/// Where a block of a blob in progress is.
#[derive(Clone, Debug)]
pub enum PartialBlock {
    /// A byte range of the ingest file (a handle to it, so a rename does not matter).
    Range {
        /// The ingest file, opened for reading.
        file: Arc<File>,
        /// Offset in the file.
        offset: u64,
        /// Number of bytes.
        length: u64,
    },
    /// The block's bytes themselves (dag-pb nodes).
    Inline(Arc<[u8]>),
}

impl PartialBlock {
    fn len(&self) -> usize {
        match self {
            PartialBlock::Range { length, .. } => *length as usize,
            PartialBlock::Inline(data) => data.len(),
        }
    }
}

/// The in-memory index of blocks in progress, keyed by multihash like the SQLite index.
#[derive(Default)]
pub(crate) struct PartialBlocks {
    blocks: RwLock<HashMap<Vec<u8>, PartialBlock>>,
}

impl PartialBlocks {
    fn get(&self, cid: &Cid) -> Option<PartialBlock> {
        let blocks = self.blocks.read().unwrap_or_else(|e| e.into_inner());
        blocks.get(&cid.hash().to_bytes()).cloned()
    }
}

impl Store {
    /// Makes a verified block of a blob still being written readable through
    /// [`Store::get_block`] until [`Store::forget_partial_blocks`] (called once the blob's
    /// blocks are indexed for good, or the fetch is abandoned). The caller must have checked
    /// the bytes against `cid`.
    pub fn add_partial_block(&self, cid: &Cid, block: PartialBlock) {
        let mut blocks = self
            .partial
            .blocks
            .write()
            .unwrap_or_else(|e| e.into_inner());
        blocks.insert(cid.hash().to_bytes(), block);
    }

    /// Forgets blocks added by [`Store::add_partial_block`].
    pub fn forget_partial_blocks<'a>(&self, cids: impl IntoIterator<Item = &'a Cid>) {
        let mut blocks = self
            .partial
            .blocks
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for cid in cids {
            blocks.remove(&cid.hash().to_bytes());
        }
    }

    /// The size of a block of a blob in progress, if it is one.
    pub fn partial_block_size(&self, cid: &Cid) -> Option<usize> {
        self.partial.get(cid).map(|block| block.len())
    }

    /// The bytes of a block of a blob in progress, if it is one.
    pub(crate) fn partial_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, Error> {
        match self.partial.get(cid) {
            None => Ok(None),
            Some(PartialBlock::Inline(data)) => Ok(Some(data.to_vec())),
            Some(PartialBlock::Range {
                file,
                offset,
                length,
            }) => {
                let mut buf = vec![0u8; length as usize];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| Error::io(std::path::Path::new("ingest file"), e))?;
                Ok(Some(buf))
            }
        }
    }
}
