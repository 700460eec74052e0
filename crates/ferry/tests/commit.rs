//! `ferry commit` with real overlayfs and runc (root only, as CI runs): a container's changes
//! become a layer with OCI whiteouts, the image goes to IPFS, and a second node runs it by CID.

mod common;

use std::path::Path;
use std::process::Command;

use common::{ferry, fixture, ok, output, skip_unless_root, Daemon};

/// The entries of the top layer of local image `name` in `root`, as `tar tzf` lists them.
fn top_layer_entries(root: &Path, name: &str) -> Vec<String> {
    let images = ok(ferry(root).args(["images", "--digests", "--format", "json"]));
    let id = images
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|i| i["Repository"] == format!("docker.io/library/{name}"))
        .and_then(|i| i["Digest"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("image {name} not listed:\n{images}"));
    let blob = |digest: &str| {
        root.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&id)).unwrap()).unwrap();
    let layer = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let list = ok(Command::new("tar").arg("tzf").arg(blob(&layer)));
    list.lines().map(str::to_string).collect()
}

#[test]
fn a_committed_container_runs_by_cid_on_a_second_node() {
    if skip_unless_root("a_committed_container_runs_by_cid_on_a_second_node") {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    ok(ferry(a.path())
        .args(["load", "-i"])
        .arg(fixture("busybox.tar")));
    let ferry_a = |args: &[&str]| ok(ferry(a.path()).args(args));

    // first commit: a new file, a directory of two files, a file of the image deleted
    ferry_a(&[
        "run",
        "--name",
        "one",
        "busybox",
        "sh",
        "-c",
        "echo hello from the commit > /hello; mkdir /d; echo a > /d/a; echo b > /d/b; \
         rm /etc/passwd",
    ]);
    let id = ferry_a(&["commit", "-m", "first", "one", "step1"]);
    assert!(id.starts_with("sha256:") && id.len() == 72, "{id}");
    let entries = top_layer_entries(a.path(), "step1");
    assert_eq!(
        entries,
        ["d/", "d/a", "d/b", "etc/", "etc/.wh.passwd", "hello"],
        "only the container's changes, the deletion as a whiteout, no mount points"
    );

    // second commit on top of the first: a directory deleted and made again is opaque
    ferry_a(&[
        "run",
        "--name",
        "two",
        "step1",
        "sh",
        "-c",
        "rm -rf /d; mkdir /d; echo c > /d/c",
    ]);
    ferry_a(&["commit", "two", "step2:v2"]);
    let entries = top_layer_entries(a.path(), "step2");
    // etc/ is there because runc made the bind mount points in it (copied up, unchanged)
    assert_eq!(entries, ["d/", "d/.wh..wh..opq", "d/c", "etc/"]);

    let cid = ferry_a(&["push", "-q", "ipfs://step2:v2"])
        .trim()
        .to_string();
    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let (code, stdout, stderr) = output(ferry(b.path()).args([
        "run",
        "--rm",
        "--peer",
        &daemon.addr,
        &format!("ipfs://{cid}"),
        "sh",
        "-c",
        "cat /hello; ls -A /d; test -e /etc/passwd || echo no passwd; cat /etc/group | head -1",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "hello from the commit\nc\nno passwd\nroot:x:0:\n");

    // the config has the new layer's diff ID and history entries
    let inspect = ok(ferry(b.path()).args(["image", "inspect", &cid]));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let layers = inspect[0]["RootFS"]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{inspect}");
}

#[test]
fn commit_names_what_is_missing() {
    let root = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(ferry(root.path()).args(["commit", "nope", "img"]));
    assert_eq!(code, 1);
    assert_eq!(stderr, "ferry: no such container: nope\n");
}
