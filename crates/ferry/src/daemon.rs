//! `ferry daemon`: keeps an IPFS node online on this root's identity, serves what the store
//! holds to peers, and does network work for the CLI over the control socket.

use std::collections::HashSet;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use cid::Cid;
use ferry_content::Store;
use ferry_convert::ipfs::{pull_image_leaving, MAX_MANIFEST_SIZE};
use ferry_ipfs::{fetch_blob, Node};
use ferry_oci::{media, Descriptor, Index, Manifest, Platform};
use nix::fcntl::{Flock, FlockArg};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
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
    // Lazy layers a killed daemon served.
    crate::lazy::sweep(&ctx.root);
    let mut config = crate::network::node_config(ctx, args.swarm_key.as_deref())?;
    if args.no_mdns {
        config.mdns = false;
    }
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
            Node::start(key, ctx.store.clone(), &config).await?,
        ))
    };
    let registry = match (&node, args.no_registry) {
        (Some(node), false) => Some(start_registry(ctx, node, &args.registry).await?),
        _ => None,
    };
    let socket = ctx.socket_path();
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("listen on {}", socket.display()))?;
    announce(node.as_deref(), registry.as_ref()).await?;
    if let Some(node) = &node {
        tokio::spawn(provide_pins(ctx.store.clone(), node.clone()));
    }

    let ctx = Arc::new(Context {
        root: ctx.root.clone(),
        store: ctx.store.clone(),
    });
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONTROL_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(ctx.clone(), node.clone(), slots.clone(), stream));
                }
                Err(e) => {
                    // Out of descriptors or memory for a moment: the daemon must outlive it.
                    tracing::warn!(error = %e, "accept on the control socket failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    let _ = std::fs::remove_file(&socket);
    if let Some(node) = node.and_then(Arc::into_inner) {
        node.shutdown().await;
    }
    outln!("Received interrupt signal, shut down");
    Ok(())
}

/// CLI connections served at once; each is one request.
const MAX_CONTROL_CONNECTIONS: usize = 64;
/// The longest request line accepted on the control socket.
const MAX_REQUEST_LINE: u64 = 64 << 10;
/// How long a CLI may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the registry endpoint and serves it from the store and this node's Bitswap until the
/// daemon stops; returns the bound address.
async fn start_registry(
    ctx: &Context,
    node: &Arc<Node>,
    addr: &str,
) -> Result<std::net::SocketAddr> {
    use ferry_distribution::server::{self, Backend, ServerConfig};
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("registry endpoint: listen on {addr} (choose another with --registry, or --no-registry)")
    })?;
    let bound = listener.local_addr()?;
    let backend = Backend::new(ctx.store.clone(), Arc::new(node.bitswap().clone()));
    tokio::spawn(async move {
        let never = std::future::pending::<()>();
        if let Err(e) = server::serve(listener, backend, ServerConfig::default(), never).await {
            tracing::warn!(error = %e, "the registry endpoint stopped");
        }
    });
    Ok(bound)
}

