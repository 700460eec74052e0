//! The Bitswap wire format: protobuf messages, varint framing and block prefixes
//! (formats.md 2.2 and 2.3).

use bytes::Bytes;
use cid::multihash::Multihash;
use cid::{Cid, Version};
use futures::{AsyncRead, AsyncReadExt as _};
use prost::Message as _;
use sha2::{Digest as _, Sha256};

/// Multicodec of dag-pb, the codec a 1.0.0 `blocks` entry implies (formats.md 2.1).
pub(crate) const DAG_PB: u64 = 0x70;
/// Multihash code of sha2-256, the only hash this crate verifies.
pub(crate) const SHA2_256: u64 = 0x12;
/// Multihash code of the identity hash: the digest is the data itself.
pub(crate) const IDENTITY: u64 = 0x00;
/// Longest CID accepted in a message (boxo: 40 bytes of prefix + a 128-byte digest, 2.4).
pub(crate) const MAX_CID_LEN: usize = 168;

/// A Bitswap message (formats.md 2.3). proto3: fields at their default are not written.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// Wants and cancels of the sender.
    #[prost(message, optional, tag = "1")]
    pub wantlist: Option<Wantlist>,
    /// 1.0.0 only: raw block bytes, CIDv0 dag-pb sha2-256 implied.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub blocks: Vec<Bytes>,
    /// 1.1.0 and later: blocks with their CID prefix.
    #[prost(message, repeated, tag = "3")]
    pub payload: Vec<Block>,
    /// 1.2.0: HAVE / DONT_HAVE answers.
    #[prost(message, repeated, tag = "4")]
    pub block_presences: Vec<BlockPresence>,
    /// 1.2.0: a hint of how many bytes the sender still has queued for us.
    #[prost(int32, tag = "5")]
    pub pending_bytes: i32,
}

/// The wantlist part of a message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Wantlist {
    /// Wants and cancels.
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    /// True when this list replaces every earlier one; false for a delta.
    #[prost(bool, tag = "2")]
    pub full: bool,
}

/// One wantlist entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// The binary CID wanted or cancelled.
    #[prost(bytes = "vec", tag = "1")]
    pub block: Vec<u8>,
    /// Higher is served first.
    #[prost(int32, tag = "2")]
    pub priority: i32,
    /// Withdraws an earlier want for this CID.
    #[prost(bool, tag = "3")]
    pub cancel: bool,
    /// [`WantType`] as its number.
    #[prost(enumeration = "WantType", tag = "4")]
    pub want_type: i32,
    /// Ask for a DONT_HAVE if the block is not held.
    #[prost(bool, tag = "5")]
    pub send_dont_have: bool,
}

/// What a want asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum WantType {
    /// The block itself.
    Block = 0,
    /// Only whether the peer holds it.
    Have = 1,
}

/// A block with the prefix that rebuilds its CID from its data.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Block {
    /// varint(version) varint(codec) varint(multihash code) varint(digest length).
    #[prost(bytes = "vec", tag = "1")]
    pub prefix: Vec<u8>,
    /// The block bytes.
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
}

/// An answer to a want: HAVE or DONT_HAVE.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockPresence {
    /// The binary CID answered about.
    #[prost(bytes = "vec", tag = "1")]
    pub cid: Vec<u8>,
    /// [`PresenceType`] as its number.
    #[prost(enumeration = "PresenceType", tag = "2")]
    pub r#type: i32,
}

/// HAVE or DONT_HAVE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PresenceType {
    /// The sender holds the block.
    Have = 0,
    /// The sender does not hold the block.
    DontHave = 1,
}

/// The protocol versions, newest first; outbound streams try them in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProtocolVersion {
    V120,
    V110,
    V100,
}

/// Protocol IDs we accept (formats.md 2.1); the legacy ID speaks 1.0.0.
pub(crate) const PROTOCOLS: [&str; 4] = [
    "/ipfs/bitswap/1.2.0",
    "/ipfs/bitswap/1.1.0",
    "/ipfs/bitswap/1.0.0",
    "/ipfs/bitswap",
];

/// Versions tried when opening a stream, newest first.
pub(crate) const OUTBOUND_VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V120,
    ProtocolVersion::V110,
    ProtocolVersion::V100,
];

impl ProtocolVersion {
    /// The protocol ID spoken on an outbound stream of this version.
    pub(crate) fn protocol(self) -> &'static str {
        match self {
            ProtocolVersion::V120 => PROTOCOLS[0],
            ProtocolVersion::V110 => PROTOCOLS[1],
            ProtocolVersion::V100 => PROTOCOLS[2],
        }
    }
}

impl Message {
    /// Rewrites a 1.2.0 message for an older peer (boxo `ToProtoV0`/`ToProtoV1`, 2.1): before
    /// 1.2.0 there are no presences and no want-have, and 1.0.0 carries only CIDv0 blocks, raw.
    pub(crate) fn for_version(mut self, version: ProtocolVersion) -> Message {
        if version == ProtocolVersion::V120 {
            return self;
        }
        self.block_presences.clear();
        self.pending_bytes = 0;
        if let Some(wantlist) = self.wantlist.as_mut() {
            for entry in &mut wantlist.entries {
                entry.want_type = WantType::Block as i32;
                entry.send_dont_have = false;
            }
        }
        if version == ProtocolVersion::V100 {
            let payload = std::mem::take(&mut self.payload);
            self.blocks = payload
                .into_iter()
                .filter(|block| block.prefix == [0x00, 0x70, 0x12, 0x20])
                .map(|block| block.data)
                .collect();
        }
        self
    }

