//! `ferry commit`: a container's changes (its overlay upper directory) become a new gzip layer
//! on top of its image, with a new config (the layer's diff ID and a history entry) and a new
//! manifest, stored under a name.
//!
//! The upper directory is in overlayfs diff form; the layer is in OCI form (image-spec
//! layer.md "Whiteouts"): a deleted path (a 0/0 character device in the upper directory)
//! becomes an empty file `.wh.NAME`, an opaque directory (xattr `trusted.overlay.opaque=y`)
//! gets a `.wh..wh..opq` entry. overlayfs's own xattrs stay behind.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use ferry_content::Store;
use ferry_oci::{media, Descriptor, Digest, Index, Platform, Reference};
use ferry_snapshot::Snapshotter;
use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::container;
use crate::context::Context;

/// The xattr overlayfs marks opaque directories with.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The files ferry binds over the image's (`runopts::etc_files`): what the upper directory
/// holds at these paths is only runc's empty mount point, never the container's data.
const MOUNT_POINTS: [&str; 3] = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// `ferry commit`.
#[derive(Args)]
pub struct CommitArgs {
    /// The commit message (the history entry's comment).
    #[arg(short, long)]
    pub message: Option<String>,
    /// The author (`"Name <email>"`).
    #[arg(short, long)]
    pub author: Option<String>,
    /// The container: a name, an ID or a unique ID prefix.
    pub container: String,
    /// The new image's name (REPOSITORY[:TAG]).
    pub name: String,
}

/// Commits the container's changes as a new image; prints its ID.
pub fn commit(ctx: &Context, args: &CommitArgs) -> Result<()> {
    let record = container::find(&ctx.root, &args.container)?;
    let reference: Reference = args.name.parse()?;
    if matches!(reference, Reference::Ipfs(_)) {
        bail!(
            "invalid image name {}: commit names a local image, not a CID",
            args.name
        );
    }
    let _lease = ctx.store.lease().context("lease the store")?;
    let image = crate::commands::find_image(&ctx.store, &record.image_id)
        .with_context(|| format!("the image of container {}", args.container))?;
    let manifest_desc = manifest_descriptor(&ctx.store, &image.target)?;
    let mut manifest: Value = serde_json::from_slice(&ctx.store.read_blob(&manifest_desc.digest)?)
        .with_context(|| format!("manifest {}", manifest_desc.digest))?;
    let config_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("the config digest of manifest {}", manifest_desc.digest))?;
    let mut config: Value = serde_json::from_slice(&ctx.store.read_blob(&config_digest)?)
        .with_context(|| format!("image config {config_digest}"))?;

    let snapshotter = Snapshotter::new(ctx.root.join("snapshots")).map_err(|e| anyhow!(e))?;
    let upper = snapshotter.upper_dir(&record.id).map_err(|e| anyhow!(e))?;
    let layer = write_layer(&ctx.store, &upper)
        .with_context(|| format!("make a layer of container {}", args.container))?;

    let now = container::now();
    let docker = manifest["mediaType"] == media::DOCKER_MANIFEST;
    config["created"] = json!(now);
    if let Some(author) = &args.author {
        config["author"] = json!(author);
    }
    match config["rootfs"]["diff_ids"].as_array_mut() {
        Some(ids) => ids.push(json!(layer.diff_id.to_string())),
        None => bail!("image config {config_digest} has no rootfs.diff_ids"),
    }
    let mut entry = json!({ "created": now, "created_by": record.command.join(" ") });
    if let Some(author) = &args.author {
        entry["author"] = json!(author);
    }
    if let Some(message) = &args.message {
        entry["comment"] = json!(message);
    }
    match config["history"].as_array_mut() {
        Some(history) => history.push(entry),
        None => config["history"] = json!([entry]),
    }
    let config_bytes = serde_json::to_vec(&config)?;
    let new_config = ctx.store.write_blob(&config_bytes, None)?;

    manifest["config"]["digest"] = json!(new_config.to_string());
    manifest["config"]["size"] = json!(config_bytes.len());
    let layer_type = if docker {
        media::DOCKER_LAYER_GZIP
    } else {
        media::OCI_LAYER_GZIP
    };
    match manifest["layers"].as_array_mut() {
        Some(layers) => layers.push(json!({
            "mediaType": layer_type,
            "digest": layer.digest.to_string(),
            "size": layer.size,
        })),
        None => bail!("manifest {} has no layers", manifest_desc.digest),
    }
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let digest = ctx.store.write_blob(&manifest_bytes, None)?;
    let target = Descriptor::new(
        &manifest_desc.media_type,
        digest.clone(),
        manifest_bytes.len() as u64,
    );
    ctx.store.put_image(&reference.image_name(), &target)?;
    outln!("{digest}");
    Ok(())
}

