//! The client's wants and peers, and the scheduling between them (formats.md 2.4, the boxo
//! session flow in our own design):
//!
//! - A want is *waiting* until fewer than [`Config::max_active_wants`] are active, then
//!   *active*: want-have (with send-dont-have) goes to every connected peer, and want-block to
//!   the one peer chosen by [`ClientState::pick`].
//! - The chosen peer is the cheapest (want-blocks queued times its time per block) among the
//!   peers that said HAVE for it; before any did, among those that sent a block or HAVE for
//!   another want of the same session. When none is known, any peer that is not stalled may
//!   get it; a wrong guess costs one DONT_HAVE.
//! - Each peer holds a bounded number of want-blocks that follows its rate ([`Peer::limit`]);
//!   the rest wait in the ready set, highest priority (oldest) first, until a slot frees.
//! - A HAVE from a peer much quicker than the holder of that want-block moves it there (the
//!   holder gets a cancel); a want-block left at its holder well past the holder's usual answer
//!   time is copied once to a peer that said HAVE (the backup), and the first copy wins.
//! - DONT_HAVE, a disconnect, or a want-block left unanswered past the peer's deadline frees the
//!   want for another peer (the backup, if any, becomes the holder). When every peer refused,
//!   the rebroadcast starts a new round.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use super::peer::Peer;
use crate::wire::{Entry, WantType};
use crate::Config;

/// CIDs remembered after they resolved, to tell duplicates from unwanted blocks.
const RECENT_CIDS: usize = 4096;
/// A want-block unanswered for this many rebroadcast intervals moves on even from a busy peer.
const STALE_INTERVALS: u32 = 6;
/// Assumed block size before any block arrived: the UnixFS chunk size (formats.md 1.2).
const FIRST_BLOCK_SIZE: f64 = 262_144.0;
/// Assumed seconds per block for a peer not measured yet when no peer is.
const UNMEASURED_PER_BLOCK: f64 = 0.001;
/// A want-block moves from its holder to a peer that says HAVE when the holder would take more
/// than this many times as long as that peer (plus [`MOVE_MARGIN`]).
const MOVE_FACTOR: f64 = 2.0;
/// Seconds a move must save at least, so that near-equal peers do not trade want-blocks.
const MOVE_MARGIN: f64 = 0.05;

/// Orders wants: highest priority first (boxo counts priorities down, so oldest first).
type Key = (Reverse<i32>, Cid);

/// One wanted CID.
struct Want {
    waiters: HashMap<u64, oneshot::Sender<Bytes>>,
    priority: i32,
    /// Sessions that asked for it; peers that answer join them.
    sessions: Vec<u64>,
    active: bool,
    /// Peers ever sent a want for it, to cancel when it resolves.
    asked: HashSet<PeerId>,
    /// Peers that said HAVE.
    haves: HashSet<PeerId>,
    /// Peers that said DONT_HAVE, could not be sent the want or let it go overdue, this round.
    refused: HashSet<PeerId>,
    /// The peer holding the want-block.
    holder: Option<PeerId>,
    /// A second peer asked for the block because the holder was too slow (once per want).
    backup: Option<PeerId>,
    /// Whether a backup was ever asked, so a want is duplicated at most once.
    duplicated: bool,
}

impl Want {
    fn key(&self, cid: Cid) -> Key {
        (Reverse(self.priority), cid)
    }
}

/// Limits taken from [`Config`].
struct Limits {
    max_blocks: usize,
    max_bytes: usize,
    max_active: usize,
    floor: Duration,
    stale: Duration,
    /// Least wait at a holder before a copy of the want-block goes to a peer that said HAVE.
    duplicate_floor: Duration,
}

/// What became of a verified block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    Accepted,
    Duplicate,
    Unwanted,
}

