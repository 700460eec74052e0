//! What the node listens on, whom it dials, how it finds peers, and the private network key.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use libp2p::pnet::PreSharedKey;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::Error;

/// kubo's default bootstrap list (`config/bootstrap_peers.go`), TCP entries only: this node
/// has no QUIC transport. The `/dnsaddr/` entries are resolved over DNS when dialed, so only a
/// node configured with `"bootstrap": ["public"]` ever resolves them.
pub const PUBLIC_BOOTSTRAP: &[&str] = &[
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/dnsaddr/va1.bootstrap.libp2p.io/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

/// What the node listens on, whom it dials and how it discovers peers (ROOT/config.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Addresses to listen on (`/ip4/0.0.0.0/tcp/4001`); none for a client-only node, which
    /// then also runs the DHT in client mode.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and to keep dialing while they are not connected.
    pub peers: Vec<Multiaddr>,
    /// DHT bootstrap peers, dialed at start and while fewer than 4 peers are connected; the
    /// entry `"public"` stands for kubo's public list ([`PUBLIC_BOOTSTRAP`]). Empty by
    /// default: a private setup reaches no outside node.
    pub bootstrap: Vec<BootstrapPeer>,
    /// Find peers on the local network with mDNS (on by default, as in kubo).
    pub mdns: bool,
    /// How the node takes part in the DHT (kubo's `Routing.Type` values).
    pub routing: Routing,
    /// The private network key: with one, the node talks only to peers holding the same key.
    /// Not read from config.json (it lives in its own file, ROOT/swarm.key, as in kubo).
    #[serde(skip)]
    pub swarm_key: Option<SwarmKey>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: Vec::new(),
            peers: Vec::new(),
            bootstrap: Vec::new(),
            mdns: true,
            routing: Routing::Auto,
            swarm_key: None,
        }
    }
}

/// How the node takes part in the DHT, named as kubo's `Routing.Type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Answer DHT requests when the node listens (a daemon), else only ask.
    #[default]
    Auto,
    /// Only ask: for nodes others cannot dial (behind NAT); they still announce and find
    /// providers, and are not put in other nodes' routing tables.
    Dhtclient,
    /// Always answer DHT requests.
    Dhtserver,
}

impl NodeConfig {
    /// Whether the DHT runs in server mode.
    pub fn dht_server(&self) -> bool {
        match self.routing {
            Routing::Auto => !self.listen.is_empty(),
            Routing::Dhtclient => false,
            Routing::Dhtserver => true,
        }
    }

    /// The bootstrap addresses, with `"public"` expanded.
    pub fn bootstrap_addrs(&self) -> Vec<Multiaddr> {
        let mut addrs = Vec::new();
        for entry in &self.bootstrap {
            match entry {
                BootstrapPeer::Public => {
                    addrs.extend(PUBLIC_BOOTSTRAP.iter().filter_map(|a| a.parse().ok()))
                }
                BootstrapPeer::Addr(addr) => addrs.push(addr.clone()),
            }
        }
        addrs
    }
}

/// One entry of the `bootstrap` list: a multiaddr ending in `/p2p/ID`, or `"public"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BootstrapPeer {
    /// kubo's public bootstrap list.
    Public,
    /// One peer.
    Addr(Multiaddr),
}

impl TryFrom<String> for BootstrapPeer {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if text == "public" {
            return Ok(BootstrapPeer::Public);
        }
        let addr: Multiaddr = text
            .parse()
            .map_err(|e| format!("bootstrap entry {text:?}: {e}"))?;
        if !addr
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        {
            return Err(format!(
                "bootstrap entry {text:?}: must end in /p2p/PEER_ID (or be \"public\")"
            ));
        }
        Ok(BootstrapPeer::Addr(addr))
    }
}

impl From<BootstrapPeer> for String {
    fn from(peer: BootstrapPeer) -> String {
        match peer {
            BootstrapPeer::Public => "public".into(),
            BootstrapPeer::Addr(addr) => addr.to_string(),
        }
    }
}

/// A private network's pre-shared key, read from a kubo `swarm.key` file.
#[derive(Clone, Copy)]
pub struct SwarmKey(pub(crate) PreSharedKey);

impl SwarmKey {
    /// Reads a kubo-format key file: `/key/swarm/psk/1.0.0/`, `/base16/`, then 64 hex digits.
    pub fn read(path: &Path) -> Result<SwarmKey, Error> {
        let err = |why: String| Error::SwarmKey {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        text.parse().map_err(err)
    }

    /// The key's fingerprint (as go-libp2p and kubo log it), safe to show.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint().to_string()
    }
}

impl FromStr for SwarmKey {
    type Err = String;

    /// Parses the file format of go-libp2p's `pnet` (the only encoding kubo's tools write is
    /// base16, so that is the one supported).
    fn from_str(text: &str) -> Result<SwarmKey, String> {
        let mut lines = text.lines().map(str::trim_end);
        if lines.next() != Some("/key/swarm/psk/1.0.0/") {
            return Err("not a swarm key: the first line must be /key/swarm/psk/1.0.0/".into());
        }
        match lines.next() {
            Some("/base16/") => {}
            Some(other) => {
                return Err(format!("unsupported key encoding {other:?} (use /base16/)"))
            }
            None => return Err("missing the encoding line /base16/".into()),
        }
        let hex = lines.next().unwrap_or("").trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the key must be 64 hex digits (32 bytes)".into());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(SwarmKey(PreSharedKey::new(key)))
    }
}

impl fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwarmKey({})", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/key/swarm/psk/1.0.0/\n/base16/\n\
        0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF\n";

    #[test]
    fn swarm_key_parses_kubo_format_and_matches_libp2p_parser() {
        let ours: SwarmKey = KEY.parse().unwrap();
        let theirs: PreSharedKey = KEY.parse().unwrap();
        assert_eq!(ours.fingerprint(), theirs.fingerprint().to_string());
    }

    #[test]
    fn swarm_key_refuses_malformed_files_with_a_reason() {
        let short = "/key/swarm/psk/1.0.0/\n/base16/\nabcd\n";
        assert_eq!(
            short.parse::<SwarmKey>().unwrap_err(),
            "the key must be 64 hex digits (32 bytes)"
        );
        assert_eq!(
            "hello".parse::<SwarmKey>().unwrap_err(),
            "not a swarm key: the first line must be /key/swarm/psk/1.0.0/"
        );
        let b64 = "/key/swarm/psk/1.0.0/\n/base64/\nAAAA\n";
        assert_eq!(
            b64.parse::<SwarmKey>().unwrap_err(),
            "unsupported key encoding \"/base64/\" (use /base16/)"
        );
    }

    #[test]
    fn bootstrap_public_expands_and_bare_addresses_are_refused() {
        let config: NodeConfig = serde_json::from_str(
            r#"{"bootstrap": ["public"], "mdns": false, "routing": "dhtclient"}"#,
        )
        .unwrap();
        assert_eq!(config.bootstrap_addrs().len(), PUBLIC_BOOTSTRAP.len());
        assert!(!config.mdns);
        assert_eq!(config.routing, Routing::Dhtclient);
        let defaults: NodeConfig = serde_json::from_str("{}").unwrap();
        assert!(defaults.mdns && defaults.bootstrap.is_empty());
        let err = serde_json::from_str::<NodeConfig>(r#"{"bootstrap": ["/ip4/1.2.3.4/tcp/1"]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bootstrap entry \"/ip4/1.2.3.4/tcp/1\": must end in /p2p/"));
    }
}
