//! The digest → CID map of each image, resolved once and kept.
//!
//! An IPFS image is a tree of descriptors whose `urls` name the CID of each blob
//! (reference/nerdctl-ipfs.md 1): the image CID holds the top descriptor's JSON, which points
//! at an index or a manifest, which point at manifests, a config and layers. Resolving walks
//! that tree once, fetching the manifests and indexes (small; they are kept in the store), and
//! records every descriptor with its CID. Concurrent requests for one image wait for the same
//! resolution; a failed one is not kept, so a later request tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cid::Cid;
use ferry_convert::ipfs::MAX_MANIFEST_SIZE;
use ferry_oci::{media, Descriptor, Digest, Index, Manifest};
use futures::TryStreamExt;
use tokio::sync::OnceCell;

use super::error::ApiError;
use super::Shared as Backend;

/// Images whose maps are kept; past this, finished entries are dropped and resolved again
/// when asked for.
const MAX_IMAGES: usize = 256;

/// Descriptors one image may hold (every manifest, config and layer of every platform).
const MAX_DESCRIPTORS: usize = 10_000;

/// Manifests and indexes one image may hold.
const MAX_MANIFESTS: usize = 1_000;

/// One blob of an image.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) desc: Descriptor,
    pub(crate) cid: Cid,
}

/// Everything served for one image CID.
#[derive(Debug)]
pub(crate) struct ImageMap {
    /// The manifest or index that the tag `latest` names.
    pub(crate) target: Entry,
    /// Every descriptor of the image by digest.
    pub(crate) blobs: HashMap<Digest, Entry>,
}

/// The maps of the images asked for so far.
#[derive(Default)]
pub(crate) struct Images {
    cells: Mutex<HashMap<Cid, Arc<OnceCell<Arc<ImageMap>>>>>,
}

impl Images {
    /// The map of the image `cid`, resolving it unless it is known or being resolved.
    pub(crate) async fn get(&self, backend: &Backend, cid: Cid) -> Result<Arc<ImageMap>, ApiError> {
        // CIDv0 and CIDv1 of one DAG (and every base) name the same image
        let key = if cid.version() == cid::Version::V0 {
            cid.into_v1().unwrap_or(cid)
        } else {
            cid
        };
        let cell = self.cell(key);
        let map = cell
            .get_or_try_init(|| async {
                tracing::debug!(%cid, "resolving image");
                resolve(backend, cid).await.map(Arc::new)
            })
            .await?;
        Ok(map.clone())
    }

    fn cell(&self, key: Cid) -> Arc<OnceCell<Arc<ImageMap>>> {
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        if cells.len() >= MAX_IMAGES && !cells.contains_key(&key) {
            cells.retain(|_, cell| !cell.initialized());
        }
        cells.entry(key).or_default().clone()
    }
}

async fn resolve(backend: &Backend, cid: Cid) -> Result<ImageMap, ApiError> {
    let name = format!("ipfs/{cid}");
    let not_image = |why: String| ApiError::name_unknown(&name, &why);

    // no peer having the image within the read timeout is a 404, as for a name no registry
    // knows; a backend that fails (kubo unreachable, a store error) may work later: 503
    let top_json = read_top(backend, cid).await.map_err(|e| {
        let why = format!("cannot fetch image {cid}: {e}");
        if e.is_not_found() {
            not_image(why)
        } else {
            ApiError::unavailable(&why)
        }
    })?;
    let top: Descriptor = serde_json::from_slice(&top_json)
        .map_err(|e| not_image(format!("{cid} is not an image descriptor: {e}")))?;
    if !media::is_index(&top.media_type) && !media::is_manifest(&top.media_type) {
        let why = format!(
            "{cid} points at {:?}, not a manifest or index",
            top.media_type
        );
        return Err(not_image(why));
    }
    let target = entry_of(&top).ok_or_else(|| not_image(format!("{cid} has no ipfs:// url")))?;

    let mut blobs = HashMap::new();
    let mut todo = vec![target.clone()];
    let mut manifests = 0;
    while let Some(entry) = todo.pop() {
        manifests += 1;
        if manifests > MAX_MANIFESTS || blobs.len() > MAX_DESCRIPTORS {
            return Err(not_image(format!(
                "image {cid} has too many manifests or blobs"
            )));
        }
        let children = children_of(backend, &entry)
            .await
            .map_err(|e| e.or_not_image(&name, &entry.desc.digest))?;
        for child in children {
            let is_json =
                media::is_index(&child.media_type) || media::is_manifest(&child.media_type);
            // a descriptor without an ipfs:// url cannot be served; asking for it is a 404
            let Some(child) = entry_of(&child) else {
                continue;
            };
            if is_json && !blobs.contains_key(&child.desc.digest) {
                todo.push(child.clone());
            }
            blobs.insert(child.desc.digest.clone(), child);
        }
        blobs.insert(entry.desc.digest.clone(), entry);
    }
    Ok(ImageMap { target, blobs })
}

