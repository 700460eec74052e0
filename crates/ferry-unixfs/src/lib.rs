//! UnixFS importer and reader with CIDs identical to kubo.
//!
//! ferry stores every blob in IPFS as a UnixFS file, built exactly as
//! `ipfs add --cid-version=1` builds it (formats.md section 1): fixed-size chunks as raw leaves,
//! a balanced DAG of dag-pb nodes above them, sha2-256 everywhere. The same bytes give the same
//! root CID here, in kubo and in Helia.
//!
//! The crate does no I/O and has no async code:
//!
//! - [`Importer`] takes a file's bytes in slices of any size and hands each block it produces to
//!   a callback; [`cid_of`] does it for a file already in memory.
//! - [`decode_file_node`] reads one block of a file DAG back, so a fetcher can walk it.
//! - [`verify_block`] checks a received block against its CID.
//!
//! # Profiles
//!
//! The chunk size and the links per node are a [`Profile`]. The same bytes get different CIDs
//! under different profiles once they exceed one chunk, so readers must follow the CIDs they
//! are given and never recompute them with an assumed profile.
#![warn(missing_docs)]

mod importer;
mod pb;
mod reader;

pub use cid::Cid;
pub use importer::{cid_of, ImportedBlock, Importer};
pub use reader::{decode_file_node, Child, FileNode};

use cid::multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multicodec code of raw blocks (file leaves).
pub const RAW: u64 = 0x55;

/// Multicodec code of dag-pb blocks (interior file nodes).
pub const DAG_PB: u64 = 0x70;

/// Multihash code of sha2-256, the only hash function ferry produces or accepts.
pub const SHA2_256: u64 = 0x12;

/// Length in bytes of a sha2-256 digest.
pub const SHA2_256_LEN: usize = 32;

/// Chunk size and links per node: the two settings that decide a file's CID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Bytes per leaf; every leaf but the last holds exactly this many.
    pub chunk_size: usize,
    /// Most links an interior node holds.
    pub max_links: usize,
}

impl Profile {
    /// `ipfs add --cid-version=1` with kubo's defaults: 256 KiB chunks, 174 links (formats.md 0).
    pub const KUBO_V1: Profile = Profile {
        chunk_size: 262_144,
        max_links: 174,
    };

    /// kubo's `unixfs-v1-2025` profile (IPIP-0499): 1 MiB chunks, 1024 links (formats.md 1.8).
    pub const UNIXFS_V1_2025: Profile = Profile {
        chunk_size: 1_048_576,
        max_links: 1024,
    };
}

impl Default for Profile {
    fn default() -> Self {
        Profile::KUBO_V1
    }
}

/// Why a block was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The CID names a hash function other than sha2-256.
    #[error("block {cid}: unsupported hash function 0x{code:x}")]
    UnsupportedHash {
        /// The CID of the block (boxed: a CID is large and errors are rare).
        cid: Box<Cid>,
        /// Its multihash code.
        code: u64,
    },

    /// The block's bytes do not hash to the CID's digest.
    #[error("block {cid}: hash mismatch, bytes hash to sha256:{actual}")]
    HashMismatch {
        /// The CID the block was expected to match (boxed like the others).
        cid: Box<Cid>,
        /// Hex sha2-256 digest of the bytes received.
        actual: String,
    },

    /// The CID's codec is neither raw nor dag-pb.
    #[error("block {cid}: unsupported codec 0x{codec:x} in a file dag")]
    UnsupportedCodec {
        /// The CID of the block (boxed: a CID is large and errors are rare).
        cid: Box<Cid>,
        /// Its multicodec code.
        codec: u64,
    },

    /// The block is not valid dag-pb or its UnixFS Data is not valid protobuf.
    #[error("block {cid}: malformed {what}: {reason}")]
    Malformed {
        /// The CID of the block (boxed: a CID is large and errors are rare).
        cid: Box<Cid>,
        /// Which structure failed: "dag-pb node", "dag-pb link" or "unixfs data".
        what: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// The UnixFS node is not a file (a directory, symlink, HAMT shard...).
    #[error("block {cid}: unixfs type {unixfs_type} is not a file")]
    NotAFile {
        /// The CID of the block (boxed: a CID is large and errors are rare).
        cid: Box<Cid>,
        /// The UnixFS `Data.Type` found.
        unixfs_type: u64,
    },

    /// The node's sizes contradict each other or its links.
    #[error("block {cid}: inconsistent sizes: {reason}")]
    BadSizes {
        /// The CID of the block (boxed: a CID is large and errors are rare).
        cid: Box<Cid>,
        /// Which sizes disagree.
        reason: String,
    },

    /// A valid UnixFS file node of a shape ferry does not read yet.
    #[error("block {cid}: unsupported file node: {reason}")]
    Unsupported {
        /// The CID of the block (boxed: a CID is large and errors are rare).
        cid: Box<Cid>,
        /// What is not supported.
        reason: &'static str,
    },
}

