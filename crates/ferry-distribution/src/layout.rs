//! OCI image layouts (image-spec `image-layout.md`), as directories or archives.

use std::collections::HashSet;

use ferry_content::Store;
use ferry_oci::{media, Descriptor, Digest, Index, Manifest};
use serde::Deserialize;

use crate::archive::{normalize, LoadedImage, Source};
use crate::error::{ErrorKind, Fail};
use crate::json;

/// containerd's annotation for the full image name of an index.json entry.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for an entry's reference name (often just a tag).
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// How deep indexes may nest inside indexes.
const MAX_DEPTH: usize = 8;

/// Stores every image of the layout in `source` and returns them (nothing is bound here).
/// Tag-only names are completed with `stem` (`busybox` + `latest`).
pub(crate) fn load(store: &Store, source: &Source, stem: &str) -> Result<Vec<LoadedImage>, Fail> {
    check_version(source)?;
    let bytes = source.read_json("index.json", "index.json")?;
    let index: Index = json::decode(&bytes, "index.json")?;

    let mut walk = Walk {
        source,
        blobs: Vec::new(),
        seen: HashSet::new(),
    };
    let mut images = Vec::new();
    for entry in &index.manifests {
        let mut target = entry.clone();
        let media_type = walk.visit(entry, 0)?;
        // The entry is bound as it is, annotations and all (they change the IPFS image CID,
        // reference/nerdctl-ipfs.md 1.3a); only a missing media type is filled in.
        if target.media_type.is_empty() {
            target.media_type = media_type;
        }
        images.push(LoadedImage {
            name: entry_name(entry, stem)?,
            target,
        });
    }

    // Children were pushed before their parents, so a parent never lands before its content.
    for d in &walk.blobs {
        source.import(store, &blob_name(&d.digest), &d.digest, d.size)?;
    }
    Ok(images)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutFile {
    image_layout_version: String,
}

/// Refuses a layout version this reader does not know (`oci-layout` may be absent in a
/// directory that only has `index.json`).
fn check_version(source: &Source) -> Result<(), Fail> {
    if !source.exists("oci-layout") {
        return Ok(());
    }
    let bytes = source.read_json("oci-layout", "oci-layout")?;
    let layout: LayoutFile = json::decode(&bytes, "oci-layout")?;
    if layout.image_layout_version != "1.0.0" {
        let why = format!(
            "OCI layout version {} is not 1.0.0",
            layout.image_layout_version
        );
        return Err(Fail::new(ErrorKind::Unsupported, why));
    }
    Ok(())
}

/// Where a blob lives in a layout.
fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// The image name of an index.json entry: containerd's full name, else the OCI ref name,
/// which is either a full reference (`reg:5000/a:t`) or only a tag (then `<stem>:<tag>`).
fn entry_name(entry: &Descriptor, stem: &str) -> Result<Option<String>, Fail> {
    if let Some(name) = entry.annotations.get(CONTAINERD_NAME) {
        return Ok(Some(normalize(name)?.0));
    }
    let Some(ref_name) = entry.annotations.get(OCI_REF_NAME) else {
        return Ok(None);
    };
    if ref_name.contains(['/', ':', '@']) {
        return Ok(Some(normalize(ref_name)?.0));
    }
    // The stem is a file name, which need not be a valid repository: then the image is
    // stored unnamed rather than failing the load.
    match normalize(&format!("{stem}:{ref_name}")) {
        Ok((name, _)) => Ok(Some(name)),
        Err(f) => {
            tracing::warn!(stem, tag = %ref_name, why = %f.why, "image left unnamed");
            Ok(None)
        }
    }
}

/// A walk from index.json entries down to every blob, checking each on the way.
struct Walk<'s> {
    source: &'s Source,
    /// Blobs to import, children before parents.
    blobs: Vec<Descriptor>,
    seen: HashSet<Digest>,
}

impl Walk<'_> {
    /// Checks the blob `d` and everything under it; returns its media type.
    fn visit(&mut self, d: &Descriptor, depth: usize) -> Result<String, Fail> {
        let is_document = d.media_type.is_empty()
            || media::is_index(&d.media_type)
            || media::is_manifest(&d.media_type);
        if !is_document {
            self.require(d)?;
            return Ok(d.media_type.clone());
        }
        if depth > MAX_DEPTH {
            return Err(Fail::invalid(format!(
                "index {}: nested deeper than {MAX_DEPTH}",
                d.digest
            )));
        }

        let bytes = self.read_document(d)?;
        let media_type = json::media_type_of(&bytes, &format!("manifest {}", d.digest))?;
        if self.seen.contains(&d.digest) {
            return Ok(media_type);
        }
        if media::is_index(&media_type) {
            self.visit_index(&bytes, &d.digest, depth)?;
        } else if media::is_manifest(&media_type) {
            self.visit_manifest(&bytes, &d.digest)?;
        }
        self.seen.insert(d.digest.clone());
        self.blobs.push(d.clone());
        Ok(media_type)
    }

    /// Reads a manifest or index, verified against its descriptor.
    fn read_document(&self, d: &Descriptor) -> Result<Vec<u8>, Fail> {
        let what = format!("manifest {}", d.digest);
        let bytes = self.source.read_json(&blob_name(&d.digest), &what)?;
        let actual = Digest::of(&bytes);
        if actual != d.digest {
            return Err(Fail::invalid(format!(
                "{what}: digest mismatch: archive holds {actual}"
            )));
        }
        if bytes.len() as u64 != d.size {
            let why = format!(
                "{what}: size mismatch: {} bytes, {} expected",
                bytes.len(),
                d.size
            );
            return Err(Fail::invalid(why));
        }
        Ok(bytes)
    }

    fn visit_index(&mut self, bytes: &[u8], digest: &Digest, depth: usize) -> Result<(), Fail> {
        let index: Index = json::decode(bytes, &format!("index {digest}"))?;
        for child in &index.manifests {
            // An archive may hold only some platforms of an index (`ctr export --platform`);
            // the manifests it holds must be whole, the others are not part of it.
            if media::is_manifest(&child.media_type)
                && !self.source.exists(&blob_name(&child.digest))
            {
                tracing::debug!(manifest = %child.digest, "platform not in the archive");
                continue;
            }
            self.visit(child, depth + 1)?;
        }
        Ok(())
    }

    fn visit_manifest(&mut self, bytes: &[u8], digest: &Digest) -> Result<(), Fail> {
        let manifest: Manifest = json::decode(bytes, &format!("manifest {digest}"))?;
        self.require(&manifest.config)?;
        for layer in &manifest.layers {
            // Non-distributable layers (Windows base layers) are fetched from their urls, so
            // archives may leave them out; other layers with urls (the ipfs:// ones of an image
            // copied from the registry endpoint) must be in the archive.
            let foreign = layer.media_type.contains("nondistributable")
                || layer.media_type.contains("foreign");
            if foreign && !layer.urls.is_empty() && !self.source.exists(&blob_name(&layer.digest)) {
                continue;
            }
            self.require(layer)?;
        }
        Ok(())
    }

    /// Checks a config or layer blob and queues it for import.
    fn require(&mut self, d: &Descriptor) -> Result<(), Fail> {
        if self.seen.insert(d.digest.clone()) {
            self.source.check(&blob_name(&d.digest), d)?;
            self.blobs.push(d.clone());
        }
        Ok(())
    }
}
