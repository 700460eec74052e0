//! Inbound streams: accepted on every protocol ID and read until they end, many messages each
//! (formats.md 2.1, boxo `handleNewStream`).
//!
//! kubo and Helia send every reply on a stream of its own (formats.md 2.1), so a fetch of 20
//! blocks makes 20 streams arrive within a millisecond. libp2p-stream hands inbound streams over
//! a channel that holds one and drops the others, which loses blocks; [`InboundBehaviour`]
//! queues up to [`crate::Config::max_inbound_streams`] instead.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::channel::mpsc;
use futures::io::BufReader;
use futures::StreamExt as _;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{DeniedUpgrade, InboundUpgrade, UpgradeInfo};
use libp2p::core::Endpoint;
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::sync::OwnedSemaphorePermit;

use crate::wire::{self, PROTOCOLS};
use crate::{client, server, Error, Inner};

/// A stream a peer opened to us, with the peer.
type Incoming = (PeerId, Stream);

/// Swarm behaviour that accepts the peers' Bitswap streams (every protocol ID of formats.md
/// 2.1) and queues them for the [`crate::Bitswap`] built with [`crate::Bitswap::with_inbound`].
/// Add it to the swarm's behaviour next to `libp2p_stream::Behaviour`, which still opens
/// our outbound streams.
pub struct InboundBehaviour {
    sender: mpsc::Sender<Incoming>,
}

/// The receiving end of an [`InboundBehaviour`]: hand it to [`crate::Bitswap::with_inbound`].
pub struct InboundStreams {
    receiver: mpsc::Receiver<Incoming>,
}

impl InboundBehaviour {
    /// A behaviour and its stream queue, which holds up to `capacity` streams not yet taken
    /// by Bitswap (use [`crate::Config::max_inbound_streams`]); a stream beyond that is dropped.
    pub fn new(capacity: usize) -> (InboundBehaviour, InboundStreams) {
        let (sender, receiver) = mpsc::channel(capacity);
        (InboundBehaviour { sender }, InboundStreams { receiver })
    }

    fn handler(&self, peer: PeerId) -> InboundHandler {
        InboundHandler {
            peer,
            sender: self.sender.clone(),
        }
    }
}

impl futures::Stream for InboundStreams {
    type Item = Incoming;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Incoming>> {
        std::pin::Pin::new(&mut self.receiver).poll_next(cx)
    }
}

impl NetworkBehaviour for InboundBehaviour {
    type ConnectionHandler = InboundHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _event: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// The per-connection half of [`InboundBehaviour`]: offers the Bitswap protocol IDs and
/// queues each negotiated stream. It never opens streams and never keeps a connection alive
/// by itself (open streams do).
pub struct InboundHandler {
    peer: PeerId,
    sender: mpsc::Sender<Incoming>,
}

/// The inbound upgrade: multistream-select on the Bitswap IDs, the stream as it is.
#[derive(Clone, Copy)]
pub struct BitswapProtocols;

impl UpgradeInfo for BitswapProtocols {
    type Info = StreamProtocol;
    type InfoIter = std::array::IntoIter<StreamProtocol, 4>;

    fn protocol_info(&self) -> Self::InfoIter {
        PROTOCOLS.map(StreamProtocol::new).into_iter()
    }
}

impl InboundUpgrade<Stream> for BitswapProtocols {
    type Output = Stream;
    type Error = Infallible;
    type Future = Ready<Result<Stream, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, _protocol: StreamProtocol) -> Self::Future {
        ready(Ok(stream))
    }
}

impl ConnectionHandler for InboundHandler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = BitswapProtocols;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<BitswapProtocols, ()> {
        SubstreamProtocol::new(BitswapProtocols, ())
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<BitswapProtocols, DeniedUpgrade>) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
        {
            if self.sender.try_send((self.peer, stream)).is_err() {
                tracing::debug!(peer = %self.peer, "inbound bitswap queue full, dropping a stream");
            }
        }
    }
}

/// Spawns the accept loop over `streams`, or, without them, registers a libp2p-stream handler
/// for each protocol ID and spawns their accept loops.
pub(crate) fn start(inner: &Arc<Inner>, streams: Option<InboundStreams>) -> Result<(), Error> {
    if let Some(streams) = streams {
        inner.spawn(accept(inner.clone(), streams));
        return Ok(());
    }
    let mut control = inner.control.clone();
    let mut accepted = Vec::new();
    for protocol in PROTOCOLS {
        let incoming = control
            .accept(StreamProtocol::new(protocol))
            .map_err(|_| Error::AlreadyRegistered { protocol })?;
        accepted.push(incoming);
    }

    for incoming in accepted {
        inner.spawn(accept(inner.clone(), incoming));
    }
    Ok(())
}

/// Hands each inbound stream to its own reader, refusing streams over the concurrency limit.
/// This loop must stay quick: libp2p-stream drops streams that find it busy.
async fn accept<S>(inner: Arc<Inner>, mut incoming: S)
where
    S: futures::Stream<Item = Incoming> + Unpin,
{
    while let Some((peer, stream)) = incoming.next().await {
        tracing::trace!(%peer, "inbound bitswap stream");
        let Ok(permit) = inner.inbound_streams.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many inbound bitswap streams, dropping one");
            continue;
        };
        inner.spawn(read(inner.clone(), peer, stream, permit));
    }
}

/// Reads messages until the stream ends; a message over the size limit or that does not
/// decode drops the stream.
async fn read(inner: Arc<Inner>, peer: PeerId, stream: Stream, _permit: OwnedSemaphorePermit) {
    let mut reader = BufReader::new(stream);
    loop {
        match wire::read_frame(&mut reader, inner.config.max_message_size).await {
            Ok(Some(message)) => {
                trace_message(peer, "received", &message);
                client::handle_message(&inner, peer, &message);
                if let Some(wantlist) = &message.wantlist {
                    server::handle_wantlist(&inner, peer, wantlist);
                }
            }
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(%peer, %error, "dropping bitswap stream");
                break;
            }
        }
    }
}

/// Logs what a message carries, at trace level (`FERRY_LOG=ferry_bitswap=trace`).
pub(crate) fn trace_message(peer: PeerId, what: &str, message: &wire::Message) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    let (wants, cancels, full) = message.wantlist.as_ref().map_or((0, 0, false), |w| {
        let cancels = w.entries.iter().filter(|e| e.cancel).count();
        (w.entries.len() - cancels, cancels, w.full)
    });
    let blocks = message.payload.len() + message.blocks.len();
    let presences = message.block_presences.len();
    tracing::trace!(%peer, what, wants, cancels, full, blocks, presences, "bitswap message");
}