/// The descriptor of the host's manifest of the image whose top descriptor is `target`.
fn manifest_descriptor(store: &Store, target: &Descriptor) -> Result<Descriptor> {
    if !media::is_index(&target.media_type) {
        return Ok(target.clone());
    }
    let platform = Platform::host();
    let index: Index = serde_json::from_slice(&store.read_blob(&target.digest)?)
        .with_context(|| format!("index {}", target.digest))?;
    index
        .manifests
        .into_iter()
        .find(|m| m.platform.as_ref().is_none_or(|p| p.matches(&platform)))
        .ok_or_else(|| anyhow!("image has no manifest for {platform}"))
}

/// A layer written to the store.
struct Layer {
    digest: Digest,
    diff_id: Digest,
    size: u64,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W: Write>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        hash: Sha256::new(),
        count: 0,
    }
}

/// Writes the OCI layer of the overlay upper directory `upper` into the store.
fn write_layer(store: &Store, upper: &Path) -> Result<Layer> {
    let tmp = tempfile::NamedTempFile::new_in(store.tmp_dir()).context("create a layer file")?;
    let file = tmp.as_file().try_clone().context("open the layer file")?;
    let gz = GzEncoder::new(hashing(file), flate2::Compression::default());
    let mut tar = tar::Builder::new(hashing(gz));
    tar.follow_symlinks(false);
    let mut links = HashMap::new();
    add_dir(&mut tar, upper, Path::new(""), &mut links)?;
    let raw = tar.into_inner().context("finish the layer tar")?;
    let diff_id = Digest::from_bytes(raw.hash.finalize().into());
    let gz = raw.inner.finish().context("finish the layer gzip")?;
    let digest = Digest::from_bytes(gz.hash.finalize().into());
    let size = gz.count;
    gz.inner.sync_all().context("write the layer file")?;
    store.import_file(tmp.path(), &digest, size)?;
    Ok(Layer {
        digest,
        diff_id,
        size,
    })
}

type TarOut<'a> = tar::Builder<Hashing<GzEncoder<Hashing<File>>>>;

/// Adds the entries of `dir` (the layer path `rel`), sorted by name so a layer's bytes depend
/// only on the tree.
fn add_dir(
    tar: &mut TarOut<'_>,
    dir: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("read {}", dir.display()))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let entry = rel.join(&name);
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        let kind = meta.file_type();
        if kind.is_char_device() && meta.rdev() == 0 {
            let mut wh = std::ffi::OsString::from(".wh.");
            wh.push(&name);
            empty_file(tar, &rel.join(wh), &meta)?;
            continue;
        }
        if kind.is_file() && meta.len() == 0 && MOUNT_POINTS.iter().any(|m| entry == Path::new(m)) {
            continue;
        }
        if kind.is_socket() {
            tracing::debug!(path = %entry.display(), "skipping a socket");
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        header.set_size(0);
        add_xattrs(tar, &path)?;
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            // With a trailing slash, as Go's archive/tar names directories.
            let mut named = entry.clone().into_os_string();
            named.push("/");
            tar.append_data(&mut header, &named, io::empty())
                .with_context(|| format!("add {}", entry.display()))?;
            let opaque = xattr::get(&path, OPAQUE_XATTR).ok().flatten();
            if opaque.as_deref() == Some(b"y") {
                empty_file(tar, &entry.join(".wh..wh..opq"), &meta)?;
            }
            add_dir(tar, &path, &entry, links)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path)
                .with_context(|| format!("read link {}", path.display()))?;
            tar.append_link(&mut header, &entry, &target)
                .with_context(|| format!("add {}", entry.display()))?;
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(tar::EntryType::Link);
                    tar.append_link(&mut header, &entry, first)
                        .with_context(|| format!("add {}", entry.display()))?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), entry.clone());
            }
            header.set_size(meta.len());
            let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
            tar.append_data(&mut header, &entry, file)
                .with_context(|| format!("add {}", entry.display()))?;
        } else {
            // Devices and FIFOs: the header has the type and the device numbers.
            tar.append_data(&mut header, &entry, io::empty())
                .with_context(|| format!("add {}", entry.display()))?;
        }
    }
    Ok(())
}

/// An empty regular file entry (a whiteout) with the owner and time of `meta`.
fn empty_file(tar: &mut TarOut<'_>, path: &Path, meta: &Metadata) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    header.set_mtime(meta.mtime().max(0) as u64);
    header.set_size(0);
    tar.append_data(&mut header, path, io::empty())
        .with_context(|| format!("add {}", path.display()))
}

/// The file's xattrs (but overlayfs's own) as PAX `SCHILY.xattr.` records before its entry.
fn add_xattrs(tar: &mut TarOut<'_>, path: &Path) -> Result<()> {
    let Ok(names) = xattr::list(path) else {
        return Ok(());
    };
    let mut records = Vec::new();
    for name in names {
        if name.as_bytes().starts_with(b"trusted.overlay.") {
            continue;
        }
        if let Ok(Some(value)) = xattr::get(path, &name) {
            let key = format!("SCHILY.xattr.{}", name.to_string_lossy());
            records.push((key, value));
        }
    }
    if !records.is_empty() {
        tar.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .with_context(|| format!("add the xattrs of {}", path.display()))?;
    }
    Ok(())
}
