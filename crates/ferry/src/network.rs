//! Network work of the CLI: sent to the daemon of this root when one runs, else done by a
//! node started in this process for the duration of the command (with a fresh identity, so it
//! never poses as the daemon's peer).

use anyhow::{anyhow, Context as _, Result};
use cid::Cid;
use ferry_convert::ipfs::pull_image;
use ferry_ipfs::Node;
use ferry_oci::{Descriptor, Platform};
use libp2p::identity::Keypair;

use crate::cli::NetArgs;
use crate::context::Context;
use crate::control::{self, Reply, Request};
use crate::output::ProgressLines;

/// Pulls the IPFS image `cid` into the store and returns its top descriptor.
pub async fn pull_ipfs(ctx: &Context, cid: Cid, net: &NetArgs, quiet: bool) -> Result<Descriptor> {
    let show = |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    if let Some(stream) = control::connect(&ctx.socket_path()).await {
        let request = Request::PullIpfs {
            cid: cid.to_string(),
            timeout_ms: net.timeout.as_millis() as u64,
        };
        control::call(stream, &request, |reply| {
            if let Reply::Progress { line } = reply {
                show(line.clone());
            }
        })
        .await?;
        let image = ctx.store.get_image(&cid.to_string())?;
        return image
            .map(|i| i.target)
            .ok_or_else(|| anyhow!("the daemon pulled {cid} but it is not in the store"));
    }

    let mut config = ctx.node_config()?;
    config.listen.clear();
    config.peers.extend(net.peers.iter().cloned());
    let dialed = config.peers.len();
    let node = Node::start(Keypair::generate_ed25519(), ctx.store.clone(), &config)
        .await
        .context("start ipfs node")?;
    let progress = ProgressLines::new(show);
    let result = pull_image(
        node.bitswap(),
        &ctx.store,
        cid,
        &Platform::host(),
        net.timeout,
        &progress,
    )
    .await;
    let connected = node.bitswap().peers().len();
    node.shutdown().await;
    match result {
        Ok(top) => Ok(top),
        Err(e) if connected == 0 => Err(anyhow!(e).context(format!(
            "no peer connected (dialed {dialed} address(es); name peers with --peer or in ROOT/config.json, or start `ferry daemon`)"
        ))),
        Err(e) => Err(e.into()),
    }
}
