//! The client: one want per CID, sent to one peer at a time, moved on at DONT_HAVE, re-asked on
//! a timer, and resolved by the first block whose bytes hash to the CID (formats.md 2.4).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use crate::outbound::Outbound;
use crate::wire::{self, Entry, Message, PresenceType, WantType, Wantlist};
use crate::{bump, Config, Inner};

/// Entries merged into one wantlist message at most; about 0.7 MiB of CIDs, well under the
/// 2 MiB that boxo allows for a wantlist message (formats.md 2.4).
const MAX_ENTRIES_PER_MESSAGE: usize = 16 * 1024;
/// CIDs remembered after they resolved, to tell duplicates from unwanted blocks.
const RECENT_CIDS: usize = 4096;
/// A want unanswered for this many rebroadcast intervals moves on even if the peer is busy.
const STALE_INTERVALS: u32 = 6;

/// One wanted CID.
struct Want {
    waiters: HashMap<u64, oneshot::Sender<Bytes>>,
    priority: i32,
    /// Peers sent a want-block for it, to cancel when it resolves.
    asked: HashSet<PeerId>,
    /// Peers that said DONT_HAVE (or could not be sent the want) in this round.
    dont_have: HashSet<PeerId>,
    /// The peer asked now and when.
    current: Option<(PeerId, Instant)>,
    /// Whether the CID sits in the pending queue.
    queued: bool,
}

/// What the client knows of one connected peer.
struct PeerWants {
    sender: mpsc::UnboundedSender<Entry>,
    in_flight: usize,
    last_heard: Instant,
}

/// The client's wants and peers. Methods never block; they queue entries for per-peer tasks.
pub(crate) struct ClientState {
    wants: HashMap<Cid, Want>,
    peers: Vec<PeerId>,
    peer_wants: HashMap<PeerId, PeerWants>,
    rotation: usize,
    next_priority: i32,
    next_waiter: u64,
    /// Wants without a peer because every eligible peer was at its limit.
    pending: VecDeque<Cid>,
    recent: VecDeque<Cid>,
    recent_set: HashSet<Cid>,
    max_in_flight: usize,
    interval: Duration,
}

/// What became of a verified block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    Accepted,
    Duplicate,
    Unwanted,
}

impl ClientState {
    pub(crate) fn new(config: &Config) -> Self {
        ClientState {
            wants: HashMap::new(),
            peers: Vec::new(),
            peer_wants: HashMap::new(),
            rotation: 0,
            next_priority: i32::MAX,
            next_waiter: 0,
            pending: VecDeque::new(),
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            max_in_flight: config.max_wants_per_peer.max(1),
            interval: config.rebroadcast_interval,
        }
    }

    /// Adds a waiter for `cid`, creating and dispatching the want if it is new.
    fn add_waiter(&mut self, cid: Cid) -> (u64, oneshot::Receiver<Bytes>) {
        let (sender, receiver) = oneshot::channel();
        let id = self.next_waiter;
        self.next_waiter += 1;

        let is_new = !self.wants.contains_key(&cid);
        if is_new {
            // boxo starts at 2^31-1 and counts down so older wants go first (formats.md 2.4).
            let priority = self.next_priority;
            self.next_priority = if priority <= 1 {
                i32::MAX
            } else {
                priority - 1
            };
            self.wants.insert(cid, Want::new(priority));
        }
        if let Some(want) = self.wants.get_mut(&cid) {
            want.waiters.insert(id, sender);
        }
        if is_new {
            self.dispatch(cid);
        }
        (id, receiver)
    }

    /// Removes a waiter; the last one out withdraws the want and cancels it at the peers asked.
    fn remove_waiter(&mut self, cid: &Cid, id: u64) {
        let Some(want) = self.wants.get_mut(cid) else {
            return;
        };
        want.waiters.remove(&id);
        if !want.waiters.is_empty() {
            return;
        }

        if let Some(mut want) = self.wants.remove(cid) {
            self.release(&mut want);
            for peer in &want.asked {
                self.send(peer, cancel_entry(cid));
            }
        }
        self.fill_pending();
    }

    /// Sends the want to the next eligible peer, or queues it.
    fn dispatch(&mut self, cid: Cid) {
        let Some(peer) = self.pick_peer(&cid) else {
            self.park(cid);
            return;
        };
        let Some(want) = self.wants.get_mut(&cid) else {
            return;
        };

        want.current = Some((peer, Instant::now()));
        want.asked.insert(peer);
        let entry = want_entry(&cid, want.priority);
        if let Some(state) = self.peer_wants.get_mut(&peer) {
            state.in_flight += 1;
        }
        self.send(&peer, entry);
    }