    /// Whether the message carries nothing at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.wantlist
            .as_ref()
            .is_none_or(|w| w.entries.is_empty() && !w.full)
            && self.blocks.is_empty()
            && self.payload.is_empty()
            && self.block_presences.is_empty()
    }
}

/// Parses a binary CID from a message, refusing over-long ones and trailing bytes.
pub(crate) fn parse_cid(bytes: &[u8]) -> Option<Cid> {
    if bytes.len() > MAX_CID_LEN {
        return None;
    }
    let cid = Cid::try_from(bytes).ok()?;
    (cid.encoded_len() == bytes.len()).then_some(cid)
}

/// The block prefix of a CID (go-cid `Prefix.Bytes`, formats.md 2.3).
pub(crate) fn prefix(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    let version = match cid.version() {
        Version::V0 => 0,
        Version::V1 => 1,
    };
    for value in [
        version,
        cid.codec(),
        cid.hash().code(),
        cid.hash().size() as u64,
    ] {
        write_varint(&mut out, value);
    }
    out
}

/// Why a received block was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BlockRefusal {
    /// The prefix does not parse or names an impossible CID.
    BadPrefix,
    /// The prefix names a hash other than sha2-256 with a 32-byte digest.
    UnsupportedHash(u64),
}

/// Rebuilds a block's CID by hashing its data under its prefix (boxo `NewWantlistBlock`):
/// this is the integrity check, since only wanted CIDs are then accepted.
pub(crate) fn block_cid(block: &Block) -> Result<Cid, BlockRefusal> {
    let mut rest = block.prefix.as_slice();
    let mut fields = [0u64; 4];
    for field in &mut fields {
        let (value, used) = read_varint(rest).ok_or(BlockRefusal::BadPrefix)?;
        *field = value;
        rest = &rest[used..];
    }
    let [version, codec, code, length] = fields;
    if !rest.is_empty() {
        return Err(BlockRefusal::BadPrefix);
    }

    if code != SHA2_256 || length != 32 {
        return Err(BlockRefusal::UnsupportedHash(code));
    }
    let version = match version {
        0 => Version::V0,
        1 => Version::V1,
        _ => return Err(BlockRefusal::BadPrefix),
    };
    Cid::new(version, codec, sha256_multihash(&block.data)).map_err(|_| BlockRefusal::BadPrefix)
}

/// The CIDv0 of a raw 1.0.0 block (formats.md 2.1: dag-pb and sha2-256 implied).
pub(crate) fn block_cid_v0(data: &[u8]) -> Option<Cid> {
    Cid::new(Version::V0, DAG_PB, sha256_multihash(data)).ok()
}

/// The sha2-256 multihash of `data`.
pub(crate) fn sha256_multihash(data: &[u8]) -> Multihash<64> {
    let digest = Sha256::digest(data);
    // A 32-byte digest always fits the 64-byte multihash, so wrap cannot fail here.
    Multihash::wrap(SHA2_256, &digest).unwrap_or_default()
}

/// Frames a message: uvarint length, then the protobuf bytes (formats.md 2.2).
pub(crate) fn encode_frame(message: &Message) -> Vec<u8> {
    message.encode_length_delimited_to_vec()
}

/// Why reading a frame failed.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The stream failed or ended inside a frame.
    Io(std::io::Error),
    /// The length prefix is not a valid varint.
    BadLength,
    /// The frame is larger than the limit.
    TooLarge(u64),
    /// The protobuf did not decode.
    Decode(prost::DecodeError),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "read failed: {e}"),
            FrameError::BadLength => write!(f, "bad length prefix"),
            FrameError::TooLarge(len) => write!(f, "message of {len} bytes is over the limit"),
            FrameError::Decode(e) => write!(f, "bad protobuf: {e}"),
        }
    }
}

/// Reads one framed message; `Ok(None)` at a clean end of stream. A frame over `max` bytes is
/// refused before any of it is read.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Message>, FrameError> {
    let Some(length) = read_length(reader).await? else {
        return Ok(None);
    };
    if length > max as u64 {
        return Err(FrameError::TooLarge(length));
    }

    // Grow with the bytes that actually arrive, so that a peer announcing 4 MiB on many
    // streams does not make us allocate it up front.
    let mut body = Vec::with_capacity((length as usize).min(64 << 10));
    let read = reader
        .take(length)
        .read_to_end(&mut body)
        .await
        .map_err(FrameError::Io)?;
    if read as u64 != length {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Message::decode(Bytes::from(body))
        .map(Some)
        .map_err(FrameError::Decode)
}

/// Reads the uvarint length prefix byte by byte; `Ok(None)` if the stream ends before it.
async fn read_length<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<u64>, FrameError> {
    let mut value = 0u64;
    for index in 0..10 {
        let mut byte = [0u8; 1];
        let read = reader.read(&mut byte).await.map_err(FrameError::Io)?;
        if read == 0 {
            return if index == 0 {
                Ok(None)
            } else {
                Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            };
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * index);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(FrameError::BadLength)
}

/// Appends `value` as an unsigned varint (multiformats unsigned-varint).
pub(crate) fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned varint of at most 9 bytes; returns the value and the bytes used.
pub(crate) fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().take(9).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests;
