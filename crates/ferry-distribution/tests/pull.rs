//! `pull` against a real docker-registry, with skopeo pushing the images and reporting their
//! digests.

mod common;

use std::sync::Mutex;

use common::{have, sha256, store, Registry};
use ferry_content::Store;
use ferry_distribution::{pull, ErrorKind, PullEvent, PullOptions};
use ferry_oci::{media, Descriptor, Digest, Platform, Reference};

fn tools() -> bool {
    have(&["docker-registry", "skopeo", "umoci", "busybox"])
}

fn linux(arch: &str) -> Platform {
    let mut p = Platform::host();
    p.os = "linux".into();
    p.architecture = arch.into();
    p.variant = String::new();
    p
}

fn opts() -> PullOptions {
    PullOptions {
        platform: linux("amd64"),
        insecure_registries: Vec::new(),
        ..PullOptions::default()
    }
}

/// Pulls `name` and returns the result with the events reported.
async fn pull_events(
    store: &Store,
    name: &str,
    opts: &PullOptions,
) -> (
    Result<Descriptor, ferry_distribution::Error>,
    Vec<PullEvent>,
) {
    let events = Mutex::new(Vec::new());
    let reference: Reference = name.parse().unwrap();
    let result = pull(store, &reference, opts, &|e| events.lock().unwrap().push(e)).await;
    (result, events.into_inner().unwrap())
}

/// The config and layer descriptors of a manifest, as `(digest, size)`.
fn blobs_of(manifest: &[u8]) -> Vec<(String, u64)> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let config = &v["config"];
    let mut out = vec![(
        config["digest"].as_str().unwrap().to_string(),
        config["size"].as_u64().unwrap(),
    )];
    for l in v["layers"].as_array().unwrap() {
        out.push((
            l["digest"].as_str().unwrap().to_string(),
            l["size"].as_u64().unwrap(),
        ));
    }
    out
}

/// Every blob is in the store and hashes to its digest with its size.
fn assert_blobs_stored(store: &Store, blobs: &[(String, u64)]) {
    for (digest, size) in blobs {
        let bytes = store.read_blob(&digest.parse().unwrap()).unwrap();
        assert_eq!(&sha256(&bytes), digest);
        assert_eq!(bytes.len() as u64, *size, "{digest}");
    }
}

#[tokio::test]
async fn pull_stores_oci_image_under_the_digest_skopeo_reports() {
    if !tools() {
        return;
    }
    let registry = Registry::start();
    registry.push_busybox("busybox:latest", &[]);
    let raw = registry.raw_manifest("busybox:latest");
    let (_dir, store) = store();
    let name = format!("{}/busybox:latest", registry.addr);

    let (result, events) = pull_events(&store, &name, &opts()).await;
    let desc = result.unwrap();

    assert_eq!(desc.digest.to_string(), sha256(&raw));
    assert_eq!(
        desc,
        Descriptor::new(media::OCI_MANIFEST, desc.digest.clone(), raw.len() as u64)
    );
    assert_eq!(store.read_blob(&desc.digest).unwrap(), raw);
    assert_eq!(store.get_image(&name).unwrap().unwrap().target, desc);
    let blobs = blobs_of(&raw);
    assert_blobs_stored(&store, &blobs);

    assert_eq!(
        events[0],
        PullEvent::Resolved {
            digest: desc.digest.clone()
        }
    );
    let mut done: Vec<(String, u64, bool)> = events
        .iter()
        .filter_map(|e| match e {
            PullEvent::BlobDone {
                digest,
                size,
                cached,
            } => Some((digest.to_string(), *size, *cached)),
            _ => None,
        })
        .collect();
    done.sort();
    let mut want: Vec<_> = blobs.iter().map(|(d, s)| (d.clone(), *s, false)).collect();
    want.sort();
    assert_eq!(done, want);

    // A second pull downloads nothing and binds the same target.
    let (again, events) = pull_events(&store, &name, &opts()).await;
    assert_eq!(again.unwrap(), desc);
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, PullEvent::BlobStarted { .. })),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, PullEvent::BlobDone { cached: true, .. }))
            .count(),
        2
    );
}

