//! Image commands on one root: `rmi`, `image prune` and what the garbage collector leaves on
//! disk, `image inspect`, `images --digests --format json`. Digests to compare with come from
//! skopeo reading the fixture archive.

mod common;

use std::path::Path;
use std::process::Command;

use common::{blobs, busybox_root, ferry, fixture, ok, output, skip_unless_root, tool_installed};

/// The busybox fixture's manifest digest, config and layer digests (hex), as skopeo reads
/// the archive.
struct Busybox {
    manifest: String,
    config: String,
    layer: String,
    diff_id: String,
}

fn busybox() -> Busybox {
    let archive = format!("oci-archive:{}", fixture("busybox.tar").display());
    let skopeo = |args: &[&str]| -> serde_json::Value {
        let out = Command::new("skopeo")
            .args(args)
            .arg(&archive)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let inspect = skopeo(&["inspect"]);
    let raw = skopeo(&["inspect", "--raw"]);
    let config = skopeo(&["inspect", "--config"]);
    let hex = |v: &serde_json::Value| v.as_str().unwrap()[7..].to_string();
    Busybox {
        manifest: hex(&inspect["Digest"]),
        config: hex(&raw["config"]["digest"]),
        layer: hex(&raw["layers"][0]["digest"]),
        diff_id: hex(&config["rootfs"]["diff_ids"][0]),
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The record the container commands keep for a container made from `image_id` (issue 6's
/// `state.json`; only the fields the collector reads).
fn kept_container(root: &Path, id: &str, image_id: &str, lowers: &[&str]) {
    let dir = root.join("containers").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let lowers: Vec<_> = lowers
        .iter()
        .map(|c| serde_json::json!({"chain_id": c}))
        .collect();
    let state = serde_json::json!({"id": id, "image_id": image_id, "lowers": lowers});
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
}

#[test]
fn rmi_refuses_an_image_a_kept_container_uses_unless_forced() {
    if !tool_installed(
        "rmi_refuses_an_image_a_kept_container_uses_unless_forced",
        "skopeo",
    ) {
        return;
    }
    let want = busybox();
    let root = busybox_root();
    let id = "c0ffee".repeat(10) + "c0ff";
    kept_container(root.path(), &id, &format!("sha256:{}", want.manifest), &[]);

    let (code, stdout, stderr) = output(ferry(root.path()).args(["rmi", "busybox"]));
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "ferry: conflict: unable to remove repository reference \"busybox\" (must force) - \
             container c0ffeec0ffee is using its referenced image {}\n",
            &want.manifest[..12]
        )
    );
    assert_eq!(blobs(root.path()).len(), 3);
    // as docker's: the image ID (12 hex digits of the manifest digest), which rmi takes too
    assert_eq!(
        ok(ferry(root.path()).args(["images", "-q"])),
        format!("{}\n", &want.manifest[..12])
    );

    // forced, the name goes; the content stays while the container is there (as docker keeps
    // a forcibly removed image that a container uses)
    let stdout = ok(ferry(root.path()).args(["rmi", "-f", "busybox"]));
    assert_eq!(stdout, "Untagged: docker.io/library/busybox:latest\n");
    let all = sorted(vec![
        want.config.clone(),
        want.layer.clone(),
        want.manifest.clone(),
    ]);
    assert_eq!(blobs(root.path()), all);
    assert_eq!(ok(ferry(root.path()).args(["images", "-q"])), "");

    std::fs::remove_dir_all(root.path().join("containers").join(&id)).unwrap();
    let stdout = ok(ferry(root.path()).args(["image", "prune"]));
    let deleted: String = all
        .iter()
        .map(|d| format!("deleted: sha256:{d}\n"))
        .collect();
    assert!(
        stdout.starts_with(&format!("Deleted Images:\n{deleted}\n")),
        "{stdout}"
    );
    assert!(blobs(root.path()).is_empty());
}

#[test]
fn rmi_by_id_of_an_image_with_two_names_needs_force() {
    if !tool_installed("rmi_by_id_of_an_image_with_two_names_needs_force", "skopeo") {
        return;
    }
    let want = busybox();
    let root = busybox_root();
    ok(ferry(root.path()).args(["tag", "busybox", "127.0.0.1:5000/me/busybox:2"]));
    let short = &want.manifest[..12];

    let (code, _, stderr) = output(ferry(root.path()).args(["rmi", short]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "ferry: conflict: unable to delete {short} (must be forced) - image is referenced \
             in multiple repositories\n"
        )
    );
    // by name only that name goes, and the content stays for the other
    let stdout = ok(ferry(root.path()).args(["rmi", "127.0.0.1:5000/me/busybox:2"]));
    assert_eq!(stdout, "Untagged: 127.0.0.1:5000/me/busybox:2\n");
    assert_eq!(
        blobs(root.path()),
        sorted(vec![want.config, want.layer, want.manifest])
    );

    let (code, _, stderr) = output(ferry(root.path()).args(["rmi", "nope:1", "busybox"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "ferry: image nope:1 not found (see `ferry images`)\n"
    );
    assert!(blobs(root.path()).is_empty());
}

#[test]
fn prune_all_keeps_what_ipfs_pins_and_removes_the_rest() {
    if !tool_installed(
        "prune_all_keeps_what_ipfs_pins_and_removes_the_rest",
        "skopeo",
    ) {
        return;
    }
    let want = busybox();
    let root = busybox_root();
    let cid = ok(ferry(root.path()).args(["push", "-q", "ipfs://busybox"]));
    let cid = cid.trim();
    // the IPFS form of the image: its top descriptor and re-encoded manifest, as IPFS serves
    let top = ok(ferry(root.path()).args(["ipfs", "cat", cid]));
    let top: serde_json::Value = serde_json::from_str(&top).unwrap();
    let manifest_hex = top["digest"].as_str().unwrap()[7..].to_string();
    let top_hex = common::sha256sum(&{
        let path = root.path().join("top.json");
        std::fs::write(&path, ok(ferry(root.path()).args(["ipfs", "cat", cid]))).unwrap();
        path
    });
    let block_rows = |root: &Path| -> String {
        let out = Command::new("sqlite3")
            .arg(root.join("meta.db"))
            .arg("SELECT count(*) FROM blocks; SELECT count(*) FROM files;")
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let rows_before = block_rows(root.path());
    assert!(!rows_before.starts_with("0\n"), "{rows_before}");

    let stdout = ok(ferry(root.path()).args(["image", "prune", "-a", "-f"]));
    let manifest_size =
        std::fs::metadata(fixture("busybox").join("blobs/sha256").join(&want.manifest))
            .unwrap()
            .len();
    assert_eq!(
        stdout,
        format!(
            "Deleted Images:\nuntagged: docker.io/library/busybox:latest\ndeleted: sha256:{}\n\n\
             Total reclaimed space: {manifest_size}B\n",
            want.manifest,
        )
    );
    let kept = sorted(vec![want.config, want.layer, manifest_hex, top_hex]);
    assert_eq!(blobs(root.path()), kept);
    // the CID index of the pinned image is untouched, and the image still reads from IPFS
    assert_eq!(block_rows(root.path()), rows_before);
    ok(ferry(root.path()).args(["ipfs", "cat", cid]));
    let stdout = ok(ferry(root.path()).args(["image", "prune"]));
    assert_eq!(stdout, "Total reclaimed space: 0B\n");
}

#[test]
fn collected_images_take_their_snapshots_along_but_not_a_kept_containers() {
    if skip_unless_root("collected_images_take_their_snapshots_along_but_not_a_kept_containers") {
        return;
    }
    let root = busybox_root();
    ok(ferry(root.path()).args(["run", "--rm", "busybox", "true"]));
    let committed = root.path().join("snapshots/committed");
    let snapshots = || -> Vec<String> {
        let names = std::fs::read_dir(&committed).unwrap();
        sorted(
            names
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
        )
    };
    let chain = snapshots();
    assert_eq!(chain.len(), 1, "busybox has one layer");

    // a kept container that stacks the snapshot keeps it, though no image is left
    let chain_id = format!("sha256:{}", chain[0]);
    kept_container(
        root.path(),
        &"ab".repeat(32),
        "sha256:".to_string().as_str(),
        &[&chain_id],
    );
    ok(ferry(root.path()).args(["rmi", "busybox"]));
    assert_eq!(snapshots(), chain);
    assert!(blobs(root.path()).is_empty());

    std::fs::remove_dir_all(root.path().join("containers").join("ab".repeat(32))).unwrap();
    let stdout = ok(ferry(root.path()).args(["image", "prune"]));
    assert_eq!(
        stdout,
        format!("Deleted Images:\ndeleted snapshot: {chain_id}\n\nTotal reclaimed space: 0B\n")
    );
    assert!(snapshots().is_empty());
}

#[test]
fn image_inspect_and_images_json_show_the_digests_skopeo_reads() {
    if !tool_installed(
        "image_inspect_and_images_json_show_the_digests_skopeo_reads",
        "skopeo",
    ) {
        return;
    }
    let want = busybox();
    let root = busybox_root();
    let out = ok(ferry(root.path()).args(["image", "inspect", "busybox"]));
    let inspect: serde_json::Value = serde_json::from_str(&out).unwrap();
    let image = &inspect[0];
    assert_eq!(image["Id"], format!("sha256:{}", want.manifest));
    assert_eq!(
        image["RepoTags"],
        serde_json::json!(["docker.io/library/busybox:latest"])
    );
    assert_eq!(
        image["RepoDigests"],
        serde_json::json!([format!(
            "docker.io/library/busybox@sha256:{}",
            want.manifest
        )])
    );
    assert_eq!(
        image["Manifest"]["config"]["digest"],
        format!("sha256:{}", want.config)
    );
    assert_eq!(
        image["Manifest"]["layers"][0]["digest"],
        format!("sha256:{}", want.layer)
    );
    assert_eq!(
        image["RootFS"]["Layers"],
        serde_json::json!([format!("sha256:{}", want.diff_id)])
    );
    assert_eq!(
        image["Descriptor"]["digest"],
        format!("sha256:{}", want.manifest)
    );

    let out = ok(ferry(root.path()).args(["images", "--digests", "--format", "json"]));
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["Repository"], "docker.io/library/busybox");
    assert_eq!(line["Tag"], "latest");
    assert_eq!(line["Digest"], format!("sha256:{}", want.manifest));
    assert_eq!(line["ID"], want.manifest[..12]);
    let table = ok(ferry(root.path()).args(["images", "--digests"]));
    assert!(table.starts_with("REPOSITORY "), "{table}");
    assert!(
        table.contains(&format!("sha256:{}", want.manifest)),
        "{table}"
    );

    let (code, _, stderr) = output(ferry(root.path()).args(["image", "inspect", "nope"]));
    assert_eq!(code, 1);
    assert_eq!(stderr, "ferry: image nope not found (see `ferry images`)\n");
}

#[test]
fn load_refuses_an_empty_or_broken_archive_with_one_line() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    std::fs::write(
        layout.join("index.json"),
        r#"{"schemaVersion":2,"manifests":[]}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let (code, stdout, stderr) = output(ferry(root.path()).args(["load", "-i"]).arg(&layout));
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert_eq!(
        stderr,
        format!(
            "ferry: load {}: the archive holds no image\n",
            layout.display()
        )
    );

    // a broken archive on stdin is named as stdin, not as ferry's scratch copy of it
    let mut cmd = ferry(root.path());
    cmd.arg("load")
        .stdin(std::fs::File::open(work.path().join("layout/index.json")).unwrap());
    let (code, _, stderr) = output(&mut cmd);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("ferry: load stdin: not a tar archive"),
        "{stderr}"
    );
    assert_eq!(ok(ferry(root.path()).args(["images", "-q"])), "");
}
