//! One function per command.

use anyhow::{anyhow, bail, Context as _, Result};
use ferry_content::Store;
use ferry_distribution::{load_archive, PlatformChoice, PullEvent, PullOptions};
use ferry_oci::{media, Descriptor, ImageConfig, Index, Manifest, Platform, Reference};
use ferry_unixfs::Profile;

use crate::cli::{
    Cli, Command, ImageCommand, ImagesArgs, IpfsCommand, LoadArgs, PullArgs, PushArgs,
};
use crate::context::Context;
use crate::control::{self, Reply, Request};
use crate::output::{ago, human_size};
use crate::progress::{Mode, Progress, State};

/// Runs the command; returns the process's exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    let ctx = Context::open(cli.root)?;
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    // Commands that add content hold a lease, so the garbage collector leaves alone what
    // they wrote before they name it (`run` takes its own, released once the rootfs is up).
    let adds_content = match &cli.command {
        Command::Load(_) | Command::Pull(_) | Command::Push(_) | Command::Tag(_) => true,
        Command::Ipfs(ipfs) => matches!(ipfs.command, IpfsCommand::Add(_) | IpfsCommand::Cat(_)),
        _ => false,
    };
    let _lease = match adds_content {
        true => Some(ctx.store.lease().context("lease the store")?),
        false => None,
    };
    match cli.command {
        Command::Load(args) => load(&ctx, &args).map(|_| 0),
        Command::Save(args) => crate::images::save(&ctx, &args).map(|_| 0),
        Command::Pull(args) => runtime.block_on(pull(&ctx, &args)).map(|_| 0),
        Command::Push(args) => runtime.block_on(push(&ctx, &args)).map(|_| 0),
        Command::Tag(args) => runtime.block_on(crate::images::tag(&ctx, &args)).map(|_| 0),
        Command::Images(args) => images(&ctx, &args).map(|_| 0),
        Command::Rmi(args) => crate::prune::rmi(&ctx, &args).map(|_| 0),
        Command::Image(image) => match image.command {
            ImageCommand::Inspect(args) => crate::inspect::inspect(&ctx, &args).map(|_| 0),
            ImageCommand::Prune(args) => crate::prune::prune(&ctx, &args).map(|_| 0),
            ImageCommand::Rm(args) => crate::prune::rmi(&ctx, &args).map(|_| 0),
            ImageCommand::Ls(args) => images(&ctx, &args).map(|_| 0),
            ImageCommand::Save(args) => crate::images::save(&ctx, &args).map(|_| 0),
            ImageCommand::Convert(args) => {
                let _lease = ctx.store.lease().context("lease the store")?;
                runtime
                    .block_on(crate::estargz::convert(&ctx, &args))
                    .map(|_| 0)
            }
            ImageCommand::Crypt(command) => {
                crate::crypt::image(&ctx, crate::crypt::ImageArgs { command }).map(|_| 0)
            }
        },
        Command::Run(args) => runtime.block_on(crate::run::run(&ctx, *args)),
        Command::Ps(args) => crate::lifecycle::ps(&ctx.root, &args).map(|_| 0),
        Command::Logs(args) => crate::lifecycle::logs(&ctx.root, &args).map(|_| 0),
        Command::Stop(args) => crate::lifecycle::stop(&ctx.root, &args).map(|_| 0),
        Command::Kill(args) => crate::lifecycle::kill(&ctx.root, &args).map(|_| 0),
        Command::Start(args) => crate::lifecycle::start(&ctx.root, &args).map(|_| 0),
        Command::Rm(args) => crate::lifecycle::rm(&ctx.root, &args).map(|_| 0),
        Command::Wait(args) => crate::lifecycle::wait(&ctx.root, &args).map(|_| 0),
        Command::Inspect(args) => crate::lifecycle::inspect(&ctx.root, &args).map(|_| 0),
        Command::Exec(args) => crate::lifecycle::exec(&ctx.root, &args),
        Command::Login(args) => runtime
            .block_on(crate::login::login(&ctx, &args))
            .map(|_| 0),
        Command::Logout(args) => crate::login::logout(&args).map(|_| 0),
        Command::Commit(args) => crate::commit::commit(&ctx, &args).map(|_| 0),
        Command::ContainerShim(args) => crate::shim::shim(&ctx.root, &args),
        Command::Daemon(args) => runtime
            .block_on(crate::daemon::daemon(&ctx, args))
            .map(|_| 0),
        Command::Ipfs(ipfs) => match ipfs.command {
            IpfsCommand::Daemon(args) => runtime
                .block_on(crate::daemon::daemon(&ctx, args))
                .map(|_| 0),
            IpfsCommand::Id => runtime.block_on(id(&ctx)).map(|_| 0),
            IpfsCommand::Add(args) => crate::ipfs::add(&ctx, &args).map(|_| 0),
            IpfsCommand::Cat(args) => runtime.block_on(crate::ipfs::cat(&ctx, &args)).map(|_| 0),
            IpfsCommand::Swarm(args) => runtime
                .block_on(crate::ipfs::swarm(&ctx, args.command))
                .map(|_| 0),
            IpfsCommand::Registry(args) => runtime
                .block_on(crate::registry::registry(&ctx, args))
                .map(|_| 0),
            IpfsCommand::Stats(args) => runtime
                .block_on(crate::ipfs::stats(&ctx, args.command))
                .map(|_| 0),
        },
    }
}

