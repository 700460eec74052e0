//! The inode tree of a layer, built from its TOC alone: what `ls -l` and `stat` show, and for
//! every regular file the chunks that hold its bytes.
//!
//! The tree is the layer as overlayfs wants a lower directory: a `.wh.NAME` entry becomes a
//! whiteout (a character device 0:0 named NAME), `.wh..wh..opq` becomes the
//! `trusted.overlay.opaque=y` xattr of its directory, and the landmarks and the TOC itself are
//! not shown.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

use ferry_estargz::{Toc, TocEntry, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_NAME};
use ferry_oci::Digest;

use crate::Error;

/// The root directory's inode number (FUSE's).
pub const ROOT_INO: u64 = 1;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The largest chunk served (writers chunk at 4 MiB by default; a file stored unchunked is one
/// chunk, so a layer with a larger one is refused rather than read into memory whole).
pub const MAX_CHUNK_SIZE: u64 = 256 << 20;
/// The xattr overlayfs reads to see that a lower directory hides the ones below it.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A character device (whiteouts are 0:0 ones).
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
}

/// A piece of a regular file that is one gzip member's payload (or part of one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Where the piece starts in the file.
    pub file_offset: u64,
    /// Its decompressed size.
    pub size: u64,
    /// Blob offset of the gzip member holding it.
    pub offset: u64,
    /// Where the member ends in the blob (the next member's start).
    pub end: u64,
    /// Where the piece starts in the member's decompressed bytes.
    pub inner_offset: u64,
    /// sha256 of its bytes, from the TOC's `chunkDigest`.
    pub digest: Digest,
}

/// One inode.
#[derive(Clone, Debug)]
pub struct Inode {
    /// Its number.
    pub ino: u64,
    /// Its parent directory's number (the root's own).
    pub parent: u64,
    /// What it is.
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (no type bits).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Size in bytes (regular files; a symlink's target length).
    pub size: u64,
    /// Device number of a device.
    pub rdev: u32,
    /// Names pointing to it.
    pub nlink: u32,
    /// A symlink's target.
    pub target: Vec<u8>,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// A directory's entries.
    pub children: BTreeMap<OsString, u64>,
    /// A regular file's chunks, by file offset.
    pub chunks: Vec<Chunk>,
}

/// The tree of one layer.
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Inode>,
    /// Blob offset where prioritized files end (the `.prefetch.landmark`'s member), if any.
    pub prefetch_end: Option<u64>,
}

impl Tree {
    /// Builds the tree of the TOC of a blob whose TOC member starts at `toc_offset`.
    pub fn build(toc: &Toc, toc_offset: u64) -> Result<Tree, Error> {
        let mut builder = Builder {
            tree: Tree {
                nodes: vec![new_inode(ROOT_INO, ROOT_INO, Kind::Dir)],
                prefetch_end: None,
            },
            files: HashMap::new(),
            hidden_members: Vec::new(),
        };
        builder.tree.nodes[0].perm = 0o755;
        builder.tree.nodes[0].nlink = 2;
        for entry in &toc.entries {
            builder.add(entry)?;
        }
        let mut tree = builder.tree;
        tree.close_chunks(toc_offset, &builder.hidden_members)?;
        Ok(tree)
    }

    /// The inode `ino`.
    pub fn get(&self, ino: u64) -> Option<&Inode> {
        let index = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.nodes.get(index)
    }

