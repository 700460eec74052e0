//! The registry endpoint (`ferry ipfs registry serve`) answering skopeo and plain HTTP: what
//! it serves equals what `ferry push` put into IPFS, whether the blocks are here or on another
//! node, and bad requests get the OCI error the spec names.

mod common;

use std::path::Path;

use common::{busybox_pushed, ferry, http, ok, sha256sum, tool_installed, Daemon, RegistryServe};

/// The pushed image as IPFS holds it, read with `ferry ipfs cat` (not through the endpoint):
/// the manifest's digest, and the config and layer digests and sizes it lists.
struct Pushed {
    manifest: String,
    blobs: Vec<(String, u64)>,
}

fn pushed(root: &Path, cid: &str) -> Pushed {
    let top: serde_json::Value =
        serde_json::from_str(&ok(ferry(root).args(["ipfs", "cat", cid]))).unwrap();
    let url = top["urls"][0]
        .as_str()
        .unwrap()
        .strip_prefix("ipfs://")
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&ok(ferry(root).args(["ipfs", "cat", url]))).unwrap();
    let mut blobs = vec![descriptor(&manifest["config"])];
    blobs.extend(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(descriptor),
    );
    Pushed {
        manifest: top["digest"].as_str().unwrap().to_string(),
        blobs,
    }
}

fn descriptor(d: &serde_json::Value) -> (String, u64) {
    (
        d["digest"].as_str().unwrap().to_string(),
        d["size"].as_u64().unwrap(),
    )
}

/// `skopeo copy docker://ADDR/ipfs/CID:latest` into `oci:DIR` and into `dir:DIR`, then checks
/// both against the pushed image: the same manifest digest, and every blob with the right size
/// and hash. (containers/image does not copy layers whose descriptors carry `urls` into an OCI
/// layout, which accepts such "foreign" layers by reference; `dir:` copies every blob.)
fn skopeo_copy_matches(addr: &str, cid: &str, want: &Pushed) {
    let out = tempfile::tempdir().unwrap();
    let source = format!("docker://{addr}/ipfs/{cid}:latest");
    let layout = out.path().join("oci");
    let copy = |dest: String| {
        ok(std::process::Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            &source,
            &dest,
        ]))
    };
    copy(format!("oci:{}:latest", layout.display()));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"].as_str().unwrap(),
        want.manifest
    );
    let manifest_hex = want.manifest.strip_prefix("sha256:").unwrap();
    assert_eq!(
        sha256sum(&layout.join("blobs/sha256").join(manifest_hex)),
        manifest_hex
    );

    let dir = out.path().join("dir");
    copy(format!("dir:{}", dir.display()));
    assert_eq!(sha256sum(&dir.join("manifest.json")), manifest_hex);
    for (digest, size) in &want.blobs {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let file = dir.join(hex);
        assert_eq!(sha256sum(&file), hex, "blob {digest} copied by skopeo");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), *size);
    }
}

