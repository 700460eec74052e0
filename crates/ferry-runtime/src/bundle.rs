//! The OCI runtime bundle: `config.json` next to (a path to) the container's root filesystem.
//!
//! The defaults follow runc's `runc spec` (mounts, masked and read-only paths, rlimits) and
//! docker's default capability set, as the OCI runtime spec's `config.md` and
//! `config-linux.md` describe them.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use crate::error::Error;
use crate::process::Process;

/// The runtime spec version written into `config.json` (the one runc 1.1 implements).
const OCI_VERSION: &str = "1.0.2";

/// Parent cgroup of every ferry container, as docker uses `/docker/<id>`.
const CGROUP_PARENT: &str = "/ferry";

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths hidden from the container, as `runc spec` writes them.
const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Paths mounted read-only in the container, as `runc spec` writes them.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host files bind-mounted read-only into every container when the host has them.
const HOST_FILES: [&str; 2] = ["/etc/resolv.conf", "/etc/hosts"];

/// Settings of one container run.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    /// Container ID, also runc's ID.
    pub id: String,
    /// Hostname inside the container (a UTS namespace of its own).
    pub hostname: String,
    /// The resolved process.
    pub process: Process,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
}

/// Writes `bundle/config.json` for runc, creating `bundle` when missing.
///
/// The container gets its own pid, ipc, uts and mount namespaces but shares the host's network
/// (TODO: a network namespace once the CNI setup exists), the usual `/proc`, `/dev`, `/sys`
/// mounts, docker's default capabilities, runc's masked and read-only paths, the host's
/// `/etc/resolv.conf` and `/etc/hosts` read-only, and `RLIMIT_NOFILE` 1024.
pub fn write_bundle(bundle: &Path, rootfs: &Path, spec: &ContainerSpec) -> Result<(), Error> {
    let rootfs = fs::canonicalize(rootfs).map_err(Error::io(rootfs))?;
    let config = build_config(bundle, &rootfs, spec, Path::new("/"))?;
    let json = serde_json::to_vec_pretty(&config).map_err(|e| Error::Config {
        bundle: bundle.to_path_buf(),
        reason: e.to_string(),
    })?;

    fs::create_dir_all(bundle).map_err(Error::io(bundle))?;
    let path = bundle.join("config.json");
    fs::write(&path, json).map_err(Error::io(&path))?;
    tracing::debug!(id = %spec.id, config = %path.display(), "wrote runtime bundle");
    Ok(())
}

/// The runtime config; `host_root` is where the host files are looked for (a seam for tests).
fn build_config(
    bundle: &Path,
    rootfs: &Path,
    spec: &ContainerSpec,
    host_root: &Path,
) -> Result<Spec, Error> {
    let invalid = |e: oci_spec::OciSpecError| Error::Config {
        bundle: bundle.to_path_buf(),
        reason: e.to_string(),
    };

    let root = RootBuilder::default()
        .path(rootfs)
        .readonly(spec.read_only)
        .build()
        .map_err(invalid)?;
    let mut mounts = default_mounts().map_err(invalid)?;
    mounts.extend(host_file_mounts(host_root).map_err(invalid)?);

    SpecBuilder::default()
        .version(OCI_VERSION)
        .root(root)
        .hostname(spec.hostname.clone())
        .mounts(mounts)
        .process(build_process(&spec.process).map_err(invalid)?)
        .linux(build_linux(&spec.id).map_err(invalid)?)
        .build()
        .map_err(invalid)
}

fn build_process(process: &Process) -> Result<oci_spec::runtime::Process, oci_spec::OciSpecError> {
    let user = UserBuilder::default()
        .uid(process.uid)
        .gid(process.gid)
        .additional_gids(process.additional_gids.clone())
        .build()?;

    // Docker fills bounding, effective and permitted; inheritable and ambient stay empty (set
    // explicitly: oci-spec's defaults for them are not empty).
    let caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()?;

    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(1024u64)
        .hard(1024u64)
        .build()?;

    // Docker leaves no_new_privileges off by default so that setuid binaries keep working.
    ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(process.args.clone())
        .env(process.env.clone())
        .cwd(&process.cwd)
        .capabilities(capabilities)
        .rlimits(vec![nofile])
        .no_new_privileges(false)
        .build()
}

fn build_linux(id: &str) -> Result<oci_spec::runtime::Linux, oci_spec::OciSpecError> {
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;

    // Deny every device; runc itself allows the standard ones (null, zero, tty, ...).
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![deny_all])
        .build()?;

    LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(format!("{CGROUP_PARENT}/{id}")))
        .masked_paths(MASKED_PATHS.map(String::from).to_vec())
        .readonly_paths(READONLY_PATHS.map(String::from).to_vec())
        .build()
}

