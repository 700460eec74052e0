//! Loading image archives and OCI layout directories: detection, safe extraction, naming.
//!
//! An archive is extracted into a temporary directory under the store's `tmp/` (the same
//! filesystem as the blobs), hashing every file as it is written, so each blob can then be
//! checked against its descriptor and moved into the store without a copy. Links in the
//! archive are never created on disk; they are kept as aliases between archive names.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek};
use std::path::{Component, Path, PathBuf};

use ferry_content::Store;
use ferry_oci::{Descriptor, Digest, Reference, Sha256Writer};

use crate::error::{Error, ErrorKind, Fail};
use crate::{docker, json, layout};

/// An image a load stored: the name bound (if the archive named it) and its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// The normalised image name bound to `target` (`docker.io/library/busybox:latest`), or
    /// `None` for an entry the archive does not name (stored, reported by digest only).
    pub name: Option<String>,
    /// The descriptor of the image's manifest or index.
    pub target: Descriptor,
}

/// Loads an image archive or an OCI layout directory into the store and returns the images it
/// stored, in archive order.
///
/// Accepts an OCI archive (a tar of an OCI layout, as `skopeo copy ... oci-archive:FILE:TAG`
/// writes), a Docker archive (`docker save`: `manifest.json` with `Config`, `RepoTags`,
/// `Layers`, in the old `<id>/layer.tar` layout or the newer `blobs/sha256/...` one), either
/// optionally gzip-compressed, and an OCI layout directory. A tar holding both `oci-layout` and
/// `manifest.json` (Docker 25 and later) is read as OCI, as containerd's importer does.
///
/// Every blob the archive's index and manifests reference (for each platform present) must be
/// in it and match its digest and size; otherwise this fails naming the blob and binds
/// nothing. Blobs of an archive are moved into the store; those of a layout directory are
/// copied (the directory is left as it was). Tar entries with absolute or `..` names are
/// refused, and manifests, indexes and configs over 4 MiB are refused.
pub fn load_archive(store: &Store, path: &Path) -> Result<Vec<LoadedImage>, Error> {
    let span = tracing::info_span!("load", path = %path.display());
    let _entered = span.enter();
    load(store, path).map_err(|f| f.into_load(path))
}

const NOT_AN_ARCHIVE: &str =
    "not a tar archive (expected an OCI or Docker image archive, or an OCI layout directory)";

fn load(store: &Store, path: &Path) -> Result<Vec<LoadedImage>, Fail> {
    // The error names the path once (see `into_load`), so this one does not repeat it.
    let meta = fs::metadata(path).map_err(|e| Fail::io(Path::new(""), e))?;
    let stem = image_stem(path);
    let source = if meta.is_dir() {
        Source::Dir(path.to_path_buf())
    } else {
        Source::Archive(Extracted::from_file(store, path)?)
    };

    let images = if source.exists("oci-layout") || !source.exists("manifest.json") {
        layout::load(store, &source, &stem)?
    } else {
        docker::load(store, &source)?
    };

    // Names are bound only now, after every blob of every image is in the store.
    for image in &images {
        if let Some(name) = &image.name {
            store
                .put_image(name, &image.target)
                .map_err(Fail::store_other)?;
        }
    }
    Ok(images)
}

/// The name an archive's tag-only entries are named after: the file name without `.tar`,
/// `.tar.gz` or `.tgz` (`busybox.tar` -> `busybox`), or a layout directory's name.
fn image_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for ext in [".tar.gz", ".tgz", ".tar"] {
        if let Some(stem) = name.strip_suffix(ext) {
            return stem.to_string();
        }
    }
    name
}

/// The normalised image name of `text` (`busybox:1` -> `docker.io/library/busybox:1`).
pub(crate) fn normalize(text: &str) -> Result<(String, Reference), Fail> {
    match text.parse::<Reference>() {
        Ok(r @ Reference::Registry { .. }) => Ok((r.image_name(), r)),
        Ok(_) => Err(Fail::invalid(format!(
            "image name {text:?} is not a registry reference"
        ))),
        Err(e) => Err(Fail::invalid(e)),
    }
}

/// Where the files of an archive or layout are.
pub(crate) enum Source {
    /// An OCI layout directory, read in place.
    Dir(PathBuf),
    /// An extracted archive.
    Archive(Extracted),
}

/// An archive extracted into the store's `tmp/`, with the digest of every file.
pub(crate) struct Extracted {
    dir: ferry_content::ScratchDir,
    files: HashMap<String, (Digest, u64)>,
    links: HashMap<String, String>,
}

/// How many links in a row an archive name may go through.
const MAX_LINK_HOPS: usize = 16;

