//! Bitswap 1.2.0 over libp2p streams: a client that fetches blocks by CID from connected peers
//! and a server that answers their wants from a [`Blockstore`].
//!
//! The wire format and the peer behaviour follow the ferry formats notes, section 2 (Bitswap
//! 1.2.0 as kubo/boxo speak it). The crate runs on a [`libp2p_stream::Control`]: the swarm owner
//! adds `libp2p_stream::Behaviour` to its behaviour, hands a control to [`Bitswap::new`] and
//! reports connections with [`Bitswap::peer_connected`] and [`Bitswap::peer_disconnected`].
//!
//! # Lifecycle
//!
//! - [`Bitswap::new`] registers inbound handlers for every Bitswap protocol ID and starts
//!   serving at once; from then on any peer may ask for blocks that the store holds.
//! - [`Bitswap::get`] (or [`Bitswap::get_in`] within a [`Session`]) adds a want. Once active,
//!   it goes as want-have (with send-dont-have) to every connected peer and as want-block to
//!   one peer: the one expected to answer soonest among those that said HAVE, else among
//!   those that served other blocks of the same session, else of any peer. Each peer holds a
//!   bounded number of want-blocks that follows its measured rate (a few until it answered
//!   one, then about half a second of its blocks, at most [`Config::max_wants_per_peer`]), so
//!   many wants spread over every peer that has the blocks and few wait behind a slow or
//!   shared one.
//! - A want-block waiting at a peer whose queue ahead of it is long moves to a quicker peer
//!   that says HAVE later (cancelled at the first); one that waits well past its holder's usual
//!   answer time is asked once more of a peer that said HAVE, and the first copy wins. No
//!   block is otherwise asked of two peers at once.
//! - DONT_HAVE takes a peer out of the candidates for that block; a disconnect, or a
//!   want-block left without any block from that peer past a deadline derived from its
//!   latency (at least [`Config::want_timeout_floor`]), moves the want-block to another peer.
//!   A copy arriving late counts in [`Stats::duplicate_blocks`]. When every peer said
//!   DONT_HAVE the want is asked again every rebroadcast interval, and peers that connect get
//!   every active want. The first block whose bytes hash to the CID resolves every waiter for
//!   it and cancels the want at the other peers asked. Dropping the future withdraws the want.
//! - Messages travel only on streams this side opens (one for wants and one for replies per
//!   peer, each reused and reopened after an error), because kubo never reads a reply on a
//!   stream it opened (formats 2.1). Inbound streams are read until they end.
//! - Dropping the last clone of [`Bitswap`] stops every task it started; the inbound handlers
//!   are unregistered when their tasks end.
//!
//! # Bounds
//!
//! Messages are at most [`Config::max_message_size`] (4 MiB); a peer may queue at most
//! [`Config::max_queued_wants_per_peer`] wants with the server; the client has at most
//! [`Config::max_active_wants`] wants on the network (more wait, unsent) and at most
//! [`Config::max_wants_per_peer`] want-blocks, or [`Config::max_bytes_in_flight_per_peer`] of
//! blocks at their average size, outstanding per peer; at most
//! [`Config::max_inbound_streams`] inbound streams are read at once; every write has
//! [`Config::send_timeout`].
#![warn(missing_docs)]

mod client;
mod inbound;
mod outbound;
mod server;
mod store;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use libp2p::PeerId;
use tokio::sync::{watch, Semaphore};

pub use client::Session;
pub use inbound::{BitswapProtocols, InboundBehaviour, InboundHandler, InboundStreams};
pub use store::{Blockstore, MemoryBlockstore};

