//! `ferry run` flags with real overlayfs and runc (root only, as CI runs): volumes, users,
//! read-only roots, limits, environment files, networks, pull policies.

mod common;

use std::process::Command;

use common::{ferry, fixture, ok, output, skip_unless_root};

fn loaded(images: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for image in images {
        ok(ferry(root.path()).args(["load", "-i"]).arg(fixture(image)));
    }
    root
}

#[test]
fn a_volume_written_by_the_container_is_read_on_the_host() {
    if skip_unless_root("a_volume_written_by_the_container_is_read_on_the_host") {
        return;
    }
    let root = loaded(&["busybox.tar"]);
    let host = tempfile::tempdir().unwrap();
    let data = host.path().join("data");
    let volume = format!("{}:/data", data.display());
    let out = ok(ferry(root.path()).args([
        "run",
        "--rm",
        "-v",
        &volume,
        "busybox",
        "sh",
        "-c",
        "echo from the container > /data/note; ls /data",
    ]));
    assert_eq!(out, "note\n");
    assert_eq!(
        std::fs::read_to_string(data.join("note")).unwrap(),
        "from the container\n"
    );

    // read-only: the host's file is readable, a write is refused
    let ro = format!("{}:/data:ro", data.display());
    let (code, stdout, stderr) = output(ferry(root.path()).args([
        "run",
        "--rm",
        "-v",
        &ro,
        "busybox",
        "sh",
        "-c",
        "cat /data/note; touch /data/x",
    ]));
    assert_eq!(code, 1);
    assert_eq!(stdout, "from the container\n");
    assert_eq!(stderr, "touch: /data/x: Read-only file system\n");
    assert!(!data.join("x").exists());

    // a named volume outlives its container and is seen by the next one
    ok(ferry(root.path()).args([
        "run",
        "--rm",
        "-v",
        "cache:/cache",
        "busybox",
        "sh",
        "-c",
        "echo kept > /cache/k",
    ]));
    let out =
        ok(ferry(root.path()).args(["run", "--rm", "-v", "cache:/c", "busybox", "cat", "/c/k"]));
    assert_eq!(out, "kept\n");
    let on_disk = root.path().join("volumes/cache/_data/k");
    assert_eq!(std::fs::read_to_string(on_disk).unwrap(), "kept\n");
}

#[test]
fn user_names_resolve_in_the_image_passwd() {
    if skip_unless_root("user_names_resolve_in_the_image_passwd") {
        return;
    }
    let root = loaded(&["busybox.tar"]);
    // busybox with Debian's nobody and nogroup, in a second layer that umoci makes
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("users");
    let bundle = work.path().join("bundle");
    let run = |cmd: &mut Command| {
        let status = cmd.status().expect("run cp or umoci");
        assert!(status.success(), "{cmd:?}");
    };
    run(Command::new("cp")
        .arg("-r")
        .arg(fixture("busybox"))
        .arg(&image));
    let tagged = format!("{}:latest", image.display());
    run(Command::new("umoci")
        .args(["unpack", "--image", &tagged])
        .arg(&bundle));
    std::fs::write(
        bundle.join("rootfs/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        bundle.join("rootfs/etc/group"),
        "root:x:0:\nnogroup:x:65534:\n",
    )
    .unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &tagged])
        .arg(&bundle));
    ok(ferry(root.path()).args(["load", "-i"]).arg(&image));
    let out = ok(ferry(root.path()).args([
        "run",
        "--rm",
        "-u",
        "nobody",
        "users",
        "sh",
        "-c",
        "id; id -G",
    ]));
    assert_eq!(out, "uid=65534(nobody) gid=65534(nogroup)\n65534\n");
    let out = ok(ferry(root.path()).args([
        "run",
        "--rm",
        "-u",
        "1234:5678",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g",
    ]));
    assert_eq!(out, "1234\n5678\n");
    let (code, _, stderr) =
        output(ferry(root.path()).args(["run", "--rm", "-u", "nosuch", "busybox", "true"]));
    assert_eq!(code, 125);
    assert_eq!(
        stderr,
        "ferry: run: unable to find user nosuch: no matching entry in /etc/passwd\n"
    );
}

