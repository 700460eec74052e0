//! Pushing an image from the store to a registry (OCI Distribution spec, push category).
//!
//! Order matters to registries: every blob a manifest names must be there before the manifest,
//! and every manifest an index names before the index. So a push goes bottom up: for each
//! manifest its config and layers (a few at a time, each skipped when the registry has it),
//! then the manifest by digest, and last the top manifest or index under the tag.
//!
//! An image that came from IPFS carries `urls: ["ipfs://CID"]` in its descriptors. A registry
//! refuses those (distribution accepts only http and https urls on layers) and its clients
//! could not follow them anyway, so they are dropped and the manifests re-encoded as Go does
//! (the encoding they were written in): the same document as before the IPFS push, config and
//! layers unchanged, though its digest may differ (a trailing newline, say). The re-encoded
//! documents are stored, so the caller can bind the local name to what the registry holds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_content::Store;
use ferry_oci::{go_json, media, Descriptor, Digest, Index, Manifest, Platform, Reference};
use futures::{StreamExt, TryStreamExt};
use oci_client::errors::OciDistributionError;
use oci_client::Client;
use tracing::Instrument;

use crate::connect::Connection;
use crate::error::{Error, ErrorKind, Fail};
use crate::json;
use crate::pull::{registry_fail, registry_reference};

/// How many blobs of one image upload at once.
const CONCURRENT_BLOBS: usize = 3;

/// Bytes read from a blob file per upload chunk.
const READ_CHUNK: usize = 256 << 10;

/// How often an upload reports the bytes sent.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Which manifests of an index to push.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PlatformChoice {
    /// The whole index when every manifest it lists is in the store; otherwise the host
    /// platform's manifest alone (what a default pull left here).
    #[default]
    Default,
    /// Only this platform's manifest, pushed alone under the tag.
    One(Platform),
    /// The whole index; a manifest missing from the store is an error.
    All,
}

/// How to push.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Which manifests of an index to push.
    pub platforms: PlatformChoice,
    /// Registries (host or host:port) to reach over plain HTTP, besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// The credentials to present.
    pub auth: crate::Auth,
    /// CA certificates (PEM) to trust for this registry besides the system's roots.
    pub ca_certs: Vec<Vec<u8>>,
    /// Repositories of the same registry that hold a blob (by digest), to mount it from
    /// instead of uploading it (a cross-repository blob mount).
    pub mount_from: std::collections::HashMap<Digest, String>,
}

