//! Applying a layer tar stream into a directory in overlayfs diff form.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::fs::{Fs, HostFs, Kind, Node};
use crate::resolve::{clean_name, create_dirs, resolve_dir, resolve_link_target};
use crate::{EntryError, Error};

/// Prefix of an OCI whiteout file (image-spec layer.md, "Whiteouts").
const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// Prefix of whiteout metadata files; only the opaque marker has a meaning in OCI.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";

/// The opaque whiteout: hide everything the lower layers hold in this directory.
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";

/// The xattr overlayfs reads to treat a directory as opaque (kernel overlayfs.rst).
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// overlayfs's own xattrs; a layer may not set them, or it could steer overlayfs (redirects,
/// metacopy) beyond what OCI whiteouts mean.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// PAX records carrying extended attributes, as GNU tar and Docker write them.
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// What applying a layer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries applied (whiteouts included; PAX and GNU long-name headers not counted).
    pub entries: u64,
    /// Length of the whole (uncompressed) tar stream, trailing blocks included.
    pub bytes: u64,
    /// `sha256:<hex>` of the whole tar stream: the layer's diff ID when it is the right one.
    pub diff_id: String,
}

/// Apply an (uncompressed) OCI layer tar stream into `target` (an empty directory) in overlayfs
/// diff form: OCI whiteouts `.wh.NAME` become overlay whiteouts (a 0/0 character device NAME),
/// `.wh..wh..opq` sets the xattr `trusted.overlay.opaque=y` on its directory. Ownership, modes,
/// mtimes, symlinks, hardlinks (within the layer), xattrs from PAX `SCHILY.xattr.*`, device
/// nodes and fifos are kept. Hashes the whole tar stream (read to its end) into diff_id.
///
/// No entry creates or changes anything outside `target` (see the crate docs). On error the
/// target holds the entries applied so far; the caller removes it.
pub fn apply_layer(tar: impl Read, target: &Path) -> Result<ApplyStats, Error> {
    apply_with(&HostFs, tar, target)
}

