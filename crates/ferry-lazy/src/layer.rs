//! One lazily read layer: its tree, where its bytes come from, and its verified chunks.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_estargz::{footer_range, toc_from_member, toc_range};
use ferry_oci::Digest;
use flate2::read::GzDecoder;

use crate::source::ChunkSource;
use crate::tree::{Chunk, Tree};
use crate::Error;

/// A layer served from its TOC, its chunks fetched on first read and kept, verified, in a
/// cache directory (one file per chunk, named by its digest).
pub struct Layer {
    tree: Tree,
    source: Arc<dyn ChunkSource>,
    cache: PathBuf,
    /// One lock per chunk being fetched, so concurrent reads of a chunk fetch it once.
    fetching: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Chunks whose cache file this layer wrote or checked against its digest: a file found in
    /// the cache (kept from an earlier mount) is hashed again before its first use.
    checked: Mutex<HashSet<Digest>>,
    temp_names: AtomicU64,
}

impl Layer {
    /// Reads the footer and the TOC from `source`, checks the TOC against `toc_digest` (the
    /// layer's `containerd.io/snapshot/stargz/toc.digest` annotation) and builds the tree.
    /// Verified chunks go to `cache`, created if needed.
    pub async fn open(
        source: Arc<dyn ChunkSource>,
        toc_digest: &Digest,
        cache: PathBuf,
    ) -> Result<Layer, Error> {
        let size = source.size();
        let tail = source.fetch(footer_range(size)?).await?;
        let toc = toc_range(size, &tail)?;
        let toc_offset = toc.start;
        let member = source.fetch(toc).await?;
        let read = toc_from_member(&member, toc_offset, Some(toc_digest))?;
        let tree = Tree::build(&read.toc, toc_offset)?;
        std::fs::create_dir_all(&cache).map_err(Error::io("create cache directory", &cache))?;
        Ok(Layer {
            tree,
            source,
            cache,
            fetching: Mutex::new(HashMap::new()),
            checked: Mutex::new(HashSet::new()),
            temp_names: AtomicU64::new(0),
        })
    }