impl Source {
    /// The file on disk holding the archive name `name`, if there is one.
    pub(crate) fn path(&self, name: &str) -> Option<PathBuf> {
        match self {
            Source::Dir(dir) => Some(dir.join(name)).filter(|p| p.is_file()),
            Source::Archive(x) => x.resolve(name).map(|n| x.dir.path().join(n)),
        }
    }

    pub(crate) fn exists(&self, name: &str) -> bool {
        self.path(name).is_some()
    }

    /// Reads the JSON file `name`, capped at [`json::MAX_JSON`].
    pub(crate) fn read_json(&self, name: &str, what: &str) -> Result<Vec<u8>, Fail> {
        let path = self.path(name).ok_or_else(|| missing(what))?;
        json::read_capped(&path, what)
    }

    /// The digest and size of the file `name` (known from extraction for archives).
    pub(crate) fn hash(&self, name: &str, what: &str) -> Result<(Digest, u64), Fail> {
        match self {
            Source::Archive(x) => {
                let file = x.resolve(name).ok_or_else(|| missing(what))?;
                x.files.get(file).cloned().ok_or_else(|| missing(what))
            }
            Source::Dir(_) => {
                let path = self.path(name).ok_or_else(|| missing(what))?;
                let mut file = File::open(&path).map_err(|e| Fail::io(&path, e))?;
                let mut writer = Sha256Writer::new(io::sink());
                io::copy(&mut file, &mut writer).map_err(|e| Fail::io(&path, e))?;
                let (digest, size, _) = writer.finish();
                Ok((digest, size))
            }
        }
    }

    /// Checks the file `name` against a blob's digest and size without moving it: fully for
    /// archives (hashed at extraction), by size for directories (hashed while copied).
    pub(crate) fn check(&self, name: &str, d: &Descriptor) -> Result<(), Fail> {
        let what = format!("blob {}", d.digest);
        let (digest, size) = match self {
            Source::Archive(_) => self.hash(name, &what)?,
            Source::Dir(_) => {
                let path = self.path(name).ok_or_else(|| missing(&what))?;
                let meta = fs::metadata(&path).map_err(|e| Fail::io(&path, e))?;
                (d.digest.clone(), meta.len())
            }
        };
        if digest != d.digest {
            return Err(Fail::invalid(format!(
                "{what}: digest mismatch: archive holds {digest}"
            )));
        }
        if size != d.size {
            let why = format!(
                "{what}: size mismatch: archive holds {size} bytes, {} expected",
                d.size
            );
            return Err(Fail::invalid(why));
        }
        Ok(())
    }

    /// Puts the file `name` into the store as blob `digest`: moved out of an extracted archive,
    /// copied out of a layout directory. Verified either way.
    pub(crate) fn import(
        &self,
        store: &Store,
        name: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), Fail> {
        if store.has_blob(digest) {
            return Ok(());
        }
        let path = self
            .path(name)
            .ok_or_else(|| missing(&format!("blob {digest}")))?;
        match self {
            Source::Archive(_) => store
                .import_file(&path, digest, size)
                .map_err(|e| Fail::store(digest, e)),
            Source::Dir(_) => copy_in(store, &path, digest, size),
        }
    }
}

fn missing(what: &str) -> Fail {
    Fail::new(ErrorKind::NotFound, format!("{what} is not in the archive"))
}

/// Copies a file into the store through an ingest, verifying it.
fn copy_in(store: &Store, path: &Path, digest: &Digest, size: u64) -> Result<(), Fail> {
    let file = File::open(path).map_err(|e| Fail::io(path, e))?;
    let mut ingest = store.ingest().map_err(|e| Fail::store(digest, e))?;
    // One byte more than expected is enough to see a size mismatch.
    io::copy(&mut file.take(size + 1), &mut ingest).map_err(|e| Fail::io(path, e))?;
    ingest
        .commit(Some((digest, size)))
        .map_err(|e| Fail::store(digest, e))?;
    Ok(())
}

