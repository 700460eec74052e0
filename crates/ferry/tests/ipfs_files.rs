//! `ferry ipfs add`, `cat` and `swarm` between ferry nodes.

mod common;

use std::io::Write;

use common::{ferry, js_cid, ok, output, sha256sum, Daemon};

/// A file of `len` pseudo-random bytes.
fn random_file(dir: &std::path::Path, len: usize) -> std::path::PathBuf {
    let path = dir.join(format!("file-{len}"));
    let mut f = std::fs::File::create(&path).unwrap();
    let mut x: u32 = 0x9e37_79b9;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    f.write_all(&bytes).unwrap();
    path
}

#[test]
fn add_then_cat_on_another_node_gives_the_same_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let file = random_file(a.path(), 3 * 262_144 + 17);
    let stdout = ok(ferry(a.path()).args(["ipfs", "add"]).arg(&file));
    let cid = stdout.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(
        stdout.trim(),
        format!("added {cid} file-{}", 3 * 262_144 + 17)
    );
    if let Some(expected) = js_cid(&file) {
        assert_eq!(cid, expected);
    }
    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);

    let out = ferry(b.path())
        .args(["ipfs", "cat", "--peer", &daemon.addr, &cid])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = b.path().join("copy");
    std::fs::write(&copy, &out.stdout).unwrap();
    assert_eq!(sha256sum(&copy), sha256sum(&file));
    // B keeps the file: a second cat needs no peer
    let again = ferry(b.path())
        .args(["ipfs", "cat", &cid])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        again.stdout == out.stdout,
        "the second cat printed other bytes"
    );
}

#[test]
fn cat_of_a_cid_nobody_has_fails_within_the_timeout() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = output(ferry(b.path()).args([
        "ipfs",
        "cat",
        "--timeout",
        "2s",
        "--peer",
        &daemon.addr,
        cid,
    ]));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        stderr.trim().starts_with(&format!(
            "ferry: cat {cid}: no peer sent block {cid}: 1 peers connected"
        )),
        "{stderr}"
    );
}

#[test]
fn swarm_connect_and_peers_go_through_the_daemon() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let daemon_a = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let _daemon_b = Daemon::start(b.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let stdout = ok(ferry(b.path()).args(["ipfs", "swarm", "connect", &daemon_a.addr]));
    assert_eq!(stdout.trim(), format!("connect {} success", daemon_a.addr));
    let peers = ok(ferry(b.path()).args(["ipfs", "swarm", "peers"]));
    assert_eq!(peers.trim(), daemon_a.addr);

    let c = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(ferry(c.path()).args(["ipfs", "swarm", "peers"]));
    assert_eq!(code, 1);
    let root = c.path().canonicalize().unwrap();
    assert_eq!(
        stderr.trim(),
        format!(
            "ferry: no daemon is running on {}: start `ferry daemon`",
            root.display()
        )
    );
}
