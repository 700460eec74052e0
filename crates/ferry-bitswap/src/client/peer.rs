//! What the client knows of one connected peer: the want-blocks it holds, how fast it answers
//! them, and so where the next want-block should go and when one it holds is overdue.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cid::Cid;
use tokio::sync::mpsc;

use crate::wire::Entry;

/// Weight of a new sample in the moving averages.
const ALPHA: f64 = 0.25;
/// A want-block is overdue after this many times the peer's average answer time.
const DEADLINE_FACTOR: f64 = 3.0;
/// Want-blocks a peer not measured yet may hold: a few, so that a swarm of pullers does not
/// queue the whole file at the first peer they know (the seeder) before learning its rate.
const START_IN_FLIGHT: usize = 4;
/// Want-blocks a measured peer holds at least, to keep its link busy between answers.
const MIN_IN_FLIGHT: usize = 2;
/// Seconds of work kept queued at a measured peer: enough to cover a round trip and keep its
/// link busy, short enough that a want-block does not wait long behind a slow peer's queue
/// while another peer that has the block sits idle.
const TARGET_QUEUE: f64 = 0.5;

/// One connected peer, seen from the client.
pub(super) struct Peer {
    sender: mpsc::UnboundedSender<Entry>,
    /// Want-blocks sent to this peer and not answered yet, with when they were sent.
    in_flight: HashMap<Cid, Instant>,
    /// Moving average of the seconds from want-block to block.
    latency: Option<f64>,
    /// Moving average of the busy seconds per block delivered: the inverse of throughput.
    per_block: Option<f64>,
    /// When the peer last went from no want-block to some.
    busy_since: Option<Instant>,
    /// When the last block arrived from this peer (the connection time before any).
    last_block: Instant,
    /// The peer let want-blocks run past their deadline without sending any block; it gets
    /// want-blocks only for CIDs it said HAVE for, until a block arrives from it.
    pub(super) stalled: bool,
}

impl Peer {
    pub(super) fn new(sender: mpsc::UnboundedSender<Entry>, now: Instant) -> Self {
        Peer {
            sender,
            in_flight: HashMap::new(),
            latency: None,
            per_block: None,
            busy_since: None,
            last_block: now,
            stalled: false,
        }
    }

    /// Queues an entry for the peer's want stream.
    pub(super) fn send(&self, entry: Entry) {
        // The writer task only stops when the peer is removed, so nobody is left to tell.
        let _ = self.sender.send(entry);
    }

    #[cfg(test)]
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    #[cfg(test)]
    pub(super) fn set_per_block(&mut self, seconds: f64) {
        self.per_block = Some(seconds);
    }

    /// Want-blocks this peer may hold now, at most `max`: a few until it answered one, then
    /// about [`TARGET_QUEUE`] seconds of blocks at its measured rate, so a fast peer gets
    /// more and a slow (or shared) one fewer.
    pub(super) fn limit(&self, max: usize) -> usize {
        match self.per_block {
            None => START_IN_FLIGHT.min(max),
            Some(per_block) => {
                let blocks = (TARGET_QUEUE / per_block.max(1e-6)).ceil();
                (blocks.min(max as f64) as usize).clamp(MIN_IN_FLIGHT.min(max), max)
            }
        }
    }

    pub(super) fn has_room(&self, max: usize) -> bool {
        self.in_flight.len() < self.limit(max)
    }

    /// Whether this peer holds a want-block for `cid`.
    pub(super) fn holds(&self, cid: &Cid) -> bool {
        self.in_flight.contains_key(cid)
    }

    /// When the want-block for `cid` was sent here, if it is held.
    pub(super) fn sent_at(&self, cid: &Cid) -> Option<Instant> {
        self.in_flight.get(cid).copied()
    }

    /// Estimated seconds until the block `cid` held here arrives: the want-blocks sent before
    /// it (and it) times the time per block. None if it is not held.
    pub(super) fn eta(&self, cid: &Cid, unmeasured: f64) -> Option<f64> {
        let sent = self.in_flight.get(cid)?;
        let ahead = self.in_flight.values().filter(|t| *t <= sent).count();
        Some(ahead as f64 * self.per_block.unwrap_or(unmeasured))
    }

    /// The CIDs this peer holds want-blocks for.
    pub(super) fn holding(&self) -> Vec<Cid> {
        self.in_flight.keys().copied().collect()
    }

    /// Records a want-block sent now.
    pub(super) fn start(&mut self, cid: Cid, now: Instant) {
        if self.in_flight.is_empty() {
            self.busy_since = Some(now);
        }
        self.in_flight.insert(cid, now);
    }

    /// Forgets a want-block without an answer (withdrawn, refused or moved elsewhere).
    pub(super) fn abandon(&mut self, cid: &Cid) {
        self.in_flight.remove(cid);
        if self.in_flight.is_empty() {
            self.busy_since = None;
        }
    }

