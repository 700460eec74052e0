//! One outbound stream to one peer, opened on first use with protocol fallback and reopened
//! after an error (formats.md 2.1: replies and wants always travel on streams we open).

use std::io;
use std::time::Duration;

use futures::AsyncWriteExt as _;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};

use crate::wire::{encode_frame, Message, ProtocolVersion, OUTBOUND_VERSIONS};

/// A lazily opened, reused outbound stream.
pub(crate) struct Outbound {
    peer: PeerId,
    control: Control,
    stream: Option<(Stream, ProtocolVersion)>,
    /// Index into [`OUTBOUND_VERSIONS`] of the newest version the peer may accept.
    first_version: usize,
    timeout: Duration,
    max_message_size: usize,
}

impl Outbound {
    /// A slot for `peer`; nothing is opened until the first send.
    pub(crate) fn new(
        peer: PeerId,
        control: Control,
        timeout: Duration,
        max_message_size: usize,
    ) -> Self {
        Outbound {
            peer,
            control,
            stream: None,
            first_version: 0,
            timeout,
            max_message_size,
        }
    }

    /// Sends one message, rewritten for the version the stream speaks. A broken stream is
    /// replaced once; a second failure is returned and the next call opens a new stream.
    pub(crate) async fn send(&mut self, message: &Message) -> io::Result<()> {
        let mut last_error = None;
        for _attempt in 0..2 {
            let version = match self.stream.as_ref() {
                Some((_, version)) => *version,
                None => {
                    let opened = self.open().await?;
                    let version = opened.1;
                    self.stream = Some(opened);
                    version
                }
            };

            let frame = encode_frame(&message.clone().for_version(version));
            if frame.len() > self.max_message_size + 10 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "message too large",
                ));
            }
            match self.write(&frame).await {
                Ok(()) => {
                    crate::inbound::trace_message(self.peer, "sent", message);
                    return Ok(());
                }
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "bitswap stream broke, reopening");
                    self.stream = None;
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::ErrorKind::BrokenPipe.into()))
    }

    /// Writes and flushes one frame on the current stream within the send timeout.
    async fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        let Some((stream, _)) = self.stream.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let write = async {
            stream.write_all(frame).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Opens a stream, trying 1.2.0, then 1.1.0, then 1.0.0 (formats.md 2.1), starting from
    /// the newest version the peer has not refused before.
    async fn open(&mut self) -> io::Result<(Stream, ProtocolVersion)> {
        let versions = OUTBOUND_VERSIONS
            .iter()
            .enumerate()
            .skip(self.first_version);
        for (index, &version) in versions {
            let protocol = StreamProtocol::new(version.protocol());
            let open = self.control.open_stream(self.peer, protocol);
            match tokio::time::timeout(self.timeout, open).await {
                Ok(Ok(stream)) => {
                    tracing::trace!(peer = %self.peer, ?version, "opened bitswap stream");
                    self.first_version = index;
                    return Ok((stream, version));
                }
                Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => continue,
                Ok(Err(OpenStreamError::Io(error))) => return Err(error),
                Ok(Err(other)) => return Err(io::Error::other(other.to_string())),
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "peer speaks no bitswap version",
        ))
    }

    /// Closes the stream gracefully, if one is open.
    pub(crate) async fn close(&mut self) {
        if let Some((mut stream, _)) = self.stream.take() {
            let _ = tokio::time::timeout(self.timeout, stream.close()).await;
        }
    }
}
