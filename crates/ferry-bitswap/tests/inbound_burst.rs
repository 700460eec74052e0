//! kubo and Helia send every reply on a new stream (formats.md 2.1), so a fetch makes many
//! inbound streams arrive at once. libp2p-stream's accept channel holds one stream and drops
//! the others (seen with kubo: 8 of 21 blocks lost); with `InboundBehaviour` every one of a
//! burst must reach the client.

use std::sync::Arc;
use std::time::Duration;

use cid::multihash::Multihash;
use cid::Cid;
use ferry_bitswap::{Bitswap, Config, InboundBehaviour, MemoryBlockstore};
use futures::{AsyncWriteExt as _, StreamExt as _};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use sha2::{Digest as _, Sha256};
use tokio::sync::Barrier;

const BITSWAP_120: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");
/// Peers replying at the same moment.
const REPLIERS: usize = 24;

#[derive(NetworkBehaviour)]
struct Fetcher {
    stream: libp2p_stream::Behaviour,
    inbound: InboundBehaviour,
}

fn swarm<B: NetworkBehaviour>(behaviour: impl FnOnce() -> B) -> Swarm<B> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp transport")
        .with_behaviour(|_| behaviour())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn raw_cid(data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    Cid::new_v1(
        0x55,
        Multihash::wrap(0x12, &digest).expect("32-byte digest"),
    )
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// One framed message with one CIDv1 raw block, as boxo writes it: an empty wantlist first
/// (`0a 00`), then payload { prefix 01 55 12 20, data } (formats.md 2.3 and 2.6).
fn block_frame(data: &[u8]) -> Vec<u8> {
    let mut block = vec![0x0a, 0x04, 0x01, 0x55, 0x12, 0x20, 0x12];
    varint(&mut block, data.len() as u64);
    block.extend_from_slice(data);
    let mut message = vec![0x0a, 0x00, 0x1a];
    varint(&mut message, block.len() as u64);
    message.extend_from_slice(&block);
    let mut frame = Vec::new();
    varint(&mut frame, message.len() as u64);
    frame.extend_from_slice(&message);
    frame
}

/// A peer that takes (and ignores) our wants, dials `target`, and once `go` opens sends
/// `data` on a new stream of its own, closing it after one message as kubo does.
async fn replier(target: Multiaddr, target_peer: PeerId, data: Vec<u8>, go: Arc<Barrier>) {
    let mut swarm = swarm(libp2p_stream::Behaviour::new);
    let mut control = swarm.behaviour().new_control();
    let mut wants = control.accept(BITSWAP_120).expect("accept once");
    tokio::spawn(async move {
        while let Some((_, stream)) = wants.next().await {
            drop(stream);
        }
    });
    swarm.dial(target).expect("dial");
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });

    go.wait().await;
    // A failure here shows as the fetcher's `get` timing out, with the block named.
    let Ok(mut stream) = control.open_stream(target_peer, BITSWAP_120).await else {
        return;
    };
    if stream.write_all(&block_frame(&data)).await.is_ok() {
        let _ = stream.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_reply_streams_reaches_the_client_whole() {
    let config = Config::default();
    let (inbound, streams) = InboundBehaviour::new(config.max_inbound_streams);
    let mut fetcher = swarm(|| Fetcher {
        stream: libp2p_stream::Behaviour::new(),
        inbound,
    });
    fetcher
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = fetcher.select_next_some().await {
            break address;
        }
    };
    let control = fetcher.behaviour().stream.new_control();
    let store = Arc::new(MemoryBlockstore::new());
    let bitswap = Bitswap::with_inbound(control, streams, store, config).expect("starts");
    let fetcher_peer = *fetcher.local_peer_id();
    let reporter = bitswap.clone();
    tokio::spawn(async move {
        loop {
            match fetcher.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    reporter.peer_connected(peer_id)
                }
                SwarmEvent::ConnectionClosed {
                    peer_id,
                    num_established: 0,
                    ..
                } => reporter.peer_disconnected(peer_id),
                _ => {}
            }
        }
    });

    let blocks: Vec<Vec<u8>> = (0..REPLIERS)
        .map(|i| format!("block {i} of the burst").repeat(1000).into_bytes())
        .collect();
    let go = Arc::new(Barrier::new(REPLIERS + 1));
    for data in &blocks {
        tokio::spawn(replier(
            addr.clone(),
            fetcher_peer,
            data.clone(),
            go.clone(),
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bitswap.peers().len() < REPLIERS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "repliers did not connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Each block must come from its burst stream: the repliers never answer a want, so a
    // dropped stream is a block lost for good.
    let gets: Vec<_> = blocks
        .iter()
        .map(|data| {
            let bitswap = bitswap.clone();
            let cid = raw_cid(data);
            tokio::spawn(async move { bitswap.get(cid, Duration::from_secs(5)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    go.wait().await;

    for (get, data) in gets.into_iter().zip(&blocks) {
        let got = get.await.expect("get task").expect("block from the burst");
        assert_eq!(&got[..], &data[..]);
    }
    assert_eq!(bitswap.stats().blocks_received, REPLIERS as u64);
}
