//! The `ferry run` flags that become runtime settings: volumes, limits, environment files, and
//! the container's own `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use ferry_runtime::{Bind, Network};

/// Docker's fallback resolvers for a container whose host only has local ones (docker
/// `libnetwork/resolvconf`).
const FALLBACK_NAMESERVERS: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";

/// The `/etc/hosts` of a container with its own network namespace (docker's defaults).
const HOSTS_DEFAULT: &str = "127.0.0.1\tlocalhost\n\
                             ::1\tlocalhost ip6-localhost ip6-loopback\n\
                             fe00::0\tip6-localnet\n\
                             ff00::0\tip6-mcastprefix\n\
                             ff02::1\tip6-allnodes\n\
                             ff02::2\tip6-allrouters\n";

/// `-v`: `HOST:CTR[:ro|rw]` binds a host path (created as a directory when missing, as docker
/// does), `NAME:CTR[:ro|rw]` a named volume under `ROOT/volumes/NAME/_data`, and `CTR` alone
/// a new anonymous volume.
pub fn parse_volume(root: &Path, spec: &str) -> Result<Bind> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, destination, mode) = match parts.as_slice() {
        [ctr] => (None, *ctr, None),
        [src, ctr] => (Some(*src), *ctr, None),
        [src, ctr, mode] => (Some(*src), *ctr, Some(*mode)),
        _ => bail!("invalid volume {spec:?}: use HOST:CONTAINER[:ro]"),
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => bail!("invalid volume {spec:?}: unknown mode {other:?} (use ro or rw)"),
    };
    if !destination.starts_with('/') || destination == "/" {
        bail!("invalid volume {spec:?}: the container path must be absolute and not /");
    }
    let source = match source {
        Some(host) if host.starts_with('/') => {
            let host = Path::new(host);
            if !host.exists() {
                std::fs::create_dir_all(host)
                    .with_context(|| format!("create {}", host.display()))?;
            }
            host.to_path_buf()
        }
        Some(name) => named_volume(root, name)?,
        None => named_volume(root, &ferry_runtime::new_container_id())?,
    };
    Ok(Bind {
        source,
        destination: destination.to_string(),
        read_only,
    })
}

/// The data directory of volume `name`, created when new.
fn named_volume(root: &Path, name: &str) -> Result<std::path::PathBuf> {
    let valid = name
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'_' | b'.' | b'-')));
    if name.is_empty() || !valid {
        bail!(
            "invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed; a host \
             path must be absolute"
        );
    }
    // TODO: docker copies the image's files at the mount point into a new named volume;
    // ferry's new volumes start empty.
    let data = root.join("volumes").join(name).join("_data");
    std::fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
    Ok(data)
}

/// `--memory`: bytes with an optional b, k, m, g or t suffix (powers of 1024, as docker).
pub fn parse_bytes(text: &str) -> Result<i64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches('b');
    let (number, shift) = match digits.chars().last() {
        Some('k') => (&digits[..digits.len() - 1], 10),
        Some('m') => (&digits[..digits.len() - 1], 20),
        Some('g') => (&digits[..digits.len() - 1], 30),
        Some('t') => (&digits[..digits.len() - 1], 40),
        _ => (digits, 0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: use a number with b, k, m or g"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < i64::MAX as f64) {
        return Err(format!("invalid size {text:?}: out of range"));
    }
    Ok(bytes as i64)
}

/// `--cpus`: a positive number of CPUs, fractions allowed.
pub fn parse_cpus(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(cpus) if cpus > 0.0 && cpus <= 4096.0 => Ok(cpus),
        _ => Err(format!(
            "invalid number of CPUs {text:?}: use a positive number such as 1.5"
        )),
    }
}

/// The network a container gets (`--net`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// Its own namespace on the default bridge (`ferry0`, see [`crate::cni`]).
    Bridge,
    /// The host's.
    Host,
    /// Its own namespace with only loopback.
    None,
}

/// `--net`: bridge, host, none.
pub fn parse_network(text: &str) -> Result<NetMode, String> {
    match text {
        "bridge" | "ferry" => Ok(NetMode::Bridge),
        "host" => Ok(NetMode::Host),
        "none" => Ok(NetMode::None),
        other => Err(format!(
            "unknown network {other:?}: use bridge, host or none"
        )),
    }
}

/// The entries of an `--env-file`: `KEY=VALUE` lines (or `KEY`, taken from ferry's
/// environment); blank lines and lines starting with `#` are skipped, as docker does.
pub fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read env file {}", path.display()))?;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split_once('=').map_or(line, |(name, _)| name);
        if name.is_empty() || name.contains(char::is_whitespace) {
            bail!(
                "env file {} line {}: invalid variable name {name:?}",
                path.display(),
                n + 1
            );
        }
        entries.push(line.to_string());
    }
    Ok(entries)
}

