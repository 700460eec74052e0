//! `ferry tag` and `ferry push` to a real docker-registry, with skopeo as the second client:
//! what ferry pushes, skopeo reads back with the same digests, and what skopeo pushes, ferry
//! pulls with the same digests.

mod common;

use common::{
    blobs, busybox_pushed, ferry, fixture, ok, output, sha256sum, skopeo, tool_installed, Registry,
};

fn tools(test: &str) -> bool {
    tool_installed(test, "skopeo") && tool_installed(test, "docker-registry")
}

/// The `(digest, size)` of the config and each layer of a manifest.
fn blobs_of(manifest: &[u8]) -> Vec<(String, u64)> {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    std::iter::once(&m["config"])
        .chain(m["layers"].as_array().unwrap())
        .map(|d| {
            (
                d["digest"].as_str().unwrap().into(),
                d["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn sha256_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    std::fs::write(&file, bytes).unwrap();
    format!("sha256:{}", sha256sum(&file))
}

/// The busybox fixture's manifest, as skopeo reads it from the archive.
fn busybox_manifest() -> Vec<u8> {
    let archive = format!("oci-archive:{}", fixture("busybox.tar").display());
    skopeo(&["inspect", "--raw", &archive])
}

/// skopeo copies `reference` into a `dir:` and checks every file against its digest: the
/// manifest against `manifest` and each blob against its name and size.
fn skopeo_copy_checks(reference: &str, manifest: &str, want: &[(String, u64)]) {
    let out = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", out.path().join("d").display());
    skopeo(&["copy", "-q", "--src-tls-verify=false", reference, &dest]);
    let dir = out.path().join("d");
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();
    assert_eq!(sha256sum(&dir.join("manifest.json")), hex(manifest));
    for (digest, size) in want {
        let file = dir.join(hex(digest));
        assert_eq!(
            sha256sum(&file),
            hex(digest),
            "{digest} as skopeo copied it"
        );
        assert_eq!(std::fs::metadata(&file).unwrap().len(), *size, "{digest}");
    }
}

#[test]
fn an_ipfs_image_tagged_and_pushed_reads_back_in_skopeo_with_its_layers() {
    let test = "an_ipfs_image_tagged_and_pushed_reads_back_in_skopeo_with_its_layers";
    if !tools(test) {
        return;
    }
    let registry = Registry::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(root.path());
    let name = format!("{}/me/busybox:ipfs", registry.addr);

    ok(ferry(root.path()).args(["tag", &format!("ipfs://{cid}"), &name]));
    let (code, stdout, stderr) = output(ferry(root.path()).args(["push", &name]));
    assert_eq!(code, 0, "{stderr}");

    let source = format!("docker://{name}");
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &source]);
    let digest = sha256_of(&raw);
    assert_eq!(
        stdout,
        format!("ipfs: digest: {digest} size: {}\n", raw.len())
    );
    // the config and layer are the fixture's own, byte for byte; the ipfs:// urls are gone
    let want = blobs_of(&busybox_manifest());
    assert_eq!(blobs_of(&raw), want);
    assert!(!String::from_utf8_lossy(&raw).contains("ipfs://"));
    for (blob, _) in &want {
        assert!(
            stderr.contains(&format!("{}: Pushed", &blob[..19])),
            "{stderr}"
        );
    }
    skopeo_copy_checks(&source, &digest, &want);

    // pushed again: the registry has every blob, none is sent, the digest is the same
    let (code, again, stderr) = output(ferry(root.path()).args(["push", &name]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(again, stdout);
    assert!(!stderr.contains("Pushing"), "{stderr}");
    assert_eq!(
        stderr.matches("Layer already exists").count(),
        2,
        "{stderr}"
    );
}

#[test]
fn a_loaded_image_pushes_with_its_manifest_digest_unchanged() {
    if !tools("a_loaded_image_pushes_with_its_manifest_digest_unchanged") {
        return;
    }
    let registry = Registry::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    ok(ferry(root.path())
        .args(["load", "-i"])
        .arg(fixture("busybox.tar")));
    let name = format!("{}/library/busybox:1", registry.addr);
    // by image ID, as docker tags
    let fixture_manifest = busybox_manifest();
    let digest = sha256_of(&fixture_manifest);
    ok(ferry(root.path()).args(["tag", &digest[7..19], &name]));

    let stdout = ok(ferry(root.path()).args(["push", "-q", &name]));
    assert_eq!(stdout, format!("{name}\n"));
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]);
    assert!(
        raw == fixture_manifest,
        "the registry holds other manifest bytes"
    );
    skopeo_copy_checks(&format!("docker://{name}"), &digest, &blobs_of(&raw));
}

#[test]
fn blobs_of_another_repository_are_mounted_not_uploaded() {
    if !tools("blobs_of_another_repository_are_mounted_not_uploaded") {
        return;
    }
    let registry = Registry::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    ok(ferry(root.path())
        .args(["load", "-i"])
        .arg(fixture("busybox.tar")));
    let first = format!("{}/one/busybox:1", registry.addr);
    let second = format!("{}/two/busybox:1", registry.addr);
    ok(ferry(root.path()).args(["tag", "busybox", &first]));
    ok(ferry(root.path()).args(["push", &first]));
    ok(ferry(root.path()).args(["tag", "busybox", &second]));

    let (code, _, stderr) = output(ferry(root.path()).args(["push", &second]));

    assert_eq!(code, 0, "{stderr}");
    let raw = busybox_manifest();
    let mounted: Vec<String> = blobs_of(&raw)
        .iter()
        .map(|(digest, _)| format!("{}: Mounted from another repository", &digest[..19]))
        .collect();
    for line in &mounted {
        assert!(
            stderr.lines().any(|l| l == line),
            "no {line:?} in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("Pushing"),
        "a blob was uploaded:\n{stderr}"
    );
    let digest = sha256_of(&raw);
    skopeo_copy_checks(&format!("docker://{second}"), &digest, &blobs_of(&raw));
}

#[test]
fn ferry_pulls_what_skopeo_pushed_with_the_same_digests() {
    if !tools("ferry_pulls_what_skopeo_pushed_with_the_same_digests") {
        return;
    }
    let registry = Registry::start().unwrap();
    let name = format!("{}/sk/busybox:1", registry.addr);
    let archive = format!("oci-archive:{}", fixture("busybox.tar").display());
    skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &archive,
        &format!("docker://{name}"),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]);

    let root = tempfile::tempdir().unwrap();
    let stdout = ok(ferry(root.path()).args(["pull", "-q", &name]));
    assert_eq!(stdout, format!("{name}\n"));
    let mut want: Vec<String> = blobs_of(&raw)
        .into_iter()
        .map(|(d, _)| d[7..].to_string())
        .collect();
    want.push(sha256_of(&raw)[7..].to_string());
    want.sort();
    assert_eq!(blobs(root.path()), want);
    for hex in &want {
        assert_eq!(&sha256sum(&root.path().join("blobs/sha256").join(hex)), hex);
    }
}

#[test]
fn push_failures_are_one_line_and_leave_the_name_alone() {
    let root = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(ferry(root.path()).args(["push", "127.0.0.1:1/me/nothing:1"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "ferry: push 127.0.0.1:1/me/nothing:1: no local image of that name (name one with \
         `ferry tag`)\n"
    );

    // a registry that is not there
    ok(ferry(root.path())
        .args(["load", "-i"])
        .arg(fixture("busybox.tar")));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = format!("127.0.0.1:{port}/me/busybox:1");
    ok(ferry(root.path()).args(["tag", "busybox", &name]));
    let (code, _, stderr) = output(ferry(root.path()).args(["push", &name]));
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("ferry: push {name}: blob sha256:")),
        "{stderr}"
    );
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert_eq!(
        common::image_names(root.path()),
        [name.clone(), "docker.io/library/busybox:latest".into()]
    );
}
