//! `ferry run`: resolve (and pull) the image, stack its layers as overlay snapshots, write the
//! runtime bundle and run it with runc.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;
use std::process::Stdio;

use anyhow::{anyhow, bail, Context as _, Result};
use ferry_content::{ImageRecord, Store};
use ferry_distribution::PullOptions;
use ferry_oci::{ImageConfig, Platform, Reference};
use ferry_runtime::{ContainerSpec, Network, ProcessRequest, Resources, RunStdio, Runc};
use ferry_snapshot::{Snapshot, Snapshotter};

use crate::cli::{PullPolicy, RunArgs, SnapshotterKind};
use crate::commands::{find_image, pull_registry, resolve_manifest};
use crate::container::{self, sweep, ContainerDir, Lower, Record, Status};
use crate::context::Context;
use crate::lazy::{Lazy, Server};
use crate::runopts::NetMode;

/// Marks a failed run with docker's exit code for it (125: ferry failed before the command
/// ran; 126: not executable; 127: not found). Shown as "run" in the error line.
#[derive(Debug)]
pub struct RunFailed(pub i32);

impl fmt::Display for RunFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("run")
    }
}

/// Runs the container; returns its exit code.
pub async fn run(ctx: &Context, args: RunArgs) -> Result<i32> {
    if let Err(e) = check_terminal_flags(&args) {
        return Err(e.context(RunFailed(125)));
    }
    // Held until the rootfs is mounted: from then on the mount keeps the snapshots.
    let lease = ctx.store.lease().context("lease the store")?;
    let (image, lazy) = match image_and_lazy(ctx, &args).await {
        Ok(found) => found,
        Err(e) => return Err(e.context(RunFailed(125))),
    };
    let ctx_root = ctx.root.clone();
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || {
        run_container(&ctx_root, &store, &image, &args, lease, lazy.as_ref())
    })
    .await
    .map_err(|e| anyhow!(e).context(RunFailed(125)))?
}

/// The image, and with `--snapshotter stargz` (or that default in ROOT/config.json) for an
/// IPFS image, what mounts its eStargz layers: the pull leaves them out.
async fn image_and_lazy(ctx: &Context, args: &RunArgs) -> Result<(ImageRecord, Option<Lazy>)> {
    let kind = match args.snapshotter {
        Some(kind) => kind,
        None => ctx.default_snapshotter()?,
    };
    if kind == SnapshotterKind::Overlayfs || args.pull == PullPolicy::Never {
        return Ok((image_for_run(ctx, args).await?, None));
    }
    let local = match args.pull {
        PullPolicy::Always => None,
        _ => find_image(&ctx.store, &args.image).ok(),
    };
    if let Some(image) = &local {
        if !lazily_pulled(ctx, &args.image, image) {
            // every layer is here: nothing to read lazily
            return Ok((image.clone(), None));
        }
    }
    let reference: Reference = args.image.parse()?;
    let Reference::Ipfs(cid) = reference else {
        return registry_image_and_lazy(ctx, args, &reference, local).await;
    };
    let daemon = crate::control::connect(&ctx.socket_path()).await.is_some();
    if args.detach && !daemon {
        bail!(
            "--snapshotter stargz with -d needs `ferry daemon` running on {}: it serves the \
             lazily pulled layers while the container runs",
            ctx.root.display()
        );
    }
    let node = crate::network::pull_ipfs_lazy(ctx, local.is_none().then_some(cid), &args.net)
        .await
        .with_context(|| format!("pull {cid}"))?;
    let server = match node {
        None => Server::Daemon {
            socket: ctx.socket_path(),
        },
        Some(node) => Server::Local {
            node: std::sync::Arc::new(node),
        },
    };
    let image = match local {
        Some(image) => image,
        None => find_image(&ctx.store, &reference.image_name())?,
    };
    let lazy = Lazy {
        server,
        root: ctx.root.clone(),
        store: ctx.store.clone(),
        timeout: args.net.timeout,
        runtime: tokio::runtime::Handle::current(),
    };
    Ok((image, Some(lazy)))
}

/// `-t` needs a terminal to relay, and a detached container nobody to relay it to.
fn check_terminal_flags(args: &RunArgs) -> Result<()> {
    if !args.tty {
        return Ok(());
    }
    if args.detach {
        // TODO: -dt needs runc's console socket and a supervisor that keeps the terminal's
        // master; until then detached containers have pipes only.
        bail!("-t with -d is not supported yet: run detached without -t");
    }
    if args.interactive && !std::io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    if !std::io::stdin().is_terminal() && !std::io::stdout().is_terminal() {
        bail!("-t needs a terminal on stdin or stdout");
    }
    Ok(())
}