/// [`apply_layer`] over any filesystem.
pub(crate) fn apply_with(fs: &dyn Fs, tar: impl Read, root: &Path) -> Result<ApplyStats, Error> {
    let reader = HashingReader {
        inner: tar,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut applier = Applier {
        fs,
        root,
        dir_times: HashMap::new(),
    };
    let mut entries = 0;

    // TODO: bound PAX and GNU long-name headers; the tar crate reads each one whole into memory,
    // so a layer with a huge one costs that much memory before it is refused.
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(Error::ReadTar)? {
        let mut entry = entry.map_err(Error::ReadTar)?;
        let name = entry.path_bytes().into_owned();
        applier
            .apply_entry(&name, &mut entry)
            .map_err(|reason| Error::Entry {
                entry: String::from_utf8_lossy(&name).into_owned(),
                reason,
            })?;
        entries += 1;
    }
    let mut reader = archive.into_inner();

    applier.finish_dirs()?;

    // The diff ID covers the trailing zero blocks and padding too, so read to the end.
    io::copy(&mut reader, &mut io::sink()).map_err(Error::ReadTar)?;
    let diff_id = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
    tracing::debug!(entries, bytes = reader.bytes, %diff_id, "applied layer");
    Ok(ApplyStats {
        entries,
        bytes: reader.bytes,
        diff_id,
    })
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// State of one layer application.
struct Applier<'a> {
    fs: &'a dyn Fs,
    root: &'a Path,
    /// Directory mtimes, set after all entries because writing a child changes them.
    dir_times: HashMap<PathBuf, (i64, u32)>,
}

impl Applier<'_> {
    fn apply_entry<R: Read>(
        &mut self,
        name: &[u8],
        entry: &mut tar::Entry<R>,
    ) -> Result<(), EntryError> {
        let parts = clean_name(name).ok_or(EntryError::EscapesRoot)?;
        let Some((base, parents)) = parts.split_last() else {
            return self.apply_root(entry);
        };

        if base.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parents, base);
        }

        let dir = resolve_dir(self.fs, self.root, parents)?;
        let path = create_dirs(self.fs, self.root, &dir)?.join(base);
        let meta = read_meta(entry)?;
        let kind = entry.header().entry_type();

        match kind {
            EntryType::Directory => self.directory(&path, &meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(&path, &meta, entry)
            }
            EntryType::Symlink => self.symlink(&path, &meta, entry),
            EntryType::Link => self.hardlink(&path, entry),
            EntryType::Char | EntryType::Block | EntryType::Fifo => self.node(&path, &meta, entry),
            other => Err(EntryError::UnsupportedType(other.as_byte())),
        }
    }

    /// An entry naming the root (`./`, `/`): only its metadata can change.
    fn apply_root<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), EntryError> {
        if entry.header().entry_type() != EntryType::Directory {
            return Err(EntryError::RootNotDirectory);
        }
        let meta = read_meta(entry)?;
        self.set_meta(self.root, &meta, &Kind::Dir)
    }

    /// Turn an OCI whiteout into its overlayfs form (image-spec layer.md "Whiteouts"; kernel
    /// overlayfs.rst "whiteouts and opaque directories").
    fn whiteout(&mut self, parents: &[OsString], base: &OsStr) -> Result<(), EntryError> {
        let dir = resolve_dir(self.fs, self.root, parents)?;
        let dir = create_dirs(self.fs, self.root, &dir)?;
        let base = base.as_bytes();

        if base == OPAQUE_WHITEOUT {
            return self
                .fs
                .lsetxattr(&dir, OsStr::new(OVERLAY_OPAQUE_XATTR), b"y")
                .map_err(EntryError::io("mark opaque", &dir));
        }

        if base.starts_with(WHITEOUT_META_PREFIX) {
            // AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh..tmp`) means nothing to overlayfs.
            tracing::debug!(name = %String::from_utf8_lossy(base), "skipping whiteout metadata");
            return Ok(());
        }

        let hidden = &base[WHITEOUT_PREFIX.len()..];
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(EntryError::BadWhiteout);
        }

        let path = dir.join(OsStr::from_bytes(hidden));
        self.clear(&path, false)?;
        self.fs
            .mknod(&path, Node::Char(0, 0))
            .map_err(EntryError::io("create whiteout", &path))
    }

    fn directory(&mut self, path: &Path, meta: &Meta) -> Result<(), EntryError> {
        // A directory over a directory merges: its children stay, its metadata is updated.
        if !self.clear(path, true)? {
            self.fs
                .mkdir(path)
                .map_err(EntryError::io("create directory", path))?;
        }
        self.set_meta(path, meta, &Kind::Dir)
    }

    fn file<R: Read>(
        &mut self,
        path: &Path,
        meta: &Meta,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), EntryError> {
        self.clear(path, false)?;

        let size = entry.size();
        let written = self
            .fs
            .write_file(path, entry)
            .map_err(EntryError::io("write", path))?;
        if written != size {
            return Err(EntryError::Truncated { written, size });
        }

        self.set_meta(path, meta, &Kind::Other)
    }

    fn symlink<R: Read>(
        &mut self,
        path: &Path,
        meta: &Meta,
        entry: &tar::Entry<R>,
    ) -> Result<(), EntryError> {
        let target = link_name(entry)?;
        self.clear(path, false)?;

        // Stored as it is: the target resolves inside the container, not on the host.
        let target = PathBuf::from(OsStr::from_bytes(&target));
        self.fs
            .symlink(&target, path)
            .map_err(EntryError::io("create symlink", path))?;
        self.set_meta(path, meta, &Kind::Symlink(target))
    }

    fn hardlink<R: Read>(&mut self, path: &Path, entry: &tar::Entry<R>) -> Result<(), EntryError> {
        let target = link_name(entry)?;
        self.clear(path, false)?;

        // Resolved after clearing, so a link to the very path it replaces finds nothing.
        let existing = resolve_link_target(self.fs, self.root, &target)?;
        self.fs
            .hardlink(&existing, path)
            .map_err(EntryError::io("create hardlink", path))
    }

    fn node<R: Read>(
        &mut self,
        path: &Path,
        meta: &Meta,
        entry: &tar::Entry<R>,
    ) -> Result<(), EntryError> {
        let header = entry.header();
        let device = || -> Result<(u32, u32), EntryError> {
            let major = header
                .device_major()
                .map_err(EntryError::Header)?
                .unwrap_or(0);
            let minor = header
                .device_minor()
                .map_err(EntryError::Header)?
                .unwrap_or(0);
            Ok((major, minor))
        };

        // A fifo's device fields are often left blank, so they are only read for devices.
        let node = match header.entry_type() {
            EntryType::Char => device().map(|(major, minor)| Node::Char(major, minor))?,
            EntryType::Block => device().map(|(major, minor)| Node::Block(major, minor))?,
            _ => Node::Fifo,
        };

        self.clear(path, false)?;
        self.fs
            .mknod(path, node)
            .map_err(EntryError::io("create node", path))?;
        self.set_meta(path, meta, &Kind::Other)
    }

    /// Remove what `path` names, unless it is a directory and `keep_dir` is set; returns
    /// whether a directory was kept.
    fn clear(&mut self, path: &Path, keep_dir: bool) -> Result<bool, EntryError> {
        match self
            .fs
            .kind(path)
            .map_err(EntryError::io("inspect", path))?
        {
            Kind::Missing => Ok(false),
            Kind::Dir if keep_dir => Ok(true),
            _ => {
                self.fs
                    .remove_all(path)
                    .map_err(EntryError::io("remove", path))?;

                // A pending directory time below a removed path would be set through whatever
                // replaces it (a symlink to the host's `/`, say), so it is dropped.
                self.dir_times.retain(|dir, _| !dir.starts_with(path));
                Ok(false)
            }
        }
    }

    /// Owner first (chown clears setuid bits and `security.capability`), then mode, xattrs and
    /// mtime.
    fn set_meta(&mut self, path: &Path, meta: &Meta, kind: &Kind) -> Result<(), EntryError> {
        self.fs
            .lchown(path, meta.uid, meta.gid)
            .map_err(EntryError::io("chown", path))?;

        if !matches!(kind, Kind::Symlink(_)) {
            self.fs
                .chmod(path, meta.mode)
                .map_err(EntryError::io("chmod", path))?;
        }

        for (name, value) in &meta.xattrs {
            self.set_xattr(path, name, value, kind)?;
        }

        if *kind == Kind::Dir {
            self.dir_times.insert(path.to_path_buf(), meta.mtime);
            return Ok(());
        }
        let (secs, nanos) = meta.mtime;
        self.fs
            .set_mtime(path, secs, nanos)
            .map_err(EntryError::io("set time of", path))
    }

    fn set_xattr(
        &self,
        path: &Path,
        name: &OsStr,
        value: &[u8],
        kind: &Kind,
    ) -> Result<(), EntryError> {
        if name.as_bytes().starts_with(OVERLAY_XATTR_PREFIX) {
            tracing::warn!(path = %path.display(), xattr = ?name, "skipping overlayfs xattr");
            return Ok(());
        }

        // The same leniency as containerd: a filesystem without this xattr namespace still gets
        // the layer, and Linux refuses `user.*` xattrs on symlinks (xattr(7)).
        let unsupported = |err: &io::Error| match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) => true,
            Some(libc::EPERM) => matches!(kind, Kind::Symlink(_)),
            _ => false,
        };
        match self.fs.lsetxattr(path, name, value) {
            Err(err) if unsupported(&err) => {
                tracing::warn!(path = %path.display(), xattr = ?name, %err, "xattr not kept");
                Ok(())
            }
            other => other.map_err(EntryError::io("set xattr on", path)),
        }
    }

    /// Set the directory times recorded while applying.
    fn finish_dirs(&mut self) -> Result<(), Error> {
        for (path, (secs, nanos)) in self.dir_times.drain() {
            self.fs
                .set_mtime(&path, secs, nanos)
                .map_err(Error::io("set time of", &path))?;
        }
        Ok(())
    }
}