    /// Queues a want that found no peer, unless every peer already said DONT_HAVE (then the
    /// rebroadcast timer starts a new round).
    fn park(&mut self, cid: Cid) {
        let exhausted = self.is_exhausted(&cid);
        if let Some(want) = self.wants.get_mut(&cid) {
            if !exhausted && !want.queued {
                want.queued = true;
                self.pending.push_back(cid);
            }
        }
    }

    /// Whether peers are connected and all of them said DONT_HAVE for `cid`.
    fn is_exhausted(&self, cid: &Cid) -> bool {
        let Some(want) = self.wants.get(cid) else {
            return false;
        };
        !self.peers.is_empty() && self.peers.iter().all(|peer| want.dont_have.contains(peer))
    }

    /// The next peer in rotation that has not said DONT_HAVE and is under its limit.
    fn pick_peer(&mut self, cid: &Cid) -> Option<PeerId> {
        let want = self.wants.get(cid)?;
        let count = self.peers.len();
        let mut chosen = None;
        for step in 0..count {
            let index = (self.rotation + step) % count;
            let peer = self.peers[index];
            let under_limit = self
                .peer_wants
                .get(&peer)
                .is_some_and(|state| state.in_flight < self.max_in_flight);
            if under_limit && !want.dont_have.contains(&peer) {
                chosen = Some((index, peer));
                break;
            }
        }
        let (index, peer) = chosen?;
        self.rotation = (index + 1) % count;
        Some(peer)
    }

