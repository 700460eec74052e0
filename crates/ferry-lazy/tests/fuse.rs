//! A hand-made eStargz blob served through a real FUSE mount (root only): file bytes, a chunk
//! whose bytes do not match its digest (EIO, never the wrong bytes), hardlinks, symlinks, and
//! whiteouts that overlayfs honours when the mount is one of its lower directories; and the
//! prefetch of prioritized files and the check of chunks found in the cache (no FUSE needed).

use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferry_lazy::{ChunkSource, Error, Layer};
use ferry_oci::Digest;
use futures::future::BoxFuture;

/// The blob in memory; counts the bytes fetched.
struct Memory {
    blob: Vec<u8>,
    fetched: AtomicU64,
}

impl Memory {
    /// A source serving `blob`, counting the bytes fetched from it.
    fn serving(blob: Vec<u8>) -> Arc<Self> {
        Arc::new(Memory {
            blob,
            fetched: AtomicU64::new(0),
        })
    }
}

impl ChunkSource for Memory {
    fn size(&self) -> u64 {
        self.blob.len() as u64
    }

    fn fetch(&self, range: Range<u64>) -> BoxFuture<'_, Result<Vec<u8>, Error>> {
        self.fetched
            .fetch_add(range.end - range.start, Ordering::Relaxed);
        let bytes = self.blob[range.start as usize..range.end as usize].to_vec();
        Box::pin(async move { Ok(bytes) })
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A blob of gzip members, then the TOC member and the footer; returns it with the TOC digest.
/// `landmark` is `.prefetch.landmark` (etc/hello is prioritized) or `.no.prefetch.landmark`.
fn blob(big: &[u8], landmark_name: &str) -> (Vec<u8>, Digest) {
    let mut blob = Vec::new();
    let mut member = |data: &[u8]| {
        let at = blob.len();
        blob.extend(gzip(data));
        at
    };
    let hello = member(b"hello world\n");
    let landmark = member(&[0x0f]);
    let bad = member(b"HELLO AGAIN\n");
    let big1 = member(&big[..200_000]);
    let big2 = member(&big[200_000..]);
    let d = |b: &[u8]| Digest::of(b).to_string();
    let json = format!(
        r#"{{"version":1,"entries":[
        {{"name":"etc/","type":"dir","mode":493,"modtime":"2024-05-06T07:08:09Z"}},
        {{"name":"etc/hello","type":"reg","size":12,"mode":420,"uid":1000,"gid":100,"offset":{hello},"chunkDigest":"{}"}},
        {{"name":"{landmark_name}","type":"reg","size":1,"offset":{landmark},"chunkDigest":"{}"}},
        {{"name":"etc/hello2","type":"hardlink","linkName":"etc/hello"}},
        {{"name":"bad","type":"reg","size":12,"mode":420,"offset":{bad},"chunkDigest":"{}"}},
        {{"name":"big","type":"reg","size":{},"mode":420,"offset":{big1},"chunkSize":200000,"chunkDigest":"{}"}},
        {{"name":"big","type":"chunk","offset":{big2},"chunkOffset":200000,"chunkDigest":"{}"}},
        {{"name":"link","type":"symlink","linkName":"etc/hello","mode":511}},
        {{"name":".wh.gone","type":"reg","mode":420}},
        {{"name":"opq/.wh..wh..opq","type":"reg","mode":420}},
        {{"name":"opq/new","type":"reg","mode":420}}
        ]}}"#,
        d(b"hello world\n"),
        d(&[0x0f]),
        d(b"hello again\n"),
        big.len(),
        d(&big[..200_000]),
        d(&big[200_000..]),
    );
    let toc_offset = blob.len() as u64;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "stargz.index.json", json.as_bytes())
        .unwrap();
    blob.extend(gzip(&tar.into_inner().unwrap()));
    blob.extend(ferry_estargz::build_footer(toc_offset));
    (blob, Digest::of(json.as_bytes()))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root() && Path::new("/dev/fuse").exists()
}

#[test]
fn a_layer_mounted_through_fuse_reads_right_and_refuses_a_bad_chunk() {
    if !is_root() {
        eprintln!("SKIP: needs root and /dev/fuse");
        return;
    }
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (bytes, toc) = blob(&big, ".no.prefetch.landmark");
    let source = Memory::serving(bytes);
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let layer = runtime
        .block_on(Layer::open(source.clone(), &toc, dir.path().join("cache")))
        .unwrap();
    let after_toc = source.fetched.load(Ordering::Relaxed);
    ferry_lazy::mount(Arc::new(layer), &mnt, runtime.handle().clone()).unwrap();
    let merged = dir.path().join("merged");
    let result = std::panic::catch_unwind(|| check(&mnt, dir.path(), &merged, &big));
    let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
    ferry_lazy::unmount(&mnt).unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    // nothing but the TOC was fetched before the first read
    assert!(after_toc < 1000, "{after_toc}");
}

