//! The scheduling of [`ClientState`] without a network: entries are read off the per-peer
//! channels that the writer tasks would drain.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::multihash::Multihash;
use cid::Cid;
use libp2p::PeerId;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::state::{Arrival, ClientState};
use crate::wire::{Entry, WantType};
use crate::Config;

fn block(n: u32) -> (Cid, Bytes) {
    let data = Bytes::from(format!("block {n}").into_bytes());
    let digest = Sha256::digest(&data);
    let hash = Multihash::wrap(0x12, &digest).expect("32-byte digest");
    (Cid::new_v1(0x55, hash), data)
}

struct Harness {
    state: ClientState,
    peers: Vec<(PeerId, mpsc::UnboundedReceiver<Entry>)>,
}

impl Harness {
    fn new(peers: usize) -> Harness {
        let mut state = ClientState::new(&Config::default());
        let peers = (0..peers)
            .map(|_| {
                let peer = PeerId::random();
                let (sender, receiver) = mpsc::unbounded_channel();
                assert!(state.add_peer(peer, sender));
                (peer, receiver)
            })
            .collect();
        Harness { state, peers }
    }

    /// Connects one more peer; returns its index.
    fn add_peer(&mut self) -> usize {
        let peer = PeerId::random();
        let (sender, receiver) = mpsc::unbounded_channel();
        assert!(self.state.add_peer(peer, sender));
        self.peers.push((peer, receiver));
        self.peers.len() - 1
    }

    fn id(&self, index: usize) -> PeerId {
        self.peers[index].0
    }

    /// Entries queued for peer `index`, as (CID, want type) or None for a cancel.
    fn drain(&mut self, index: usize) -> Vec<(Cid, Option<WantType>)> {
        let mut out = Vec::new();
        while let Ok(entry) = self.peers[index].1.try_recv() {
            let cid = Cid::try_from(entry.block.as_slice()).expect("cid");
            out.push((cid, (!entry.cancel).then(|| entry.want_type())));
        }
        out
    }
}

#[test]
fn new_want_sends_one_want_block_and_want_have_to_the_rest() {
    let mut h = Harness::new(3);
    let (cid, _) = block(1);
    let _waiter = h.state.add_waiter(cid, None);

    let sent: Vec<_> = (0..3).map(|i| h.drain(i)).collect();
    let blocks = sent
        .iter()
        .filter(|s| s == &&vec![(cid, Some(WantType::Block))])
        .count();
    let haves = sent
        .iter()
        .filter(|s| s == &&vec![(cid, Some(WantType::Have))])
        .count();
    assert_eq!((blocks, haves), (1, 2));
}

#[test]
fn want_blocks_spread_evenly_a_few_per_peer_until_rates_are_known() {
    let mut h = Harness::new(3);
    let _waiters: Vec<_> = (0..200)
        .map(|n| h.state.add_waiter(block(n).0, None))
        .collect();

    let in_flight: Vec<usize> = (0..3).map(|i| h.state.in_flight(&h.id(i))).collect();
    assert_eq!(in_flight, vec![4, 4, 4]);

    // a peer measured fast gets up to the configured 32 as slots free; a slow one two
    h.state.set_per_block(&h.id(0), 0.001);
    h.state.set_per_block(&h.id(1), 1.0);
    let (first, _) = block(0);
    let holder = (0..3)
        .find(|i| h.drain(*i).contains(&(first, Some(WantType::Block))))
        .expect("a holder of the first want");
    h.state.on_presence(h.id(holder), &first, false);
    assert_eq!(h.state.in_flight(&h.id(0)), 32);
    assert_eq!(h.state.in_flight(&h.id(1)), 4 - usize::from(holder == 1));
}

