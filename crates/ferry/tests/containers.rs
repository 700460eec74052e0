//! The container lifecycle with real overlayfs and runc (root only, as CI runs): detached
//! containers, logs, stop, kill, start, wait, exec, rm.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ferry, fixture, ok, output, skip_unless_root};

/// A root with busybox loaded; every container still there is force-removed on drop, so a
/// failed test leaves nothing running or mounted.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn with_busybox() -> Root {
        let dir = tempfile::tempdir().unwrap();
        ok(ferry(dir.path())
            .args(["load", "-i"])
            .arg(fixture("busybox.tar")));
        Root { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn ferry(&self, args: &[&str]) -> String {
        ok(ferry(self.path()).args(args))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let (_, ids, _) = output(ferry(self.path()).args(["ps", "-aq", "--no-trunc"]));
        for id in ids.lines() {
            let _ = output(ferry(self.path()).args(["rm", "-f", id]));
        }
    }
}

/// Polls `ferry logs` until its stdout has `lines` lines.
fn logs_until(root: &Root, name: &str, lines: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = root.ferry(&["logs", name]);
        if out.lines().count() >= lines {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {lines} log lines of {name}, have: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mounted_under(root: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts.contains(root.to_str().unwrap())
}

#[test]
fn detached_container_logs_then_stops_within_its_grace_and_is_removed() {
    if skip_unless_root("detached_container_logs_then_stops_within_its_grace_and_is_removed") {
        return;
    }
    let root = Root::with_busybox();
    // sh as pid 1 ignores SIGTERM: stop must fall back to SIGKILL after -t.
    let script = "i=0; while true; do echo line $i; echo oops $i >&2; i=$((i+1)); sleep 0.1; done";
    let id = root.ferry(&[
        "run", "-d", "--name", "ticker", "busybox", "sh", "-c", script,
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the full ID: {id:?}");

    let (code, stdout, stderr) = output(ferry(root.path()).args(["logs", "ticker"]));
    assert_eq!(code, 0);
    let stdout = if stdout.lines().count() >= 3 {
        stdout
    } else {
        logs_until(&root, "ticker", 3)
    };
    let first: Vec<&str> = stdout.lines().take(3).collect();
    assert_eq!(first, ["line 0", "line 1", "line 2"]);
    assert!(
        stderr.is_empty() || stderr.starts_with("oops 0\n"),
        "{stderr}"
    );

    let ps = root.ferry(&["ps"]);
    let row = ps.lines().nth(1).unwrap_or_default();
    assert!(ps.starts_with("CONTAINER ID   IMAGE"), "{ps}");
    assert!(
        row.starts_with(&id[..12]) && row.ends_with("ticker"),
        "{ps}"
    );
    assert!(row.contains("   Up "), "{ps}");
    assert_eq!(root.ferry(&["ps", "-q"]), format!("{}\n", &id[..12]));

    let started = Instant::now();
    assert_eq!(root.ferry(&["stop", "-t", "1", "ticker"]), "ticker\n");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "stop -t 1 took {took:?}");
    assert_eq!(root.ferry(&["ps", "-q"]), "");
    let all = root.ferry(&["ps", "-a"]);
    assert!(all.contains("Exited (137)"), "{all}");
    let inspect: serde_json::Value = serde_json::from_str(&root.ferry(&["inspect", id])).unwrap();
    assert_eq!(inspect[0]["State"]["Status"], "exited");
    assert_eq!(inspect[0]["State"]["ExitCode"], 137);
    assert_eq!(inspect[0]["Name"], "/ticker");
    // the output written before the stop is all kept, in order
    let kept = root.ferry(&["logs", "ticker"]);
    let n = kept.lines().count();
    let want: Vec<String> = (0..n).map(|i| format!("line {i}")).collect();
    assert_eq!(kept.lines().collect::<Vec<_>>(), want);

    assert_eq!(root.ferry(&["rm", &id[..12]]), format!("{}\n", &id[..12]));
    assert_eq!(root.ferry(&["ps", "-aq"]), "");
    assert!(!root.path().join("containers").join(id).exists());
    assert!(!root.path().join("snapshots/active").join(id).exists());
    assert!(!mounted_under(root.path()), "a mount was left behind");
    // the name is free again
    root.ferry(&["run", "--name", "ticker", "--rm", "busybox", "true"]);
}

#[test]
fn exec_runs_in_the_running_container_and_passes_exit_codes() {
    if skip_unless_root("exec_runs_in_the_running_container_and_passes_exit_codes") {
        return;
    }
    let root = Root::with_busybox();
    let script = "echo ready > /ready; while true; do sleep 1; done";
    let id = root.ferry(&["run", "-d", "--name", "box", "busybox", "sh", "-c", script]);
    let id = id.trim();
    let out = root.ferry(&[
        "exec",
        "-e",
        "X=forty two",
        "-w",
        "/tmp",
        "box",
        "sh",
        "-c",
        "echo \"$X\" $(pwd) $(hostname) $(cat /proc/1/cmdline | tr '\\0' ' ')",
    ]);
    let want = format!("forty two /tmp {} sh -c {script}\n", &id[..12]);
    assert_eq!(out, want);
    // exec sees the container's files, and its changes stay in the container
    let deadline = Instant::now() + Duration::from_secs(10);
    while root.ferry(&["exec", "box", "cat", "/ready"]) != "ready\n" {
        assert!(Instant::now() < deadline, "/ready never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, _) = output(ferry(root.path()).args(["exec", "box", "sh", "-c", "exit 5"]));
    assert_eq!(code, 5);
    let (code, _, stderr) = output(ferry(root.path()).args(["exec", "box", "/no/such"]));
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("/no/such"), "{stderr}");

    root.ferry(&["rm", "-f", "box"]);
    let (code, _, stderr) = output(ferry(root.path()).args(["exec", "box", "true"]));
    assert_eq!(code, 125);
    assert_eq!(stderr, "ferry: run: no such container: box\n");
}

#[test]
fn start_runs_a_stopped_container_again_with_its_files() {
    if skip_unless_root("start_runs_a_stopped_container_again_with_its_files") {
        return;
    }
    let root = Root::with_busybox();
    let script = "echo x >> /count; wc -l < /count";
    // a foreground run without --rm keeps the container
    let out = root.ferry(&["run", "--name", "counter", "busybox", "sh", "-c", script]);
    assert_eq!(out, "1\n");
    let all = root.ferry(&["ps", "-a"]);
    assert!(
        all.contains("Exited (0)") && all.contains("counter"),
        "{all}"
    );

    assert_eq!(root.ferry(&["start", "counter"]), "counter\n");
    assert_eq!(root.ferry(&["wait", "counter"]), "0\n");
    assert_eq!(root.ferry(&["logs", "counter"]), "2\n");
    assert!(
        !mounted_under(root.path()),
        "an exited container stays mounted"
    );
}

#[test]
fn kill_sends_the_signal_and_wait_prints_the_exit_code() {
    if skip_unless_root("kill_sends_the_signal_and_wait_prints_the_exit_code") {
        return;
    }
    let root = Root::with_busybox();
    let script = "trap 'echo got hup; exit 7' HUP; echo armed; while true; do sleep 0.1; done";
    root.ferry(&["run", "-d", "--name", "trap", "busybox", "sh", "-c", script]);
    logs_until(&root, "trap", 1);
    assert_eq!(root.ferry(&["kill", "-s", "HUP", "trap"]), "trap\n");
    assert_eq!(root.ferry(&["wait", "trap"]), "7\n");
    assert_eq!(root.ferry(&["logs", "trap"]), "armed\ngot hup\n");
    let (code, _, stderr) = output(ferry(root.path()).args(["kill", "trap"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "ferry: cannot kill container trap: container is not running\n"
    );
}

#[test]
fn detached_run_of_a_missing_command_exits_127_and_rm_refuses_running_ones() {
    if skip_unless_root("detached_run_of_a_missing_command_exits_127_and_rm_refuses_running_ones") {
        return;
    }
    let root = Root::with_busybox();
    let (code, stdout, stderr) =
        output(ferry(root.path()).args(["run", "-d", "--name", "bad", "busybox", "/no/such"]));
    assert_eq!(code, 127, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.starts_with("ferry: run: container ") && stderr.contains("/no/such"));
    let all = root.ferry(&["ps", "-a"]);
    assert!(all.contains("Created") && all.contains("bad"), "{all}");

    root.ferry(&["run", "-d", "--name", "up", "busybox", "sleep", "60"]);
    let (code, _, stderr) = output(ferry(root.path()).args(["rm", "up"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "ferry: cannot remove container up: container is running: stop the container before \
         removing or force remove\n"
    );
    let (code, _, stderr) =
        output(ferry(root.path()).args(["run", "-d", "--name", "up", "busybox", "true"]));
    assert_eq!(code, 125);
    assert!(
        stderr.contains("the container name \"up\" is already in use"),
        "{stderr}"
    );
    assert_eq!(root.ferry(&["rm", "-f", "up", "bad"]), "up\nbad\n");
    assert_eq!(root.ferry(&["ps", "-aq"]), "");
    assert!(!mounted_under(root.path()));
}
