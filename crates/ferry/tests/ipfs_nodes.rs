//! Two ferry nodes on loopback: push on A, pull on B over Bitswap.

mod common;

use common::{blobs, ferry, fixture, image_names, ok, output, sha256sum, Daemon};

const BUSYBOX_NAME: &str = "docker.io/library/busybox:latest";

/// Loads the busybox archive into `root` and pushes it; returns the image CID.
fn load_and_push(root: &std::path::Path) -> String {
    let loaded = ok(ferry(root).args(["load", "-i"]).arg(fixture("busybox.tar")));
    assert_eq!(loaded.trim(), format!("Loaded image: {BUSYBOX_NAME}"));
    let stdout = ok(ferry(root).args(["push", "ipfs://busybox:latest"]));
    stdout.lines().last().unwrap().to_string()
}

#[test]
fn push_prints_a_raw_cid_and_is_repeatable() {
    let a = tempfile::tempdir().unwrap();
    let cid = load_and_push(a.path());
    assert!(
        cid.starts_with("bafkrei"),
        "image CID {cid} is not a CIDv1 raw block"
    );
    let again = ok(ferry(a.path()).args(["push", "-q", "ipfs://busybox"]));
    assert_eq!(again.trim(), cid);
    // another host with the same image gets the same CID
    let other = tempfile::tempdir().unwrap();
    assert_eq!(load_and_push(other.path()), cid);
}

#[test]
fn push_stores_layer_bytes_once() {
    let a = tempfile::tempdir().unwrap();
    load_and_push(a.path());
    let total: u64 = std::fs::read_dir(a.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let archive = std::fs::metadata(fixture("busybox.tar")).unwrap().len();
    // blobs: the archive's blobs plus a few KiB of re-encoded manifests and the descriptor;
    // a second copy of the layer would double it.
    assert!(
        total < archive + 64 * 1024,
        "blobs take {total} bytes for a {archive}-byte archive"
    );
}

#[test]
fn pull_on_b_gets_blobs_identical_to_a() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let cid = load_and_push(a.path());
    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);

    let stdout =
        ok(ferry(b.path()).args(["pull", "--peer", &daemon.addr, &format!("ipfs://{cid}")]));
    assert_eq!(stdout.trim(), cid);

    let on_b = blobs(b.path());
    assert!(on_b.len() >= 4, "B holds only {on_b:?}");
    for name in &on_b {
        let pa = a.path().join("blobs/sha256").join(name);
        let pb = b.path().join("blobs/sha256").join(name);
        assert_eq!(
            sha256sum(&pb),
            *name,
            "blob {name} on B does not hash to its name"
        );
        assert_eq!(
            std::fs::read(&pa).unwrap(),
            std::fs::read(&pb).unwrap(),
            "blob {name}"
        );
    }
    assert_eq!(image_names(b.path()), std::slice::from_ref(&cid));
    // B now holds the image as A did: pushing it there gives the same CID
    assert_eq!(
        ok(ferry(b.path()).args(["push", "-q", &format!("ipfs://{cid}")])).trim(),
        cid
    );
}

#[test]
fn pull_fails_cleanly_when_a_is_gone_and_succeeds_when_it_is_back() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let cid = load_and_push(a.path());
    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let (addr, port) = (daemon.addr.clone(), daemon.port());
    drop(daemon);

    // with the default block timeout (3 minutes): a peer that refuses ends the wait sooner
    let started = std::time::Instant::now();
    let (code, stdout, stderr) =
        output(ferry(b.path()).args(["pull", "--peer", &addr, &format!("ipfs://{cid}")]));
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the failure took {:?}",
        started.elapsed()
    );
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("ferry: pull {cid}: no peer connected"))
            && last.ends_with("): gave up after 10s"),
        "{stderr}"
    );
    assert!(
        blobs(b.path()).is_empty(),
        "a failed pull left blobs: {:?}",
        blobs(b.path())
    );
    assert_eq!(
        std::fs::read_dir(b.path().join("ingest")).unwrap().count(),
        0
    );

    let _daemon = Daemon::start(a.path(), &format!("/ip4/127.0.0.1/tcp/{port}"), &[]);
    let stdout = ok(ferry(b.path()).args(["pull", "--peer", &addr, &format!("ipfs://{cid}")]));
    assert_eq!(stdout.trim(), cid);
    // the top descriptor, the manifest, the config and the one layer, all as A has them
    let on_b = blobs(b.path());
    assert_eq!(on_b.len(), 4, "{on_b:?}");
    assert!(on_b.iter().all(|blob| blobs(a.path()).contains(blob)));
}

#[test]
fn cli_pull_goes_through_the_daemon_of_its_root() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let cid = load_and_push(a.path());
    let daemon_a = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let _daemon_b = Daemon::start(
        b.path(),
        "/ip4/127.0.0.1/tcp/0",
        &["--peer", &daemon_a.addr],
    );

    // no --peer: only B's daemon knows A
    let stdout = ok(ferry(b.path()).args(["pull", &cid]));
    assert_eq!(stdout.trim(), cid);
    let id: serde_json::Value =
        serde_json::from_str(&ok(ferry(b.path()).args(["ipfs", "id"]))).unwrap();
    let addrs = id["Addresses"].as_array().unwrap();
    assert!(addrs[0]
        .as_str()
        .unwrap()
        .ends_with(id["ID"].as_str().unwrap()));
}