#[test]
fn have_from_a_quick_peer_moves_a_want_block_queued_behind_a_slow_holder() {
    let mut h = Harness::new(1);
    h.state.set_per_block(&h.id(0), 1.0);
    let (x, _) = block(1);
    let (y, _) = block(2);
    let _wx = h.state.add_waiter(x, None);
    let _wy = h.state.add_waiter(y, None);
    let sent = h.drain(0);
    assert_eq!(
        sent,
        vec![(x, Some(WantType::Block)), (y, Some(WantType::Block))]
    );
    let quick = h.add_peer();
    assert_eq!(
        h.drain(quick),
        vec![(x, Some(WantType::Have)), (y, Some(WantType::Have))]
    );

    // as slow as the holder: the want-block stays (2 s there against 1 s here is no gain)
    h.state.set_per_block(&h.id(quick), 1.0);
    h.state.on_presence(h.id(quick), &x, true);
    assert_eq!((h.drain(0), h.drain(quick)), (vec![], vec![]));

    // quick: it moves, and the slow holder is told to drop it
    h.state.set_per_block(&h.id(quick), 0.01);
    h.state.on_presence(h.id(quick), &y, true);
    assert_eq!(h.drain(0), vec![(y, None)]);
    assert_eq!(h.drain(quick), vec![(y, Some(WantType::Block))]);
    assert_eq!(
        (h.state.in_flight(&h.id(0)), h.state.in_flight(&h.id(quick))),
        (1, 1)
    );
    assert_eq!(h.state.take_moved(), 1);
}

#[test]
fn a_slow_want_block_is_asked_once_more_of_a_have_peer_and_the_loser_cancelled() {
    let mut h = Harness::new(1);
    h.state.set_per_block(&h.id(0), 0.1);
    let (x, data) = block(1);
    let _wx = h.state.add_waiter(x, None);
    h.drain(0);
    let other = h.add_peer();
    h.state.set_per_block(&h.id(other), 0.1);
    h.drain(other);
    h.state.on_presence(h.id(other), &x, true);
    assert_eq!(h.drain(other), vec![]);

    let sent = Instant::now();
    // under the copy deadline (a quarter of the 2 s floor): nothing
    assert_eq!(h.state.check_overdue(sent + Duration::from_millis(200)), 0);
    assert_eq!(h.state.check_overdue(sent + Duration::from_secs(1)), 1);
    assert_eq!(h.drain(other), vec![(x, Some(WantType::Block))]);
    assert_eq!(h.drain(0), vec![]);
    // once only
    assert_eq!(h.state.check_overdue(sent + Duration::from_millis(1500)), 0);
    assert_eq!(h.drain(other), vec![]);

    assert_eq!(h.state.on_block(h.id(other), &x, &data), Arrival::Accepted);
    assert_eq!(h.drain(0), vec![(x, None)]);
    assert_eq!(h.state.on_block(h.id(0), &x, &data), Arrival::Duplicate);
    assert_eq!(
        (h.state.in_flight(&h.id(0)), h.state.in_flight(&h.id(other))),
        (0, 0)
    );
}

#[test]
fn dont_have_from_the_second_peer_leaves_the_want_block_with_the_first() {
    let mut h = Harness::new(1);
    let (x, data) = block(1);
    let _wx = h.state.add_waiter(x, None);
    h.drain(0);
    let other = h.add_peer();
    h.state.on_presence(h.id(other), &x, true);
    h.drain(other);
    assert_eq!(
        h.state
            .check_overdue(Instant::now() + Duration::from_secs(1)),
        1
    );
    assert_eq!(h.drain(other), vec![(x, Some(WantType::Block))]);

    h.state.on_presence(h.id(other), &x, false);
    assert_eq!(h.state.in_flight(&h.id(other)), 0);
    assert_eq!(h.state.in_flight(&h.id(0)), 1);
    assert_eq!(h.drain(0), vec![]);
    assert_eq!(h.state.on_block(h.id(0), &x, &data), Arrival::Accepted);
}