/// The client's wants and peers. Methods never block; they queue entries for per-peer tasks.
pub(crate) struct ClientState {
    wants: HashMap<Cid, Want>,
    peers: HashMap<PeerId, Peer>,
    /// Connected peers in connection order, which breaks ties.
    order: Vec<PeerId>,
    /// Active wants without a want-block at any peer.
    ready: BTreeSet<Key>,
    /// Wants not active yet.
    waiting: BTreeSet<Key>,
    active: usize,
    /// Peers that sent a block or HAVE for a want of each live session.
    sessions: HashMap<u64, HashSet<PeerId>>,
    next_session: u64,
    next_priority: i32,
    next_waiter: u64,
    recent: VecDeque<Cid>,
    recent_set: HashSet<Cid>,
    /// Moving average of the size of accepted blocks, to turn the byte limit into blocks.
    average_block: f64,
    limits: Limits,
    /// Want-blocks moved or copied to another peer since [`ClientState::take_moved`].
    moved: usize,
}

impl ClientState {
    pub(crate) fn new(config: &Config) -> Self {
        ClientState {
            wants: HashMap::new(),
            peers: HashMap::new(),
            order: Vec::new(),
            ready: BTreeSet::new(),
            waiting: BTreeSet::new(),
            active: 0,
            sessions: HashMap::new(),
            next_session: 0,
            next_priority: i32::MAX,
            next_waiter: 0,
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            average_block: FIRST_BLOCK_SIZE,
            limits: Limits {
                max_blocks: config.max_wants_per_peer.max(1),
                max_bytes: config.max_bytes_in_flight_per_peer.max(1),
                max_active: config.max_active_wants.max(1),
                floor: config.want_timeout_floor,
                stale: config.rebroadcast_interval * STALE_INTERVALS,
                duplicate_floor: config.want_timeout_floor / 4,
            },
            moved: 0,
        }
    }

    /// Opens a session and returns its id.
    pub(crate) fn open_session(&mut self) -> u64 {
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(id, HashSet::new());
        id
    }

    pub(crate) fn close_session(&mut self, id: u64) {
        self.sessions.remove(&id);
    }

    /// Adds a waiter for `cid`, creating the want if it is new.
    pub(crate) fn add_waiter(
        &mut self,
        cid: Cid,
        session: Option<u64>,
    ) -> (u64, oneshot::Receiver<Bytes>) {
        let (sender, receiver) = oneshot::channel();
        let id = self.next_waiter;
        self.next_waiter += 1;

        let is_new = !self.wants.contains_key(&cid);
        if is_new {
            let want = self.new_want();
            self.waiting.insert(want.key(cid));
            self.wants.insert(cid, want);
        }
        if let Some(want) = self.wants.get_mut(&cid) {
            want.waiters.insert(id, sender);
            let session = session.filter(|id| !want.sessions.contains(id));
            want.sessions.extend(session);
        }
        if is_new {
            self.pump();
        }
        (id, receiver)
    }

    fn new_want(&mut self) -> Want {
        // boxo starts at 2^31-1 and counts down so older wants go first (formats.md 2.4).
        let priority = self.next_priority;
        self.next_priority = if priority <= 1 {
            i32::MAX
        } else {
            priority - 1
        };
        Want {
            waiters: HashMap::new(),
            priority,
            sessions: Vec::new(),
            active: false,
            asked: HashSet::new(),
            haves: HashSet::new(),
            refused: HashSet::new(),
            holder: None,
            backup: None,
            duplicated: false,
        }
    }

    /// Removes a waiter; the last one out withdraws the want and cancels it at the peers asked.
    pub(crate) fn remove_waiter(&mut self, cid: &Cid, id: u64) {
        let Some(want) = self.wants.get_mut(cid) else {
            return;
        };
        want.waiters.remove(&id);
        if !want.waiters.is_empty() {
            return;
        }

        if let Some(want) = self.retire(cid) {
            for peer in &want.asked {
                self.send(peer, cancel_entry(cid));
            }
        }
        self.pump();
    }

    /// Takes a want out of every set and frees its want-block slot.
    fn retire(&mut self, cid: &Cid) -> Option<Want> {
        let want = self.wants.remove(cid)?;
        let key = want.key(*cid);
        if want.active {
            self.active -= 1;
            self.ready.remove(&key);
        } else {
            self.waiting.remove(&key);
        }
        for asked in want.holder.iter().chain(want.backup.iter()) {
            if let Some(peer) = self.peers.get_mut(asked) {
                peer.abandon(cid);
            }
        }
        Some(want)
    }

