//! What `ferry push ipfs://` writes, checked against nerdctl's format
//! (reference/nerdctl-ipfs.md section 1) and against CIDs computed by ipfs-unixfs-importer.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{busybox_pushed, ferry, fixture, js_cid, ok};
use serde_json::Value;

/// The blob a raw CID names (its multihash is the blob's sha256).
fn blob_of_raw_cid(root: &Path, cid: &str) -> Vec<u8> {
    let c: cid::Cid = cid.parse().unwrap();
    assert_eq!(c.codec(), 0x55, "{cid} is not a raw block");
    let hex: String = c
        .hash()
        .digest()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::read(root.join("blobs/sha256").join(hex)).unwrap()
}

fn ipfs_url(desc: &Value) -> String {
    let urls = desc["urls"]
        .as_array()
        .unwrap_or_else(|| panic!("no urls in {desc}"));
    assert_eq!(urls.len(), 1, "{desc}");
    urls[0]
        .as_str()
        .unwrap()
        .strip_prefix("ipfs://")
        .unwrap()
        .to_string()
}

#[test]
fn push_writes_nerdctl_format_with_urls_on_every_descriptor() {
    let a = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());

    // the image CID is the CID of the top descriptor's JSON, compact as Go writes it
    let top_bytes = blob_of_raw_cid(a.path(), &cid);
    let top: Value = serde_json::from_slice(&top_bytes).unwrap();
    let text = String::from_utf8(top_bytes.clone()).unwrap();
    assert!(
        text.starts_with("{\"mediaType\":") && !text.contains(['\n', ' ']),
        "{text}"
    );
    assert_eq!(
        top["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    // the archive's index.json annotation is kept, as containerd keeps it
    assert_eq!(
        top["annotations"]["org.opencontainers.image.ref.name"],
        "busybox:latest"
    );

    let manifest_bytes = blob_of_raw_cid(a.path(), &ipfs_url(&top));
    assert_eq!(manifest_bytes.len() as u64, top["size"].as_u64().unwrap());
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let config = &manifest["config"];
    assert_eq!(
        config["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config_cid: cid::Cid = ipfs_url(config).parse().unwrap();
    assert_eq!(config_cid.codec(), 0x55, "a small config is one raw block");

    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let layer = &layers[0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let digest = layer["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let blob: PathBuf = a.path().join("blobs/sha256").join(digest);
    if let Some(expected) = js_cid(&blob) {
        assert_eq!(
            ipfs_url(layer),
            expected,
            "layer CID differs from ipfs-unixfs-importer's"
        );
    }
}

#[test]
fn docker_schema2_image_from_a_registry_is_pushed_with_oci_types() {
    let Some(registry) = common::Registry::start() else {
        return;
    };
    let dest = format!("docker://{}/busybox:v2s2", registry.addr);
    let src = format!("oci:{}:latest", fixture("busybox").display());
    let status = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
            &src,
            &dest,
        ])
        .status()
        .expect("run skopeo");
    assert!(status.success());

    let a = tempfile::tempdir().unwrap();
    let name = format!("{}/busybox:v2s2", registry.addr);
    assert_eq!(ok(ferry(a.path()).args(["pull", "-q", &name])).trim(), name);
    let cid = ok(ferry(a.path()).args(["push", "-q", &format!("ipfs://{name}")]))
        .trim()
        .to_string();

    let top: Value = serde_json::from_slice(&blob_of_raw_cid(a.path(), &cid)).unwrap();
    assert_eq!(
        top["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(
        top.get("annotations").is_none(),
        "a registry pull's target has no annotations"
    );
    let manifest: Value =
        serde_json::from_slice(&blob_of_raw_cid(a.path(), &ipfs_url(&top))).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    // the same image loaded from the OCI archive gets the same layer and config CIDs
    let b = tempfile::tempdir().unwrap();
    ok(ferry(b.path())
        .args(["load", "-i"])
        .arg(fixture("busybox.tar")));
    let cid_b = ok(ferry(b.path()).args(["push", "-q", "ipfs://busybox"]))
        .trim()
        .to_string();
    let top_b: Value = serde_json::from_slice(&blob_of_raw_cid(b.path(), &cid_b)).unwrap();
    let manifest_b: Value =
        serde_json::from_slice(&blob_of_raw_cid(b.path(), &ipfs_url(&top_b))).unwrap();
    assert_eq!(
        manifest["layers"][0]["urls"],
        manifest_b["layers"][0]["urls"]
    );
    assert_eq!(manifest["config"]["urls"], manifest_b["config"]["urls"]);
}
