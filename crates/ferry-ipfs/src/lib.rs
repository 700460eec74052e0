//! The embedded IPFS node: identity, swarm, the blockstore over the content store, adding blobs
//! as UnixFS files and fetching UnixFS files over Bitswap.
//!
//! Lifecycle: [`Node::start`] builds a libp2p swarm (TCP, optionally behind a private network
//! key, Noise, Yamux, identify, ping, the Amino DHT, mDNS and the Bitswap streams), starts
//! listening and dialing the configured and bootstrap peers, and runs it on a tokio task until
//! the [`Node`] is dropped or [`Node::shutdown`] is called. Fetches run within
//! [`Node::routed`] look up the providers of a root block no connected peer has (formats 2.7);
//! [`Node::provide`] announces roots. Blocks it serves come
//! from the content store's CID index; blocks it fetches are verified against their CIDs, and
//! whole files against the digest their descriptor names, before anything is committed.
#![warn(missing_docs)]

mod add;
mod config;
mod error;
mod fetch;
mod identity;
mod node;
mod reader;
mod routing;
mod swarm;

pub use add::{add_blob, add_bytes, add_file, add_reader, StoreBlocks};
pub use config::{BootstrapPeer, NodeConfig, Routing, SwarmKey, PUBLIC_BOOTSTRAP};
pub use error::Error;
pub use fetch::{fetch_blob, FetchProgress};
pub use identity::load_or_create_identity;
pub use node::{Node, NodeInfo};
pub use reader::{read_range, BlobDownload, BlockSource, ReadOptions};