/// The local image, pulled first as `--pull` says (default: when it is not here).
async fn image_for_run(ctx: &Context, args: &RunArgs) -> Result<ImageRecord> {
    if args.pull != PullPolicy::Always {
        match find_image(&ctx.store, &args.image) {
            Ok(image)
                if args.pull == PullPolicy::Never || !lazily_pulled(ctx, &args.image, &image) =>
            {
                return Ok(image)
            }
            // its eStargz layers are not all here (a lazy run pulled it): fetch them now
            Ok(_) => {}
            Err(e) if args.pull == PullPolicy::Never => {
                return Err(e.context(format!("image {} is not here (--pull never)", args.image)))
            }
            Err(_) => {}
        }
    }
    let reference: Reference = args.image.parse()?;
    match &reference {
        Reference::Ipfs(cid) => {
            crate::network::pull_ipfs(ctx, *cid, &args.net, false)
                .await
                .with_context(|| format!("pull {cid}"))?;
        }
        Reference::Registry { .. } => {
            let opts = PullOptions {
                platform: Platform::host(),
                all_platforms: false,
                insecure_registries: Vec::new(),
                auth: crate::auth::credentials(&reference)?,
                ca_certs: crate::auth::ca_certs_for(&reference, &[], &ctx.root)?,
                leave_out_estargz: false,
            };
            pull_registry(&ctx.store, &reference, &opts, false).await?;
        }
    }
    find_image(&ctx.store, &reference.image_name())
}

/// A registry image for a lazy run: pulled without its eStargz layers, which are read by HTTP
/// Range requests from the registry by this process while the container runs.
async fn registry_image_and_lazy(
    ctx: &Context,
    args: &RunArgs,
    reference: &Reference,
    local: Option<ImageRecord>,
) -> Result<(ImageRecord, Option<Lazy>)> {
    if args.detach {
        bail!(
            "--snapshotter stargz with -d reads IPFS images only: the layers of a registry \
             image are served by the foreground run"
        );
    }
    let opts = PullOptions {
        platform: Platform::host(),
        all_platforms: false,
        insecure_registries: Vec::new(),
        auth: crate::auth::credentials(reference)?,
        ca_certs: crate::auth::ca_certs_for(reference, &[], &ctx.root)?,
        leave_out_estargz: true,
    };
    if local.is_none() {
        pull_registry(&ctx.store, reference, &opts, false).await?;
    }
    let ranges = ferry_distribution::BlobRanges::open(reference, &opts).await?;
    crate::lazy::background_registry_pull(ctx.store.clone(), reference.clone(), opts);
    let image = find_image(&ctx.store, &reference.image_name())?;
    let lazy = Lazy {
        server: Server::Registry {
            ranges: std::sync::Arc::new(ranges),
        },
        root: ctx.root.clone(),
        store: ctx.store.clone(),
        timeout: args.net.timeout,
        runtime: tokio::runtime::Handle::current(),
    };
    Ok((image, Some(lazy)))
}

/// Whether `image` is one that a lazy run pulled without (some of) its layers.
fn lazily_pulled(ctx: &Context, name: &str, image: &ImageRecord) -> bool {
    if name.parse::<Reference>().is_err() {
        return false;
    }
    resolve_manifest(&ctx.store, &image.target, &Platform::host())
        .is_ok_and(|m| m.layers.iter().any(|l| !ctx.store.has_blob(&l.digest)))
}

