//! Provider discovery over the DHT: three daemons on loopback where C knows only B and A (the
//! pusher) is known only to B; C's pull must find A through the DHT and fetch from it. A and C
//! are DHT clients (as nodes behind NAT are), so no routing table lists them and only A's
//! provider records, stored on B, can lead C to A.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{blobs, ferry, fixture, ok, sha256sum, wait_for_swarm_peers, Daemon};

const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// config.json of a DHT client with mDNS off, plus `extra` settings.
fn dht_client(root: &Path, extra: serde_json::Value) {
    let mut config = serde_json::json!({ "routing": "dhtclient", "mdns": false });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    std::fs::write(root.join("config.json"), config.to_string()).unwrap();
}

fn load(root: &Path) {
    ok(ferry(root).args(["load", "-i"]).arg(fixture("busybox.tar")));
}

fn push(root: &Path) -> String {
    let cid = ok(ferry(root).args(["push", "-q", "ipfs://busybox:latest"]));
    cid.trim().to_string()
}

/// C's pull printed the CID, C now holds A's blobs byte for byte, and C is connected to A,
/// whom it could only have learned of from the DHT.
fn assert_pulled_from(a: &Path, c: &Path, daemon_a: &Daemon, cid: &str) {
    let stdout = ok(ferry(c).args(["pull", "--timeout", "60s", cid]));
    assert_eq!(stdout.trim(), cid);
    let on_c = blobs(c);
    assert_eq!(on_c.len(), 4, "C holds {on_c:?}");
    for name in &on_c {
        let path = c.join("blobs/sha256").join(name);
        assert_eq!(sha256sum(&path), *name, "blob {name} on C");
        assert!(blobs(a).contains(name), "blob {name} is not A's");
    }
    let peers = ok(ferry(c).args(["ipfs", "swarm", "peers"]));
    assert!(
        peers.contains(&daemon_a.peer_id()),
        "C is not connected to A ({}) after the pull: {peers}",
        daemon_a.peer_id()
    );
}

#[test]
fn pull_finds_the_pusher_through_the_dht() {
    let (a, b, c) = (tempdir(), tempdir(), tempdir());
    load(a.path());
    dht_client(a.path(), serde_json::json!({}));
    dht_client(c.path(), serde_json::json!({}));
    let daemon_a = Daemon::start(a.path(), LOOPBACK, &[]);
    let daemon_b = Daemon::start(b.path(), LOOPBACK, &["--no-mdns", "--peer", &daemon_a.addr]);
    let _daemon_c = Daemon::start(c.path(), LOOPBACK, &["--peer", &daemon_b.addr]);
    wait_for_swarm_peers(b.path(), &[daemon_a.peer_id()], Duration::from_secs(20));
    wait_for_swarm_peers(c.path(), &[daemon_b.peer_id()], Duration::from_secs(20));

    // the push runs while A's daemon is up: A announces the image and every blob at once
    let cid = push(a.path());
    std::thread::sleep(Duration::from_millis(500));
    let before = ok(ferry(c.path()).args(["ipfs", "swarm", "peers"]));
    assert!(
        !before.contains(&daemon_a.peer_id()),
        "C knew A before: {before}"
    );
    assert_pulled_from(a.path(), c.path(), &daemon_a, &cid);
}

#[test]
fn daemon_announces_what_was_pushed_before_it_started() {
    let (a, b, c) = (tempdir(), tempdir(), tempdir());
    load(a.path());
    let cid = push(a.path());
    dht_client(a.path(), serde_json::json!({}));
    let daemon_a = Daemon::start(a.path(), LOOPBACK, &[]);
    let daemon_b = Daemon::start(b.path(), LOOPBACK, &["--no-mdns", "--peer", &daemon_a.addr]);
    // C learns of B only as a bootstrap peer of its config.json
    dht_client(
        c.path(),
        serde_json::json!({ "bootstrap": [daemon_b.addr] }),
    );
    let _daemon_c = Daemon::start(c.path(), LOOPBACK, &[]);
    wait_for_swarm_peers(c.path(), &[daemon_b.peer_id()], Duration::from_secs(20));
    // A announced its pins at start, to nobody; B joining its routing table makes it
    // announce them again
    std::thread::sleep(Duration::from_millis(2500));
    let before = ok(ferry(c.path()).args(["ipfs", "swarm", "peers"]));
    assert!(
        !before.contains(&daemon_a.peer_id()),
        "C knew A before: {before}"
    );

    assert_pulled_from(a.path(), c.path(), &daemon_a, &cid);
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
