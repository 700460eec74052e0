//! Inbound streams: accepted on every protocol ID and read until they end, many messages each
//! (formats.md 2.1, boxo `handleNewStream`).

use std::sync::Arc;

use futures::io::BufReader;
use futures::StreamExt as _;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::IncomingStreams;
use tokio::sync::OwnedSemaphorePermit;

use crate::wire::{self, PROTOCOLS};
use crate::{client, server, Error, Inner};

/// Registers a handler for each protocol ID and spawns its accept loop.
pub(crate) fn start(inner: &Arc<Inner>) -> Result<(), Error> {
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
async fn accept(inner: Arc<Inner>, mut incoming: IncomingStreams) {
    while let Some((peer, stream)) = incoming.next().await {
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
