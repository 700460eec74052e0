//! The streaming UnixFS importer: fixed chunker, raw leaves, balanced DAG (formats.md 1.2-1.6).

use std::mem;

use crate::pb::{encode_file_node, LinkOut};
use crate::{dag_pb_cid, raw_cid, Cid, Profile};

/// A block the importer produced.
///
/// Every block comes after all the blocks it links to: leaves arrive in file order, and each
/// interior node as soon as its last child exists, the root last of all.
#[derive(Debug)]
pub enum ImportedBlock<'a> {
    /// A raw leaf: `data` is the file's bytes at `offset`, so a store can record a byte range
    /// of the file instead of copying it.
    Leaf {
        /// CIDv1 raw sha2-256 of `data`.
        cid: Cid,
        /// Where `data` starts in the file.
        offset: u64,
        /// The leaf's bytes.
        data: &'a [u8],
    },
    /// An interior dag-pb node; its bytes exist nowhere else and must be stored.
    Node {
        /// CIDv1 dag-pb sha2-256 of `data`.
        cid: Cid,
        /// The encoded node.
        data: Vec<u8>,
    },
}

/// Streaming importer: feed a file's bytes in slices of any size, receive its blocks through a
/// callback, then [`finish`](Importer::finish) for the root CID.
///
/// Memory stays bounded by one chunk plus one pending node per tree level. Whole chunks inside
/// a written slice are hashed and handed out in place; only a chunk that straddles two writes
/// is copied, once, into an internal buffer.
#[derive(Debug)]
pub struct Importer {
    chunk_size: usize,
    /// The start of a chunk that the writes so far have not completed.
    partial: Vec<u8>,
    tree: Tree,
}

impl Importer {
    /// An importer for `profile`. A chunk size of 0 is taken as 1 and fewer than 2 links per
    /// node as 2, since neither describes a DAG that can be built.
    pub fn new(profile: Profile) -> Self {
        Importer {
            chunk_size: profile.chunk_size.max(1),
            partial: Vec::new(),
            tree: Tree {
                max_links: profile.max_links.max(2),
                offset: 0,
                levels: Vec::new(),
            },
        }
    }

