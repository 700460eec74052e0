//! `ferry run --snapshotter stargz`: the eStargz layers of an IPFS image are mounted through
//! FUSE (`ferry-lazy`) as overlay lower directories instead of being fetched and unpacked
//! first. A file's chunks are fetched when the container reads them, by byte ranges of the
//! layer's UnixFS file over Bitswap (or, for a registry image, by HTTP Range requests that the
//! foreground run serves).
//!
//! The process that holds the IPFS node serves the mounts: the daemon of the root when one
//! runs (asked over the control socket, so `-d` works), else the `ferry run` process itself
//! until the container exits. Mount points are `ROOT/lazy/mnt/<container id>/<layer index>`,
//! verified chunks are kept in `ROOT/lazy/cache/<layer digest>/`, and the IPFS blocks the reads
//! fetched in its `blocks/` (the background fetch of the whole layer takes them from there, so
//! no byte crosses the network twice). The mounts go when the
//! container is removed (those the daemon serves stay for `ferry start` until then) or when the
//! run that served them ends; mounts whose server died are swept at the next run or daemon
//! start.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use cid::Cid;
use ferry_bitswap::Bitswap;
use ferry_content::Store;
use ferry_distribution::BlobRanges;
use ferry_ipfs::{BlobDownload, BlockSource, Error as IpfsError, Node, ReadOptions};
use ferry_oci::{Descriptor, Digest};
use futures::future::BoxFuture;
use libp2p::PeerId;

use crate::control::{Reply, Request};

/// How long after a layer is mounted its whole blob starts to be fetched in the background:
/// a container's first reads go first.
const BACKGROUND_DELAY: Duration = Duration::from_secs(5);

/// How many times the background fetch of a layer is tried (a peer that went away may come
/// back).
const BACKGROUND_ATTEMPTS: u32 = 5;
/// The wait before the second try of a background fetch; it grows by as much for each further
/// try.
const BACKGROUND_RETRY: Duration = Duration::from_secs(30);

/// Whether `layer` of an IPFS image is read lazily: an eStargz layer (it has the TOC digest
/// annotation) that an `ipfs://` url names and that is not encrypted.
pub fn is_lazy(layer: &Descriptor) -> bool {
    is_estargz(layer) && layer.ipfs_url().is_some()
}

fn is_estargz(layer: &Descriptor) -> bool {
    toc_digest(layer).is_some() && !ferry_crypt::image::is_encrypted(layer)
}

fn toc_digest(layer: &Descriptor) -> Option<Digest> {
    layer
        .annotations
        .get(ferry_estargz::TOC_DIGEST_ANNOTATION)?
        .parse()
        .ok()
}

/// Where the lazy layers of this root live.
pub fn lazy_dir(root: &Path) -> PathBuf {
    root.join("lazy")
}

/// Where the verified chunks of `layer` are kept.
fn cache_dir(root: &Path, layer: &Descriptor) -> PathBuf {
    lazy_dir(root).join("cache").join(layer.digest.hex())
}

/// The mount point of layer `index` of container `id`.
pub fn mountpoint(root: &Path, id: &str, index: usize) -> PathBuf {
    lazy_dir(root).join("mnt").join(id).join(index.to_string())
}

/// Who serves the FUSE mounts of one run.
pub enum Server {
    /// The daemon of the root, over the control socket.
    Daemon {
        /// The control socket.
        socket: PathBuf,
    },
    /// This process, with its own node, while the container runs in the foreground.
    Local {
        /// The node blocks come from.
        node: Arc<Node>,
    },
    /// This process, reading byte ranges of the layers from the image's registry, while the
    /// container runs in the foreground.
    Registry {
        /// The repository's blobs.
        ranges: Arc<BlobRanges>,
    },
}

/// Mounts lazy layers for `ferry run`.
pub struct Lazy {
    /// Who serves the mounts.
    pub server: Server,
    /// The root.
    pub root: PathBuf,
    /// Its store.
    pub store: Arc<Store>,
    /// The wait for any one block.
    pub timeout: Duration,
    /// The runtime that answers reads (local) or talks to the daemon.
    pub runtime: tokio::runtime::Handle,
}

