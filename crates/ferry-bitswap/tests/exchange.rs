//! Two Bitswap nodes, and hand-written peers, on loopback TCP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{block_message, frame, hex, pseudo_random, raw_cid, read_frame, Node};
use ferry_bitswap::{Blockstore, Config, MemoryBlockstore};
use futures::{AsyncWriteExt as _, StreamExt as _};
use libp2p::StreamProtocol;

const LIMIT: Duration = Duration::from_secs(120);
const V120: &str = "/ipfs/bitswap/1.2.0";

fn empty_store() -> Arc<dyn Blockstore> {
    Arc::new(MemoryBlockstore::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_300_mixed_blocks_concurrently() {
    let store = MemoryBlockstore::new();
    let sizes = [1usize, 256 << 10, 1 << 20];
    let counts = [100usize, 150, 50];
    let mut blocks = Vec::new();
    for (size, count) in sizes.iter().zip(counts) {
        for _ in 0..count {
            // One-byte blocks take distinct values so that all 300 CIDs differ.
            let data = match size {
                1 => vec![blocks.len() as u8],
                _ => pseudo_random(blocks.len() as u64 + 1, *size),
            };
            store.insert(raw_cid(&data), data.clone());
            blocks.push((raw_cid(&data), data));
        }
    }
    let a = Node::bitswap(Arc::new(store), Config::default()).await;
    let b = Node::bitswap(empty_store(), Config::default()).await;
    b.connect(&a).await;

    let fetches = blocks
        .iter()
        .map(|(cid, _)| b.bs().get(*cid, Duration::from_secs(60)));
    let fetched = tokio::time::timeout(LIMIT, futures::future::join_all(fetches)).await;
    let fetched = fetched.expect("waiting for 300 blocks");
    for ((cid, data), result) in blocks.iter().zip(fetched) {
        let bytes = result.unwrap_or_else(|e| panic!("fetching {cid}: {e}"));
        assert!(bytes[..] == data[..], "bytes of {cid} differ");
    }

    let distinct: std::collections::HashSet<_> = blocks.iter().map(|(cid, _)| *cid).collect();
    assert_eq!(distinct.len(), 300);
    let total: u64 = blocks.iter().map(|(_, data)| data.len() as u64).sum();
    assert_eq!(total, 100 + 150 * (256 << 10) + 50 * (1 << 20));
    let (got, sent) = (b.bs().stats(), a.bs().stats());
    assert_eq!((got.blocks_received, got.bytes_received), (300, total));
    assert_eq!((got.invalid_blocks, got.unwanted_blocks), (0, 0));
    assert_eq!(sent.blocks_sent, 300 + got.duplicate_blocks);
}

#[tokio::test]
async fn missing_block_times_out_naming_peers() {
    let cid = raw_cid(b"nobody has this");
    let alone = Node::bitswap(empty_store(), Config::default()).await;
    let error = alone.bs().get(cid, Duration::from_millis(200)).await.err();
    let text = error.map(|e| e.to_string());
    let expected = format!("no peer sent block {cid}: 0 peers connected, 0 asked, waited 200ms");
    assert_eq!(text, Some(expected));

    let a = Node::bitswap(empty_store(), Config::default()).await;
    alone.connect(&a).await;
    let error = alone.bs().get(cid, Duration::from_secs(1)).await.err();
    let text = error.map(|e| e.to_string());
    let expected = format!("no peer sent block {cid}: 1 peers connected, 1 asked, waited 1s");
    assert_eq!(text, Some(expected));
    assert_eq!(alone.bs().stats().dont_haves_received, 1);
    assert_eq!(a.bs().stats().dont_haves_sent, 1);
}

#[tokio::test]
async fn block_arriving_after_late_connection_is_delivered() {
    let data = pseudo_random(7, 300_000);
    let store = MemoryBlockstore::new();
    store.insert(raw_cid(&data), data.clone());
    let a = Node::bitswap(Arc::new(store), Config::default()).await;
    let b = Node::bitswap(empty_store(), Config::default()).await;

    let fetch = b.bs().get(raw_cid(&data), Duration::from_secs(20));
    let connect = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.connect(&a).await;
    };
    let (fetched, ()) = tokio::join!(fetch, connect);
    assert_eq!(fetched.ok(), Some(Bytes::from(data)));
}

#[tokio::test]
async fn block_with_wrong_bytes_is_not_accepted() {
    let wanted = b"the real block".to_vec();
    let cid = raw_cid(&wanted);
    let (b, mut evil, mut inbound) = fetcher_and_hand_written_peer().await;

    let fetch = tokio::spawn({
        let bitswap = b.bs().clone();
        async move { bitswap.get(cid, Duration::from_secs(20)).await }
    });

    // The want arrives exactly as formats.md 2.3 spells a want-block with sendDontHave.
    let (from, mut wants) = inbound.next().await.expect("want stream");
    assert_eq!(from, b.peer);
    let want = read_frame(&mut wants).await.expect("want message");
    let cid_hex: String = cid.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        want,
        hex(&format!("0a30 0a2e 0a24 {cid_hex} 10ffffffff07 2801"))
    );

    // Forged bytes under the right prefix, an unverifiable hash, then the real block.
    let mut stream = evil
        .control
        .open_stream(b.peer, StreamProtocol::new(V120))
        .await
        .expect("open");
    for message in [
        block_message(&hex("01551220"), b"forged bytes"),
        block_message(&hex("01551e20"), &wanted),
        block_message(&hex("01551220"), &wanted),
    ] {
        stream.write_all(&frame(&message)).await.expect("write");
    }
    stream.flush().await.expect("flush");

    let fetched = tokio::time::timeout(LIMIT, fetch)
        .await
        .expect("fetch ends");
    assert_eq!(fetched.expect("task").ok(), Some(Bytes::from(wanted)));
    let stats = b.bs().stats();
    assert_eq!(
        (
            stats.unwanted_blocks,
            stats.invalid_blocks,
            stats.blocks_received
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn dropping_get_sends_cancel() {
    let cid = raw_cid(b"wanted then not");
    let b = Node::bitswap(empty_store(), Config::default()).await;
    let mut peer = Node::raw().await;
    let mut inbound = peer
        .control
        .accept(StreamProtocol::new(V120))
        .expect("accept");
    b.connect(&peer).await;

    let fetch = tokio::spawn({
        let bitswap = b.bs().clone();
        async move { bitswap.get(cid, Duration::from_secs(60)).await }
    });
    let (_, mut wants) = inbound.next().await.expect("want stream");
    read_frame(&mut wants).await.expect("want message");
    fetch.abort();

    let cancel = tokio::time::timeout(LIMIT, read_frame(&mut wants))
        .await
        .expect("cancel");
    let cid_hex: String = cid.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(cancel, Some(hex(&format!("0a2a 0a28 0a24 {cid_hex} 1801"))));
}

#[tokio::test]
async fn server_answers_on_a_stream_it_opens() {
    let hello = b"hello world\n".to_vec();
    let large = pseudo_random(3, 2048);
    let store = MemoryBlockstore::new();
    store.insert(raw_cid(&hello), hello.clone());
    store.insert(raw_cid(&large), large.clone());
    let a = Node::bitswap(Arc::new(store), Config::default()).await;
    let mut client = Node::raw().await;
    let mut replies = client
        .control
        .accept(StreamProtocol::new(V120))
        .expect("accept");
    client.connect(&a).await;

    // want-have with sendDontHave for: hello (small), a missing block, the 2 KiB block.
    let cid_hex = |data: &[u8]| -> String {
        raw_cid(data)
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let entry = |data: &[u8]| format!("0a30 0a24 {} 10ffffffff07 2001 2801", cid_hex(data));
    let request = format!(
        "0a96 01 {} {} {}",
        entry(&hello),
        entry(b"missing"),
        entry(&large)
    );
    let mut asked = client
        .control
        .open_stream(a.peer, StreamProtocol::new(V120))
        .await
        .expect("open");
    asked
        .write_all(&frame(&hex(&request)))
        .await
        .expect("write");
    asked.flush().await.expect("flush");

    let (from, mut answers) = tokio::time::timeout(LIMIT, replies.next())
        .await
        .expect("reply stream")
        .expect("open");
    assert_eq!(from, a.peer);
    let answer = read_frame(&mut answers).await.expect("reply message");
    let expected = format!(
        "0a00 1a14 0a04 01551220 120c 68656c6c6f20776f726c640a 2228 0a24 {} 1001 2226 0a24 {}",
        cid_hex(b"missing"),
        cid_hex(&large)
    );
    assert_eq!(answer, hex(&expected));

    // Nothing comes back on the stream the client opened.
    let echoed = tokio::time::timeout(Duration::from_millis(300), read_frame(&mut asked)).await;
    assert!(
        !matches!(echoed, Ok(Some(_))),
        "reply written on the requester's stream"
    );
    let stats = a.bs().stats();
    assert_eq!(
        (stats.blocks_sent, stats.haves_sent, stats.dont_haves_sent),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn timeout_after_only_corrupt_data_says_so() {
    let wanted = b"the real block".to_vec();
    let cid = raw_cid(&wanted);
    let (b, mut evil, mut inbound) = fetcher_and_hand_written_peer().await;
    let fetch = tokio::spawn({
        let bitswap = b.bs().clone();
        async move { bitswap.get(cid, Duration::from_secs(2)).await }
    });

    // The peer answers the want with bytes that do not hash to the CID, and nothing else.
    let (_, mut wants) = inbound.next().await.expect("want stream");
    read_frame(&mut wants).await.expect("want message");
    let mut stream = evil
        .control
        .open_stream(b.peer, StreamProtocol::new(V120))
        .await
        .expect("open");
    let forged = block_message(&hex("01551220"), b"forged bytes");
    stream.write_all(&frame(&forged)).await.expect("write");
    stream.flush().await.expect("flush");

    let err = fetch
        .await
        .expect("task")
        .expect_err("no real block was sent");
    assert_eq!(
        err.to_string(),
        format!(
            "no peer sent block {cid}: 1 peers connected, 1 asked, waited 2s (1 blocks matching \
             no wanted CID were dropped: a peer may send corrupt data)"
        )
    );
}

/// A Bitswap node with nothing, connected to a bare peer whose incoming Bitswap 1.2.0 streams
/// the test reads itself.
async fn fetcher_and_hand_written_peer() -> (Node, Node, libp2p_stream::IncomingStreams) {
    let b = Node::bitswap(empty_store(), Config::default()).await;
    let mut evil = Node::raw().await;
    let inbound = evil
        .control
        .accept(StreamProtocol::new(V120))
        .expect("accept");
    b.connect(&evil).await;
    (b, evil, inbound)
}
