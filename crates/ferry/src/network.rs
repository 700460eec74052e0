//! Network work of the CLI: sent to the daemon of this root when one runs, else done by a
//! node started in this process for the duration of the command (with a fresh identity, so it
//! never poses as the daemon's peer).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use cid::Cid;
use ferry_convert::ipfs::pull_image;
use ferry_ipfs::{fetch_blob, Node, NodeConfig, SwarmKey};
use ferry_oci::{Descriptor, Digest, Platform};
use libp2p::identity::Keypair;

use crate::cli::NetArgs;
use crate::context::Context;
use crate::control::{self, Reply, Request};
use crate::progress::{Mode, Progress};

/// Pulls the IPFS image `cid` (the host's platform of it) into the store and returns its top
/// descriptor.
pub async fn pull_ipfs(ctx: &Context, cid: Cid, net: &NetArgs, quiet: bool) -> Result<Descriptor> {
    pull_ipfs_platform(ctx, cid, net, quiet, Some(&Platform::host())).await
}

/// [`pull_ipfs`] for `platform`'s manifest of an index, or every manifest with `None`.
pub async fn pull_ipfs_platform(
    ctx: &Context,
    cid: Cid,
    net: &NetArgs,
    quiet: bool,
    platform: Option<&Platform>,
) -> Result<Descriptor> {
    let show = move |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let request = Request::PullIpfs {
        cid: cid.to_string(),
        timeout_ms: timeout_ms(net),
        platform: platform.map(Platform::to_string),
        all_platforms: platform.is_none(),
        lazy: false,
    };
    if daemon_request(ctx, net, &request, &show).await?.is_some() {
        let image = ctx.store.get_image(&cid.to_string())?;
        return image
            .map(|i| i.target)
            .ok_or_else(|| anyhow!("the daemon pulled {cid} but it is not in the store"));
    }
    let (node, dialed) = start_node(ctx, net).await?;
    let progress = Progress::new(Mode::detect(quiet));
    let pull = pull_image(
        node.bitswap(),
        &ctx.store,
        cid,
        platform,
        block_timeout(net, dialed),
        &progress,
    );
    let result = while_a_peer_may_come(&node, dialed, net, node.routed(pull)).await;
    progress.finish();
    finish(node, dialed, result).await
}

/// Pulls the IPFS image `cid` for `ferry run --snapshotter stargz`: everything but its eStargz
/// layers, which are read lazily. Through the daemon when one runs (then None: the daemon
/// serves the lazy layers), else with a node of this process, returned running so that it
/// serves them while the container runs.
pub async fn pull_ipfs_lazy(
    ctx: &Context,
    cid: Option<Cid>,
    net: &NetArgs,
) -> Result<Option<Node>> {
    let show = |line: String| eprintln!("{line}");
    if let Some(cid) = cid {
        let request = Request::PullIpfs {
            cid: cid.to_string(),
            timeout_ms: timeout_ms(net),
            platform: Some(Platform::host().to_string()),
            all_platforms: false,
            lazy: true,
        };
        if daemon_request(ctx, net, &request, &show).await?.is_some() {
            return Ok(None);
        }
    } else if control::connect(&ctx.socket_path()).await.is_some() {
        return Ok(None);
    }
    let (node, dialed) = start_node(ctx, net).await?;
    let Some(cid) = cid else {
        return Ok(Some(node));
    };
    let progress = Progress::new(Mode::detect(false));
    let leave_out = |l: &Descriptor| crate::lazy::is_lazy(l);
    let host = Platform::host();
    let pull = ferry_convert::ipfs::pull_image_leaving(
        node.bitswap(),
        &ctx.store,
        cid,
        Some(&host),
        block_timeout(net, dialed),
        &progress,
        &leave_out,
    );
    let result = while_a_peer_may_come(&node, dialed, net, node.routed(pull)).await;
    progress.finish();
    match result {
        Ok(_) => Ok(Some(node)),
        Err(e) => finish(node, dialed, Err(e)).await,
    }
}

/// Fetches the UnixFS file `cid` into the store (as a blob whose blocks this node then serves)
/// and returns the blob's digest.
pub async fn fetch_file(ctx: &Context, cid: Cid, net: &NetArgs) -> Result<Digest> {
    let request = Request::Fetch {
        cid: cid.to_string(),
        timeout_ms: timeout_ms(net),
    };
    if let Some(reply) = daemon_request(ctx, net, &request, &|_| {}).await? {
        let Reply::Fetched { digest } = reply else {
            bail!("unexpected answer from the daemon")
        };
        return Ok(digest.parse()?);
    }
    let (node, dialed) = start_node(ctx, net).await?;
    let fetch = fetch_blob(
        node.bitswap(),
        &ctx.store,
        cid,
        None,
        u64::MAX,
        block_timeout(net, dialed),
        &|_| {},
    );
    let result = while_a_peer_may_come(&node, dialed, net, node.routed(fetch))
        .await
        .map(|(digest, _)| digest);
    finish(node, dialed, result).await
}