    /// The layer's inodes.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Up to `size` bytes of file `ino` from `offset`, every chunk under them verified.
    pub async fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
        let file_size = self.tree.get(ino).map_or(0, |n| n.size);
        let end = offset.saturating_add(u64::from(size)).min(file_size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        for chunk in self.tree.chunks(ino, offset, u64::from(size)) {
            let path = self.ensure(chunk).await?;
            let from = offset.max(chunk.file_offset);
            let to = end.min(chunk.file_offset + chunk.size);
            let mut buf = vec![0; (to - from) as usize];
            let file = std::fs::File::open(&path).map_err(Error::io("open chunk", &path))?;
            file.read_exact_at(&mut buf, from - chunk.file_offset)
                .map_err(Error::io("read chunk", &path))?;
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// Fetches the prioritized files (the blob up to the `.prefetch.landmark`) in one range
    /// and caches their chunks; nothing when the layer has no such landmark.
    pub async fn prefetch(&self) -> Result<(), Error> {
        let Some(end) = self.tree.prefetch_end else {
            return Ok(());
        };
        let bytes = self.source.fetch(0..end).await?;
        for chunk in self.tree.inodes().iter().flat_map(|n| &n.chunks) {
            if chunk.end > end || self.cached(chunk).exists() {
                continue;
            }
            let member = &bytes[chunk.offset as usize..chunk.end as usize];
            let data = verify_chunk(chunk, member)?;
            self.store(chunk, &data)?;
        }
        Ok(())
    }

    fn cached(&self, chunk: &Chunk) -> PathBuf {
        self.cache.join(chunk.digest.hex())
    }

    /// The cache file of `chunk`, fetched and verified first when it is not there.
    async fn ensure(&self, chunk: &Chunk) -> Result<PathBuf, Error> {
        let path = self.cached(chunk);
        if self.is_checked(chunk) {
            return Ok(path);
        }
        let lock = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            fetching.entry(chunk.digest.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if self.is_checked(chunk) || self.check_cached(chunk, &path).await {
            return Ok(path);
        }
        let result = async {
            let member = self.source.fetch(chunk.offset..chunk.end).await?;
            // gunzip and sha256 of up to a chunk (4 MiB by default): off the async workers
            let owned = chunk.clone();
            let data = tokio::task::spawn_blocking(move || verify_chunk(&owned, &member))
                .await
                .map_err(|e| Error::BadChunk {
                    offset: chunk.offset,
                    why: format!("verify: {e}"),
                })??;
            self.store(chunk, &data)
        }
        .await;
        self.fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&chunk.digest);
        result.map(|()| path)
    }

    fn is_checked(&self, chunk: &Chunk) -> bool {
        let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked.contains(&chunk.digest)
    }

    /// Whether the cache holds `chunk` with the right bytes (hashed again); a damaged file is
    /// removed, to be fetched again.
    async fn check_cached(&self, chunk: &Chunk, path: &Path) -> bool {
        let owned = path.to_path_buf();
        let hashed =
            tokio::task::spawn_blocking(move || std::fs::read(&owned).map(|b| Digest::of(&b)))
                .await;
        match hashed {
            Ok(Ok(digest)) if digest == chunk.digest => {
                let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
                checked.insert(chunk.digest.clone());
                true
            }
            Ok(Ok(_)) => {
                tracing::warn!(path = %path.display(), "a cached chunk is damaged; fetching it again");
                let _ = std::fs::remove_file(path);
                false
            }
            _ => false,
        }
    }

    fn store(&self, chunk: &Chunk, data: &[u8]) -> Result<(), Error> {
        let n = self.temp_names.fetch_add(1, Ordering::Relaxed);
        let temp = self.cache.join(format!(
            ".{}.{}.{n}",
            chunk.digest.hex(),
            std::process::id()
        ));
        let path = self.cached(chunk);
        let stored = std::fs::write(&temp, data)
            .map_err(Error::io("write chunk", &temp))
            .and_then(|()| std::fs::rename(&temp, &path).map_err(Error::io("store chunk", &path)));
        match &stored {
            Ok(()) => {
                let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
                checked.insert(chunk.digest.clone());
            }
            // a full disk: leave no partial file behind
            Err(_) => {
                let _ = std::fs::remove_file(&temp);
            }
        }
        stored
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }
}

/// The bytes of `chunk` from its gzip `member` (the blob's bytes from the chunk's offset to
/// the next member), checked against its `chunkDigest`.
pub fn verify_chunk(chunk: &Chunk, member: &[u8]) -> Result<Vec<u8>, Error> {
    let bad = |why: String| Error::BadChunk {
        offset: chunk.offset,
        why,
    };
    let mut gz = GzDecoder::new(member);
    let skipped = std::io::copy(
        &mut (&mut gz).take(chunk.inner_offset),
        &mut std::io::sink(),
    )
    .map_err(|e| bad(format!("decompress: {e}")))?;
    if skipped != chunk.inner_offset {
        return Err(bad(format!("the member ends at {skipped} bytes")));
    }
    // grown as bytes arrive: a member may hold fewer bytes than its TOC entry claims
    let mut data = Vec::with_capacity(chunk.size.min(8 << 20) as usize);
    gz.take(chunk.size)
        .read_to_end(&mut data)
        .map_err(|e| bad(format!("decompress: {e}")))?;
    if data.len() as u64 != chunk.size {
        return Err(bad(format!(
            "the member holds {} of the chunk's {} bytes",
            data.len(),
            chunk.size
        )));
    }
    let got = Digest::of(&data);
    if got != chunk.digest {
        return Err(Error::ChunkDigest {
            offset: chunk.offset,
            got,
            want: chunk.digest.clone(),
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn chunk(data: &[u8], inner_offset: u64) -> Chunk {
        Chunk {
            file_offset: 0,
            size: data.len() as u64,
            offset: 0,
            end: 0,
            inner_offset,
            digest: Digest::of(data),
        }
    }

    #[test]
    fn a_good_chunk_is_returned() {
        let member = gzip(b"headerhello world");
        let c = chunk(b"hello world", 6);
        assert_eq!(verify_chunk(&c, &member).unwrap(), b"hello world");
    }

    #[test]
    fn a_chunk_with_other_bytes_is_refused() {
        let member = gzip(b"hello wOrld");
        let c = chunk(b"hello world", 0);
        let err = verify_chunk(&c, &member).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "chunk at blob offset 0: digest {}, the TOC says {}",
                Digest::of(b"hello wOrld"),
                Digest::of(b"hello world")
            )
        );
    }

    #[test]
    fn a_short_member_is_refused() {
        let member = gzip(b"hello");
        let c = chunk(b"hello world", 0);
        let err = verify_chunk(&c, &member).unwrap_err();
        assert_eq!(
            err.to_string(),
            "chunk at blob offset 0: the member holds 5 of the chunk's 11 bytes"
        );
    }
}
