//! Helpers for the end-to-end tests: run the ferry binary, start daemons that are killed when
//! the test ends, find the cached fixtures.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A fixture built by scripts/fixtures.sh (built here if missing): `busybox`, `debian`,
/// `python`, as an OCI layout or, with `.tar`, an OCI archive.
pub fn fixture(name: &str) -> PathBuf {
    let path = workspace().join("target/fixtures").join(name);
    if !path.exists() {
        let mut build = Command::new(workspace().join("scripts/fixtures.sh"));
        // busybox is always built; the larger images only when asked for
        let image = name.trim_end_matches(".tar");
        if image != "busybox" {
            build.arg(image);
        }
        let status = build
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/fixtures.sh");
        assert!(status.success(), "scripts/fixtures.sh failed");
    }
    path
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Prints why a test is skipped; returns true when it must be.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIP {test}: needs root (mounts and runc)");
    true
}

/// Loads the busybox fixture into `root`, pushes it to IPFS and returns the image CID.
pub fn busybox_pushed(root: &Path) -> String {
    ok(ferry(root).args(["load", "-i"]).arg(fixture("busybox.tar")));
    ok(ferry(root).args(["push", "-q", "ipfs://busybox"]))
        .trim()
        .to_string()
}

/// A root with the busybox fixture loaded; every container still in it is force-removed on
/// drop, so a failed test leaves nothing running or mounted.
pub struct BusyboxRoot {
    dir: tempfile::TempDir,
}

impl BusyboxRoot {
    /// The root directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for BusyboxRoot {
    fn drop(&mut self) {
        let (_, ids, _) = output(ferry(self.path()).args(["ps", "-aq", "--no-trunc"]));
        for id in ids.lines() {
            let _ = output(ferry(self.path()).args(["rm", "-f", id]));
        }
    }
}

/// `skopeo ARGS...`, which must succeed; its stdout.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new root with busybox loaded.
pub fn busybox_root() -> BusyboxRoot {
    let dir = tempfile::tempdir().unwrap();
    ok(ferry(dir.path())
        .args(["load", "-i"])
        .arg(fixture("busybox.tar")));
    BusyboxRoot { dir }
}

/// `ferry --root ROOT ARGS...`.
pub fn ferry(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("--root").arg(root);
    cmd.env_remove("FERRY_ROOT");
    cmd
}

