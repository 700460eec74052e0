//! The control socket between the CLI and a daemon on the same root (`ROOT/ferry.sock`):
//! newline-delimited JSON, one request per connection, any number of progress lines, then one
//! final answer.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// What the CLI asks a daemon.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The node's peer ID and addresses.
    Id,
    /// Pull an IPFS image into the store.
    PullIpfs {
        /// The image CID.
        cid: String,
        /// How long to wait for any one block, in milliseconds.
        timeout_ms: u64,
        /// The platform to pull from an index (`os/arch[/variant]`); absent: the daemon's host
        /// platform, unless `all_platforms`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
        /// Pull every platform of an index.
        #[serde(default)]
        all_platforms: bool,
        /// Leave out the eStargz layers (`run --snapshotter stargz` reads them lazily).
        #[serde(default)]
        lazy: bool,
    },
    /// Fetch a UnixFS file into the store as a blob.
    Fetch {
        /// The file's root CID.
        cid: String,
        /// How long to wait for any one block, in milliseconds.
        timeout_ms: u64,
    },
    /// The connected peers.
    SwarmPeers,
    /// Dial a peer.
    SwarmConnect {
        /// Its multiaddr.
        addr: String,
    },
    /// Mount an eStargz layer of an IPFS image read-only through FUSE, served by the daemon
    /// until it is unmounted, and fetch the whole layer into the store in the background.
    MountLazy {
        /// The layer's descriptor (with its `ipfs://` url and toc.digest annotation).
        layer: Box<ferry_oci::Descriptor>,
        /// Where to mount it.
        mountpoint: std::path::PathBuf,
        /// How long to wait for any one block, in milliseconds.
        timeout_ms: u64,
    },
    /// The Bitswap counters.
    BitswapStats,
    /// Announce in the DHT that this node provides these CIDs and the roots they refer to
    /// (an image CID brings in the CIDs of its manifests, config and layers).
    Provide {
        /// The CIDs, as text.
        cids: Vec<String>,
    },
}

/// What a daemon answers.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// A line of progress for the user.
    Progress {
        /// The line.
        line: String,
    },
    /// The node's identity.
    Id {
        /// Peer ID.
        peer_id: String,
        /// Listen addresses.
        addrs: Vec<String>,
    },
    /// A file was fetched into the store as this blob.
    Fetched {
        /// The blob's digest.
        digest: String,
    },
    /// Connected peers, one multiaddr (with /p2p/ID) each.
    Peers {
        /// The addresses.
        addrs: Vec<String>,
    },
    /// Bitswap counters, named as `ipfs stats bitswap` names them.
    BitswapStats {
        /// Blocks received that a fetch waited for.
        blocks_received: u64,
        /// Bytes of those blocks.
        data_received: u64,
        /// Blocks sent to peers.
        blocks_sent: u64,
        /// Bytes of those blocks.
        data_sent: u64,
        /// Blocks received again after one copy had arrived.
        dup_blocks_received: u64,
        /// The CIDs the daemon's fetches are waiting for.
        wantlist: Vec<String>,
        /// The peer IDs of the connected peers.
        partners: Vec<String>,
    },
    /// The request is done.
    Done,
    /// The request failed.
    Error {
        /// The one-line reason.
        message: String,
    },
}

/// Connects to the daemon of this root, if one is running.
pub async fn connect(socket: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket).await.ok()
}

/// Sends `request` and hands every reply to `on_reply` until the final one, which is returned
/// (an `Error` reply becomes an error).
pub async fn call(
    mut stream: UnixStream,
    request: &Request,
    mut on_reply: impl FnMut(&Reply),
) -> Result<Reply> {
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).await.context("send to daemon")?;
    let mut lines = BufReader::new(stream).lines();
    while let Some(line) = lines.next_line().await.context("read from daemon")? {
        let reply: Reply = serde_json::from_str(&line).context("bad reply from daemon")?;
        match reply {
            Reply::Progress { .. } => on_reply(&reply),
            Reply::Error { message } => return Err(anyhow!(message)),
            other => return Ok(other),
        }
    }
    Err(anyhow!(
        "the daemon closed the connection without an answer"
    ))
}
