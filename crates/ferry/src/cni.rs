//! The default bridge network: each container gets a network namespace of its own, joined to
//! the bridge `ferry0` (10.4.0.0/24, outbound traffic masqueraded) by the CNI plugins of the
//! host (`bridge`, `host-local`, `portmap`, `firewall`, `loopback` under `/usr/lib/cni`),
//! called as the CNI spec says: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and
//! `CNI_PATH` in the environment, the plugin's configuration on stdin, its result on stdout.
//!
//! The namespace is bind-mounted on `/run/ferry/netns/<id>` (as `ip netns add` does under
//! `/run/netns`; a reboot clears it with the namespace). As with docker, a container is on the
//! network while it runs: ADD before it starts (`run`, `start`), DEL when it ends, also by the
//! sweep after a killed run, and by `rm`. The container's directory keeps `network.json`: the
//! published ports for the next start and, while attached, the address and the result of ADD,
//! which DEL gets back as `prevResult`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The network's name (host-local keeps its leases under `/var/lib/cni/networks/ferry`).
pub const NETWORK_NAME: &str = "ferry";
/// The bridge on the host.
pub const BRIDGE: &str = "ferry0";
/// The containers' subnet.
pub const SUBNET: &str = "10.4.0.0/24";
/// The bridge's address: the containers' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 4, 0, 1);
/// Where the plugins are unless `CNI_PATH` says otherwise.
const PLUGIN_DIR: &str = "/usr/lib/cni";
/// The CNI spec version of the configurations ferry writes.
const CNI_VERSION: &str = "1.0.0";
/// The container's interface on the bridge.
const IFNAME: &str = "eth0";

/// The transport of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// `-p [IP:]HOSTPORT:CTRPORT[/tcp|udp]`: a host port forwarded to a container port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address it listens on (all when `None`).
    pub host_ip: Option<IpAddr>,
    /// The host port.
    pub host_port: u16,
    /// The container port.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl std::fmt::Display for PortMapping {
    /// As `docker ps` shows it: `127.0.0.1:8080->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = self
            .host_ip
            .map_or("0.0.0.0".to_string(), |ip| ip.to_string());
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(
            f,
            "{ip}:{}->{}/{proto}",
            self.host_port, self.container_port
        )
    }
}

/// Parses a `-p` value.
pub fn parse_publish(text: &str) -> Result<PortMapping, String> {
    let bad = |why: &str| format!("invalid port mapping {text:?}: {why}");
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, Protocol::Tcp),
        Some((ports, "udp")) => (ports, Protocol::Udp),
        Some((_, other)) => {
            return Err(bad(&format!("unknown protocol {other:?} (use tcp or udp)")))
        }
        None => (text, Protocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [host, container] => (None, *host, *container),
        [ip, host, container] => (Some(*ip), *host, *container),
        _ => return Err(bad("use [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")),
    };
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad(&format!("{p:?} is not a port number (1-65535)"))),
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => match ip.parse::<Ipv4Addr>() {
            Ok(ip) => Some(IpAddr::V4(ip)),
            Err(_) => return Err(bad(&format!("{ip:?} is not an IPv4 address"))),
        },
    };
    Ok(PortMapping {
        host_ip,
        host_port: port(host)?,
        container_port: port(container)?,
        protocol,
    })
}

/// What ferry keeps of a container's network (`network.json` in its directory).
#[derive(Debug, Serialize, Deserialize)]
pub struct Attachment {
    /// The container's address on the bridge, while it is attached.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The published ports.
    pub ports: Vec<PortMapping>,
    /// The result of the last plugin's ADD while attached (the `prevResult` of DEL); null
    /// otherwise.
    #[serde(default)]
    pub result: Value,
}

impl Attachment {
    fn save(&self, bundle: &Path) -> Result<()> {
        let path = bundle.join("network.json");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))
    }
}