    /// Activates waiting wants while there is room, hands ready wants to peers with free
    /// slots, then asks every other peer for the new ones with want-have.
    fn pump(&mut self) {
        let mut fresh = Vec::new();
        while self.active < self.limits.max_active {
            let Some(key) = self.waiting.pop_first() else {
                break;
            };
            if let Some(want) = self.wants.get_mut(&key.1) {
                want.active = true;
                self.active += 1;
                self.ready.insert(key);
                fresh.push(key.1);
            }
        }

        self.dispatch_ready();
        for cid in fresh {
            self.ask_have(&cid);
        }
    }

    /// Sends want-blocks for ready wants, highest priority first, while any peer has room.
    fn dispatch_ready(&mut self) {
        if !self.any_room() {
            return;
        }
        let ready: Vec<Key> = self.ready.iter().copied().collect();
        for (_, cid) in ready {
            if !self.any_room() {
                break;
            }
            if let Some(peer) = self.pick(&cid) {
                self.send_block(cid, peer);
            }
        }
    }

    /// Sends want-have to every connected peer not yet known to have or lack the block.
    fn ask_have(&mut self, cid: &Cid) {
        let Some(want) = self.wants.get_mut(cid) else {
            return;
        };
        for peer in &self.order {
            let known = want.haves.contains(peer) || want.refused.contains(peer);
            if known || want.holder == Some(*peer) {
                continue;
            }
            want.asked.insert(*peer);
            if let Some(state) = self.peers.get(peer) {
                state.send(want_entry(cid, want.priority, WantType::Have));
            }
        }
    }

    fn send_block(&mut self, cid: Cid, peer: PeerId) {
        let Some(want) = self.wants.get_mut(&cid) else {
            return;
        };
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.start(cid, Instant::now());
        state.send(want_entry(&cid, want.priority, WantType::Block));
        want.holder = Some(peer);
        want.asked.insert(peer);
        self.ready.remove(&want.key(cid));
    }

    /// Want-blocks one peer may hold: the block limit, or fewer when blocks are large.
    fn peer_limit(&self) -> usize {
        let by_bytes = (self.limits.max_bytes as f64 / self.average_block.max(1.0)) as usize;
        self.limits.max_blocks.min(by_bytes.max(1))
    }

    fn any_room(&self) -> bool {
        let limit = self.peer_limit();
        self.peers.values().any(|peer| peer.has_room(limit))
    }

    /// Whether `peer` may get the want-block for `want` at all: connected, not refused, and
    /// not stalled unless it said HAVE.
    fn usable(&self, want: &Want, peer: &PeerId) -> bool {
        !want.refused.contains(peer)
            && self
                .peers
                .get(peer)
                .is_some_and(|state| !state.stalled || want.haves.contains(peer))
    }

