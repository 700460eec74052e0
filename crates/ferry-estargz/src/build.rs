//! Building an eStargz layer from a tar stream (formats.md 5.1-5.3).
//!
//! Two passes: the tar is spooled to a temporary file while its headers are read
//! (module `scan`), then the entries are written in their final order (prioritized files,
//! a landmark, the rest) as gzip members: each regular file's payload, and each `chunk_size`
//! piece of it, starts a new member, so a reader can fetch and inflate one chunk alone. Header
//! blocks are copied byte for byte. The TOC and the footer close the blob.
//!
//! The output depends only on the input and the options (one writer, no parallel split as in
//! stargz-snapshotter's `Build`), so the same layer converts to the same digest every time.

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use ferry_oci::Digest;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

use crate::scan::{self, clean_name, Item, Meta};
use crate::{
    build_footer, Error, Toc, TocEntry, DEFAULT_CHUNK_SIZE, LANDMARK_CONTENTS,
    NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_NAME,
};

/// gzip BestCompression, stargz-snapshotter's default.
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 9;

/// How to build a layer.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Size of the chunks large files are split into (must be > 0).
    pub chunk_size: u64,
    /// gzip level, 0 (store) to 9 (best).
    pub compression_level: u32,
    /// Files to put first, in this order (with their parent directories and, for hardlinks,
    /// their targets), followed by `.prefetch.landmark`. Empty: `.no.prefetch.landmark` comes
    /// first and the order is kept.
    pub prioritized: Vec<String>,
    /// Where the spool file goes (the system's temporary directory when `None`).
    pub spool_dir: Option<PathBuf>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            prioritized: Vec::new(),
            spool_dir: None,
        }
    }
}

/// What [`build`] wrote.
#[derive(Clone, Debug)]
pub struct Built {
    /// sha256 of the blob (the layer's new digest).
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// sha256 of the decompressed blob (the config's diff_id for this layer).
    pub diff_id: Digest,
    /// Size of the decompressed blob (the uncompressed-size annotation).
    pub uncompressed_size: u64,
    /// sha256 of the TOC JSON (the toc.digest annotation).
    pub toc_digest: Digest,
    /// The TOC written.
    pub toc: Toc,
    /// Prioritized files the layer does not hold (skipped, as ctr-remote skips them).
    pub missing_prioritized: Vec<String>,
}

