//! Lazy pulling (`ferry run --snapshotter stargz`): an eStargz image made by stargz-snapshotter's
//! own converter (ctr-remote) is pushed to IPFS by node A; node B runs a command in it through
//! FUSE, fetching only the chunks the command reads. The same with an image ferry itself
//! converted (`push --estargz`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    ferry, fixture, ok, output, peer_installed, peers_dir, sha256sum, skip_unless_root,
    tool_installed, Containerd, Daemon, Registry,
};

/// The eStargz image on node A's IPFS: its CID and its one layer's digest and size.
struct Converted {
    /// The registry holding it, as `name`.
    registry: Registry,
    name: String,
    cid: String,
    layer_digest: String,
    layer_size: u64,
}

/// Converts the fixture image `name` (an OCI layout) with `ctr-remote image convert --estargz
/// --oci` (in containerd, through a docker-registry), pulls the result into `a` and pushes it
/// to IPFS.
fn estargz_on(a: &Path, name: &str) -> Converted {
    let registry = Registry::start().expect("docker-registry");
    let plain = format!("{}/{name}:plain", registry.addr);
    let esgz = format!("{}/{name}:esgz", registry.addr);
    let mut copy = Command::new("skopeo");
    copy.args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", fixture(name).display()))
        .arg(format!("docker://{plain}"));
    ok(&mut copy);
    let containerd = Containerd::start();
    ok(containerd
        .ctr_remote()
        .args(["image", "pull", "--plain-http", &plain]));
    ok(containerd
        .ctr_remote()
        .args(["image", "convert", "--estargz", "--oci", &plain, &esgz]));
    ok(containerd
        .ctr()
        .args(["images", "push", "--plain-http", &esgz]));
    drop(containerd);

    let raw = ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{esgz}"),
    ]));
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let layer = &manifest["layers"][0];
    assert!(
        layer["annotations"]["containerd.io/snapshot/stargz/toc.digest"].is_string(),
        "ctr-remote made no eStargz layer: {raw}"
    );
    ok(ferry(a).args(["pull", &esgz]));
    let cid = ok(ferry(a).args(["push", "-q", &format!("ipfs://{esgz}")]))
        .trim()
        .to_string();
    Converted {
        registry,
        name: esgz,
        cid,
        layer_digest: layer["digest"].as_str().unwrap().to_string(),
        layer_size: layer["size"].as_u64().unwrap(),
    }
}

fn tools_ready(test: &str) -> bool {
    !skip_unless_root(test)
        && tool_installed(test, "containerd")
        && tool_installed(test, "skopeo")
        && peer_installed(test, "ctr-remote", &peers_dir().join("ctr-remote"))
}

/// `data received` of `ferry ipfs stats bitswap` on `root`.
fn data_received(root: &Path) -> u64 {
    let stats = ok(ferry(root).args(["ipfs", "stats", "bitswap"]));
    let line = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("data received: "))
        .unwrap_or_else(|| panic!("no data received line in {stats}"));
    line.parse().unwrap()
}

/// The lazy-layer FUSE mounts under ROOT/lazy, from this process's mount table.
fn lazy_mounts(root: &Path) -> Vec<String> {
    let dir = root.canonicalize().unwrap().join("lazy");
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" - fuse ferry-lazy ") && l.contains(&dir))
        .map(str::to_string)
        .collect()
}

fn daemon(root: &Path, peer: Option<&str>) -> Daemon {
    let mut extra = vec!["--no-registry", "--no-mdns"];
    if let Some(peer) = peer {
        extra.extend(["--peer", peer]);
    }
    Daemon::start(root, "/ip4/127.0.0.1/tcp/0", &extra)
}

