//! The server: a bounded queue of wants per peer, answered from the [`crate::Blockstore`] on
//! an outbound stream of our own (formats.md 2.1 and 2.4).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use libp2p::PeerId;
use tokio::sync::Notify;

use crate::outbound::Outbound;
use crate::wire::{self, Block, BlockPresence, Message, PresenceType, WantType, Wantlist};
use crate::{bump, Blockstore, Config, Inner};

/// Wants looked up in one blocking call at most.
const BATCH: usize = 64;
/// A responder with nothing to do for this long ends; the next want starts a new one.
const IDLE: Duration = Duration::from_secs(30);
/// Room left in a message for the prefix, field tags and lengths around a block.
const BLOCK_OVERHEAD: usize = 64;

/// Every peer's queue.
#[derive(Default)]
pub(crate) struct ServerState {
    ledgers: HashMap<PeerId, Arc<Ledger>>,
}

/// What one peer asked for and we have not answered yet.
#[derive(Default)]
pub(crate) struct Ledger {
    queue: Mutex<WantQueue>,
    notify: Notify,
    closed: AtomicBool,
}

/// Wants in arrival order; a CID asked twice is kept once.
#[derive(Default)]
struct WantQueue {
    order: VecDeque<Cid>,
    wants: HashMap<Cid, Task>,
    /// Wants answered DONT_HAVE and not cancelled: when the block arrives here (see
    /// [`announce`]) the peer is told HAVE, as boxo's server keeps wantlists.
    missed: HashSet<Cid>,
}

/// One queued want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Task {
    want_type: WantType,
    send_dont_have: bool,
}

/// One answer, before packing.
enum Reply {
    Block(Cid, Bytes),
    Have(Cid),
    DontHave(Cid),
}

impl Ledger {
    fn queue(&self) -> MutexGuard<'_, WantQueue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl WantQueue {
    /// Applies one wantlist entry; returns false if it was dropped because the queue is full.
    fn apply(&mut self, cid: Cid, entry: &wire::Entry, limit: usize) -> bool {
        if entry.cancel {
            // The order slot is skipped when popped; see `take`.
            self.wants.remove(&cid);
            self.missed.remove(&cid);
            return true;
        }
        self.missed.remove(&cid);

        let task = Task {
            want_type: entry.want_type(),
            send_dont_have: entry.send_dont_have,
        };
        if let Some(queued) = self.wants.get_mut(&cid) {
            // A want-block supersedes a want-have for the same CID.
            queued.want_type = queued.want_type.min(task.want_type);
            queued.send_dont_have |= task.send_dont_have;
            return true;
        }
        if self.wants.len() >= limit {
            // TODO: evict a lower-priority want instead, as boxo does (formats.md 2.4).
            return false;
        }

        self.wants.insert(cid, task);
        self.order.push_back(cid);
        if self.order.len() > limit * 2 {
            let wants = &self.wants;
            self.order.retain(|queued| wants.contains_key(queued));
        }
        true
    }

    fn clear(&mut self) {
        self.order.clear();
        self.wants.clear();
        self.missed.clear();
    }

    /// Remembers wants answered DONT_HAVE, up to `limit`.
    fn missed(&mut self, replies: &[Reply], limit: usize) {
        for reply in replies {
            if let Reply::DontHave(cid) = reply {
                if self.missed.len() < limit {
                    self.missed.insert(*cid);
                }
            }
        }
    }

    /// Pops up to `count` live wants, oldest first.
    /// TODO: serve higher priorities first; boxo clients count priorities down, so arrival
    /// order matches theirs and ours today.
    fn take(&mut self, count: usize) -> Vec<(Cid, Task)> {
        let mut batch = Vec::new();
        while batch.len() < count {
            let Some(cid) = self.order.pop_front() else {
                break;
            };
            if let Some(task) = self.wants.remove(&cid) {
                batch.push((cid, task));
            }
        }
        batch
    }

    /// Puts unprocessed wants back at the front, unless they were asked again meanwhile.
    fn put_back(&mut self, leftover: Vec<(Cid, Task)>) {
        for (cid, task) in leftover.into_iter().rev() {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.wants.entry(cid) {
                slot.insert(task);
                self.order.push_front(cid);
            }
        }
    }
}