/// Converts the tar stream `tar` (decompressed) to an eStargz blob written to `out`.
/// Blocking; memory use is bounded by the number of entries, not by the layer's size.
pub fn build<R: Read, W: Write>(tar: R, out: W, opts: &BuildOptions) -> Result<Built, Error> {
    if opts.chunk_size == 0 {
        return Err(Error::Options("chunk size must be more than 0".into()));
    }
    if opts.compression_level > 9 {
        let why = format!("compression level {} (use 0 to 9)", opts.compression_level);
        return Err(Error::Options(why));
    }
    let spool = match &opts.spool_dir {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
    .map_err(|e| Error::Io(format!("create the spool file: {e}")))?;
    let mut spool = io::BufWriter::new(spool);
    let scanned = scan::scan(tar, &mut spool)?;
    let mut spool = spool
        .into_inner()
        .map_err(|e| Error::Io(format!("write the spool file: {e}")))?;

    let (order, missing) = order(scanned.items, &opts.prioritized);
    let mut writer = Writer::new(out, opts);
    for next in order {
        match next {
            Next::Item(item) => writer.entry(&item, &mut spool)?,
            Next::Landmark(name) => writer.landmark(name)?,
        }
    }
    let mut built = writer.finish()?;
    built.missing_prioritized = missing;
    Ok(built)
}

enum Next {
    Item(Item),
    Landmark(&'static str),
}

/// The entries in output order and the prioritized names that were not found.
fn order(items: Vec<Item>, prioritized: &[String]) -> (Vec<Next>, Vec<String>) {
    if prioritized.is_empty() {
        let rest = items.into_iter().map(Next::Item);
        return (
            std::iter::once(Next::Landmark(NO_PREFETCH_LANDMARK))
                .chain(rest)
                .collect(),
            Vec::new(),
        );
    }
    let names: Vec<String> = items.iter().map(|i| clean_name(&i.meta.name)).collect();
    let index: std::collections::HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut moved = HashSet::new();
    let mut first = Vec::new();
    let mut missing = Vec::new();
    for name in prioritized {
        let clean = clean_name(name);
        if !index.contains_key(clean.as_str()) {
            missing.push(name.clone());
            continue;
        }
        move_with_parents(&clean, &items, &index, &mut moved, &mut first);
    }
    let mut out: Vec<Next> = first
        .into_iter()
        .map(|i| Next::Item(items[i].clone()))
        .collect();
    out.push(Next::Landmark(PREFETCH_LANDMARK));
    out.extend(
        items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !moved.contains(i))
            .map(|(_, item)| Next::Item(item)),
    );
    (out, missing)
}

/// Moves `name` after its parent directories (and a hardlink's target) that the layer holds.
/// Unlike stargz-snapshotter, a parent the layer lacks (it is in a lower layer) does not make
/// the file count as missing. Iterative, so neither deep paths nor hardlink chains (or cycles)
/// in a hostile layer can exhaust the stack.
fn move_with_parents(
    name: &str,
    items: &[Item],
    index: &std::collections::HashMap<&str, usize>,
    moved: &mut HashSet<usize>,
    out: &mut Vec<usize>,
) {
    enum Task {
        Visit(String),
        Move(usize),
        Emit(usize),
    }
    let mut stack = vec![Task::Visit(name.to_string())];
    while let Some(task) = stack.pop() {
        match task {
            Task::Visit(name) => {
                // the root, each parent, the entry: shortest first
                let prefixes = name.match_indices('/').map(|(at, _)| &name[..at]);
                let found: Vec<usize> = std::iter::once("")
                    .chain(prefixes)
                    .chain(std::iter::once(name.as_str()))
                    .filter_map(|n| index.get(n).copied())
                    .collect();
                stack.extend(found.into_iter().rev().map(Task::Move));
            }
            Task::Move(i) => {
                if !moved.insert(i) {
                    continue;
                }
                stack.push(Task::Emit(i));
                if items[i].meta.kind == "hardlink" {
                    stack.push(Task::Visit(clean_name(&items[i].meta.link_name)));
                }
            }
            Task::Emit(i) => out.push(i),
        }
    }
}

/// The blob being written: gzip members over a counting, hashing writer.
struct Writer<W: Write> {
    /// The open member, or the bare output between members.
    gz: Option<GzEncoder<Counted<W>>>,
    bare: Option<Counted<W>>,
    level: flate2::Compression,
    chunk_size: u64,
    /// sha256 and size of the decompressed stream.
    plain: Sha256,
    plain_size: u64,
    toc: Toc,
    last_user: std::collections::HashMap<i64, String>,
    last_group: std::collections::HashMap<i64, String>,
    /// The copy buffer, kept between entries.
    buf: Vec<u8>,
}

const COPY_BUFFER: usize = 64 << 10;

impl<W: Write> Writer<W> {
    fn new(out: W, opts: &BuildOptions) -> Self {
        Writer {
            gz: None,
            bare: Some(Counted::new(out)),
            level: flate2::Compression::new(opts.compression_level),
            chunk_size: opts.chunk_size,
            plain: Sha256::new(),
            plain_size: 0,
            toc: Toc {
                version: 1,
                entries: Vec::new(),
            },
            last_user: Default::default(),
            last_group: Default::default(),
            buf: Vec::new(),
        }
    }

    /// The blob offset where the next member starts (closes the open one).
    fn close_member(&mut self) -> Result<u64, Error> {
        if let Some(gz) = self.gz.take() {
            self.bare = Some(gz.finish().map_err(write_err)?);
        }
        Ok(self.bare.as_ref().map_or(0, |w| w.written))
    }

    fn write_plain(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.gz.is_none() {
            let bare = self
                .bare
                .take()
                .expect("a writer is bare when no member is open");
            self.gz = Some(GzEncoder::new(bare, self.level));
        }
        let gz = self.gz.as_mut().expect("a member is open");
        gz.write_all(bytes).map_err(write_err)?;
        self.plain.update(bytes);
        self.plain_size += bytes.len() as u64;
        Ok(())
    }

    /// Copies `len` bytes from `from` into the stream, feeding them to `hashers` as well.
    fn copy<R: Read>(
        &mut self,
        from: &mut R,
        len: u64,
        hashers: &mut [&mut Sha256],
    ) -> Result<(), Error> {
        let mut left = len;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(COPY_BUFFER, 0);
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            from.read_exact(&mut buf[..n])
                .map_err(|e| Error::Io(format!("read the spool file: {e}")))?;
            for h in hashers.iter_mut() {
                h.update(&buf[..n]);
            }
            self.write_plain(&buf[..n])?;
            left -= n as u64;
        }
        self.buf = buf;
        Ok(())
    }

    /// One tar entry from the spool: its header blocks as they are, then its payload.
    fn entry<S: Read + Seek>(&mut self, item: &Item, spool: &mut S) -> Result<(), Error> {
        let meta = &item.meta;
        spool
            .seek(SeekFrom::Start(item.start))
            .map_err(|e| Error::Io(format!("read the spool file: {e}")))?;
        self.copy(spool, item.payload_at - item.start, &mut [])?;
        let mut entry = self.toc_entry(meta);
        if meta.kind == "reg" {
            entry.size = item.size as i64;
        }
        self.payload(entry, item.size, spool)?;
        let pad = (512 - item.size % 512) % 512;
        self.write_plain(&vec![0u8; pad as usize])
    }

    /// Writes a file's payload as chunks, each starting a member, and its TOC entries.
    fn payload<S: Read>(
        &mut self,
        mut entry: TocEntry,
        size: u64,
        from: &mut S,
    ) -> Result<(), Error> {
        if entry.kind != "reg" {
            self.toc.entries.push(entry);
            return Ok(());
        }
        let mut whole = Sha256::new();
        let mut written = 0;
        let reg_index = self.toc.entries.len();
        if size == 0 {
            entry.digest = digest_string(whole);
            self.toc.entries.push(entry);
            return Ok(());
        }
        while written < size {
            let offset = self.close_member()?;
            let len = self.chunk_size.min(size - written);
            if size - written >= self.chunk_size {
                entry.chunk_size = len as i64;
            }
            entry.offset = offset as i64;
            entry.chunk_offset = written as i64;
            let mut chunk = Sha256::new();
            self.copy(from, len, &mut [&mut chunk, &mut whole])?;
            entry.chunk_digest = digest_string(chunk);
            let name = entry.name.clone();
            self.toc.entries.push(entry);
            written += len;
            entry = TocEntry {
                name,
                kind: "chunk".into(),
                ..TocEntry::default()
            };
        }
        self.toc.entries[reg_index].digest = digest_string(whole);
        Ok(())
    }

    fn toc_entry(&mut self, meta: &Meta) -> TocEntry {
        TocEntry {
            name: meta.name.clone(),
            kind: meta.kind.to_string(),
            mod_time: format_mtime(meta.mtime),
            link_name: meta.link_name.clone(),
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            user_name: name_if_changed(&mut self.last_user, meta.uid, &meta.user_name),
            group_name: name_if_changed(&mut self.last_group, meta.gid, &meta.group_name),
            dev_major: meta.dev_major,
            dev_minor: meta.dev_minor,
            xattrs: meta.xattrs.clone(),
            ..TocEntry::default()
        }
    }

    /// A landmark file: one byte, its own member (formats.md 5.1).
    fn landmark(&mut self, name: &'static str) -> Result<(), Error> {
        let header = plain_header(name, 1)?;
        self.write_plain(&header)?;
        let entry = TocEntry {
            name: name.to_string(),
            kind: "reg".into(),
            size: 1,
            ..TocEntry::default()
        };
        self.payload(entry, 1, &mut &[LANDMARK_CONTENTS][..])?;
        self.write_plain(&[0u8; 511])
    }

    /// The TOC member (its tar entry and the end blocks) and the footer.
    fn finish(mut self) -> Result<Built, Error> {
        let toc_offset = self.close_member()?;
        let json = self.toc.to_json();
        if json.len() as u64 > crate::MAX_TOC_SIZE {
            // readers (ferry's and stargz-snapshotter's) refuse it: the layer could not be
            // pulled lazily
            return Err(Error::Options(format!(
                "the TOC would be {} bytes, more than the {} a reader accepts: use a larger \
                 chunk size",
                json.len(),
                crate::MAX_TOC_SIZE
            )));
        }
        self.write_plain(&plain_header(TOC_NAME, json.len() as u64)?)?;
        self.write_plain(&json)?;
        let pad = (512 - json.len() % 512) % 512 + 1024;
        self.write_plain(&vec![0u8; pad])?;
        self.close_member()?;
        let mut bare = self.bare.take().expect("no member is open");
        bare.write_all(&build_footer(toc_offset))
            .map_err(write_err)?;
        bare.inner.flush().map_err(write_err)?;
        let (digest, size) = (
            Digest::from_bytes(bare.hash.finalize().into()),
            bare.written,
        );
        Ok(Built {
            digest,
            size,
            diff_id: Digest::from_bytes(self.plain.finalize().into()),
            uncompressed_size: self.plain_size,
            toc_digest: Digest::of(&json),
            toc: self.toc,
            missing_prioritized: Vec::new(),
        })
    }
}