#[test]
fn second_daemon_on_one_root_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let _first = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let (code, _, stderr) =
        output(ferry(a.path()).args(["daemon", "--listen", "/ip4/127.0.0.1/tcp/0"]));
    assert_eq!(code, 1);
    let root = a.path().canonicalize().unwrap();
    assert_eq!(
        stderr.trim(),
        format!(
            "ferry: another ferry daemon is running on {}",
            root.display()
        )
    );
}

#[test]
fn bad_references_get_one_line_errors() {
    let a = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(ferry(a.path()).args(["pull", "ipfs://nope"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "ferry: invalid reference \"ipfs://nope\": not a CID"
    );
    let (code, _, stderr) = output(ferry(a.path()).args(["push", "ipfs://missing:1"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "ferry: image missing:1 not found (see `ferry images`)"
    );
}

#[test]
fn offline_daemon_answers_the_cli_but_fetches_nothing() {
    let a = tempfile::tempdir().unwrap();
    let mut child = ferry(a.path())
        .args(["daemon", "--offline"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "Daemon is ready (offline)");
    let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    let (code, _, stderr) = output(ferry(a.path()).args(["pull", cid]));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!("ferry: pull {cid}: the daemon is offline")
    );
}

#[test]
fn pull_with_no_peer_anywhere_fails_at_once() {
    let b = tempfile::tempdir().unwrap();
    let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    let started = std::time::Instant::now();
    let (code, _, stderr) = output(ferry(b.path()).args(["pull", cid]));
    assert_eq!(code, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        stderr.trim(),
        format!(
            "ferry: pull {cid}: no peers to fetch from: name one with --peer or in \
             ROOT/config.json, or start `ferry daemon` (it also finds peers with mDNS and the DHT)"
        )
    );
}

#[test]
fn peer_flag_reaches_a_running_daemon() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let cid = load_and_push(a.path());
    let daemon_a = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &["--no-mdns"]);
    let _daemon_b = Daemon::start(b.path(), "/ip4/127.0.0.1/tcp/0", &["--no-mdns"]);
    let stdout = ok(ferry(b.path()).args(["pull", "--peer", &daemon_a.addr, &cid]));
    assert_eq!(stdout.trim(), cid);
}

#[test]
fn daemon_on_a_port_another_daemon_holds_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let listen = format!("/ip4/127.0.0.1/tcp/{}", first.port());
    let (code, _, stderr) =
        output(ferry(b.path()).args(["daemon", "--no-registry", "--listen", &listen]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!("ferry: ipfs node: listen on {listen}: Address already in use (os error 98)")
    );
}

#[test]
fn abandoned_requests_do_not_tie_up_the_daemon() {
    use std::io::Write;
    let a = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &["--no-mdns"]);
    let socket = a.path().join("ferry.sock");
    let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    let request = format!("{{\"op\":\"pull_ipfs\",\"cid\":\"{cid}\",\"timeout_ms\":600000}}\n");
    // more abandoned ten-minute pulls than the daemon works on at once, plus idle connections
    for _ in 0..80 {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.write_all(request.as_bytes()).unwrap();
    }
    let idle: Vec<_> = (0..100)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));

    let started = std::time::Instant::now();
    let id: serde_json::Value =
        serde_json::from_str(&ok(ferry(a.path()).args(["ipfs", "id"]))).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "id took {:?}",
        started.elapsed()
    );
    assert!(daemon.addr.ends_with(id["ID"].as_str().unwrap()));
    drop(idle);
}

#[test]
fn stats_bitswap_lists_the_wantlist_and_partners() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let daemon_a = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &["--no-mdns"]);
    let _daemon_b = Daemon::start(
        b.path(),
        "/ip4/127.0.0.1/tcp/0",
        &["--no-mdns", "--peer", &daemon_a.addr],
    );
    common::wait_for_swarm_peers(
        b.path(),
        &[daemon_a.peer_id()],
        std::time::Duration::from_secs(10),
    );
    // a block no one has: B's daemon wants it until the fetch times out
    let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    let mut cat = ferry(b.path())
        .args(["ipfs", "cat", "--timeout", "4s", cid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let expected = format!(
        "bitswap status\n\tblocks received: 0\n\tblocks sent: 0\n\tdata received: 0\n\
         \tdata sent: 0\n\tdup blocks received: 0\n\twantlist [1 keys]\n\t\t{cid}\n\
         \tpartners [1]\n\t\t{}\n",
        daemon_a.peer_id()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let stats = ok(ferry(b.path()).args(["ipfs", "stats", "bitswap", "--verbose"]));
        if stats == expected {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!cat.wait().unwrap().success());
    let stats = ok(ferry(b.path()).args(["ipfs", "stats", "bitswap"]));
    assert!(
        stats.ends_with("\twantlist [0 keys]\n\tpartners [1]\n"),
        "{stats}"
    );
}