/// What a push reports as it goes, for a progress line per blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushEvent {
    /// A blob (config, layer or manifest) started uploading.
    BlobStarted {
        /// The blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
    /// Bytes of a blob were handed to the connection.
    BlobProgress {
        /// The blob.
        digest: Digest,
        /// Bytes of it sent so far.
        sent: u64,
    },
    /// A blob is in the registry.
    BlobDone {
        /// The blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
        /// Whether the registry had it already (nothing was uploaded).
        existed: bool,
    },
    /// The registry mounted a blob from another of its repositories (nothing was uploaded).
    BlobMounted {
        /// The blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
}

/// Pushes the image whose top descriptor is `source` (a manifest or index in the store) to
/// `reference` (a [`Reference::Registry`]) and returns the descriptor the tag now points at in
/// the registry.
///
/// Blobs the registry already has (a `HEAD` answers 200) are not sent. A blob is sent in one
/// `PUT` when the registry takes that, else in chunks (`PATCH`). Safe to cancel: an upload
/// left unfinished is abandoned (the registry expires it); the tag is written last, so it never
/// points at an incomplete image.
pub async fn push(
    store: &Store,
    source: &Descriptor,
    reference: &Reference,
    opts: &PushOptions,
    progress: &(dyn Fn(PushEvent) + Send + Sync),
) -> Result<Descriptor, Error> {
    let name = reference.image_name();
    let span = tracing::info_span!("push", reference = %name);
    push_image(store, source, reference, opts, progress)
        .instrument(span)
        .await
        .map_err(|f| f.into_push(&name))
}

async fn push_image(
    store: &Store,
    source: &Descriptor,
    reference: &Reference,
    opts: &PushOptions,
    progress: &(dyn Fn(PushEvent) + Send + Sync),
) -> Result<Descriptor, Fail> {
    let (domain, image) = registry_reference(reference)?;
    let plan = Planner { store, opts }.plan(source)?;

    let connection = Connection::open(&domain, &opts.insecure_registries, &opts.ca_certs).await?;
    let (monolithic, chunked) = (connection.client(true)?, connection.client(false)?);
    let auth = opts.auth.to_registry_auth();
    monolithic.store_auth_if_needed(&domain, &auth).await;
    chunked.store_auth_if_needed(&domain, &auth).await;
    let pusher = Pusher {
        monolithic,
        chunked,
        image,
        store,
        progress,
        mount_from: &opts.mount_from,
    };

    let alone = plan.index.is_none();
    for manifest in &plan.manifests {
        pusher.blobs(&manifest.blobs).await?;
        pusher
            .manifest(&manifest.desc, &manifest.bytes, alone)
            .await?;
    }
    if let Some(index) = &plan.index {
        pusher.manifest(&index.desc, &index.bytes, true).await?;
    }
    let top = plan.top();
    Ok(Descriptor::new(
        &top.desc.media_type,
        top.desc.digest.clone(),
        top.desc.size,
    ))
}

/// A manifest or index as it will be pushed: its bytes (re-encoded when urls were dropped,
/// then already stored) and, for a manifest, the blobs it names.
struct Document {
    desc: Descriptor,
    bytes: Vec<u8>,
    blobs: Vec<Descriptor>,
}

/// What one push sends: manifests in order, then the index if there is one (which is then
/// the top; otherwise the only manifest is).
struct Plan {
    manifests: Vec<Document>,
    index: Option<Document>,
}

impl Plan {
    fn top(&self) -> &Document {
        match &self.index {
            Some(index) => index,
            None => &self.manifests[0],
        }
    }
}

struct Planner<'a> {
    store: &'a Store,
    opts: &'a PushOptions,
}

