//! Recompressing an image's layers (`ferry push --compression zstd|gzip`) and converting them
//! to eStargz (`ferry image convert --estargz`, `ferry push --estargz`; see `estargz.rs`).
//!
//! Each layer not already in the wanted compression is decompressed (gzip, zstd or plain, told
//! by its first bytes) and compressed again into a new blob; the uncompressed stream is checked
//! against the config's diff_id on the way. Recompression keeps the config (and so the image's
//! diff_ids) as it was; eStargz changes the stream (landmark, TOC), so the config is written
//! again with the new diff_ids. The manifests that change are written as OCI manifests
//! (Docker's media types have no zstd layer and no layer annotations), and an index as an OCI
//! index.

use ferry_content::Store;
use ferry_oci::{
    go_json, media, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Sha256Writer,
};
use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use crate::error::{Error, ErrorKind, Fail};
use crate::estargz::{ConvertEvent, EstargzOptions};
use crate::json;

/// The compression layers are converted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`application/vnd.oci.image.layer.v1.tar+gzip`).
    Gzip,
    /// zstd (`application/vnd.oci.image.layer.v1.tar+zstd`).
    Zstd,
}

impl Compression {
    /// The OCI layer media type of this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => media::OCI_LAYER_GZIP,
            Compression::Zstd => media::OCI_LAYER_ZSTD,
        }
    }

    /// Whether a blob starting with `head` is already compressed this way.
    fn matches(self, head: &[u8]) -> bool {
        match self {
            Compression::Gzip => head.starts_with(&[0x1f, 0x8b]),
            Compression::Zstd => head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Compression, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("unknown compression {other:?}: use gzip or zstd")),
        }
    }
}

/// Converts every layer of `target`'s manifests for `platform` (every manifest with `None`;
/// the others are left out of the index) to `compression`, stores the new blobs, manifests and
/// index, and returns the new top descriptor (the same one when nothing had to change).
/// Blocking: call it from a blocking context.
pub fn recompress(
    store: &Store,
    target: &Descriptor,
    compression: Compression,
    platform: Option<&Platform>,
) -> Result<Descriptor, Error> {
    let mut converter = Converter {
        store,
        format: Format::Compress(compression),
        done: HashMap::new(),
        all_oci: false,
        progress: &|_| {},
    };
    converter
        .image(target, platform)
        .map_err(|f| f.into_compress(&target.digest.to_string()))
}

/// What the layers become.
pub(crate) enum Format<'a> {
    Compress(Compression),
    Estargz(&'a EstargzOptions),
}

pub(crate) struct Converter<'a> {
    pub(crate) store: &'a Store,
    pub(crate) format: Format<'a>,
    /// Layers converted already (platforms share layers), with their new diff_id if it changed.
    pub(crate) done: HashMap<Digest, (Descriptor, Option<Digest>)>,
    /// Write every manifest and index with OCI media types, even those no layer changed in.
    pub(crate) all_oci: bool,
    pub(crate) progress: &'a (dyn Fn(ConvertEvent) + Sync),
}