#[test]
fn dont_have_from_the_holder_moves_the_want_block_to_a_have_peer() {
    let mut h = Harness::new(3);
    let (cid, _) = block(1);
    let _waiter = h.state.add_waiter(cid, None);
    let sent: Vec<_> = (0..3).map(|i| h.drain(i)).collect();
    let holder = (0..3)
        .find(|i| sent[*i].contains(&(cid, Some(WantType::Block))))
        .expect("a holder");
    let other = (holder + 1) % 3;

    h.state.on_presence(h.id(other), &cid, true);
    h.state.on_presence(h.id(holder), &cid, false);
    assert_eq!(h.drain(other), vec![(cid, Some(WantType::Block))]);
    assert_eq!(h.state.in_flight(&h.id(holder)), 0);
}

#[test]
fn overdue_want_block_moves_and_is_cancelled_at_the_silent_peer() {
    let mut h = Harness::new(2);
    let (cid, data) = block(1);
    let _waiter = h.state.add_waiter(cid, None);
    let holder = usize::from(h.drain(0).is_empty());
    let other = 1 - holder;
    h.drain(other);
    h.state.on_presence(h.id(other), &cid, true);

    assert_eq!(h.state.check_overdue(Instant::now()), 0);
    let later = Instant::now() + Duration::from_secs(3);
    assert_eq!(h.state.check_overdue(later), 1);
    assert_eq!(h.drain(holder), vec![(cid, None)]);
    assert_eq!(h.drain(other), vec![(cid, Some(WantType::Block))]);

    assert_eq!(
        h.state.on_block(h.id(other), &cid, &data),
        Arrival::Accepted
    );
    assert_eq!(
        h.state.on_block(h.id(holder), &cid, &data),
        Arrival::Duplicate
    );
}

#[test]
fn session_prefers_the_peer_that_sent_its_earlier_block() {
    let mut h = Harness::new(2);
    let session = h.state.open_session();
    let (first, data) = block(1);
    let _waiter = h.state.add_waiter(first, Some(session));
    let holder = usize::from(h.drain(0).is_empty());
    h.state.on_block(h.id(holder), &first, &data);
    h.drain(0);
    h.drain(1);

    // Both peers are idle; only the holder is known to have the session's blocks.
    let _waiters: Vec<_> = (3..6)
        .map(|n| h.state.add_waiter(block(n).0, Some(session)))
        .collect();
    let kinds = |sent: Vec<(Cid, Option<WantType>)>| -> Vec<Option<WantType>> {
        sent.into_iter().map(|(_, kind)| kind).collect()
    };
    assert_eq!(kinds(h.drain(holder)), vec![Some(WantType::Block); 3]);
    assert_eq!(kinds(h.drain(1 - holder)), vec![Some(WantType::Have); 3]);
}

#[test]
fn without_hints_a_peer_that_served_before_beats_an_idle_stranger() {
    let mut h = Harness::new(2);
    let (first, data) = block(1);
    let _first = h.state.add_waiter(first, None);
    let server = usize::from(h.drain(0).is_empty());
    h.state.on_block(h.id(server), &first, &data);
    h.drain(0);
    h.drain(1);

    let _waiters: Vec<_> = (2..5)
        .map(|n| h.state.add_waiter(block(n).0, None))
        .collect();
    assert_eq!(h.state.in_flight(&h.id(server)), 3);
    assert_eq!(h.state.in_flight(&h.id(1 - server)), 0);
}

#[test]
fn every_peer_refusing_starts_a_new_round_at_rebroadcast() {
    let mut h = Harness::new(2);
    let (cid, _) = block(1);
    let _waiter = h.state.add_waiter(cid, None);
    let holder = usize::from(h.drain(0).is_empty());
    h.drain(1);
    h.state.on_presence(h.id(1 - holder), &cid, false);
    h.state.on_presence(h.id(holder), &cid, false);
    assert_eq!((h.drain(0), h.drain(1)), (vec![], vec![]));

    h.state.rebroadcast();
    let sent = [h.drain(0), h.drain(1)].concat();
    let mut kinds: Vec<_> = sent.iter().map(|(_, kind)| *kind).collect();
    kinds.sort();
    assert_eq!(kinds, vec![Some(WantType::Block), Some(WantType::Have)]);
}