/// Has the daemon of this root announce `cids` (and the roots they refer to) in the DHT. With
/// no daemon running there is nothing to do now: a daemon announces every pin when it starts.
/// A failure is only a warning: the content is stored and pinned either way.
pub fn announce(ctx: &Context, cids: &[Cid]) {
    let request = Request::Provide {
        cids: cids.iter().map(Cid::to_string).collect(),
    };
    // Callers are sync (`ipfs add`) or inside the runtime (`push`): a thread of its own with
    // a small runtime serves both.
    let result = std::thread::scope(|scope| {
        let call = scope.spawn(|| -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(daemon_call(ctx, &request, &|_| {}))?;
            Ok(())
        });
        call.join()
            .unwrap_or_else(|_| Err(anyhow!("announce thread panicked")))
    });
    if let Err(e) = result {
        eprintln!("ferry: warning: announce to the DHT through the daemon: {e:#}");
    }
}

/// The node settings of ROOT/config.json, with the private network key of `swarm_key`, else
/// of ROOT/swarm.key when that file exists.
pub fn node_config(ctx: &Context, swarm_key: Option<&Path>) -> Result<NodeConfig> {
    let mut config = ctx.node_config()?;
    let default_key = ctx.root.join("swarm.key");
    let path = swarm_key.or_else(|| default_key.exists().then_some(default_key.as_path()));
    if let Some(path) = path {
        let key = SwarmKey::read(path)?;
        tracing::info!(fingerprint = %key.fingerprint(), "private network");
        config.swarm_key = Some(key);
    }
    Ok(config)
}

/// Sends `request` to the daemon of this root, after asking it to dial the command's `--peer`
/// addresses (it does not know them otherwise); None when no daemon runs.
async fn daemon_request(
    ctx: &Context,
    net: &NetArgs,
    request: &Request,
    show: &(dyn Fn(String) + Sync),
) -> Result<Option<Reply>> {
    for addr in &net.peers {
        let connect = Request::SwarmConnect {
            addr: addr.to_string(),
        };
        match daemon_call(ctx, &connect, show).await {
            Ok(None) => return Ok(None),
            Ok(Some(_)) => {}
            Err(e) => eprintln!("ferry: warning: the daemon could not dial {addr}: {e:#}"),
        }
    }
    daemon_call(ctx, request, show).await
}

/// Sends `request` to the daemon of this root; None when no daemon runs.
pub async fn daemon_call(
    ctx: &Context,
    request: &Request,
    show: &(dyn Fn(String) + Sync),
) -> Result<Option<Reply>> {
    let Some(stream) = control::connect(&ctx.socket_path()).await else {
        return Ok(None);
    };
    let reply = control::call(stream, request, |reply| {
        if let Reply::Progress { line } = reply {
            show(line.clone());
        }
    })
    .await?;
    Ok(Some(reply))
}

fn timeout_ms(net: &NetArgs) -> u64 {
    net.timeout.as_millis().min(u64::MAX as u128) as u64
}

/// A client-only node for this command: no listener (so a DHT client), the configured and
/// bootstrap peers plus `--peer`, no mDNS (it lives too briefly to wait for answers).
async fn start_node(ctx: &Context, net: &NetArgs) -> Result<(Node, usize)> {
    let mut config = node_config(ctx, net.swarm_key.as_deref())?;
    config.listen.clear();
    config.mdns = false;
    config.peers.extend(net.peers.iter().cloned());
    let dialed = config.peers.len() + config.bootstrap_addrs().len();
    let node = Node::start(Keypair::generate_ed25519(), ctx.store.clone(), &config).await?;
    Ok((node, dialed))
}

/// How long to wait for a block when no peer is configured: everything must be local then.
const LOCAL_ONLY_TIMEOUT: Duration = Duration::from_millis(300);

/// The wait for any one block: the user's, or next to none when there is nobody to ask.
fn block_timeout(net: &NetArgs, dialed: usize) -> Duration {
    if dialed == 0 {
        LOCAL_ONLY_TIMEOUT
    } else {
        net.timeout
    }
}

/// How long a command's own node waits for its first peer before its fetch gives up: a dial
/// that is refused or reaches no host ends well within this, and with no peer nothing arrives.
const FIRST_PEER_WAIT: Duration = Duration::from_secs(10);

/// Runs `fetch` on a command's own node, which dialed `dialed` addresses: what is stored here
/// is read at once, but when no peer has connected after [`FIRST_PEER_WAIT`] (or the user's
/// shorter `--timeout`) the fetch gives up instead of waiting its whole block timeout.
async fn while_a_peer_may_come<T, E>(
    node: &Node,
    dialed: usize,
    net: &NetArgs,
    fetch: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T>
where
    anyhow::Error: From<E>,
{
    let wait = FIRST_PEER_WAIT.min(net.timeout);
    let no_peer = async {
        if dialed == 0 || node.wait_for_peers(wait).await > 0 {
            // the block timeout rules from here on
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = fetch => Ok(result?),
        () = no_peer => bail!("gave up after {wait:?}"),
    }
}

/// Stops the node; an error with no peer connected says so, since that is the likely cause.
async fn finish<T>(node: Node, dialed: usize, result: Result<T>) -> Result<T> {
    let connected = node.bitswap().peers().len();
    node.shutdown().await;
    match result {
        Err(_) if dialed == 0 => bail!(
            "no peers to fetch from: name one with --peer or in ROOT/config.json, or start \
             `ferry daemon` (it also finds peers with mDNS and the DHT)"
        ),
        Err(e) if connected == 0 => Err(e.context(format!(
            "no peer connected (dialed {dialed} address(es); name peers with --peer or in ROOT/config.json, or start `ferry daemon`)"
        ))),
        other => other,
    }
}