fn load(ctx: &Context, args: &LoadArgs) -> Result<()> {
    // `docker load` reads stdin when no file is named; keep a copy on the store's filesystem
    // so the loader can move blobs out of it.
    let stdin_copy;
    let (path, shown) = match args.input.as_deref() {
        Some(p) if p != std::path::Path::new("-") => (p, p.display().to_string()),
        _ => {
            stdin_copy = ctx.store.scratch_file()?;
            let mut out = stdin_copy.as_file();
            std::io::copy(&mut std::io::stdin().lock(), &mut out).context("read stdin")?;
            (stdin_copy.path(), "stdin".to_string())
        }
    };
    // errors name the archive as the user gave it, not the scratch copy of stdin
    let loaded = load_archive(&ctx.store, path)
        .map_err(|e| anyhow::anyhow!(e.to_string().replace(&path.display().to_string(), &shown)))?;
    if loaded.is_empty() {
        anyhow::bail!("load {shown}: the archive holds no image");
    }
    for image in loaded {
        match image.name {
            Some(name) => outln!("Loaded image: {name}"),
            None => {
                // An archive entry without a name is kept under its digest, as docker keeps
                // an untagged image under its ID.
                let name = image.target.digest.to_string();
                ctx.store.put_image(&name, &image.target)?;
                outln!("Loaded image ID: {name}");
            }
        }
    }
    Ok(())
}

async fn pull(ctx: &Context, args: &PullArgs) -> Result<()> {
    let reference: Reference = args.image.parse()?;
    let name = reference.image_name();
    let platform = match (&args.platform, args.all_platforms) {
        (Some(_), true) => bail!("--platform and --all-platforms exclude each other"),
        (Some(p), false) => crate::images::parse_platform(p)?,
        (None, _) => Platform::host(),
    };
    match &reference {
        Reference::Ipfs(cid) => {
            let only = (!args.all_platforms).then_some(&platform);
            crate::network::pull_ipfs_platform(ctx, *cid, &args.net, args.quiet, only)
                .await
                .with_context(|| format!("pull {cid}"))?;
        }
        Reference::Registry { .. } => {
            let opts = PullOptions {
                platform,
                all_platforms: args.all_platforms,
                insecure_registries: args.insecure_registries.clone(),
                auth: crate::auth::credentials(&reference)?,
                ca_certs: crate::auth::ca_certs_for(&reference, &args.ca_cert, &ctx.root)?,
                leave_out_estargz: false,
            };
            pull_registry(&ctx.store, &reference, &opts, args.quiet).await?;
        }
    }
    if args.unpack == Some(true) {
        unpack(ctx, &name, &args.key).with_context(|| format!("unpack {name}"))?;
    }
    outln!("{name}");
    Ok(())
}

