//! Private networks: nodes holding the same kubo-format swarm.key talk; others cannot.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{blobs, busybox_pushed, ferry, ok, output, Daemon};

const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// A key as `ipfs-swarm-key-gen` writes it.
fn write_key(path: &Path, hex_digit: char) {
    let key: String = std::iter::repeat_n(hex_digit, 64).collect();
    std::fs::write(path, format!("/key/swarm/psk/1.0.0/\n/base16/\n{key}\n")).unwrap();
}

#[test]
fn daemons_with_the_same_swarm_key_transfer_an_image() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cid = busybox_pushed(a.path());
    // A reads ROOT/swarm.key; B is given the same key as a file elsewhere
    write_key(&a.path().join("swarm.key"), '7');
    let key_b = b.path().join("key-from-a");
    write_key(&key_b, '7');
    let daemon_a = Daemon::start(a.path(), LOOPBACK, &["--no-mdns"]);
    let key_arg = key_b.to_str().unwrap();
    let _daemon_b = Daemon::start(
        b.path(),
        LOOPBACK,
        &[
            "--no-mdns",
            "--swarm-key",
            key_arg,
            "--peer",
            &daemon_a.addr,
        ],
    );

    let stdout = ok(ferry(b.path()).args(["pull", "--timeout", "30s", &cid]));
    assert_eq!(stdout.trim(), cid);
    // the top descriptor, the manifest, the config and the layer, as A has them
    let on_b = blobs(b.path());
    assert_eq!(on_b.len(), 4, "{on_b:?}");
    for name in &on_b {
        let (pa, pb) = (a.path().join("blobs/sha256"), b.path().join("blobs/sha256"));
        assert_eq!(
            std::fs::read(pa.join(name)).unwrap(),
            std::fs::read(pb.join(name)).unwrap()
        );
    }
}

/// A pull from `root` (no daemon) with `extra` arguments fails within a few seconds of its
/// 3 s timeout, saying that no peer is connected.
fn assert_pull_refused(root: &Path, daemon: &Daemon, cid: &str, extra: &[&str]) {
    let started = Instant::now();
    let (code, stdout, stderr) = output(
        ferry(root)
            .args(["pull", "--timeout", "3s", "--peer", &daemon.addr])
            .args(extra)
            .arg(cid),
    );
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the refusal took {:?}",
        started.elapsed()
    );
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!("ferry: pull {cid}: no peer connected")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(blobs(root).is_empty());
}

#[test]
fn node_without_the_swarm_key_or_with_another_cannot_fetch() {
    let a = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    write_key(&a.path().join("swarm.key"), '7');
    let daemon_a = Daemon::start(a.path(), LOOPBACK, &["--no-mdns"]);

    let no_key = tempfile::tempdir().unwrap();
    assert_pull_refused(no_key.path(), &daemon_a, &cid, &[]);

    let other = tempfile::tempdir().unwrap();
    let other_key = other.path().join("other.key");
    write_key(&other_key, 'c');
    assert_pull_refused(
        other.path(),
        &daemon_a,
        &cid,
        &["--swarm-key", other_key.to_str().unwrap()],
    );

    // and a node outside the network cannot reach a node inside it either
    let outside = tempfile::tempdir().unwrap();
    let cid_out = busybox_pushed(outside.path());
    let daemon_out = Daemon::start(outside.path(), LOOPBACK, &["--no-mdns"]);
    let inside = tempfile::tempdir().unwrap();
    write_key(&inside.path().join("swarm.key"), '7');
    assert_pull_refused(inside.path(), &daemon_out, &cid_out, &[]);
}

#[test]
fn malformed_swarm_key_is_a_one_line_error() {
    let a = tempfile::tempdir().unwrap();
    let bad = a.path().join("bad.key");
    std::fs::write(&bad, "/key/swarm/psk/1.0.0/\n/base16/\nnot-hex\n").unwrap();
    let expected = format!(
        "ferry: swarm key {}: the key must be 64 hex digits (32 bytes)",
        bad.display()
    );

    let (code, _, stderr) = output(ferry(a.path()).args([
        "daemon",
        "--listen",
        LOOPBACK,
        "--swarm-key",
        bad.to_str().unwrap(),
    ]));
    assert_eq!(code, 1);
    assert_eq!(stderr.trim(), expected);

    // the same file as ROOT/swarm.key stops a pull before it dials anyone
    std::fs::copy(&bad, a.path().join("swarm.key")).unwrap();
    let root_key = a.path().canonicalize().unwrap().join("swarm.key");
    let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    let (code, _, stderr) = output(ferry(a.path()).args(["pull", cid]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!(
            "ferry: pull {cid}: swarm key {}: the key must be 64 hex digits (32 bytes)",
            root_key.display()
        )
    );

    // the registry endpoint's node reads it too (it must not join the public network instead)
    let (code, _, stderr) =
        output(ferry(a.path()).args(["ipfs", "registry", "serve", "--listen", "127.0.0.1:0"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!(
            "ferry: swarm key {}: the key must be 64 hex digits (32 bytes)",
            root_key.display()
        )
    );
}
