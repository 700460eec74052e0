//! Writing images from the store to an archive (`ferry save`).
//!
//! The default archive is what Docker 25 and later and nerdctl write: an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/...`) that also carries Docker's `manifest.json`,
//! so both OCI readers (`skopeo copy oci-archive:...`) and Docker readers (`docker load`,
//! `skopeo copy docker-archive:...`) take it. The OCI format leaves `manifest.json` out. Blobs
//! are written as stored (layers stay compressed as they were pulled), so every digest of the
//! image, the index's included, is the same after a load anywhere.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};

use ferry_content::Store;
use ferry_oci::{go_json, media, Descriptor, Digest, Index, Manifest, Platform, Reference};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Fail};
use crate::json;
use crate::push::PlatformChoice;

/// containerd's annotation for the full image name of an index.json entry.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for an entry's reference name (the tag, as containerd writes it).
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The kind of archive to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An OCI layout with Docker's `manifest.json` beside it (Docker 25+, nerdctl).
    #[default]
    Docker,
    /// A plain OCI layout in a tar (`skopeo copy ... oci-archive:`).
    Oci,
}

/// An image to save: the name it goes by (if any) and its top descriptor.
#[derive(Clone, Debug)]
pub struct SaveImage {
    /// The normalised name (`docker.io/library/busybox:latest`), written into the archive so a
    /// load names the image again; `None` (or a name that is no registry reference) saves it
    /// unnamed.
    pub name: Option<String>,
    /// The manifest or index in the store.
    pub target: Descriptor,
}

/// How to save.
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// Docker-compatible or plain OCI.
    pub format: ArchiveFormat,
    /// Which manifests of a multi-platform image go in: the default is every platform when all
    /// are in the store, else the host's alone; the index itself is always kept, so the image
    /// digest stays the same.
    pub platforms: PlatformChoice,
}

/// Writes `images` as one archive to `out` and returns `out`. Every blob the chosen manifests
/// name must be in the store, except layers with urls (non-distributable layers, which
/// archives leave out). Nothing is written before every image has been checked, so a missing
/// blob fails before the first byte.
pub fn save_archive<W: Write>(
    store: &Store,
    images: &[SaveImage],
    opts: &SaveOptions,
    out: W,
) -> Result<W, Error> {
    let mut plan = Plan::default();
    for image in images {
        let what = image
            .name
            .clone()
            .unwrap_or_else(|| image.target.digest.to_string());
        plan.add(store, image, opts)
            .map_err(|f| f.into_save(&what))?;
    }
    plan.write(store, opts, out)
        .map_err(|f| f.into_save("archive"))
}

/// One entry of Docker's `manifest.json`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// What an archive holds: the index.json entries, the Docker entries, the blobs in order.
#[derive(Default)]
struct Plan {
    entries: Vec<Descriptor>,
    docker: Vec<DockerEntry>,
    blobs: Vec<Digest>,
    seen: HashSet<Digest>,
}