#[test]
fn read_only_root_refuses_writes_but_volumes_take_them() {
    if skip_unless_root("read_only_root_refuses_writes_but_volumes_take_them") {
        return;
    }
    let root = loaded(&["busybox.tar"]);
    let (code, _, stderr) =
        output(ferry(root.path()).args(["run", "--rm", "--read-only", "busybox", "touch", "/new"]));
    assert_eq!(code, 1);
    assert_eq!(stderr, "touch: /new: Read-only file system\n");
    let out = ok(ferry(root.path()).args([
        "run",
        "--rm",
        "--read-only",
        "-v",
        "/scratch",
        "busybox",
        "sh",
        "-c",
        "echo ok > /scratch/f && cat /scratch/f",
    ]));
    assert_eq!(out, "ok\n");
}

#[test]
fn each_container_has_its_own_hostname_hosts_and_resolv_conf() {
    if skip_unless_root("each_container_has_its_own_hostname_hosts_and_resolv_conf") {
        return;
    }
    let root = loaded(&["busybox.tar"]);
    let out = ok(ferry(root.path()).args([
        "run",
        "--rm",
        "--net",
        "none",
        "--hostname",
        "island",
        "busybox",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; head -1 /etc/hosts; ls /sys/class/net; \
         echo 10.9.9.9 extra >> /etc/hosts && echo hosts writable",
    ]));
    assert_eq!(
        out,
        "island\nisland\n127.0.0.1\tlocalhost\nlo\nhosts writable\n"
    );
    // the write went to the container's copy, not the host's file
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(!hosts.contains("10.9.9.9 extra"));
    let resolv = ok(ferry(root.path()).args(["run", "--rm", "busybox", "cat", "/etc/resolv.conf"]));
    assert_eq!(resolv, std::fs::read_to_string("/etc/resolv.conf").unwrap());
}

#[test]
fn limits_and_env_files_reach_the_container() {
    if skip_unless_root("limits_and_env_files_reach_the_container") {
        return;
    }
    let root = loaded(&["busybox.tar"]);
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    std::fs::write(&env_file, "# settings\nA=from file\nB=overridden\n").unwrap();
    let out = ok(ferry(root.path())
        .args(["run", "--rm", "--env-file"])
        .arg(&env_file)
        .args([
            "-e",
            "B=from flag",
            "busybox",
            "sh",
            "-c",
            "echo $A; echo $B",
        ]));
    assert_eq!(out, "from file\nfrom flag\n");

    // cgroup v2 names the file memory.max, v1 memory/memory.limit_in_bytes
    let out = ok(ferry(root.path()).args([
        "run",
        "--rm",
        "--memory",
        "64m",
        "busybox",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]));
    assert_eq!(out, "67108864\n");
    // with at most 4 processes, the fifth fork fails
    let (code, _, stderr) = output(ferry(root.path()).args([
        "run",
        "--rm",
        "--pids-limit",
        "4",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6; do sleep 2 & done; wait",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("can't fork"), "{stderr}");
}

#[test]
fn pull_never_refuses_an_image_that_is_not_here() {
    let root = tempfile::tempdir().unwrap();
    let (code, _, stderr) =
        output(ferry(root.path()).args(["run", "--rm", "--pull", "never", "nosuch:1", "true"]));
    assert_eq!(code, 125);
    assert!(
        stderr.starts_with("ferry: run: image nosuch:1 is not here (--pull never): "),
        "{stderr}"
    );
}

#[test]
fn a_malformed_run_flag_exits_125_as_docker_run_does() {
    let root = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) =
        output(ferry(root.path()).args(["run", "--rm", "-p", "99999:80", "busybox", "true"]));
    assert_eq!(code, 125, "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.starts_with("error: invalid value '99999:80' for '--publish"),
        "{stderr}"
    );
    // other commands keep clap's usage code, and help is not an error
    let (code, _, _) = output(ferry(root.path()).args(["images", "--no-such-flag"]));
    assert_eq!(code, 2);
    let (code, stdout, _) = output(ferry(root.path()).args(["run", "--help"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("Usage: ferry run"), "{stdout}");
}