impl Lazy {
    /// Whether this process serves the mounts (they end with it), not the daemon.
    pub fn served_here(&self) -> bool {
        !matches!(self.server, Server::Daemon { .. })
    }

    /// Whether `layer` can be mounted lazily by this server.
    pub fn can_mount(&self, layer: &Descriptor) -> bool {
        match self.server {
            Server::Registry { .. } => is_estargz(layer),
            _ => is_lazy(layer),
        }
    }

    /// Mounts `layer` at `mountpoint`; returns when the TOC is read and the mount is up.
    /// Called from a blocking thread.
    pub fn mount(&self, layer: &Descriptor, mountpoint: &Path) -> Result<()> {
        match &self.server {
            Server::Daemon { socket } => {
                let request = Request::MountLazy {
                    layer: Box::new(layer.clone()),
                    mountpoint: mountpoint.to_path_buf(),
                    timeout_ms: self.timeout.as_millis().min(u64::MAX as u128) as u64,
                };
                self.runtime.block_on(async {
                    let stream = crate::control::connect(socket)
                        .await
                        .ok_or_else(|| anyhow!("the daemon stopped"))?;
                    match crate::control::call(stream, &request, |_| {}).await? {
                        Reply::Done => Ok(()),
                        _ => bail!("unexpected answer from the daemon"),
                    }
                })?;
                if !ferry_lazy::is_mounted(mountpoint) {
                    // TODO: the daemon keeps that mount until it stops; a request to release it
                    // would end it now.
                    bail!(
                        "the daemon's mount is not visible here: the daemon runs in another mount \
                         namespace (start it with `nsenter --net=...`, not `ip netns exec`, or \
                         run without the daemon)"
                    );
                }
                Ok(())
            }
            Server::Registry { ranges } => {
                let source = Arc::new(RegistrySource {
                    ranges: ranges.clone(),
                    digest: layer.digest.clone(),
                    size: layer.size,
                });
                self.runtime
                    .block_on(mount_source(&self.root, source, layer, mountpoint))
            }
            Server::Local { node } => self.runtime.block_on(serve_layer(
                &self.root,
                &self.store,
                node.bitswap().clone(),
                layer,
                mountpoint,
                self.timeout,
            )),
        }
    }
}

/// Reads `layer`'s TOC, mounts the layer at `mountpoint` (served by a thread of this process
/// until it is unmounted), starts fetching its prioritized files, and a little later the
/// whole blob into the store.
pub async fn serve_layer(
    root: &Path,
    store: &Arc<Store>,
    bitswap: Bitswap,
    layer: &Descriptor,
    mountpoint: &Path,
    timeout: Duration,
) -> Result<()> {
    let cid_text = layer
        .ipfs_url()
        .ok_or_else(|| anyhow!("layer {} has no ipfs:// url", layer.digest))?;
    let cid = Cid::try_from(cid_text).with_context(|| format!("layer url ipfs://{cid_text}"))?;
    let opts = ReadOptions {
        // a peer that went away: ask again (other providers answer) until the timeout is spent
        timeout: (timeout / 3).max(Duration::from_secs(1)),
        retries: 2,
    };
    let network: Arc<dyn BlockSource> = Arc::new(Patient::new(bitswap));
    let kept = Arc::new(KeptBlocks {
        dir: cache_dir(root, layer).join("blocks"),
        checked: Mutex::new(HashSet::new()),
    });
    let reads = Arc::new(Kept {
        inner: network.clone(),
        blocks: kept.clone(),
        keep: true,
    });
    let source = Arc::new(ferry_lazy::IpfsSource::new(
        reads,
        store.clone(),
        cid,
        layer.size,
        opts,
    ));
    mount_source(root, source, layer, mountpoint).await?;
    let whole = Arc::new(Kept {
        inner: network,
        blocks: kept,
        keep: false,
    });
    background_fetch(
        root.to_path_buf(),
        store.clone(),
        whole,
        cid,
        layer.clone(),
        opts,
    );
    Ok(())
}