    /// The inode named `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Option<&Inode> {
        let dir = self.get(parent)?;
        let ino = *dir.children.get(name)?;
        self.get(ino)
    }

    /// The inode at `path` (relative to the root, `/`-separated).
    pub fn find(&self, path: &str) -> Option<&Inode> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            ino = self.lookup(ino, OsStr::new(part))?.ino;
        }
        self.get(ino)
    }

    /// Every inode.
    pub fn inodes(&self) -> &[Inode] {
        &self.nodes
    }

    /// The chunks of file `ino` that overlap `offset..offset + len`.
    pub fn chunks(&self, ino: u64, offset: u64, len: u64) -> &[Chunk] {
        let Some(inode) = self.get(ino) else {
            return &[];
        };
        let chunks = &inode.chunks;
        let end = offset.saturating_add(len).min(inode.size);
        if offset >= end {
            return &[];
        }
        let first = chunks.partition_point(|c| c.file_offset + c.size <= offset);
        let last = chunks.partition_point(|c| c.file_offset < end);
        &chunks[first..last.max(first)]
    }

    /// Sets each chunk's member end: the next member's start, or the TOC's for the last.
    fn close_chunks(&mut self, toc_offset: u64, hidden: &[u64]) -> Result<(), Error> {
        let mut starts: Vec<u64> = self
            .nodes
            .iter()
            .flat_map(|n| n.chunks.iter().map(|c| c.offset))
            .collect();
        starts.extend_from_slice(hidden);
        starts.push(toc_offset);
        starts.sort_unstable();
        starts.dedup();
        for node in &mut self.nodes {
            for chunk in &mut node.chunks {
                let next = starts.partition_point(|&s| s <= chunk.offset);
                chunk.end = *starts.get(next).ok_or_else(|| {
                    Error::Toc(format!(
                        "a chunk at blob offset {} is past the TOC at {toc_offset}",
                        chunk.offset
                    ))
                })?;
            }
            let mut covered = 0;
            for chunk in &node.chunks {
                // a chunk is held in memory while it is verified
                if chunk.size > MAX_CHUNK_SIZE {
                    return Err(Error::Toc(format!(
                        "inode {}: a chunk of {} bytes, more than {MAX_CHUNK_SIZE}",
                        node.ino, chunk.size
                    )));
                }
                if chunk.file_offset != covered {
                    return Err(Error::Toc(format!(
                        "inode {}: chunks leave a gap or overlap at file offset {covered}",
                        node.ino
                    )));
                }
                covered += chunk.size;
            }
            if node.kind == Kind::File && covered != node.size {
                return Err(Error::Toc(format!(
                    "inode {}: chunks cover {covered} of {} bytes",
                    node.ino, node.size
                )));
            }
        }
        Ok(())
    }
}

fn new_inode(ino: u64, parent: u64, kind: Kind) -> Inode {
    Inode {
        ino,
        parent,
        kind,
        perm: 0,
        uid: 0,
        gid: 0,
        mtime: SystemTime::UNIX_EPOCH,
        size: 0,
        rdev: 0,
        nlink: 1,
        target: Vec::new(),
        xattrs: BTreeMap::new(),
        children: BTreeMap::new(),
        chunks: Vec::new(),
    }
}

struct Builder {
    tree: Tree,
    /// Regular files by cleaned path, for their later chunks and for hardlinks.
    files: HashMap<String, u64>,
    /// Blob offsets of the members of entries not shown (the landmarks).
    hidden_members: Vec<u64>,
}

/// A tar path without `./`, leading or trailing slashes.
fn clean(name: &str) -> String {
    name.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((dir, base)) => (dir, base),
        None => ("", path),
    }
}

fn non_negative(what: &str, name: &str, n: i64) -> Result<u64, Error> {
    u64::try_from(n).map_err(|_| Error::Toc(format!("{name}: negative {what} {n}")))
}

fn digest(name: &str, text: &str) -> Result<Digest, Error> {
    text.parse()
        .map_err(|_| Error::Toc(format!("{name}: bad chunkDigest {text:?}")))
}