/// Errors of the Bitswap client and of starting the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No peer delivered the block before the timeout.
    #[error(
        "no peer sent block {cid}: {connected} peers connected, {asked} asked, waited \
         {waited:?}{}",
        corrupt_note(*.dropped)
    )]
    Timeout {
        /// The block wanted (boxed: a CID is 80 bytes).
        cid: Box<Cid>,
        /// Peers connected when the wait ended.
        connected: usize,
        /// Distinct peers that were sent the want.
        asked: usize,
        /// How long the call waited.
        waited: Duration,
        /// Blocks that arrived during the wait but matched no wanted CID (corrupt or
        /// unasked-for data), counted over all wants.
        dropped: u64,
    },
    /// The CID uses a hash this crate cannot verify.
    #[error("cannot verify block {cid}: multihash code {code:#x} is not sha2-256")]
    UnsupportedHash {
        /// The block asked for.
        cid: Box<Cid>,
        /// Its multihash code.
        code: u64,
    },
    /// Another handler already accepts streams for a Bitswap protocol on this control.
    #[error("bitswap protocol {protocol} already has a handler on this swarm")]
    AlreadyRegistered {
        /// The protocol ID.
        protocol: &'static str,
    },
}

/// Settings of the client and the server; [`Config::default`] matches boxo where it matters.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most want-blocks outstanding at one peer before further want-blocks go elsewhere or
    /// wait (default 32); a peer gets fewer until its rate shows it can take them.
    pub max_wants_per_peer: usize,
    /// Bytes of blocks outstanding at one peer, counted at the average block size seen so
    /// far; lowers [`Config::max_wants_per_peer`] for large blocks (default 8 MiB).
    pub max_bytes_in_flight_per_peer: usize,
    /// Wants sent to peers at once; further wants wait unsent until one resolves, oldest
    /// first (default 512, half the wants kubo queues per peer).
    pub max_active_wants: usize,
    /// Least time a want-block may go without any block from its peer before it moves to
    /// another peer; the deadline grows with the latency observed at that peer (default 2 s).
    /// A quarter of it (with the same growth) is the least wait before a slow want-block is
    /// copied to a second peer that said HAVE.
    pub want_timeout_floor: Duration,
    /// How often unanswered wants are sent again (default 5 s).
    pub rebroadcast_interval: Duration,
    /// Largest message read or written, framing excluded (default 4 MiB, formats 2.2).
    pub max_message_size: usize,
    /// Size at which the server starts a new response message; a larger block goes alone
    /// (default 1 MiB).
    pub response_target_size: usize,
    /// Wants one peer may have queued with the server; more are dropped (default 1024).
    pub max_queued_wants_per_peer: usize,
    /// A want-have for a block this small is answered with the block (default 1024 bytes).
    pub want_have_replace_size: usize,
    /// Time allowed to open a stream or write one message (default 30 s).
    pub send_timeout: Duration,
    /// Inbound streams read at once, over all peers; more are refused (default 512).
    pub max_inbound_streams: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_wants_per_peer: 32,
            max_bytes_in_flight_per_peer: 8 << 20,
            max_active_wants: 512,
            want_timeout_floor: Duration::from_secs(2),
            rebroadcast_interval: Duration::from_secs(5),
            max_message_size: 4 << 20,
            response_target_size: 1 << 20,
            max_queued_wants_per_peer: 1024,
            want_have_replace_size: 1024,
            send_timeout: Duration::from_secs(30),
            max_inbound_streams: 512,
        }
    }
}

/// Counters since start, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blocks sent to peers.
    pub blocks_sent: u64,
    /// Block bytes sent to peers (data only).
    pub bytes_sent: u64,
    /// Verified blocks received that a `get` was waiting for.
    pub blocks_received: u64,
    /// Bytes of those blocks.
    pub bytes_received: u64,
    /// Verified blocks received again after one copy had already resolved the want.
    pub duplicate_blocks: u64,
    /// Blocks received that match no wanted CID (this includes bytes sent under a wrong CID).
    pub unwanted_blocks: u64,
    /// Blocks refused before hashing: a bad prefix or a hash other than sha2-256.
    pub invalid_blocks: u64,
    /// HAVE answers sent.
    pub haves_sent: u64,
    /// DONT_HAVE answers sent.
    pub dont_haves_sent: u64,
    /// DONT_HAVE answers received.
    pub dont_haves_received: u64,
    /// Want-blocks taken from a peer that disconnected, stopped answering or was slower than
    /// another that said HAVE, or copied to a second peer because the first was too slow.
    pub wants_moved: u64,
}

