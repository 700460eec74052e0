//! Converting an image's layers to eStargz (formats.md section 5), through the same walk over
//! index, manifests and configs as recompression (`compress.rs`).
//!
//! A layer whose descriptor already names a TOC digest is kept as it is when its TOC matches
//! that digest and every chunk matches the TOC (as nerdctl reuses such layers); any other layer
//! is decompressed, checked against its diff_id and built anew. A new layer is an OCI gzip
//! layer annotated with its TOC digest and uncompressed size, and the config gets its new
//! diff_id.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};

use ferry_content::Store;
use ferry_estargz::{BuildOptions, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION};
use ferry_oci::{media, Descriptor, Digest, Platform};
use sha2::{Digest as _, Sha256};

use crate::compress::{Converter, Format};
use crate::error::{Error, Fail};

/// How `ferry image convert --estargz` / `ferry push --estargz` build layers.
#[derive(Clone, Debug, Default)]
pub struct EstargzOptions {
    /// Chunk size, compression level and prioritized files (the spool directory is the
    /// store's).
    pub build: BuildOptions,
    /// Write every manifest and index with OCI media types, also those whose layers were all
    /// kept (`--oci`). Manifests with a converted layer are always OCI.
    pub oci: bool,
}

/// What happened to a layer, for progress lines.
#[derive(Debug)]
pub enum ConvertEvent<'a> {
    /// An eStargz layer kept as it is: its TOC and chunks checked out.
    Reused {
        /// The layer.
        layer: &'a Descriptor,
    },
    /// A layer that claims to be eStargz but failed the check, so it is converted again.
    NotReusable {
        /// The layer.
        layer: &'a Descriptor,
        /// Why the check failed.
        why: String,
    },
    /// A layer written anew as eStargz.
    Converted {
        /// The layer it was.
        from: &'a Descriptor,
        /// The eStargz layer.
        to: &'a Descriptor,
        /// Prioritized files this layer does not hold.
        missing: &'a [String],
    },
}

/// Converts the layers of `target`'s manifests for `platform` (every manifest with `None`; the
/// others are left out of the index) to eStargz, stores the new blobs, configs, manifests and
/// index, and returns the new top descriptor. Blocking: call it from a blocking context.
pub fn convert_estargz(
    store: &Store,
    target: &Descriptor,
    opts: &EstargzOptions,
    platform: Option<&Platform>,
    progress: &(dyn Fn(ConvertEvent) + Sync),
) -> Result<Descriptor, Error> {
    let mut converter = Converter {
        store,
        format: Format::Estargz(opts),
        done: HashMap::new(),
        all_oci: opts.oci,
        progress,
    };
    converter
        .image(target, platform)
        .map_err(|f| f.into_convert(&target.digest.to_string()))
}