    /// Records a block from this peer, answering a want-block or not, and learns from it.
    pub(super) fn delivered(&mut self, cid: &Cid, now: Instant) {
        if let Some(sent) = self.in_flight.remove(cid) {
            let latency = now.saturating_duration_since(sent).as_secs_f64();
            self.latency = Some(average(self.latency, latency));
            if let Some(since) = self.busy_since {
                let gap = now.saturating_duration_since(since.max(self.last_block));
                self.per_block = Some(average(self.per_block, gap.as_secs_f64()));
            }
        }
        if self.in_flight.is_empty() {
            self.busy_since = None;
        }
        self.last_block = now;
        self.stalled = false;
    }

    /// Whether the peer ever answered a want-block with its block.
    pub(super) fn served(&self) -> bool {
        self.latency.is_some()
    }

    /// Average busy seconds per block, if measured.
    pub(super) fn per_block(&self) -> Option<f64> {
        self.per_block
    }

    /// Estimated seconds until one more want-block would be answered: the queue ahead of it
    /// times the time per block.
    pub(super) fn cost(&self, unmeasured: f64) -> f64 {
        (self.in_flight.len() + 1) as f64 * self.per_block.unwrap_or(unmeasured)
    }

    /// How long a want-block may wait here without any block arriving from the peer.
    pub(super) fn deadline(&self, floor: Duration) -> Duration {
        let observed = self.latency.unwrap_or(0.0) * DEADLINE_FACTOR;
        floor.max(Duration::from_secs_f64(observed.min(3600.0)))
    }

    /// Want-blocks to move elsewhere: past the deadline while the peer sent no block for as
    /// long (it stopped answering), or past `cap` however busy the peer is (it dropped them).
    pub(super) fn overdue(&self, now: Instant, floor: Duration, cap: Duration) -> Vec<Cid> {
        let deadline = self.deadline(floor);
        let silent = now.saturating_duration_since(self.last_block) >= deadline;
        self.in_flight
            .iter()
            .filter(|(_, sent)| {
                let waited = now.saturating_duration_since(**sent);
                (waited >= deadline && silent) || waited >= cap
            })
            .map(|(cid, _)| *cid)
            .collect()
    }

    /// Whether the peer has sent no block for its deadline.
    pub(super) fn is_silent(&self, now: Instant, floor: Duration) -> bool {
        now.saturating_duration_since(self.last_block) >= self.deadline(floor)
    }
}

/// An exponentially weighted moving average.
fn average(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(old) => old + ALPHA * (sample - old),
        None => sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cid::multihash::Multihash;

    fn cid(n: u8) -> Cid {
        Cid::new_v1(0x55, Multihash::wrap(0x12, &[n; 32]).expect("digest"))
    }

    #[test]
    fn overdue_needs_silence_until_the_cap() {
        let (sender, _receiver) = mpsc::unbounded_channel();
        let start = Instant::now();
        let floor = Duration::from_secs(2);
        let cap = Duration::from_secs(30);
        let mut peer = Peer::new(sender, start);
        peer.start(cid(1), start);
        peer.start(cid(2), start);

        assert!(peer
            .overdue(start + Duration::from_secs(1), floor, cap)
            .is_empty());
        assert_eq!(peer.overdue(start + floor, floor, cap).len(), 2);

        // A block one second ago shows the peer is working through its queue.
        peer.delivered(&cid(1), start + Duration::from_secs(3));
        let now = start + Duration::from_secs(4);
        assert!(peer.overdue(now, floor, cap).is_empty());
        assert_eq!(peer.overdue(start + cap, floor, cap), vec![cid(2)]);
    }

    #[test]
    fn in_flight_limit_starts_small_and_follows_the_measured_rate() {
        let (sender, _receiver) = mpsc::unbounded_channel();
        let start = Instant::now();
        let mut fast = Peer::new(sender.clone(), start);
        assert_eq!(fast.limit(32), 4);
        fast.start(cid(1), start);
        fast.delivered(&cid(1), start + Duration::from_millis(10));
        // 10 ms a block: 0.5 s of work is 50 blocks, capped at the configured 32
        assert_eq!(fast.limit(32), 32);
        assert_eq!(fast.limit(8), 8);

        let mut slow = Peer::new(sender, start);
        slow.start(cid(1), start);
        slow.delivered(&cid(1), start + Duration::from_millis(100));
        assert_eq!(slow.limit(32), 5);
        slow.start(cid(2), start + Duration::from_secs(1));
        slow.delivered(&cid(2), start + Duration::from_secs(3));
        // now 0.6 s a block on average: the floor of two keeps its link busy
        assert_eq!(slow.limit(32), 2);
    }

    #[test]
    fn deadline_grows_with_observed_latency() {
        let (sender, _receiver) = mpsc::unbounded_channel();
        let start = Instant::now();
        let floor = Duration::from_secs(2);
        let mut peer = Peer::new(sender, start);
        peer.start(cid(1), start);
        peer.delivered(&cid(1), start + Duration::from_secs(4));
        assert_eq!(peer.deadline(floor), Duration::from_secs(12));
        assert_eq!(peer.per_block(), Some(4.0));
        assert_eq!(peer.cost(1.0), 4.0);
    }
}
