//! The default bridge network with the real CNI plugins (root only, as CI runs): a container
//! reaches the host through the bridge, a published port serves the container on the host,
//! and `rm -f` takes the port, the network namespace and the address away again.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{busybox_root, ferry, ok, output, skip_unless_root};

/// Where host-local keeps the addresses of ferry's network.
const LEASES: &str = "/var/lib/cni/networks/ferry";

fn inspect(root: &Path, name: &str) -> serde_json::Value {
    let out = ok(ferry(root).args(["inspect", name]));
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(url: &str) -> (i32, String) {
    let (code, stdout, _) = output(Command::new("curl").args(["-sS", "--max-time", "2", url]));
    (code, stdout)
}

/// The body at `url` once the server answers (within 5 s).
fn serve(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match get(url) {
            (0, body) => return body,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            (code, _) => panic!("curl {url} failed with {code}"),
        }
    }
}

#[test]
fn a_container_on_the_bridge_reaches_the_host_and_knows_its_address() {
    if skip_unless_root("a_container_on_the_bridge_reaches_the_host_and_knows_its_address") {
        return;
    }
    let root = busybox_root();
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        conn.write_all(b"hello from the host\n").unwrap();
        peer
    });
    let script = format!(
        "nc 10.4.0.1 {port} </dev/null; hostname; grep \"$(hostname)\" /etc/hosts | cut -f1; \
         ip -4 -o addr show eth0 | awk '{{print $4}}'"
    );
    let out = ok(ferry(root.path()).args([
        "run",
        "--rm",
        "--hostname",
        "boat",
        "busybox",
        "sh",
        "-c",
        &script,
    ]));
    let peer = server.join().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["hello from the host", "boat"], "{out}");
    // the host saw the container's own address, the one in its /etc/hosts and on eth0
    let ip = peer.ip().to_string();
    assert!(ip.starts_with("10.4.0."), "{ip}");
    assert_eq!(lines[2], ip);
    assert_eq!(lines[3], format!("{ip}/24"));
    assert!(!Path::new(LEASES).join(&ip).exists(), "--rm released {ip}");
}

#[test]
fn a_published_port_serves_the_container_until_it_is_removed() {
    if skip_unless_root("a_published_port_serves_the_container_until_it_is_removed") {
        return;
    }
    let root = busybox_root();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "served by busybox httpd\n").unwrap();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let volume = format!("{}:/www:ro", www.path().display());
    let id = ok(ferry(root.path()).args([
        "run", "-d", "--name", "web", "-p", &publish, "-v", &volume, "busybox", "httpd", "-f",
        "-p", "8080", "-h", "/www",
    ]))
    .trim()
    .to_string();
    let url = format!("http://127.0.0.1:{port}/index.html");
    assert_eq!(serve(&url), "served by busybox httpd\n");

    // a stopped container is off the network; started again, it is back with its ports
    let first_ip = inspect(root.path(), "web")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    ok(ferry(root.path()).args(["stop", "-t", "1", "web"]));
    assert!(
        !Path::new(LEASES).join(&first_ip).exists(),
        "stop kept {first_ip}"
    );
    assert!(!Path::new("/run/ferry/netns").join(&id).exists());
    assert_eq!(
        inspect(root.path(), "web")["NetworkSettings"]["IPAddress"],
        ""
    );
    assert_ne!(get(&url).0, 0, "a stopped container still answers");
    ok(ferry(root.path()).args(["start", "web"]));
    assert_eq!(serve(&url), "served by busybox httpd\n");

    let info = inspect(root.path(), "web");
    let settings = &info["NetworkSettings"];
    let ip = settings["IPAddress"].as_str().unwrap().to_string();
    assert_eq!(
        settings["Ports"],
        serde_json::json!({"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": port.to_string()}]})
    );
    let lease = Path::new(LEASES).join(&ip);
    assert_eq!(
        std::fs::read_to_string(&lease).unwrap().lines().next(),
        Some(id.as_str())
    );
    let netns = Path::new("/run/ferry/netns").join(&id);
    assert_eq!(settings["SandboxKey"], netns.display().to_string());
    // the port is taken while the container runs, and so is one a host program listens on
    let (code, _, stderr) =
        output(ferry(root.path()).args(["run", "--rm", "-p", &publish, "busybox", "true"]));
    assert_eq!(code, 125);
    assert_eq!(
        stderr,
        format!("ferry: run: Bind for 127.0.0.1:{port} failed: port is already allocated\n")
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = listener.local_addr().unwrap().port();
    let (code, _, stderr) = output(ferry(root.path()).args([
        "run",
        "--rm",
        "-p",
        &format!("{busy}:80"),
        "busybox",
        "true",
    ]));
    assert_eq!(code, 125);
    assert_eq!(
        stderr,
        format!("ferry: run: Bind for 0.0.0.0:{busy} failed: port is already allocated\n")
    );
    drop(listener);
    let ps = ok(ferry(root.path()).args(["ps"]));
    assert!(ps.contains(&format!("127.0.0.1:{port}->8080/tcp")), "{ps}");

    assert_eq!(ok(ferry(root.path()).args(["rm", "-f", "web"])), "web\n");
    assert_ne!(get(&url).0, 0, "the port still answers after rm");
    assert!(!lease.exists(), "host-local still holds {ip}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&netns.display().to_string()),
        "the netns is still mounted"
    );
    assert!(!netns.exists());
    let nat = ok(Command::new("iptables").args(["-t", "nat", "-S"]));
    assert!(!nat.contains(&id), "port rules left behind:\n{nat}");
}

