//! Image commands that name, move and remove images: `tag`, `push` to a registry, `save`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use anyhow::{bail, Context as _, Result};
use ferry_distribution::{
    ArchiveFormat, Compression, PlatformChoice, PushEvent, PushOptions, SaveImage, SaveOptions,
};
use ferry_oci::{Descriptor, Digest, Platform, Reference};

use crate::cli::{PushArgs, SaveArgs, TagArgs};
use crate::commands::find_image;
use crate::context::Context;
use crate::progress::{Mode, Progress, State};

/// `ferry tag SRC DST`: binds the registry name DST to the image SRC names. SRC may be
/// `ipfs://CID` (pulled from IPFS first when it is not here, from local blocks or peers).
pub async fn tag(ctx: &Context, args: &TagArgs) -> Result<()> {
    let target = source_image(ctx, args).await?;
    let dest: Reference = args.target.parse()?;
    if matches!(dest, Reference::Ipfs(_)) {
        bail!(
            "tag {}: an IPFS name is the image's CID; use `ferry push ipfs://NAME` to get one",
            args.target
        );
    }
    ctx.store
        .put_image(&dest.image_name(), &target)
        .with_context(|| format!("tag {}", args.target))?;
    Ok(())
}

async fn source_image(ctx: &Context, args: &TagArgs) -> Result<Descriptor> {
    if let Ok(Reference::Ipfs(cid)) = args.source.parse::<Reference>() {
        if let Some(image) = ctx.store.get_image(&cid.to_string())? {
            return Ok(image.target);
        }
        return crate::network::pull_ipfs(ctx, cid, &args.net, true)
            .await
            .with_context(|| format!("pull {cid}"));
    }
    Ok(find_image(&ctx.store, &args.source)?.target)
}

/// `ferry push HOST[:PORT]/REPO:TAG`: sends the local image of that name to its registry.
pub async fn push_registry(ctx: &Context, args: &PushArgs) -> Result<()> {
    let reference: Reference = args.target.parse()?;
    let name = reference.image_name();
    let image = ctx.store.get_image(&name)?.with_context(|| {
        format!("push {name}: no local image of that name (name one with `ferry tag`)")
    })?;
    let platforms = platform_choice(args.platform.as_deref(), args.all_platforms)?;
    let only = match &platforms {
        PlatformChoice::All => None,
        PlatformChoice::One(p) => Some(p.clone()),
        PlatformChoice::Default if has_every_manifest(ctx, &image.target)? => None,
        PlatformChoice::Default => Some(Platform::host()),
    };
    let source = match args.compression {
        Some(compression) => recompress(ctx, &image.target, compression, only.clone()).await?,
        None => image.target.clone(),
    };
    let source = crate::estargz::for_push(ctx, source, &args.estargz, only, args.quiet).await?;
    let opts = PushOptions {
        platforms,
        insecure_registries: args.insecure_registries.clone(),
        auth: crate::auth::credentials(&reference)?,
        ca_certs: crate::auth::ca_certs_for(&reference, &args.ca_cert, &ctx.root)?,
        mount_from: mount_sources(ctx, &reference)?,
    };
    let quiet = args.quiet;
    let display = Progress::new(Mode::detect(quiet));
    let progress = |event: PushEvent| match event {
        PushEvent::BlobStarted { digest, size } => display.state(&digest, size, State::Pushing),
        PushEvent::BlobProgress { digest, sent } => display.bytes(&digest, sent),
        PushEvent::BlobDone {
            digest,
            size,
            existed,
        } => {
            let state = match existed {
                true => State::LayerAlreadyExists,
                false => State::Pushed,
            };
            display.state(&digest, size, state)
        }
        PushEvent::BlobMounted { digest, size } => display.state(&digest, size, State::Mounted),
    };
    let pushed = ferry_distribution::push(&ctx.store, &source, &reference, &opts, &progress).await;
    display.finish();
    let pushed = pushed?;
    // The registry's digest is the image's from now on (it differs when IPFS urls were dropped),
    // unless the layers were recompressed or converted for this push only.
    let converted = args.compression.is_some() || args.estargz.estargz;
    if pushed.digest != image.target.digest && !converted {
        ctx.store.put_image(&name, &pushed)?;
    }
    if quiet {
        outln!("{name}");
    } else {
        let tag = match &reference {
            Reference::Registry { tag: Some(t), .. } => t.as_str(),
            _ => "latest",
        };
        outln!("{tag}: digest: {} size: {}", pushed.digest, pushed.size);
    }
    Ok(())
}

