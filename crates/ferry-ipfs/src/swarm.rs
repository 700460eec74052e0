//! The libp2p behaviour and transport: TCP (behind the private network handshake when a swarm
//! key is set), Noise, Yamux, DNS for `/dnsaddr/` bootstrap entries, identify, ping, the
//! Amino DHT, mDNS and the Bitswap streams.

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport as _};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::pnet::PnetConfig;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{dns, identify, kad, mdns, noise, ping, tcp, yamux, PeerId, StreamProtocol, Swarm};

use crate::{Error, NodeConfig};

/// The public Amino DHT's protocol (formats 2.7).
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");

/// go-libp2p-kad-dht reads messages of up to 4 MiB; rust-libp2p's default of 16 KiB would
/// refuse large GET_PROVIDERS and FIND_NODE replies (formats 2.7).
const KAD_MAX_PACKET: usize = 4 << 20;

/// Amino's record validity and republish interval (`amino/defaults.go`, formats 2.7).
const RECORD_TTL: Duration = Duration::from_secs(48 * 3600);
const REPROVIDE_INTERVAL: Duration = Duration::from_secs(22 * 3600);

/// Bounds one DHT lookup (a provide or a provider search) as a whole.
const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Amino's α: requests in flight per lookup.
const KAD_PARALLELISM: usize = 10;

/// How many keys this node may announce; MemoryStore's default of 1024 is a few images.
const MAX_PROVIDED_KEYS: usize = 1 << 20;

/// mDNS asks again this often (kubo's zeroconf service also re-queries periodically); an
/// answer from a peer restarts the timer.
const MDNS_QUERY_INTERVAL: Duration = Duration::from_secs(30);

/// Streams per yamux connection: set so high only to cap each stream's receive window (see
/// `yamux_config`).
const YAMUX_MAX_STREAMS: usize = 4094;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) stream: libp2p_stream::Behaviour,
    /// Takes the peers' Bitswap streams: libp2p-stream would drop kubo's bursts of them.
    pub(crate) bitswap_inbound: ferry_bitswap::InboundBehaviour,
}

/// rust-yamux refuses frames over 1 MiB and closes the connection, while js-libp2p's yamux
/// (Helia) sends frames as large as the window we grant. Its windows grow per stream up to
/// 1 GiB (fixed) minus 256 KiB for each allowed stream, so 4094 streams keep every window,
/// and so every frame, within 256 KiB + 512 KiB.
fn yamux_config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(YAMUX_MAX_STREAMS);
    config
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// TCP, then the private network handshake when there is a key (pnet wraps the raw socket,
/// before Noise, as go-libp2p does), then Noise and Yamux.
fn upgraded(
    key: &Keypair,
    config: &NodeConfig,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let noise = noise::Config::new(key)?;
    Ok(match config.swarm_key {
        Some(psk) => tcp
            .and_then(move |socket, _| PnetConfig::new(psk.0).handshake(socket))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux_config())
            .boxed(),
        None => tcp
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux_config())
            .boxed(),
    })
}

/// The upgraded TCP transport with DNS resolution around it. Only `/dns*` addresses are
/// resolved, and only bootstrap entries or addresses the user gave have those; without
/// /etc/resolv.conf (a bare network namespace) the node goes on without DNS.
fn transport(
    key: &Keypair,
    config: &NodeConfig,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    match dns::tokio::Transport::system(upgraded(key, config)?) {
        Ok(with_dns) => Ok(with_dns.boxed()),
        Err(e) => {
            tracing::debug!(error = %e, "no DNS resolver; /dns addresses will not resolve");
            upgraded(key, config)
        }
    }
}

fn kad_behaviour(peer_id: PeerId, server: bool) -> kad::Behaviour<MemoryStore> {
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config
        .set_max_packet_size(KAD_MAX_PACKET)
        .set_record_ttl(Some(RECORD_TTL))
        .set_provider_record_ttl(Some(RECORD_TTL))
        .set_provider_publication_interval(Some(REPROVIDE_INTERVAL))
        .set_query_timeout(KAD_QUERY_TIMEOUT);
    if let Some(alpha) = NonZeroUsize::new(KAD_PARALLELISM) {
        config.set_parallelism(alpha);
    }
    let store_config = MemoryStoreConfig {
        max_provided_keys: MAX_PROVIDED_KEYS,
        ..Default::default()
    };
    let store = MemoryStore::with_config(peer_id, store_config);
    let mut kad = kad::Behaviour::with_config(peer_id, store, config);
    // A node that listens answers DHT requests; a client-only one must not advertise the
    // protocol (formats 2.7), and kad's automatic mode waits for a confirmed external address
    // that a private network never gets.
    kad.set_mode(Some(if server {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    }));
    kad
}

/// Builds the swarm and the queue of inbound Bitswap streams.
pub(crate) fn build_swarm(
    key: Keypair,
    config: &NodeConfig,
    inbound_capacity: usize,
) -> Result<(Swarm<Behaviour>, ferry_bitswap::InboundStreams), Error> {
    let node_err = |e: String| Error::Node(e);
    let (bitswap_inbound, inbound) = ferry_bitswap::InboundBehaviour::new(inbound_capacity);
    let server = config.dht_server();
    let mdns_on = config.mdns;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| transport(key, config))
        .map_err(|e| node_err(e.to_string()))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mdns = if mdns_on {
                let mdns_config = mdns::Config {
                    query_interval: MDNS_QUERY_INTERVAL,
                    ..Default::default()
                };
                Some(mdns::tokio::Behaviour::new(mdns_config, peer_id)?)
            } else {
                None
            };
            Ok(Behaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new("ipfs/0.1.0".into(), key.public())
                        .with_agent_version(format!("ferry/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::default(),
                kad: kad_behaviour(peer_id, server),
                mdns: Toggle::from(mdns),
                stream: libp2p_stream::Behaviour::new(),
                bitswap_inbound,
            })
        })
        .map_err(|e| node_err(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    Ok((swarm, inbound))
}