/// Queues the wants of an inbound wantlist and wakes that peer's responder.
pub(crate) fn handle_wantlist(inner: &Arc<Inner>, peer: PeerId, wantlist: &Wantlist) {
    let ledger = ledger(inner, peer);
    let limit = inner.config.max_queued_wants_per_peer;
    let mut queue = ledger.queue();
    if wantlist.full {
        queue.clear();
    }

    let mut dropped = 0usize;
    for entry in &wantlist.entries {
        let Some(cid) = wire::parse_cid(&entry.block) else {
            continue;
        };
        // Identity CIDs carry their data; boxo ignores them in wantlists (formats.md 2.4).
        if cid.hash().code() == wire::IDENTITY {
            continue;
        }
        if !queue.apply(cid, entry, limit) {
            dropped += 1;
        }
    }
    drop(queue);

    if dropped > 0 {
        tracing::debug!(%peer, dropped, "want queue full, dropping wants");
    }
    ledger.notify.notify_one();
}

/// Tells every peer that was answered DONT_HAVE for `cid` (and has not cancelled) that we have
/// it now: a want-have is queued for it, answered HAVE (or with the block when small).
pub(crate) fn announce(inner: &Arc<Inner>, cid: &Cid) {
    let ledgers: Vec<Arc<Ledger>> = inner.server().ledgers.values().cloned().collect();
    let have = Task {
        want_type: WantType::Have,
        send_dont_have: false,
    };
    for ledger in ledgers {
        let mut queue = ledger.queue();
        if !queue.missed.remove(cid) || queue.wants.contains_key(cid) {
            continue;
        }
        queue.wants.insert(*cid, have);
        queue.order.push_back(*cid);
        drop(queue);
        ledger.notify.notify_one();
    }
}

/// The peer's ledger, created with its responder task on first use.
fn ledger(inner: &Arc<Inner>, peer: PeerId) -> Arc<Ledger> {
    let mut server = inner.server();
    if let Some(ledger) = server.ledgers.get(&peer) {
        return ledger.clone();
    }
    let ledger = Arc::new(Ledger::default());
    server.ledgers.insert(peer, ledger.clone());
    inner.spawn(respond(inner.clone(), peer, ledger.clone()));
    ledger
}

/// Forgets a peer's queue and stops its responder.
pub(crate) fn peer_disconnected(inner: &Inner, peer: PeerId) {
    if let Some(ledger) = inner.server().ledgers.remove(&peer) {
        ledger.closed.store(true, Ordering::Relaxed);
        ledger.notify.notify_one();
    }
}

/// Removes an idle ledger; false if wants arrived meanwhile or it was already replaced.
fn retire(inner: &Inner, peer: PeerId, ledger: &Arc<Ledger>) -> bool {
    let mut server = inner.server();
    let current = server
        .ledgers
        .get(&peer)
        .is_some_and(|known| Arc::ptr_eq(known, ledger));
    let busy = {
        let queue = ledger.queue();
        !queue.wants.is_empty() || !queue.missed.is_empty()
    };
    if current && busy {
        return false;
    }
    if current {
        server.ledgers.remove(&peer);
    }
    true
}

/// Answers one peer's queue until it disconnects or stays idle: look blocks up off the
/// runtime, pack the answers, send them on our own stream.
async fn respond(inner: Arc<Inner>, peer: PeerId, ledger: Arc<Ledger>) {
    let config = &inner.config;
    let mut outbound = Outbound::new(
        peer,
        inner.control.clone(),
        config.send_timeout,
        config.max_message_size,
    );
    loop {
        if ledger.closed.load(Ordering::Relaxed) {
            break;
        }
        let batch = ledger.queue().take(BATCH);
        if batch.is_empty() {
            let woken = tokio::time::timeout(IDLE, ledger.notify.notified()).await;
            if woken.is_err() && retire(&inner, peer, &ledger) {
                break;
            }
            continue;
        }

        let (replies, leftover) = look_up(&inner, batch).await;
        {
            let mut queue = ledger.queue();
            queue.put_back(leftover);
            queue.missed(&replies, config.max_queued_wants_per_peer);
        }
        for message in pack(replies, config.response_target_size) {
            if let Err(error) = outbound.send(&message).await {
                tracing::debug!(%peer, %error, "could not send replies");
                break;
            }
            count_sent(&inner, &message);
        }
    }
    outbound.close().await;
}

