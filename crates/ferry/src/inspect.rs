//! `ferry image inspect` and the digest and JSON forms of `ferry images`.

use anyhow::{bail, Context as _, Result};
use ferry_content::Store;
use ferry_oci::{media, Descriptor, ImageConfig, Index, Platform, Reference};
use serde_json::{json, Value};

use crate::cli::{ImageInspectArgs, ImagesArgs};
use crate::commands::{find_image, print_table, split_name, summary};
use crate::context::Context;
use crate::output::{ago, human_size};

/// `ferry images -q`, `--digests` and `--format json`.
pub fn images(ctx: &Context, args: &ImagesArgs) -> Result<()> {
    let json = match args.format.as_str() {
        "json" => true,
        "table" => false,
        other => bail!("unknown format {other:?}: use table or json"),
    };
    let now = chrono::Utc::now();
    let mut rows =
        vec![["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"].map(String::from)];
    for image in ctx.store.list_images()? {
        if args.quiet {
            outln!("{}", image.target.digest.short());
            continue;
        }
        let (created, size) = summary(&ctx.store, &image.target).unwrap_or((None, 0));
        let (repository, tag) = split_name(&image.name);
        let digest = image.target.digest.to_string();
        let since = created.map_or("-".into(), |c| ago((now - c).num_seconds()));
        if json {
            let line = json!({
                "Repository": repository,
                "Tag": tag,
                "Digest": digest,
                "ID": image.target.digest.short(),
                "CreatedAt": created.map(|c| c.to_rfc3339()),
                "CreatedSince": since,
                "Size": human_size(size),
            });
            outln!("{line}");
        } else {
            let id = image.target.digest.short();
            rows.push([repository, tag, digest, id, since, human_size(size)]);
        }
    }
    if !json && !args.quiet {
        print_table(&rows);
    }
    Ok(())
}

/// `ferry image inspect IMAGE...`: a JSON array, one object per image.
pub fn inspect(ctx: &Context, args: &ImageInspectArgs) -> Result<()> {
    let platform = match &args.platform {
        Some(p) => crate::images::parse_platform(p)?,
        None => Platform::host(),
    };
    let mut out = Vec::new();
    for text in &args.images {
        let image = find_image(&ctx.store, text)?;
        out.push(
            describe(&ctx.store, &image.target, &platform)
                .with_context(|| format!("inspect {}", image.name))?,
        );
    }
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// What `image inspect` shows of one image: docker's fields (`Id`, `RepoTags`,
/// `RepoDigests`, `Created`, `Os`, `Architecture`, `Size`, `RootFS`, `Config`) and the
/// documents themselves (`Descriptor`, `Index`, `Manifest`, `ImageConfig`).
fn describe(store: &Store, target: &Descriptor, platform: &Platform) -> Result<Value> {
    let names: Vec<String> = store
        .list_images()?
        .into_iter()
        .filter(|i| i.target.digest == target.digest)
        .map(|i| i.name)
        .collect();
    let repo_digests: Vec<String> = names
        .iter()
        .filter_map(|n| match n.parse::<Reference>() {
            Ok(Reference::Registry {
                domain, repository, ..
            }) => Some(format!("{domain}/{repository}@{}", target.digest)),
            _ => None,
        })
        .collect();

    let top: Value = serde_json::from_slice(&store.read_blob(&target.digest)?)
        .with_context(|| format!("manifest {}", target.digest))?;
    let (index, manifest_desc) = if media::is_index(&target.media_type) {
        let index: Index = serde_json::from_value(top.clone())?;
        let entry = index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_none_or(|p| p.matches(platform)))
            .cloned();
        (Some(top.clone()), entry)
    } else {
        (None, Some(target.clone()))
    };
    let mut value = json!({
        "Id": target.digest.to_string(),
        "RepoTags": names,
        "RepoDigests": repo_digests,
        "Descriptor": target,
    });
    if let Some(index) = index {
        value["Index"] = index;
    }
    let Some(manifest_desc) = manifest_desc.filter(|d| store.has_blob(&d.digest)) else {
        // A multi-platform image whose manifest for this platform was not pulled.
        return Ok(value);
    };
    let manifest: Value = serde_json::from_slice(&store.read_blob(&manifest_desc.digest)?)?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .context("manifest without a config")?
        .parse()?;
    let config_bytes = store.read_blob(&config_digest)?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("image config {config_digest}"))?;
    let config_json: Value = serde_json::from_slice(&config_bytes)?;
    let size = summary(store, target).map_or(0, |(_, s)| s);
    value["ManifestDescriptor"] = serde_json::to_value(&manifest_desc)?;
    value["Manifest"] = manifest;
    value["Created"] = json!(config.created);
    value["Os"] = json!(config.os);
    value["Architecture"] = json!(config.architecture);
    value["Size"] = json!(size);
    value["RootFS"] = json!({"Type": config.rootfs.kind, "Layers": config.rootfs.diff_ids});
    value["Config"] = config_json["config"].clone();
    value["ImageConfig"] = config_json;
    Ok(value)
}