impl Attachment {
    /// The attachment of the container whose directory is `bundle`, if it has one.
    pub fn load(bundle: &Path) -> Option<Attachment> {
        let bytes = std::fs::read(bundle.join("network.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Where the network namespaces of containers are mounted.
const NETNS_DIR: &str = "/run/ferry/netns";

/// The path of the container's network namespace.
pub fn netns_path(id: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(id)
}

/// Refuses ports that a running container of this root publishes already or that a host
/// program listens on (portmap's rules would hide it), with docker's message.
// TODO: two runs starting at the same moment can still both take a port; a lock around check
// and ADD, and containers of other roots, would close that.
pub fn check_ports_free(root: &Path, ports: &[PortMapping]) -> Result<()> {
    let taken: Vec<PortMapping> = std::fs::read_dir(root.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Attachment::load(&e.path()))
        .filter(|a| a.ip.is_some())
        .flat_map(|a| a.ports)
        .collect();
    for (i, p) in ports.iter().enumerate() {
        let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let overlaps = |q: &PortMapping| {
            q.host_port == p.host_port
                && q.protocol == p.protocol
                && (q.host_ip.is_none() || p.host_ip.is_none() || q.host_ip == p.host_ip)
        };
        let in_use = taken.iter().chain(&ports[..i]).any(overlaps)
            || match p.protocol {
                Protocol::Tcp => std::net::TcpListener::bind((ip, p.host_port)).is_err(),
                Protocol::Udp => std::net::UdpSocket::bind((ip, p.host_port)).is_err(),
            };
        if in_use {
            bail!(
                "Bind for {ip}:{} failed: port is already allocated",
                p.host_port
            );
        }
    }
    Ok(())
}

/// The network's plugin chain (as nerdctl's default network, with ferry's names).
fn conflist() -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": SUBNET, "gateway": GATEWAY.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
            { "type": "firewall" },
        ],
    })
}

fn loopback() -> Value {
    json!({ "cniVersion": CNI_VERSION, "name": "ferry-loopback", "type": "loopback" })
}

/// Creates the network namespace of the container whose directory is `bundle` and attaches it
/// to the bridge with `ports` published; returns the attachment (also written to
/// `network.json`). Whatever was set up is undone when a step fails.
pub fn setup(bundle: &Path, id: &str, ports: &[PortMapping]) -> Result<Attachment> {
    let netns = netns_path(id);
    create_netns(&netns)?;
    let attached = attach(bundle, id, &netns, ports);
    if attached.is_err() {
        if let Err(e) = teardown(bundle, id) {
            tracing::warn!(container = %id, error = %format!("{e:#}"), "network cleanup failed");
        }
    }
    attached
}

fn attach(bundle: &Path, id: &str, netns: &Path, ports: &[PortMapping]) -> Result<Attachment> {
    invoke("ADD", &loopback(), id, netns, "lo").context("bring up the loopback interface")?;
    let list = conflist();
    let mut prev: Option<Value> = None;
    for plugin in list["plugins"].as_array().into_iter().flatten() {
        let conf = plugin_conf(&list, plugin, prev.take(), ports);
        let result = invoke("ADD", &conf, id, netns, IFNAME)?;
        prev = Some(result);
    }
    let result = prev.unwrap_or(Value::Null);
    let attachment = Attachment {
        ip: None,
        ports: ports.to_vec(),
        result,
    };
    // Saved first: a DEL after a failure below gets the result.
    attachment.save(bundle)?;
    let ip = attachment.result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("the cni bridge plugin gave the container no IPv4 address"))?;
    let attachment = Attachment {
        ip: Some(ip),
        ..attachment
    };
    attachment.save(bundle)?;
    Ok(attachment)
}

/// Detaches the container of `bundle` from the bridge (DEL through every plugin, last first:
/// the ports and the firewall rules go, host-local frees the address) and removes its network
/// namespace; `network.json` keeps the ports. Does nothing for a container that is not
/// attached. Every step is tried; the first failure is returned.
pub fn teardown(bundle: &Path, id: &str) -> Result<()> {
    let netns = netns_path(id);
    let attachment = Attachment::load(bundle);
    let attached = attachment.as_ref().is_some_and(|a| !a.result.is_null());
    if !netns.exists() && !attached {
        return Ok(());
    }
    let ports = attachment.as_ref().map_or(&[][..], |a| &a.ports[..]);
    let prev = attachment
        .as_ref()
        .map(|a| a.result.clone())
        .filter(|r| !r.is_null());
    let list = conflist();
    let mut first_error = None;
    // A namespace that is already gone is given as empty, as the spec allows for DEL.
    let netns_arg = if netns.exists() {
        netns.clone()
    } else {
        PathBuf::new()
    };
    for plugin in list["plugins"].as_array().into_iter().flatten().rev() {
        let conf = plugin_conf(&list, plugin, prev.clone(), ports);
        if let Err(e) = invoke("DEL", &conf, id, &netns_arg, IFNAME) {
            first_error.get_or_insert(e);
        }
    }
    if let Err(e) = invoke("DEL", &loopback(), id, &netns_arg, "lo") {
        first_error.get_or_insert(e);
    }
    if let Some(attachment) = attachment {
        let detached = Attachment {
            ip: None,
            result: Value::Null,
            ..attachment
        };
        if let Err(e) = detached.save(bundle) {
            first_error.get_or_insert(e);
        }
    }
    if netns.exists() {
        let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
        if let Err(e) = std::fs::remove_file(&netns) {
            first_error.get_or_insert(anyhow!("remove {}: {e}", netns.display()));
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One plugin's stdin: its entry plus the network's name and version, the previous result
/// and the runtime values of the capabilities it declares.
fn plugin_conf(list: &Value, plugin: &Value, prev: Option<Value>, ports: &[PortMapping]) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    if let Some(prev) = prev {
        conf["prevResult"] = prev;
    }
    if plugin["capabilities"]["portMappings"] == json!(true) {
        let mappings: Vec<Value> = ports
            .iter()
            .map(|p| {
                json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": match p.protocol { Protocol::Tcp => "tcp", Protocol::Udp => "udp" },
                    "hostIP": p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                })
            })
            .collect();
        conf["runtimeConfig"] = json!({ "portMappings": mappings });
    }
    conf
}

