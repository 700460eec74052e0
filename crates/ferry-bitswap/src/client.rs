//! The client: wants spread over every peer that has the blocks, as boxo sessions do
//! (formats.md 2.4). The scheduling lives in [`state`]; this module runs the tasks around it:
//! a writer per peer, the handling of inbound blocks and presences, and the timers.

mod peer;
mod state;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use crate::outbound::Outbound;
use crate::wire::{self, Entry, Message, PresenceType, Wantlist};
use crate::{bump, Inner};

pub(crate) use state::{Arrival, ClientState};

/// Entries merged into one wantlist message at most; about 0.7 MiB of CIDs, well under the
/// 2 MiB that boxo allows for a wantlist message (formats.md 2.4).
const MAX_ENTRIES_PER_MESSAGE: usize = 16 * 1024;

/// A group of gets for blocks that likely sit on the same peers, such as the blocks of one
/// file: a want in a session prefers the peers that sent a block or HAVE for the session's
/// earlier wants. Made by [`crate::Bitswap::session`]; dropping it forgets those peers.
pub struct Session {
    inner: Weak<Inner>,
    pub(crate) id: u64,
}

impl Session {
    pub(crate) fn open(inner: &Arc<Inner>) -> Session {
        let id = inner.client().open_session();
        Session {
            inner: Arc::downgrade(inner),
            id,
        }
    }

    /// The session id if it belongs to `inner`; a session of another instance is ignored.
    pub(crate) fn id_for(&self, inner: &Arc<Inner>) -> Option<u64> {
        std::ptr::eq(self.inner.as_ptr(), Arc::as_ptr(inner)).then_some(self.id)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.client().close_session(self.id);
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).finish()
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

/// Registers a waiter for `cid`, in `session` if given; the receiver gets the verified bytes.
pub(crate) fn register(
    inner: &Arc<Inner>,
    cid: Cid,
    session: Option<u64>,
) -> (Waiter, oneshot::Receiver<Bytes>) {
    let (id, receiver) = inner.client().add_waiter(cid, session);
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

/// Drops a peer; the want-blocks it held go to other peers.
pub(crate) fn peer_disconnected(inner: &Inner, peer: PeerId) {
    let moved = inner.client().peer_disconnected(peer);
    bump(&inner.counters.wants_moved, moved as u64);
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
            client.on_presence(peer, &cid, false);
        }
    }
}

/// Handles the client's part of an inbound message: blocks and presences.
pub(crate) fn handle_message(inner: &Inner, peer: PeerId, message: &Message) {
    let blocks = verified_blocks(inner, message);
    let mut client = inner.client();

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
        let have = presence.r#type() == PresenceType::Have;
        if !have {
            bump(&inner.counters.dont_haves_received, 1);
        }
        client.on_presence(peer, &cid, have);
    }
    let moved = client.take_moved();
    drop(client);
    bump(&inner.counters.wants_moved, moved as u64);
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

/// Starts the timer that moves overdue want-blocks (several times per deadline floor) and
/// re-asks unanswered wants every rebroadcast interval.
pub(crate) fn start_timers(inner: &Arc<Inner>) {
    let config = &inner.config;
    let rebroadcast = config.rebroadcast_interval.max(Duration::from_millis(10));
    let tick = (config.want_timeout_floor / 4)
        .clamp(Duration::from_millis(25), Duration::from_millis(500))
        .min(rebroadcast);
    let weak = Arc::downgrade(inner);
    inner.spawn(async move {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rebroadcast = Instant::now();
        loop {
            ticker.tick().await;
            let Some(inner) = weak.upgrade() else {
                return;
            };

            let now = Instant::now();
            let mut client = inner.client();
            let moved = client.check_overdue(now);
            if now.saturating_duration_since(last_rebroadcast) >= rebroadcast {
                last_rebroadcast = now;
                client.rebroadcast();
            }
            drop(client);
            bump(&inner.counters.wants_moved, moved as u64);
        }
    });
}
