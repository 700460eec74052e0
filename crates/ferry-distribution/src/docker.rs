//! Docker archives (`docker save`): a `manifest.json` listing each image's config and layer
//! files, and no image manifest, so one is written here.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use ferry_content::Store;
use ferry_oci::{go_json, media, Descriptor, Digest, Manifest, Platform};
use serde::Deserialize;

use crate::archive::{entry_name, normalize, LoadedImage, Source};
use crate::error::Fail;
use crate::json;

/// One image of `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// The parts of an image config read here.
#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: String,
    #[serde(default)]
    rootfs: RootFs,
}

#[derive(Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

/// One image of the archive, ready to store.
struct Image {
    manifest: Vec<u8>,
    /// `(archive name, digest, size)` of the config and each layer.
    files: Vec<(String, Digest, u64)>,
    images: Vec<LoadedImage>,
}

/// Stores every image of the Docker archive in `source` and returns them (nothing is bound
/// here): one entry per RepoTag, or one unnamed entry for an image without tags.
pub(crate) fn load(store: &Store, source: &Source) -> Result<Vec<LoadedImage>, Fail> {
    let bytes = source.read_json("manifest.json", "manifest.json")?;
    let entries: Vec<Entry> = json::decode(&bytes, "manifest.json")?;
    let images = entries
        .iter()
        .map(|e| synthesize(source, e))
        .collect::<Result<Vec<_>, _>>()?;

    let mut loaded = Vec::new();
    for image in images {
        for (name, digest, size) in &image.files {
            source.import(store, name, digest, size.to_owned())?;
        }
        let digest = Digest::of(&image.manifest);
        store
            .write_blob(&image.manifest, Some(&digest))
            .map_err(|e| Fail::store(&digest, e))?;
        loaded.extend(image.images);
    }
    Ok(loaded)
}

/// Writes the Docker schema 2 manifest of one `manifest.json` entry, as containerd's importer
/// writes it (`core/images/archive/importer.go`): `schemaVersion`, `mediaType`, `config`,
/// `layers`, in Go's JSON encoding, over the files as stored. The target of each RepoTag is
/// the manifest's descriptor with the config's platform and containerd's two name
/// annotations, as `ctr images import` binds it.
fn synthesize(source: &Source, entry: &Entry) -> Result<Image, Fail> {
    let config_name = archive_name(&entry.config)?;
    let config_what = format!("config {config_name}");
    let (config_digest, config_size) = source.hash(&config_name, &config_what)?;
    let config: Config =
        json::decode(&source.read_json(&config_name, &config_what)?, &config_what)?;
    let mut files = vec![(config_name, config_digest.clone(), config_size)];

    let layers = layers(source, entry, &config, &config_digest, &mut files)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: media::DOCKER_MANIFEST.to_string(),
        artifact_type: String::new(),
        config: Descriptor::new(media::DOCKER_CONFIG, config_digest, config_size),
        layers,
        subject: None,
        annotations: BTreeMap::new(),
    };
    let bytes = go_json::to_vec(&manifest)
        .map_err(|e| Fail::invalid(format!("manifest of {}: {e}", entry.config)))?;
    let mut target = Descriptor::new(
        media::DOCKER_MANIFEST,
        Digest::of(&bytes),
        bytes.len() as u64,
    );
    target.platform = Some(platform_of(&config));

    let images = match entry.repo_tags.as_deref() {
        None | Some([]) => vec![LoadedImage { name: None, target }],
        Some(tags) => tags
            .iter()
            .map(|t| tagged(&target, t))
            .collect::<Result<_, _>>()?,
    };
    Ok(Image {
        manifest: bytes,
        files,
        images,
    })
}

/// The layer descriptors of an entry, each checked against the config's diff ID when it is
/// stored uncompressed (its digest then is the diff ID).
fn layers(
    source: &Source,
    entry: &Entry,
    config: &Config,
    config_digest: &Digest,
    files: &mut Vec<(String, Digest, u64)>,
) -> Result<Vec<Descriptor>, Fail> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != entry.layers.len() {
        let why = format!(
            "config {config_digest} lists {} diff IDs for {} layers",
            diff_ids.len(),
            entry.layers.len()
        );
        return Err(Fail::invalid(why));
    }
    let mut layers = Vec::new();
    for (layer, diff_id) in entry.layers.iter().zip(diff_ids) {
        let name = archive_name(layer)?;
        let (digest, size) = source.hash(&name, &format!("layer {name}"))?;
        let path = source.path(&name).unwrap_or_default();
        let media_type = layer_media_type(&path)?;
        if media_type == media::DOCKER_LAYER_TAR && digest != *diff_id {
            let why = format!("layer {name} ({digest}) does not match diff ID {diff_id}");
            return Err(Fail::invalid(why));
        }
        layers.push(Descriptor::new(media_type, digest.clone(), size));
        files.push((name, digest, size));
    }
    Ok(layers)
}

/// A manifest.json path as a normalised archive name, refusing absolute and `..` paths.
fn archive_name(path: &str) -> Result<String, Fail> {
    let outside = || {
        Fail::invalid(format!(
            "manifest.json names file {path:?} outside the archive"
        ))
    };
    entry_name(Path::new(path))
        .map_err(|_| outside())?
        .ok_or_else(outside)
}

/// The media type of a layer by its first bytes: gzip (`1f 8b`) or plain tar, as containerd
/// detects them. zstd (`28 b5 2f fd`) gets the OCI zstd type; containerd would call it gzip,
/// which no unpacker could then read.
fn layer_media_type(path: &Path) -> Result<&'static str, Fail> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(|e| Fail::io(path, e))?;
    let mut n = 0;
    while n < magic.len() {
        let read = file.read(&mut magic[n..]).map_err(|e| Fail::io(path, e))?;
        if read == 0 {
            break;
        }
        n += read;
    }
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => media::DOCKER_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd] => media::OCI_LAYER_ZSTD,
        _ => media::DOCKER_LAYER_TAR,
    })
}

/// The platform containerd records for an imported manifest: the config's, normalised.
fn platform_of(config: &Config) -> Platform {
    let architecture = match config.architecture.as_str() {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let variant = match (architecture, config.variant.as_str()) {
        ("arm64", "8" | "v8") | ("amd64", "v1") => "",
        (_, v) => v,
    };
    Platform {
        architecture: architecture.to_string(),
        os: config.os.to_lowercase(),
        os_version: String::new(),
        os_features: Vec::new(),
        variant: variant.to_string(),
    }
}

/// The target bound for one RepoTag: the normalised name and, as annotations, the name and
/// its tag (containerd's `io.containerd.image.name` and `org.opencontainers.image.ref.name`).
fn tagged(target: &Descriptor, tag: &str) -> Result<LoadedImage, Fail> {
    let (name, reference) = normalize(tag)?;
    let mut target = target.clone();
    let ref_name = match &reference {
        ferry_oci::Reference::Registry { tag: Some(t), .. } => t.clone(),
        _ => String::new(),
    };
    target
        .annotations
        .insert("io.containerd.image.name".to_string(), name.clone());
    target
        .annotations
        .insert("org.opencontainers.image.ref.name".to_string(), ref_name);
    Ok(LoadedImage {
        name: Some(name),
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_json_paths_must_stay_inside() {
        assert_eq!(archive_name("./abc/layer.tar").unwrap(), "abc/layer.tar");
        assert_eq!(
            archive_name("../x").unwrap_err().why,
            "manifest.json names file \"../x\" outside the archive"
        );
        assert!(archive_name("/etc/passwd").is_err());
    }
}