/// Atomic counters behind [`Stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) blocks_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) blocks_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) duplicate_blocks: AtomicU64,
    pub(crate) unwanted_blocks: AtomicU64,
    pub(crate) invalid_blocks: AtomicU64,
    pub(crate) haves_sent: AtomicU64,
    pub(crate) dont_haves_sent: AtomicU64,
    pub(crate) dont_haves_received: AtomicU64,
    pub(crate) wants_moved: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            blocks_sent: get(&self.blocks_sent),
            bytes_sent: get(&self.bytes_sent),
            blocks_received: get(&self.blocks_received),
            bytes_received: get(&self.bytes_received),
            duplicate_blocks: get(&self.duplicate_blocks),
            unwanted_blocks: get(&self.unwanted_blocks),
            invalid_blocks: get(&self.invalid_blocks),
            haves_sent: get(&self.haves_sent),
            dont_haves_sent: get(&self.dont_haves_sent),
            dont_haves_received: get(&self.dont_haves_received),
            wants_moved: get(&self.wants_moved),
        }
    }
}

/// State shared by the handle and every task.
pub(crate) struct Inner {
    pub(crate) control: libp2p_stream::Control,
    pub(crate) store: Arc<dyn Blockstore>,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) client: Mutex<client::ClientState>,
    pub(crate) server: Mutex<server::ServerState>,
    pub(crate) inbound_streams: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
}