/// A ustar header for a file ferry adds (landmark, TOC): mode, owner and time 0, as
/// stargz-snapshotter writes them.
fn plain_header(name: &str, size: u64) -> Result<[u8; 512], Error> {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(name)
        .map_err(|e| Error::Tar(format!("{name}: {e}")))?;
    header.set_size(size);
    header.set_mode(0);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(*header.as_bytes())
}

/// `name` unless it is what the last entry with this id said (the TOC leaves it out then).
fn name_if_changed(
    last: &mut std::collections::HashMap<i64, String>,
    id: i64,
    name: &str,
) -> String {
    if name.is_empty() || last.get(&id).is_some_and(|n| n == name) {
        return String::new();
    }
    last.insert(id, name.to_string());
    name.to_string()
}

/// RFC 3339 UTC, empty for the epoch (the TOC's "unknown").
fn format_mtime(secs: i64) -> String {
    if secs == 0 {
        return String::new();
    }
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn digest_string(hasher: Sha256) -> String {
    Digest::from_bytes(hasher.finalize().into()).to_string()
}

fn write_err(e: io::Error) -> Error {
    Error::Io(format!("write the layer: {e}"))
}

/// The output: counts and hashes the compressed bytes (offsets in the TOC are its counts).
struct Counted<W> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> Counted<W> {
    fn new(inner: W) -> Self {
        Counted {
            inner,
            hash: Sha256::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