/// Runs one plugin; returns its result (JSON on stdout) or its error as one line.
fn invoke(command: &str, conf: &Value, id: &str, netns: &Path, ifname: &str) -> Result<Value> {
    let kind = conf["type"].as_str().unwrap_or_default().to_string();
    let path = std::env::var("CNI_PATH").unwrap_or_else(|_| PLUGIN_DIR.to_string());
    let exe = std::env::split_paths(&path)
        .map(|dir| dir.join(&kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("cni plugin {kind} not found in {path} (install containernetworking-plugins)")
        })?;
    tracing::debug!(plugin = %kind, command, container = %id, "cni");
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start cni plugin {}", exe.display()))?;
    let stdin = serde_json::to_vec(conf)?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(&stdin)
            .with_context(|| format!("write to cni plugin {kind}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("wait for cni plugin {kind}"))?;
    if !out.status.success() {
        let error: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let mut msg = error["msg"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " ")
            });
        if let Some(details) = error["details"].as_str().filter(|d| !d.is_empty()) {
            msg = format!("{msg}: {details}");
        }
        bail!("cni plugin {kind} {command} failed: {msg}");
    }
    if command == "DEL" || out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parse the result of cni plugin {kind}"))
}

/// Makes a new network namespace and bind-mounts it on `path` (a new empty file), as
/// `ip netns add` does: a thread of its own unshares it, so ferry's stays as it was.
fn create_netns(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: unshare changes only this thread's network namespace; the thread ends here.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(std::io::Error::from)
    })
    .join()
    .map_err(|_| anyhow!("the thread making the network namespace panicked"))?;
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("create network namespace {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_parse_as_docker_reads_them() {
        let m = parse_publish("127.0.0.1:8080:80").unwrap();
        assert_eq!(m.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            (m.host_port, m.container_port, m.protocol),
            (8080, 80, Protocol::Tcp)
        );
        assert_eq!(m.to_string(), "127.0.0.1:8080->80/tcp");
        let m = parse_publish("5353:53/udp").unwrap();
        assert_eq!(m.to_string(), "0.0.0.0:5353->53/udp");
        assert_eq!(
            parse_publish("80"),
            Err("invalid port mapping \"80\": use [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]".into())
        );
        assert_eq!(
            parse_publish("1:2/sctp"),
            Err(
                "invalid port mapping \"1:2/sctp\": unknown protocol \"sctp\" (use tcp or udp)"
                    .into()
            )
        );
        assert_eq!(
            parse_publish("0:80"),
            Err("invalid port mapping \"0:80\": \"0\" is not a port number (1-65535)".into())
        );
        assert!(parse_publish("localhost:1:2").is_err());
    }

    #[test]
    fn plugins_get_name_version_prev_result_and_port_mappings() {
        let list = conflist();
        let ports = [parse_publish("127.0.0.1:8080:80").unwrap()];
        let portmap = &list["plugins"][1];
        let conf = plugin_conf(&list, portmap, Some(json!({"ips": []})), &ports);
        assert_eq!(conf["name"], "ferry");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], json!({"ips": []}));
        assert_eq!(
            conf["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp",
                    "hostIP": "127.0.0.1"}])
        );
        let bridge = plugin_conf(&list, &list["plugins"][0], None, &ports);
        assert!(bridge.get("runtimeConfig").is_none() && bridge.get("prevResult").is_none());
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], SUBNET);
    }
}
