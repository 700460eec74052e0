//! Push to and pull from IPFS in nerdctl's image format.
//!
//! Push: every blob (layers, config, then the re-encoded manifests and index) is added as a
//! UnixFS file, each descriptor gets `urls: ["ipfs://CID"]` (replacing any urls), Docker media
//! types become OCI ones, index entries for other platforms are dropped, and the image CID is
//! the CID of the top descriptor's JSON. Manifests are re-encoded as Go's `encoding/json` does
//! (crate `ferry_oci::go_json`), so the same image gives the same CID as nerdctl with a kubo of
//! default settings. Pull walks the same tree by the `ipfs://` urls.

use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use ferry_content::Store;
use ferry_ipfs::{add_blob, add_bytes, fetch_blob};
use ferry_oci::{go_json, media, Descriptor, Digest, Index, Manifest, Platform};
use ferry_unixfs::Profile;

use crate::Error;

/// The largest manifest, index or top descriptor accepted (containerd's limit is about 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Adds the image whose top descriptor is `target` to the local IPFS store, pins it under
/// `name` and returns the image CID. Blocking (hashes every blob): call it from a blocking
/// context. Only manifests for `platform` are kept from an index; with `None`, every manifest
/// is (all must be in the store). `progress` hears of each config and layer before it is
/// added (`false`) and after (`true`).
pub fn push_image(
    store: &Store,
    name: &str,
    target: &Descriptor,
    platform: Option<&Platform>,
    profile: Profile,
    progress: &dyn Fn(&Descriptor, bool),
) -> Result<Cid, Error> {
    let pusher = Pusher {
        store,
        platform,
        profile,
        progress,
    };
    let top = pusher.convert(target)?;
    let json = go_json::to_vec(&top).map_err(|e| Error::invalid("top descriptor", e))?;
    let (_, cid) = add_bytes(store, &json, profile)?;
    store.pin(&cid, name)?;
    Ok(cid)
}

struct Pusher<'a> {
    store: &'a Store,
    platform: Option<&'a Platform>,
    profile: Profile,
    progress: &'a dyn Fn(&Descriptor, bool),
}

impl Pusher<'_> {
    fn convert(&self, desc: &Descriptor) -> Result<Descriptor, Error> {
        let mut out = desc.clone();
        out.media_type = media::to_oci(&desc.media_type).to_string();
        let cid = if media::is_index(&desc.media_type) {
            let index = self.convert_index(desc)?;
            self.add_json(&index, &mut out)?
        } else if media::is_manifest(&desc.media_type) {
            let manifest = self.convert_manifest(desc)?;
            self.add_json(&manifest, &mut out)?
        } else {
            (self.progress)(desc, false);
            let cid = add_blob(self.store, &desc.digest, self.profile)?;
            (self.progress)(desc, true);
            cid
        };
        out.urls = vec![format!("ipfs://{cid}")];
        Ok(out)
    }

    fn convert_index(&self, desc: &Descriptor) -> Result<Index, Error> {
        let mut index: Index = self.read_json(desc)?;
        index.media_type = media::to_oci(&index.media_type).to_string();
        let mut manifests = Vec::new();
        for m in &index.manifests {
            if wanted(m, self.platform) {
                manifests.push(self.convert(m)?);
            }
        }
        if manifests.is_empty() {
            return Err(Error::NoPlatform {
                image: desc.digest.to_string(),
                platform: self
                    .platform
                    .map_or("any platform".into(), |p| p.to_string()),
            });
        }
        index.manifests = manifests;
        Ok(index)
    }

    fn convert_manifest(&self, desc: &Descriptor) -> Result<Manifest, Error> {
        let mut manifest: Manifest = self.read_json(desc)?;
        manifest.media_type = media::to_oci(&manifest.media_type).to_string();
        manifest.config = self.convert(&manifest.config)?;
        manifest.layers = manifest
            .layers
            .iter()
            .map(|l| self.convert(l))
            .collect::<Result<_, _>>()?;
        Ok(manifest)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, desc: &Descriptor) -> Result<T, Error> {
        let bytes = self.store.read_blob(&desc.digest)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::invalid(&desc.digest, e))
    }

    /// Stores the re-encoded JSON, adds it, and points `out` at it.
    fn add_json<T: serde::Serialize>(&self, value: &T, out: &mut Descriptor) -> Result<Cid, Error> {
        let json = go_json::to_vec(value).map_err(|e| Error::invalid(&out.digest, e))?;
        let (digest, cid) = add_bytes(self.store, &json, self.profile)?;
        out.digest = digest;
        out.size = json.len() as u64;
        Ok(cid)
    }
}

/// How a pull reports progress.
pub trait PullProgress: Send + Sync {
    /// A blob is about to be fetched (or found locally).
    fn blob_started(&self, desc: &Descriptor);
    /// Bytes of the current blobs arrived.
    fn bytes(&self, n: u64);
    /// A blob is stored and verified.
    fn blob_done(&self, desc: &Descriptor);
    /// A blob was already in the store: nothing was fetched.
    fn blob_cached(&self, desc: &Descriptor);
}