/// The link name of a symlink or hardlink entry, which must have one.
fn link_name<R: Read>(entry: &tar::Entry<R>) -> Result<Vec<u8>, EntryError> {
    match entry.link_name_bytes() {
        Some(name) if !name.is_empty() => Ok(name.into_owned()),
        _ => Err(EntryError::Header(io::Error::new(
            io::ErrorKind::InvalidData,
            "link entry has no link name",
        ))),
    }
}

/// Read mode, owner, mtime and xattrs; PAX records (POSIX.1-2008 pax format) override the
/// header's `uid`, `gid` and `mtime`, which may not fit it.
fn read_meta<R: Read>(entry: &mut tar::Entry<R>) -> Result<Meta, EntryError> {
    let header = entry.header();
    let mut meta = Meta {
        mode: header.mode().map_err(EntryError::Header)? & 0o7777,
        uid: id(header.uid().map_err(EntryError::Header)?)?,
        gid: id(header.gid().map_err(EntryError::Header)?)?,
        mtime: (clamp_secs(header.mtime().map_err(EntryError::Header)?), 0),
        xattrs: Vec::new(),
    };

    let Some(pax) = entry.pax_extensions().map_err(EntryError::Header)? else {
        return Ok(meta);
    };
    for record in pax {
        let record = record.map_err(EntryError::Header)?;
        let (key, value) = (record.key_bytes(), record.value_bytes());
        match key {
            b"uid" => meta.uid = id(parse_number(value)?)?,
            b"gid" => meta.gid = id(parse_number(value)?)?,
            b"mtime" => meta.mtime = parse_time(value)?,
            _ => {
                if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    meta.xattrs
                        .push((OsStr::from_bytes(name).to_os_string(), value.to_vec()));
                }
            }
        }
    }
    Ok(meta)
}

fn bad_header(what: &str, value: &[u8]) -> EntryError {
    let msg = format!("bad {what} {:?}", String::from_utf8_lossy(value));
    EntryError::Header(io::Error::new(io::ErrorKind::InvalidData, msg))
}

/// A uid or gid, which Linux keeps in 32 bits.
fn id(value: u64) -> Result<u32, EntryError> {
    u32::try_from(value).map_err(|_| bad_header("owner id", value.to_string().as_bytes()))
}

fn clamp_secs(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn parse_number(value: &[u8]) -> Result<u64, EntryError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_header("number", value))
}

/// A PAX time: decimal seconds, maybe negative, maybe with a fraction.
fn parse_time(value: &[u8]) -> Result<(i64, u32), EntryError> {
    let text = std::str::from_utf8(value).map_err(|_| bad_header("time", value))?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().map_err(|_| bad_header("time", value))?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_header("time", value));
    }

    // Nanoseconds: the first nine fraction digits, padded with zeros.
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().map_err(|_| bad_header("time", value))?;
    if text.starts_with('-') && nanos > 0 {
        // "-1.5" is 1.5 s before the epoch: -2 s + 0.5 s.
        return Ok((secs - 1, 1_000_000_000 - nanos));
    }
    Ok((secs, nanos))
}

#[cfg(test)]
mod tests;
