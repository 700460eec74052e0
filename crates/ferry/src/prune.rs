//! Removing images: `rmi`, `image prune`, and the garbage collection after them.
//!
//! A name goes first; the content it referred to goes when the collector finds nothing else
//! refers to it: no other name, no pin, no kept container. Snapshots go with the images they
//! were made from, unless a container lists them or has them mounted.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use ferry_content::{GcReport, Store};
use ferry_oci::{media, Descriptor, Digest, ImageConfig, Index, Manifest, Reference};
use ferry_snapshot::Snapshotter;

use crate::cli::{ImagePruneArgs, RmiArgs};
use crate::context::Context;
use crate::output::human_size;

/// How long the collector waits for running operations (their leases) to end.
const GC_WAIT: Duration = Duration::from_secs(10);

/// A kept container as its directory records it.
#[derive(Debug, Clone, Default)]
pub struct ContainerUse {
    /// The container's ID.
    pub id: String,
    /// The digest of its image's manifest or index (the IMAGE ID).
    pub image_id: Option<Digest>,
    /// The chain IDs of the snapshots its rootfs stacks.
    pub lowers: Vec<String>,
}

/// The containers kept under ROOT/containers that record their image: the `state.json` the
/// container commands write (`image_id`, `lowers[].chain_id`). Read here as plain JSON so the
/// collector needs nothing else from the container code.
pub fn containers_using(root: &Path) -> Vec<ContainerUse> {
    let Ok(entries) = std::fs::read_dir(root.join("containers")) else {
        return Vec::new();
    };
    let mut uses = Vec::new();
    for entry in entries.flatten() {
        let Ok(bytes) = std::fs::read(entry.path().join("state.json")) else {
            continue;
        };
        let Ok(state) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            tracing::warn!(path = %entry.path().display(), "unreadable container record");
            continue;
        };
        let lowers = state["lowers"].as_array().into_iter().flatten();
        uses.push(ContainerUse {
            id: entry.file_name().to_string_lossy().into_owned(),
            image_id: state["image_id"].as_str().and_then(|d| d.parse().ok()),
            lowers: lowers
                .filter_map(|l| l["chain_id"].as_str().map(String::from))
                .collect(),
        });
    }
    uses
}

/// What one collection removed.
pub struct Collected {
    pub report: GcReport,
    pub snapshots: Vec<String>,
    /// Bytes of lazy-pulling caches removed.
    pub lazy_bytes: u64,
}

/// Removes the blobs, CID-index rows and snapshots that no image name, pin or kept container
/// refers to, waiting a few seconds for running operations on the root.
pub fn collect_garbage(ctx: &Context) -> Result<Collected> {
    let held = ctx.store.exclusive(GC_WAIT).context("collect garbage")?;
    let uses = containers_using(&ctx.root);
    let roots: Vec<Digest> = uses.iter().filter_map(|u| u.image_id.clone()).collect();
    let report = ctx
        .store
        .collect(&held, &roots)
        .context("collect garbage")?;

    let snapshotter = Snapshotter::new(ctx.root.join("snapshots")).map_err(|e| anyhow!(e))?;
    let mut keep: HashSet<String> = uses.iter().flat_map(|u| u.lowers.clone()).collect();
    keep.extend(mounted_snapshots(&ctx.root));
    let tops = ctx.store.list_images()?.into_iter().map(|i| i.target);
    let container_tops = roots.iter().filter_map(|d| descriptor_of(&ctx.store, d));
    let mut layers = HashSet::new();
    for top in tops.chain(container_tops) {
        for manifest in stored_manifests(&ctx.store, &top) {
            keep.extend(chain_ids(&ctx.store, &manifest));
            layers.extend(manifest.layers.into_iter().map(|l| l.digest));
        }
    }
    let lazy_bytes = crate::lazy::drop_caches(&ctx.root, &layers);
    let mut snapshots = Vec::new();
    for id in snapshotter.committed().map_err(|e| anyhow!(e))? {
        if !keep.contains(&id) {
            snapshotter
                .remove_committed(&id)
                .map_err(|e| anyhow!(e))
                .with_context(|| format!("remove snapshot {id}"))?;
            snapshots.push(id);
        }
    }
    drop(held);
    Ok(Collected {
        report,
        snapshots,
        lazy_bytes,
    })
}

/// A descriptor for a stored manifest or index known only by digest.
fn descriptor_of(store: &Store, digest: &Digest) -> Option<Descriptor> {
    let bytes = store.read_blob(digest).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let media_type = match v["mediaType"].as_str() {
        Some(m) => m.to_string(),
        None if v.get("manifests").is_some() => media::OCI_INDEX.to_string(),
        None => media::OCI_MANIFEST.to_string(),
    };
    Some(Descriptor::new(
        &media_type,
        digest.clone(),
        bytes.len() as u64,
    ))
}

/// Every stored manifest of an image (all platforms that are here).
fn stored_manifests(store: &Store, top: &Descriptor) -> Vec<Manifest> {
    let mut out = Vec::new();
    let mut todo = vec![top.clone()];
    while let Some(d) = todo.pop() {
        let Ok(bytes) = store.read_blob(&d.digest) else {
            continue;
        };
        if media::is_index(&d.media_type) {
            if let Ok(index) = serde_json::from_slice::<Index>(&bytes) {
                todo.extend(index.manifests);
            }
        } else if let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) {
            out.push(manifest);
        }
    }
    out
}