/// runc's default mounts (`runc spec`).
fn default_mounts() -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let table: [(&str, &str, &str, &[&str]); 7] = [
        ("/proc", "proc", "proc", &[]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        (
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ];
    table
        .into_iter()
        .map(|(destination, typ, source, options)| {
            MountBuilder::default()
                .destination(destination)
                .typ(typ)
                .source(source)
                .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()
        })
        .collect()
}

/// Read-only binds of the host's resolver and hosts files, for those the host has.
fn host_file_mounts(host_root: &Path) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let mut mounts = Vec::new();
    for file in HOST_FILES {
        let source = host_root.join(file.trim_start_matches('/'));
        if !source.is_file() {
            tracing::debug!(file, "host file absent, not mounted");
            continue;
        }
        let options = ["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"];
        mounts.push(
            MountBuilder::default()
                .destination(file)
                .typ("bind")
                .source(source)
                .options(options.map(String::from).to_vec())
                .build()?,
        );
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "abc".to_string(),
            hostname: "box".to_string(),
            process: Process {
                args: vec!["sh".to_string(), "-c".to_string(), "true".to_string()],
                env: vec!["PATH=/bin".to_string()],
                cwd: "/app".to_string(),
                uid: 1000,
                gid: 100,
                additional_gids: vec![5, 6],
            },
            read_only: true,
        }
    }

    fn config_json(host_root: &Path) -> Value {
        let config = build_config(Path::new("/b"), Path::new("/r/rootfs"), &spec(), host_root);
        serde_json::to_value(config.unwrap()).unwrap()
    }

    #[test]
    fn config_carries_process_root_and_namespaces() {
        let empty_host = tempfile::tempdir().unwrap();
        let v = config_json(empty_host.path());
        assert_eq!(v["ociVersion"], "1.0.2");
        assert_eq!(v["root"], json!({"path": "/r/rootfs", "readonly": true}));
        assert_eq!(v["hostname"], "box");
        let p = &v["process"];
        assert_eq!(p["terminal"], false);
        assert_eq!(p["args"], json!(["sh", "-c", "true"]));
        assert_eq!(p["env"], json!(["PATH=/bin"]));
        assert_eq!(p["cwd"], "/app");
        assert_eq!(
            p["user"],
            json!({"uid": 1000, "gid": 100, "additionalGids": [5, 6]})
        );
        assert_eq!(
            p["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount"]);
        assert_eq!(v["linux"]["cgroupsPath"], "/ferry/abc");
        assert_eq!(v["linux"]["maskedPaths"].as_array().unwrap().len(), 10);
        assert_eq!(v["linux"]["readonlyPaths"][3], "/proc/sys");
    }

    #[test]
    fn config_has_docker_default_capabilities() {
        let empty_host = tempfile::tempdir().unwrap();
        let v = config_json(empty_host.path());
        for set in ["bounding", "effective", "permitted"] {
            let mut caps: Vec<&str> = v["process"]["capabilities"][set]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            caps.sort();
            let want = [
                "CAP_AUDIT_WRITE",
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FOWNER",
                "CAP_FSETID",
                "CAP_KILL",
                "CAP_MKNOD",
                "CAP_NET_BIND_SERVICE",
                "CAP_NET_RAW",
                "CAP_SETFCAP",
                "CAP_SETGID",
                "CAP_SETPCAP",
                "CAP_SETUID",
                "CAP_SYS_CHROOT",
            ];
            assert_eq!(caps, want, "{set}");
        }
        assert_eq!(v["process"]["capabilities"]["inheritable"], json!([]));
        assert_eq!(v["process"]["capabilities"]["ambient"], json!([]));
    }

    #[test]
    fn config_binds_only_host_files_that_exist() {
        let host = tempfile::tempdir().unwrap();
        fs::create_dir(host.path().join("etc")).unwrap();
        fs::write(host.path().join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        let v = config_json(host.path());
        let mounts = v["mounts"].as_array().unwrap();
        let dests: Vec<&str> = mounts
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hosts"
            ]
        );
        let hosts = &mounts[7];
        assert_eq!(
            hosts["source"],
            host.path().join("etc/hosts").to_str().unwrap()
        );
        assert_eq!(hosts["type"], "bind");
        assert!(hosts["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn write_bundle_writes_config_json_with_absolute_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        let bundle = dir.path().join("bundle");
        let rootfs = dir.path().join("x/../rootfs");
        fs::create_dir(dir.path().join("x")).unwrap();
        write_bundle(&bundle, &rootfs, &spec()).unwrap();
        let v: Value =
            serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
        let want = fs::canonicalize(dir.path().join("rootfs")).unwrap();
        assert_eq!(v["root"]["path"], want.to_str().unwrap());
    }
}
