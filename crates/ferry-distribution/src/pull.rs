//! Pulling an image from a registry (OCI Distribution spec, pull category) into the store.

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;

use ferry_content::Store;
use ferry_oci::{media, Descriptor, Digest, Index, Manifest, Platform, Reference};
use futures::{StreamExt, TryStreamExt};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use tracing::Instrument;

use crate::connect::{unreachable_fail, Connection};
use crate::error::{Error, ErrorKind, Fail};
use crate::json;
use crate::Auth;

/// The manifest types a pull asks for (the Accept header). Schema 1 is not among them, so a
/// registry that can convert sends schema 2 instead.
const ACCEPT: [&str; 4] = [
    media::OCI_INDEX,
    media::OCI_MANIFEST,
    media::DOCKER_MANIFEST_LIST,
    media::DOCKER_MANIFEST,
];

/// How many blobs of one image download at once.
const CONCURRENT_BLOBS: usize = 3;

/// How to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The platform to select from an index (default: [`Platform::host`]).
    pub platform: Platform,
    /// Pull every manifest of an index (and their configs and layers), not only `platform`'s.
    pub all_platforms: bool,
    /// Registries (host or host:port) to reach over plain HTTP. `localhost`, `127.0.0.0/8` and
    /// `::1` are always plain HTTP, as Docker treats them as insecure registries.
    pub insecure_registries: Vec<String>,
    /// The credentials to present.
    pub auth: Auth,
    /// CA certificates (PEM) to trust for this registry besides the system's roots.
    pub ca_certs: Vec<Vec<u8>>,
    /// Leave out eStargz layers (those with the TOC digest annotation): a lazy run reads them
    /// by range instead ([`BlobRanges`]).
    pub leave_out_estargz: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            all_platforms: false,
            insecure_registries: Vec::new(),
            auth: Auth::Anonymous,
            ca_certs: Vec::new(),
            leave_out_estargz: false,
        }
    }
}

/// The layer annotation that marks an eStargz layer (the digest of its TOC).
const ESTARGZ_TOC_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";

/// Byte ranges of the blobs of one registry repository (HTTP Range requests), for lazy
/// pulling: only the bytes asked for are fetched.
pub struct BlobRanges {
    client: Client,
    image: oci_client::Reference,
    name: String,
}

impl BlobRanges {
    /// Connects to the repository of `reference` as a pull would (same trust and credentials).
    pub async fn open(reference: &Reference, opts: &PullOptions) -> Result<BlobRanges, Error> {
        let name = reference.image_name();
        let open = async {
            let (domain, image) = registry_reference(reference)?;
            let connection =
                Connection::open(&domain, &opts.insecure_registries, &opts.ca_certs).await?;
            let client = connection.client(false)?;
            client
                .auth(
                    &image,
                    &opts.auth.to_registry_auth(),
                    oci_client::RegistryOperation::Pull,
                )
                .await
                .map_err(registry_fail)?;
            Ok::<_, Fail>(BlobRanges {
                client,
                image,
                name: name.clone(),
            })
        };
        open.await.map_err(|f| f.into_pull(&name))
    }

    /// The bytes `range` of blob `digest`: all of them, or an error.
    pub async fn read(
        &self,
        digest: &Digest,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, Error> {
        let what = format!("blob {digest} bytes {}..{}", range.start, range.end);
        let read = async {
            let want = range.end.saturating_sub(range.start);
            if want == 0 {
                return Ok(Vec::new());
            }
            let digest_text = digest.to_string();
            let response = self
                .client
                .pull_blob_stream_partial(
                    &self.image,
                    digest_text.as_str(),
                    range.start,
                    Some(want),
                )
                .await
                .map_err(|e| registry_fail(e).context(&what))?;
            let (mut stream, skip) = match response {
                oci_client::client::BlobResponse::Partial(stream) => (stream, 0),
                // a registry that ignores Range sends the whole blob
                oci_client::client::BlobResponse::Full(stream) => (stream, range.start),
            };
            let mut out = Vec::with_capacity(want as usize);
            let mut seen = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk
                    .map_err(|e| Fail::new(ErrorKind::Unavailable, chain(&e)))
                    .map_err(|f| f.context(&what))?;
                let start = skip.saturating_sub(seen).min(chunk.len() as u64) as usize;
                seen += chunk.len() as u64;
                out.extend_from_slice(&chunk[start..]);
                if out.len() as u64 >= want {
                    out.truncate(want as usize);
                    return Ok(out);
                }
            }
            Err(Fail::invalid(format!(
                "{what}: the registry sent {} bytes",
                out.len()
            )))
        };
        read.await.map_err(|f| f.into_pull(&self.name))
    }
}

