//! `ferry run`: resolve (and pull) the image, stack its layers as overlay snapshots, write the
//! runtime bundle and run it with runc.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use ferry_content::{ImageRecord, Store};
use ferry_distribution::PullOptions;
use ferry_oci::{ImageConfig, Platform, Reference};
use ferry_runtime::{ContainerSpec, ProcessRequest, Runc};
use ferry_snapshot::{Snapshot, Snapshotter};

use crate::cli::RunArgs;
use crate::commands::{find_image, pull_registry, resolve_manifest};
use crate::context::Context;

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
    let image = match image_for_run(ctx, &args).await {
        Ok(image) => image,
        Err(e) => return Err(e.context(RunFailed(125))),
    };
    let ctx_root = ctx.root.clone();
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || run_container(&ctx_root, &store, &image, &args))
        .await
        .map_err(|e| anyhow!(e).context(RunFailed(125)))?
}

/// The local image, pulled first when it is not here (as `docker run --pull missing`).
async fn image_for_run(ctx: &Context, args: &RunArgs) -> Result<ImageRecord> {
    if let Ok(image) = find_image(&ctx.store, &args.image) {
        return Ok(image);
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
                insecure_registries: Vec::new(),
            };
            pull_registry(&ctx.store, &reference, &opts, false).await?;
        }
    }
    find_image(&ctx.store, &reference.image_name())
}

fn run_container(root: &Path, store: &Store, image: &ImageRecord, args: &RunArgs) -> Result<i32> {
    let prepared = prepare(root, store, image, args).map_err(|e| e.context(RunFailed(125)))?;
    let runc = Runc::new(root.join("runc"));
    let result = runc.run(&prepared.bundle, &prepared.id);
    let _ = runc.delete(&prepared.id);
    drop(prepared);
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            let code = e.exit_code();
            Err(anyhow!(e).context(RunFailed(code)))
        }
    }
}

/// A container ready to start; dropping it unmounts the rootfs and, with --rm, removes the
/// container's directories.
struct Prepared {
    id: String,
    bundle: PathBuf,
    rootfs: PathBuf,
    snapshotter: Snapshotter,
    remove: bool,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Err(e) = self.snapshotter.remove_active(&self.id, &self.rootfs) {
            tracing::warn!(container = %self.id, error = %e, "cleanup failed");
        }
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.bundle);
        }
    }
}

fn prepare(root: &Path, store: &Store, image: &ImageRecord, args: &RunArgs) -> Result<Prepared> {
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
    let snapshotter = Snapshotter::new(root.join("snapshots"))?;
    let mut lowers: Vec<Snapshot> = Vec::new();
    for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
        let mut open = || -> Result<_, ferry_snapshot::Error> {
            let file = store
                .open_blob(&layer.digest)
                .map_err(|e| ferry_snapshot::Error::ReadBlob(std::io::Error::other(e)))?;
            ferry_snapshot::decompress(Box::new(std::io::BufReader::new(file)))
        };
        let snapshot = snapshotter
            .ensure(lowers.last(), &diff_id.to_string(), &mut open)
            .with_context(|| format!("apply layer {}", layer.digest))?;
        lowers.push(snapshot);
    }

    let id = ferry_runtime::new_container_id();
    let bundle = root.join("containers").join(&id);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).with_context(|| format!("create {}", rootfs.display()))?;
    snapshotter.mount_active(&id, &lowers, &rootfs)?;
    let prepared = Prepared {
        id,
        bundle,
        rootfs,
        snapshotter,
        remove: args.rm,
    };

    let process = ferry_runtime::resolve_process(
        &process_request(&config, args),
        &prepared.rootfs,
        &prepared.id[..12],
    )?;
    let spec = ContainerSpec {
        id: prepared.id.clone(),
        hostname: prepared.id[..12].to_string(),
        process,
        read_only: false,
    };
    ferry_runtime::write_bundle(&prepared.bundle, &prepared.rootfs, &spec)?;
    Ok(prepared)
}

fn process_request(config: &ImageConfig, args: &RunArgs) -> ProcessRequest {
    let c = config.config.clone().unwrap_or_default();
    ProcessRequest {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        user: c.user.unwrap_or_default(),
        override_entrypoint: args.entrypoint.clone(),
        override_cmd: args.command.clone(),
        override_env: args.env.clone(),
        override_working_dir: args.workdir.clone(),
        override_user: None,
    }
}