impl Builder {
    fn add(&mut self, entry: &TocEntry) -> Result<(), Error> {
        let path = clean(&entry.name);
        if entry.kind == "chunk" {
            return self.add_chunk(&path, entry);
        }
        if path.is_empty() {
            if entry.kind == "dir" {
                let root = &mut self.tree.nodes[0];
                set_attrs(root, entry)?;
            }
            return Ok(());
        }
        if path == TOC_NAME {
            return Ok(());
        }
        if path == PREFETCH_LANDMARK || path == NO_PREFETCH_LANDMARK {
            let offset = non_negative("offset", &path, entry.offset)?;
            if entry.size > 0 {
                self.hidden_members.push(offset);
            }
            if path == PREFETCH_LANDMARK {
                self.tree.prefetch_end = Some(offset);
            }
            return Ok(());
        }
        let (dir, base) = split(&path);
        let parent = self.dir(dir)?;
        if base == OPAQUE_WHITEOUT {
            let node = &mut self.tree.nodes[(parent - 1) as usize];
            node.xattrs.insert(OPAQUE_XATTR.into(), b"y".to_vec());
            return Ok(());
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            let ino = self.child(parent, hidden, Kind::Char)?;
            let node = &mut self.tree.nodes[(ino - 1) as usize];
            set_attrs(node, entry)?;
            node.perm = 0;
            node.rdev = 0;
            return Ok(());
        }
        match entry.kind.as_str() {
            "dir" => {
                let ino = self.dir(&path)?;
                set_attrs(&mut self.tree.nodes[(ino - 1) as usize], entry)?;
            }
            "hardlink" => {
                let target = clean(&entry.link_name);
                let ino = *self.files.get(&target).ok_or_else(|| {
                    Error::Toc(format!(
                        "{path}: hardlink to {target}, which is no file before it"
                    ))
                })?;
                self.link(parent, base, ino)?;
                self.tree.nodes[(ino - 1) as usize].nlink += 1;
                self.files.insert(path, ino);
            }
            "reg" => {
                let ino = self.child(parent, base, Kind::File)?;
                let node = &mut self.tree.nodes[(ino - 1) as usize];
                set_attrs(node, entry)?;
                node.size = non_negative("size", &path, entry.size)?;
                if node.size > 0 {
                    let size = match entry.chunk_size {
                        0 => node.size,
                        n => non_negative("chunkSize", &path, n)?,
                    };
                    node.chunks.push(Chunk {
                        file_offset: 0,
                        size,
                        offset: non_negative("offset", &path, entry.offset)?,
                        end: 0,
                        inner_offset: non_negative("innerOffset", &path, entry.inner_offset)?,
                        digest: digest(&path, &entry.chunk_digest)?,
                    });
                }
                self.files.insert(path, ino);
            }
            "symlink" => {
                let ino = self.child(parent, base, Kind::Symlink)?;
                let node = &mut self.tree.nodes[(ino - 1) as usize];
                set_attrs(node, entry)?;
                node.target = entry.link_name.as_bytes().to_vec();
                node.size = node.target.len() as u64;
            }
            "char" | "block" => {
                let kind = if entry.kind == "char" {
                    Kind::Char
                } else {
                    Kind::Block
                };
                let ino = self.child(parent, base, kind)?;
                let node = &mut self.tree.nodes[(ino - 1) as usize];
                set_attrs(node, entry)?;
                let major = non_negative("devMajor", &path, entry.dev_major)?;
                let minor = non_negative("devMinor", &path, entry.dev_minor)?;
                node.rdev = libc::makedev(major as u32, minor as u32) as u32;
            }
            "fifo" => {
                let ino = self.child(parent, base, Kind::Fifo)?;
                set_attrs(&mut self.tree.nodes[(ino - 1) as usize], entry)?;
            }
            other => return Err(Error::Toc(format!("{path}: unknown entry type {other:?}"))),
        }
        Ok(())
    }

    fn add_chunk(&mut self, path: &str, entry: &TocEntry) -> Result<(), Error> {
        let ino = *self
            .files
            .get(path)
            .ok_or_else(|| Error::Toc(format!("{path}: a chunk of no file before it")))?;
        let node = &mut self.tree.nodes[(ino - 1) as usize];
        let file_offset = non_negative("chunkOffset", path, entry.chunk_offset)?;
        if file_offset >= node.size {
            return Err(Error::Toc(format!(
                "{path}: chunk at {file_offset} is past the file's {} bytes",
                node.size
            )));
        }
        let size = match entry.chunk_size {
            0 => node.size - file_offset,
            n => non_negative("chunkSize", path, n)?,
        };
        node.chunks.push(Chunk {
            file_offset,
            size,
            offset: non_negative("offset", path, entry.offset)?,
            end: 0,
            inner_offset: non_negative("innerOffset", path, entry.inner_offset)?,
            digest: digest(path, &entry.chunk_digest)?,
        });
        Ok(())
    }

