//! Throughput of one fetcher pulling 256 MiB of 256 KiB blocks over loopback TCP from one
//! seeder and from three, alternately, printing MB/s per run and the medians.
//!
//! `cargo run -p ferry-bitswap --example seeders [runs]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cid::multihash::Multihash;
use cid::Cid;
use ferry_bitswap::{Bitswap, Blockstore, Config, MemoryBlockstore};
use futures::StreamExt as _;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, Swarm};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

const BLOCK: usize = 256 << 10;
const BLOCKS: usize = 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A swarm in a task, reporting its connections to its Bitswap.
struct Node {
    bitswap: Bitswap,
    addr: Multiaddr,
    dial: mpsc::UnboundedSender<Multiaddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn node(store: Arc<dyn Blockstore>) -> Result<Node, Error> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let bitswap = Bitswap::new(swarm.behaviour().new_control(), store, Config::default())?;
    let (dial, dials) = mpsc::unbounded_channel();
    let task = tokio::spawn(drive(swarm, bitswap.clone(), dials));
    Ok(Node {
        bitswap,
        addr,
        dial,
        task,
    })
}

async fn drive(
    mut swarm: Swarm<libp2p_stream::Behaviour>,
    bitswap: Bitswap,
    mut dials: mpsc::UnboundedReceiver<Multiaddr>,
) {
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    bitswap.peer_connected(peer_id);
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    bitswap.peer_disconnected(peer_id);
                }
                _ => {}
            },
            Some(addr) = dials.recv() => {
                let _ = swarm.dial(addr);
            }
        }
    }
}

/// Fetches every block from `seeders` fresh seeders and returns MB/s.
async fn run(store: &Arc<dyn Blockstore>, cids: &[Cid], seeders: usize) -> Result<f64, Error> {
    let mut nodes = Vec::new();
    for _ in 0..seeders {
        nodes.push(node(store.clone()).await?);
    }
    let fetcher = node(Arc::new(MemoryBlockstore::new())).await?;
    for seeder in &nodes {
        fetcher.dial.send(seeder.addr.clone())?;
    }
    while fetcher.bitswap.peers().len() < seeders {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    let session = fetcher.bitswap.session();
    let fetches = cids.iter().map(|cid| {
        fetcher
            .bitswap
            .get_in(&session, *cid, Duration::from_secs(120))
    });
    for result in futures::future::join_all(fetches).await {
        result?;
    }
    let seconds = started.elapsed().as_secs_f64();

    let sent: Vec<u64> = nodes
        .iter()
        .map(|n| n.bitswap.stats().blocks_sent)
        .collect();
    let stats = fetcher.bitswap.stats();
    let rate = (BLOCK * BLOCKS) as f64 / seconds / 1e6;
    println!(
        "{seeders} seeder(s): {rate:7.1} MB/s  sent per seeder {sent:?}  duplicates {}",
        stats.duplicate_blocks
    );
    Ok(rate)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let runs: usize = std::env::args().nth(1).map_or(Ok(3), |n| n.parse())?;
    let store = MemoryBlockstore::new();
    let mut cids = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..BLOCKS {
        let data: Vec<u8> = (0..BLOCK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let digest = Sha256::digest(&data);
        let cid = Cid::new_v1(0x55, Multihash::wrap(0x12, &digest)?);
        store.insert(cid, data);
        cids.push(cid);
    }
    let store: Arc<dyn Blockstore> = Arc::new(store);

    let (mut one, mut three) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        one.push(run(&store, &cids, 1).await?);
        three.push(run(&store, &cids, 3).await?);
    }
    println!(
        "median of {runs}: 1 seeder {:.1} MB/s, 3 seeders {:.1} MB/s",
        median(one),
        median(three)
    );
    Ok(())
}