impl Planner<'_> {
    fn plan(&self, source: &Descriptor) -> Result<Plan, Fail> {
        let bytes = self.read(source)?;
        let media_type = json::media_type_of(&bytes, &format!("manifest {}", source.digest))?;
        if media::is_manifest(&media_type) {
            let manifest = self.manifest(source, bytes)?;
            return Ok(Plan {
                manifests: vec![manifest],
                index: None,
            });
        }
        if !media::is_index(&media_type) {
            let why = format!("{} has unknown media type {media_type}", source.digest);
            return Err(Fail::new(ErrorKind::Unsupported, why));
        }

        let mut index: Index = json::decode(&bytes, &format!("index {}", source.digest))?;
        let present = |d: &Descriptor| self.store.has_blob(&d.digest);
        let platform_of = |p: &Platform| {
            index
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|q| q.matches(p)))
                .cloned()
                .ok_or_else(|| {
                    let why = format!("index {} has no manifest for {p}", source.digest);
                    Fail::new(ErrorKind::NotFound, why)
                })
        };
        let alone = match &self.opts.platforms {
            PlatformChoice::One(p) => Some(platform_of(p)?),
            PlatformChoice::Default if !index.manifests.iter().all(present) => {
                Some(platform_of(&Platform::host())?)
            }
            _ => None,
        };
        if let Some(entry) = alone {
            let bytes = self.read(&entry)?;
            let manifest = self.manifest(&entry, bytes)?;
            return Ok(Plan {
                manifests: vec![manifest],
                index: None,
            });
        }

        let mut manifests = Vec::new();
        let mut changed = source.ipfs_url().is_some();
        for entry in index.manifests.iter_mut() {
            let bytes = self.read(entry)?;
            let manifest = self.manifest(entry, bytes)?;
            if manifest.desc.digest != entry.digest || !entry.urls.is_empty() {
                changed = true;
                entry.digest = manifest.desc.digest.clone();
                entry.size = manifest.desc.size;
                entry.urls.retain(|u| !u.starts_with("ipfs://"));
            }
            manifests.push(manifest);
        }
        let what = format!("index {}", source.digest);
        let index = self.document(source, &media_type, bytes, changed, &index, &what)?;
        Ok(Plan {
            manifests,
            index: Some(index),
        })
    }

    /// A manifest with its blobs, `ipfs://` urls dropped.
    fn manifest(&self, desc: &Descriptor, bytes: Vec<u8>) -> Result<Document, Fail> {
        let what = format!("manifest {}", desc.digest);
        let media_type = json::media_type_of(&bytes, &what)?;
        if !media::is_manifest(&media_type) {
            let why = format!("{what}: {media_type} where a manifest was expected");
            return Err(Fail::new(ErrorKind::Unsupported, why));
        }
        let mut manifest: Manifest = json::decode(&bytes, &what)?;
        let changed = desc.ipfs_url().is_some()
            || manifest.config.ipfs_url().is_some()
            || manifest.layers.iter().any(|l| l.ipfs_url().is_some());
        for d in std::iter::once(&mut manifest.config).chain(manifest.layers.iter_mut()) {
            d.urls.retain(|u| !u.starts_with("ipfs://"));
        }
        let mut seen = HashSet::new();
        let blobs: Vec<Descriptor> = std::iter::once(manifest.config.clone())
            .chain(manifest.layers.iter().cloned())
            .filter(|d| seen.insert(d.digest.clone()))
            .collect();
        for blob in &blobs {
            if !self.store.has_blob(&blob.digest) {
                let why = format!("{what}: blob {} is not in the store", blob.digest);
                return Err(Fail::new(ErrorKind::NotFound, why));
            }
        }
        let mut doc = self.document(desc, &media_type, bytes, changed, &manifest, &what)?;
        doc.blobs = blobs;
        Ok(doc)
    }

    /// The document as pushed: the stored bytes, or `value` re-encoded (and stored) when
    /// `changed`.
    fn document<T: serde::Serialize>(
        &self,
        desc: &Descriptor,
        media_type: &str,
        bytes: Vec<u8>,
        changed: bool,
        value: &T,
        what: &str,
    ) -> Result<Document, Fail> {
        let bytes = match changed {
            false => bytes,
            true => go_json::to_vec(value).map_err(|e| Fail::invalid(format!("{what}: {e}")))?,
        };
        let digest = Digest::of(&bytes);
        if changed {
            self.store
                .write_blob(&bytes, Some(&digest))
                .map_err(|e| Fail::store(&digest, e))?;
        }
        let mut out = Descriptor::new(media_type, digest, bytes.len() as u64);
        out.platform = desc.platform.clone();
        Ok(Document {
            desc: out,
            bytes,
            blobs: Vec::new(),
        })
    }

    fn read(&self, desc: &Descriptor) -> Result<Vec<u8>, Fail> {
        json::read_document(self.store, desc)
    }
}

/// One push's clients, image and store.
struct Pusher<'a> {
    /// Sends a blob in one `PUT`.
    monolithic: Client,
    /// Sends a blob in `PATCH` chunks, for registries that refuse a body on `PUT`.
    chunked: Client,
    image: oci_client::Reference,
    store: &'a Store,
    progress: &'a (dyn Fn(PushEvent) + Send + Sync),
    /// Where the registry may mount blobs from (see [`PushOptions::mount_from`]).
    mount_from: &'a std::collections::HashMap<Digest, String>,
}

