//! The IPFS node's errors.

use cid::Cid;

/// What went wrong in the IPFS node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] ferry_content::Error),
    /// A block could not be fetched.
    #[error(transparent)]
    Bitswap(#[from] ferry_bitswap::Error),
    /// A block is not a UnixFS file node.
    #[error("block {cid}: {why}")]
    BadBlock {
        /// The block.
        cid: Cid,
        /// Why it was refused.
        why: String,
    },
    /// A fetched file is larger than allowed.
    #[error("file {cid} is larger than {limit} bytes")]
    TooLarge {
        /// The file's root CID.
        cid: Cid,
        /// The limit.
        limit: u64,
    },
    /// A block is not in the store and no peer is connected to ask.
    #[error("block {cid} is not here and no peer is connected")]
    NoPeers {
        /// The block (boxed: a CID is 80 bytes).
        cid: Box<Cid>,
    },
    /// A block is not here, and a fetch a moment ago waited its whole timeout in vain with
    /// the peers that are connected now.
    #[error("block {cid} is not here and no connected peer sent the last block asked of them")]
    Stranded {
        /// The block (boxed: a CID is 80 bytes).
        cid: Box<Cid>,
    },
    /// The node could not start.
    #[error("ipfs node: {0}")]
    Node(String),
    /// The identity key could not be read or written.
    #[error("identity {path}: {why}")]
    Identity {
        /// The key file.
        path: String,
        /// Why.
        why: String,
    },
    /// The private network key file is unreadable or malformed.
    #[error("swarm key {path}: {why}")]
    SwarmKey {
        /// The key file.
        path: String,
        /// Why.
        why: String,
    },
}

impl Error {
    /// True when no peer delivered a block before the timeout, or none was there to ask: the
    /// content may exist nowhere reachable, unlike a failure of the node or the store.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::NoPeers { .. } | Error::Bitswap(ferry_bitswap::Error::Timeout { .. })
        )
    }
}