    /// Frees the slot the want holds at its current peer.
    fn release(&mut self, want: &mut Want) {
        if let Some((peer, _)) = want.current.take() {
            if let Some(state) = self.peer_wants.get_mut(&peer) {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
        }
    }

    /// Dispatches queued wants while peers have room.
    fn fill_pending(&mut self) {
        while let Some(cid) = self.pending.pop_front() {
            let Some(want) = self.wants.get_mut(&cid) else {
                continue;
            };
            want.queued = false;
            if want.current.is_some() {
                continue;
            }
            self.dispatch(cid);
            if self.wants.get(&cid).is_some_and(|want| want.queued) {
                // Still no room anywhere: the rest of the queue would not fit either.
                break;
            }
        }
    }

    /// Moves a want away from `peer` after it said DONT_HAVE (or its stream failed).
    pub(crate) fn on_dont_have(&mut self, peer: PeerId, cid: &Cid) {
        let Some(mut want) = self.wants.remove(cid) else {
            return;
        };
        want.dont_have.insert(peer);
        let was_current = want.current.is_some_and(|(current, _)| current == peer);
        if was_current {
            self.release(&mut want);
        }
        self.wants.insert(*cid, want);

        if was_current {
            self.dispatch(*cid);
            self.fill_pending();
        }
    }

    /// Resolves every waiter for a verified block and cancels the want at the other peers.
    pub(crate) fn on_block(&mut self, from: PeerId, cid: &Cid, data: &Bytes) -> Arrival {
        let Some(mut want) = self.wants.remove(cid) else {
            return if self.recent_set.contains(cid) {
                Arrival::Duplicate
            } else {
                Arrival::Unwanted
            };
        };

        self.release(&mut want);
        for (_, waiter) in want.waiters.drain() {
            let _ = waiter.send(data.clone());
        }
        for peer in want.asked.iter().filter(|peer| **peer != from) {
            self.send(peer, cancel_entry(cid));
        }
        self.remember(*cid);
        self.fill_pending();
        Arrival::Accepted
    }

    /// Notes that `peer` sent us something, so its outstanding wants are not stale.
    pub(crate) fn on_heard(&mut self, peer: PeerId) {
        if let Some(state) = self.peer_wants.get_mut(&peer) {
            state.last_heard = Instant::now();
        }
    }

    fn remember(&mut self, cid: Cid) {
        if self.recent_set.insert(cid) {
            self.recent.push_back(cid);
        }
        while self.recent.len() > RECENT_CIDS {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
    }

    /// Adds a peer and hands it every want that has no peer now (spec: a new peer gets the
    /// pending wants). Returns false if it was already known.
    fn add_peer(&mut self, peer: PeerId, sender: mpsc::UnboundedSender<Entry>) -> bool {
        if self.peer_wants.contains_key(&peer) {
            return false;
        }
        let state = PeerWants {
            sender,
            in_flight: 0,
            last_heard: Instant::now(),
        };
        self.peer_wants.insert(peer, state);
        self.peers.push(peer);

        for cid in self.unassigned() {
            self.dispatch(cid);
        }
        true
    }

    /// Wants without a current peer, highest priority first.
    fn unassigned(&self) -> Vec<Cid> {
        let mut waiting: Vec<(i32, Cid)> = self
            .wants
            .iter()
            .filter(|(_, want)| want.current.is_none())
            .map(|(cid, want)| (want.priority, *cid))
            .collect();
        waiting.sort_by_key(|(priority, _)| std::cmp::Reverse(*priority));
        waiting.into_iter().map(|(_, cid)| cid).collect()
    }

    /// Drops a peer; wants it was holding go to other peers. Its want task ends when the
    /// sender is dropped here.
    pub(crate) fn peer_disconnected(&mut self, peer: PeerId) {
        if self.peer_wants.remove(&peer).is_none() {
            return;
        }
        self.peers.retain(|known| *known != peer);
        self.rotation = 0;

        let mut orphans = Vec::new();
        for (cid, want) in &mut self.wants {
            want.dont_have.remove(&peer);
            if want.current.is_some_and(|(current, _)| current == peer) {
                want.current = None;
                orphans.push(*cid);
            }
        }
        for cid in orphans {
            self.dispatch(cid);
        }
        self.fill_pending();
    }

    /// One rebroadcast round: wants every peer refused start a new round, and wants a silent
    /// peer has held too long move to the next peer.
    fn rebroadcast(&mut self, now: Instant) {
        let mut again = Vec::new();
        let exhausted: Vec<Cid> = self
            .wants
            .keys()
            .filter(|cid| self.is_exhausted(cid))
            .copied()
            .collect();
        for cid in exhausted {
            if let Some(want) = self.wants.get_mut(&cid) {
                want.dont_have.clear();
                again.push(cid);
            }
        }

        let stale: Vec<(Cid, PeerId)> = self
            .wants
            .iter()
            .filter_map(|(cid, want)| want.current.map(|(peer, at)| (*cid, peer, at)))
            .filter(|(_, peer, at)| self.is_stale(peer, *at, now))
            .map(|(cid, peer, _)| (cid, peer))
            .collect();
        for (cid, peer) in stale {
            tracing::debug!(%cid, %peer, "want unanswered, asking the next peer");
            self.on_dont_have(peer, &cid);
        }

        for cid in again {
            if self
                .wants
                .get(&cid)
                .is_some_and(|want| want.current.is_none())
            {
                self.dispatch(cid);
            }
        }
        self.fill_pending();
    }

    /// A want is stale when its peer has been silent for an interval since it was sent, or
    /// when it has waited several intervals however busy the peer is.
    fn is_stale(&self, peer: &PeerId, asked_at: Instant, now: Instant) -> bool {
        let waited = now.saturating_duration_since(asked_at);
        let silent = self
            .peer_wants
            .get(peer)
            .is_none_or(|state| now.saturating_duration_since(state.last_heard) >= self.interval);
        (waited >= self.interval && silent) || waited >= self.interval * STALE_INTERVALS
    }

    /// Peers connected, and distinct peers asked for `cid`.
    pub(crate) fn counts(&self, cid: &Cid) -> (usize, usize) {
        let asked = self.wants.get(cid).map_or(0, |want| want.asked.len());
        (self.peers.len(), asked)
    }

    pub(crate) fn peers(&self) -> Vec<PeerId> {
        self.peers.clone()
    }

    fn send(&self, peer: &PeerId, entry: Entry) {
        if let Some(state) = self.peer_wants.get(peer) {
            // The task only stops when the peer is removed, so a failed send has no one to tell.
            let _ = state.sender.send(entry);
        }
    }
}

impl Want {
    fn new(priority: i32) -> Self {
        Want {
            waiters: HashMap::new(),
            priority,
            asked: HashSet::new(),
            dont_have: HashSet::new(),
            current: None,
            queued: false,
        }
    }
}

/// A want-block that asks for DONT_HAVE, as boxo sends to a chosen peer (formats.md 2.4).
fn want_entry(cid: &Cid, priority: i32) -> Entry {
    Entry {
        block: cid.to_bytes(),
        priority,
        cancel: false,
        want_type: WantType::Block as i32,
        send_dont_have: true,
    }
}

fn cancel_entry(cid: &Cid) -> Entry {
    Entry {
        block: cid.to_bytes(),
        cancel: true,
        ..Entry::default()
    }
}

/// Withdraws one waiter when dropped, which makes [`crate::Bitswap::get`] cancel-safe.
pub(crate) struct Waiter {
    inner: Arc<Inner>,
    cid: Cid,
    id: u64,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.inner.client().remove_waiter(&self.cid, self.id);
    }
}

/// Registers a waiter for `cid`; the receiver gets the verified bytes.
pub(crate) fn register(inner: &Arc<Inner>, cid: Cid) -> (Waiter, oneshot::Receiver<Bytes>) {
    let (id, receiver) = inner.client().add_waiter(cid);
    let waiter = Waiter {
        inner: inner.clone(),
        cid,
        id,
    };
    (waiter, receiver)
}

/// Adds a peer and starts the task that writes our wantlist to it.
pub(crate) fn peer_connected(inner: &Arc<Inner>, peer: PeerId) {
    let (sender, receiver) = mpsc::unbounded_channel();
    if inner.client().add_peer(peer, sender) {
        tracing::debug!(%peer, "bitswap peer connected");
        inner.spawn(send_wants(inner.clone(), peer, receiver));
    }
}

/// Writes want entries to one peer on one long-lived stream, merging whatever is queued into
/// one message. Entries that cannot be delivered count as DONT_HAVE from that peer.
async fn send_wants(inner: Arc<Inner>, peer: PeerId, mut receiver: mpsc::UnboundedReceiver<Entry>) {
    let config = &inner.config;
    let mut outbound = Outbound::new(
        peer,
        inner.control.clone(),
        config.send_timeout,
        config.max_message_size,
    );
    while let Some(first) = receiver.recv().await {
        let mut entries = vec![first];
        while entries.len() < MAX_ENTRIES_PER_MESSAGE {
            match receiver.try_recv() {
                Ok(entry) => entries.push(entry),
                Err(_) => break,
            }
        }

        let message = Message {
            wantlist: Some(Wantlist {
                entries,
                full: false,
            }),
            ..Message::default()
        };
        if let Err(error) = outbound.send(&message).await {
            tracing::debug!(%peer, %error, "could not send wants");
            undeliverable(&inner, peer, &message);
        }
    }
    outbound.close().await;
}

/// Treats every want in a message that could not be sent as refused by that peer.
fn undeliverable(inner: &Inner, peer: PeerId, message: &Message) {
    let entries = message.wantlist.iter().flat_map(|list| list.entries.iter());
    let mut client = inner.client();
    for entry in entries.filter(|entry| !entry.cancel) {
        if let Some(cid) = wire::parse_cid(&entry.block) {
            client.on_dont_have(peer, &cid);
        }
    }
}

/// Handles the client's part of an inbound message: blocks and presences.
pub(crate) fn handle_message(inner: &Inner, peer: PeerId, message: &Message) {
    let blocks = verified_blocks(inner, message);
    let mut client = inner.client();
    client.on_heard(peer);

    for (cid, data) in blocks {
        let counters = &inner.counters;
        match client.on_block(peer, &cid, &data) {
            Arrival::Accepted => {
                bump(&counters.blocks_received, 1);
                bump(&counters.bytes_received, data.len() as u64);
            }
            Arrival::Duplicate => bump(&counters.duplicate_blocks, 1),
            Arrival::Unwanted => {
                tracing::debug!(%peer, %cid, "dropping a block nobody wants");
                bump(&counters.unwanted_blocks, 1);
            }
        }
    }

    for presence in &message.block_presences {
        let Some(cid) = wire::parse_cid(&presence.cid) else {
            continue;
        };
        // TODO: use HAVE once the client sends want-have (multi-peer scheduling issue).
        if presence.r#type() == PresenceType::DontHave {
            bump(&inner.counters.dont_haves_received, 1);
            client.on_dont_have(peer, &cid);
        }
    }
}

/// Hashes every block of a message and pairs it with the CID it proves.
fn verified_blocks(inner: &Inner, message: &Message) -> Vec<(Cid, Bytes)> {
    let mut out = Vec::with_capacity(message.payload.len() + message.blocks.len());
    for block in &message.payload {
        match wire::block_cid(block) {
            Ok(cid) => out.push((cid, block.data.clone())),
            Err(refusal) => {
                tracing::debug!(?refusal, "dropping a block that cannot be verified");
                bump(&inner.counters.invalid_blocks, 1);
            }
        }
    }
    for data in &message.blocks {
        if let Some(cid) = wire::block_cid_v0(data) {
            out.push((cid, data.clone()));
        }
    }
    out
}

/// Starts the timer that re-asks unanswered wants every rebroadcast interval.
pub(crate) fn start_rebroadcast(inner: &Arc<Inner>) {
    let interval = inner
        .config
        .rebroadcast_interval
        .max(Duration::from_millis(10));
    let weak = Arc::downgrade(inner);
    inner.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            inner.client().rebroadcast(Instant::now());
        }
    });
}
