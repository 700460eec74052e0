//! `ferry ipfs add`, `cat` and `swarm`: plain IPFS files and peers, in kubo's words.

use std::io::Write;

use anyhow::{bail, Context as _, Result};
use ferry_unixfs::Profile;

use crate::cli::{AddArgs, CatArgs, SwarmCommand};
use crate::context::Context;
use crate::control::{Reply, Request};
use crate::network::{daemon_call, fetch_file};

/// Adds a file (one pass: stored once as a blob, chunks hashed on the way) and pins it.
pub fn add(ctx: &Context, args: &AddArgs) -> Result<()> {
    let path = &args.file;
    let file = std::fs::File::open(path).with_context(|| format!("add {}", path.display()))?;
    let is_file = file.metadata().is_ok_and(|m| m.is_file());
    let added = match is_file {
        true => ferry_ipfs::add_file(&ctx.store, path, Profile::KUBO_V1),
        // pipes and devices can be read only once: import while storing
        false => {
            ferry_ipfs::add_reader(&ctx.store, std::io::BufReader::new(file), Profile::KUBO_V1)
        }
    };
    let (cid, _digest) = added.with_context(|| format!("add {}", path.display()))?;
    let name = path
        .file_name()
        .map_or_else(|| cid.to_string(), |n| n.to_string_lossy().into_owned());
    ctx.store.pin(&cid, &name)?;
    crate::network::announce(ctx, &[cid]);
    if args.quiet {
        outln!("{cid}");
    } else {
        outln!("added {cid} {name}");
    }
    Ok(())
}

/// Writes the file's bytes to stdout.
pub async fn cat(ctx: &Context, args: &CatArgs) -> Result<()> {
    let cid: cid::Cid = args
        .cid
        .parse()
        .with_context(|| format!("invalid CID {:?}", args.cid))?;
    let digest = fetch_file(ctx, cid, &args.net)
        .await
        .with_context(|| format!("cat {cid}"))?;
    let mut blob = ctx.store.open_blob(&digest)?;
    let mut stdout = std::io::stdout().lock();
    match std::io::copy(&mut blob, &mut stdout).and_then(|_| stdout.flush()) {
        Ok(()) => Ok(()),
        // `ferry ipfs cat X | head` closes the pipe early; that is not an error
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("write to stdout"),
    }
}

/// Lists or dials peers through the daemon.
pub async fn swarm(ctx: &Context, command: SwarmCommand) -> Result<()> {
    let request = match &command {
        SwarmCommand::Peers => Request::SwarmPeers,
        SwarmCommand::Connect { addr } => Request::SwarmConnect {
            addr: addr.to_string(),
        },
    };
    let Some(reply) = daemon_call(ctx, &request, &|_| {}).await? else {
        bail!(
            "no daemon is running on {}: start `ferry daemon`",
            ctx.root.display()
        );
    };
    match (command, reply) {
        (SwarmCommand::Peers, Reply::Peers { addrs }) => addrs.iter().for_each(|a| outln!("{a}")),
        (SwarmCommand::Connect { addr }, Reply::Done) => outln!("connect {addr} success"),
        _ => bail!("unexpected answer from the daemon"),
    }
    Ok(())
}

/// Prints the daemon's counters.
pub async fn stats(ctx: &Context, command: crate::cli::StatsCommand) -> Result<()> {
    let crate::cli::StatsCommand::Bitswap { verbose } = command;
    let Some(reply) = daemon_call(ctx, &Request::BitswapStats, &|_| {}).await? else {
        bail!(
            "no daemon is running on {}: the counters are the daemon's (start `ferry daemon`)",
            ctx.root.display()
        );
    };
    let Reply::BitswapStats {
        blocks_received,
        data_received,
        blocks_sent,
        data_sent,
        dup_blocks_received,
        mut wantlist,
        partners,
    } = reply
    else {
        bail!("unexpected answer from the daemon");
    };
    outln!("bitswap status");
    outln!("\tblocks received: {blocks_received}");
    outln!("\tblocks sent: {blocks_sent}");
    outln!("\tdata received: {data_received}");
    outln!("\tdata sent: {data_sent}");
    outln!("\tdup blocks received: {dup_blocks_received}");
    wantlist.sort();
    outln!("\twantlist [{} keys]", wantlist.len());
    for cid in &wantlist {
        outln!("\t\t{cid}");
    }
    outln!("\tpartners [{}]", partners.len());
    if verbose {
        for peer in &partners {
            outln!("\t\t{peer}");
        }
    }
    Ok(())
}