/// What a pull reports as it goes, for a progress line per blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullEvent {
    /// The reference resolved to this manifest or index.
    Resolved {
        /// The digest of the top manifest or index.
        digest: Digest,
    },
    /// A blob (a platform's manifest, a config or a layer) started downloading.
    BlobStarted {
        /// The blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
    /// Bytes of a blob arrived.
    BlobProgress {
        /// The blob.
        digest: Digest,
        /// Bytes of it received so far.
        received: u64,
    },
    /// A blob is in the store.
    BlobDone {
        /// The blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
        /// Whether the store had it already (nothing was downloaded).
        cached: bool,
    },
}

/// Pulls `reference` (a [`Reference::Registry`]) into the store and returns the descriptor the
/// image name (`reference.image_name()`) is now bound to.
///
/// Fetches the manifest (or the index and the manifest matching `opts.platform`, or every
/// manifest of the index with `opts.all_platforms`), the config and every layer, each verified
/// against its digest and size while it is written; blobs the store already has are skipped. Manifests and indexes are stored as the exact bytes served.
/// The bound descriptor is `{mediaType, digest, size}` of the top manifest or index, with the
/// media type from its `mediaType` field (or its shape, for OCI documents without one).
///
/// Credentials are `opts.auth`. Safe to cancel: dropping the future deletes the partial blob
/// being written and binds nothing; blobs already committed stay in the store.
pub async fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<Descriptor, Error> {
    let name = reference.image_name();
    let span = tracing::info_span!("pull", reference = %name);
    pull_image(store, reference, opts, progress)
        .instrument(span)
        .await
        .map_err(|f| f.into_pull(&name))
}

async fn pull_image(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<Descriptor, Fail> {
    let (domain, image) = registry_reference(reference)?;
    let connection = Connection::open(&domain, &opts.insecure_registries, &opts.ca_certs).await?;
    let client = connection.client(false)?;
    let puller = Puller {
        client,
        auth: opts.auth.to_registry_auth(),
        image,
        store,
        progress,
        leave_out_estargz: opts.leave_out_estargz,
    };

    let bytes = puller.manifest(&puller.image).await?;
    let top = Descriptor::new(
        &json::media_type_of(&bytes, "manifest")?,
        Digest::of(&bytes),
        bytes.len() as u64,
    );
    tracing::debug!(digest = %top.digest, media_type = %top.media_type, "resolved");
    progress(PullEvent::Resolved {
        digest: top.digest.clone(),
    });

    if media::is_index(&top.media_type) {
        let index: Index = json::decode(&bytes, &format!("index {}", top.digest))?;
        if opts.all_platforms {
            for entry in &index.manifests {
                puller.platform_manifest(entry).await?;
            }
        } else {
            let entry = select_manifest(&index, &opts.platform, &top.digest)?;
            puller.platform_manifest(entry).await?;
        }
    } else if media::is_manifest(&top.media_type) {
        puller.blobs_of(&bytes, &top.digest).await?;
    } else {
        let why = format!(
            "manifest {} has unknown media type {}",
            top.digest, top.media_type
        );
        return Err(Fail::new(ErrorKind::Unsupported, why));
    }

    store
        .write_blob(&bytes, Some(&top.digest))
        .map_err(|e| Fail::store(&top.digest, e))?;
    store
        .put_image(&reference.image_name(), &top)
        .map_err(Fail::store_other)?;
    Ok(top)
}

/// The registry host and the oci-client reference of a registry reference.
pub(crate) fn registry_reference(
    reference: &Reference,
) -> Result<(String, oci_client::Reference), Fail> {
    let Reference::Registry {
        domain,
        repository,
        tag,
        digest,
    } = reference
    else {
        let why = "not a registry reference (IPFS images are pulled over IPFS)";
        return Err(Fail::new(ErrorKind::Unsupported, why));
    };
    let (d, r) = (domain.clone(), repository.clone());
    // A digest wins over a tag, as in `docker pull name:tag@digest`.
    let image = match (tag, digest) {
        (_, Some(digest)) => oci_client::Reference::with_digest(d, r, digest.to_string()),
        (Some(tag), None) => oci_client::Reference::with_tag(d, r, tag.clone()),
        (None, None) => oci_client::Reference::with_tag(d, r, "latest".to_string()),
    };
    Ok((domain.clone(), image))
}

/// Whether a registry's host is `localhost`, in `127.0.0.0/8` or `::1` (Docker's always-insecure
/// registries).
pub(crate) fn is_loopback(domain: &str) -> bool {
    let host = match domain.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None if domain.matches(':').count() > 1 => domain,
        None => domain.split(':').next().unwrap_or(domain),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The first index entry for `platform` (index order is the publisher's preference).
fn select_manifest<'i>(
    index: &'i Index,
    platform: &Platform,
    digest: &Digest,
) -> Result<&'i Descriptor, Fail> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(platform)))
        .ok_or_else(|| {
            Fail::new(
                ErrorKind::NotFound,
                format!("index {digest} has no manifest for {platform}"),
            )
        })
}

/// One pull's client, image and store.
struct Puller<'a> {
    client: Client,
    auth: RegistryAuth,
    image: oci_client::Reference,
    store: &'a Store,
    progress: &'a (dyn Fn(PullEvent) + Send + Sync),
    leave_out_estargz: bool,
}

