//! Containers run for real by runc from a busybox rootfs (root only).

mod common;

use common::{shell, Fixture};
use ferry_runtime::ProcessRequest;

#[test]
fn run_returns_exit_code_and_container_stdout() {
    require_runc!();
    let fx = Fixture::new();
    let out = fx.run(&shell("echo hello; exit 3"), false);
    assert_eq!(out.result.unwrap(), 3, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(fx.runc_list(), "");
}

#[test]
fn run_of_missing_command_exits_127() {
    require_runc!();
    let fx = Fixture::new();
    let req = ProcessRequest {
        cmd: vec!["nosuch".to_string()],
        ..Default::default()
    };
    let err = fx.run(&req, false).result.unwrap_err();
    assert_eq!(err.exit_code(), 127);
    let reason = concat!(
        "failed to start: unable to start container process: ",
        "exec: \"nosuch\": executable file not found in $PATH"
    );
    assert!(err.to_string().ends_with(reason), "{err}");
    assert_eq!(fx.runc_list(), "");

    let req = ProcessRequest {
        cmd: vec!["/bin/nosuch".to_string()],
        ..Default::default()
    };
    assert_eq!(fx.run(&req, false).result.unwrap_err().exit_code(), 127);
}

#[test]
fn run_of_non_executable_file_exits_126() {
    require_runc!();
    let fx = Fixture::new();
    fx.add_file("bin/data", "not a program\n", 0o644);
    let req = ProcessRequest {
        cmd: vec!["/bin/data".to_string()],
        ..Default::default()
    };
    let err = fx.run(&req, false).result.unwrap_err();
    assert_eq!(err.exit_code(), 126);
    assert!(
        err.to_string()
            .ends_with("exec: \"/bin/data\": permission denied"),
        "{err}"
    );
    assert_eq!(fx.runc_list(), "");
}

/// The working directory does not exist in the rootfs: runc creates it, as docker does.
#[test]
fn env_cwd_and_hostname_are_visible_inside() {
    require_runc!();
    let fx = Fixture::new();
    let req = ProcessRequest {
        env: vec!["FOO=image".to_string(), "KEEP=1".to_string()],
        override_env: vec!["FOO=bar baz".to_string()],
        working_dir: "/srv/data".to_string(),
        ..shell("pwd; echo \"$FOO\" $KEEP; echo $HOSTNAME; hostname; echo $PATH")
    };
    let out = fx.run(&req, false);
    assert_eq!(out.result.unwrap(), 0, "stderr: {}", out.stderr);
    let path = ferry_runtime::DEFAULT_PATH;
    assert_eq!(
        out.stdout,
        format!("/srv/data\nbar baz 1\nbox\nbox\n{path}\n")
    );
}

#[test]
fn numeric_user_runs_with_that_uid_and_gid() {
    require_runc!();
    let fx = Fixture::new();
    let req = ProcessRequest {
        user: "1000:1000".to_string(),
        ..shell("id -u; id -g")
    };
    let out = fx.run(&req, false);
    assert_eq!(out.result.unwrap(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "1000\n1000\n");
}

#[test]
fn named_user_gets_groups_from_rootfs_group_file() {
    require_runc!();
    let fx = Fixture::new();
    let req = ProcessRequest {
        override_user: Some("app".to_string()),
        ..shell("id")
    };
    let out = fx.run(&req, false);
    assert_eq!(out.result.unwrap(), 0, "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout,
        "uid=1000(app) gid=1000(app) groups=2000(extra)\n"
    );
}

#[test]
fn read_only_rootfs_refuses_writes() {
    require_runc!();
    let fx = Fixture::new();
    let out = fx.run(&shell("touch /new && echo wrote"), true);
    assert_eq!(out.result.unwrap(), 1);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "touch: /new: Read-only file system\n");
    assert!(!fx.rootfs().join("new").exists());
}

#[test]
fn a_read_only_bind_of_a_host_file_refuses_writes() {
    require_runc!();
    let Ok(host_hosts) = std::fs::read_to_string("/etc/hosts") else {
        eprintln!("skipped: the host has no /etc/hosts");
        return;
    };
    let fx = Fixture::new();
    let out = fx.run(&shell("cat /etc/hosts; echo x >> /etc/hosts"), false);
    assert_eq!(out.result.unwrap(), 1);
    assert_eq!(out.stdout, host_hosts);
    assert_eq!(
        out.stderr,
        "sh: can't create /etc/hosts: Read-only file system\n"
    );
}

#[test]
fn container_has_own_pid_namespace_and_default_capabilities() {
    require_runc!();
    let fx = Fixture::new();
    // CapEff of docker's 14 default capabilities is 0x00000000a80425fb.
    let out = fx.run(&shell("echo $$; grep CapEff /proc/self/status"), false);
    assert_eq!(out.result.unwrap(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "1\nCapEff:\t00000000a80425fb\n");
}
