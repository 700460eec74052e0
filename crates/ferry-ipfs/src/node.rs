//! The libp2p swarm and its task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_bitswap::Bitswap;
use ferry_content::Store;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, tcp, yamux, Multiaddr, PeerId, Swarm};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{Error, StoreBlocks};

/// How often configured peers that are not connected are dialed again.
const REDIAL_INTERVAL: Duration = Duration::from_secs(5);

/// What the node listens on and whom it dials.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Addresses to listen on (`/ip4/0.0.0.0/tcp/4001`); none for a client-only node.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and to keep dialing while they are not connected.
    pub peers: Vec<Multiaddr>,
}

/// A snapshot of the node's state, as `ferry ipfs id` shows it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node's peer ID.
    pub peer_id: PeerId,
    /// The addresses it listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Connected peers and the address of one connection to each.
    pub connected: Vec<(PeerId, Multiaddr)>,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
    /// Takes the peers' Bitswap streams: libp2p-stream would drop kubo's bursts of them.
    bitswap_inbound: ferry_bitswap::InboundBehaviour,
}

enum Command {
    Info(oneshot::Sender<NodeInfo>),
    Dial(Multiaddr),
    Connect(Multiaddr, oneshot::Sender<Result<PeerId, String>>),
}

/// A running IPFS node. Dropping it stops the swarm.
pub struct Node {
    peer_id: PeerId,
    bitswap: Bitswap,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Node {
    /// Builds the swarm with `key`, listens, dials `config.peers` and starts serving blocks
    /// from `store`. Returns once every listener has its address. Must run inside tokio.
    pub async fn start(
        key: Keypair,
        store: Arc<Store>,
        config: &NodeConfig,
    ) -> Result<Node, Error> {
        let peer_id = key.public().to_peer_id();
        let bitswap_config = ferry_bitswap::Config::default();
        let (mut swarm, inbound) = build_swarm(key, bitswap_config.max_inbound_streams)?;
        let control = swarm.behaviour().stream.new_control();
        let blocks = Arc::new(StoreBlocks(store));
        let bitswap = Bitswap::with_inbound(control, inbound, blocks, bitswap_config)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Node(format!("listen on {addr}: {e}")))?;
        }
        let mut state = State {
            bitswap: Some(bitswap.clone()),
            peers: config.peers.clone(),
            ..Default::default()
        };
        state
            .wait_for_listeners(&mut swarm, config.listen.len())
            .await?;
        state.dial_missing(&mut swarm);
        let (commands, rx) = mpsc::channel(16);
        let task = tokio::spawn(state.run(swarm, rx));
        Ok(Node {
            peer_id,
            bitswap,
            commands,
            task,
        })
    }

    /// The node's peer ID.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The Bitswap client and server of this node.
    pub fn bitswap(&self) -> &Bitswap {
        &self.bitswap
    }

    /// The node's listen addresses and connected peers.
    pub async fn info(&self) -> Result<NodeInfo, Error> {
        let (tx, rx) = oneshot::channel();
        let stopped = || Error::Node("the node has stopped".into());
        self.commands
            .send(Command::Info(tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Dials `addr` (and keeps it among the peers to redial).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        let stopped = || Error::Node("the node has stopped".into());
        self.commands
            .send(Command::Dial(addr))
            .await
            .map_err(|_| stopped())
    }

    /// Dials `addr` now and waits for the connection (or its failure); the address is kept
    /// among the peers to redial.
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        let stopped = || Error::Node("the node has stopped".into());
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Connect(addr.clone(), tx))
            .await
            .map_err(|_| stopped())?;
        let result = rx.await.map_err(|_| stopped())?;
        result.map_err(|e| Error::Node(format!("connect {addr}: {e}")))
    }

    /// Waits until at least one peer is connected or `timeout` passes; returns the number of
    /// connected peers.
    pub async fn wait_for_peers(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.bitswap.peers().len();
            if n > 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the swarm and waits for its task to end.
    pub async fn shutdown(self) {
        drop(self.commands);
        let _ = self.task.await;
    }
}

/// Streams per yamux connection: set so high only to cap each stream's receive window (see
/// `yamux_config`).
const YAMUX_MAX_STREAMS: usize = 4094;

/// rust-yamux refuses frames over 1 MiB and closes the connection, while js-libp2p's yamux
/// (Helia) sends frames as large as the window we grant. Its windows grow per stream up to
/// 1 GiB (fixed) minus 256 KiB for each allowed stream, so 4094 streams keep every window,
/// and so every frame, within 256 KiB + 512 KiB.
fn yamux_config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(YAMUX_MAX_STREAMS);
    config
}