/// One daemon per root: a second one would pose as the same peer.
fn lock_root(ctx: &Context) -> Result<Flock<File>> {
    let path = ctx.root.join("daemon.lock");
    let file = File::create(&path).with_context(|| format!("open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| anyhow!("another ferry daemon is running on {}", ctx.root.display()))
}

/// Announces every pinned CID and the roots it refers to (kubo provides what it pins at start
/// too); the node re-announces them every 22 h.
async fn provide_pins(store: Arc<Store>, node: Arc<Node>) {
    let roots = tokio::task::spawn_blocking(move || {
        let pins = store.pins().unwrap_or_default();
        let cids: Vec<Cid> = pins.iter().filter_map(|(c, _)| c.parse().ok()).collect();
        referenced_roots(&store, &cids)
    })
    .await
    .unwrap_or_default();
    tracing::info!(roots = roots.len(), "announcing pinned content");
    if let Err(e) = node.provide(roots).await {
        tracing::warn!(error = %e, "cannot announce pinned content");
    }
}

/// Most root CIDs one announcement walks to (a pin of thousands of layers is still fine).
const MAX_ROOTS: usize = 100_000;

/// `cids` and, for those that are image CIDs (the JSON of a top descriptor), the `ipfs://`
/// CIDs of every manifest, index, config and layer below them, as `ferry push` wrote them.
fn referenced_roots(store: &Store, cids: &[Cid]) -> Vec<Cid> {
    let mut seen: HashSet<Cid> = HashSet::new();
    let mut roots = Vec::new();
    let mut todo: Vec<Descriptor> = Vec::new();
    for cid in cids {
        if seen.insert(*cid) {
            roots.push(*cid);
        }
        if let Some(top) = small_json::<Descriptor>(store, store.file_blob(cid).ok().flatten()) {
            todo.push(top);
        }
    }
    while let Some(desc) = todo.pop() {
        if roots.len() >= MAX_ROOTS {
            break;
        }
        let Some(cid) = desc.ipfs_url().and_then(|u| Cid::try_from(u).ok()) else {
            continue;
        };
        if !seen.insert(cid) {
            continue;
        }
        roots.push(cid);
        let digest = Some(desc.digest.clone());
        if media::is_index(&desc.media_type) {
            if let Some(index) = small_json::<Index>(store, digest) {
                todo.extend(index.manifests);
            }
        } else if media::is_manifest(&desc.media_type) {
            if let Some(manifest) = small_json::<Manifest>(store, digest) {
                todo.push(manifest.config);
                todo.extend(manifest.layers);
            }
        }
    }
    roots
}

/// The blob `digest` parsed as JSON, when it is here, small enough for a manifest, and valid.
fn small_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    digest: Option<ferry_oci::Digest>,
) -> Option<T> {
    let digest = digest?;
    let size = std::fs::metadata(store.blob_path(&digest)).ok()?.len();
    if size > MAX_MANIFEST_SIZE {
        return None;
    }
    serde_json::from_slice(&store.read_blob(&digest).ok()?).ok()
}

/// Prints what kubo prints when its daemon is up.
async fn announce(node: Option<&Node>, registry: Option<&std::net::SocketAddr>) -> Result<()> {
    let Some(node) = node else {
        outln!("Daemon is ready (offline)");
        return Ok(());
    };
    let info = node.info().await?;
    outln!("PeerID: {}", info.peer_id);
    for addr in &info.listen_addrs {
        outln!("Swarm listening on {addr}/p2p/{}", info.peer_id);
    }
    if let Some(addr) = registry {
        outln!("Registry listening on {addr}");
    }
    outln!("Daemon is ready");
    Ok(())
}

/// Serves one CLI connection: one request line, then progress lines and one answer. The work
/// stops when the CLI goes away (Ctrl-C); past [`MAX_CONTROL_CONNECTIONS`] requests at work,
/// new ones are told the daemon is busy rather than queued.
async fn serve(
    ctx: Arc<Context>,
    node: Option<Arc<Node>>,
    slots: Arc<tokio::sync::Semaphore>,
    stream: UnixStream,
) {
    let (read, mut write) = stream.into_split();
    // One bounded line within a bounded time: a stuck or hostile client costs one task briefly.
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_LINE));
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0 && line.ends_with('\n')) {
        let message = "bad request: expected one line of JSON (UTF-8, at most 64 KiB)";
        send(
            &mut write,
            &Reply::Error {
                message: message.into(),
            },
        )
        .await;
        return;
    }
    let Ok(slot) = slots.try_acquire_owned() else {
        let message = format!("the daemon is busy ({MAX_CONTROL_CONNECTIONS} requests at work)");
        send(&mut write, &Reply::Error { message }).await;
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let work = tokio::spawn(async move {
        let result = handle(&ctx, node.as_deref(), &line, tx.clone()).await;
        let last = result.unwrap_or_else(|e| Reply::Error {
            message: format!("{e:#}"),
        });
        let _ = tx.send(last);
        drop(slot);
    });
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            reply = rx.recv() => {
                let Some(reply) = reply else { break };
                let last = !matches!(reply, Reply::Progress { .. });
                if !send(&mut write, &reply).await {
                    work.abort();
                    break;
                }
                if last {
                    break;
                }
            }
            // The CLI sends nothing after its request: a read that ends means it went away.
            _ = reader.read(&mut probe) => {
                work.abort();
                break;
            }
        }
    }
}

/// Writes one reply line; false when the CLI is gone.
async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> bool {
    let Ok(mut bytes) = serde_json::to_vec(reply) else {
        return false;
    };
    bytes.push(b'\n');
    write.write_all(&bytes).await.is_ok()
}