    /// The directory at `path`, made (with default attributes) when the TOC has not named it.
    fn dir(&mut self, path: &str) -> Result<u64, Error> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let existing = self.tree.nodes[(ino - 1) as usize]
                .children
                .get(OsStr::new(part))
                .copied();
            ino = match existing {
                Some(child) if self.tree.nodes[(child - 1) as usize].kind == Kind::Dir => child,
                Some(_) => {
                    return Err(Error::Toc(format!("{path}: {part} is not a directory")));
                }
                None => {
                    let child = self.child(ino, part, Kind::Dir)?;
                    self.tree.nodes[(child - 1) as usize].perm = 0o755;
                    child
                }
            };
        }
        Ok(ino)
    }

    /// A new inode named `name` in `parent` (replacing an earlier entry of that name, as a
    /// later tar entry does).
    fn child(&mut self, parent: u64, name: &str, kind: Kind) -> Result<u64, Error> {
        let ino = self.tree.nodes.len() as u64 + 1;
        let mut node = new_inode(ino, parent, kind);
        if kind == Kind::Dir {
            node.nlink = 2;
            self.tree.nodes[(parent - 1) as usize].nlink += 1;
        }
        self.tree.nodes.push(node);
        self.link(parent, name, ino)?;
        Ok(ino)
    }

    fn link(&mut self, parent: u64, name: &str, ino: u64) -> Result<(), Error> {
        if name.is_empty() || name == ".." || name.as_bytes().contains(&0) {
            return Err(Error::Toc(format!("bad entry name {name:?}")));
        }
        let dir = &mut self.tree.nodes[(parent - 1) as usize];
        dir.children
            .insert(OsStr::from_bytes(name.as_bytes()).into(), ino);
        Ok(())
    }
}