fn build_swarm(
    key: Keypair,
    inbound_capacity: usize,
) -> Result<(Swarm<Behaviour>, ferry_bitswap::InboundStreams), Error> {
    let node_err = |e: String| Error::Node(e);
    let (bitswap_inbound, inbound) = ferry_bitswap::InboundBehaviour::new(inbound_capacity);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux_config,
        )
        .map_err(|e| node_err(e.to_string()))?
        .with_behaviour(|key| Behaviour {
            identify: identify::Behaviour::new(
                identify::Config::new("ipfs/0.1.0".into(), key.public())
                    .with_agent_version(format!("ferry/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::default(),
            stream: libp2p_stream::Behaviour::new(),
            bitswap_inbound,
        })
        .map_err(|e| node_err(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    Ok((swarm, inbound))
}

#[derive(Default)]
struct State {
    bitswap: Option<Bitswap>,
    peers: Vec<Multiaddr>,
    listen_addrs: Vec<Multiaddr>,
    /// One address per connected peer.
    connected: HashMap<PeerId, Multiaddr>,
    /// The peer each configured address led to, learned on connection.
    addr_peer: HashMap<Multiaddr, PeerId>,
    /// `connect` calls waiting for their dial to end.
    connecting: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, String>>>,
}

impl State {
    async fn wait_for_listeners(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        listeners: usize,
    ) -> Result<(), Error> {
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        while self.listen_addrs.len() < listeners {
            tokio::select! {
                event = swarm.select_next_some() => {
                    if let SwarmEvent::ListenerError { error, .. } = &event {
                        return Err(Error::Node(format!("listener failed: {error}")));
                    }
                    self.handle(swarm, event);
                }
                _ = &mut deadline => break,
            }
        }
        Ok(())
    }

    async fn run(mut self, mut swarm: Swarm<Behaviour>, mut commands: mpsc::Receiver<Command>) {
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Info(reply)) => {
                        let _ = reply.send(self.info(&swarm));
                    }
                    Some(Command::Dial(addr)) => {
                        self.remember(&addr);
                        dial(&mut swarm, addr);
                    }
                    Some(Command::Connect(addr, reply)) => {
                        self.remember(&addr);
                        let opts = DialOpts::from(addr);
                        let id = opts.connection_id();
                        match swarm.dial(opts) {
                            Ok(()) => {
                                self.connecting.insert(id, reply);
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e.to_string()));
                            }
                        }
                    }
                },
                event = swarm.select_next_some() => self.handle(&mut swarm, event),
                _ = redial.tick() => self.dial_missing(&mut swarm),
            }
        }
        tracing::debug!("ipfs node stopped");
    }

    fn remember(&mut self, addr: &Multiaddr) {
        if !self.peers.contains(addr) {
            self.peers.push(addr.clone());
        }
    }

    fn info(&self, swarm: &Swarm<Behaviour>) -> NodeInfo {
        NodeInfo {
            peer_id: *swarm.local_peer_id(),
            listen_addrs: self.listen_addrs.clone(),
            connected: self
                .connected
                .iter()
                .map(|(p, a)| (*p, a.clone()))
                .collect(),
        }
    }

    fn dial_missing(&mut self, swarm: &mut Swarm<Behaviour>) {
        for addr in self.peers.clone() {
            let peer = peer_of(&addr).or_else(|| self.addr_peer.get(&addr).copied());
            if peer.is_some_and(|p| swarm.is_connected(&p)) {
                continue;
            }
            dial(swarm, addr);
        }
    }

    fn handle(&mut self, _swarm: &mut Swarm<Behaviour>, event: SwarmEvent<BehaviourEvent>) {
        let Some(bitswap) = self.bitswap.as_ref() else {
            return;
        };
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen_addrs.push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                connection_id,
                ..
            } => {
                if let Some(reply) = self.connecting.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                let addr = endpoint.get_remote_address().clone();
                tracing::debug!(peer = %peer_id, %addr, "connected");
                if endpoint.is_dialer() {
                    self.addr_peer.insert(without_p2p(&addr), peer_id);
                    self.addr_peer.insert(addr.clone(), peer_id);
                }
                self.connected.insert(peer_id, addr);
                if num_established.get() == 1 {
                    bitswap.peer_connected(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, "disconnected");
                self.connected.remove(&peer_id);
                bitswap.peer_disconnected(peer_id);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error,
                connection_id,
            } => {
                if let Some(reply) = self.connecting.remove(&connection_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            _ => {}
        }
    }
}

fn dial(swarm: &mut Swarm<Behaviour>, addr: Multiaddr) {
    if let Err(e) = swarm.dial(addr.clone()) {
        tracing::debug!(%addr, error = %e, "dial refused");
    }
}

/// The peer ID at the end of `/…/p2p/ID`, if any.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}