/// `ferry save [-o FILE] IMAGE...`: writes the images (blobs as stored) into one archive, to
/// FILE (written beside it first and renamed, so a failed save leaves no partial file) or to
/// stdout.
pub fn save(ctx: &Context, args: &SaveArgs) -> Result<()> {
    let format = match args.format.as_str() {
        "docker" => ArchiveFormat::Docker,
        "oci" => ArchiveFormat::Oci,
        other => bail!("unknown archive format {other:?}: use docker or oci"),
    };
    let opts = SaveOptions {
        format,
        platforms: platform_choice(args.platform.as_deref(), args.all_platforms)?,
    };
    let mut images = Vec::new();
    for text in &args.images {
        let image = find_image(&ctx.store, text)?;
        // An image given by ID is saved under every name it has, as docker does.
        let by_name = text
            .parse::<Reference>()
            .ok()
            .is_some_and(|r| r.image_name() == image.name)
            || text == &image.name;
        let names: Vec<String> = match by_name {
            true => vec![image.name.clone()],
            false => ctx
                .store
                .list_images()?
                .into_iter()
                .filter(|i| i.target.digest == image.target.digest)
                .map(|i| i.name)
                .collect(),
        };
        for name in names {
            let registry_name = matches!(name.parse::<Reference>(), Ok(Reference::Registry { .. }))
                && !name.starts_with("sha256:");
            images.push(SaveImage {
                name: registry_name.then_some(name),
                target: image.target.clone(),
            });
        }
    }

    match args
        .output
        .as_deref()
        .filter(|p| *p != std::path::Path::new("-"))
    {
        Some(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => std::path::Path::new("."),
            };
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("save: create a file in {}", dir.display()))?;
            let out = std::io::BufWriter::new(tmp);
            let out = ferry_distribution::save_archive(&ctx.store, &images, &opts, out)?;
            let tmp = out
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("save: write {}", path.display()))?;
            tmp.persist(path)
                .with_context(|| format!("save: write {}", path.display()))?;
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect stdout");
            }
            let out = std::io::BufWriter::new(stdout.lock());
            let mut out = ferry_distribution::save_archive(&ctx.store, &images, &opts, out)?;
            out.flush().context("save: write stdout")?;
        }
    }
    Ok(())
}

/// Recompresses the layers of `target` (those of `platform`, or all) in a blocking task and
/// returns the new top descriptor.
pub async fn recompress(
    ctx: &Context,
    target: &Descriptor,
    compression: Compression,
    platform: Option<Platform>,
) -> Result<Descriptor> {
    let store = ctx.store.clone();
    let target = target.clone();
    let converted = tokio::task::spawn_blocking(move || {
        ferry_distribution::recompress(&store, &target, compression, platform.as_ref())
    })
    .await??;
    Ok(converted)
}

/// Whether every manifest of an index (or the one manifest) is in the store.
/// The blobs of local images from other repositories of `reference`'s registry, by digest,
/// with the repository each can be mounted from (docker mounts what it pulled from the same
/// registry rather than uploading it again).
fn mount_sources(ctx: &Context, reference: &Reference) -> Result<HashMap<Digest, String>> {
    let Reference::Registry {
        domain, repository, ..
    } = reference
    else {
        return Ok(HashMap::new());
    };
    let mut sources = HashMap::new();
    for image in ctx.store.list_images()? {
        let Ok(Reference::Registry {
            domain: d,
            repository: r,
            ..
        }) = image.name.parse::<Reference>()
        else {
            continue;
        };
        if d != *domain || r == *repository {
            continue;
        }
        let mut manifests = vec![image.target.clone()];
        while let Some(desc) = manifests.pop() {
            let Ok(bytes) = ctx.store.read_blob(&desc.digest) else {
                continue;
            };
            if ferry_oci::media::is_index(&desc.media_type) {
                if let Ok(index) = serde_json::from_slice::<ferry_oci::Index>(&bytes) {
                    manifests.extend(index.manifests);
                }
            } else if let Ok(manifest) = serde_json::from_slice::<ferry_oci::Manifest>(&bytes) {
                for blob in std::iter::once(manifest.config).chain(manifest.layers) {
                    sources.entry(blob.digest).or_insert_with(|| r.clone());
                }
            }
        }
    }
    Ok(sources)
}

fn has_every_manifest(ctx: &Context, target: &Descriptor) -> Result<bool> {
    if !ferry_oci::media::is_index(&target.media_type) {
        return Ok(true);
    }
    let index: ferry_oci::Index = serde_json::from_slice(&ctx.store.read_blob(&target.digest)?)
        .with_context(|| format!("index {}", target.digest))?;
    Ok(index
        .manifests
        .iter()
        .all(|m| ctx.store.has_blob(&m.digest)))
}

/// `--platform` / `--all-platforms` as a choice of manifests.
pub fn platform_choice(platform: Option<&str>, all: bool) -> Result<PlatformChoice> {
    Ok(match (platform, all) {
        (Some(_), true) => bail!("--platform and --all-platforms exclude each other"),
        (Some(p), false) => PlatformChoice::One(parse_platform(p)?),
        (None, true) => PlatformChoice::All,
        (None, false) => PlatformChoice::Default,
    })
}

/// `os/arch[/variant]` as docker writes it (`linux/arm64/v8`); `arch` alone means linux.
pub fn parse_platform(text: &str) -> Result<Platform> {
    let parts: Vec<&str> = text.split('/').collect();
    let (os, arch, variant) = match parts.as_slice() {
        [arch] => ("linux", *arch, ""),
        [os, arch] => (*os, *arch, ""),
        [os, arch, variant] => (*os, *arch, *variant),
        _ => bail!("invalid platform {text:?}: use os/arch[/variant], e.g. linux/arm64"),
    };
    if os.is_empty() || arch.is_empty() {
        bail!("invalid platform {text:?}: use os/arch[/variant], e.g. linux/arm64");
    }
    let mut platform = Platform::host();
    platform.os = os.to_string();
    platform.architecture = arch.to_string();
    platform.variant = variant.to_string();
    Ok(platform)
}

#[cfg(test)]
mod tests {
    #[test]
    fn platforms_parse_as_docker_writes_them() {
        let p = super::parse_platform("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            super::parse_platform("amd64").unwrap().to_string(),
            "linux/amd64"
        );
        let e = super::parse_platform("a/b/c/d").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid platform \"a/b/c/d\": use os/arch[/variant], e.g. linux/arm64"
        );
    }
}