impl Converter<'_> {
    pub(crate) fn image(
        &mut self,
        target: &Descriptor,
        platform: Option<&Platform>,
    ) -> Result<Descriptor, Fail> {
        if media::is_manifest(&target.media_type) {
            return self.manifest(target);
        }
        if !media::is_index(&target.media_type) {
            let why = format!(
                "{} has unknown media type {}",
                target.digest, target.media_type
            );
            return Err(Fail::new(ErrorKind::Unsupported, why));
        }
        let bytes = self.read(target)?;
        let mut index: Index = json::decode(&bytes, &format!("index {}", target.digest))?;
        let mut manifests = Vec::new();
        for entry in &index.manifests {
            let wanted = match (platform, &entry.platform) {
                (None, _) | (Some(_), None) => true,
                (Some(want), Some(have)) => have.matches(want),
            };
            if wanted {
                manifests.push(self.manifest(entry)?);
            }
        }
        if manifests.is_empty() {
            let which = platform.map_or("any platform".into(), |p| p.to_string());
            let why = format!("index {} has no manifest for {which}", target.digest);
            return Err(Fail::new(ErrorKind::NotFound, why));
        }
        let to_oci = self.all_oci && index.media_type != media::OCI_INDEX;
        if manifests == index.manifests && !to_oci {
            return Ok(target.clone());
        }
        index.manifests = manifests;
        index.media_type = media::OCI_INDEX.to_string();
        self.write(&index, target, media::OCI_INDEX)
    }

    fn manifest(&mut self, desc: &Descriptor) -> Result<Descriptor, Fail> {
        let what = format!("manifest {}", desc.digest);
        let bytes = self.read(desc)?;
        let mut manifest: Manifest = json::decode(&bytes, &what)?;
        let config_bytes = self
            .store
            .read_blob(&manifest.config.digest)
            .map_err(|e| Fail::store(&manifest.config.digest, e))?;
        let config: ImageConfig =
            json::decode(&config_bytes, &format!("config {}", manifest.config.digest))?;
        let mut changed = false;
        let mut diff_ids = config.rootfs.diff_ids.clone();
        for (i, layer) in manifest.layers.iter_mut().enumerate() {
            let (converted, diff_id) = self.layer(layer, config.rootfs.diff_ids.get(i))?;
            changed |= converted != *layer;
            *layer = converted;
            if let (Some(new), Some(old)) = (diff_id, diff_ids.get_mut(i)) {
                *old = new;
            }
        }
        let to_oci = self.all_oci && manifest.media_type != media::OCI_MANIFEST;
        if !changed && !to_oci {
            return Ok(desc.clone());
        }
        manifest.media_type = media::OCI_MANIFEST.to_string();
        manifest.config.media_type = media::to_oci(&manifest.config.media_type).to_string();
        for layer in &mut manifest.layers {
            layer.media_type = media::to_oci(&layer.media_type).to_string();
        }
        if diff_ids != config.rootfs.diff_ids {
            manifest.config = self.rewrite_config(&manifest.config, &config_bytes, &diff_ids)?;
        }
        self.write(&manifest, desc, media::OCI_MANIFEST)
    }

    /// The config with new diff_ids (other fields kept; keys come out sorted, as containerd's
    /// converter writes them).
    fn rewrite_config(
        &self,
        old: &Descriptor,
        bytes: &[u8],
        diff_ids: &[Digest],
    ) -> Result<Descriptor, Fail> {
        let what = format!("config {}", old.digest);
        let mut config: serde_json::Value = json::decode(bytes, &what)?;
        let ids = diff_ids.iter().map(|d| d.to_string().into()).collect();
        match config.pointer_mut("/rootfs/diff_ids") {
            Some(slot) => *slot = serde_json::Value::Array(ids),
            None => return Err(Fail::invalid(format!("{what} has no rootfs.diff_ids"))),
        }
        let bytes = go_json::to_vec(&config).map_err(|e| Fail::invalid(format!("{what}: {e}")))?;
        let digest = self
            .store
            .write_blob(&bytes, None)
            .map_err(|e| Fail::store(&old.digest, e))?;
        let mut desc = Descriptor::new(&old.media_type, digest, bytes.len() as u64);
        desc.annotations = old.annotations.clone();
        Ok(desc)
    }

    /// The layer converted, and its new diff_id when that changed.
    fn layer(
        &mut self,
        layer: &Descriptor,
        diff_id: Option<&Digest>,
    ) -> Result<(Descriptor, Option<Digest>), Fail> {
        if let Some(done) = self.done.get(&layer.digest) {
            return Ok(done.clone());
        }
        let what = format!("layer {}", layer.digest);
        if layer.media_type.ends_with("+encrypted") {
            let why = format!("{what} is encrypted (decrypt the image first)");
            return Err(Fail::new(ErrorKind::Unsupported, why));
        }
        if !self.store.has_blob(&layer.digest) && !layer.urls.is_empty() {
            // A non-distributable layer: fetched from its urls by whoever needs it.
            return Ok((layer.clone(), None));
        }
        let compression = match self.format {
            Format::Compress(c) => c,
            Format::Estargz(opts) => return self.estargz_layer(layer, diff_id, opts),
        };
        let path = self.store.blob_path(&layer.digest);
        let mut file = self
            .store
            .open_blob(&layer.digest)
            .map_err(|e| Fail::store(&layer.digest, e))?;
        let mut head = Vec::new();
        (&mut file)
            .take(4)
            .read_to_end(&mut head)
            .map_err(|e| Fail::io(&path, e))?;
        if compression.matches(&head) {
            // Kept as it is; only a media type that names another compression is corrected.
            let mut same = layer.clone();
            if media::to_oci(&layer.media_type) != compression.media_type() {
                same.media_type = compression.media_type().to_string();
            }
            self.done.insert(layer.digest.clone(), (same.clone(), None));
            return Ok((same, None));
        }

        let file = self
            .store
            .open_blob(&layer.digest)
            .map_err(|e| Fail::store(&layer.digest, e))?;
        let tar = ferry_snapshot::decompress(Box::new(BufReader::new(file)))
            .map_err(|e| Fail::invalid(format!("{what}: {e}")))?;
        let ingest = self
            .store
            .ingest()
            .map_err(|e| Fail::store(&layer.digest, e))?;
        let fail = |e: io::Error| Fail::io(Path::new(""), e).context(&what);
        let (plain, ingest) = match compression {
            Compression::Gzip => {
                let encoder = flate2::write::GzEncoder::new(ingest, flate2::Compression::default());
                let mut hashed = Sha256Writer::new(encoder);
                io::copy(&mut BufReader::new(tar), &mut hashed).map_err(fail)?;
                let (plain, _, encoder) = hashed.finish();
                (plain, encoder.finish().map_err(fail)?)
            }
            Compression::Zstd => {
                let encoder =
                    zstd::stream::write::Encoder::new(ingest, ZSTD_LEVEL).map_err(fail)?;
                let mut hashed = Sha256Writer::new(encoder);
                io::copy(&mut BufReader::new(tar), &mut hashed).map_err(fail)?;
                let (plain, _, encoder) = hashed.finish();
                (plain, encoder.finish().map_err(fail)?)
            }
        };
        if let Some(diff_id) = diff_id.filter(|d| **d != plain) {
            let why = format!("{what}: uncompressed it is {plain}, the config says {diff_id}");
            return Err(Fail::invalid(why));
        }
        let mut ingest = ingest;
        ingest.flush().map_err(fail)?;
        let (digest, size) = ingest
            .commit(None)
            .map_err(|e| Fail::store(&layer.digest, e))?;
        tracing::debug!(from = %layer.digest, to = %digest, size, "layer recompressed");
        let mut out = Descriptor::new(compression.media_type(), digest, size);
        // The old urls (ipfs://) name the old blob: never carried over.
        out.annotations = layer.annotations.clone();
        self.done.insert(layer.digest.clone(), (out.clone(), None));
        Ok((out, None))
    }

    fn read(&self, d: &Descriptor) -> Result<Vec<u8>, Fail> {
        json::read_document(self.store, d)
    }

    pub(crate) fn write<T: serde::Serialize>(
        &self,
        value: &T,
        old: &Descriptor,
        media_type: &str,
    ) -> Result<Descriptor, Fail> {
        let bytes = go_json::to_vec(value)
            .map_err(|e| Fail::invalid(format!("manifest {}: {e}", old.digest)))?;
        let digest = self
            .store
            .write_blob(&bytes, None)
            .map_err(|e| Fail::store(&old.digest, e))?;
        let mut desc = Descriptor::new(media_type, digest, bytes.len() as u64);
        desc.platform = old.platform.clone();
        desc.annotations = old.annotations.clone();
        Ok(desc)
    }
}

/// zstd's default level (what `zstd` and containerd use).
const ZSTD_LEVEL: i32 = 3;
