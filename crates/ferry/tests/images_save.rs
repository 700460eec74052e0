//! `ferry save`: archives that `ferry load` and skopeo read back with the digests the image
//! had. Digests to compare with come from skopeo reading the fixture archive.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{busybox_root, ferry, fixture, ok, on_a_pty, output, sha256sum, tool_installed};

/// The busybox fixture's manifest, config and layer digests and its diff_id (`sha256:...`), as skopeo
/// reads the fixture archive.
struct Busybox {
    manifest: String,
    config: String,
    layer: String,
    diff_id: String,
}

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn busybox() -> Busybox {
    let archive = format!("oci-archive:{}", fixture("busybox.tar").display());
    let inspect = skopeo_json(&["inspect", &archive]);
    let raw = skopeo_json(&["inspect", "--raw", &archive]);
    let config = skopeo_json(&["inspect", "--config", &archive]);
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    Busybox {
        manifest: text(&inspect["Digest"]),
        config: text(&raw["config"]["digest"]),
        layer: text(&raw["layers"][0]["digest"]),
        diff_id: text(&config["rootfs"]["diff_ids"][0]),
    }
}

/// The manifest skopeo wrote into the OCI layout `dir` (its only index entry) and the layer
/// digests it names.
fn layout_manifest(dir: &Path) -> (String, Vec<String>) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = dir.join("blobs/sha256").join(&digest[7..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (digest, layers)
}

#[test]
fn save_then_load_into_a_fresh_root_keeps_the_image_digest() {
    if !tool_installed(
        "save_then_load_into_a_fresh_root_keeps_the_image_digest",
        "skopeo",
    ) {
        return;
    }
    let want = busybox();
    let root = busybox_root();
    let dir = tempfile::tempdir().unwrap();
    let name = "docker.io/library/busybox:latest".to_string();
    for format in ["docker", "oci"] {
        let archive = dir.path().join(format!("busybox-{format}.tar"));
        ok(ferry(root.path())
            .args(["save", "--format", format, "-o"])
            .arg(&archive)
            .arg("busybox"));
        let fresh = tempfile::tempdir().unwrap();
        let out = ok(ferry(fresh.path()).args(["load", "-i"]).arg(&archive));
        assert_eq!(out, format!("Loaded image: {name}\n"));
        assert_eq!(
            common::listed_images(ferry(fresh.path())),
            vec![(name.clone(), want.manifest.clone())]
        );
    }

    // Without -o the archive goes to stdout (a pipe here), and loads from stdin.
    let mut saved = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--root")
        .arg(root.path())
        .args(["save", "busybox:latest"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let loaded = ferry(fresh.path())
        .arg("load")
        .stdin(saved.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(saved.wait().unwrap().success());
    assert!(loaded.status.success(), "{loaded:?}");
    assert_eq!(
        common::listed_images(ferry(fresh.path())),
        vec![(name, want.manifest)]
    );
}

#[test]
fn skopeo_reads_the_saved_archive_as_docker_archive_and_oci_archive() {
    if !tool_installed(
        "skopeo_reads_the_saved_archive_as_docker_archive_and_oci_archive",
        "skopeo",
    ) {
        return;
    }
    let want = busybox();
    let root = busybox_root();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.tar");
    ok(ferry(root.path())
        .args(["save", "-o"])
        .arg(&archive)
        .arg("busybox"));

    // The OCI side: the manifest and the layer are the image's own.
    let oci = dir.path().join("from-oci");
    ok(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}", oci.display()),
    ]));
    let (manifest, layers) = layout_manifest(&oci);
    assert_eq!(manifest, want.manifest);
    assert_eq!(layers, vec![want.layer.clone()]);

    // The Docker side: skopeo names layers by their diff_ids and hands them out
    // uncompressed; its `dir:` copy holds each blob in a file named by its digest.
    let docker = dir.path().join("from-docker");
    ok(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("docker-archive:{}", archive.display()),
        &format!("dir:{}", docker.display()),
    ]));
    let layer = docker.join(&want.diff_id[7..]);
    assert_eq!(format!("sha256:{}", sha256sum(&layer)), want.diff_id);
    let config = docker.join(&want.config[7..]);
    assert_eq!(format!("sha256:{}", sha256sum(&config)), want.config);
}

#[test]
fn save_refusals_are_one_line() {
    let root = busybox_root();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("x.tar");
    let (code, _, err) = output(
        ferry(root.path())
            .args(["save", "--format", "zip", "-o"])
            .arg(&archive)
            .arg("busybox"),
    );
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "ferry: unknown archive format \"zip\": use docker or oci\n"
        )
    );
    let (code, _, err) = output(
        ferry(root.path())
            .args(["save", "-o"])
            .arg(&archive)
            .arg("nope"),
    );
    assert_eq!(
        (code, err.as_str()),
        (1, "ferry: image nope not found (see `ferry images`)\n")
    );
    assert!(
        !archive.exists(),
        "a failed save left {}",
        archive.display()
    );
}

#[test]
fn save_refuses_to_write_an_archive_to_a_terminal() {
    let root = busybox_root();
    let mut cmd = ferry(root.path());
    cmd.args(["save", "busybox"]);
    let (code, out) = on_a_pty(cmd);
    assert_eq!(
        (code, String::from_utf8_lossy(&out).as_ref()),
        (
            1,
            "ferry: refusing to write an archive to a terminal: use -o FILE or redirect stdout\r\n"
        )
    );
}