impl Pusher<'_> {
    /// Pushes the blobs of one manifest, a few at a time.
    async fn blobs(&self, blobs: &[Descriptor]) -> Result<(), Fail> {
        let uploads: Vec<_> = blobs.iter().map(|d| self.blob(d)).collect();
        futures::stream::iter(uploads)
            .buffer_unordered(CONCURRENT_BLOBS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Uploads one blob unless the registry has it.
    async fn blob(&self, d: &Descriptor) -> Result<(), Fail> {
        let (digest, size) = (&d.digest, d.size);
        let what = format!("blob {digest}");
        let existed = self
            .monolithic
            .blob_exists(&self.image, &digest.to_string())
            .await
            .map_err(|e| registry_fail(e).context(&what))?;
        if !existed && self.mount(d).await {
            (self.progress)(PushEvent::BlobMounted {
                digest: digest.clone(),
                size,
            });
            return Ok(());
        }
        if !existed {
            (self.progress)(PushEvent::BlobStarted {
                digest: digest.clone(),
                size,
            });
            match self.upload(&self.monolithic, d).await {
                Err(e) if refuses_monolithic(&e) => {
                    tracing::debug!(%digest, error = %e, "monolithic upload refused; chunked");
                    self.upload(&self.chunked, d).await
                }
                other => other,
            }
            .map_err(|e| registry_fail(e).context(&what))?;
        }
        (self.progress)(PushEvent::BlobDone {
            digest: digest.clone(),
            size,
            existed,
        });
        Ok(())
    }

    /// Asks the registry to mount the blob from another of its repositories that holds it;
    /// false when there is none or the registry declines (the blob is then uploaded).
    async fn mount(&self, d: &Descriptor) -> bool {
        let Some(from) = self.mount_from.get(&d.digest) else {
            return false;
        };
        let source = oci_client::Reference::with_tag(
            self.image.registry().to_string(),
            from.clone(),
            "latest".to_string(),
        );
        let digest = d.digest.to_string();
        match self
            .monolithic
            .mount_blob(&self.image, &source, &digest)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(%digest, %from, error = %e, "blob mount declined; uploading");
                false
            }
        }
    }

    /// Streams the blob file to the registry through `client`, reporting bytes sent a few
    /// times a second (the body stream must be `'static`, so it only bumps a counter).
    async fn upload(
        &self,
        client: &Client,
        d: &Descriptor,
    ) -> Result<String, OciDistributionError> {
        let file = self
            .store
            .open_blob(&d.digest)
            .map_err(std::io::Error::other)?;
        let reader = tokio::fs::File::from_std(file);
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK)
            .map_err(OciDistributionError::from)
            .inspect_ok(move |chunk| {
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            });
        let digest = d.digest.to_string();
        let upload = client.push_blob_stream(&self.image, stream, &digest, Some(d.size));
        tokio::pin!(upload);
        let mut ticks = tokio::time::interval(PROGRESS_EVERY);
        let mut reported = 0;
        loop {
            tokio::select! {
                result = &mut upload => return result,
                _ = ticks.tick() => {
                    let now = sent.load(Ordering::Relaxed);
                    if now != reported {
                        reported = now;
                        (self.progress)(PushEvent::BlobProgress {
                            digest: d.digest.clone(),
                            sent: now,
                        });
                    }
                }
            }
        }
    }

    /// Pushes a manifest or index: under the reference's tag (or digest) when `top`, else by
    /// its digest.
    async fn manifest(&self, desc: &Descriptor, bytes: &[u8], top: bool) -> Result<(), Fail> {
        let what = format!("manifest {}", desc.digest);
        let target = match top {
            true => self.image.clone(),
            false => self.image.clone_with_digest(desc.digest.to_string()),
        };
        let content_type = desc
            .media_type
            .parse()
            .map_err(|_| Fail::invalid(format!("{what}: media type {}", desc.media_type)))?;
        self.monolithic
            .push_manifest_raw(&target, bytes.to_vec(), content_type)
            .await
            .map_err(|e| registry_fail(e).context(&what))?;
        tracing::debug!(digest = %desc.digest, top, "manifest pushed");
        Ok(())
    }
}

/// Whether an upload failed because the registry does not take a blob in one `PUT` (then
/// chunks may work).
fn refuses_monolithic(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::SpecViolationError(_) => true,
        OciDistributionError::ServerError { code, .. } => {
            matches!(code, 400 | 405 | 413 | 415 | 501)
        }
        _ => false,
    }
}