fn check(mnt: &Path, dir: &Path, merged: &Path, big: &[u8]) {
    assert_eq!(
        std::fs::read(mnt.join("etc/hello")).unwrap(),
        b"hello world\n"
    );
    let err = std::fs::read(mnt.join("bad")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(std::fs::read(mnt.join("big")).unwrap(), big);

    let hello = std::fs::metadata(mnt.join("etc/hello")).unwrap();
    assert_eq!(
        (hello.mode(), hello.uid(), hello.gid(), hello.nlink()),
        (0o100644, 1000, 100, 2)
    );
    assert_eq!(
        std::fs::metadata(mnt.join("etc/hello2")).unwrap().ino(),
        hello.ino()
    );
    let etc = std::fs::metadata(mnt.join("etc")).unwrap();
    assert_eq!(etc.mtime(), 1714979289);
    assert_eq!(
        std::fs::read_link(mnt.join("link")).unwrap(),
        Path::new("etc/hello")
    );
    let gone = std::fs::symlink_metadata(mnt.join("gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    let mut names: Vec<String> = std::fs::read_dir(mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bad", "big", "etc", "gone", "link", "opq"]);

    // overlayfs over the mount: the whiteout and the opaque dir hide what lies below
    let below = dir.join("below");
    std::fs::create_dir_all(below.join("opq")).unwrap();
    std::fs::write(below.join("gone"), "old").unwrap();
    std::fs::write(below.join("opq/old"), "old").unwrap();
    std::fs::write(below.join("kept"), "kept").unwrap();
    std::fs::create_dir_all(merged).unwrap();
    let options = format!("lowerdir={}:{}", mnt.display(), below.display());
    nix::mount::mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .unwrap();
    assert!(!merged.join("gone").exists());
    assert!(!merged.join("opq/old").exists());
    assert!(merged.join("opq/new").exists());
    assert_eq!(std::fs::read(merged.join("kept")).unwrap(), b"kept");
    assert_eq!(
        std::fs::read(merged.join("etc/hello")).unwrap(),
        b"hello world\n"
    );
}

#[test]
fn prioritized_files_are_fetched_at_prefetch_and_read_without_fetching() {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
    let (bytes, toc) = blob(&big, ".prefetch.landmark");
    let source = Memory::serving(bytes);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let layer = runtime
        .block_on(Layer::open(source.clone(), &toc, dir.path().join("cache")))
        .unwrap();
    let hello = layer.tree().find("etc/hello").unwrap().ino;
    let big_ino = layer.tree().find("big").unwrap().ino;
    let hello_member = layer.tree().get(hello).unwrap().chunks[0].end;
    assert_eq!(layer.tree().prefetch_end, Some(hello_member));

    let before = source.fetched.load(Ordering::Relaxed);
    runtime.block_on(layer.prefetch()).unwrap();
    // exactly the blob up to the landmark
    assert_eq!(
        source.fetched.load(Ordering::Relaxed) - before,
        hello_member
    );
    let after_prefetch = source.fetched.load(Ordering::Relaxed);
    let read = runtime.block_on(layer.read(hello, 0, 4096)).unwrap();
    assert_eq!(read, b"hello world\n");
    assert_eq!(source.fetched.load(Ordering::Relaxed), after_prefetch);

    // a later file is fetched on demand, one chunk per range read
    let part = runtime.block_on(layer.read(big_ino, 199_990, 20)).unwrap();
    assert_eq!(part, &big[199_990..200_010]);
    assert!(source.fetched.load(Ordering::Relaxed) > after_prefetch);
}

#[test]
fn a_damaged_chunk_in_the_cache_is_fetched_again_not_served() {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 11) as u8).collect();
    let (bytes, toc) = blob(&big, ".no.prefetch.landmark");
    let source = Memory::serving(bytes);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let open = || {
        runtime
            .block_on(Layer::open(source.clone(), &toc, cache.clone()))
            .unwrap()
    };
    let layer = open();
    let hello = layer.tree().find("etc/hello").unwrap().ino;
    assert_eq!(
        runtime.block_on(layer.read(hello, 0, 4096)).unwrap(),
        b"hello world\n"
    );
    drop(layer);

    // a later mount finds the chunk's file in the cache, damaged on disk
    let file = cache.join(Digest::of(b"hello world\n").hex());
    std::fs::write(&file, b"HELLO WORLD\n").unwrap();
    let layer = open();
    let before = source.fetched.load(Ordering::Relaxed);
    assert_eq!(
        runtime.block_on(layer.read(hello, 0, 4096)).unwrap(),
        b"hello world\n"
    );
    assert!(source.fetched.load(Ordering::Relaxed) > before);
    assert_eq!(std::fs::read(&file).unwrap(), b"hello world\n");
    // an intact one is used as it is (opening fetches only the footer and the TOC)
    let layer = open();
    let before = source.fetched.load(Ordering::Relaxed);
    assert_eq!(
        runtime.block_on(layer.read(hello, 0, 4096)).unwrap(),
        b"hello world\n"
    );
    assert_eq!(source.fetched.load(Ordering::Relaxed), before);
}