/// Reads `layer`'s TOC from `source`, mounts it at `mountpoint` and starts fetching its
/// prioritized files.
async fn mount_source(
    root: &Path,
    source: Arc<dyn ferry_lazy::ChunkSource>,
    layer: &Descriptor,
    mountpoint: &Path,
) -> Result<()> {
    let toc = toc_digest(layer)
        .ok_or_else(|| anyhow!("layer {} is not eStargz (no TOC digest)", layer.digest))?;
    let cache = cache_dir(root, layer);
    let opened = ferry_lazy::Layer::open(source, &toc, cache)
        .await
        .with_context(|| format!("read the TOC of layer {}", layer.digest))?;
    let opened = Arc::new(opened);
    ferry_lazy::mount(
        opened.clone(),
        mountpoint,
        tokio::runtime::Handle::current(),
    )
    .with_context(|| format!("mount layer {}", layer.digest))?;
    tracing::info!(layer = %layer.digest, mountpoint = %mountpoint.display(), "lazy layer mounted");
    tokio::spawn(async move {
        if let Err(e) = opened.prefetch().await {
            tracing::warn!(error = %e, "prefetching the prioritized files failed");
        }
    });
    Ok(())
}

/// A layer read by HTTP Range requests from its registry.
struct RegistrySource {
    ranges: Arc<BlobRanges>,
    digest: Digest,
    size: u64,
}

impl ferry_lazy::ChunkSource for RegistrySource {
    fn size(&self) -> u64 {
        self.size
    }

    fn fetch(
        &self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, Result<Vec<u8>, ferry_lazy::Error>> {
        Box::pin(async move {
            self.ranges
                .read(&self.digest, range.clone())
                .await
                .map_err(|e| ferry_lazy::Error::Fetch {
                    start: range.start,
                    end: range.end,
                    why: e.to_string(),
                })
        })
    }
}

/// Bitswap for a mounted layer: with no peer connected, a read waits (and asks again) for one
/// to come back until its timeout is spent, instead of failing at once; then it is an I/O
/// error for the reader. Once a fetch has waited its whole timeout in vain (the peers that
/// had the layer are gone, or those left lack it), the next ones fail at once, so a container
/// reading thousands of files does not wait a timeout for each, until a new peer connects or
/// [`STRANDED_FOR`] has passed (then one fetch waits again).
struct Patient {
    bitswap: Bitswap,
    /// When a fetch last waited in vain, and the peers connected then.
    stranded: Mutex<Option<(Instant, Vec<PeerId>)>>,
}

/// How long fetches fail at once after one waited its whole timeout in vain.
const STRANDED_FOR: Duration = Duration::from_secs(30);

impl Patient {
    fn new(bitswap: Bitswap) -> Patient {
        Patient {
            bitswap,
            stranded: Mutex::new(None),
        }
    }

    /// Whether a fetch now would wait in vain again: one did a moment ago and no peer has
    /// connected since.
    fn stranded(&self) -> bool {
        let mut stranded = self.stranded.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.bitswap.peers();
        match &*stranded {
            Some((at, then))
                if at.elapsed() < STRANDED_FOR && now.iter().all(|p| then.contains(p)) =>
            {
                true
            }
            _ => {
                *stranded = None;
                false
            }
        }
    }
}

impl BlockSource for Patient {
    fn get_block(&self, cid: Cid, timeout: Duration) -> BoxFuture<'_, Result<Bytes, IpfsError>> {
        Box::pin(async move {
            if self.stranded() {
                return Err(IpfsError::Stranded { cid: Box::new(cid) });
            }
            let started = Instant::now();
            let result = BlockSource::get_block(&self.bitswap, cid, timeout).await;
            let mut stranded = self.stranded.lock().unwrap_or_else(|e| e.into_inner());
            match &result {
                Ok(_) => *stranded = None,
                // a quick answer (every peer said it lacks the block) says nothing of the rest
                Err(_) if started.elapsed() >= timeout.mul_f32(0.9) => {
                    *stranded = Some((Instant::now(), self.bitswap.peers()));
                }
                Err(_) => {}
            }
            result
        })
    }
}

