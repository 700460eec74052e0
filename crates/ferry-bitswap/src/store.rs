//! The block source the server reads from.

use std::collections::HashMap;
use std::sync::RwLock;

use cid::Cid;

/// Where the server finds blocks and what it knows. Implemented by the node over its store.
///
/// The server calls these methods from `tokio::task::spawn_blocking`, so they may block on
/// file reads.
pub trait Blockstore: Send + Sync + 'static {
    /// The block's bytes, if held (may read a file range).
    fn get(&self, cid: &Cid) -> std::io::Result<Option<Vec<u8>>>;

    /// Whether the block is held.
    fn has(&self, cid: &Cid) -> std::io::Result<bool>;

    /// The block's size in bytes, if held. Used to answer a want-have for a small block with
    /// the block itself; the default reads the block, so a store that knows sizes should
    /// override it.
    fn size(&self, cid: &Cid) -> std::io::Result<Option<usize>> {
        Ok(self.get(cid)?.map(|bytes| bytes.len()))
    }
}

/// A [`Blockstore`] in memory, for tests and small tools. Blocks are not verified on insert.
#[derive(Default)]
pub struct MemoryBlockstore {
    blocks: RwLock<HashMap<Cid, Vec<u8>>>,
}

impl MemoryBlockstore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a block.
    pub fn insert(&self, cid: Cid, bytes: Vec<u8>) {
        let mut blocks = self.blocks.write().unwrap_or_else(|e| e.into_inner());
        blocks.insert(cid, bytes);
    }

    /// How many blocks are held.
    pub fn len(&self) -> usize {
        self.blocks.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Blockstore for MemoryBlockstore {
    fn get(&self, cid: &Cid) -> std::io::Result<Option<Vec<u8>>> {
        let blocks = self.blocks.read().unwrap_or_else(|e| e.into_inner());
        Ok(blocks.get(cid).cloned())
    }

    fn has(&self, cid: &Cid) -> std::io::Result<bool> {
        let blocks = self.blocks.read().unwrap_or_else(|e| e.into_inner());
        Ok(blocks.contains_key(cid))
    }

    fn size(&self, cid: &Cid) -> std::io::Result<Option<usize>> {
        let blocks = self.blocks.read().unwrap_or_else(|e| e.into_inner());
        Ok(blocks.get(cid).map(Vec::len))
    }
}
