//! The read-only OCI Distribution endpoint over IPFS images: `/v2/ipfs/<CID>/…`, so that
//! Docker, containerd, BuildKit, buildah, skopeo and Kubernetes pull an image CID as
//! `localhost:5050/ipfs/<CID>` (reference/formats.md 3; the path scheme of nerdctl's
//! `ipfs registry serve`, nerdctl-ipfs.md 3).
//!
//! Served, for GET and HEAD alike (HEAD sends the same status and headers, no body):
//! `/v2/`; `/v2/ipfs/<CID>/manifests/latest` (the manifest or index the image CID points at)
//! and `/manifests/<digest>`; `/v2/ipfs/<CID>/blobs/<digest>` with one byte range (206, 416;
//! several ranges get 400); `/v2/ipfs/<CID>/tags/list`. Every answer carries
//! `Docker-Distribution-API-Version: registry/2.0`; content answers carry `Content-Type`,
//! `Content-Length` and `Docker-Content-Digest`; refusals carry OCI error JSON. Everything
//! else is 404 or 405 with `UNSUPPORTED`.
//!
//! The image's digest → CID map is resolved once per image ([`images`]). Blobs in the store
//! are served from their files; others stream from IPFS in file order as their blocks arrive
//! while the whole blob is fetched into the store ([`ferry_ipfs::BlobDownload`]), so a second
//! pull is local. Concurrent requests are bounded: past the bound the answer is 429
//! `TOOMANYREQUESTS` with `Retry-After`.

mod blobs;
mod error;
mod images;
mod kubo;
mod route;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_content::Store;
use ferry_ipfs::{BlobDownload, BlockSource, ReadOptions};
use ferry_oci::{media, Digest};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use blobs::Ranged;
use error::ApiError;
use images::{Entry, Images};
use route::{ManifestRef, Route};

pub use kubo::KuboSource;

/// Where the endpoint reads images: the content store, and a source of the blocks that are not
/// in it (the embedded node's Bitswap, or a kubo daemon).
#[derive(Clone)]
pub struct Backend {
    store: Arc<Store>,
    source: Arc<dyn BlockSource>,
}

impl Backend {
    /// A backend over `store` that fetches missing blocks from `source`.
    pub fn new(store: Arc<Store>, source: Arc<dyn BlockSource>) -> Backend {
        Backend { store, source }
    }
}

/// The endpoint's settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long to wait for one block (per attempt) and how often to retry it: nerdctl's
    /// `--read-timeout` and `--read-retry-num`.
    pub read: ReadOptions,
    /// Requests handled at once (a response body counts until it is sent); past it, 429.
    pub max_requests: usize,
    /// Blobs fetched into the store at once; past it, reads stream without storing.
    pub max_downloads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            read: ReadOptions::default(),
            max_requests: 128,
            max_downloads: 16,
        }
    }
}

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) source: Arc<dyn BlockSource>,
    pub(crate) read: ReadOptions,
    pub(crate) max_downloads: usize,
    pub(crate) downloads: Mutex<HashMap<Digest, Arc<BlobDownload>>>,
    images: Images,
    permits: Arc<Semaphore>,
}

/// The endpoint as an axum router, to serve alone ([`serve`]) or beside other routes.
pub fn router(backend: Backend, config: ServerConfig) -> axum::Router {
    let shared = Arc::new(Shared {
        store: backend.store,
        source: backend.source,
        read: config.read,
        max_downloads: config.max_downloads.max(1),
        downloads: Mutex::default(),
        images: Images::default(),
        permits: Arc::new(Semaphore::new(config.max_requests.max(1))),
    });
    axum::Router::new().fallback(handle).with_state(shared)
}

/// Serves the endpoint on `listener` (plain HTTP/1.1) until `shutdown` completes, then lets
/// the requests in progress finish. Cancel-safe only in that dropping it drops every
/// connection.
pub async fn serve(
    listener: tokio::net::TcpListener,
    backend: Backend,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(backend, config);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The containerd `hosts.toml` (formats.md 3.6) that makes containerd reach the endpoint at
/// `addr` (`host:port`) over plain HTTP, with the directory it belongs in as a comment.
pub fn hosts_toml(addr: &str) -> String {
    format!(
        "# containerd hosts.toml for ferry's registry endpoint: save it as\n\
         # <hosts dir>/{addr}/hosts.toml (/etc/containerd/certs.d by default; ctr --hosts-dir)\n\
         server = \"http://{addr}\"\n\
         \n\
         [host.\"http://{addr}\"]\n\
         \x20 capabilities = [\"pull\", \"resolve\"]\n\
         \x20 skip_verify = true\n"
    )
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = match answer(&shared, &method, &path, request.headers()).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(%method, %path, status = %e.status, code = e.code, "refused");
            e.into_response()
        }
    };
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

