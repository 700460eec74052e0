//! Fetching from several providers at once: the work is shared, a provider that dies or goes
//! silent mid-fetch is worked around.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use common::{pseudo_random, raw_cid, Node};
use ferry_bitswap::{Bitswap, Blockstore, Config, MemoryBlockstore};
use futures::{AsyncReadExt as _, StreamExt as _};
use libp2p::StreamProtocol;

const LIMIT: Duration = Duration::from_secs(120);
const BLOCK: usize = 256 << 10;

/// Blocks with their CIDs.
type Blocks = Vec<(Cid, Vec<u8>)>;

/// `count` distinct 256 KiB blocks, and one store holding them all (shared by the seeders).
fn blocks(count: usize) -> (Blocks, Arc<dyn Blockstore>) {
    let store = MemoryBlockstore::new();
    let blocks: Blocks = (0..count)
        .map(|i| {
            let data = pseudo_random(i as u64 + 1, BLOCK);
            (raw_cid(&data), data)
        })
        .collect();
    for (cid, data) in &blocks {
        store.insert(*cid, data.clone());
    }
    (blocks, Arc::new(store))
}

fn empty_store() -> Arc<dyn Blockstore> {
    Arc::new(MemoryBlockstore::new())
}

/// Gets every block concurrently in one session and checks the bytes.
async fn fetch_all(bitswap: &Bitswap, blocks: &[(Cid, Vec<u8>)]) {
    let session = bitswap.session();
    let fetches = blocks
        .iter()
        .map(|(cid, _)| bitswap.get_in(&session, *cid, Duration::from_secs(60)));
    let fetched = tokio::time::timeout(LIMIT, futures::future::join_all(fetches))
        .await
        .expect("waiting for every block");
    for ((cid, data), result) in blocks.iter().zip(fetched) {
        let bytes = result.unwrap_or_else(|e| panic!("fetching {cid}: {e}"));
        assert!(bytes[..] == data[..], "bytes of {cid} differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_seeders_share_the_work() {
    let (blocks, store) = blocks(300);
    let mut seeders = Vec::new();
    for _ in 0..3 {
        seeders.push(Node::bitswap(store.clone(), Config::default()).await);
    }
    let fetcher = Node::bitswap(empty_store(), Config::default()).await;
    for seeder in &seeders {
        fetcher.connect(seeder).await;
    }

    fetch_all(fetcher.bs(), &blocks).await;

    let got = fetcher.bs().stats();
    assert_eq!(got.blocks_received, 300);
    assert_eq!(got.bytes_received, 300 * BLOCK as u64);
    let sent: Vec<u64> = seeders.iter().map(|s| s.bs().stats().blocks_sent).collect();
    assert_eq!(sent.iter().sum::<u64>(), 300 + got.duplicate_blocks);
    for (index, count) in sent.iter().enumerate() {
        assert!(
            *count >= 45,
            "seeder {index} sent {count} of 300 blocks: {sent:?}"
        );
    }
    assert!(
        got.duplicate_blocks < 30,
        "{} duplicates",
        got.duplicate_blocks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_survives_a_seeder_killed_mid_fetch() {
    let (blocks, store) = blocks(300);
    let mut seeders = Vec::new();
    for _ in 0..3 {
        seeders.push(Node::bitswap(store.clone(), Config::default()).await);
    }
    let fetcher = Node::bitswap(empty_store(), Config::default()).await;
    for seeder in &seeders {
        fetcher.connect(seeder).await;
    }

    let fetch = fetch_all(fetcher.bs(), &blocks);
    let kill = async {
        let started = tokio::time::timeout(LIMIT, async {
            while fetcher.bs().stats().blocks_received < 60 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        started.await.expect("waiting for the first 60 blocks");
        let victim = seeders.remove(1);
        let killed_at = fetcher.bs().stats().blocks_received;
        drop(victim);
        killed_at
    };
    let ((), killed_at) = tokio::join!(fetch, kill);

    assert!(killed_at < 300, "the fetch ended before the kill");
    let got = fetcher.bs().stats();
    assert_eq!(got.blocks_received, 300);
    assert_eq!(fetcher.bs().peers().len(), 2);
}

/// A peer that accepts Bitswap streams and reads them, but never answers.
async fn silent_peer() -> (Node, tokio::task::JoinHandle<()>) {
    let mut node = Node::raw().await;
    let mut incoming = node
        .control
        .accept(StreamProtocol::new("/ipfs/bitswap/1.2.0"))
        .expect("accept");
    let task = tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            tokio::spawn(async move {
                let mut sink = vec![0u8; 64 << 10];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (node, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_worked_around_within_seconds() {
    let (blocks, store) = blocks(100);
    let (silent, listener) = silent_peer().await;
    let seeder = Node::bitswap(store, Config::default()).await;
    let fetcher = Node::bitswap(empty_store(), Config::default()).await;
    // Connected first, the silent peer wins the ties of the first want-blocks.
    fetcher.connect(&silent).await;
    fetcher.connect(&seeder).await;

    let started = Instant::now();
    fetch_all(fetcher.bs(), &blocks).await;
    let took = started.elapsed();

    assert!(took < Duration::from_secs(8), "took {took:?}");
    let got = fetcher.bs().stats();
    assert_eq!(got.blocks_received, 100);
    assert!(got.wants_moved >= 1, "no want-block left the silent peer");
    assert_eq!(seeder.bs().stats().blocks_sent, 100 + got.duplicate_blocks);
    listener.abort();
}

#[tokio::test]
async fn get_without_a_session_still_uses_every_seeder() {
    let (blocks, store) = blocks(60);
    let a = Node::bitswap(store.clone(), Config::default()).await;
    let b = Node::bitswap(store, Config::default()).await;
    let fetcher = Node::bitswap(empty_store(), Config::default()).await;
    fetcher.connect(&a).await;
    fetcher.connect(&b).await;

    let fetches = blocks
        .iter()
        .map(|(cid, _)| fetcher.bs().get(*cid, Duration::from_secs(30)));
    let fetched = tokio::time::timeout(LIMIT, futures::future::join_all(fetches))
        .await
        .expect("waiting for 60 blocks");
    for ((_, data), result) in blocks.iter().zip(fetched) {
        assert_eq!(result.ok(), Some(Bytes::from(data.clone())));
    }
    let (from_a, from_b) = (a.bs().stats().blocks_sent, b.bs().stats().blocks_sent);
    assert!(from_a > 0 && from_b > 0, "sent {from_a} and {from_b}");
}