impl Extracted {
    /// Extracts the tar (or gzip tar) at `path` into a new directory under `store.tmp_dir()`.
    fn from_file(store: &Store, path: &Path) -> Result<Extracted, Fail> {
        let dir = store.scratch_dir("load-").map_err(Fail::store_other)?;
        let mut extracted = Extracted {
            dir,
            files: HashMap::new(),
            links: HashMap::new(),
        };

        let mut file = File::open(path).map_err(|e| Fail::io(path, e))?;
        let mut magic = [0u8; 2];
        let n = file.read(&mut magic).map_err(|e| Fail::io(path, e))?;
        file.rewind().map_err(|e| Fail::io(path, e))?;
        let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };

        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| Fail::io(path, e))?;
        for entry in entries {
            // The tar crate's message quotes the bytes it could not parse: say what it means.
            let entry = entry.map_err(|_| Fail::invalid(NOT_AN_ARCHIVE))?;
            extracted.add(entry)?;
        }
        Ok(extracted)
    }

    /// Extracts one tar entry: files are written (and hashed), links remembered.
    fn add(&mut self, mut entry: tar::Entry<'_, Box<dyn Read>>) -> Result<(), Fail> {
        let raw = entry
            .path()
            .map_err(|e| Fail::invalid(format!("tar entry name: {e}")))?;
        let raw = raw.into_owned();
        let Some(name) = entry_name(&raw)? else {
            return Ok(());
        };
        let kind = entry.header().entry_type();

        if kind.is_file() || kind == tar::EntryType::Continuous {
            let target = self.dir.path().join(&name);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| Fail::io(parent, e))?;
            }
            let out = File::create(&target).map_err(|e| Fail::io(&target, e))?;
            let mut writer = Sha256Writer::new(io::BufWriter::new(out));
            io::copy(&mut entry, &mut writer).map_err(|e| Fail::io(&raw, e))?;
            let (digest, size, out) = writer.finish();
            out.into_inner()
                .map_err(|e| Fail::io(&target, e.into_error()))?;
            self.links.remove(&name);
            self.files.insert(name, (digest, size));
        } else if kind.is_symlink() || kind.is_hard_link() {
            let link = entry.link_name().map_err(|e| Fail::io(&raw, e))?;
            let link = link.ok_or_else(|| Fail::invalid(format!("link {name} has no target")))?;
            // A symlink's target is relative to its directory, a hard link's to the root.
            let base = if kind.is_symlink() {
                parent_of(&name)
            } else {
                ""
            };
            let target = join_link(base, &link)
                .ok_or_else(|| Fail::invalid(format!("link {name} points outside the archive")))?;
            self.links.insert(name, target);
        } else {
            tracing::debug!(entry = %name, ?kind, "tar entry ignored");
        }
        Ok(())
    }

    /// The name of the file an archive name stands for, following links.
    fn resolve<'s>(&'s self, name: &'s str) -> Option<&'s str> {
        let mut current = name;
        for _ in 0..MAX_LINK_HOPS {
            if self.files.contains_key(current) {
                return Some(current);
            }
            current = self.links.get(current)?;
        }
        None
    }
}

/// The normalised name of a tar entry (`./a//b` -> `a/b`), `None` for the root itself, and
/// an error for absolute names or names with `..`, which could write outside the extraction
/// directory.
pub(crate) fn entry_name(raw: &Path) -> Result<Option<String>, Fail> {
    let mut parts = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(p) => parts.push(p),
                None => return Err(Fail::invalid(format!("tar entry {raw:?} is not UTF-8"))),
            },
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Fail::invalid(format!(
                    "tar entry {} contains ..",
                    raw.display()
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Fail::invalid(format!(
                    "tar entry {} is absolute",
                    raw.display()
                )));
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

fn parent_of(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// Joins a link target to `base` lexically; `None` when it is absolute or climbs above the
/// archive's root.
fn join_link(base: &str, target: &Path) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for component in target.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_normalised_and_escapes_refused() {
        assert_eq!(
            entry_name(Path::new("./blobs//sha256/ab"))
                .unwrap()
                .unwrap(),
            "blobs/sha256/ab"
        );
        assert_eq!(entry_name(Path::new("./")).unwrap(), None);
        let e = entry_name(Path::new("a/../../etc/passwd")).unwrap_err();
        assert_eq!(
            (e.kind, e.why.as_str()),
            (
                ErrorKind::InvalidInput,
                "tar entry a/../../etc/passwd contains .."
            )
        );
        assert_eq!(
            entry_name(Path::new("/etc/passwd")).unwrap_err().why,
            "tar entry /etc/passwd is absolute"
        );
    }

    #[test]
    fn links_resolve_inside_the_archive_only() {
        assert_eq!(join_link("aa", Path::new("../8e.tar")).unwrap(), "8e.tar");
        assert_eq!(join_link("", Path::new("./x/y")).unwrap(), "x/y");
        assert_eq!(join_link("aa", Path::new("../../etc/passwd")), None);
        assert_eq!(join_link("aa", Path::new("/etc/passwd")), None);
    }

    #[test]
    fn image_stem_drops_tar_extensions() {
        assert_eq!(image_stem(Path::new("/x/busybox.tar")), "busybox");
        assert_eq!(image_stem(Path::new("busybox.tar.gz")), "busybox");
        assert_eq!(image_stem(Path::new("/x/layouts/busybox")), "busybox");
    }
}
