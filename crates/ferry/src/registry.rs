//! `ferry ipfs registry`: the read-only OCI registry endpoint for IPFS images
//! (`localhost:5050/ipfs/CID`), with nerdctl's flags and environment names
//! (reference/nerdctl-ipfs.md 3).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use ferry_distribution::server::{self, Backend, KuboSource, ServerConfig};
use ferry_ipfs::{BlockSource, Node, ReadOptions};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;

use crate::cli::parse_duration;
use crate::context::Context;

/// What `--read-timeout 0` (nerdctl's "no timeout") waits for one block: long, but bounded.
const NO_TIMEOUT: Duration = Duration::from_secs(3600);

/// `ferry ipfs registry`.
#[derive(Args)]
pub struct RegistryArgs {
    /// The registry command.
    #[command(subcommand)]
    pub command: RegistryCommand,
}

/// Registry commands.
#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Serve IPFS images to registry clients (docker, containerd, buildah, skopeo) as
    /// HOST:PORT/ipfs/CID, read-only, over plain HTTP.
    Serve(ServeArgs),
    /// Print the containerd hosts.toml that makes containerd pull from the endpoint over plain
    /// HTTP.
    HostsToml(HostsTomlArgs),
}

/// `ferry ipfs registry serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(
        long,
        alias = "listen-registry",
        env = "IPFS_REGISTRY_SERVE_LISTEN_REGISTRY",
        default_value = "localhost:5050",
        value_name = "HOST:PORT"
    )]
    pub listen: String,
    /// Read blocks from this kubo daemon's RPC API (a multiaddr, /ip4/127.0.0.1/tcp/5001)
    /// instead of the embedded node.
    #[arg(
        long,
        env = "IPFS_REGISTRY_SERVE_IPFS_ADDRESS",
        value_name = "MULTIADDR"
    )]
    pub ipfs_address: Option<String>,
    /// Times to ask again for a block whose read failed or timed out.
    #[arg(long, env = "IPFS_REGISTRY_SERVE_READ_RETRY_NUM", default_value_t = 0)]
    pub read_retry_num: u32,
    /// How long to wait for one block per attempt (0: nerdctl's "no timeout", here one hour).
    #[arg(
        long,
        env = "IPFS_REGISTRY_SERVE_READ_TIMEOUT",
        default_value = "3m",
        value_parser = parse_duration
    )]
    pub read_timeout: Duration,
    /// A peer to fetch from, as a multiaddr; repeatable. Added to the `peers` of
    /// ROOT/config.json. Not used with --ipfs-address.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<Multiaddr>,
    /// Join the private network of this key (kubo's swarm.key format). Default: ROOT/swarm.key
    /// if present.
    #[arg(long, value_name = "FILE")]
    pub swarm_key: Option<std::path::PathBuf>,
    /// Requests served at once; past it clients get 429 and retry.
    #[arg(long, default_value_t = 128)]
    pub max_requests: usize,
}

/// `ferry ipfs registry hosts-toml`.
#[derive(Args)]
pub struct HostsTomlArgs {
    /// The endpoint's address, as given to `serve --listen`.
    #[arg(
        long,
        env = "IPFS_REGISTRY_SERVE_LISTEN_REGISTRY",
        default_value = "localhost:5050",
        value_name = "HOST:PORT"
    )]
    pub listen: String,
}

/// Runs a registry command.
pub async fn registry(ctx: &Context, args: RegistryArgs) -> Result<()> {
    match args.command {
        RegistryCommand::Serve(args) => serve(ctx, args).await,
        RegistryCommand::HostsToml(args) => {
            print!("{}", server::hosts_toml(&args.listen));
            Ok(())
        }
    }
}

async fn serve(ctx: &Context, args: ServeArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let (source, node) = block_source(ctx, &args).await?;
    let timeout = match args.read_timeout {
        Duration::ZERO => NO_TIMEOUT,
        t => t,
    };
    let config = ServerConfig {
        read: ReadOptions {
            timeout,
            retries: args.read_retry_num,
        },
        max_requests: args.max_requests,
        ..ServerConfig::default()
    };
    outln!("Registry listening on {addr}");
    let backend = Backend::new(ctx.store.clone(), source);
    let result = server::serve(listener, backend, config, shutdown_signal()).await;
    if let Some(node) = node {
        node.shutdown().await;
    }
    result.with_context(|| format!("serve on {addr}"))
}

/// The kubo API when `--ipfs-address` names one, else a client-only embedded node with the
/// configured peers and `--peer` (a fresh identity, as other CLI commands use).
async fn block_source(
    ctx: &Context,
    args: &ServeArgs,
) -> Result<(Arc<dyn BlockSource>, Option<Node>)> {
    if let Some(address) = &args.ipfs_address {
        let kubo = KuboSource::new(address).map_err(anyhow::Error::msg)?;
        return Ok((Arc::new(kubo), None));
    }
    let mut config = crate::network::node_config(ctx, args.swarm_key.as_deref())?;
    config.listen.clear();
    config.mdns = false;
    config.peers.extend(args.peers.iter().cloned());
    let node = Node::start(Keypair::generate_ed25519(), ctx.store.clone(), &config).await?;
    if !config.peers.is_empty() && node.wait_for_peers(Duration::from_secs(10)).await == 0 {
        tracing::warn!("no peer connected yet; images not stored here cannot be served");
    }
    Ok((Arc::new(node.bitswap().clone()), Some(node)))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