/// `pull --unpack`: the image's snapshots, made under a store lease.
fn unpack(ctx: &Context, name: &str, keys: &[ferry_crypt::KeySpec]) -> Result<()> {
    let _lease = ctx.store.lease().context("lease the store")?;
    let image = find_image(&ctx.store, name)?;
    let snapshotter = ferry_snapshot::Snapshotter::new(ctx.root.join("snapshots"))
        .map_err(|e| anyhow::anyhow!(e))?;
    let (_, snapshots) = crate::run::unpack(&ctx.root, &ctx.store, &snapshotter, &image, keys)?;
    tracing::info!(image = name, layers = snapshots.len(), "unpacked");
    Ok(())
}

/// Pulls a registry image, printing a line per blob unless `quiet`.
pub async fn pull_registry(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    quiet: bool,
) -> Result<Descriptor> {
    let display = Progress::new(Mode::detect(quiet));
    let progress = |event: PullEvent| match event {
        PullEvent::Resolved { digest } => display.note(&format!("{reference}: resolved {digest}")),
        PullEvent::BlobStarted { digest, size } => display.state(&digest, size, State::Downloading),
        PullEvent::BlobProgress { digest, received } => display.bytes(&digest, received),
        PullEvent::BlobDone {
            digest,
            size,
            cached,
        } => {
            let state = match cached {
                true => State::AlreadyExists,
                false => State::PullComplete,
            };
            display.state(&digest, size, state)
        }
    };
    let pulled = ferry_distribution::pull(store, reference, opts, &progress).await;
    display.finish();
    Ok(pulled?)
}

async fn push(ctx: &Context, args: &PushArgs) -> Result<()> {
    let Some(name) = args.target.strip_prefix("ipfs://") else {
        return crate::images::push_registry(ctx, args).await;
    };
    let image = find_image(&ctx.store, name)?;
    let store = ctx.store.clone();
    let image_name = image.name.clone();
    let target = image.target.clone();
    let platform =
        match crate::images::platform_choice(args.platform.as_deref(), args.all_platforms)? {
            PlatformChoice::All => None,
            PlatformChoice::One(p) => Some(p),
            PlatformChoice::Default => Some(Platform::host()),
        };
    let target = match args.compression {
        Some(compression) => {
            crate::images::recompress(ctx, &target, compression, platform.clone()).await?
        }
        None => target,
    };
    let target =
        crate::estargz::for_push(ctx, target, &args.estargz, platform.clone(), args.quiet).await?;
    let started = std::time::Instant::now();
    let display = std::sync::Arc::new(Progress::new(Mode::detect(args.quiet)));
    let shown = display.clone();
    let pushed = tokio::task::spawn_blocking(move || {
        let progress = |desc: &Descriptor, done: bool| {
            let state = if done { State::Pushed } else { State::Pushing };
            shown.state(&desc.digest, desc.size, state)
        };
        ferry_convert::ipfs::push_image(
            &store,
            &image_name,
            &target,
            platform.as_ref(),
            Profile::KUBO_V1,
            &progress,
        )
    })
    .await?;
    display.finish();
    let cid = pushed.with_context(|| format!("push {}", image.name))?;
    crate::network::announce(ctx, &[cid]);
    if !args.quiet {
        eprintln!(
            "{}: pushed to IPFS in {:.1}s",
            image.name,
            started.elapsed().as_secs_f64()
        );
    }
    outln!("{cid}");
    Ok(())
}

/// Finds a local image by what the user typed: a reference (normalised as Docker does), a name
/// as stored, or its digest or a prefix of the digest's hex (at least 12 digits, as docker IDs).
pub fn find_image(store: &Store, text: &str) -> Result<ferry_content::ImageRecord> {
    let reference = text.parse::<Reference>().ok();
    let normalised = reference.map(|r| r.image_name());
    for name in normalised.iter().map(String::as_str).chain([text]) {
        if let Some(image) = store.get_image(name)? {
            return Ok(image);
        }
    }
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let matches: Vec<_> = store
            .list_images()?
            .into_iter()
            .filter(|i| i.target.digest.hex().starts_with(hex))
            .collect();
        if let Some(first) = matches.first() {
            if matches
                .iter()
                .all(|m| m.target.digest == first.target.digest)
            {
                return Ok(first.clone());
            }
            bail!(
                "image ID {text} is ambiguous: {} images match",
                matches.len()
            );
        }
    }
    if let Err(e) = text.parse::<Reference>() {
        return Err(e.into());
    }
    Err(anyhow!("image {text} not found (see `ferry images`)"))
}