fn set_attrs(node: &mut Inode, entry: &TocEntry) -> Result<(), Error> {
    node.perm = (entry.mode & 0o7777) as u16;
    node.uid = u32::try_from(entry.uid)
        .map_err(|_| Error::Toc(format!("{}: bad uid {}", entry.name, entry.uid)))?;
    node.gid = u32::try_from(entry.gid)
        .map_err(|_| Error::Toc(format!("{}: bad gid {}", entry.name, entry.gid)))?;
    if !entry.mod_time.is_empty() {
        let time = chrono::DateTime::parse_from_rfc3339(&entry.mod_time)
            .map_err(|e| Error::Toc(format!("{}: bad modtime: {e}", entry.name)))?;
        let secs = time.timestamp();
        node.mtime = if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(secs as u64, time.timestamp_subsec_nanos())
        } else {
            SystemTime::UNIX_EPOCH
        };
    }
    node.xattrs.extend(entry.xattrs.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> TocEntry {
        serde_json_entry(json)
    }

    fn serde_json_entry(json: &str) -> TocEntry {
        let toc = format!(r#"{{"version":1,"entries":[{json}]}}"#);
        Toc::parse(toc.as_bytes()).unwrap().entries.remove(0)
    }

    fn d(n: u8) -> String {
        format!("sha256:{}", hex_byte(n))
    }

    fn hex_byte(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn toc(entries: &[&str]) -> Toc {
        Toc {
            version: 1,
            entries: entries.iter().map(|e| entry(e)).collect(),
        }
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts_and_opaque_dirs() {
        let toc = toc(&[
            r#"{"name":"etc/","type":"dir","mode":493}"#,
            r#"{"name":"etc/.wh.passwd","type":"reg","mode":420}"#,
            r#"{"name":"var/lib/.wh..wh..opq","type":"reg"}"#,
            r#"{"name":".no.prefetch.landmark","type":"reg","size":1,"offset":10,"chunkDigest":"sha256:4dff4ea340f0a823f15d3f4f01ab62eae0e5da579ccb851f8db9dfe84c58b2b3"}"#,
            r#"{"name":"stargz.index.json","type":"reg","size":5}"#,
        ]);
        let tree = Tree::build(&toc, 100).unwrap();
        let wh = tree.find("etc/passwd").unwrap();
        assert_eq!((wh.kind, wh.rdev, wh.perm), (Kind::Char, 0, 0));
        assert!(tree.find("etc/.wh.passwd").is_none());
        let lib = tree.find("var/lib").unwrap();
        assert_eq!(lib.kind, Kind::Dir);
        assert_eq!(lib.xattrs[OPAQUE_XATTR], b"y");
        assert!(lib.children.is_empty());
        let root = tree.get(ROOT_INO).unwrap();
        let names: Vec<_> = root.children.keys().cloned().collect();
        assert_eq!(names, [OsString::from("etc"), OsString::from("var")]);
        assert_eq!(tree.prefetch_end, None);
    }

    #[test]
    fn hardlinks_share_the_inode() {
        let toc = toc(&[
            &format!(
                r#"{{"name":"bin/busybox","type":"reg","size":3,"mode":493,"offset":50,"chunkDigest":"{}"}}"#,
                d(1)
            ),
            r#"{"name":"bin/sh","type":"hardlink","linkName":"bin/busybox"}"#,
            r#"{"name":"./usr/bin/ls","type":"hardlink","linkName":"./bin/busybox"}"#,
        ]);
        let tree = Tree::build(&toc, 80).unwrap();
        let busybox = tree.find("bin/busybox").unwrap();
        assert_eq!(tree.find("bin/sh").unwrap().ino, busybox.ino);
        assert_eq!(tree.find("usr/bin/ls").unwrap().ino, busybox.ino);
        assert_eq!(busybox.nlink, 3);
        assert_eq!(busybox.perm, 0o755);
        assert_eq!(busybox.chunks[0].end, 80);
    }

    #[test]
    fn chunks_are_found_by_file_offset() {
        let toc = toc(&[
            &format!(
                r#"{{"name":"big","type":"reg","size":10,"offset":100,"chunkSize":4,"chunkDigest":"{}"}}"#,
                d(1)
            ),
            &format!(
                r#"{{"name":"big","type":"chunk","offset":200,"chunkOffset":4,"chunkSize":4,"chunkDigest":"{}"}}"#,
                d(2)
            ),
            &format!(
                r#"{{"name":"big","type":"chunk","offset":300,"chunkOffset":8,"chunkDigest":"{}"}}"#,
                d(3)
            ),
            &format!(
                r#"{{"name":"small","type":"reg","size":2,"offset":400,"chunkDigest":"{}"}}"#,
                d(4)
            ),
        ]);
        let tree = Tree::build(&toc, 500).unwrap();
        let big = tree.find("big").unwrap().ino;
        let offsets = |o, l| {
            tree.chunks(big, o, l)
                .iter()
                .map(|c| (c.file_offset, c.size, c.offset, c.end))
                .collect::<Vec<_>>()
        };
        assert_eq!(offsets(0, 1), [(0, 4, 100, 200)]);
        assert_eq!(offsets(3, 2), [(0, 4, 100, 200), (4, 4, 200, 300)]);
        assert_eq!(offsets(8, 100), [(8, 2, 300, 400)]);
        assert_eq!(offsets(10, 5), []);
        let small = tree.find("small").unwrap();
        assert_eq!(small.chunks[0].end, 500);
        assert_eq!(small.chunks[0].digest.to_string(), d(4));
    }

    #[test]
    fn a_chunk_gap_is_refused() {
        let toc = toc(&[
            &format!(
                r#"{{"name":"big","type":"reg","size":10,"offset":100,"chunkSize":4,"chunkDigest":"{}"}}"#,
                d(1)
            ),
            &format!(
                r#"{{"name":"big","type":"chunk","offset":300,"chunkOffset":8,"chunkDigest":"{}"}}"#,
                d(3)
            ),
        ]);
        let err = Tree::build(&toc, 500).unwrap_err();
        assert_eq!(
            err.to_string(),
            "eStargz TOC: inode 2: chunks leave a gap or overlap at file offset 4"
        );
    }

    #[test]
    fn a_chunk_too_large_to_verify_in_memory_is_refused() {
        let size = MAX_CHUNK_SIZE + 1;
        let toc = toc(&[&format!(
            r#"{{"name":"huge","type":"reg","size":{size},"offset":100,"chunkDigest":"{}"}}"#,
            d(1)
        )]);
        let err = Tree::build(&toc, 500).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("eStargz TOC: inode 2: a chunk of {size} bytes, more than {MAX_CHUNK_SIZE}")
        );
    }

    #[test]
    fn prefetch_landmark_marks_the_prioritized_end() {
        let toc = toc(&[
            &format!(
                r#"{{"name":"etc/os-release","type":"reg","size":3,"offset":30,"chunkDigest":"{}"}}"#,
                d(1)
            ),
            &format!(
                r#"{{"name":".prefetch.landmark","type":"reg","size":1,"offset":70,"chunkDigest":"{}"}}"#,
                d(2)
            ),
        ]);
        let tree = Tree::build(&toc, 90).unwrap();
        assert_eq!(tree.prefetch_end, Some(70));
        assert!(tree.find(".prefetch.landmark").is_none());
        // the landmark's member still bounds the file before it
        assert_eq!(tree.find("etc/os-release").unwrap().chunks[0].end, 70);
    }
}