impl Puller<'_> {
    /// Fetches a manifest or index as served, checking its size before decoding anything.
    async fn manifest(&self, image: &oci_client::Reference) -> Result<Vec<u8>, Fail> {
        // oci-client checks the body against the digest asked for and Docker-Content-Digest.
        // TODO: cap the body while it arrives; oci-client reads it whole before we see it.
        let (bytes, _) = self
            .client
            .pull_manifest_raw(image, &self.auth, &ACCEPT)
            .await
            .map_err(registry_fail)?;
        json::check_size(bytes.len() as u64, "manifest")?;
        Ok(bytes.to_vec())
    }

    /// Pulls the manifest an index entry points at, then its blobs, then stores it.
    async fn platform_manifest(&self, entry: &Descriptor) -> Result<(), Fail> {
        let (digest, size) = (&entry.digest, entry.size);
        let what = format!("manifest {digest}");
        let cached = self.store.has_blob(digest);
        let bytes = if cached {
            self.store
                .read_blob(digest)
                .map_err(|e| Fail::store(digest, e))?
        } else {
            (self.progress)(PullEvent::BlobStarted {
                digest: digest.clone(),
                size,
            });
            let child = self.image.clone_with_digest(digest.to_string());
            let bytes = self.manifest(&child).await.map_err(|f| f.context(&what))?;
            if bytes.len() as u64 != size {
                let why = format!("{what}: {} bytes served, {size} expected", bytes.len());
                return Err(Fail::invalid(why));
            }
            bytes
        };

        let media_type = json::media_type_of(&bytes, &what)?;
        if !media::is_manifest(&media_type) {
            let why = format!("{what}: nested {media_type} in an index");
            return Err(Fail::new(ErrorKind::Unsupported, why));
        }
        self.blobs_of(&bytes, digest).await?;
        self.store
            .write_blob(&bytes, Some(digest))
            .map_err(|e| Fail::store(digest, e))?;
        (self.progress)(PullEvent::BlobDone {
            digest: digest.clone(),
            size,
            cached,
        });
        Ok(())
    }

    /// Pulls the config and layers of a manifest, a few at a time.
    async fn blobs_of(&self, manifest: &[u8], digest: &Digest) -> Result<(), Fail> {
        let m: Manifest = json::decode(manifest, &format!("manifest {digest}"))?;
        let mut seen = HashSet::new();
        let blobs: Vec<Descriptor> = std::iter::once(m.config)
            .chain(m.layers)
            .filter(|d| seen.insert(d.digest.clone()))
            .filter(|d| {
                !(self.leave_out_estargz && d.annotations.contains_key(ESTARGZ_TOC_ANNOTATION))
            })
            .collect();
        // TODO: fetch non-distributable layers from their urls when the registry lacks them.
        // Collected first: a stream holding the mapping closure would not be `Send` (the
        // closure's lifetime is not general enough for the compiler).
        let downloads: Vec<_> = blobs.iter().map(|d| self.blob(d)).collect();
        futures::stream::iter(downloads)
            .buffer_unordered(CONCURRENT_BLOBS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Streams one blob into an ingest file, then verifies and commits it.
    async fn blob(&self, d: &Descriptor) -> Result<(), Fail> {
        let (digest, size) = (&d.digest, d.size);
        if self.store.has_blob(digest) {
            (self.progress)(PullEvent::BlobDone {
                digest: digest.clone(),
                size,
                cached: true,
            });
            return Ok(());
        }
        (self.progress)(PullEvent::BlobStarted {
            digest: digest.clone(),
            size,
        });
        let what = format!("blob {digest}");
        let digest_text = digest.to_string();
        let mut stream = self
            .client
            .pull_blob_stream(&self.image, digest_text.as_str())
            .await
            .map_err(|e| registry_fail(e).context(&what))?;
        let mut ingest = self.store.ingest().map_err(|e| Fail::store(digest, e))?;
        let mut written = 0u64;

        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| Fail::new(ErrorKind::Unavailable, chain(&e)))
                .map_err(|f| f.context(&what))?;
            written += chunk.len() as u64;
            // The descriptor bounds what a registry can make us write.
            if written > size {
                return Err(Fail::invalid(format!(
                    "{what}: more than the {size} bytes expected"
                )));
            }
            // Writes land in the page cache; a blocking call this short is cheaper than a
            // thread hop per chunk.
            ingest
                .write_all(&chunk)
                .map_err(|e| Fail::io(ingest.path(), e).context(&what))?;
            (self.progress)(PullEvent::BlobProgress {
                digest: digest.clone(),
                received: written,
            });
        }

        ingest
            .commit(Some((digest, size)))
            .map_err(|e| Fail::store(digest, e))?;
        (self.progress)(PullEvent::BlobDone {
            digest: digest.clone(),
            size,
            cached: false,
        });
        Ok(())
    }
}

