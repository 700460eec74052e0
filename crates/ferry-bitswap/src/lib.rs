//! Bitswap 1.2.0 over libp2p streams
#![warn(missing_docs)]