impl Inner {
    /// Spawns a task that also ends when the last [`Bitswap`] handle is dropped.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                _ = shutdown.wait_for(|stopped| *stopped) => {}
            }
        });
    }

    pub(crate) fn client(&self) -> MutexGuard<'_, client::ClientState> {
        // A panic while holding the lock leaves consistent-enough maps; keep serving.
        self.client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn server(&self) -> MutexGuard<'_, server::ServerState> {
        self.server
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Tells every task to stop when the last handle goes.
struct ShutdownOnDrop(watch::Sender<bool>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A running Bitswap client and server. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Bitswap {
    inner: Arc<Inner>,
    _shutdown: Arc<ShutdownOnDrop>,
}

impl Bitswap {
    /// Starts serving and fetching over `control` (of a swarm whose behaviour includes
    /// `libp2p_stream::Behaviour`): registers inbound handlers on every Bitswap protocol ID and
    /// spawns the tasks that read them and rebroadcast wants. Must be called inside a tokio
    /// runtime.
    ///
    /// libp2p-stream drops inbound streams that arrive while one is waiting to be taken, and
    /// kubo and Helia open one stream per reply: for those peers use [`Bitswap::with_inbound`].
    pub fn new(
        control: libp2p_stream::Control,
        store: Arc<dyn Blockstore>,
        config: Config,
    ) -> Result<Self, Error> {
        Self::start(control, None, store, config)
    }

    /// Like [`Bitswap::new`], but takes the peers' streams from an [`InboundBehaviour`] in the
    /// same swarm (see [`InboundBehaviour::new`]), which queues them instead of dropping
    /// bursts. `control` still opens the outbound streams.
    pub fn with_inbound(
        control: libp2p_stream::Control,
        inbound: InboundStreams,
        store: Arc<dyn Blockstore>,
        config: Config,
    ) -> Result<Self, Error> {
        Self::start(control, Some(inbound), store, config)
    }

    fn start(
        control: libp2p_stream::Control,
        inbound: Option<InboundStreams>,
        store: Arc<dyn Blockstore>,
        config: Config,
    ) -> Result<Self, Error> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            control,
            store,
            counters: Counters::default(),
            client: Mutex::new(client::ClientState::new(&config)),
            server: Mutex::new(server::ServerState::default()),
            inbound_streams: Arc::new(Semaphore::new(config.max_inbound_streams)),
            config,
            shutdown: shutdown_rx,
        });

        inbound::start(&inner, inbound)?;
        client::start_timers(&inner);
        Ok(Bitswap {
            inner,
            _shutdown: Arc::new(ShutdownOnDrop(shutdown_tx)),
        })
    }

    /// Records that `peer` connected; every pending want is sent to it at once.
    pub fn peer_connected(&self, peer: PeerId) {
        client::peer_connected(&self.inner, peer);
    }

    /// Records that the last connection to `peer` closed: its want-blocks move to other peers
    /// and its queued replies are dropped.
    pub fn peer_disconnected(&self, peer: PeerId) {
        client::peer_disconnected(&self.inner, peer);
        server::peer_disconnected(&self.inner, peer);
    }

    /// Fetches one block from connected peers and returns its bytes once they hash to `cid`
    /// (sha2-256; an identity CID is answered from the CID itself; other hashes are refused).
    /// Fails after `timeout` with the number of peers connected and asked. The same as
    /// [`Bitswap::get_in`] in a session of its own.
    ///
    /// Cancel-safe: dropping the future withdraws the want and cancels it at the peers asked
    /// when no other call waits for the same block.
    pub async fn get(&self, cid: Cid, timeout: Duration) -> Result<Bytes, Error> {
        self.fetch(None, cid, timeout).await
    }

    /// A new session: gets made in it prefer the peers that sent its earlier blocks. Use one
    /// per file or DAG.
    pub fn session(&self) -> Session {
        Session::open(&self.inner)
    }

    /// Like [`Bitswap::get`], within `session`: the want-block goes first to the peers that
    /// sent a block or HAVE for the session's other wants. A session of another [`Bitswap`]
    /// is ignored. Cancel-safe, as [`Bitswap::get`].
    pub async fn get_in(
        &self,
        session: &Session,
        cid: Cid,
        timeout: Duration,
    ) -> Result<Bytes, Error> {
        self.fetch(session.id_for(&self.inner), cid, timeout).await
    }

    async fn fetch(
        &self,
        session: Option<u64>,
        cid: Cid,
        timeout: Duration,
    ) -> Result<Bytes, Error> {
        let code = cid.hash().code();
        if code == wire::IDENTITY {
            return Ok(Bytes::copy_from_slice(cid.hash().digest()));
        }
        if code != wire::SHA2_256 || cid.hash().size() != 32 {
            return Err(Error::UnsupportedHash {
                cid: Box::new(cid),
                code,
            });
        }

        let dropped_before = self.inner.counters.snapshot().unwanted_blocks;
        let (waiter, receiver) = client::register(&self.inner, cid, session);
        if let Ok(Ok(bytes)) = tokio::time::timeout(timeout, receiver).await {
            return Ok(bytes);
        }

        let (connected, asked) = self.inner.client().counts(&cid);
        drop(waiter);
        let dropped = self.inner.counters.snapshot().unwanted_blocks - dropped_before;
        Err(Error::Timeout {
            cid: Box::new(cid),
            connected,
            asked,
            waited: timeout,
            dropped,
        })
    }

    /// Says that the store now holds `cid` (a block just verified, for example of a blob
    /// still being fetched): peers that were answered DONT_HAVE for it are told HAVE, so a
    /// swarm of nodes fetching the same blocks trade them as they arrive.
    pub fn announce(&self, cid: &Cid) {
        server::announce(&self.inner, cid);
    }

    /// Peers currently connected, as reported to [`Bitswap::peer_connected`].
    pub fn peers(&self) -> Vec<PeerId> {
        self.inner.client().peers()
    }

    /// The CIDs this node's fetches are waiting for (its wantlist), in no order.
    pub fn wantlist(&self) -> Vec<Cid> {
        self.inner.client().wanted()
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }
}

/// The end of a timeout message when blocks matching no want arrived meanwhile.
fn corrupt_note(dropped: u64) -> String {
    match dropped {
        0 => String::new(),
        n => format!(
            " ({n} blocks matching no wanted CID were dropped: a peer may send corrupt data)"
        ),
    }
}
