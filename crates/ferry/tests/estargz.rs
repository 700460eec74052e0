//! eStargz images (`ferry image convert --estargz`, `ferry push --estargz`): they run with the
//! normal snapshotter, docker-registry, skopeo and containerd take them, and layers that
//! stargz-snapshotter's own converter (ctr-remote) made are kept byte for byte. Layers are
//! checked with `gzip -dc` (diff_id) and the TOC reader, runs with the line the container
//! prints.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{
    busybox_root, ferry, ok, output, peers_dir, sha256sum, skip_unless_root, skopeo,
    tool_installed, Containerd, Registry,
};
use ferry_estargz::{read_toc, verify_layer, Toc};
use ferry_oci::Digest;

const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
const UNCOMPRESSED: &str = "io.containers.estargz.uncompressed-size";

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

/// `ferry image inspect IMAGE` → (manifest, config).
fn inspect(root: &Path, image: &str) -> (serde_json::Value, serde_json::Value) {
    let v = json(&ok(ferry(root).args(["image", "inspect", image])));
    (v[0]["Manifest"].clone(), v[0]["ImageConfig"].clone())
}

fn blob(root: &Path, digest: &str) -> std::path::PathBuf {
    root.join("blobs/sha256").join(&digest[7..])
}

/// The TOC of a stored eStargz layer, read and verified chunk by chunk against `toc_digest`.
fn verified_toc(file: &Path, toc_digest: &str) -> Toc {
    let want: Digest = toc_digest.parse().unwrap();
    let size = std::fs::metadata(file).unwrap().len();
    let mut f = std::fs::File::open(file).unwrap();
    let read = read_toc(&mut f, size, Some(&want)).unwrap();
    verify_layer(&mut f, size, &want).unwrap();
    read.toc
}

/// `sha256:` of what `gzip -dc FILE` writes, and its size.
fn gunzipped(file: &Path) -> (String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    let status = Command::new("gzip")
        .arg("-dc")
        .arg(file)
        .stdout(std::fs::File::create(&plain).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "gzip -dc {}", file.display());
    let size = std::fs::metadata(&plain).unwrap().len();
    (format!("sha256:{}", sha256sum(&plain)), size)
}