/// Runs the command and returns its output, with stdout and stderr as text.
pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let out: Output = cmd.output().expect("run ferry");
    let code = out.status.code().unwrap_or(-1);
    (
        code,
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs the command and panics with its stderr unless it exits 0; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let (code, stdout, stderr) = output(cmd);
    assert_eq!(
        code, 0,
        "command failed: {cmd:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

/// A `ferry daemon` killed and waited for when dropped.
pub struct Daemon {
    child: Child,
    /// The address peers dial, with /p2p/ID.
    pub addr: String,
    /// The registry endpoint's `HOST:PORT`, when it serves one.
    pub registry: Option<String>,
}

impl Daemon {
    /// Starts a daemon on `root` listening on `listen` (its registry endpoint on a free port,
    /// unless `extra` says `--no-registry`), and waits until it is ready.
    pub fn start(root: &Path, listen: &str, extra: &[&str]) -> Daemon {
        let mut cmd = ferry(root);
        cmd.args(["daemon", "--listen", listen]);
        if !extra.contains(&"--no-registry") {
            cmd.args(["--registry", "127.0.0.1:0"]);
        }
        cmd.args(extra);
        Daemon::spawn(cmd)
    }

    /// The TCP port the daemon listens on.
    pub fn port(&self) -> u16 {
        let parts: Vec<&str> = self.addr.split('/').collect();
        parts[4].parse().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Every blob file under ROOT/blobs/sha256, by name.
pub fn blobs(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("blobs/sha256"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The images that `ferry` (a command for some root) lists, in `ferry images` order, as
/// (name, digest) pairs read from `images --format json`: the name is the repository, with
/// `:TAG` when there is a tag.
pub fn listed_images(mut ferry: Command) -> Vec<(String, String)> {
    let json = ok(ferry.args(["images", "--format", "json"]));
    json.lines()
        .map(|line| {
            let image: serde_json::Value = serde_json::from_str(line).unwrap();
            let repository = image["Repository"].as_str().unwrap();
            let name = match image["Tag"].as_str().unwrap() {
                "<none>" => repository.to_string(),
                tag => format!("{repository}:{tag}"),
            };
            (name, image["Digest"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The names of the images in `root`, in `ferry images` order.
pub fn image_names(root: &Path) -> Vec<String> {
    listed_images(ferry(root))
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// The sha256 of a file as `sha256sum` prints it (an implementation other than ferry's).
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A docker-registry on a free loopback port, killed and waited for when dropped.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one, or returns None (with a SKIP line) when docker-registry is not installed.
    pub fn start() -> Option<Registry> {
        if Command::new("docker-registry")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIP: docker-registry is not installed (scripts/setup.sh installs it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
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
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Registry {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where scripts/install-peers.sh installs the outside peers (kubo, Helia, Node 22).
pub fn peers_dir() -> PathBuf {
    workspace().join("target/peers")
}

/// True when `path` (a peer installed by scripts/install-peers.sh) exists. Otherwise prints a
/// SKIP line and returns false, or panics when FERRY_REQUIRE_PEERS is set (as CI sets it).
pub fn peer_installed(test: &str, what: &str, path: &Path) -> bool {
    if path.exists() {
        return true;
    }
    let why = format!(
        "{what} is not installed ({} missing; run scripts/install-peers.sh)",
        path.display()
    );
    if std::env::var_os("FERRY_REQUIRE_PEERS").is_some() {
        panic!("{test}: {why}, and FERRY_REQUIRE_PEERS is set");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

/// Writes `size` deterministic pseudo-random bytes (xorshift, so no two chunks are alike).
pub fn pseudo_random_file(path: &Path, size: usize, seed: u64) {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    std::fs::write(path, data).unwrap();
}

/// An outside peer process (kubo or Helia) serving a file; killed by its PID when dropped.
pub struct PeerProcess {
    child: Child,
    /// The CID the peer gave the file.
    pub cid: String,
    /// The address to dial, with /p2p/ID.
    pub addr: String,
}

impl PeerProcess {
    /// Spawns `cmd`, which prints `{"cid","multiaddr",...}` on one line once it serves, and
    /// waits up to 60 s for that line.
    pub fn serve(mut cmd: Command) -> PeerProcess {
        let (tx, rx) = std::sync::mpsc::channel();
        let child = spawn_reading(&mut cmd, move |line| {
            if line.starts_with('{') {
                let _ = tx.send(line);
            }
        });
        let mut peer = PeerProcess {
            child,
            cid: String::new(),
            addr: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{cmd:?} printed no JSON line within 60s"));
        let info: serde_json::Value = serde_json::from_str(&line).unwrap();
        peer.cid = info["cid"].as_str().unwrap().to_string();
        peer.addr = info["multiaddr"].as_str().unwrap().to_string();
        peer
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Runs `cmd` with stdout into `stdout_to` (or discarded), killing it after `limit`; returns
/// its exit code and how long it ran. Panics with the command when it had to be killed.
pub fn run_with_limit(
    mut cmd: Command,
    stdout_to: Option<&Path>,
    limit: Duration,
) -> (i32, Duration) {
    let out = match stdout_to {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    };
    let started = Instant::now();
    let mut child = cmd
        .stdout(out)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The CID `ipfs add --cid-version=1` gives FILE, from ipfs-unixfs-importer (add-cid.mjs); None
/// (with a SKIP line) when node or the packages are missing and FERRY_REQUIRE_PEERS is unset.
pub fn js_cid(file: &Path) -> Option<String> {
    let peers = workspace().join("target/peers");
    let script = peers.join(format!("add-cid-{}.mjs", std::process::id()));
    let ready = peers.join("node_modules/ipfs-unixfs-importer").is_dir()
        && std::fs::copy(workspace().join("../shared/peers/add-cid.mjs"), &script).is_ok();
    if !ready {
        assert!(
            std::env::var_os("FERRY_REQUIRE_PEERS").is_none(),
            "JS peers missing"
        );
        eprintln!("SKIP js_cid: run scripts/install-peers.sh");
        return None;
    }
    let out = Command::new("node")
        .arg(&script)
        .arg(file)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Daemon {
    /// Starts a daemon from a prepared command (`ip netns exec NS ferry --root R daemon ...`)
    /// and waits until it is ready; killed by its PID when dropped, like [`Daemon::start`].
    pub fn spawn(mut cmd: Command) -> Daemon {
        let (tx, rx) = std::sync::mpsc::channel();
        let (mut addr, mut registry) = (None, None);
        let child = spawn_reading(&mut cmd, move |line| {
            if let Some(a) = line.strip_prefix("Swarm listening on ") {
                addr.get_or_insert(a.to_string());
            }
            if let Some(r) = line.strip_prefix("Registry listening on ") {
                registry = Some(r.to_string());
            }
            if line.starts_with("Daemon is ready") {
                let _ = tx.send((addr.take(), registry.take()));
            }
        });
        let (addr, registry) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{cmd:?} did not say it was ready within 20s"));
        let addr = addr.expect("daemon printed no listen address");
        Daemon {
            child,
            addr,
            registry,
        }
    }

    /// The daemon's peer ID (the end of its address).
    pub fn peer_id(&self) -> String {
        self.addr.rsplit('/').next().unwrap().to_string()
    }
}

/// Polls `ferry ipfs swarm peers` on `root` until every peer ID of `want` is connected, for at
/// most `limit`; returns the last listing.
pub fn wait_for_swarm_peers(root: &Path, want: &[String], limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (_, listing, _) = output(ferry(root).args(["ipfs", "swarm", "peers"]));
        if want.iter().all(|p| listing.contains(p.as_str())) {
            return listing;
        }
        assert!(
            Instant::now() < deadline,
            "peers {want:?} not connected to {} within {limit:?}; connected: {listing}",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when the program `tool` runs (`tool --version`). Otherwise prints a SKIP line and
/// returns false, or panics when FERRY_REQUIRE_PEERS is set.
pub fn tool_installed(test: &str, tool: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    let why = format!("{tool} is not installed (scripts/setup.sh installs it)");
    if std::env::var_os("FERRY_REQUIRE_PEERS").is_some() {
        panic!("{test}: {why}, and FERRY_REQUIRE_PEERS is set");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

/// A `ferry ipfs registry serve` on a free loopback port, killed and waited for when dropped.
pub struct RegistryServe {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl RegistryServe {
    /// Starts the endpoint on `root` with `extra` flags and waits for its address line.
    pub fn start(root: &Path, extra: &[&str]) -> RegistryServe {
        let mut child = ferry(root)
            .args(["ipfs", "registry", "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ferry ipfs registry serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("Registry listening on ") {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("registry endpoint printed no address within 30s");
        RegistryServe { child, addr }
    }
}

impl Drop for RegistryServe {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// An HTTP answer read by [`http`].
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` as written (the path is not
/// normalised, so `..` reaches the server) and reads the whole answer.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Stops a process the test started: SIGTERM, up to 5 s to exit, then SIGKILL; always reaped.
pub fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Spawns `cmd` (stderr inherited) and hands each line it prints on stdout to `on_line`, on a
/// thread of its own, until the process closes stdout.
fn spawn_reading(cmd: &mut Command, mut on_line: impl FnMut(String) + Send + 'static) -> Child {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .for_each(&mut on_line);
    });
    child
}

/// A new pseudo-terminal of `rows` x `cols`: its master side and its slave side.
pub fn open_pty(rows: u16, cols: u16) -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the given ints; the name buffer is null
    // (not wanted) and the termios pointer null (defaults).
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here only.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    }
}

/// Runs `cmd` with stdin, stdout and stderr on a new pseudo-terminal of 24x100 and returns
/// everything it wrote there, once it exits (within 30 s).
pub fn on_a_pty(mut cmd: Command) -> (i32, Vec<u8>) {
    let (mut master, slave) = open_pty(24, 100);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the child, the last holder of the slave side, has gone.
        while let Ok(n) = std::io::Read::read(&mut master, &mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{child:?} did not finish within 30s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, reader.join().unwrap())
}

/// The shared peers folder beside the project (start scripts, known values).
pub fn shared_peers() -> PathBuf {
    workspace().join("../shared/peers")
}

/// containerd started by the shared script under a temporary directory, killed by its PID and
/// waited for when dropped.
pub struct Containerd {
    /// Its state, config and socket.
    pub dir: tempfile::TempDir,
    pid: i32,
}

impl Containerd {
    /// Starts containerd (`../shared/peers/start-containerd.sh`) under a temporary directory.
    pub fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let script = shared_peers().join("start-containerd.sh");
        let pid = ok(Command::new(script).arg(dir.path()))
            .trim()
            .parse()
            .unwrap();
        Containerd { dir, pid }
    }

    /// `ctr` talking to this containerd.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.dir.path().join("containerd.sock"));
        cmd
    }

    /// `ctr-remote` (stargz-snapshotter's converter, built by scripts/install-peers.sh) talking
    /// to this containerd.
    pub fn ctr_remote(&self) -> Command {
        let mut cmd = Command::new(peers_dir().join("ctr-remote"));
        cmd.arg("-a").arg(self.dir.path().join("containerd.sock"));
        cmd
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..250 {
            if nix::sys::signal::kill(pid, None).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}
