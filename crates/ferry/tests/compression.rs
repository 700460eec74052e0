//! Layer compression: images whose layer is zstd or an uncompressed tar pull and run, and
//! `ferry push --compression zstd|gzip` recompresses layers (new digests, same diff_ids) for a
//! registry and for IPFS. The compressed blobs are checked with the `zstd` and `gzip` programs
//! and skopeo, the run with the line the container prints.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{ferry, fixture, ok, sha256sum, skip_unless_root, skopeo, tool_installed, Registry};

fn tools(test: &str) -> bool {
    ["skopeo", "docker-registry", "zstd", "gzip"]
        .iter()
        .all(|t| tool_installed(test, t))
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// `sha256:` + the sha256 of what `PROGRAM -dc FILE` writes (the layer uncompressed by a
/// program other than ferry).
fn uncompressed_digest(program: &str, file: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    let status = Command::new(program)
        .arg("-dc")
        .arg(file)
        .stdout(std::fs::File::create(&plain).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{program} -dc {}", file.display());
    format!("sha256:{}", sha256sum(&plain))
}

/// The busybox fixture's config digest and diff_id.
fn busybox_config() -> (String, String) {
    let layout = fixture("busybox");
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    let blob = |d: &str| layout.join("blobs/sha256").join(&d[7..]);
    let manifest =
        json(&std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap());
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let config = json(&std::fs::read(blob(&config_digest)).unwrap());
    let diff_id = config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    (config_digest, diff_id)
}

/// A copy of the busybox fixture layout whose layer is `how`: `plain` (the tar, by `gzip -dc`)
/// or `zstd` (that tar compressed by the `zstd` program). Returns the layout and the layer's
/// digest.
fn busybox_with_layer(dir: &Path, how: &str) -> (PathBuf, String) {
    let layout = dir.join(how);
    let status = Command::new("cp")
        .arg("-r")
        .arg(fixture("busybox"))
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());
    let blobs = layout.join("blobs/sha256");
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest = json(&std::fs::read(blobs.join(&manifest_digest[7..])).unwrap());
    let gz = blobs.join(&manifest["layers"][0]["digest"].as_str().unwrap()[7..]);

    let tar = dir.join(format!("{how}.tar"));
    let status = Command::new("gzip")
        .arg("-dc")
        .arg(&gz)
        .stdout(std::fs::File::create(&tar).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let (layer, media_type) = match how {
        "plain" => (tar, "application/vnd.oci.image.layer.v1.tar"),
        _ => {
            let out = dir.join(format!("{how}.tar.zst"));
            let status = Command::new("zstd")
                .args(["-q", "-o"])
                .arg(&out)
                .arg(&tar)
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            (out, "application/vnd.oci.image.layer.v1.tar+zstd")
        }
    };
    let digest = format!("sha256:{}", sha256sum(&layer));
    let size = std::fs::metadata(&layer).unwrap().len();
    std::fs::copy(&layer, blobs.join(&digest[7..])).unwrap();
    manifest["layers"][0] =
        serde_json::json!({"mediaType": media_type, "digest": digest, "size": size});
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let file = dir.join("manifest");
    std::fs::write(&file, &bytes).unwrap();
    let new_manifest = format!("sha256:{}", sha256sum(&file));
    std::fs::write(blobs.join(&new_manifest[7..]), &bytes).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": new_manifest,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    (layout, digest)
}

#[test]
fn zstd_and_uncompressed_layers_pull_and_run() {
    let test = "zstd_and_uncompressed_layers_pull_and_run";
    if !tools(test) {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let (_, diff_id) = busybox_config();
    let dir = tempfile::tempdir().unwrap();
    for how in ["zstd", "plain"] {
        let (layout, layer) = busybox_with_layer(dir.path(), how);
        if how == "plain" {
            assert_eq!(layer, diff_id);
        }
        let name = format!("{}/busybox:{how}", registry.addr);
        skopeo(&[
            "copy",
            "-q",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:latest", layout.display()),
            &format!("docker://{name}"),
        ]);
        let root = tempfile::tempdir().unwrap();
        ok(ferry(root.path()).args(["pull", "-q", &name]));
        assert!(root.path().join("blobs/sha256").join(&layer[7..]).exists());
        if skip_unless_root(test) {
            continue;
        }
        let out = ok(ferry(root.path()).args(["run", "--rm", &name]));
        assert_eq!(out, "hello from busybox\n", "{how} layer");
    }
}

#[test]
fn push_compression_converts_layers_for_registry_and_ipfs() {
    let test = "push_compression_converts_layers_for_registry_and_ipfs";
    if !tools(test) {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let (config, diff_id) = busybox_config();
    let root = tempfile::tempdir().unwrap();
    ok(ferry(root.path())
        .args(["load", "-i"])
        .arg(fixture("busybox.tar")));

    let zstd_name = format!("{}/busybox:zstd", registry.addr);
    ok(ferry(root.path()).args(["tag", "busybox", &zstd_name]));
    ok(ferry(root.path()).args(["push", "-q", "--compression", "zstd", &zstd_name]));
    // skopeo copies it out of the registry; the layer is zstd and unpacks to the diff_id.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("zstd");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{zstd_name}"),
        &format!("dir:{}", copy.display()),
    ]);
    let manifest = json(&std::fs::read(copy.join("manifest.json")).unwrap());
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest["config"]["digest"], config.as_str());
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let zstd_layer = layer["digest"].as_str().unwrap().to_string();
    let file = copy.join(&zstd_layer[7..]);
    assert_eq!(format!("sha256:{}", sha256sum(&file)), zstd_layer);
    assert_eq!(uncompressed_digest("zstd", &file), diff_id);
    // The local image is left as it was.
    let local = json(ok(ferry(root.path()).args(["image", "inspect", &zstd_name])).as_bytes());
    assert_ne!(
        local[0]["Manifest"]["layers"][0]["digest"],
        zstd_layer.as_str()
    );

    // ferry pulls the zstd image into a fresh root and runs it; pushed again with gzip, the
    // layer is gzip and unpacks to the same diff_id.
    let fresh = tempfile::tempdir().unwrap();
    ok(ferry(fresh.path()).args(["pull", "-q", &zstd_name]));
    if !skip_unless_root(test) {
        let out = ok(ferry(fresh.path()).args(["run", "--rm", &zstd_name]));
        assert_eq!(out, "hello from busybox\n");
    }
    let gzip_name = format!("{}/busybox:gzip", registry.addr);
    ok(ferry(fresh.path()).args(["tag", &zstd_name, &gzip_name]));
    ok(ferry(fresh.path()).args(["push", "-q", "--compression", "gzip", &gzip_name]));
    let copy = dir.path().join("gzip");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{gzip_name}"),
        &format!("dir:{}", copy.display()),
    ]);
    let manifest = json(&std::fs::read(copy.join("manifest.json")).unwrap());
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let file = copy.join(&layer["digest"].as_str().unwrap()[7..]);
    assert_eq!(uncompressed_digest("gzip", &file), diff_id);

    // A layer already gzip stays as it is with --compression gzip: the image is unchanged.
    let same_name = format!("{}/busybox:same", registry.addr);
    ok(ferry(root.path()).args(["tag", "busybox", &same_name]));
    let out = ok(ferry(root.path()).args(["push", "--compression", "gzip", &same_name]));
    let original = json(ok(ferry(root.path()).args(["image", "inspect", "busybox"])).as_bytes());
    let digest = original[0]["Id"].as_str().unwrap();
    assert!(
        out.starts_with(&format!("same: digest: {digest} ")),
        "{out}"
    );

    // IPFS: the manifest in IPFS names the zstd layer (the same blob as in the registry).
    let cid =
        ok(ferry(root.path()).args(["push", "-q", "--compression", "zstd", "ipfs://busybox"]));
    let cat = |cid: &str| json(ok(ferry(root.path()).args(["ipfs", "cat", cid])).as_bytes());
    let url = |d: &serde_json::Value| d["urls"][0].as_str().unwrap()[7..].to_string();
    let top = cat(cid.trim());
    let manifest = cat(&url(&top));
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(manifest["layers"][0]["digest"], zstd_layer.as_str());
    assert_eq!(manifest["config"]["digest"], config.as_str());
}