/// Maps an oci-client error to a kind and a short reason (the registry's own message when it
/// sent one, such as `manifest unknown`).
pub(crate) fn registry_fail(e: OciDistributionError) -> Fail {
    use OciDistributionError as E;
    match e {
        E::RegistryError { envelope, .. } => match envelope.errors.first() {
            Some(first) if !first.message.is_empty() => {
                Fail::new(code_kind(&first.code), &first.message)
            }
            Some(first) => Fail::new(code_kind(&first.code), format!("{:?}", first.code)),
            None => Fail::invalid("registry error with no details"),
        },
        E::UnauthorizedError { .. } => Fail::new(
            ErrorKind::Unauthorized,
            "unauthorized: authentication required (see `ferry login`)",
        ),
        E::AuthenticationFailure(why) => Fail::new(
            ErrorKind::Unauthorized,
            format!("authentication failed: {why}"),
        ),
        E::ServerError { code, message, .. } => {
            let mut message = message;
            message.truncate(200);
            Fail::new(
                status_kind(code),
                format!("registry answered {code}: {message}"),
            )
        }
        E::UnsupportedMediaTypeError(_) | E::UnsupportedSchemaVersionError(_) => {
            Fail::new(ErrorKind::Unsupported, chain(&e))
        }
        E::DigestError(_)
        | E::SpecViolationError(_)
        | E::ManifestParsingError(_)
        | E::VersionedParsingError(_) => Fail::invalid(chain(&e)),
        other => unreachable_fail(&other),
    }
}

fn code_kind(code: &OciErrorCode) -> ErrorKind {
    match code {
        OciErrorCode::ManifestUnknown
        | OciErrorCode::BlobUnknown
        | OciErrorCode::NameUnknown
        | OciErrorCode::NotFound
        | OciErrorCode::ManifestBlobUnknown => ErrorKind::NotFound,
        OciErrorCode::Unauthorized | OciErrorCode::Denied => ErrorKind::Unauthorized,
        OciErrorCode::Unsupported => ErrorKind::Unsupported,
        OciErrorCode::Toomanyrequests => ErrorKind::Unavailable,
        _ => ErrorKind::InvalidInput,
    }
}

fn status_kind(code: u16) -> ErrorKind {
    match code {
        404 => ErrorKind::NotFound,
        401 | 403 => ErrorKind::Unauthorized,
        400..=499 => ErrorKind::InvalidInput,
        _ => ErrorKind::Unavailable,
    }
}

/// An error and its causes on one line (reqwest keeps the useful part, such as "connection
/// refused", in the causes).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "docker.io",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.example:80",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn index_selection_takes_the_first_matching_platform() {
        let digest = Digest::of(b"index");
        let entry = |arch: &str, body: &[u8]| {
            let mut d = Descriptor::new(media::OCI_MANIFEST, Digest::of(body), 1);
            let mut p = Platform::host();
            p.os = "linux".into();
            p.architecture = arch.into();
            d.platform = Some(p);
            d
        };
        let index = Index {
            schema_version: 2,
            media_type: media::OCI_INDEX.into(),
            artifact_type: String::new(),
            manifests: vec![
                entry("arm64", b"a"),
                entry("amd64", b"b"),
                entry("amd64", b"c"),
            ],
            subject: None,
            annotations: Default::default(),
        };
        let mut want = Platform::host();
        want.os = "linux".into();
        want.architecture = "amd64".into();
        assert_eq!(
            select_manifest(&index, &want, &digest).unwrap().digest,
            Digest::of(b"b")
        );
        want.architecture = "riscv64".into();
        let e = select_manifest(&index, &want, &digest).unwrap_err();
        assert_eq!(
            e.why,
            format!("index {digest} has no manifest for linux/riscv64")
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
    }

    #[test]
    fn pull_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reference: Reference = "127.0.0.1:1/a:b".parse().unwrap();
        assert_send(pull(&store, &reference, &PullOptions::default(), &|_| {}));
    }
}