/// Looks a batch up in the store on a blocking thread; returns the replies and the wants left
/// once the replies reach the target size.
async fn look_up(inner: &Inner, batch: Vec<(Cid, Task)>) -> (Vec<Reply>, Vec<(Cid, Task)>) {
    let store = inner.store.clone();
    let limits = Limits::new(&inner.config);
    let join = tokio::task::spawn_blocking(move || look_up_blocking(&*store, batch, limits)).await;
    join.unwrap_or_else(|error| {
        tracing::debug!(%error, "block lookup failed");
        (Vec::new(), Vec::new())
    })
}

/// Sizes that shape the answers.
#[derive(Clone, Copy)]
struct Limits {
    target: usize,
    replace: usize,
    max_block: usize,
}

impl Limits {
    fn new(config: &Config) -> Self {
        Limits {
            target: config.response_target_size,
            replace: config.want_have_replace_size,
            max_block: config.max_message_size.saturating_sub(BLOCK_OVERHEAD),
        }
    }
}

fn look_up_blocking(
    store: &dyn Blockstore,
    batch: Vec<(Cid, Task)>,
    limits: Limits,
) -> (Vec<Reply>, Vec<(Cid, Task)>) {
    let mut replies = Vec::new();
    let mut bytes = 0usize;
    let mut wants = batch.into_iter();
    for (cid, task) in wants.by_ref() {
        let reply = answer(store, cid, task, limits);
        if let Some(Reply::Block(_, data)) = &reply {
            bytes += data.len();
        }
        replies.extend(reply);
        if bytes >= limits.target {
            break;
        }
    }
    (replies, wants.collect())
}

/// The answer to one want (formats.md 2.4): the block for a want-block, HAVE (or the block
/// when small) for a want-have, DONT_HAVE when missing and asked for, else nothing.
fn answer(store: &dyn Blockstore, cid: Cid, task: Task, limits: Limits) -> Option<Reply> {
    let missing = || task.send_dont_have.then_some(Reply::DontHave(cid));
    if task.want_type == WantType::Have {
        match store.size(&cid) {
            Ok(Some(size)) if size > limits.replace => return Some(Reply::Have(cid)),
            // Small enough: the block itself answers the want-have.
            Ok(Some(_)) => {}
            Ok(None) => return missing(),
            Err(error) => {
                tracing::debug!(%cid, %error, "blockstore size failed");
                return missing();
            }
        }
    }

    match store.get(&cid) {
        Ok(Some(data)) if data.len() <= limits.max_block => Some(Reply::Block(cid, data.into())),
        Ok(Some(data)) => {
            tracing::debug!(%cid, size = data.len(), "block too large for a message");
            missing()
        }
        Ok(None) => missing(),
        Err(error) => {
            tracing::debug!(%cid, %error, "blockstore read failed");
            missing()
        }
    }
}

/// Packs answers into messages of about `target` bytes; a block larger than that goes alone.
/// Every message carries an empty wantlist, as boxo's do (formats.md 2.3).
fn pack(replies: Vec<Reply>, target: usize) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut current = response();
    let mut size = 0usize;
    for reply in replies {
        let item = match &reply {
            Reply::Block(cid, data) => data.len() + cid.encoded_len() + 8,
            Reply::Have(cid) | Reply::DontHave(cid) => cid.encoded_len() + 6,
        };
        if size > 0 && size + item > target {
            messages.push(std::mem::replace(&mut current, response()));
            size = 0;
        }
        size += item;
        match reply {
            Reply::Block(cid, data) => current.payload.push(Block {
                prefix: wire::prefix(&cid),
                data,
            }),
            Reply::Have(cid) => current
                .block_presences
                .push(presence(&cid, PresenceType::Have)),
            Reply::DontHave(cid) => current
                .block_presences
                .push(presence(&cid, PresenceType::DontHave)),
        }
    }
    if !current.is_empty() {
        messages.push(current);
    }
    messages
}