    /// Appends `data` to the file, giving every block that becomes complete to `sink`.
    pub fn write(&mut self, mut data: &[u8], sink: &mut dyn FnMut(ImportedBlock<'_>)) {
        if !self.partial.is_empty() {
            let take = (self.chunk_size - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < self.chunk_size {
                return;
            }
            self.tree.push_leaf(&self.partial, sink);
            self.partial.clear();
        }

        let mut chunks = data.chunks_exact(self.chunk_size);
        for chunk in &mut chunks {
            self.tree.push_leaf(chunk, sink);
        }

        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.partial.reserve_exact(self.chunk_size);
            self.partial.extend_from_slice(rest);
        }
    }

    /// Flushes the last chunk and builds the remaining parents; returns the root CID and the
    /// file size.
    ///
    /// An empty file is the empty raw block, and a file of one chunk is that chunk's raw leaf
    /// (formats.md 1.3); both are still given to `sink`.
    pub fn finish(mut self, sink: &mut dyn FnMut(ImportedBlock<'_>)) -> (Cid, u64) {
        if !self.partial.is_empty() {
            self.tree.push_leaf(&self.partial, sink);
        }

        if self.tree.offset == 0 {
            let cid = raw_cid(&[]);
            sink(ImportedBlock::Leaf {
                cid,
                offset: 0,
                data: &[],
            });
            return (cid, 0);
        }

        let size = self.tree.offset;
        (self.tree.close(sink), size)
    }
}

/// Convenience: the root CID of a whole in-memory file under `profile`.
pub fn cid_of(data: &[u8], profile: Profile) -> Cid {
    let mut importer = Importer::new(profile);
    importer.write(data, &mut |_| {});
    importer.finish(&mut |_| {}).0
}

/// What a parent needs to know about a child.
#[derive(Debug)]
struct Link {
    cid: Cid,
    /// Bytes of the child's block plus everything below it (PBLink.Tsize, formats.md 1.4).
    tsize: u64,
    /// File bytes under the child (UnixFS blocksizes entry, formats.md 1.5).
    filesize: u64,
}

/// The balanced DAG under construction.
///
/// `levels[h]` holds the finished subtrees of height `h` (0 = leaves) that still wait for a
/// parent. In kubo's balanced layout (formats.md 1.6) every node off the rightmost path is
/// full, so a level is turned into a parent the moment it holds `max_links` subtrees: that
/// parent is final whatever comes after it. Only the rightmost path waits for `close`.
#[derive(Debug)]
struct Tree {
    max_links: usize,
    /// File bytes turned into leaves so far.
    offset: u64,
    levels: Vec<Vec<Link>>,
}

impl Tree {
    /// Hashes one chunk into a raw leaf, emits it and links it into the tree.
    fn push_leaf(&mut self, chunk: &[u8], sink: &mut dyn FnMut(ImportedBlock<'_>)) {
        let cid = raw_cid(chunk);
        sink(ImportedBlock::Leaf {
            cid,
            offset: self.offset,
            data: chunk,
        });

        let len = chunk.len() as u64;
        self.offset += len;
        self.push(
            0,
            Link {
                cid,
                tsize: len,
                filesize: len,
            },
            sink,
        );
    }

    /// Adds a subtree at `height`, building parents for every level that becomes full.
    fn push(&mut self, mut height: usize, mut link: Link, sink: &mut dyn FnMut(ImportedBlock<'_>)) {
        loop {
            if self.levels.len() <= height {
                self.levels.resize_with(height + 1, Vec::new);
            }

            let level = &mut self.levels[height];
            level.push(link);
            if level.len() < self.max_links {
                return;
            }

            let children = mem::take(level);
            link = build_node(&children, sink);
            height += 1;
        }
    }

    /// Builds the rightmost path bottom-up and returns the root's CID.
    ///
    /// Walking up from the leaves, each level's waiting subtrees get a parent one level higher,
    /// even a lone one, because in the balanced layout all leaves sit at the same depth. The
    /// walk stops at the first level that holds a single subtree with nothing above it.
    fn close(mut self, sink: &mut dyn FnMut(ImportedBlock<'_>)) -> Cid {
        let mut height = 0;
        while height < self.levels.len() {
            let nothing_above = self.levels[height + 1..].iter().all(Vec::is_empty);
            let level = mem::take(&mut self.levels[height]);
            if nothing_above && level.len() == 1 {
                return level[0].cid;
            }

            if !level.is_empty() {
                let parent = build_node(&level, sink);
                if self.levels.len() == height + 1 {
                    self.levels.push(Vec::new());
                }
                self.levels[height + 1].push(parent);
            }
            height += 1;
        }

        // Unreachable: the caller only closes a tree with at least one leaf, and every pass
        // moves the subtrees one level up until one is left alone at the top.
        raw_cid(&[])
    }
}

/// Encodes a file node over `children`, emits it and returns the link to it.
fn build_node(children: &[Link], sink: &mut dyn FnMut(ImportedBlock<'_>)) -> Link {
    let cids: Vec<Vec<u8>> = children.iter().map(|c| c.cid.to_bytes()).collect();
    let links: Vec<LinkOut<'_>> = children
        .iter()
        .zip(&cids)
        .map(|(child, cid)| LinkOut {
            cid,
            tsize: child.tsize,
        })
        .collect();
    let blocksizes: Vec<u64> = children.iter().map(|c| c.filesize).collect();
    let data = encode_file_node(&links, &blocksizes);

    let cid = dag_pb_cid(&data);
    let tsize = data.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
    let filesize = blocksizes.iter().sum();
    sink(ImportedBlock::Node { cid, data });
    Link {
        cid,
        tsize,
        filesize,
    }
}
