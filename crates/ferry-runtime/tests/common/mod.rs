//! A busybox rootfs and a runc with a private state directory, for tests that run containers.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferry_runtime::{
    resolve_process, write_bundle, Bind, ContainerSpec, Error, ProcessRequest, RunStdio, Runc,
};

const BUSYBOX: &str = "/bin/busybox";

const APPLETS: [&str; 14] = [
    "sh", "echo", "cat", "id", "pwd", "ls", "sleep", "true", "hostname", "env", "touch", "kill",
    "test", "grep",
];

/// Why container tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".to_string());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} missing (apt-get install busybox-static)"
        ));
    }
    let runc = Runc::new("/nonexistent").binary().to_path_buf();
    match Command::new(&runc).arg("--version").output() {
        Ok(out) if out.status.success() => None,
        _ => Some(format!("{} not runnable", runc.display())),
    }
}

/// Prints why and returns from the test when containers cannot run here.
#[macro_export]
macro_rules! require_runc {
    () => {
        if let Some(reason) = common::skip_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

/// A temporary directory holding a busybox rootfs, bundles and runc's state.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub runc: Runc,
}

/// What a container printed and how it ended.
pub struct Outcome {
    pub result: Result<i32, Error>,
    pub stdout: String,
    pub stderr: String,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::create_dir_all(rootfs.join("tmp")).unwrap();
        fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
        )
        .unwrap();
        let runc = Runc::new(dir.path().join("state"));
        Fixture { dir, runc }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Adds a file to the rootfs with the given mode.
    pub fn add_file(&self, path: &str, content: &str, mode: u32) {
        let path = self.rootfs().join(path);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Resolves `req`, writes a bundle and runs it with stdout and stderr captured.
    pub fn run(&self, req: &ProcessRequest, read_only: bool) -> Outcome {
        let id = ferry_runtime::new_container_id();
        let process = resolve_process(req, &self.rootfs(), "box").unwrap();
        let spec = ContainerSpec {
            id: id.clone(),
            hostname: "box".to_string(),
            process,
            read_only,
            terminal: false,
            // The host's hosts file, read-only, as a bind of the caller's.
            binds: host_hosts_bind(),
            resources: Default::default(),
            network: Default::default(),
        };
        let bundle = self.dir.path().join("bundles").join(&id);
        write_bundle(&bundle, &self.rootfs(), &spec).unwrap();

        let out_path = bundle.join("stdout");
        let err_path = bundle.join("stderr");
        let stdio = RunStdio {
            stdin: Stdio::null(),
            stdout: fs::File::create(&out_path).unwrap().into(),
            stderr: fs::File::create(&err_path).unwrap().into(),
        };
        let result = self.runc.run_with(&bundle, &id, stdio);
        Outcome {
            result,
            stdout: fs::read_to_string(&out_path).unwrap(),
            stderr: fs::read_to_string(&err_path).unwrap(),
        }
    }

    /// The IDs `runc list` shows in this fixture's state directory.
    pub fn runc_list(&self) -> String {
        let out = Command::new(self.runc.binary())
            .arg("--root")
            .arg(self.dir.path().join("state"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "runc list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A request running `sh -c SCRIPT`.
pub fn shell(script: &str) -> ProcessRequest {
    ProcessRequest {
        cmd: vec!["sh".to_string(), "-c".to_string(), script.to_string()],
        ..Default::default()
    }
}

fn host_hosts_bind() -> Vec<Bind> {
    if !std::path::Path::new("/etc/hosts").is_file() {
        return Vec::new();
    }
    vec![Bind {
        source: "/etc/hosts".into(),
        destination: "/etc/hosts".into(),
        read_only: true,
    }]
}