async fn handle(
    ctx: &Context,
    node: Option<&Node>,
    line: &str,
    progress: mpsc::UnboundedSender<Reply>,
) -> Result<Reply> {
    let request: Request = serde_json::from_str(line).context("bad request")?;
    // What a request fetches is named only when it ends; the lease guards it until then.
    let _lease = ctx.store.lease().context("lease the store")?;
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
            let fetch = fetch_blob(
                node.bitswap(),
                &ctx.store,
                cid,
                None,
                u64::MAX,
                timeout,
                &|_| {},
            );
            let (digest, _) = node.routed(fetch).await?;
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
        Request::PullIpfs {
            cid,
            timeout_ms,
            platform,
            all_platforms,
            lazy,
        } => {
            let Some(node) = node else {
                bail!("the daemon is offline")
            };
            let cid: cid::Cid = cid.parse().with_context(|| format!("bad CID {cid}"))?;
            let lines = ProgressLines::new(move |line| {
                let _ = progress.send(Reply::Progress { line });
            });
            let timeout = Duration::from_millis(timeout_ms);
            let platform = match platform {
                Some(p) => crate::images::parse_platform(&p)?,
                None => Platform::host(),
            };
            let leave_out = move |l: &Descriptor| lazy && crate::lazy::is_lazy(l);
            let pull = pull_image_leaving(
                node.bitswap(),
                &ctx.store,
                cid,
                (!all_platforms).then_some(&platform),
                timeout,
                &lines,
                &leave_out,
            );
            node.routed(pull).await?;
            // Pulled images are pinned: this node now serves them too.
            provide(ctx, node, vec![cid]).await?;
            Ok(Reply::Done)
        }
        Request::MountLazy {
            layer,
            mountpoint,
            timeout_ms,
        } => {
            let Some(node) = node else {
                bail!("the daemon is offline")
            };
            let lazy = crate::lazy::lazy_dir(&ctx.root);
            let inside = mountpoint.starts_with(&lazy)
                && mountpoint
                    .components()
                    .all(|c| !matches!(c, std::path::Component::ParentDir));
            if !inside {
                bail!(
                    "lazy mount point {} is not under {}",
                    mountpoint.display(),
                    lazy.display()
                );
            }
            crate::lazy::serve_layer(
                &ctx.root,
                &ctx.store,
                node.bitswap().clone(),
                &layer,
                &mountpoint,
                Duration::from_millis(timeout_ms),
            )
            .await?;
            Ok(Reply::Done)
        }
        Request::BitswapStats => {
            let Some(node) = node else {
                bail!("the daemon is offline")
            };
            let stats = node.bitswap().stats();
            Ok(Reply::BitswapStats {
                blocks_received: stats.blocks_received,
                data_received: stats.bytes_received,
                blocks_sent: stats.blocks_sent,
                data_sent: stats.bytes_sent,
                dup_blocks_received: stats.duplicate_blocks,
                wantlist: node
                    .bitswap()
                    .wantlist()
                    .iter()
                    .map(Cid::to_string)
                    .collect(),
                partners: node
                    .bitswap()
                    .peers()
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
            })
        }
        Request::Provide { cids } => {
            let Some(node) = node else {
                // Announced at the next online start, with every other pin.
                return Ok(Reply::Done);
            };
            let cids = cids
                .iter()
                .map(|c| c.parse().with_context(|| format!("bad CID {c}")))
                .collect::<Result<Vec<Cid>>>()?;
            provide(ctx, node, cids).await?;
            Ok(Reply::Done)
        }
    }
}

/// Announces `cids` and the roots they refer to.
async fn provide(ctx: &Context, node: &Node, cids: Vec<Cid>) -> Result<()> {
    let store = ctx.store.clone();
    let roots = tokio::task::spawn_blocking(move || referenced_roots(&store, &cids)).await?;
    node.provide(roots).await?;
    Ok(())
}

/// `addr` ending in `/p2p/PEER`, as kubo prints peers.
fn with_peer(addr: &libp2p::Multiaddr, peer: &libp2p::PeerId) -> String {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(_)) => addr.to_string(),
        _ => format!("{addr}/p2p/{peer}"),
    }
}