/// The chain IDs of a stored manifest's layers (none when its config is not here).
fn chain_ids(store: &Store, manifest: &Manifest) -> Vec<String> {
    let config = store.read_blob(&manifest.config.digest).ok();
    let Some(config) = config.and_then(|c| serde_json::from_slice::<ImageConfig>(&c).ok()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut parent: Option<String> = None;
    for diff_id in &config.rootfs.diff_ids {
        let id = Snapshotter::chain_id(parent.as_deref(), &diff_id.to_string());
        out.push(id.clone());
        parent = Some(id);
    }
    out
}

/// Chain IDs of committed snapshots that a mounted overlay (a running container) stacks.
fn mounted_snapshots(root: &Path) -> Vec<String> {
    let committed = root.join("snapshots/committed");
    let prefix = format!("{}/", committed.display());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut ids = Vec::new();
    for option in mountinfo.split([' ', ',', '\n']) {
        let Some(dirs) = option.strip_prefix("lowerdir=") else {
            continue;
        };
        for dir in dirs.split(':') {
            if let Some(hex) = dir.strip_prefix(&prefix) {
                ids.push(format!("sha256:{}", hex.trim_end_matches('/')));
            }
        }
    }
    ids
}

/// Prints what a collection removed, as docker prints deleted layers.
fn print_collected(collected: &Collected) {
    for (digest, _) in &collected.report.blobs {
        outln!("Deleted: {digest}");
    }
}

/// `ferry rmi [-f] IMAGE...`.
pub fn rmi(ctx: &Context, args: &RmiArgs) -> Result<()> {
    let uses = containers_using(&ctx.root);
    let mut errors = Vec::new();
    let mut removed_any = false;
    for text in &args.images {
        match remove_image(ctx, text, args.force, &uses) {
            Ok(removed) => removed_any |= removed,
            Err(e) => errors.push(e),
        }
    }
    if removed_any {
        match collect_garbage(ctx) {
            Ok(collected) => print_collected(&collected),
            Err(e) => eprintln!("ferry: warning: {e:#}; `ferry image prune` removes it later"),
        }
    }
    // One line per image that stayed; the last is the command's error.
    let last = errors.pop();
    errors.iter().for_each(|e| eprintln!("ferry: {e:#}"));
    match last {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Removes one image's name (or all its names, by ID); true when the image itself is gone
/// (no name refers to its digest any more).
fn remove_image(ctx: &Context, text: &str, force: bool, uses: &[ContainerUse]) -> Result<bool> {
    let store = &ctx.store;
    let by_name = text
        .parse::<Reference>()
        .ok()
        .map(|r| r.image_name())
        .into_iter()
        .chain([text.to_string()])
        .find_map(|n| store.get_image(&n).ok().flatten());
    let (image, by_id) = match by_name {
        Some(image) => (image, false),
        None => (crate::commands::find_image(store, text)?, true),
    };
    let digest = image.target.digest.clone();
    let all: Vec<String> = store
        .list_images()?
        .into_iter()
        .filter(|i| i.target.digest == digest)
        .map(|i| i.name)
        .collect();
    let names = if by_id {
        all.clone()
    } else {
        vec![image.name.clone()]
    };
    if by_id && names.len() > 1 && !force {
        bail!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple \
             repositories",
            digest.short()
        );
    }
    let last = all.len() == names.len();
    if last && !force {
        if let Some(user) = uses.iter().find(|u| u.image_id.as_ref() == Some(&digest)) {
            let what = match by_id {
                true => format!("unable to delete {}", digest.short()),
                false => format!("unable to remove repository reference {text:?}"),
            };
            bail!(
                "conflict: {what} (must force) - container {} is using its referenced image {}",
                &user.id[..user.id.len().min(12)],
                digest.short()
            );
        }
    }
    for name in &names {
        store.delete_image(name)?;
        // The pin a pull from IPFS made for this image goes with it.
        if let Ok(Reference::Ipfs(cid)) = name.parse::<Reference>() {
            store.unpin(&cid)?;
        }
        outln!("Untagged: {name}");
    }
    Ok(last)
}

/// `ferry image prune [-a]`.
pub fn prune(ctx: &Context, args: &ImagePruneArgs) -> Result<()> {
    let used: HashSet<Digest> = containers_using(&ctx.root)
        .into_iter()
        .filter_map(|u| u.image_id)
        .collect();
    let mut lines = Vec::new();
    for image in ctx.store.list_images()? {
        let dangling = image.name.starts_with("sha256:");
        if (dangling || args.all) && !used.contains(&image.target.digest) {
            ctx.store.delete_image(&image.name)?;
            if let Ok(Reference::Ipfs(cid)) = image.name.parse::<Reference>() {
                ctx.store.unpin(&cid)?;
            }
            lines.push(format!("untagged: {}", image.name));
        }
    }
    let collected = collect_garbage(ctx)?;
    let blobs = collected.report.blobs.iter();
    lines.extend(blobs.map(|(d, _)| format!("deleted: {d}")));
    let snapshots = collected.snapshots.iter();
    lines.extend(snapshots.map(|id| format!("deleted snapshot: {id}")));
    if !lines.is_empty() {
        outln!("Deleted Images:");
        lines.iter().for_each(|l| outln!("{l}"));
        outln!("");
    }
    outln!(
        "Total reclaimed space: {}",
        human_size(collected.report.bytes() + collected.lazy_bytes)
    );
    Ok(())
}