fn run_container(
    root: &Path,
    store: &Store,
    image: &ImageRecord,
    args: &RunArgs,
    lease: ferry_content::Lease,
    lazy: Option<&Lazy>,
) -> Result<i32> {
    let runc = Runc::new(root.join("runc"));
    let snapshotter = Snapshotter::new(root.join("snapshots")).map_err(|e| anyhow!(e))?;
    sweep(root, &snapshotter, &runc);
    let id = ferry_runtime::new_container_id();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| container::made_up_name(&id));
    container::reserve_name(root, &name, &id).map_err(|e| e.context(RunFailed(125)))?;
    let lazy_for = lazy.map(|l| (l, id.as_str()));
    let prepared = unpack_with(root, store, &snapshotter, image, &args.key, lazy_for)
        .and_then(|unpacked| prepare(root, &snapshotter, image, unpacked, args, &id, &name));
    drop(lease);
    let (container, mut record) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            crate::lazy::release(root, &id);
            container::release_name(root, &name, &id);
            return Err(e.context(RunFailed(125)));
        }
    };

    if args.detach {
        let started = crate::shim::spawn(root, &container);
        if started.is_err() && record.auto_remove {
            container::release_name(root, &name, &id);
            container.release(&snapshotter);
        }
        started?;
        outln!("{id}");
        return Ok(0);
    }

    record.status = Status::Running;
    record.started_at = Some(container::now());
    record.save(root).map_err(|e| e.context(RunFailed(125)))?;
    let stdio = RunStdio {
        // docker run without -i gives the container an empty stdin.
        stdin: if args.interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        },
        ..RunStdio::default()
    };
    // With -t, runc in the foreground makes the pseudo-terminal, puts ferry's terminal in raw
    // mode, relays both ways and follows SIGWINCH (runc `tty.go`, `signals.go`).
    let result = runc.run_with(&container.bundle, &container.id, stdio);
    let _ = runc.delete(&container.id);
    match &result {
        Ok(code) => {
            record.status = Status::Exited;
            record.exit_code = Some(*code);
            record.finished_at = Some(container::now());
        }
        Err(e) => {
            record.status = Status::Created;
            record.exit_code = Some(e.exit_code());
            record.error = Some(e.to_string());
        }
    }
    if record.auto_remove {
        container::release_name(root, &name, &id);
    } else if let Err(e) = record.save(root) {
        tracing::warn!(container = %id, error = %e, "cannot record the container's exit");
    }
    container.release(&snapshotter);
    if lazy.is_some_and(Lazy::served_here) {
        // this process serves them: they would die with it
        crate::lazy::release(root, &id);
    }
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            let code = e.exit_code();
            Err(anyhow!(e).context(RunFailed(code)))
        }
    }
}

/// Applies the layers of `image`'s manifest for this host as snapshots (those already there
/// are reused), decrypting encrypted layers with `keys` (and the keys directories); returns
/// the image config and the snapshots, lowest first.
pub fn unpack(
    root: &Path,
    store: &Store,
    snapshotter: &Snapshotter,
    image: &ImageRecord,
    keys: &[ferry_crypt::KeySpec],
) -> Result<(ImageConfig, Vec<Snapshot>)> {
    unpack_with(root, store, snapshotter, image, keys, None)
}

/// [`unpack`], with the eStargz layers that are not in the store mounted lazily for container
/// `id` when `lazy` is given.
fn unpack_with(
    root: &Path,
    store: &Store,
    snapshotter: &Snapshotter,
    image: &ImageRecord,
    keys: &[ferry_crypt::KeySpec],
    lazy: Option<(&Lazy, &str)>,
) -> Result<(ImageConfig, Vec<Snapshot>)> {
    let manifest = resolve_manifest(store, &image.target, &Platform::host())?;
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
        .with_context(|| format!("image config {}", manifest.config.digest))?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        bail!(
            "image {} has {} layers but {} diff IDs",
            image.name,
            manifest.layers.len(),
            diff_ids.len()
        );
    }
    crate::crypt::authorize(root, &manifest.layers, keys)?;
    let mut lowers: Vec<Snapshot> = Vec::new();
    for (index, (layer, diff_id)) in manifest.layers.iter().zip(diff_ids).enumerate() {
        if let Some((lazy, id)) = lazy {
            if !store.has_blob(&layer.digest) && lazy.can_mount(layer) {
                let parent = lowers.last().map(|l| l.chain_id.as_str());
                let chain_id = Snapshotter::chain_id(parent, &diff_id.to_string());
                let dir = crate::lazy::mountpoint(root, id, index);
                lazy.mount(layer, &dir)
                    .with_context(|| format!("mount layer {} lazily", layer.digest))?;
                // a row like the pull's, so the user sees which layers are read lazily
                eprintln!(
                    "sha256:{}: Mounted lazily (the whole layer follows in the background)",
                    layer.digest.short()
                );
                lowers.push(Snapshot { chain_id, dir });
                continue;
            }
        }
        let mut open = || -> Result<_, ferry_snapshot::Error> {
            // Checked against the layer's digest as it is read (and decrypted and authenticated
            // when it is encrypted): a corrupt blob fails the apply.
            let blob = crate::crypt::open_layer(root, store, layer, keys)
                .map_err(|e| ferry_snapshot::Error::ReadBlob(std::io::Error::other(e)))?;
            ferry_snapshot::decompress(blob)
        };
        let snapshot = snapshotter
            .ensure(lowers.last(), &diff_id.to_string(), &mut open)
            .with_context(|| format!("apply layer {}", layer.digest))?;
        lowers.push(snapshot);
    }
    Ok((config, lowers))
}