/// The sha2-256 multihash of `data`.
pub fn sha256_multihash(data: &[u8]) -> Multihash<64> {
    // A 32-byte digest always fits the 64-byte multihash, so this cannot fail.
    Multihash::<64>::wrap(SHA2_256, &Sha256::digest(data)).unwrap_or_default()
}

/// The CIDv1 with `codec` whose multihash is sha2-256 with `digest`.
pub fn cid_from_sha256_digest(codec: u64, digest: &[u8; SHA2_256_LEN]) -> Cid {
    // Same reasoning as in `sha256_multihash`: the wrap cannot fail.
    let hash = Multihash::<64>::wrap(SHA2_256, digest).unwrap_or_default();
    Cid::new_v1(codec, hash)
}

/// The sha2-256 digest inside `cid`, or `None` when it uses another hash function.
///
/// A pull uses it to compare a block with the bytes it wrote, and a store to key blocks by
/// digest across CID versions and codecs (the same bytes as raw and as dag-pb share a digest).
pub fn sha256_digest(cid: &Cid) -> Option<[u8; SHA2_256_LEN]> {
    let hash = cid.hash();
    if hash.code() != SHA2_256 {
        return None;
    }
    hash.digest().try_into().ok()
}

/// The binary multihash of `cid` (code, length, digest): the key under which the DHT and
/// Bitswap's provider records name content, independent of the CID's version and codec.
pub fn multihash_bytes(cid: &Cid) -> Vec<u8> {
    cid.hash().to_bytes()
}

/// CIDv1 raw sha2-256 of a block: what a file of one chunk gets (formats.md 1.3).
pub fn raw_cid(block: &[u8]) -> Cid {
    cid_from_sha256_digest(RAW, &Sha256::digest(block).into())
}

/// CIDv1 dag-pb sha2-256 of an encoded dag-pb node.
pub fn dag_pb_cid(block: &[u8]) -> Cid {
    cid_from_sha256_digest(DAG_PB, &Sha256::digest(block).into())
}

/// Recomputes the block's hash under the CID's prefix and compares.
///
/// Only sha2-256 is accepted; any other hash function is [`Error::UnsupportedHash`], so a peer
/// cannot make ferry trust a block under a hash it does not check.
pub fn verify_block(cid: &Cid, data: &[u8]) -> Result<(), Error> {
    let hash = cid.hash();
    if hash.code() != SHA2_256 || usize::from(hash.size()) != SHA2_256_LEN {
        return Err(Error::UnsupportedHash {
            cid: Box::new(*cid),
            code: hash.code(),
        });
    }

    let actual = Sha256::digest(data);
    if actual.as_slice() != hash.digest() {
        return Err(Error::HashMismatch {
            cid: Box::new(*cid),
            actual: to_hex(&actual),
        });
    }
    Ok(())
}

/// Lowercase hex of `bytes`, for error messages.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests;
