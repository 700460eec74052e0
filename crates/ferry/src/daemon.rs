//! `ferry daemon`: keeps an IPFS node online on this root's identity, serves what the store
//! holds to peers, and does network work for the CLI over the control socket.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use ferry_convert::ipfs::pull_image;
use ferry_ipfs::{fetch_blob, Node};
use ferry_oci::Platform;
use nix::fcntl::{Flock, FlockArg};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::cli::DaemonArgs;
use crate::context::Context;
use crate::control::{Reply, Request};
use crate::output::ProgressLines;

const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/4001";

/// Runs until SIGINT or SIGTERM.
pub async fn daemon(ctx: &Context, args: DaemonArgs) -> Result<()> {
    let _lock = lock_root(ctx)?;
    let mut config = ctx.node_config()?;
    if !args.listen.is_empty() {
        config.listen = args.listen;
    } else if config.listen.is_empty() {
        config.listen = vec![DEFAULT_LISTEN.parse()?];
    }
    config.peers.extend(args.peers);
    let node = if args.offline {
        None
    } else {
        let key = ferry_ipfs::load_or_create_identity(&ctx.root.join("identity.key"))?;
        Some(Arc::new(
            Node::start(key, ctx.store.clone(), &config)
                .await
                .context("start ipfs node")?,
        ))
    };
    let socket = ctx.socket_path();
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("listen on {}", socket.display()))?;
    announce(node.as_deref()).await?;

    let ctx = Arc::new(Context {
        root: ctx.root.clone(),
        store: ctx.store.clone(),
    });
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted.context("accept on control socket")?;
                tokio::spawn(serve(ctx.clone(), node.clone(), stream));
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    let _ = std::fs::remove_file(&socket);
    if let Some(node) = node.and_then(Arc::into_inner) {
        node.shutdown().await;
    }
    println!("Received interrupt signal, shut down");
    Ok(())
}

/// One daemon per root: a second one would pose as the same peer.
fn lock_root(ctx: &Context) -> Result<Flock<File>> {
    let path = ctx.root.join("daemon.lock");
    let file = File::create(&path).with_context(|| format!("open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| anyhow!("another ferry daemon is running on {}", ctx.root.display()))
}

/// Prints what kubo prints when its daemon is up.
async fn announce(node: Option<&Node>) -> Result<()> {
    let Some(node) = node else {
        println!("Daemon is ready (offline)");
        return Ok(());
    };
    let info = node.info().await?;
    println!("PeerID: {}", info.peer_id);
    for addr in &info.listen_addrs {
        println!("Swarm listening on {addr}/p2p/{}", info.peer_id);
    }
    println!("Daemon is ready");
    Ok(())
}

async fn serve(ctx: Arc<Context>, node: Option<Arc<Node>>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(line)) = lines.next_line().await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let work = tokio::spawn(async move {
        let result = handle(&ctx, node.as_deref(), &line, tx.clone()).await;
        let last = match result {
            Ok(reply) => reply,
            Err(e) => Reply::Error {
                message: format!("{e:#}"),
            },
        };
        let _ = tx.send(last);
    });
    while let Some(reply) = rx.recv().await {
        let Ok(mut bytes) = serde_json::to_vec(&reply) else {
            break;
        };
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() {
            // The CLI went away (Ctrl-C): stop its work too.
            work.abort();
            break;
        }
        if !matches!(reply, Reply::Progress { .. }) {
            break;
        }
    }
}

async fn handle(
    ctx: &Context,
    node: Option<&Node>,
    line: &str,
    progress: mpsc::UnboundedSender<Reply>,
) -> Result<Reply> {
    let request: Request = serde_json::from_str(line).context("bad request")?;
    match request {
        Request::Id => {
            let node = node.ok_or_else(|| anyhow!("the daemon is offline"))?;
            let info = node.info().await?;
            let addrs = info.listen_addrs.iter().map(|a| a.to_string()).collect();
            Ok(Reply::Id {
                peer_id: info.peer_id.to_string(),
                addrs,
            })
        }
        Request::Fetch { cid, timeout_ms } => {
            let Some(node) = node else {
                bail!("the daemon is offline")
            };
            let cid: cid::Cid = cid.parse().with_context(|| format!("bad CID {cid}"))?;
            let timeout = Duration::from_millis(timeout_ms);
            let (digest, _) = fetch_blob(
                node.bitswap(),
                &ctx.store,
                cid,
                None,
                u64::MAX,
                timeout,
                &|_| {},
            )
            .await?;
            Ok(Reply::Fetched {
                digest: digest.to_string(),
            })
        }
        Request::SwarmPeers => {
            let Some(node) = node else {
                bail!("the daemon is offline")
            };
            let info = node.info().await?;
            let addrs = info
                .connected
                .iter()
                .map(|(peer, addr)| with_peer(addr, peer))
                .collect();
            Ok(Reply::Peers { addrs })
        }
        Request::SwarmConnect { addr } => {
            let Some(node) = node else {
                bail!("the daemon is offline")
            };
            let addr: libp2p::Multiaddr = addr
                .parse()
                .with_context(|| format!("bad multiaddr {addr}"))?;
            node.connect(addr).await?;
            Ok(Reply::Done)
        }
        Request::PullIpfs { cid, timeout_ms } => {
            let Some(node) = node else {
                bail!("the daemon is offline")
            };
            let cid: cid::Cid = cid.parse().with_context(|| format!("bad CID {cid}"))?;
            let lines = ProgressLines::new(move |line| {
                let _ = progress.send(Reply::Progress { line });
            });
            let timeout = Duration::from_millis(timeout_ms);
            pull_image(
                node.bitswap(),
                &ctx.store,
                cid,
                &Platform::host(),
                timeout,
                &lines,
            )
            .await?;
            Ok(Reply::Done)
        }
    }
}

/// `addr` ending in `/p2p/PEER`, as kubo prints peers.
fn with_peer(addr: &libp2p::Multiaddr, peer: &libp2p::PeerId) -> String {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(_)) => addr.to_string(),
        _ => format!("{addr}/p2p/{peer}"),
    }
}
