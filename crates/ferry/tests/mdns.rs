//! mDNS: two daemons on one LAN (two network namespaces joined by a veth pair) find each
//! other with no configuration, and B pulls A's image with no --peer.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{busybox_pushed, is_root, ok, wait_for_swarm_peers, Daemon};

/// Two network namespaces joined by a veth pair, each end with an address of a private test
/// range; deleted when dropped (deleting a namespace deletes its veth end and the pair).
struct Lan {
    names: [String; 2],
}

/// The LAN's addresses: only on the veth ends, which exist only inside the namespaces.
const ADDRS: [&str; 2] = ["10.213.77.1", "10.213.77.2"];

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    fn new(tag: &str) -> Lan {
        let id = std::process::id() % 100_000;
        let names = [format!("fy{tag}{id}a"), format!("fy{tag}{id}b")];
        let lan = Lan { names };
        let veth = [format!("fv{id}{tag}a"), format!("fv{id}{tag}b")];
        for ns in &lan.names {
            ip(&["netns", "add", ns]);
        }
        ip(&[
            "link", "add", &veth[0], "type", "veth", "peer", "name", &veth[1],
        ]);
        for i in 0..2 {
            let (ns, dev) = (&lan.names[i], &veth[i]);
            ip(&["link", "set", dev, "netns", ns]);
            let cidr = format!("{}/24", ADDRS[i]);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lan
    }

    /// `ferry --root ROOT` run inside namespace `i`.
    fn ferry(&self, i: usize, root: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[i], env!("CARGO_BIN_EXE_ferry")]);
        cmd.arg("--root").arg(root).env_remove("FERRY_ROOT");
        // what each node sent and heard on the LAN, printed by the harness if the test fails
        cmd.env("FERRY_LOG", "warn,libp2p_mdns=trace,ferry_ipfs=debug");
        cmd
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn daemons_on_one_lan_find_each_other_with_mdns() {
    if !is_root() {
        eprintln!("SKIP daemons_on_one_lan_find_each_other_with_mdns: needs root (ip netns)");
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cid = busybox_pushed(a.path());
    let cid = cid.as_str();

    // declared before the daemons, so dropped after them even when an assertion fails
    let lan = Lan::new("m");
    let mut cmd_a = lan.ferry(0, a.path());
    cmd_a.args(["daemon", "--listen", "/ip4/0.0.0.0/tcp/0"]);
    let daemon_a = Daemon::spawn(cmd_a);
    let mut cmd_b = lan.ferry(1, b.path());
    cmd_b.args(["daemon", "--listen", "/ip4/0.0.0.0/tcp/0"]);
    let _daemon_b = Daemon::spawn(cmd_b);

    let peers = wait_for_swarm_peers(b.path(), &[daemon_a.peer_id()], Duration::from_secs(30));
    assert!(
        peers.contains(&format!("/ip4/{}/tcp/", ADDRS[0])),
        "B reached A other than over the LAN: {peers}"
    );
    let stdout = ok(lan
        .ferry(1, b.path())
        .args(["pull", "--timeout", "30s", cid]));
    assert_eq!(stdout.trim(), cid);
    assert_eq!(common::image_names(b.path()), [cid.to_string()]);
}
