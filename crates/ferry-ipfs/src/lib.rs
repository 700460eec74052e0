//! The embedded IPFS node: identity, swarm, blockstore and block fetching
#![warn(missing_docs)]