/// Converts busybox in `root` to `busybox:esgz`; checks the layer's annotations, diff_id and
/// TOC; returns the layer's digest and TOC.
fn convert_busybox(root: &Path) -> (String, Toc) {
    let (code, stdout, stderr) = output(ferry(root).args([
        "image",
        "convert",
        "--estargz",
        "--oci",
        "busybox",
        "busybox:esgz",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (manifest, config) = inspect(root, "busybox:esgz");
    assert_eq!(
        stdout.trim().len(),
        71,
        "prints the new image's digest: {stdout}"
    );
    let layer = &manifest["layers"][0];
    let digest = layer["digest"].as_str().unwrap().to_string();
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert!(stderr.contains(&format!("to eStargz {digest}")), "{stderr}");

    let file = blob(root, &digest);
    assert_eq!(format!("sha256:{}", sha256sum(&file)), digest);
    let (plain, size) = gunzipped(&file);
    assert_eq!(config["rootfs"]["diff_ids"][0], plain.as_str());
    assert_eq!(
        layer["annotations"][UNCOMPRESSED],
        size.to_string().as_str()
    );
    let toc = verified_toc(&file, layer["annotations"][TOC_DIGEST].as_str().unwrap());
    assert_eq!(toc.entries[0].name, ".no.prefetch.landmark");
    assert!(toc
        .entries
        .iter()
        .any(|e| e.name.trim_start_matches("./") == "bin/busybox"));
    (digest, toc)
}

#[test]
fn estargz_image_runs_with_the_normal_snapshotter() {
    let test = "estargz_image_runs_with_the_normal_snapshotter";
    if skip_unless_root(test) || !tool_installed(test, "gzip") {
        return;
    }
    let root = busybox_root();
    let (layer, _) = convert_busybox(root.path());

    let run = |args: &[&str]| {
        let mut cmd = ferry(root.path());
        cmd.args(["run", "--rm", "--net", "none", "busybox:esgz"])
            .args(args);
        ok(&mut cmd)
    };
    assert_eq!(run(&[]), "hello from busybox\n");
    assert_eq!(
        run(&[
            "sh",
            "-c",
            "echo $((6*7)); cat /.no.prefetch.landmark | od -An -tx1"
        ]),
        "42\n 0f\n"
    );

    // Converting the eStargz image again keeps its layer (verified, not rebuilt).
    let (code, _, stderr) =
        output(ferry(root.path()).args(["image", "convert", "--estargz", "busybox:esgz", "again"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("reusing eStargz layer {layer} without conversion")
    );
    assert_eq!(
        inspect(root.path(), "again").0["layers"][0]["digest"],
        layer.as_str()
    );
}

#[test]
fn convert_refuses_a_missing_flag_and_bad_values() {
    let root = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(ferry(root.path()).args(["image", "convert", "a", "b"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "ferry: image convert: nothing to convert to: pass --estargz"
    );
    let (code, _, stderr) = output(ferry(root.path()).args([
        "image",
        "convert",
        "--estargz",
        "--estargz-compression-level",
        "10",
        "a",
        "b",
    ]));
    assert_eq!(code, 2);
    assert!(stderr.contains("10 is not in 0..=9"), "{stderr}");
    let (code, _, stderr) =
        output(ferry(root.path()).args(["image", "convert", "--estargz", "nope:1", "b"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "ferry: image nope:1 not found (see `ferry images`)"
    );
    // the new name is checked as `tag` checks it, before any work
    let (code, _, stderr) =
        output(ferry(root.path()).args(["image", "convert", "--estargz", "nope:1", "Bad"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "ferry: invalid reference \"Bad\": repository must be lowercase letters, digits and \
         separators"
    );
    let cid = "bafkreidqoh2ajno4aak4ceglhdqqz3cfgodsv6xrmtq7s2wook7qalyo4i";
    let dst = format!("ipfs://{cid}");
    let (code, _, stderr) =
        output(ferry(root.path()).args(["image", "convert", "--estargz", "nope:1", &dst]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!(
            "ferry: image convert {dst}: an IPFS name is the image's CID; convert to a local \
             name, then `ferry push ipfs://NAME`"
        )
    );
    // eStargz options without --estargz are a usage error, not ignored
    let (code, _, stderr) =
        output(ferry(root.path()).args(["push", "--estargz-chunk-size", "5", "ipfs://a"]));
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with(
            "error: the following required arguments were not provided:\n  --estargz\n"
        ),
        "{stderr}"
    );
}

#[test]
fn pushed_estargz_image_pulls_and_runs_in_containerd_and_copies_with_skopeo() {
    let test = "pushed_estargz_image_pulls_and_runs_in_containerd_and_copies_with_skopeo";
    if skip_unless_root(test)
        || !tool_installed(test, "containerd")
        || !tool_installed(test, "gzip")
    {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let root = busybox_root();
    let name = format!("{}/busybox:esgz", registry.addr);
    ok(ferry(root.path()).args(["tag", "busybox", &name]));
    ok(ferry(root.path()).args(["push", "-q", "--estargz", &name]));
    // the local image is left as it was
    let (local, _) = inspect(root.path(), &name);
    assert!(local["layers"][0]["annotations"][TOC_DIGEST].is_null());

    let raw = json(
        &String::from_utf8(skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{name}"),
        ]))
        .unwrap(),
    );
    let layer = &raw["layers"][0];
    let digest = layer["digest"].as_str().unwrap();
    let toc_digest = layer["annotations"][TOC_DIGEST].as_str().unwrap();

    // skopeo copies it; the layer is an eStargz whose TOC checks out, gunzipping to the diff_id
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("dir:{}", copy.display()),
    ]);
    let file = copy.join(&digest[7..]);
    assert_eq!(format!("sha256:{}", sha256sum(&file)), digest);
    verified_toc(&file, toc_digest);
    let config_digest = raw["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join(&config_digest[7..])).unwrap()).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], gunzipped(&file).0.as_str());

    // containerd pulls it with its normal snapshotter and runs it
    let containerd = Containerd::start();
    ok(containerd
        .ctr()
        .args(["images", "pull", "--plain-http", &name]));
    let id = format!("ferry-esgz-{}", std::process::id());
    let stdout = ok(containerd.ctr().args(["run", "--rm", &name, &id]));
    assert_eq!(stdout.trim(), "hello from busybox");

    // and into IPFS: the image CID's manifest names the same eStargz layer
    let cid = ok(ferry(root.path()).args(["push", "-q", "--estargz", "ipfs://busybox"]));
    let cat = |cid: &str| json(&ok(ferry(root.path()).args(["ipfs", "cat", cid])));
    let url = |d: &serde_json::Value| d["urls"][0].as_str().unwrap()[7..].to_string();
    let manifest = cat(&url(&cat(cid.trim())));
    assert_eq!(manifest["layers"][0]["digest"], digest);
    assert_eq!(manifest["layers"][0]["annotations"][TOC_DIGEST], toc_digest);
    assert_eq!(manifest["config"]["digest"], config_digest);
}

/// The TOC fields both builders must agree on. Offsets are left out: they depend on the
/// deflate implementation (Go's compress/flate vs zlib-rs), and user/group names on how Go's
/// builder splits the tar among its workers.
fn comparable(toc: &Toc) -> Vec<BTreeMap<&'static str, String>> {
    toc.entries
        .iter()
        .map(|e| {
            BTreeMap::from([
                ("name", e.name.clone()),
                ("type", e.kind.clone()),
                ("size", e.size.to_string()),
                ("digest", e.digest.clone()),
                ("chunkOffset", e.chunk_offset.to_string()),
                ("chunkSize", e.chunk_size.to_string()),
                ("chunkDigest", e.chunk_digest.clone()),
                ("mode", e.mode.to_string()),
                ("uid", e.uid.to_string()),
                ("gid", e.gid.to_string()),
                ("modtime", e.mod_time.clone()),
                ("linkName", e.link_name.clone()),
            ])
        })
        .collect()
}

#[test]
fn ctr_remote_estargz_layers_are_kept_and_match_ferrys_toc() {
    let test = "ctr_remote_estargz_layers_are_kept_and_match_ferrys_toc";
    if skip_unless_root(test)
        || !tool_installed(test, "containerd")
        || !tool_installed(test, "gzip")
    {
        return;
    }
    if !peers_dir().join("ctr-remote").exists() {
        eprintln!("SKIP {test}: ctr-remote is not built (scripts/install-peers.sh builds it)");
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let root = busybox_root();
    let plain = format!("{}/busybox:plain", registry.addr);
    ok(ferry(root.path()).args(["tag", "busybox", &plain]));
    ok(ferry(root.path()).args(["push", "-q", &plain]));

    // stargz-snapshotter's converter makes an eStargz of the same image inside containerd
    let containerd = Containerd::start();
    let theirs = format!("{}/busybox:ctr-remote", registry.addr);
    ok(containerd
        .ctr()
        .args(["images", "pull", "--plain-http", &plain]));
    ok(containerd
        .ctr_remote()
        .args(["image", "convert", "--estargz", "--oci", &plain, &theirs]));
    ok(containerd
        .ctr()
        .args(["images", "push", "--plain-http", &theirs]));

    ok(ferry(root.path()).args(["pull", "-q", &theirs]));
    let (manifest, _) = inspect(root.path(), &theirs);
    let layer = &manifest["layers"][0];
    let digest = layer["digest"].as_str().unwrap().to_string();
    let their_toc = verified_toc(
        &blob(root.path(), &digest),
        layer["annotations"][TOC_DIGEST].as_str().unwrap(),
    );

    // ferry keeps that layer byte for byte, in convert and in push --estargz
    let (code, stdout, stderr) = output(ferry(root.path()).args([
        "image",
        "convert",
        "--estargz",
        "--oci",
        &theirs,
        "kept",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("reusing eStargz layer {digest} without conversion")
    );
    let (kept, _) = inspect(root.path(), "kept");
    assert_eq!(kept["layers"], manifest["layers"]);
    let id = json(&ok(ferry(root.path()).args(["image", "inspect", "kept"])))[0]["Id"].clone();
    assert_eq!(id, stdout.trim());
    let again = format!("{}/busybox:again", registry.addr);
    ok(ferry(root.path()).args(["tag", &theirs, &again]));
    ok(ferry(root.path()).args(["push", "-q", "--estargz", &again]));
    let raw = json(
        &String::from_utf8(skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{again}"),
        ]))
        .unwrap(),
    );
    assert_eq!(raw["layers"][0]["digest"], digest.as_str());

    // ferry's own conversion of the same layer lists the same files, sizes and digests
    let (_, ours) = convert_busybox(root.path());
    assert!(ours.entries.len() > 200, "{} entries", ours.entries.len());
    assert_eq!(comparable(&ours), comparable(&their_toc));

    // and with a record file, the same prioritized order and landmark
    let record = root.path().join("record.json");
    std::fs::write(
        &record,
        "{\"path\":\"/bin/busybox\"}\n{\"path\":\"/etc/passwd\"}\n",
    )
    .unwrap();
    let record_arg = format!("--estargz-record-in={}", record.display());
    let theirs_rec = format!("{}/busybox:ctr-remote-rec", registry.addr);
    ok(containerd.ctr_remote().args([
        "image",
        "convert",
        "--estargz",
        "--oci",
        &record_arg,
        &plain,
        &theirs_rec,
    ]));
    ok(containerd
        .ctr()
        .args(["images", "push", "--plain-http", &theirs_rec]));
    ok(ferry(root.path()).args(["pull", "-q", &theirs_rec]));
    let (manifest, _) = inspect(root.path(), &theirs_rec);
    let layer = &manifest["layers"][0];
    let their_toc = verified_toc(
        &blob(root.path(), layer["digest"].as_str().unwrap()),
        layer["annotations"][TOC_DIGEST].as_str().unwrap(),
    );
    ok(ferry(root.path()).args([
        "image",
        "convert",
        "--estargz",
        &record_arg,
        "busybox",
        "rec",
    ]));
    let (manifest, _) = inspect(root.path(), "rec");
    let layer = &manifest["layers"][0];
    let ours = verified_toc(
        &blob(root.path(), layer["digest"].as_str().unwrap()),
        layer["annotations"][TOC_DIGEST].as_str().unwrap(),
    );
    let names: Vec<&str> = ours
        .entries
        .iter()
        .take(6)
        .map(|e| e.name.as_str())
        .collect();
    let want = [
        ".",
        "bin/",
        "bin/busybox",
        "etc/",
        "etc/passwd",
        ".prefetch.landmark",
    ];
    assert_eq!(names, want);
    assert_eq!(comparable(&ours), comparable(&their_toc));
}

#[test]
fn a_docker_image_converts_to_oci_media_types_with_a_warning() {
    let test = "a_docker_image_converts_to_oci_media_types_with_a_warning";
    if skip_unless_root(test) || !tool_installed(test, "tar") {
        return;
    }
    // A `docker save` archive (manifest.json only) loads as a Docker schema 2 image.
    let root = busybox_root();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    ok(ferry(root.path())
        .args(["save", "--format", "docker", "-o"])
        .arg(&saved)
        .arg("busybox"));
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&saved)
        .arg("-C")
        .arg(&tree)
        .status();
    assert!(untar.unwrap().success());
    std::fs::remove_file(tree.join("index.json")).unwrap();
    std::fs::remove_file(tree.join("oci-layout")).unwrap();
    let docker = dir.path().join("docker.tar");
    let retar = Command::new("tar")
        .arg("-cf")
        .arg(&docker)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status();
    assert!(retar.unwrap().success());
    let other = tempfile::tempdir().unwrap();
    ok(ferry(other.path()).args(["load", "-i"]).arg(&docker));
    let (manifest, _) = inspect(other.path(), "busybox");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    let (code, _, stderr) =
        output(ferry(other.path()).args(["image", "convert", "--estargz", "busybox", "esgz"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "--estargz without --oci: the converted manifests use OCI media types anyway \
             (Docker's cannot carry the TOC digest annotation)"
        ),
        "{stderr}"
    );
    let (manifest, _) = inspect(other.path(), "esgz");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert!(manifest["layers"][0]["annotations"][TOC_DIGEST].is_string());
    let stdout = ok(ferry(other.path()).args(["run", "--rm", "--net", "none", "esgz"]));
    assert_eq!(stdout, "hello from busybox\n");
}