#[test]
fn skopeo_copies_a_local_image_through_the_endpoint() {
    if !tool_installed("skopeo_copies_a_local_image_through_the_endpoint", "skopeo") {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    let want = pushed(a.path(), &cid);
    let endpoint = RegistryServe::start(a.path(), &[]);
    skopeo_copy_matches(&endpoint.addr, &cid, &want);

    // ferry itself pulls the endpoint's name as a registry reference, not as the bare CID
    let c = tempfile::tempdir().unwrap();
    let name = format!("{}/ipfs/{cid}:latest", endpoint.addr);
    assert_eq!(ok(ferry(c.path()).args(["pull", "-q", &name])).trim(), name);
    let digests = ok(ferry(c.path()).args(["images", "--digests", "--format", "json"]));
    let listed: serde_json::Value = serde_json::from_str(digests.trim()).unwrap();
    assert_eq!(listed["Digest"], want.manifest.as_str(), "{digests}");
}

#[test]
fn skopeo_copies_an_image_whose_blocks_are_on_another_node() {
    if !tool_installed(
        "skopeo_copies_an_image_whose_blocks_are_on_another_node",
        "skopeo",
    ) {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    let want = pushed(a.path(), &cid);
    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let endpoint = RegistryServe::start(b.path(), &["--peer", &daemon.addr]);
    skopeo_copy_matches(&endpoint.addr, &cid, &want);

    // the layers B streamed were also completed into B's store, so B now holds them
    for (digest, _) in &want.blobs {
        let hex = digest.strip_prefix("sha256:").unwrap();
        assert!(
            b.path().join("blobs/sha256").join(hex).exists(),
            "{digest} not stored on B after the copy"
        );
    }
}

/// The status and OCI error code of an answer.
fn refusal(addr: &str, method: &str, path: &str) -> (u16, String) {
    let answer = http(addr, method, path, &[]);
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "{path}"
    );
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    let code = body["errors"][0]["code"].as_str().unwrap().to_string();
    (answer.status, code)
}

#[test]
fn endpoint_refuses_bad_requests_with_oci_errors() {
    let a = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    let want = pushed(a.path(), &cid);
    // a UnixFS file that is not an image: the busybox layer itself
    let layer_url = {
        let top: serde_json::Value =
            serde_json::from_str(&ok(ferry(a.path()).args(["ipfs", "cat", &cid]))).unwrap();
        let url = top["urls"][0]
            .as_str()
            .unwrap()
            .strip_prefix("ipfs://")
            .unwrap()
            .to_string();
        let m: serde_json::Value =
            serde_json::from_str(&ok(ferry(a.path()).args(["ipfs", "cat", &url]))).unwrap();
        m["layers"][0]["urls"][0]
            .as_str()
            .unwrap()
            .strip_prefix("ipfs://")
            .unwrap()
            .to_string()
    };
    let endpoint = RegistryServe::start(a.path(), &["--read-timeout", "2s"]);
    let addr = endpoint.addr.as_str();
    let unknown = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    let zero = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(String, &str, u16, &str)> = vec![
        (
            format!("/v2/ipfs/{unknown}/manifests/latest"),
            "GET",
            404,
            "NAME_UNKNOWN",
        ),
        (
            format!("/v2/ipfs/{layer_url}/manifests/latest"),
            "GET",
            404,
            "NAME_UNKNOWN",
        ),
        (
            format!("/v2/ipfs/{cid}/manifests/v1"),
            "GET",
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/ipfs/{cid}/manifests/{zero}"),
            "GET",
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/ipfs/{cid}/manifests/{}", want.blobs[1].0),
            "GET",
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/ipfs/{cid}/blobs/{zero}"),
            "GET",
            404,
            "BLOB_UNKNOWN",
        ),
        (
            format!("/v2/ipfs/{cid}/blobs/sha256:123"),
            "GET",
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/ipfs/{cid}/blobs/sha256:{}", "A".repeat(64)),
            "GET",
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/ipfs/../../{cid}/manifests/latest"),
            "GET",
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/ipfs/%2e%2e/manifests/latest".into(),
            "GET",
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/ipfs/notacid/manifests/latest".into(),
            "GET",
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/library/busybox/manifests/latest".into(),
            "GET",
            404,
            "NAME_UNKNOWN",
        ),
        (
            format!("/v2/ipfs/{cid}/manifests/latest"),
            "PUT",
            405,
            "UNSUPPORTED",
        ),
        (
            format!("/v2/ipfs/{cid}/blobs/uploads/"),
            "POST",
            405,
            "UNSUPPORTED",
        ),
        ("/v2/_catalog".into(), "GET", 404, "UNSUPPORTED"),
    ];
    for (path, method, status, code) in cases {
        assert_eq!(
            refusal(addr, method, &path),
            (status, code.to_string()),
            "{method} {path}"
        );
    }
    // a 405 names the methods that work
    let put = http(
        addr,
        "PUT",
        &format!("/v2/ipfs/{cid}/manifests/latest"),
        &[],
    );
    assert_eq!((put.status, put.header("allow")), (405, Some("GET, HEAD")));
    // every answer, refusals too, says which API it speaks
    let answer = http(addr, "GET", "/v2/", &[]);
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[test]
fn a_kubo_backend_that_does_not_answer_is_503_not_an_unknown_name() {
    let root = tempfile::tempdir().unwrap();
    // a port nothing listens on: the kubo API is down
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let api = format!("/ip4/127.0.0.1/tcp/{port}");
    let endpoint = RegistryServe::start(
        root.path(),
        &["--ipfs-address", &api, "--read-timeout", "2s"],
    );
    let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    let path = format!("/v2/ipfs/{cid}/manifests/latest");
    assert_eq!(
        refusal(&endpoint.addr, "GET", &path),
        (503, "UNKNOWN".to_string())
    );
}

#[test]
fn head_answers_as_get_without_a_body() {
    let a = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    let want = pushed(a.path(), &cid);
    let endpoint = RegistryServe::start(a.path(), &[]);
    let mut paths = vec![format!("/v2/ipfs/{cid}/manifests/latest")];
    paths.push(format!("/v2/ipfs/{cid}/manifests/{}", want.manifest));
    paths.extend(
        want.blobs
            .iter()
            .map(|(d, _)| format!("/v2/ipfs/{cid}/blobs/{d}")),
    );
    for path in paths {
        let get = http(&endpoint.addr, "GET", &path, &[]);
        let head = http(&endpoint.addr, "HEAD", &path, &[]);
        assert_eq!(get.status, 200, "{path}");
        assert_eq!(head.status, 200, "{path}");
        assert!(head.body.is_empty(), "HEAD {path} sent a body");
        for name in ["content-type", "content-length", "docker-content-digest"] {
            assert_eq!(head.header(name), get.header(name), "{name} of {path}");
        }
        assert_eq!(
            get.header("content-length").unwrap(),
            get.body.len().to_string()
        );
        let digest = get.header("docker-content-digest").unwrap();
        assert_eq!(digest, format!("sha256:{}", sha256_of(&get.body)));
    }
    // a manifest by tag and by digest is the same document, with its own media type
    let by_tag = http(
        &endpoint.addr,
        "GET",
        &format!("/v2/ipfs/{cid}/manifests/latest"),
        &[],
    );
    assert_eq!(
        by_tag.header("docker-content-digest"),
        Some(want.manifest.as_str())
    );
    assert_eq!(
        by_tag.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
}

fn sha256_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    std::fs::write(&file, bytes).unwrap();
    sha256sum(&file)
}

#[test]
fn blob_ranges_answer_206_and_416() {
    let a = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    let want = pushed(a.path(), &cid);
    let (layer, size) = want.blobs[1].clone();
    let stored = std::fs::read(
        a.path()
            .join("blobs/sha256")
            .join(layer.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    let endpoint = RegistryServe::start(a.path(), &[]);
    let path = format!("/v2/ipfs/{cid}/blobs/{layer}");
    let get = |range: &str| http(&endpoint.addr, "GET", &path, &[("Range", range)]);

    let part = get("bytes=300000-300099");
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range").unwrap(),
        format!("bytes 300000-300099/{size}")
    );
    assert!(
        part.body == stored[300000..300100],
        "the body differs from the stored bytes"
    );

    let tail = get("bytes=-10");
    assert_eq!(tail.status, 206);
    assert!(
        tail.body == stored[stored.len() - 10..],
        "the body differs from the stored bytes"
    );

    let open = get(&format!("bytes={}-", size - 5));
    assert!(
        open.body == stored[stored.len() - 5..],
        "the body differs from the stored bytes"
    );

    for past in [
        format!("bytes={size}-"),
        "bytes=99999999999999999999999-".to_string(),
    ] {
        let answer = get(&past);
        assert_eq!(answer.status, 416, "{past}");
        assert_eq!(
            answer.header("content-range").unwrap(),
            format!("bytes */{size}")
        );
    }
    let huge_end = get("bytes=0-99999999999999999999999");
    assert_eq!(huge_end.status, 206);
    assert!(
        huge_end.body == stored,
        "the body differs from the stored bytes"
    );

    let multi = get("bytes=0-1,10-11");
    assert_eq!(multi.status, 400);
}

#[test]
fn range_read_of_a_layer_not_yet_here_streams_only_its_blocks() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    let want = pushed(a.path(), &cid);
    let (layer, size) = want.blobs[1].clone();
    let hex = layer.strip_prefix("sha256:").unwrap().to_string();
    let stored = std::fs::read(a.path().join("blobs/sha256").join(&hex)).unwrap();
    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let endpoint = RegistryServe::start(b.path(), &["--peer", &daemon.addr]);
    let path = format!("/v2/ipfs/{cid}/blobs/{layer}");

    // the third 256 KiB chunk and a bit of the fourth, from A's blocks
    let part = http(
        &endpoint.addr,
        "GET",
        &path,
        &[("Range", "bytes=600000-800000")],
    );
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range").unwrap(),
        format!("bytes 600000-800000/{size}")
    );
    assert!(
        part.body == stored[600000..800001],
        "the body differs from the stored bytes"
    );
    // a range read is lazy: the blob is not fetched whole
    assert!(!b.path().join("blobs/sha256").join(&hex).exists());

    // a whole read streams it and completes it in B's store
    let whole = http(&endpoint.addr, "GET", &path, &[]);
    assert_eq!(whole.status, 200);
    assert!(
        whole.body == stored,
        "the body differs from the stored bytes"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.path().join("blobs/sha256").join(&hex).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{layer} not committed on B"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(sha256sum(&b.path().join("blobs/sha256").join(&hex)), hex);
}

#[test]
fn the_daemon_serves_the_registry_endpoint_from_its_store() {
    let a = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    let cid = cid.as_str();
    let daemon = common::Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let registry = daemon
        .registry
        .as_deref()
        .expect("the daemon printed no registry address");

    let answer = common::http(
        registry,
        "GET",
        &format!("/v2/ipfs/{cid}/manifests/latest"),
        &[],
    );
    assert_eq!(answer.status, 200);
    let digest = answer.header("docker-content-digest").unwrap().to_string();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let stored = std::fs::read(a.path().join("blobs/sha256").join(hex)).unwrap();
    assert!(
        answer.body == stored,
        "the body differs from the stored bytes"
    );
    assert_eq!(
        answer.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
}

/// Adds `bytes` as a file to `root` and returns its CID.
fn add_bytes(root: &Path, name: &str, bytes: &[u8]) -> String {
    let path = root.join(name);
    std::fs::write(&path, bytes).unwrap();
    ok(ferry(root).args(["ipfs", "add", "-q"]).arg(&path))
        .trim()
        .to_string()
}

#[test]
fn descriptors_that_lie_about_sizes_get_502_not_a_broken_body() {
    let a = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    let top_json = ok(ferry(a.path()).args(["ipfs", "cat", &cid]));
    let top: serde_json::Value = serde_json::from_str(&top_json).unwrap();

    // a top descriptor that states 5 bytes for the real manifest
    let mut short = top.clone();
    short["size"] = 5.into();
    let short_cid = add_bytes(a.path(), "short.json", short.to_string().as_bytes());
    // a manifest that states 10 bytes for the real layer, and a descriptor of it
    let manifest_cid = top["urls"][0]
        .as_str()
        .unwrap()
        .strip_prefix("ipfs://")
        .unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&ok(ferry(a.path()).args(["ipfs", "cat", manifest_cid]))).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    manifest["layers"][0]["size"] = 10.into();
    let bytes = manifest.to_string();
    let lying_manifest = add_bytes(a.path(), "manifest.json", bytes.as_bytes());
    let digest = format!("sha256:{}", sha256sum(&a.path().join("manifest.json")));
    let lying_top = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest, "size": bytes.len(), "urls": [format!("ipfs://{lying_manifest}")],
    });
    let lying_cid = add_bytes(a.path(), "top.json", lying_top.to_string().as_bytes());

    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let registry = daemon.registry.as_deref().unwrap();
    let answer = http(
        registry,
        "GET",
        &format!("/v2/ipfs/{short_cid}/manifests/latest"),
        &[],
    );
    assert_eq!(
        answer.status,
        502,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let answer = http(
        registry,
        "GET",
        &format!("/v2/ipfs/{lying_cid}/blobs/{layer}"),
        &[],
    );
    assert_eq!(
        answer.status,
        502,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["errors"][0]["code"], "SIZE_INVALID");
    // the daemon is still there and serves the honest image
    let answer = http(
        registry,
        "GET",
        &format!("/v2/ipfs/{cid}/manifests/latest"),
        &[],
    );
    assert_eq!(answer.status, 200);
}