    /// The peer to send the want-block to, if one may take it now: the cheapest with room
    /// among the peers that said HAVE for it (when all of them are full the want waits for a
    /// slot rather than go to a peer that may lack the block); when none did yet, among the
    /// peers of its sessions; when none is known, among the peers that served blocks before;
    /// when none did, among all.
    pub(super) fn pick(&self, cid: &Cid) -> Option<PeerId> {
        let want = self.wants.get(cid)?;
        let sessions: Vec<&HashSet<PeerId>> = want
            .sessions
            .iter()
            .filter_map(|id| self.sessions.get(id))
            .collect();
        let in_session = |peer: &PeerId| sessions.iter().any(|set| set.contains(peer));
        let usable: Vec<&PeerId> = self
            .order
            .iter()
            .filter(|peer| self.usable(want, peer))
            .collect();
        let said_have = |peer: &&&PeerId| want.haves.contains(**peer);
        let known = |peer: &&&PeerId| in_session(peer);
        let served = |peer: &&&PeerId| self.peers.get(**peer).is_some_and(Peer::served);
        let mut pool: Vec<&PeerId> = usable.iter().filter(said_have).copied().collect();
        if pool.is_empty() {
            pool = usable.iter().filter(known).copied().collect();
        }
        if pool.is_empty() {
            pool = usable.iter().filter(served).copied().collect();
        }
        if pool.is_empty() {
            pool = usable;
        }

        let limit = self.peer_limit();
        let unmeasured = self.unmeasured_per_block();
        pool.into_iter()
            .filter_map(|peer| self.peers.get(peer).map(|state| (peer, state)))
            .filter(|(_, state)| state.has_room(limit))
            .map(|(peer, state)| (state.cost(unmeasured), !want.haves.contains(peer), *peer))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, _, peer)| peer)
    }

    /// Time per block assumed for a peer not measured yet: the best measured one, so new
    /// peers get tried.
    fn unmeasured_per_block(&self) -> f64 {
        self.peers
            .values()
            .filter_map(Peer::per_block)
            .min_by(f64::total_cmp)
            .unwrap_or(UNMEASURED_PER_BLOCK)
    }

    /// Records HAVE (`true`) or DONT_HAVE from `peer`.
    pub(crate) fn on_presence(&mut self, peer: PeerId, cid: &Cid, have: bool) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        let Some(want) = self.wants.get_mut(cid) else {
            return;
        };
        if have {
            want.haves.insert(peer);
            want.refused.remove(&peer);
            join_sessions(&mut self.sessions, &want.sessions, peer);
            match want.holder {
                Some(holder) if want.active && holder != peer => {
                    self.consider_move(cid, holder, peer);
                }
                None if want.active => {
                    if let Some(chosen) = self.pick(cid) {
                        self.send_block(*cid, chosen);
                    }
                }
                _ => {}
            }
            return;
        }

        want.refused.insert(peer);
        want.haves.remove(&peer);
        if want.backup == Some(peer) {
            want.backup = None;
            if let Some(state) = self.peers.get_mut(&peer) {
                state.abandon(cid);
            }
        } else if want.holder == Some(peer) {
            self.release(cid);
            self.dispatch_ready();
        }
    }

    /// `candidate` said HAVE for a want whose want-block waits at `holder`: when the block
    /// would come much sooner from the candidate (the holder's queue ahead of it is long, the
    /// candidate has room and is quick), the want-block moves there and is cancelled at the
    /// holder. A want that already has a backup stays where it is.
    fn consider_move(&mut self, cid: &Cid, holder: PeerId, candidate: PeerId) {
        let Some(want) = self.wants.get(cid) else {
            return;
        };
        if want.backup.is_some() || !self.usable(want, &candidate) {
            return;
        }
        let max = self.peer_limit();
        let unmeasured = self.unmeasured_per_block();
        let Some(there) = self.peers.get(&candidate) else {
            return;
        };
        if !there.has_room(max) {
            return;
        }
        let new_eta = there.cost(unmeasured);
        let old_eta = self
            .peers
            .get(&holder)
            .and_then(|state| state.eta(cid, unmeasured));
        let Some(old_eta) = old_eta else {
            return;
        };
        if old_eta <= MOVE_FACTOR * new_eta + MOVE_MARGIN {
            return;
        }
        tracing::trace!(%cid, from = %holder, to = %candidate, old_eta, new_eta, "moving want-block");
        if let Some(state) = self.peers.get_mut(&holder) {
            state.abandon(cid);
            state.send(cancel_entry(cid));
        }
        if let Some(want) = self.wants.get_mut(cid) {
            want.holder = None;
        }
        self.send_block(*cid, candidate);
        self.moved += 1;
        // the holder has a free slot now
        self.dispatch_ready();
    }

    /// Want-blocks moved or copied to another peer since the last call.
    pub(crate) fn take_moved(&mut self) -> usize {
        std::mem::take(&mut self.moved)
    }

    /// Takes the want-block back from its holder and makes the want ready again.
    fn release(&mut self, cid: &Cid) {
        let Some(want) = self.wants.get_mut(cid) else {
            return;
        };
        if let Some(holder) = want.holder.take() {
            if let Some(peer) = self.peers.get_mut(&holder) {
                peer.abandon(cid);
            }
        }
        // the copy asked of a second peer becomes the want-block
        want.holder = want.backup.take();
        if want.active && want.holder.is_none() {
            self.ready.insert(want.key(*cid));
        }
    }

    /// Resolves every waiter for a verified block and cancels the want at the other peers.
    pub(crate) fn on_block(&mut self, from: PeerId, cid: &Cid, data: &Bytes) -> Arrival {
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.delivered(cid, Instant::now());
        }
        let Some(want) = self.retire(cid) else {
            return if self.recent_set.contains(cid) {
                Arrival::Duplicate
            } else {
                Arrival::Unwanted
            };
        };

        for (_, waiter) in want.waiters {
            let _ = waiter.send(data.clone());
        }
        for peer in want.asked.iter().filter(|peer| **peer != from) {
            self.send(peer, cancel_entry(cid));
        }
        if self.peers.contains_key(&from) {
            join_sessions(&mut self.sessions, &want.sessions, from);
        }
        let size = data.len() as f64;
        self.average_block += 0.25 * (size - self.average_block);
        self.remember(*cid);
        self.pump();
        Arrival::Accepted
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

    /// Adds a peer, hands it want-blocks while it has room and asks it for every other active
    /// want (a new peer gets the whole wantlist). Returns false if it was already known.
    pub(crate) fn add_peer(&mut self, peer: PeerId, sender: mpsc::UnboundedSender<Entry>) -> bool {
        if self.peers.contains_key(&peer) {
            return false;
        }
        self.peers.insert(peer, Peer::new(sender, Instant::now()));
        self.order.push(peer);

        self.dispatch_ready();
        let mut active: Vec<Key> = self
            .wants
            .iter()
            .filter(|(_, want)| want.active)
            .map(|(cid, want)| want.key(*cid))
            .collect();
        active.sort();
        for (_, cid) in active {
            self.ask_have(&cid);
        }
        true
    }

    /// Drops a peer; its want-blocks go to other peers. Its writer task ends when the sender
    /// is dropped here. Returns how many want-blocks it held.
    pub(crate) fn peer_disconnected(&mut self, peer: PeerId) -> usize {
        let Some(state) = self.peers.remove(&peer) else {
            return 0;
        };
        self.order.retain(|known| *known != peer);

        let held = state.holding();
        for cid in &held {
            if let Some(want) = self.wants.get_mut(cid) {
                if want.backup == Some(peer) {
                    want.backup = None;
                    continue;
                }
                want.holder = want.backup.take();
                if want.active && want.holder.is_none() {
                    self.ready.insert(want.key(*cid));
                }
            }
        }
        for want in self.wants.values_mut() {
            want.haves.remove(&peer);
            want.refused.remove(&peer);
        }
        for members in self.sessions.values_mut() {
            members.remove(&peer);
        }
        self.pump();
        held.len()
    }

    /// Moves want-blocks that peers left unanswered past their deadline to other peers, and
    /// cancels them at the silent peer. Returns how many moved.
    pub(crate) fn check_overdue(&mut self, now: Instant) -> usize {
        let mut moved = Vec::new();
        for (id, peer) in &mut self.peers {
            let overdue = peer.overdue(now, self.limits.floor, self.limits.stale);
            if !overdue.is_empty() && peer.is_silent(now, self.limits.floor) {
                peer.stalled = true;
            }
            moved.extend(overdue.into_iter().map(|cid| (*id, cid)));
        }

        for (peer, cid) in &moved {
            tracing::debug!(%cid, %peer, "want-block unanswered, asking another peer");
            let Some(want) = self.wants.get_mut(cid) else {
                continue;
            };
            want.refused.insert(*peer);
            want.haves.remove(peer);
            if want.backup == Some(*peer) {
                want.backup = None;
                if let Some(state) = self.peers.get_mut(peer) {
                    state.abandon(cid);
                }
            } else {
                self.release(cid);
            }
            self.send(peer, cancel_entry(cid));
        }
        if !moved.is_empty() {
            self.dispatch_ready();
        }
        moved.len() + self.duplicate_slow(now)
    }

    /// Asks a second peer, once, for each want-block that has waited at its holder well past
    /// the holder's usual answer time, when a peer that said HAVE has room; the first copy to
    /// arrive wins and the other is cancelled. Returns how many were copied.
    fn duplicate_slow(&mut self, now: Instant) -> usize {
        let floor = self.limits.duplicate_floor;
        let mut slow = Vec::new();
        for (id, peer) in &self.peers {
            let after = peer.deadline(floor);
            for cid in peer.holding() {
                let waited = peer
                    .sent_at(&cid)
                    .map(|sent| now.saturating_duration_since(sent));
                if waited.is_some_and(|waited| waited >= after) {
                    slow.push((*id, cid));
                }
            }
        }
        let max = self.peer_limit();
        let unmeasured = self.unmeasured_per_block();
        let mut copied = 0;
        for (holder, cid) in slow {
            let Some(want) = self.wants.get(&cid) else {
                continue;
            };
            if want.duplicated || want.holder != Some(holder) {
                continue;
            }
            let backup = self
                .order
                .iter()
                .filter(|peer| **peer != holder && want.haves.contains(*peer))
                .filter(|peer| self.usable(want, peer))
                .filter_map(|peer| self.peers.get(peer).map(|state| (peer, state)))
                .filter(|(_, state)| state.has_room(max) && !state.holds(&cid))
                .min_by(|a, b| a.1.cost(unmeasured).total_cmp(&b.1.cost(unmeasured)))
                .map(|(peer, _)| *peer);
            let Some(backup) = backup else {
                continue;
            };
            tracing::debug!(%cid, %holder, %backup, "want-block slow, asking a second peer");
            let priority = want.priority;
            if let Some(state) = self.peers.get_mut(&backup) {
                state.start(cid, now);
                state.send(want_entry(&cid, priority, WantType::Block));
            }
            if let Some(want) = self.wants.get_mut(&cid) {
                want.backup = Some(backup);
                want.duplicated = true;
                want.asked.insert(backup);
            }
            copied += 1;
        }
        copied
    }

    /// One rebroadcast round: wants that no peer may take start a new round, and every want
    /// that was waiting for a peer is asked again, with want-have, of the peers that have not
    /// answered (they may have dropped the want from a full queue).
    pub(crate) fn rebroadcast(&mut self) {
        let ready: Vec<Key> = self.ready.iter().copied().collect();
        for (_, cid) in &ready {
            let Some(want) = self.wants.get(cid) else {
                continue;
            };
            // Nobody may take it: a new round, as after a round of DONT_HAVE in boxo.
            let exhausted = !self.order.iter().any(|peer| self.usable(want, peer));
            if exhausted {
                if let Some(want) = self.wants.get_mut(cid) {
                    want.refused.clear();
                }
            }
        }

        self.dispatch_ready();
        for (_, cid) in &ready {
            self.ask_have(cid);
        }
    }

    /// Peers connected, and distinct peers asked for `cid`.
    pub(crate) fn counts(&self, cid: &Cid) -> (usize, usize) {
        let asked = self.wants.get(cid).map_or(0, |want| want.asked.len());
        (self.order.len(), asked)
    }

    pub(crate) fn peers(&self) -> Vec<PeerId> {
        self.order.clone()
    }

    /// The CIDs some fetch is waiting for.
    pub(crate) fn wanted(&self) -> Vec<Cid> {
        self.wants.keys().copied().collect()
    }

    fn send(&self, peer: &PeerId, entry: Entry) {
        if let Some(state) = self.peers.get(peer) {
            state.send(entry);
        }
    }

    #[cfg(test)]
    pub(super) fn in_flight(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, Peer::in_flight)
    }

    #[cfg(test)]
    pub(super) fn set_per_block(&mut self, peer: &PeerId, seconds: f64) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.set_per_block(seconds);
        }
    }
}

/// Adds `peer` to every live session among `ids`.
fn join_sessions(sessions: &mut HashMap<u64, HashSet<PeerId>>, ids: &[u64], peer: PeerId) {
    for id in ids {
        if let Some(members) = sessions.get_mut(id) {
            members.insert(peer);
        }
    }
}

/// A want with send-dont-have: want-block to the chosen peer, want-have to the others
/// (formats.md 2.3 and 2.4).
pub(super) fn want_entry(cid: &Cid, priority: i32, want_type: WantType) -> Entry {
    Entry {
        block: cid.to_bytes(),
        priority,
        cancel: false,
        want_type: want_type as i32,
        send_dont_have: true,
    }
}

pub(super) fn cancel_entry(cid: &Cid) -> Entry {
    Entry {
        block: cid.to_bytes(),
        cancel: true,
        ..Entry::default()
    }
}