fn prepare(
    root: &Path,
    snapshotter: &Snapshotter,
    image: &ImageRecord,
    (config, lowers): (ImageConfig, Vec<Snapshot>),
    args: &RunArgs,
    id: &str,
    name: &str,
) -> Result<(ContainerDir, Record)> {
    let container = ContainerDir::create(root, id, args.rm)?;
    let bundle = (|| -> Result<Record> {
        let (network, ip) = match args.network {
            NetMode::Host | NetMode::None if !args.publish.is_empty() => {
                bail!("-p needs the bridge network (--net bridge)")
            }
            NetMode::Host => (Network::Host, None),
            NetMode::None => (Network::None, None),
            NetMode::Bridge => {
                crate::cni::check_ports_free(root, &args.publish)?;
                let attached = crate::cni::setup(&container.bundle, id, &args.publish)
                    .context("attach the container to the bridge network")?;
                let netns = crate::cni::netns_path(id);
                (Network::Join(netns), attached.ip)
            }
        };
        snapshotter.mount_active(&container.id, &lowers, &container.rootfs)?;
        let hostname = args
            .hostname
            .clone()
            .unwrap_or_else(|| container.id[..12].to_string());
        let mut env = Vec::new();
        for file in &args.env_file {
            env.extend(crate::runopts::read_env_file(file)?);
        }
        if args.tty {
            // As docker: a terminal gets a TERM unless the image or the user sets one.
            let image_env = config.config.as_ref().and_then(|c| c.env.as_ref());
            if !image_env.is_some_and(|e| e.iter().any(|v| v.starts_with("TERM="))) {
                env.push("TERM=xterm".to_string());
            }
        }
        env.extend(args.env.iter().cloned());
        let request = process_request(&config, args, env);
        let process = ferry_runtime::resolve_process(&request, &container.rootfs, &hostname)?;
        let mut binds = Vec::new();
        for volume in &args.volume {
            binds.push(crate::runopts::parse_volume(root, volume)?);
        }
        binds.extend(crate::runopts::etc_files(
            &container.bundle,
            &hostname,
            &network,
            ip,
        )?);
        let record = Record {
            id: id.to_string(),
            name: name.to_string(),
            image: args.image.clone(),
            image_id: image.target.digest.to_string(),
            command: process.args.clone(),
            created: container::now(),
            status: Status::Created,
            pid: None,
            exit_code: None,
            error: None,
            started_at: None,
            finished_at: None,
            auto_remove: args.rm,
            detached: args.detach,
            lowers: lowers
                .iter()
                .map(|l| Lower {
                    chain_id: l.chain_id.clone(),
                    dir: l.dir.clone(),
                })
                .collect(),
        };
        let spec = ContainerSpec {
            id: container.id.clone(),
            hostname,
            process,
            read_only: args.read_only,
            terminal: args.tty,
            binds,
            resources: Resources {
                memory: args.memory,
                cpus: args.cpus,
                pids: args.pids_limit,
            },
            network,
        };
        ferry_runtime::write_bundle(&container.bundle, &container.rootfs, &spec)?;
        record.save(root)?;
        Ok(record)
    })();
    match bundle {
        Ok(record) => Ok((container, record)),
        Err(e) => {
            // Nothing of a container that could not be set up is kept.
            if let Err(e) = crate::cni::teardown(&container.bundle, id) {
                tracing::warn!(container = %id, error = %format!("{e:#}"), "network cleanup failed");
            }
            let _ = snapshotter.remove_active(&container.id, &container.rootfs);
            let _ = std::fs::remove_dir_all(&container.bundle);
            Err(e)
        }
    }
}

fn process_request(config: &ImageConfig, args: &RunArgs, env: Vec<String>) -> ProcessRequest {
    let c = config.config.clone().unwrap_or_default();
    ProcessRequest {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        user: c.user.unwrap_or_default(),
        override_entrypoint: args.entrypoint.clone(),
        override_cmd: args.command.clone(),
        override_env: env,
        override_working_dir: args.workdir.clone(),
        override_user: args.user.clone(),
    }
}
