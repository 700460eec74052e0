//! Test helpers: the busybox fixture, a docker-registry per test, skopeo, hashing.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferry_content::Store;
use sha2::{Digest as _, Sha256};

/// The shared peers folder (`FERRY_PEERS`, else `../shared/peers` beside the workspace).
pub fn peers_dir() -> PathBuf {
    match std::env::var_os("FERRY_PEERS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers"),
    }
}

/// Whether every tool is installed; prints why the test is skipped when one is not.
pub fn have(tools: &[&str]) -> bool {
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("skipped: {tool} is not installed");
            return false;
        }
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if uid != b"0\n" {
        eprintln!("skipped: building the busybox fixture needs root");
        return false;
    }
    if !peers_dir().join("make-busybox-oci.sh").is_file() {
        eprintln!(
            "skipped: make-busybox-oci.sh not found in {}",
            peers_dir().display()
        );
        return false;
    }
    true
}

/// The busybox OCI layout (tag `latest`), built once and cached under `target/fixtures`.
pub fn busybox_layout() -> PathBuf {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(build_busybox).clone()
}

fn build_busybox() -> PathBuf {
    let fixtures = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../fixtures");
    let layout = fixtures.join("busybox");
    if layout.join("index.json").is_file() {
        return layout;
    }
    std::fs::create_dir_all(&fixtures).unwrap();
    // Built beside and renamed into place, so parallel test processes never see half of it.
    let partial = fixtures.join(format!("busybox.{}", std::process::id()));
    run(Command::new(peers_dir().join("make-busybox-oci.sh"))
        .arg(&partial)
        .arg("latest"));
    if std::fs::rename(&partial, &layout).is_err() {
        std::fs::remove_dir_all(&partial).unwrap();
    }
    layout
}

/// Runs a command, panicking with its stderr when it fails; returns its stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs skopeo with `args`.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    run(Command::new("skopeo").args(args))
}

/// `sha256:<hex>` of `bytes`, computed here rather than by ferry.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A fresh store in a temporary directory.
pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("root")).unwrap();
    (dir, store)
}

/// A docker-registry on a free loopback port, killed and waited for when dropped.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let registry = Registry {
            child,
            addr,
            _dir: dir,
        };
        registry.wait_listening();
        registry
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&self.addr).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default();
                panic!(
                    "docker-registry did not listen on {} within 10 s: {log}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pushes the busybox layout as `name` (`busybox:latest`), with extra skopeo flags.
    pub fn push_busybox(&self, name: &str, flags: &[&str]) {
        let src = format!("oci:{}:latest", busybox_layout().display());
        let dest = format!("docker://{}/{name}", self.addr);
        let mut args = vec!["copy", "-q", "--dest-tls-verify=false"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&src, &dest]);
        skopeo(&args);
    }

    /// The manifest bytes the registry serves for `name`, as skopeo reads them.
    pub fn raw_manifest(&self, name: &str) -> Vec<u8> {
        let src = format!("docker://{}/{name}", self.addr);
        skopeo(&["inspect", "--tls-verify=false", "--raw", &src])
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
