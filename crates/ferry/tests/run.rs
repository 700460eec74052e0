//! `ferry run` with real overlayfs and runc (root only, as CI runs).

mod common;

use common::{busybox_root, ferry, ok, output, skip_unless_root, Daemon};

#[test]
fn run_busybox_prints_what_its_cmd_prints() {
    if skip_unless_root("run_busybox_prints_what_its_cmd_prints") {
        return;
    }
    let root = busybox_root();
    let stdout = ok(ferry(root.path()).args(["run", "--rm", "busybox"]));
    assert_eq!(stdout, "hello from busybox\n");
    // --rm left no container behind and nothing mounted
    let left = std::fs::read_dir(root.path().join("containers"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(root.path().to_str().unwrap()));
}

#[test]
fn run_passes_the_exit_code_through() {
    if skip_unless_root("run_passes_the_exit_code_through") {
        return;
    }
    let root = busybox_root();
    let (code, _, _) =
        output(ferry(root.path()).args(["run", "--rm", "busybox", "sh", "-c", "exit 3"]));
    assert_eq!(code, 3);
}

#[test]
fn run_applies_env_workdir_and_entrypoint_flags() {
    if skip_unless_root("run_applies_env_workdir_and_entrypoint_flags") {
        return;
    }
    let root = busybox_root();
    let stdout = ok(ferry(root.path()).args([
        "run",
        "--rm",
        "-e",
        "GREETING=hi there",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "echo \"$GREETING\" $(pwd)",
    ]));
    assert_eq!(stdout, "hi there /tmp\n");
    let stdout = ok(ferry(root.path()).args([
        "run",
        "--rm",
        "--entrypoint",
        "/bin/echo",
        "busybox",
        "a",
        "b",
    ]));
    assert_eq!(stdout, "a b\n");
}

#[test]
fn run_of_a_missing_command_exits_127() {
    if skip_unless_root("run_of_a_missing_command_exits_127") {
        return;
    }
    let root = busybox_root();
    let (code, _, stderr) = output(ferry(root.path()).args(["run", "--rm", "busybox", "/no/such"]));
    assert_eq!(code, 127, "stderr: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ferry: run: ") && last.contains("/no/such"),
        "{stderr}"
    );
}

#[test]
fn run_by_cid_on_a_second_node_pulls_then_runs() {
    if skip_unless_root("run_by_cid_on_a_second_node_pulls_then_runs") {
        return;
    }
    let a = busybox_root();
    let b = tempfile::tempdir().unwrap();
    let cid = ok(ferry(a.path()).args(["push", "-q", "ipfs://busybox"]))
        .trim()
        .to_string();
    let daemon = Daemon::start(a.path(), "/ip4/127.0.0.1/tcp/0", &[]);
    let stdout = ok(ferry(b.path()).args([
        "run",
        "--rm",
        "--peer",
        &daemon.addr,
        &format!("ipfs://{cid}"),
        "cat",
        "/etc/passwd",
    ]));
    assert_eq!(stdout, "root:x:0:0:root:/root:/bin/sh\n");
    // the second run reuses the image and its snapshots
    let stdout = ok(ferry(b.path()).args(["run", "--rm", &cid]));
    assert_eq!(stdout, "hello from busybox\n");
}

#[test]
fn a_killed_run_is_cleaned_up_by_the_next_run() {
    if skip_unless_root("a_killed_run_is_cleaned_up_by_the_next_run") {
        return;
    }
    let root = busybox_root();
    let mut child = ferry(root.path())
        .args(["run", "--rm", "busybox", "sleep", "30"])
        .spawn()
        .unwrap();
    let runc_list = || {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(root.path().join("runc"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while runc_list().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let id = runc_list();
    child.kill().unwrap();
    child.wait().unwrap();
    // runc still holds the container's lock: a run now leaves it alone
    ok(ferry(root.path()).args(["run", "--rm", "busybox", "true"]));
    assert!(root.path().join("containers").join(&id).exists());
    // once the container is gone, the next run removes what the killed run left
    let status = std::process::Command::new("runc")
        .arg("--root")
        .arg(root.path().join("runc"))
        .args(["kill", &id, "KILL"])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        ok(ferry(root.path()).args(["run", "--rm", "busybox", "true"]));
        if !root.path().join("containers").join(&id).exists() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the killed run's container was never removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(root.path().to_str().unwrap()),
        "a mount was left behind"
    );
    assert_eq!(runc_list(), "");
}