impl Converter<'_> {
    /// One layer to eStargz: kept when it already is one, else built from its tar stream.
    pub(crate) fn estargz_layer(
        &mut self,
        layer: &Descriptor,
        diff_id: Option<&Digest>,
        opts: &EstargzOptions,
    ) -> Result<(Descriptor, Option<Digest>), Fail> {
        let what = format!("layer {}", layer.digest);
        if let Some(toc) = layer.annotations.get(TOC_DIGEST_ANNOTATION) {
            match self.check_estargz(layer, toc) {
                Ok(()) => {
                    (self.progress)(ConvertEvent::Reused { layer });
                    let mut same = layer.clone();
                    same.media_type = media::to_oci(&layer.media_type).to_string();
                    self.done.insert(layer.digest.clone(), (same.clone(), None));
                    return Ok((same, None));
                }
                Err(why) => (self.progress)(ConvertEvent::NotReusable { layer, why }),
            }
        }

        let file = self
            .store
            .open_blob(&layer.digest)
            .map_err(|e| Fail::store(&layer.digest, e))?;
        let tar = ferry_snapshot::decompress(Box::new(BufReader::new(file)))
            .map_err(|e| Fail::invalid(format!("{what}: {e}")))?;
        let mut tar = HashingReader {
            inner: BufReader::new(tar),
            hash: Sha256::new(),
        };
        let spool = self
            .store
            .scratch_dir("estargz-")
            .map_err(|e| Fail::store(&layer.digest, e))?;
        let build = BuildOptions {
            spool_dir: Some(spool.path().to_path_buf()),
            ..opts.build.clone()
        };
        let mut ingest = self
            .store
            .ingest()
            .map_err(|e| Fail::store(&layer.digest, e))?;
        let built = ferry_estargz::build(&mut tar, &mut ingest, &build)
            .map_err(|e| Fail::invalid(format!("{what}: {e}")))?;
        // What follows the tar's end blocks is part of the diff_id too.
        io::copy(&mut tar, &mut io::sink())
            .map_err(|e| Fail::invalid(format!("{what}: decompress: {e}")))?;
        let plain = Digest::from_bytes(tar.hash.finalize().into());
        if let Some(diff_id) = diff_id.filter(|d| **d != plain) {
            let why = format!("{what}: uncompressed it is {plain}, the config says {diff_id}");
            return Err(Fail::invalid(why));
        }
        let (digest, size) = ingest
            .commit(Some((&built.digest, built.size)))
            .map_err(|e| Fail::store(&layer.digest, e))?;

        let mut out = Descriptor::new(media::OCI_LAYER_GZIP, digest, size);
        // The old urls (ipfs://) name the old blob: never carried over.
        out.annotations = layer.annotations.clone();
        out.annotations
            .insert(TOC_DIGEST_ANNOTATION.into(), built.toc_digest.to_string());
        out.annotations.insert(
            UNCOMPRESSED_SIZE_ANNOTATION.into(),
            built.uncompressed_size.to_string(),
        );
        tracing::debug!(from = %layer.digest, to = %out.digest, "layer converted to eStargz");
        (self.progress)(ConvertEvent::Converted {
            from: layer,
            to: &out,
            missing: &built.missing_prioritized,
        });
        let result = (out, Some(built.diff_id));
        self.done.insert(layer.digest.clone(), result.clone());
        Ok(result)
    }

    /// Whether a layer that names a TOC digest is a sound eStargz: why not, if it is not.
    fn check_estargz(&self, layer: &Descriptor, toc: &str) -> Result<(), String> {
        let want: Digest = toc
            .parse()
            .map_err(|e| format!("{TOC_DIGEST_ANNOTATION} {toc:?}: {e}"))?;
        let mut file = self
            .store
            .open_blob(&layer.digest)
            .map_err(|e| e.to_string())?;
        ferry_estargz::verify_layer(&mut file, layer.size, &want).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Hashes what is read through it (the layer's decompressed stream, for its diff_id).
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ferry_oci::{go_json, Manifest};

    use super::*;

    /// A one-layer image whose layer claims a TOC digest it does not have.
    fn image(store: &Store) -> (Descriptor, Digest) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "a", &b"abc"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let diff_id = Digest::of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let layer_digest = store.write_blob(&gz, None).unwrap();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        let config_digest = store.write_blob(config.as_bytes(), None).unwrap();
        let mut layer = Descriptor::new(media::DOCKER_LAYER_GZIP, layer_digest, gz.len() as u64);
        let bogus = Digest::of(b"not a toc").to_string();
        layer
            .annotations
            .insert(TOC_DIGEST_ANNOTATION.into(), bogus);
        let manifest = Manifest {
            schema_version: 2,
            media_type: media::DOCKER_MANIFEST.into(),
            artifact_type: String::new(),
            config: Descriptor::new(media::DOCKER_CONFIG, config_digest, config.len() as u64),
            layers: vec![layer],
            subject: None,
            annotations: Default::default(),
        };
        let bytes = go_json::to_vec(&manifest).unwrap();
        let digest = store.write_blob(&bytes, None).unwrap();
        let desc = Descriptor::new(media::DOCKER_MANIFEST, digest, bytes.len() as u64);
        (desc, diff_id)
    }

    #[test]
    fn a_layer_whose_toc_does_not_check_out_is_converted_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (target, old_diff_id) = image(&store);
        let events = Mutex::new(Vec::new());
        let progress = |e: ConvertEvent| {
            let line = match e {
                ConvertEvent::Reused { .. } => "reused".to_string(),
                ConvertEvent::NotReusable { why, .. } => format!("not reusable: {why}"),
                ConvertEvent::Converted { .. } => "converted".to_string(),
            };
            events.lock().unwrap().push(line);
        };
        let opts = EstargzOptions::default();
        let out = convert_estargz(&store, &target, &opts, None, &progress).unwrap();
        let events = events.into_inner().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0],
            "not reusable: not an eStargz footer: no gzip header with an Extra field"
        );
        assert_eq!(events[1], "converted");

        assert_eq!(out.media_type, media::OCI_MANIFEST);
        let manifest: Manifest =
            serde_json::from_slice(&store.read_blob(&out.digest).unwrap()).unwrap();
        assert_eq!(manifest.config.media_type, media::OCI_CONFIG);
        let layer = &manifest.layers[0];
        assert_eq!(layer.media_type, media::OCI_LAYER_GZIP);
        let mut file = store.open_blob(&layer.digest).unwrap();
        let toc: Digest = layer.annotations[TOC_DIGEST_ANNOTATION].parse().unwrap();
        let read = ferry_estargz::verify_layer(&mut file, layer.size, &toc).unwrap();
        assert_eq!(read.toc.entries[1].name, "a");
        let config: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&manifest.config.digest).unwrap()).unwrap();
        let new_diff_id = config["rootfs"]["diff_ids"][0].as_str().unwrap();
        assert_ne!(new_diff_id, old_diff_id.to_string());
        let mut plain = Vec::new();
        let blob = store.read_blob(&layer.digest).unwrap();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(new_diff_id, Digest::of(&plain).to_string());
        assert_eq!(config["architecture"], "amd64");
    }
}
