//! Two-node harness: real swarms on loopback TCP, each driven by a task that reports
//! connections to its Bitswap.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::multihash::Multihash;
use cid::Cid;
use ferry_bitswap::{Bitswap, Blockstore, Config};
use futures::{AsyncReadExt as _, StreamExt as _};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, Stream, Swarm};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

/// A swarm running in a task, with or without Bitswap on it.
pub struct Node {
    pub peer: PeerId,
    pub addr: Multiaddr,
    pub control: libp2p_stream::Control,
    pub bitswap: Option<Bitswap>,
    connected: Arc<Mutex<HashSet<PeerId>>>,
    dial: mpsc::UnboundedSender<Multiaddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Node {
    /// A node serving `store` with Bitswap.
    pub async fn bitswap(store: Arc<dyn Blockstore>, config: Config) -> Node {
        Node::start(Some((store, config))).await
    }

    /// A node with only the stream behaviour: the test speaks Bitswap by hand.
    pub async fn raw() -> Node {
        Node::start(None).await
    }

    async fn start(bitswap: Option<(Arc<dyn Blockstore>, Config)>) -> Node {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
            .expect("listen");
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };

        let control = swarm.behaviour().new_control();
        let bitswap = bitswap.map(|(store, config)| {
            Bitswap::new(control.clone(), store, config).expect("bitswap starts")
        });
        let (dial, dials) = mpsc::unbounded_channel();
        let peer = *swarm.local_peer_id();
        let connected = Arc::new(Mutex::new(HashSet::new()));
        let task = tokio::spawn(drive(swarm, bitswap.clone(), connected.clone(), dials));
        Node {
            peer,
            addr,
            control,
            bitswap,
            connected,
            dial,
            task,
        }
    }

    pub fn bs(&self) -> &Bitswap {
        self.bitswap.as_ref().expect("node runs bitswap")
    }

    /// Dials `other` and waits until both swarms, and this node's Bitswap, see the connection.
    pub async fn connect(&self, other: &Node) {
        self.dial
            .send(other.addr.clone())
            .expect("swarm task alive");
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let here = self.is_connected(&other.peer);
                let there = other.is_connected(&self.peer);
                let listed = self
                    .bitswap
                    .as_ref()
                    .is_none_or(|b| b.peers().contains(&other.peer));
                if here && there && listed {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        waited
            .await
            .expect("waiting for the connection to be reported");
    }

    fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.lock().expect("lock").contains(peer)
    }
}

async fn drive(
    mut swarm: Swarm<libp2p_stream::Behaviour>,
    bitswap: Option<Bitswap>,
    connected: Arc<Mutex<HashSet<PeerId>>>,
    mut dials: mpsc::UnboundedReceiver<Multiaddr>,
) {
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    connected.lock().expect("lock").insert(peer_id);
                    if let Some(bitswap) = &bitswap {
                        bitswap.peer_connected(peer_id);
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    connected.lock().expect("lock").remove(&peer_id);
                    if let Some(bitswap) = &bitswap {
                        bitswap.peer_disconnected(peer_id);
                    }
                }
                _ => {}
            },
            Some(addr) = dials.recv() => {
                let _ = swarm.dial(addr);
            }
        }
    }
}

/// The CIDv1 (raw codec, sha2-256) of `data`.
pub fn raw_cid(data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    Cid::new_v1(
        0x55,
        Multihash::wrap(0x12, &digest).expect("32-byte digest fits"),
    )
}

/// Deterministic pseudo-random bytes, different for every seed.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Hex to bytes, ignoring spaces.
pub fn hex(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Appends an unsigned varint.
pub fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads one length-prefixed frame (the protobuf bytes), or None at the end of the stream.
pub async fn read_frame(stream: &mut Stream) -> Option<Vec<u8>> {
    let mut length = 0u64;
    for shift in 0..10 {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        length |= u64::from(byte[0] & 0x7f) << (7 * shift);
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; length as usize];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// A frame around `body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out
}

/// A message carrying one block under `prefix`, encoded by hand (formats.md 2.3: field 3,
/// Block { prefix = 1, data = 2 }).
pub fn block_message(prefix: &[u8], data: &[u8]) -> Vec<u8> {
    let mut block = vec![0x0a];
    varint(&mut block, prefix.len() as u64);
    block.extend_from_slice(prefix);
    block.push(0x12);
    varint(&mut block, data.len() as u64);
    block.extend_from_slice(data);

    let mut message = vec![0x1a];
    varint(&mut message, block.len() as u64);
    message.extend_from_slice(&block);
    message
}
