//! The libp2p swarm and its task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use ferry_bitswap::Bitswap;
use ferry_content::Store;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::routing::{self, Dht, Router, BOOTSTRAP_LOW_WATER};
use crate::swarm::{build_swarm, Behaviour, BehaviourEvent};
use crate::{Error, NodeConfig, StoreBlocks};

/// How often configured peers that are not connected are dialed again.
const REDIAL_INTERVAL: Duration = Duration::from_secs(5);

/// How often the bootstrap peers are dialed again while few peers are connected (kubo's
/// bootstrap period).
const BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(30);

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

pub(crate) enum Command {
    Info(oneshot::Sender<NodeInfo>),
    Dial(Multiaddr),
    Connect(Multiaddr, oneshot::Sender<Result<PeerId, String>>),
    Provide(Vec<Cid>),
    FindProviders(Cid, oneshot::Sender<usize>),
}

/// A running IPFS node. Dropping it stops the swarm.
pub struct Node {
    peer_id: PeerId,
    bitswap: Bitswap,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Node {
    /// Builds the swarm with `key`, listens, dials `config.peers` and the bootstrap peers,
    /// starts mDNS when enabled, and starts serving blocks from `store`. The DHT runs in
    /// server mode when the node listens, else in client mode. Returns once every listener
    /// has its address. Must run inside tokio.
    pub async fn start(
        key: Keypair,
        store: Arc<Store>,
        config: &NodeConfig,
    ) -> Result<Node, Error> {
        let peer_id = key.public().to_peer_id();
        let bitswap_config = ferry_bitswap::Config::default();
        let (mut swarm, inbound) = build_swarm(key, config, bitswap_config.max_inbound_streams)?;
        let control = swarm.behaviour().stream.new_control();
        let blocks = Arc::new(StoreBlocks(store));
        let bitswap = Bitswap::with_inbound(control, inbound, blocks, bitswap_config)?;
        for addr in &config.listen {
            check_bindable(addr)?;
            swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Node(format!("listen on {addr}: {e}")))?;
        }
        let mut state = State {
            bitswap: Some(bitswap.clone()),
            peers: config.peers.clone(),
            bootstrap: config.bootstrap_addrs(),
            ..Default::default()
        };
        state
            .wait_for_listeners(&mut swarm, config.listen.len())
            .await?;
        state.dial_missing(&mut swarm);
        routing::dial_bootstrap(&mut swarm, &state.bootstrap);
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

    /// Announces in the DHT that this node provides `cids` (their multihashes), now and every
    /// 22 h while it runs. Returns once the announcements are started; they go on in the
    /// background.
    pub async fn provide(&self, cids: Vec<Cid>) -> Result<(), Error> {
        self.commands
            .send(Command::Provide(cids))
            .await
            .map_err(|_| Error::Node("the node has stopped".into()))
    }

    /// Runs `fut` (a fetch such as [`crate::fetch_blob`], or anything calling it) so that a
    /// file whose root block no connected peer sends within a second is looked up in the DHT,
    /// and up to 10 of its providers are dialed.
    pub async fn routed<F: std::future::Future>(&self, fut: F) -> F::Output {
        let router = Router {
            commands: self.commands.clone(),
        };
        routing::scoped(router, fut).await
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

#[derive(Default)]
struct State {
    bitswap: Option<Bitswap>,
    peers: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    dht: Dht,
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
        let mut bootstrap = tokio::time::interval(BOOTSTRAP_INTERVAL);
        bootstrap.reset();
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
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
                    Some(Command::Connect(addr, reply)) => self.connect(&mut swarm, addr, reply),
                    Some(Command::Provide(cids)) => self.dht.provide(&mut swarm, &cids),
                    Some(Command::FindProviders(cid, reply)) => {
                        self.dht.find_providers(&mut swarm, cid, reply);
                    }
                },
                event = swarm.select_next_some() => self.handle(&mut swarm, event),
                _ = redial.tick() => self.dial_missing(&mut swarm),
                _ = bootstrap.tick() => {
                    if self.connected.len() < BOOTSTRAP_LOW_WATER {
                        routing::dial_bootstrap(&mut swarm, &self.bootstrap);
                    }
                }
                _ = housekeeping.tick() => self.dht.tick(&mut swarm),
            }
        }
        tracing::debug!("ipfs node stopped");
    }

    fn connect(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, String>>,
    ) {
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
        // mDNS reports a peer once per record lifetime; a dial that failed then (a link still
        // coming up) is tried again here while the peer's record lives
        routing::redial_lan_peers(swarm);
    }

    fn handle(&mut self, swarm: &mut Swarm<Behaviour>, event: SwarmEvent<BehaviourEvent>) {
        let Some(bitswap) = self.bitswap.as_ref() else {
            return;
        };
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                // Announced as kubo announces its listen addresses: provider records and
                // identify carry them, so peers that learn of us through the DHT can dial.
                swarm.add_external_address(address.clone());
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                swarm.remove_external_address(&address);
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.dht.on_kad(swarm, event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => {
                routing::on_identify(swarm, event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(event)) => routing::on_mdns(swarm, event),
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

/// Binds (and releases) a TCP listen address first: libp2p's listener sets SO_REUSEPORT, so a
/// port another daemon holds would be shared silently instead of refused, and its errors
/// can be empty. A plain bind says what is wrong in the OS's words.
fn check_bindable(addr: &Multiaddr) -> Result<(), Error> {
    let mut ip = None;
    let mut port = None;
    for protocol in addr.iter() {
        match protocol {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    let (Some(ip), Some(port)) = (ip, port) else {
        return Ok(());
    };
    std::net::TcpListener::bind((ip, port))
        .map(drop)
        .map_err(|e| Error::Node(format!("listen on {addr}: {e}")))
}