/// The manifest for `platform` of the image whose top descriptor is `target`.
pub fn resolve_manifest(
    store: &Store,
    target: &Descriptor,
    platform: &Platform,
) -> Result<Manifest> {
    let mut desc = target.clone();
    if media::is_index(&desc.media_type) {
        let index: Index = serde_json::from_slice(&store.read_blob(&desc.digest)?)
            .with_context(|| format!("index {}", desc.digest))?;
        desc = index
            .manifests
            .into_iter()
            .find(|m| m.platform.as_ref().is_none_or(|p| p.matches(platform)))
            .ok_or_else(|| anyhow!("image has no manifest for {platform}"))?;
    }
    if !media::is_manifest(&desc.media_type) {
        bail!(
            "{} is not an image manifest ({})",
            desc.digest,
            desc.media_type
        );
    }
    serde_json::from_slice(&store.read_blob(&desc.digest)?)
        .with_context(|| format!("manifest {}", desc.digest))
}

fn images(ctx: &Context, args: &ImagesArgs) -> Result<()> {
    if args.quiet || args.digests || args.format != "table" {
        return crate::inspect::images(ctx, args);
    }
    let images = ctx.store.list_images()?;
    let now = chrono::Utc::now();
    let mut rows = vec![["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"].map(String::from)];
    for image in images {
        let (created, size) = match summary(&ctx.store, &image.target) {
            Some((created, size)) => (
                created.map_or("-".into(), |c| ago((now - c).num_seconds())),
                human_size(size),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        let (repository, tag) = split_name(&image.name);
        rows.push([repository, tag, image.target.digest.short(), created, size]);
    }
    print_table(&rows);
    Ok(())
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); a CID or a digest has no tag.
pub fn split_name(name: &str) -> (String, String) {
    if name.starts_with("sha256:") {
        return ("<none>".into(), "<none>".into());
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (
            name[..last_slash + i].to_string(),
            name[last_slash + i + 1..].to_string(),
        ),
        None => (name.to_string(), "<none>".into()),
    }
}

/// Columns padded to their widest cell, three spaces apart, as docker prints tables.
pub fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        outln!("{}", cells.join("   ").trim_end());
    }
}

/// Creation time and size (config and layers, as stored) for the host platform.
pub fn summary(
    store: &Store,
    target: &Descriptor,
) -> Option<(Option<chrono::DateTime<chrono::Utc>>, u64)> {
    let manifest = resolve_manifest(store, target, &Platform::host()).ok()?;
    let config: ImageConfig =
        serde_json::from_slice(&store.read_blob(&manifest.config.digest).ok()?).ok()?;
    let created = config
        .created
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(&c).ok())
        .map(|c| c.with_timezone(&chrono::Utc));
    let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
    Some((created, size))
}

async fn id(ctx: &Context) -> Result<()> {
    let (peer_id, addrs) = match control::connect(&ctx.socket_path()).await {
        Some(stream) => match control::call(stream, &Request::Id, |_| {}).await? {
            Reply::Id { peer_id, addrs } => (peer_id, addrs),
            _ => bail!("unexpected answer from the daemon"),
        },
        None => {
            let key = ferry_ipfs::load_or_create_identity(&ctx.root.join("identity.key"))?;
            (key.public().to_peer_id().to_string(), Vec::new())
        }
    };
    let addrs: Vec<String> = addrs
        .into_iter()
        .map(|a| format!("{a}/p2p/{peer_id}"))
        .collect();
    let json = serde_json::json!({
        "ID": peer_id,
        "Addresses": addrs,
        "AgentVersion": format!("ferry/{}", env!("CARGO_PKG_VERSION")),
    });
    outln!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
