//! Reading one block of a UnixFS file DAG back (formats.md 1.4, 1.5), for fetchers that walk a
//! file's DAG block by block.

use crate::pb::{Reader, Value, UNIXFS_FILE};
use crate::{Cid, Error, DAG_PB, RAW};

/// UnixFS `Data.Type` of a legacy raw node, which carries file bytes like a File node.
const UNIXFS_RAW: u64 = 0;

/// What one block of a file DAG holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileNode {
    /// File bytes carried by this block itself: a raw block, or a dag-pb node whose UnixFS
    /// Data field holds bytes (kubo's CIDv0 leaves) and that has no links.
    Data(Vec<u8>),
    /// Children in file order.
    Links {
        /// The children, each with its place in the file relative to this node's start.
        children: Vec<Child>,
        /// File bytes under this node (the sum of the children's sizes).
        filesize: u64,
    },
}

/// One child of an interior file node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Child {
    /// The child block's CID.
    pub cid: Cid,
    /// Byte offset of the child's first byte relative to the parent's first byte.
    pub offset: u64,
    /// File bytes under the child (its UnixFS blocksizes entry).
    pub size: u64,
}

/// Decodes a file-DAG block by its CID's codec (raw or dag-pb).
///
/// Refuses anything that is not a UnixFS File or Raw node, a blocksizes count that differs from
/// the links count, a filesize that differs from the sizes under it, and codecs other than raw
/// and dag-pb. PBNode fields are accepted in either order, since old data has Data first
/// (formats.md 1.4 rule 1). The bytes are not checked against the CID here: that is
/// [`verify_block`](crate::verify_block)'s job, done when the block arrives.
pub fn decode_file_node(cid: &Cid, data: &[u8]) -> Result<FileNode, Error> {
    match cid.codec() {
        RAW => Ok(FileNode::Data(data.to_vec())),
        DAG_PB => decode_dag_pb(cid, data),
        codec => Err(Error::UnsupportedCodec {
            cid: Box::new(*cid),
            codec,
        }),
    }
}

/// Decodes a dag-pb block holding a UnixFS file node.
fn decode_dag_pb(cid: &Cid, data: &[u8]) -> Result<FileNode, Error> {
    let node = PbNode::parse(data).map_err(|reason| malformed(cid, "dag-pb node", reason))?;
    let unixfs = node
        .data
        .ok_or_else(|| malformed(cid, "dag-pb node", "no data field"))?;
    let unixfs =
        UnixfsData::parse(unixfs).map_err(|reason| malformed(cid, "unixfs data", reason))?;

    if unixfs.kind != UNIXFS_FILE && unixfs.kind != UNIXFS_RAW {
        return Err(Error::NotAFile {
            cid: Box::new(*cid),
            unixfs_type: unixfs.kind,
        });
    }

    let mut links = Vec::with_capacity(node.links.len());
    for link in &node.links {
        let hash = parse_link(link).map_err(|reason| malformed(cid, "dag-pb link", reason))?;
        let child = Cid::try_from(hash)
            .map_err(|e| malformed(cid, "dag-pb link", format!("invalid cid: {e}")))?;
        links.push(child);
    }

    if links.is_empty() {
        return data_node(cid, unixfs);
    }
    links_node(cid, unixfs, links)
}

/// A leaf carrying its bytes in UnixFS Data.
fn data_node(cid: &Cid, unixfs: UnixfsData<'_>) -> Result<FileNode, Error> {
    if !unixfs.blocksizes.is_empty() {
        let reason = format!("{} blocksizes but no links", unixfs.blocksizes.len());
        return Err(Error::BadSizes {
            cid: Box::new(*cid),
            reason,
        });
    }

    let bytes = unixfs.data.unwrap_or_default();
    if let Some(filesize) = unixfs.filesize {
        if filesize != bytes.len() as u64 {
            let reason = format!("filesize {filesize} but {} data bytes", bytes.len());
            return Err(Error::BadSizes {
                cid: Box::new(*cid),
                reason,
            });
        }
    }
    Ok(FileNode::Data(bytes.to_vec()))
}