/// Fetches the image `image_cid` over Bitswap into the store and names it by its CID (the bare
/// CIDv1 string, as nerdctl names it). Every block is verified against its CID and every blob
/// against its descriptor's digest and size. Only the manifest for `platform` is fetched from an
/// index (every manifest with `None`). `timeout` bounds the wait for any one block. Returns the top descriptor.
pub async fn pull_image(
    bitswap: &ferry_bitswap::Bitswap,
    store: &Arc<Store>,
    image_cid: Cid,
    platform: Option<&Platform>,
    timeout: Duration,
    progress: &dyn PullProgress,
) -> Result<Descriptor, Error> {
    pull_image_leaving(
        bitswap,
        store,
        image_cid,
        platform,
        timeout,
        progress,
        &|_| false,
    )
    .await
}

/// [`pull_image`] without the layers `leave_out` names (lazy pulling fetches eStargz layers
/// later, by range): their descriptors stay in the manifest, their blobs are not fetched.
pub async fn pull_image_leaving(
    bitswap: &ferry_bitswap::Bitswap,
    store: &Arc<Store>,
    image_cid: Cid,
    platform: Option<&Platform>,
    timeout: Duration,
    progress: &dyn PullProgress,
    leave_out: &(dyn Fn(&Descriptor) -> bool + Sync),
) -> Result<Descriptor, Error> {
    let puller = Puller {
        bitswap,
        store,
        platform,
        timeout,
        progress,
        leave_out,
    };
    let on_bytes = |n| progress.bytes(n);
    let (digest, _) = fetch_blob(
        bitswap,
        store,
        image_cid,
        None,
        MAX_MANIFEST_SIZE,
        timeout,
        &on_bytes,
    )
    .await?;
    let top: Descriptor = serde_json::from_slice(&store.read_blob(&digest)?)
        .map_err(|e| Error::invalid(image_cid, format!("not an image descriptor: {e}")))?;
    puller.fetch_tree(&top).await?;
    store.put_image(&image_cid.to_string(), &top)?;
    store.pin(&image_cid, &image_cid.to_string())?;
    Ok(top)
}

struct Puller<'a> {
    bitswap: &'a ferry_bitswap::Bitswap,
    store: &'a Arc<Store>,
    platform: Option<&'a Platform>,
    timeout: Duration,
    progress: &'a dyn PullProgress,
    leave_out: &'a (dyn Fn(&Descriptor) -> bool + Sync),
}

impl Puller<'_> {
    async fn fetch_tree(&self, top: &Descriptor) -> Result<(), Error> {
        let mut todo = vec![top.clone()];
        while let Some(desc) = todo.pop() {
            self.fetch(&desc).await?;
            if media::is_index(&desc.media_type) {
                let index: Index = self.read_json(&desc)?;
                let wanted: Vec<_> = index
                    .manifests
                    .into_iter()
                    .filter(|m| wanted(m, self.platform))
                    .collect();
                if wanted.is_empty() {
                    return Err(Error::NoPlatform {
                        image: desc.digest.to_string(),
                        platform: self
                            .platform
                            .map_or("any platform".into(), |p| p.to_string()),
                    });
                }
                todo.extend(wanted);
            } else if media::is_manifest(&desc.media_type) {
                let manifest: Manifest = self.read_json(&desc)?;
                todo.push(manifest.config);
                todo.extend(
                    manifest
                        .layers
                        .into_iter()
                        .rev()
                        .filter(|l| !(self.leave_out)(l)),
                );
            }
        }
        Ok(())
    }

    async fn fetch(&self, desc: &Descriptor) -> Result<(), Error> {
        let cid_text = desc.ipfs_url().ok_or_else(|| {
            Error::invalid(
                &desc.digest,
                "descriptor has no ipfs:// url (not an IPFS image)",
            )
        })?;
        let cid = Cid::try_from(cid_text).map_err(|e| Error::invalid(cid_text, e))?;
        if is_json(&desc.media_type) && desc.size > MAX_MANIFEST_SIZE {
            return Err(Error::invalid(&desc.digest, "manifest larger than 4 MiB"));
        }
        if self.store.has_blob(&desc.digest) {
            self.progress.blob_cached(desc);
            return Ok(());
        }
        self.progress.blob_started(desc);
        let on_bytes = |n| self.progress.bytes(n);
        let expected: (&Digest, u64) = (&desc.digest, desc.size);
        fetch_blob(
            self.bitswap,
            self.store,
            cid,
            Some(expected),
            desc.size,
            self.timeout,
            &on_bytes,
        )
        .await?;
        self.progress.blob_done(desc);
        Ok(())
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, desc: &Descriptor) -> Result<T, Error> {
        let bytes = self.store.read_blob(&desc.digest)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::invalid(&desc.digest, e))
    }
}

/// Whether the index entry `m` is one of the manifests asked for (`None`: all are).
fn wanted(m: &Descriptor, platform: Option<&Platform>) -> bool {
    match platform {
        None => true,
        Some(platform) => m.platform.as_ref().is_none_or(|p| p.matches(platform)),
    }
}

fn is_json(media_type: &str) -> bool {
    media::is_index(media_type) || media::is_manifest(media_type)
}