/// Writes the container's `hosts`, `resolv.conf` and `hostname` into its directory and
/// returns the binds that put them at `/etc`. With the host's network they are copies of
/// the host's files; otherwise `hosts` has docker's local entries and `resolv.conf` the host's
/// resolvers, minus those on loopback, which the container cannot reach; a container on the
/// bridge finds its own address under its hostname.
pub fn etc_files(
    dir: &Path,
    hostname: &str,
    network: &Network,
    ip: Option<Ipv4Addr>,
) -> Result<Vec<Bind>> {
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (hosts, resolv) = match network {
        Network::Host => (
            std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| HOSTS_DEFAULT.into()),
            host_resolv,
        ),
        _ => {
            let mut hosts = HOSTS_DEFAULT.to_string();
            if let Some(ip) = ip {
                hosts.push_str(&format!("{ip}\t{hostname}\n"));
            }
            (hosts, without_loopback(&host_resolv))
        }
    };
    let files = [
        ("hosts", hosts, "/etc/hosts"),
        ("resolv.conf", resolv, "/etc/resolv.conf"),
        ("hostname", format!("{hostname}\n"), "/etc/hostname"),
    ];
    let mut binds = Vec::new();
    for (name, content, destination) in files {
        let path = dir.join(name);
        std::fs::write(&path, content).with_context(|| format!("write {}", path.display()))?;
        binds.push(Bind {
            source: path,
            destination: destination.to_string(),
            read_only: false,
        });
    }
    Ok(binds)
}

/// Writes the `hosts` of a container on the bridge that starts again with address `ip`.
pub fn set_own_address(dir: &Path, ip: Ipv4Addr) -> Result<()> {
    let hostname = std::fs::read_to_string(dir.join("hostname"))
        .with_context(|| format!("read {}", dir.join("hostname").display()))?;
    let hosts = format!("{HOSTS_DEFAULT}{ip}\t{}\n", hostname.trim());
    let path = dir.join("hosts");
    std::fs::write(&path, hosts).with_context(|| format!("write {}", path.display()))
}

/// resolv.conf without nameservers on 127.0.0.0/8 or ::1; the fallbacks when none is left.
fn without_loopback(resolv: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in resolv.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or_default();
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str(FALLBACK_NAMESERVERS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_as_docker_reads_them() {
        let root = tempfile::tempdir().unwrap();
        let host = root.path().join("host dir");
        let spec = format!("{}:/data:ro", host.display());
        let bind = parse_volume(root.path(), &spec).unwrap();
        assert_eq!(bind.source, host);
        assert_eq!((bind.destination.as_str(), bind.read_only), ("/data", true));
        assert!(host.is_dir(), "a missing host directory is created");

        let bind = parse_volume(root.path(), "cache:/var/cache").unwrap();
        assert_eq!(bind.source, root.path().join("volumes/cache/_data"));
        assert!(!bind.read_only);
        let anonymous = parse_volume(root.path(), "/scratch").unwrap();
        assert!(anonymous.source.starts_with(root.path().join("volumes")));

        let err = |spec: &str| parse_volume(root.path(), spec).unwrap_err().to_string();
        assert_eq!(
            err("/a:data"),
            "invalid volume \"/a:data\": the container path must be absolute and not /"
        );
        assert_eq!(
            err("/a:/b:rx"),
            "invalid volume \"/a:/b:rx\": unknown mode \"rx\" (use ro or rw)"
        );
        assert!(err("../x:/b").starts_with("invalid volume name \"../x\""));
    }

    #[test]
    fn sizes_cpus_and_networks_parse() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("64kb"), Ok(64 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
        assert_eq!(parse_cpus("1.5"), Ok(1.5));
        assert!(parse_cpus("0").is_err());
        assert_eq!(parse_network("none"), Ok(NetMode::None));
        assert_eq!(parse_network("bridge"), Ok(NetMode::Bridge));
        assert_eq!(
            parse_network("overlay"),
            Err("unknown network \"overlay\": use bridge, host or none".to_string())
        );
    }

    #[test]
    fn env_files_skip_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(&path, "# comment\n\nA=1\n  B=two words\nC\n").unwrap();
        assert_eq!(read_env_file(&path).unwrap(), ["A=1", "B=two words", "C"]);
        std::fs::write(&path, "A=1\nBAD NAME=2\n").unwrap();
        let err = read_env_file(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("line 2: invalid variable name \"BAD NAME\""),
            "{err}"
        );
    }

    #[test]
    fn a_bridge_container_finds_its_own_address_in_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let ip = Some(Ipv4Addr::new(10, 4, 0, 7));
        let binds = etc_files(dir.path(), "web", &Network::Join("/x".into()), ip).unwrap();
        assert_eq!(binds[0].destination, "/etc/hosts");
        let hosts = std::fs::read_to_string(dir.path().join("hosts")).unwrap();
        assert_eq!(hosts, format!("{HOSTS_DEFAULT}10.4.0.7\tweb\n"));
    }

    #[test]
    fn loopback_resolvers_are_dropped_for_own_networks() {
        let conf = "search lan\nnameserver 127.0.0.53\nnameserver 10.0.0.1\n";
        assert_eq!(without_loopback(conf), "search lan\nnameserver 10.0.0.1\n");
        let only_local = "nameserver 127.0.0.53\n";
        assert_eq!(without_loopback(only_local), FALLBACK_NAMESERVERS);
    }
}
