//! The OCI runtime bundle: `config.json` next to (a path to) the container's root filesystem.
//!
//! The defaults follow runc's `runc spec` (mounts, masked and read-only paths, rlimits) and
//! docker's default capability set, as the OCI runtime spec's `config.md` and
//! `config-linux.md` describe them.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
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

/// The CFS period `--cpus` quotas are given in (docker's, 100 ms).
const CPU_PERIOD: u64 = 100_000;

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
    /// Give the process a pseudo-terminal (`-t`): runc makes it, and hands its master to the
    /// caller's console socket or, for `runc run` in the foreground, relays it to its own.
    pub terminal: bool,
    /// Host files and directories mounted into the container, in this order (volumes, and the
    /// container's own `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`).
    pub binds: Vec<Bind>,
    /// cgroup limits.
    pub resources: Resources,
    /// The network namespace.
    pub network: Network,
}

/// A host path bind-mounted into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// The host file or directory.
    pub source: PathBuf,
    /// The absolute path inside the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// cgroup limits of a container (`docker run --memory`, `--cpus`, `--pids-limit`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// CPUs the container may use, as a fraction (1.5 = one and a half CPUs).
    pub cpus: Option<f64>,
    /// Most processes the container may have.
    pub pids: Option<i64>,
}

/// Which network namespace a container gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// The host's (`--net host`).
    #[default]
    Host,
    /// A new one with only a loopback interface (`--net none`).
    None,
    /// An existing one, set up by the caller (a CNI network), given by its path.
    Join(PathBuf),
}

/// Writes `bundle/config.json` for runc, creating `bundle` when missing.
///
/// The container gets its own pid, ipc, uts and mount namespaces, the network namespace of
/// [`ContainerSpec::network`], the usual `/proc`, `/dev`, `/sys` mounts, docker's default
/// capabilities, runc's masked and read-only paths, the binds of [`ContainerSpec::binds`],
/// the cgroup limits of [`ContainerSpec::resources`] and `RLIMIT_NOFILE` 1024.
pub fn write_bundle(bundle: &Path, rootfs: &Path, spec: &ContainerSpec) -> Result<(), Error> {
    let rootfs = fs::canonicalize(rootfs).map_err(Error::io(rootfs))?;
    let config = build_config(bundle, &rootfs, spec)?;
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

/// The runtime config.
fn build_config(bundle: &Path, rootfs: &Path, spec: &ContainerSpec) -> Result<Spec, Error> {
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
    mounts.extend(bind_mounts(&spec.binds).map_err(invalid)?);

    SpecBuilder::default()
        .version(OCI_VERSION)
        .root(root)
        .hostname(spec.hostname.clone())
        .mounts(mounts)
        .process(build_process(&spec.process, spec.terminal).map_err(invalid)?)
        .linux(build_linux(spec).map_err(invalid)?)
        .build()
        .map_err(invalid)
}

fn build_process(
    process: &Process,
    terminal: bool,
) -> Result<oci_spec::runtime::Process, oci_spec::OciSpecError> {
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
        .terminal(terminal)
        .user(user)
        .args(process.args.clone())
        .env(process.env.clone())
        .cwd(&process.cwd)
        .capabilities(capabilities)
        .rlimits(vec![nofile])
        .no_new_privileges(false)
        .build()
}

fn build_linux(spec: &ContainerSpec) -> Result<oci_spec::runtime::Linux, oci_spec::OciSpecError> {
    let mut namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    match &spec.network {
        Network::Host => {}
        Network::None => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()?,
        ),
        Network::Join(path) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()?,
        ),
    }

    // Deny every device; runc itself allows the standard ones (null, zero, tty, ...).
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    let mut resources = LinuxResourcesBuilder::default().devices(vec![deny_all]);
    let limits = &spec.resources;
    if let Some(limit) = limits.memory {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if let Some(cpus) = limits.cpus {
        let quota = (cpus * CPU_PERIOD as f64).round() as i64;
        let cpu = LinuxCpuBuilder::default()
            .quota(quota)
            .period(CPU_PERIOD)
            .build()?;
        resources = resources.cpu(cpu);
    }
    if let Some(limit) = limits.pids {
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }

    LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        .cgroups_path(PathBuf::from(format!("{CGROUP_PARENT}/{}", spec.id)))
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

/// The binds, recursive and private as docker mounts volumes.
fn bind_mounts(binds: &[Bind]) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    binds
        .iter()
        .map(|bind| {
            let mut options = vec!["rbind", "rprivate"];
            if bind.read_only {
                options.push("ro");
            }
            MountBuilder::default()
                .destination(&bind.destination)
                .typ("bind")
                .source(&bind.source)
                .options(options.into_iter().map(String::from).collect::<Vec<_>>())
                .build()
        })
        .collect()
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
            terminal: false,
            binds: Vec::new(),
            resources: Resources::default(),
            network: Network::Host,
        }
    }

    fn config_of(spec: &ContainerSpec) -> Value {
        let config = build_config(Path::new("/b"), Path::new("/r/rootfs"), spec);
        serde_json::to_value(config.unwrap()).unwrap()
    }

    #[test]
    fn config_carries_process_root_and_namespaces() {
        let v = config_of(&spec());
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
        let v = config_of(&spec());
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
    fn config_binds_volumes_after_the_default_mounts() {
        let mut spec = spec();
        spec.binds = vec![
            Bind {
                source: "/srv/data".into(),
                destination: "/data".into(),
                read_only: false,
            },
            Bind {
                source: "/c/hosts".into(),
                destination: "/etc/hosts".into(),
                read_only: true,
            },
        ];
        let v = config_of(&spec);
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
                "/data",
                "/etc/hosts"
            ]
        );
        assert_eq!(
            mounts[7],
            json!({"destination": "/data", "type": "bind", "source": "/srv/data",
                   "options": ["rbind", "rprivate"]})
        );
        assert_eq!(mounts[8]["options"], json!(["rbind", "rprivate", "ro"]));
    }

    #[test]
    fn config_sets_limits_and_the_network_namespace() {
        let mut spec = spec();
        spec.resources = Resources {
            memory: Some(64 << 20),
            cpus: Some(1.5),
            pids: Some(20),
        };
        spec.network = Network::Join("/run/netns/x".into());
        let v = config_of(&spec);
        let r = &v["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["cpu"], json!({"quota": 150000, "period": 100000}));
        assert_eq!(r["pids"], json!({"limit": 20}));
        assert_eq!(
            v["linux"]["namespaces"][4],
            json!({"type": "network", "path": "/run/netns/x"})
        );
        spec.network = Network::None;
        let v = config_of(&spec);
        assert_eq!(v["linux"]["namespaces"][4], json!({"type": "network"}));
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