#[test]
fn lazy_runs_fetch_a_fraction_then_the_layer_and_fail_safely() {
    let test = "lazy_runs_fetch_a_fraction_then_the_layer_and_fail_safely";
    if !tools_ready(test) {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let image = estargz_on(a.path(), "debian");
    // the right answer, from a normal run on A (the fixture follows Debian's point releases)
    let version = ok(ferry(a.path()).args([
        "run",
        "--rm",
        "--net",
        "none",
        &format!("ipfs://{}", image.cid),
        "cat",
        "/etc/debian_version",
    ]));
    assert!(version.starts_with("12."), "{version}");
    let node_a = daemon(a.path(), None);
    let b = tempfile::tempdir().unwrap();
    let node_b = daemon(b.path(), Some(&node_a.addr));
    common::wait_for_swarm_peers(
        b.path(),
        std::slice::from_ref(&node_a.addr),
        Duration::from_secs(10),
    );
    assert_eq!(data_received(b.path()), 0);

    let (code, stdout, stderr) = output(ferry(b.path()).args([
        "run",
        "--rm",
        "--snapshotter=stargz",
        &format!("ipfs://{}", image.cid),
        "cat",
        "/etc/debian_version",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, version);
    let received = data_received(b.path());
    // the TOC and the chunks of cat, its libraries and the file: a few MB of a 43 MB layer
    assert!(
        received < image.layer_size / 5,
        "received {received} bytes of a {}-byte layer",
        image.layer_size
    );
    assert!(
        lazy_mounts(b.path()).is_empty(),
        "{:?}",
        lazy_mounts(b.path())
    );

    // the whole layer follows in the background, verified and kept like any pulled blob
    let hex = image.layer_digest.strip_prefix("sha256:").unwrap();
    let blob: PathBuf = b.path().join("blobs/sha256").join(hex);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !blob.exists() {
        assert!(Instant::now() < deadline, "the layer was not fetched");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sha256sum(&blob), hex);
    // the blocks the reads fetched were kept for it: no byte crossed the network twice
    let total = data_received(b.path());
    assert!(
        total < image.layer_size + image.layer_size / 50,
        "received {total} bytes for a {}-byte layer ({received} before the output)",
        image.layer_size
    );
    // the cache (those blocks and the chunks) goes once the blob holds them all, the
    // container being gone
    let cache = b.path().join("lazy/cache").join(hex);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there",
            cache.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(node_b);

    // from the registry, by HTTP Range requests: the layer is not fetched whole
    let r = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(ferry(r.path()).args([
        "run",
        "--rm",
        "--snapshotter=stargz",
        &image.name,
        "cat",
        "/etc/debian_version",
    ]));
    assert_eq!((code, stdout.as_str()), (0, version.as_str()), "{stderr}");
    assert!(!r.path().join("blobs/sha256").join(hex).exists());
    // a run that lasts longer than the background delay also gets the whole layer, verified
    ok(ferry(r.path()).args([
        "run",
        "--rm",
        "--snapshotter=stargz",
        &image.name,
        "sleep",
        "10",
    ]));
    let layer = r.path().join("blobs/sha256").join(hex);
    assert_eq!(sha256sum(&layer), hex);
    drop(image.registry);

    // node C: a detached container, its lazy layer served by C's daemon
    let c = tempfile::tempdir().unwrap();
    let node_c = daemon(c.path(), Some(&node_a.addr));
    common::wait_for_swarm_peers(
        c.path(),
        std::slice::from_ref(&node_a.addr),
        Duration::from_secs(10),
    );
    let id = ok(ferry(c.path()).args([
        "run",
        "-d",
        "--snapshotter=stargz",
        "--timeout=2s",
        &format!("ipfs://{}", image.cid),
        "sh",
        "-c",
        "cat /dev/null; echo up; sleep 60",
    ]))
    .trim()
    .to_string();
    let _removed = RemoveOnDrop(c.path().to_path_buf(), id.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while ok(ferry(c.path()).args(["logs", &id])) != "up\n" {
        assert!(Instant::now() < deadline, "the container did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lazy_mounts(c.path()).len(), 1);

    // the peer that has the layer goes away (before the background fetch begins), the one
    // left (D) lacks it: a read of a file none of whose blocks were fetched (perl's; sh, cat
    // and sleep are) waits, then fails
    let d = tempfile::tempdir().unwrap();
    let node_d = daemon(d.path(), Some(&node_c.addr));
    common::wait_for_swarm_peers(c.path(), &[node_d.peer_id()], Duration::from_secs(10));
    drop(node_a);
    let started = Instant::now();
    let (code, stdout, stderr) =
        output(ferry(c.path()).args(["exec", &id, "cat", "/usr/bin/perl"]));
    assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
    assert_eq!(stderr, "cat: /usr/bin/perl: Input/output error\n");
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_secs(1) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    // while no other peer has connected, the next such read fails at once
    let started = Instant::now();
    let (code, _, stderr) = output(ferry(c.path()).args(["exec", &id, "cat", "/usr/bin/perlbug"]));
    assert_eq!(stderr, "cat: /usr/bin/perlbug: Input/output error\n");
    assert_eq!(code, 1);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // stopped, the daemon keeps serving its layer, so it starts again from what was fetched
    ok(ferry(c.path()).args(["stop", "-t", "1", &id]));
    assert_eq!(lazy_mounts(c.path()).len(), 1);
    ok(ferry(c.path()).args(["start", &id]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while ok(ferry(c.path()).args(["logs", &id])) != "up\nup\n" {
        assert!(
            Instant::now() < deadline,
            "the container did not start again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // the daemon serving the mount goes away: the mount is dead until someone sweeps it
    drop(node_c);
    assert_eq!(lazy_mounts(c.path()).len(), 1);
    let _node_c = daemon(c.path(), None);
    assert!(
        lazy_mounts(c.path()).is_empty(),
        "{:?}",
        lazy_mounts(c.path())
    );
    // the layer never arrived whole: its chunks stay until no image uses it
    let cache = c.path().join("lazy/cache").join(hex);
    assert!(cache.exists());
    ok(ferry(c.path()).args(["rm", "-f", &id]));
    let pruned = ok(ferry(c.path()).args(["image", "prune", "-a"]));
    assert!(!cache.exists(), "{pruned}");
}

#[test]
fn an_image_ferry_pushed_as_estargz_runs_lazily_on_another_node() {
    let test = "an_image_ferry_pushed_as_estargz_runs_lazily_on_another_node";
    if skip_unless_root(test) {
        return;
    }
    let archive = fixture("debian.tar");
    let a = tempfile::tempdir().unwrap();
    ok(ferry(a.path()).args(["load", "-i"]).arg(&archive));
    let cid = ok(ferry(a.path()).args(["push", "-q", "--estargz", "ipfs://debian:12"]))
        .trim()
        .to_string();
    // the right answer, from a normal run of the same image on A
    let image = format!("ipfs://{cid}");
    let want = ok(ferry(a.path()).args([
        "run",
        "--rm",
        "--net",
        "none",
        &image,
        "cat",
        "/etc/os-release",
    ]));
    assert!(
        want.starts_with("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
        "{want}"
    );

    let node_a = daemon(a.path(), None);
    let b = tempfile::tempdir().unwrap();
    let _node_b = daemon(b.path(), Some(&node_a.addr));
    common::wait_for_swarm_peers(
        b.path(),
        std::slice::from_ref(&node_a.addr),
        Duration::from_secs(10),
    );
    let (code, stdout, stderr) = output(ferry(b.path()).args([
        "run",
        "--rm",
        "--net",
        "none",
        "--snapshotter=stargz",
        &image,
        "cat",
        "/etc/os-release",
    ]));
    assert_eq!((code, stdout.as_str()), (0, want.as_str()), "{stderr}");
    // the TOC and the chunks of cat, its libraries and the file, of a ~40 MB layer
    let received = data_received(b.path());
    let size = std::fs::metadata(&archive).unwrap().len();
    assert!(
        received < size / 5,
        "received {received} bytes of a {size}-byte image"
    );
    assert!(received > 0);

    // a detached container's layer, which B's daemon serves: `rm -f` takes the mount with it
    let id = ok(ferry(b.path()).args([
        "run",
        "-d",
        "--net",
        "none",
        "--snapshotter=stargz",
        &image,
        "sleep",
        "60",
    ]))
    .trim()
    .to_string();
    let _removed = RemoveOnDrop(b.path().to_path_buf(), id.clone());
    assert_eq!(lazy_mounts(b.path()).len(), 1);
    ok(ferry(b.path()).args(["rm", "-f", &id]));
    assert!(
        lazy_mounts(b.path()).is_empty(),
        "{:?}",
        lazy_mounts(b.path())
    );
}

/// Force-removes a container (and so its mounts) when dropped, also when a test fails.
struct RemoveOnDrop(PathBuf, String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = ferry(&self.0).args(["rm", "-f", &self.1]).output();
    }
}

#[test]
fn detached_lazy_runs_need_a_daemon_and_config_json_sets_the_default() {
    let test = "detached_lazy_runs_need_a_daemon_and_config_json_sets_the_default";
    if skip_unless_root(test) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cid = "bafkreigf3f4iwhnmj2tsanensll73dno3keqg53ognyuy42vful75oz2ia";
    let (code, _, stderr) = output(ferry(root.path()).args([
        "run",
        "-d",
        "--snapshotter=stargz",
        &format!("ipfs://{cid}"),
        "true",
    ]));
    assert_eq!(code, 125);
    let canonical = root.path().canonicalize().unwrap();
    let want = format!(
        "ferry: run: --snapshotter stargz with -d needs `ferry daemon` running on {}: it \
         serves the lazily pulled layers while the container runs",
        canonical.display()
    );
    assert_eq!(stderr.trim(), want);

    // the same from config.json's default, which the node settings do not mind
    let config = root.path().join("config.json");
    std::fs::write(&config, r#"{"snapshotter": "stargz", "mdns": false}"#).unwrap();
    let image = format!("ipfs://{cid}");
    let (code, _, stderr) = output(ferry(root.path()).args(["run", "-d", &image, "true"]));
    assert_eq!((code, stderr.trim()), (125, want.as_str()));
    let (code, _, stderr) = output(ferry(root.path()).args(["run", "--rm", &image, "true"]));
    assert_eq!(code, 125);
    assert_eq!(
        stderr.trim(),
        format!(
            "ferry: run: pull {cid}: no peers to fetch from: name one with --peer or in \
             ROOT/config.json, or start `ferry daemon` (it also finds peers with mDNS and the DHT)"
        )
    );
    std::fs::write(&config, r#"{"snapshotter": "zfs"}"#).unwrap();
    let (code, _, stderr) = output(ferry(root.path()).args(["run", "-d", &image, "true"]));
    assert_eq!(code, 125);
    assert_eq!(
        stderr.trim(),
        format!(
            "ferry: run: config {}: snapshotter must be \"overlayfs\" or \"stargz\": unknown \
             variant `zfs`, expected `overlayfs` or `stargz`",
            canonical.join("config.json").display()
        )
    );
}
