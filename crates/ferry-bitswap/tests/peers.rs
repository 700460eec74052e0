//! Several peers: moving on at DONT_HAVE, re-asking later, old protocol versions, hostile input.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use common::{frame, hex, pseudo_random, raw_cid, read_frame, varint, Node};
use ferry_bitswap::{Blockstore, Config, MemoryBlockstore};
use futures::{AsyncWriteExt as _, StreamExt as _};
use libp2p::StreamProtocol;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn dont_have_moves_the_want_to_the_next_peer() {
    let store = MemoryBlockstore::new();
    let blocks: Vec<Vec<u8>> = (0..10).map(|i| pseudo_random(i + 1, 4096)).collect();
    for data in &blocks {
        store.insert(raw_cid(data), data.clone());
    }
    let empty = Node::bitswap(Arc::new(MemoryBlockstore::new()), Config::default()).await;
    let holder = Node::bitswap(Arc::new(store), Config::default()).await;
    let b = Node::bitswap(Arc::new(MemoryBlockstore::new()), Config::default()).await;
    b.connect(&empty).await;
    b.connect(&holder).await;

    // Well under the 5 s rebroadcast: only DONT_HAVE can have moved the wants.
    let started = Instant::now();
    let fetches = blocks
        .iter()
        .map(|data| b.bs().get(raw_cid(data), Duration::from_secs(3)));
    let fetched = futures::future::join_all(fetches).await;
    for (data, result) in blocks.iter().zip(fetched) {
        assert_eq!(result.ok(), Some(Bytes::from(data.clone())));
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    let asked_empty = empty.bs().stats().dont_haves_sent;
    assert!(asked_empty >= 1, "round robin never asked the empty peer");
    assert_eq!(b.bs().stats().dont_haves_received, asked_empty);
    assert_eq!(holder.bs().stats().blocks_sent, 10);
}

#[tokio::test]
async fn want_is_asked_again_after_every_peer_said_dont_have() {
    let data = b"arrives later".to_vec();
    let store = Arc::new(MemoryBlockstore::new());
    let config = Config {
        rebroadcast_interval: Duration::from_millis(200),
        ..Config::default()
    };
    let a = Node::bitswap(store.clone() as Arc<dyn Blockstore>, config.clone()).await;
    let b = Node::bitswap(Arc::new(MemoryBlockstore::new()), config).await;
    b.connect(&a).await;

    let fetch = tokio::spawn({
        let bitswap = b.bs().clone();
        let cid = raw_cid(&data);
        async move { bitswap.get(cid, Duration::from_secs(10)).await }
    });
    let told = tokio::time::timeout(LIMIT, async {
        while b.bs().stats().dont_haves_received == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    told.await.expect("waiting for the first DONT_HAVE");
    store.insert(raw_cid(&data), data.clone());

    let fetched = tokio::time::timeout(LIMIT, fetch)
        .await
        .expect("fetch ends");
    assert_eq!(fetched.expect("task").ok(), Some(Bytes::from(data)));
}

#[tokio::test]
async fn server_falls_back_to_1_0_0_for_an_old_peer() {
    let data = b"a dag-pb node, as far as bitswap cares".to_vec();
    let digest = raw_cid(&data).hash().to_owned();
    let cid = Cid::new_v0(digest).expect("sha2-256 CIDv0");
    let store = MemoryBlockstore::new();
    store.insert(cid, data.clone());
    let a = Node::bitswap(Arc::new(store), Config::default()).await;
    let mut old = Node::raw().await;
    let mut replies = old
        .control
        .accept(StreamProtocol::new("/ipfs/bitswap/1.0.0"))
        .expect("accept");
    old.connect(&a).await;

    // A 1.0.0 want-block: CIDv0 bytes, priority 1.
    let cid_hex: String = cid.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let request = format!("0a28 0a26 0a22 {cid_hex} 1001");
    let protocol = StreamProtocol::new("/ipfs/bitswap/1.0.0");
    let mut asked = old
        .control
        .open_stream(a.peer, protocol)
        .await
        .expect("open");
    asked
        .write_all(&frame(&hex(&request)))
        .await
        .expect("write");
    asked.flush().await.expect("flush");

    // The reply comes on a 1.0.0 stream A opened after 1.2.0 and 1.1.0 were refused, with the
    // block raw in field 2.
    let (_, mut answers) = tokio::time::timeout(LIMIT, replies.next())
        .await
        .expect("reply stream")
        .expect("open");
    let answer = read_frame(&mut answers).await.expect("reply message");
    let mut expected = hex("0a00 12");
    varint(&mut expected, data.len() as u64);
    expected.extend_from_slice(&data);
    assert_eq!(answer, expected);
}

#[tokio::test]
async fn oversized_message_drops_the_stream() {
    let a = Node::bitswap(Arc::new(MemoryBlockstore::new()), Config::default()).await;
    let mut hostile = Node::raw().await;
    hostile.connect(&a).await;

    let protocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");
    let mut stream = hostile
        .control
        .open_stream(a.peer, protocol)
        .await
        .expect("open");
    let mut header = Vec::new();
    varint(&mut header, (4 << 20) + 1);
    stream.write_all(&header).await.expect("write");
    stream.flush().await.expect("flush");

    // A reads no body: it drops the stream, which the sender sees as the end of it.
    let ended = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream)).await;
    assert_eq!(
        ended.ok(),
        Some(None),
        "stream still open after an oversized length"
    );
}

/// The announce path (issue 9): a peer told DONT_HAVE is told HAVE as soon as the block
/// arrives, and fetches it long before its next rebroadcast would have asked again.
#[tokio::test]
async fn announce_tells_a_peer_that_was_told_dont_have() {
    let data = pseudo_random(7, 4096);
    let cid = raw_cid(&data);
    let store = Arc::new(MemoryBlockstore::new());
    let config = Config {
        rebroadcast_interval: Duration::from_secs(60),
        ..Config::default()
    };
    let a = Node::bitswap(store.clone() as Arc<dyn Blockstore>, config.clone()).await;
    let b = Node::bitswap(Arc::new(MemoryBlockstore::new()), config).await;
    b.connect(&a).await;

    let fetch = tokio::spawn({
        let bitswap = b.bs().clone();
        async move { bitswap.get(cid, Duration::from_secs(30)).await }
    });
    let told = tokio::time::timeout(LIMIT, async {
        // DONT_HAVE for the want-have and for the want-block
        while a.bs().stats().dont_haves_sent == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    told.await.expect("waiting for DONT_HAVE");
    // a second announce of a block nobody asked for changes nothing
    a.bs().announce(&raw_cid(b"nobody asked"));
    let started = Instant::now();
    store.insert(cid, data.clone());
    a.bs().announce(&cid);

    let fetched = tokio::time::timeout(LIMIT, fetch)
        .await
        .expect("fetch ends");
    assert_eq!(fetched.expect("task").ok(), Some(Bytes::from(data)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: the announce did not reach the peer",
        started.elapsed()
    );
    assert_eq!(a.bs().stats().haves_sent, 1);
    assert_eq!(a.bs().stats().blocks_sent, 1);
}

/// A store that takes `delay` to read a block: a peer that is slow to send blocks (it answers
/// want-have at once).
struct SlowStore {
    blocks: MemoryBlockstore,
    delay: Duration,
}

impl Blockstore for SlowStore {
    fn get(&self, cid: &Cid) -> std::io::Result<Option<Vec<u8>>> {
        std::thread::sleep(self.delay);
        self.blocks.get(cid)
    }

    fn has(&self, cid: &Cid) -> std::io::Result<bool> {
        self.blocks.has(cid)
    }

    fn size(&self, cid: &Cid) -> std::io::Result<Option<usize>> {
        self.blocks.size(cid)
    }
}

/// Issue 9: two peers hold every block and say HAVE at once; one reads each block for 300 ms,
/// the other at once. The client learns their rates: the slow peer keeps only the few want-blocks it got
/// first (copied to the quick peer once they wait too long), and the quick one serves the rest.
/// Split evenly, the slow peer's half alone would take 9 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wants_go_to_the_quick_peer_and_leave_the_slow_one() {
    let blocks: Vec<Vec<u8>> = (0..60).map(|i| pseudo_random(i + 100, 8192)).collect();
    let quick_store = MemoryBlockstore::new();
    let slow_store = SlowStore {
        blocks: MemoryBlockstore::new(),
        delay: Duration::from_millis(300),
    };
    for data in &blocks {
        quick_store.insert(raw_cid(data), data.clone());
        slow_store.blocks.insert(raw_cid(data), data.clone());
    }
    let slow = Node::bitswap(Arc::new(slow_store), Config::default()).await;
    let quick = Node::bitswap(Arc::new(quick_store), Config::default()).await;
    let client = Node::bitswap(Arc::new(MemoryBlockstore::new()), Config::default()).await;
    client.connect(&slow).await;
    client.connect(&quick).await;

    let started = Instant::now();
    let session = client.bs().session();
    let fetches = blocks
        .iter()
        .map(|data| client.bs().get_in(&session, raw_cid(data), LIMIT));
    let fetched = futures::future::join_all(fetches).await;
    let took = started.elapsed();
    for (data, result) in blocks.iter().zip(fetched) {
        assert_eq!(result.ok(), Some(Bytes::from(data.clone())));
    }
    assert!(took < Duration::from_secs(4), "took {took:?}");

    let got = client.bs().stats();
    let from_slow = slow.bs().stats().blocks_sent;
    // the slow peer had 4 want-blocks before its rate was known; no more
    assert!(from_slow <= 4, "the slow peer sent {from_slow} blocks");
    assert!(quick.bs().stats().blocks_sent >= 56);
    assert!(got.duplicate_blocks <= 4, "{got:?}");
}