fn response() -> Message {
    Message {
        wantlist: Some(Wantlist::default()),
        ..Message::default()
    }
}

fn presence(cid: &Cid, kind: PresenceType) -> BlockPresence {
    BlockPresence {
        cid: cid.to_bytes(),
        r#type: kind as i32,
    }
}

fn count_sent(inner: &Inner, message: &Message) {
    let counters = &inner.counters;
    let bytes: usize = message.payload.iter().map(|block| block.data.len()).sum();
    bump(&counters.blocks_sent, message.payload.len() as u64);
    bump(&counters.bytes_sent, bytes as u64);
    for presence in &message.block_presences {
        match presence.r#type() {
            PresenceType::Have => bump(&counters.haves_sent, 1),
            PresenceType::DontHave => bump(&counters.dont_haves_sent, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBlockstore;

    fn raw_cid(data: &[u8]) -> Cid {
        Cid::new_v1(0x55, wire::sha256_multihash(data))
    }

    fn limits() -> Limits {
        Limits::new(&Config::default())
    }

    #[test]
    fn want_have_is_answered_with_small_blocks_and_have_for_large_ones() {
        let store = MemoryBlockstore::new();
        let small = vec![7u8; 1024];
        let large = vec![8u8; 1025];
        store.insert(raw_cid(&small), small.clone());
        store.insert(raw_cid(&large), large.clone());
        let have = Task {
            want_type: WantType::Have,
            send_dont_have: true,
        };

        let reply = answer(&store, raw_cid(&small), have, limits());
        assert!(matches!(reply, Some(Reply::Block(_, data)) if data[..] == small[..]));
        let reply = answer(&store, raw_cid(&large), have, limits());
        assert!(matches!(reply, Some(Reply::Have(cid)) if cid == raw_cid(&large)));
        let reply = answer(&store, raw_cid(b"missing"), have, limits());
        assert!(matches!(reply, Some(Reply::DontHave(cid)) if cid == raw_cid(b"missing")));
        let quiet = Task {
            want_type: WantType::Block,
            send_dont_have: false,
        };
        assert!(answer(&store, raw_cid(b"missing"), quiet, limits()).is_none());
    }

    #[test]
    fn pack_puts_a_large_block_alone_and_small_answers_together() {
        let big = Bytes::from(vec![1u8; 3 << 20]);
        let replies = vec![
            Reply::Have(raw_cid(b"a")),
            Reply::Block(raw_cid(&big), big.clone()),
            Reply::DontHave(raw_cid(b"b")),
            Reply::Block(raw_cid(b"c"), Bytes::from_static(b"c")),
        ];
        let messages = pack(replies, 1 << 20);
        let shape: Vec<(usize, usize)> = messages
            .iter()
            .map(|m| (m.payload.len(), m.block_presences.len()))
            .collect();
        assert_eq!(shape, vec![(0, 1), (1, 0), (1, 1)]);
    }

    #[test]
    fn queue_merges_repeats_honours_cancel_and_bounds_length() {
        let mut queue = WantQueue::default();
        let entry = |cid: &Cid, want_type: WantType, cancel: bool| wire::Entry {
            block: cid.to_bytes(),
            want_type: want_type as i32,
            cancel,
            ..wire::Entry::default()
        };
        let (a, b, c) = (raw_cid(b"a"), raw_cid(b"b"), raw_cid(b"c"));
        assert!(queue.apply(a, &entry(&a, WantType::Have, false), 2));
        assert!(queue.apply(a, &entry(&a, WantType::Block, false), 2));
        assert!(queue.apply(b, &entry(&b, WantType::Block, false), 2));
        assert!(!queue.apply(c, &entry(&c, WantType::Block, false), 2));
        assert!(queue.apply(b, &entry(&b, WantType::Block, true), 2));

        let taken = queue.take(10);
        let want_block = Task {
            want_type: WantType::Block,
            send_dont_have: false,
        };
        assert_eq!(taken, vec![(a, want_block)]);
    }
}