fn entry_of(desc: &Descriptor) -> Option<Entry> {
    let cid = Cid::try_from(desc.ipfs_url()?).ok()?;
    Some(Entry {
        desc: desc.clone(),
        cid,
    })
}

/// Why the children of a manifest or index are not known.
enum ChildError {
    /// Its bytes could not be had or are not the descriptor's.
    Read(ApiError),
    /// Its bytes are not a manifest or index.
    Parse(String),
}

impl ChildError {
    fn or_not_image(self, name: &str, digest: &Digest) -> ApiError {
        match self {
            ChildError::Read(e) => e,
            ChildError::Parse(why) => {
                ApiError::name_unknown(name, &format!("manifest {digest}: {why}"))
            }
        }
    }
}

/// The descriptors a manifest or index points at; fetches it into the store first.
async fn children_of(backend: &Backend, entry: &Entry) -> Result<Vec<Descriptor>, ChildError> {
    let desc = &entry.desc;
    if desc.size > MAX_MANIFEST_SIZE {
        return Err(ChildError::Parse(format!(
            "larger than {MAX_MANIFEST_SIZE} bytes"
        )));
    }
    let bytes = read_json_blob(backend, entry)
        .await
        .map_err(ChildError::Read)?;
    let parse = |e: serde_json::Error| ChildError::Parse(e.to_string());
    if media::is_index(&desc.media_type) {
        let index: Index = serde_json::from_slice(&bytes).map_err(parse)?;
        Ok(index.manifests)
    } else {
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(parse)?;
        let mut children = vec![manifest.config];
        children.extend(manifest.layers);
        Ok(children)
    }
}

/// The bytes of a manifest or index: from the store, or fetched by CID, verified against the
/// descriptor and stored (byte for byte: its digest is over these bytes). Blocks that cannot be
/// fetched are 503, content that is not the descriptor's 502.
pub(crate) async fn read_json_blob(backend: &Backend, entry: &Entry) -> Result<Vec<u8>, ApiError> {
    let desc = &entry.desc;
    let internal = |e: String| ApiError::internal(&format!("manifest {}", desc.digest), &e);
    if backend.store.has_blob(&desc.digest) {
        let bytes = backend
            .store
            .read_blob(&desc.digest)
            .map_err(|e| internal(e.to_string()))?;
        // The descriptor's size becomes Content-Length: it must be the bytes' own.
        if bytes.len() as u64 != desc.size {
            return Err(ApiError::bad_content(&format!(
                "{} is {} bytes, its descriptor says {}",
                desc.digest,
                bytes.len(),
                desc.size
            )));
        }
        return Ok(bytes);
    }
    let bytes = read_all(backend, entry.cid, desc.size).await.map_err(|e| {
        ApiError::unavailable(&format!(
            "cannot fetch {} (ipfs://{}): {e}",
            desc.digest, entry.cid
        ))
    })?;
    let digest = Digest::of(&bytes);
    if digest != desc.digest || bytes.len() as u64 != desc.size {
        return Err(ApiError::bad_content(&format!(
            "ipfs://{} holds {digest} ({} bytes), not {} ({} bytes)",
            entry.cid,
            bytes.len(),
            desc.digest,
            desc.size
        )));
    }
    let store = backend.store.clone();
    let to_store = bytes.clone();
    let expected = desc.digest.clone();
    tokio::task::spawn_blocking(move || store.write_blob(&to_store, Some(&expected)))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))?;
    Ok(bytes)
}

/// The top descriptor's JSON: the whole file `cid`, at most [`MAX_MANIFEST_SIZE`] bytes.
async fn read_top(backend: &Backend, cid: Cid) -> Result<Vec<u8>, ferry_ipfs::Error> {
    if let Ok(Some(digest)) = backend.store.file_blob(&cid) {
        if let Ok(bytes) = backend.store.read_blob(&digest) {
            return Ok(bytes);
        }
    }
    read_all(backend, cid, MAX_MANIFEST_SIZE).await
}

async fn read_all(backend: &Backend, cid: Cid, limit: u64) -> Result<Vec<u8>, ferry_ipfs::Error> {
    let stream = ferry_ipfs::read_range(
        backend.source.clone(),
        backend.store.clone(),
        cid,
        0..limit,
        limit,
        backend.read,
    );
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await?;
    Ok(chunks.concat())
}