/// An interior node: children placed one after the other by their blocksizes.
fn links_node(cid: &Cid, unixfs: UnixfsData<'_>, links: Vec<Cid>) -> Result<FileNode, Error> {
    if unixfs.blocksizes.len() != links.len() {
        let reason = format!(
            "{} blocksizes for {} links",
            unixfs.blocksizes.len(),
            links.len()
        );
        return Err(Error::BadSizes {
            cid: Box::new(*cid),
            reason,
        });
    }

    // TODO: read nodes that carry bytes of their own before their children (the UnixFS spec
    // allows it; neither kubo's balanced nor its trickle importer writes them).
    if unixfs.data.is_some_and(|d| !d.is_empty()) {
        let reason = "data bytes alongside links";
        return Err(Error::Unsupported {
            cid: Box::new(*cid),
            reason,
        });
    }

    let mut children = Vec::with_capacity(links.len());
    let mut offset = 0u64;
    for (child, size) in links.into_iter().zip(unixfs.blocksizes) {
        children.push(Child {
            cid: child,
            offset,
            size,
        });
        offset = offset.checked_add(size).ok_or_else(|| Error::BadSizes {
            cid: Box::new(*cid),
            reason: "blocksizes overflow 64 bits".to_string(),
        })?;
    }

    if let Some(filesize) = unixfs.filesize {
        if filesize != offset {
            let reason = format!("filesize {filesize} but blocksizes add up to {offset}");
            return Err(Error::BadSizes {
                cid: Box::new(*cid),
                reason,
            });
        }
    }
    Ok(FileNode::Links {
        children,
        filesize: offset,
    })
}

/// Builds a [`Error::Malformed`].
fn malformed(cid: &Cid, what: &'static str, reason: impl Into<String>) -> Error {
    Error::Malformed {
        cid: Box::new(*cid),
        what,
        reason: reason.into(),
    }
}

/// The two PBNode fields, borrowed from the block.
struct PbNode<'a> {
    data: Option<&'a [u8]>,
    links: Vec<&'a [u8]>,
}

impl<'a> PbNode<'a> {
    /// Splits a PBNode into Data and the encoded links, in either field order; refuses
    /// duplicate Data and unknown fields (formats.md 1.4 rules 1 and 3).
    fn parse(buf: &'a [u8]) -> Result<Self, &'static str> {
        let mut node = PbNode {
            data: None,
            links: Vec::new(),
        };
        let mut reader = Reader::new(buf);
        while let Some((number, value)) = reader.field()? {
            match (number, value) {
                (1, Value::Bytes(_)) if node.data.is_some() => return Err("duplicate data field"),
                (1, Value::Bytes(bytes)) => node.data = Some(bytes),
                (2, Value::Bytes(bytes)) => node.links.push(bytes),
                _ => return Err("unknown field or wire type"),
            }
        }
        Ok(node)
    }
}

/// Returns a PBLink's Hash, checking the fields come in number order without repeats
/// (formats.md 1.4 rule 2). Name and Tsize are not needed to read a file.
fn parse_link(buf: &[u8]) -> Result<&[u8], &'static str> {
    let mut reader = Reader::new(buf);
    let mut hash = None;
    let mut last = 0;
    while let Some((number, value)) = reader.field()? {
        if number <= last {
            return Err("link fields out of order or repeated");
        }
        last = number;

        match (number, value) {
            (1, Value::Bytes(bytes)) => hash = Some(bytes),
            (2, Value::Bytes(_)) | (3, Value::Varint(_)) => {}
            _ => return Err("unknown field or wire type"),
        }
    }
    hash.ok_or("link without hash")
}

/// The UnixFS `Data` message fields a file reader needs (formats.md 1.5).
struct UnixfsData<'a> {
    kind: u64,
    data: Option<&'a [u8]>,
    filesize: Option<u64>,
    blocksizes: Vec<u64>,
}

impl<'a> UnixfsData<'a> {
    /// Parses the message; blocksizes may be unpacked (what kubo writes) or packed (what a
    /// proto2 reader must also accept). Fields a file reader does not need are skipped.
    fn parse(buf: &'a [u8]) -> Result<Self, &'static str> {
        let mut kind = None;
        let mut out = UnixfsData {
            kind: 0,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
        };
        let mut reader = Reader::new(buf);
        while let Some((number, value)) = reader.field()? {
            match (number, value) {
                (1, Value::Varint(v)) => kind = Some(v),
                (2, Value::Bytes(bytes)) => out.data = Some(bytes),
                (3, Value::Varint(v)) => out.filesize = Some(v),
                (4, Value::Varint(v)) => out.blocksizes.push(v),
                (4, Value::Bytes(packed)) => {
                    let mut packed = Reader::new(packed);
                    while !packed.is_empty() {
                        out.blocksizes.push(packed.varint()?);
                    }
                }
                (1..=4, _) => return Err("wrong wire type for a known field"),
                _ => {}
            }
        }
        out.kind = kind.ok_or("no type field")?;
        Ok(out)
    }
}