/// The blocks of a lazy layer that its reads fetched, kept in a directory (one file per block,
/// named by its CID) so that the background fetch of the whole layer takes them from there
/// instead of from the network again.
struct KeptBlocks {
    dir: PathBuf,
    /// Blocks this process wrote or hashed again: a file left by an earlier mount is verified
    /// before its first use, not at every read (small files share blocks).
    checked: Mutex<HashSet<Cid>>,
}

impl KeptBlocks {
    fn checked(&self) -> std::sync::MutexGuard<'_, HashSet<Cid>> {
        self.checked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept block `cid`, if it is there and intact.
    async fn get(&self, cid: &Cid) -> Option<Bytes> {
        let bytes = tokio::fs::read(self.dir.join(cid.to_string())).await.ok()?;
        if !self.checked().contains(cid) {
            if ferry_unixfs::verify_block(cid, &bytes).is_err() {
                tracing::warn!(%cid, "a kept block of a lazy layer is damaged; fetching it again");
                return None;
            }
            self.checked().insert(*cid);
        }
        Some(Bytes::from(bytes))
    }

    async fn put(&self, cid: &Cid, bytes: &[u8]) -> std::io::Result<()> {
        tokio::fs::create_dir_all(&self.dir).await?;
        static TEMPS: AtomicU64 = AtomicU64::new(0);
        let n = TEMPS.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(".{cid}.{}.{n}", std::process::id()));
        let kept = match tokio::fs::write(&temp, bytes).await {
            Ok(()) => tokio::fs::rename(&temp, self.dir.join(cid.to_string())).await,
            Err(e) => Err(e),
        };
        match kept {
            Ok(()) => {
                self.checked().insert(*cid);
            }
            Err(_) => {
                let _ = tokio::fs::remove_file(&temp).await;
            }
        }
        kept
    }
}

/// A layer's blocks: the kept ones, else from the network.
struct Kept {
    inner: Arc<dyn BlockSource>,
    blocks: Arc<KeptBlocks>,
    /// Whether blocks fetched through this source are kept (the reads' source) or only looked
    /// up (the background fetch's: its blocks go into the store).
    keep: bool,
}

impl BlockSource for Kept {
    fn get_block(&self, cid: Cid, timeout: Duration) -> BoxFuture<'_, Result<Bytes, IpfsError>> {
        Box::pin(async move {
            if let Some(bytes) = self.blocks.get(&cid).await {
                return Ok(bytes);
            }
            let bytes = self.inner.get_block(cid, timeout).await?;
            if self.keep {
                if let Err(e) = self.blocks.put(&cid, &bytes).await {
                    // only a cost: the background fetch asks the network for it again
                    tracing::debug!(%cid, error = %e, "cannot keep a block of a lazy layer");
                }
            }
            Ok(bytes)
        })
    }

    fn can_fetch(&self) -> bool {
        self.inner.can_fetch()
    }
}

/// Layers whose whole blob is being fetched by this process.
static DOWNLOADING: Mutex<Option<HashSet<Digest>>> = Mutex::new(None);

/// After [`BACKGROUND_DELAY`], fetches the whole layer into the store (verified against its
/// digest and size, then kept like any pulled blob), once per layer and process; then drops
/// the layer's cache, unless a lazy layer is still mounted.
fn background_fetch(
    root: PathBuf,
    store: Arc<Store>,
    blocks: Arc<Kept>,
    cid: Cid,
    layer: Descriptor,
    opts: ReadOptions,
) {
    {
        let mut downloading = DOWNLOADING.lock().unwrap_or_else(|e| e.into_inner());
        if !downloading
            .get_or_insert_with(HashSet::new)
            .insert(layer.digest.clone())
        {
            return;
        }
    }
    let kept = blocks.blocks.dir.clone();
    tokio::spawn(async move {
        tokio::time::sleep(BACKGROUND_DELAY).await;
        for attempt in 1..=BACKGROUND_ATTEMPTS {
            if store.has_blob(&layer.digest) {
                break;
            }
            match BlobDownload::start(
                blocks.clone(),
                store.clone(),
                cid,
                layer.digest.clone(),
                layer.size,
                opts,
            ) {
                Ok(download) => {
                    tracing::info!(layer = %layer.digest, "fetching the lazy layer in the background");
                    while !download.is_done() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(layer = %layer.digest, error = %e, "background fetch failed")
                }
            }
            if store.has_blob(&layer.digest) {
                // the blob holds them now; and the chunks too, once the container is gone
                let _ = tokio::fs::remove_dir_all(&kept).await;
                let root = root.clone();
                let _ = tokio::task::spawn_blocking(move || remove_caches(&root, |_| false)).await;
                break;
            }
            if attempt < BACKGROUND_ATTEMPTS {
                let wait = BACKGROUND_RETRY * attempt;
                tracing::info!(layer = %layer.digest, ?wait, "the background fetch will try again");
                tokio::time::sleep(wait).await;
            }
        }
        let mut downloading = DOWNLOADING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = downloading.as_mut() {
            set.remove(&layer.digest);
        }
    });
}