impl Plan {
    fn add(&mut self, store: &Store, image: &SaveImage, opts: &SaveOptions) -> Result<(), Fail> {
        let top = &image.target;
        let bytes = json::read_document(store, top)?;
        let media_type = json::media_type_of(&bytes, &format!("manifest {}", top.digest))?;
        let mut manifests = Vec::new();
        if media::is_manifest(&media_type) {
            manifests.push((top.clone(), bytes.clone()));
        } else if media::is_index(&media_type) {
            let index: Index = json::decode(&bytes, &format!("index {}", top.digest))?;
            for entry in chosen(store, &index, &top.digest, &opts.platforms)? {
                let child = json::read_document(store, &entry)?;
                manifests.push((entry, child));
            }
        } else {
            let why = format!("{} has unknown media type {media_type}", top.digest);
            return Err(Fail::new(ErrorKind::Unsupported, why));
        }

        let mut docker_manifest = None;
        for (desc, bytes) in &manifests {
            let what = format!("manifest {}", desc.digest);
            let manifest: Manifest = json::decode(bytes, &what)?;
            self.blob(store, &manifest.config, &what)?;
            let mut layers = Vec::new();
            for layer in &manifest.layers {
                if !layer.urls.is_empty()
                    && layer.ipfs_url().is_none()
                    && !store.has_blob(&layer.digest)
                {
                    continue;
                }
                self.blob(store, layer, &what)?;
                layers.push(blob_name(&layer.digest));
            }
            // Docker's manifest.json holds one manifest per image: the host's when it is here.
            let host = desc
                .platform
                .as_ref()
                .is_some_and(|p| p.matches(&Platform::host()));
            if docker_manifest.is_none() || host {
                docker_manifest = Some(DockerEntry {
                    config: blob_name(&manifest.config.digest),
                    repo_tags: Vec::new(),
                    layers,
                });
            }
            self.push_blob(&desc.digest);
        }
        self.push_blob(&top.digest);

        let mut entry = top.clone();
        entry.media_type = media_type;
        let reference = image
            .name
            .as_deref()
            .and_then(|n| n.parse::<Reference>().ok());
        if let Some(Reference::Registry { tag, .. }) = &reference {
            let name = image.name.clone().unwrap_or_default();
            entry.annotations.insert(CONTAINERD_NAME.into(), name);
            if let Some(tag) = tag {
                entry.annotations.insert(OCI_REF_NAME.into(), tag.clone());
            }
        }
        if let Some(mut docker) = docker_manifest {
            if let Some(r @ Reference::Registry { tag: Some(_), .. }) = &reference {
                docker.repo_tags.push(familiar(r));
            }
            match self.docker.iter_mut().find(|d| d.config == docker.config) {
                Some(same) => same.repo_tags.append(&mut docker.repo_tags),
                None => self.docker.push(docker),
            }
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Queues a config or layer blob, which must be in the store.
    fn blob(&mut self, store: &Store, d: &Descriptor, what: &str) -> Result<(), Fail> {
        if !store.has_blob(&d.digest) {
            let why = format!("{what}: blob {} is not in the store", d.digest);
            return Err(Fail::new(ErrorKind::NotFound, why));
        }
        self.push_blob(&d.digest);
        Ok(())
    }

    fn push_blob(&mut self, digest: &Digest) {
        if self.seen.insert(digest.clone()) {
            self.blobs.push(digest.clone());
        }
    }

    fn write<W: Write>(self, store: &Store, opts: &SaveOptions, out: W) -> Result<W, Fail> {
        let mut tar = tar::Builder::new(out);
        let fail = |e: io::Error| Fail::io(std::path::Path::new(""), e).context("write");
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(fail)?;
        append_dir(&mut tar, "blobs/").map_err(fail)?;
        append_dir(&mut tar, "blobs/sha256/").map_err(fail)?;
        for digest in &self.blobs {
            let mut file = store
                .open_blob(digest)
                .map_err(|e| Fail::store(digest, e))?;
            let size = file
                .metadata()
                .map_err(|e| Fail::io(&store.blob_path(digest), e))?
                .len();
            let mut header = header(tar::EntryType::Regular, size);
            tar.append_data(&mut header, blob_name(digest), &mut file)
                .map_err(fail)?;
        }
        let index = Index {
            schema_version: 2,
            media_type: media::OCI_INDEX.to_string(),
            artifact_type: String::new(),
            manifests: self.entries,
            subject: None,
            annotations: BTreeMap::new(),
        };
        let index = go_json::to_vec(&index).map_err(|e| Fail::invalid(format!("index: {e}")))?;
        append(&mut tar, "index.json", &index).map_err(fail)?;
        if opts.format == ArchiveFormat::Docker {
            let manifest = serde_json::to_vec(&self.docker)
                .map_err(|e| Fail::invalid(format!("manifest.json: {e}")))?;
            append(&mut tar, "manifest.json", &manifest).map_err(fail)?;
        }
        tar.into_inner().map_err(fail)
    }
}

/// The manifests of `index` that go in the archive.
fn chosen(
    store: &Store,
    index: &Index,
    digest: &Digest,
    choice: &PlatformChoice,
) -> Result<Vec<Descriptor>, Fail> {
    let for_platform = |p: &Platform| {
        index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|q| q.matches(p)))
            .cloned()
            .ok_or_else(|| {
                let why = format!("index {digest} has no manifest for {p}");
                Fail::new(ErrorKind::NotFound, why)
            })
    };
    let all_here = index.manifests.iter().all(|d| store.has_blob(&d.digest));
    Ok(match choice {
        PlatformChoice::One(p) => vec![for_platform(p)?],
        PlatformChoice::Default if !all_here => vec![for_platform(&Platform::host())?],
        PlatformChoice::Default | PlatformChoice::All => index.manifests.clone(),
    })
}

/// Where a blob lives in the archive.
fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// A name as Docker prints it (`docker.io/library/busybox:1` -> `busybox:1`).
fn familiar(reference: &Reference) -> String {
    let text = reference.to_string();
    let short = text.strip_prefix("docker.io/").unwrap_or(&text);
    short.strip_prefix("library/").unwrap_or(short).to_string()
}

/// A tar header of a file or directory as Docker writes them: root-owned, time zero.
fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = header(tar::EntryType::Regular, bytes.len() as u64);
    tar.append_data(&mut header, name, bytes)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut header = header(tar::EntryType::Directory, 0);
    tar.append_data(&mut header, name, io::empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn docker_names_are_familiar() {
        let r = "busybox".parse().unwrap();
        assert_eq!(super::familiar(&r), "busybox:latest");
        let r = "127.0.0.1:5000/a/b:t".parse().unwrap();
        assert_eq!(super::familiar(&r), "127.0.0.1:5000/a/b:t");
    }
}