#[tokio::test]
async fn pull_keeps_docker_schema2_manifest_bytes_as_served() {
    if !tools() {
        return;
    }
    let registry = Registry::start();
    registry.push_busybox("busybox:v2s2", &["--format", "v2s2"]);
    let raw = registry.raw_manifest("busybox:v2s2");
    let (_dir, store) = store();
    let name = format!("{}/busybox:v2s2", registry.addr);

    let (result, _) = pull_events(&store, &name, &opts()).await;
    let desc = result.unwrap();

    assert_eq!(desc.media_type, media::DOCKER_MANIFEST);
    assert_eq!(desc.digest.to_string(), sha256(&raw));
    assert_eq!(store.read_blob(&desc.digest).unwrap(), raw);
    assert_blobs_stored(&store, &blobs_of(&raw));
    assert_eq!(store.get_image(&name).unwrap().unwrap().target, desc);
}

#[tokio::test]
async fn pull_of_a_missing_tag_says_manifest_unknown_and_binds_nothing() {
    if !tools() {
        return;
    }
    let registry = Registry::start();
    let (_dir, store) = store();
    let name = format!("{}/nope:latest", registry.addr);

    let (result, events) = pull_events(&store, &name, &opts()).await;
    let err = result.unwrap_err();

    assert_eq!(err.to_string(), format!("pull {name}: manifest unknown"));
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(events.is_empty());
    assert!(store.list_images().unwrap().is_empty());
}

#[tokio::test]
async fn pull_without_a_registry_listening_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_dir, store) = store();
    let name = format!("127.0.0.1:{port}/busybox:latest");

    let (result, _) = pull_events(&store, &name, &opts()).await;
    let err = result.unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().starts_with(&format!("pull {name}: ")),
        "{err}"
    );
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("connection refused"),
        "{err}"
    );
}

#[tokio::test]
async fn pull_refuses_an_ipfs_reference() {
    let (_dir, store) = store();
    let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    let (result, _) = pull_events(&store, cid, &opts()).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(
        err.to_string(),
        format!("pull {cid}: not a registry reference (IPFS images are pulled over IPFS)")
    );
}

/// Adds to a copy of the busybox layout an index listing its manifest for arm64 and amd64,
/// tagged `multi`; returns the layout and the index bytes.
fn layout_with_index(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let layout = dir.join("multi");
    common::run(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(common::busybox_layout())
            .arg(&layout),
    );
    let index_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = &index_json["manifests"][0];
    let entry = |arch: &str| {
        serde_json::json!({
            "mediaType": media::OCI_MANIFEST, "digest": m["digest"], "size": m["size"],
            "platform": {"architecture": arch, "os": "linux"}
        })
    };
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX,
                                   "manifests": [entry("arm64"), entry("amd64")]});
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = Digest::of(&bytes);
    std::fs::write(layout.join("blobs/sha256").join(digest.hex()), &bytes).unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": media::OCI_INDEX, "digest": digest.to_string(), "size": bytes.len(),
         "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    (layout, bytes)
}

#[tokio::test]
async fn pull_of_an_index_takes_the_manifest_of_the_platform_asked_for() {
    if !tools() {
        return;
    }
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let (layout, index) = layout_with_index(tmp.path());
    let src = format!("oci:{}:multi", layout.display());
    let dest = format!("docker://{}/multi:latest", registry.addr);
    common::skopeo(&[
        "copy",
        "-q",
        "--all",
        "--dest-tls-verify=false",
        &src,
        &dest,
    ]);
    assert_eq!(registry.raw_manifest("multi:latest"), index);
    let (_dir, store) = store();
    let name = format!("{}/multi:latest", registry.addr);

    let (result, _) = pull_events(
        &store,
        &name,
        &PullOptions {
            platform: linux("riscv64"),
            ..opts()
        },
    )
    .await;
    let err = result.unwrap_err();
    let index_digest = sha256(&index);
    assert_eq!(
        err.to_string(),
        format!("pull {name}: index {index_digest} has no manifest for linux/riscv64")
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(store.list_images().unwrap().is_empty());

    let (result, _) = pull_events(&store, &name, &opts()).await;
    let desc = result.unwrap();
    assert_eq!(
        desc,
        Descriptor::new(
            media::OCI_INDEX,
            index_digest.parse().unwrap(),
            index.len() as u64
        )
    );
    assert_eq!(store.read_blob(&desc.digest).unwrap(), index);
    let manifest = std::fs::read(
        common::busybox_layout().join("blobs/sha256").join(
            serde_json::from_slice::<serde_json::Value>(&index).unwrap()["manifests"][1]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        ),
    )
    .unwrap();
    assert_eq!(store.read_blob(&Digest::of(&manifest)).unwrap(), manifest);
    assert_blobs_stored(&store, &blobs_of(&manifest));
}