/// After [`BACKGROUND_DELAY`], pulls the rest of the registry image `reference` (its eStargz
/// layers, verified and stored like any pulled blob) while the foreground run goes on; a run
/// that ends first leaves the rest to the next pull.
pub fn background_registry_pull(
    store: Arc<Store>,
    reference: ferry_oci::Reference,
    mut opts: ferry_distribution::PullOptions,
) {
    opts.leave_out_estargz = false;
    tokio::spawn(async move {
        tokio::time::sleep(BACKGROUND_DELAY).await;
        tracing::info!(image = %reference, "fetching the lazy layers in the background");
        if let Err(e) = ferry_distribution::pull(&store, &reference, &opts, &|_| {}).await {
            tracing::warn!(image = %reference, error = %e, "background pull failed");
        }
    });
}

/// Unmounts the lazy layers of container `id` (they go once its overlay is gone); then, with
/// no other layer mounted, drops the caches of the layers whose whole blob has arrived.
pub fn release(root: &Path, id: &str) {
    let dir = lazy_dir(root).join("mnt").join(id);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(e) = ferry_lazy::unmount(&entry.path()) {
            tracing::warn!(container = %id, error = %e, "cannot unmount a lazy layer");
        }
    }
    let _ = std::fs::remove_dir(&dir);
    remove_caches(root, |_| false);
}

/// Lazily unmounts the lazy layers whose server died (a killed ferry) and removes their mount
/// points.
pub fn sweep(root: &Path) {
    let dir = lazy_dir(root);
    for point in ferry_lazy::sweep_stale(&dir) {
        tracing::info!(mountpoint = %point.display(), "removed a stale lazy mount");
    }
    // With no layer mounted, the chunks of layers whose whole blob has arrived are not needed.
    remove_caches(root, |_| false);
}

/// Removes the caches of the layers no stored image refers to (`layers` are those that one
/// does) and of those whose whole blob is here, when no lazy layer is mounted (image removal
/// and `image prune`); returns the bytes removed.
pub fn drop_caches(root: &Path, layers: &HashSet<Digest>) -> u64 {
    remove_caches(root, |digest| !layers.contains(digest))
}

/// With no lazy layer mounted on `root`, removes the cache of every layer whose blob is here
/// or that `unused` says is not needed; returns the bytes removed.
fn remove_caches(root: &Path, unused: impl Fn(&Digest) -> bool) -> u64 {
    let dir = lazy_dir(root);
    if !ferry_lazy::fs::mounts_under(&dir).is_empty() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir.join("cache")) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Ok(digest) = format!("sha256:{}", name.to_string_lossy()).parse::<Digest>() else {
            continue;
        };
        // the store's blob path (ferry-content keeps blobs as blobs/sha256/HEX)
        let complete = root.join("blobs/sha256").join(digest.hex()).exists();
        if complete || unused(&digest) {
            let size = disk_usage(&entry.path());
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => removed += size,
                Err(e) => tracing::warn!(layer = %digest, error = %e, "cannot remove a lazy cache"),
            }
        }
    }
    removed
}

/// Bytes of the files under `dir` (a cache: chunk files and one directory of blocks).
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