async fn answer(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::method(method.as_str()));
    }
    let route = route::parse(path)?;
    let permit = shared
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::too_many())?;
    match route {
        Route::Root => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()),
        Route::Tags(cid) => {
            shared.images.get(shared, cid).await?;
            let body = serde_json::json!({ "name": format!("ipfs/{cid}"), "tags": ["latest"] });
            Ok((
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response())
        }
        Route::Manifest(cid, reference) => manifest(shared, cid, reference).await,
        Route::Blob(cid, digest) => {
            let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
            blob(shared, cid, &digest, range, method == Method::HEAD, permit).await
        }
    }
}

async fn manifest(
    shared: &Arc<Shared>,
    cid: cid::Cid,
    reference: ManifestRef,
) -> Result<Response, ApiError> {
    let image = shared.images.get(shared, cid).await?;
    let entry = match &reference {
        ManifestRef::Tag(tag) if tag == "latest" => &image.target,
        ManifestRef::Tag(tag) => {
            return Err(ApiError::manifest_unknown(&format!(
                "tag {tag} (an IPFS image has only the tag latest)"
            )))
        }
        ManifestRef::Digest(digest) => image
            .blobs
            .get(digest)
            .filter(|e| is_manifest(&e.desc.media_type))
            .ok_or_else(|| ApiError::manifest_unknown(&digest.to_string()))?,
    };
    let bytes = images::read_json_blob(shared, entry).await?;
    let mut response = bytes.into_response();
    content_headers(response.headers_mut(), entry, &entry.desc.media_type);
    Ok(response)
}

async fn blob(
    shared: &Arc<Shared>,
    cid: cid::Cid,
    digest: &Digest,
    range: Option<&str>,
    head: bool,
    permit: OwnedSemaphorePermit,
) -> Result<Response, ApiError> {
    let image = shared.images.get(shared, cid).await?;
    let entry = image
        .blobs
        .get(digest)
        .ok_or_else(|| ApiError::blob_unknown(&digest.to_string()))?;
    let size = entry.desc.size;
    let media_type = if is_manifest(&entry.desc.media_type)
        || entry.desc.media_type == media::OCI_CONFIG
        || entry.desc.media_type == media::DOCKER_CONFIG
    {
        entry.desc.media_type.as_str()
    } else {
        "application/octet-stream"
    };

    blobs::check_size(shared, entry).await?;
    let (status, span) = match blobs::parse_range(range, size) {
        Ranged::Full => (StatusCode::OK, 0..size),
        Ranged::Part(span) => (StatusCode::PARTIAL_CONTENT, span),
        Ranged::Multiple => return Err(ApiError::multi_range()),
        Ranged::Unsatisfiable => return Ok(unsatisfiable(entry)),
    };
    let body = if head {
        Body::empty()
    } else {
        blobs::body(shared, entry, span.clone(), permit).await?
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    content_headers(headers, entry, media_type);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(span.end - span.start),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {}-{}/{size}", span.start, span.end - 1);
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// 416 with the size, as RFC 9110 15.5.17 asks.
fn unsatisfiable(entry: &Entry) -> Response {
    let size = entry.desc.size;
    let mut response = ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "UNSUPPORTED",
        format!("range outside blob {} of {size} bytes", entry.desc.digest),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

fn content_headers(headers: &mut HeaderMap, entry: &Entry, media_type: &str) {
    if let Ok(value) = HeaderValue::from_str(media_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.desc.size));
    if let Ok(value) = HeaderValue::from_str(&entry.desc.digest.to_string()) {
        headers.insert("docker-content-digest", value);
    }
}

fn is_manifest(media_type: &str) -> bool {
    media::is_index(media_type) || media::is_manifest(media_type)
}