#[test]
fn publishing_needs_the_bridge_network() {
    let root = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(ferry(root.path()).args(["run", "-p", "80", "busybox"]));
    // docker run's code for a command line it refuses
    assert_eq!(code, 125);
    assert!(
        stderr.contains("invalid port mapping \"80\": use [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]"),
        "{stderr}"
    );
    if skip_unless_root("publishing_needs_the_bridge_network") {
        return;
    }
    let root = busybox_root();
    let (code, _, stderr) =
        output(ferry(root.path()).args(["run", "--net", "host", "-p", "80:80", "busybox"]));
    assert_eq!(code, 125);
    assert_eq!(
        stderr,
        "ferry: run: -p needs the bridge network (--net bridge)\n"
    );
    assert_eq!(ok(ferry(root.path()).args(["ps", "-aq"])), "");
}

#[test]
fn the_network_of_a_killed_rm_run_is_released_by_the_next_run() {
    if skip_unless_root("the_network_of_a_killed_rm_run_is_released_by_the_next_run") {
        return;
    }
    let root = busybox_root();
    let mut run = ferry(root.path())
        .args(["run", "--rm", "busybox", "sleep", "30"])
        .spawn()
        .unwrap();
    let containers = root.path().join("containers");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (id, ip) = loop {
        let attached = std::fs::read_dir(&containers).ok().and_then(|mut d| {
            let dir = d.next()?.ok()?;
            let net = std::fs::read(dir.path().join("network.json")).ok()?;
            let net: serde_json::Value = serde_json::from_slice(&net).ok()?;
            let id = dir.file_name().to_string_lossy().into_owned();
            Some((id, net["ip"].as_str()?.to_string()))
        });
        if let Some(found) = attached {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the container never got its network"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(Path::new(LEASES).join(&ip).exists());
    let runc_root = root.path().join("runc");
    let runc_state = || {
        let mut runc = Command::new("runc");
        runc.arg("--root").arg(&runc_root).args(["state", &id]);
        output(&mut runc).1
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !runc_state().contains("\"running\"") {
        assert!(Instant::now() < deadline, "the container never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ferry dies, then its container: nobody is left to clean up
    run.kill().unwrap();
    run.wait().unwrap();
    let mut kill = Command::new("runc");
    kill.arg("--root")
        .arg(&runc_root)
        .args(["kill", &id, "KILL"]);
    ok(&mut kill);
    let deadline = Instant::now() + Duration::from_secs(10);
    while runc_state().contains("\"running\"") {
        assert!(Instant::now() < deadline, "the container outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        ok(ferry(root.path()).args(["run", "--rm", "--net", "none", "busybox", "true"])),
        ""
    );
    assert!(
        !Path::new(LEASES).join(&ip).exists(),
        "host-local still holds {ip}"
    );
    assert!(!Path::new("/run/ferry/netns").join(&id).exists());
    assert!(!containers.join(&id).exists());
}
