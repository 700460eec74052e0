//! The overlay snapshotter: one directory per committed layer chain, overlayfs for containers.
//!
//! Layout under the snapshotter's directory (`ROOT/snapshots`):
//!
//! ```text
//! committed/<chain hex>   the tree of one layer in overlayfs diff form, never changed
//! tmp/apply-*             layers being applied; renamed into committed/ when verified
//! active/<key>/upper      a container's writable layer
//! active/<key>/work       overlayfs's work directory
//! active/<key>/empty      the lower of an image with no layers
//! ```

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{RenameFlags, AT_FDCWD};
use nix::mount::{MntFlags, MsFlags};
use sha2::{Digest, Sha256};

use crate::{apply_layer, Error};

/// Longest overlayfs option string: mount(2) copies at most one page of data, NUL included.
const MAX_MOUNT_OPTIONS: usize = 4095;

/// A committed snapshot: one layer applied in overlayfs diff form, keyed by its chain ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The chain ID (OCI image-spec config.md "Layer ChainID") of the layers up to this one.
    pub chain_id: String,
    /// The layer's tree, to be used as an overlayfs lower directory.
    pub dir: PathBuf,
}

/// The overlay snapshotter over a directory (`ROOT/snapshots`).
///
/// Several processes may use the same directory at once: committed snapshots appear by an
/// atomic rename, and two processes applying the same chain both succeed with one copy kept.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    dir: PathBuf,
}

impl Snapshotter {
    /// Open (creating if needed) a snapshotter over `dir`, removing `tmp/apply-*` directories
    /// that a crash left (untouched for an hour; another process may be applying into a newer
    /// one right now).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        for sub in ["committed", "tmp", "active"] {
            let path = dir.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(Error::io("create snapshot directory", &path))?;
        }
        sweep_abandoned_applies(&dir.join("tmp"));
        Ok(Snapshotter { dir })
    }

    /// chain ID per the OCI image spec: chain(L0) = diff_id0; chain(Ln) = sha256(chain(Ln-1) +
    /// " " + diff_idn).
    pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
        match parent {
            None => diff_id.to_string(),
            Some(parent) => {
                let hash = Sha256::digest(format!("{parent} {diff_id}").as_bytes());
                format!("sha256:{}", hex::encode(hash))
            }
        }
    }

    /// Return the committed snapshot for (parent chain, diff_id), applying the layer if it is
    /// not there yet: apply into a temporary directory inside `dir`, check the stream's digest
    /// equals `diff_id` (else error, nothing kept), then rename into place (so a crash never
    /// leaves a half-applied snapshot visible). Two processes racing on the same chain both
    /// succeed.
    ///
    /// `open_tar` is called only when the layer must be applied, and must return the
    /// decompressed tar stream (see [`crate::decompress`]).
    pub fn ensure(
        &self,
        parent: Option<&Snapshot>,
        diff_id: &str,
        open_tar: &mut dyn FnMut() -> Result<Box<dyn Read + Send>, Error>,
    ) -> Result<Snapshot, Error> {
        digest_hex(diff_id)?;
        if let Some(parent) = parent {
            digest_hex(&parent.chain_id)?;
        }
        let chain_id = Self::chain_id(parent.map(|p| p.chain_id.as_str()), diff_id);
        let snapshot = Snapshot {
            dir: self.committed_dir(&chain_id)?,
            chain_id,
        };

        if is_dir(&snapshot.dir)? {
            tracing::debug!(chain_id = %snapshot.chain_id, "snapshot already committed");
            return Ok(snapshot);
        }

        let _span =
            tracing::info_span!("apply layer", chain_id = %snapshot.chain_id, diff_id).entered();
        let tmp = self.apply_to_temp(diff_id, open_tar)?;
        commit(tmp, &snapshot.dir)?;
        Ok(snapshot)
    }

    /// The chain IDs of every committed snapshot.
    pub fn committed(&self) -> Result<Vec<String>, Error> {
        let dir = self.dir.join("committed");
        let entries = fs::read_dir(&dir).map_err(Error::io("read snapshot directory", &dir))?;
        let mut ids: Vec<String> = entries
            .flatten()
            .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
            .filter(|id| digest_hex(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes the committed snapshot `chain_id`: renamed out of `committed/` first, so no
    /// later mount finds it half removed. The caller makes sure nothing uses it (the garbage
    /// collector runs while no other operation on the root holds a lease, and skips snapshots
    /// that a mounted container lists).
    pub fn remove_committed(&self, chain_id: &str) -> Result<(), Error> {
        let dir = self.committed_dir(chain_id)?;
        let doomed = self
            .dir
            .join("tmp")
            .join(format!("remove-{}", digest_hex(chain_id)?));
        // What an interrupted removal left.
        let _ = fs::remove_dir_all(&doomed);
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(Error::io("remove committed snapshot", &dir)(err)),
        }
        fs::remove_dir_all(&doomed).map_err(Error::io("remove committed snapshot", &doomed))
    }

    /// Create an active snapshot `key` (upper + work dirs under `dir/active/<key>`) over `lowers`
    /// (bottom first, as in the image) and mount overlayfs at `target`. Handles a single lower
    /// (overlay needs an upper anyway) and an image with no layers (empty lower dir).
    pub fn mount_active(&self, key: &str, lowers: &[Snapshot], target: &Path) -> Result<(), Error> {
        let active = self.active_dir(key)?;
        match fs::DirBuilder::new().mode(0o700).create(&active) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::ActiveExists(key.to_string()));
            }
            Err(err) => return Err(Error::io("create active snapshot", &active)(err)),
        }

        let result = mount_overlay(&active, lowers, target);
        if result.is_err() {
            if let Err(err) = fs::remove_dir_all(&active) {
                tracing::warn!(path = %active.display(), %err, "cannot remove failed active snapshot");
            }
        }
        result
    }

    /// Mount the existing active snapshot `key` at `target` again (after an unmount), keeping
    /// the changes in its upper directory. `lowers` must be the ones it was created over.
    pub fn remount_active(
        &self,
        key: &str,
        lowers: &[Snapshot],
        target: &Path,
    ) -> Result<(), Error> {
        let active = self.active_dir(key)?;
        if !is_dir(&active.join("upper"))? {
            return Err(Error::io("open active snapshot", &active)(
                io::ErrorKind::NotFound.into(),
            ));
        }
        let mut lower_dirs: Vec<PathBuf> = lowers.iter().rev().map(|s| s.dir.clone()).collect();
        if lower_dirs.is_empty() {
            lower_dirs.push(active.join("empty"));
        }
        overlay_mount(&active, &lower_dirs, target)
    }

    /// The upper directory of active snapshot `key`: the container's changes in overlayfs
    /// form (whiteouts as 0/0 character devices, opaque directories by xattr).
    pub fn upper_dir(&self, key: &str) -> Result<PathBuf, Error> {
        Ok(self.active_dir(key)?.join("upper"))
    }

    /// Unmount `target` (lazy detach if busy) and remove the active snapshot's directories.
    ///
    /// Succeeds when `target` is not mounted or the snapshot is gone already, so it can finish
    /// a removal that was interrupted.
    pub fn remove_active(&self, key: &str, target: &Path) -> Result<(), Error> {
        let active = self.active_dir(key)?;
        unmount(target)?;

        match fs::remove_dir_all(&active) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(Error::io("remove active snapshot", &active)(err))
            }
            _ => Ok(()),
        }
    }

    fn committed_dir(&self, chain_id: &str) -> Result<PathBuf, Error> {
        Ok(self.dir.join("committed").join(digest_hex(chain_id)?))
    }

    fn active_dir(&self, key: &str) -> Result<PathBuf, Error> {
        // The key becomes one path component and part of the overlay options.
        let bad = |b: &u8| matches!(b, b'/' | b',' | b':' | b'\\' | 0);
        if key.is_empty() || key == "." || key == ".." || key.as_bytes().iter().any(bad) {
            return Err(Error::InvalidKey(key.to_string()));
        }
        Ok(self.dir.join("active").join(key))
    }

    /// Apply the layer into a fresh temporary directory and check its diff ID. The directory
    /// is removed when the returned guard (or an error) drops it.
    fn apply_to_temp(
        &self,
        diff_id: &str,
        open_tar: &mut dyn FnMut() -> Result<Box<dyn Read + Send>, Error>,
    ) -> Result<tempfile::TempDir, Error> {
        let tmp_root = self.dir.join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix("apply-")
            .tempdir_in(&tmp_root)
            .map_err(Error::io("create temporary directory in", &tmp_root))?;

        // The layer root is the container's `/` when no entry sets it: 0755, not tempfile's 0700.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(Error::io("chmod", tmp.path()))?;

        let stats = apply_layer(open_tar()?, tmp.path())?;
        if stats.diff_id != diff_id {
            return Err(Error::DiffIdMismatch {
                expected: diff_id.to_string(),
                actual: stats.diff_id,
            });
        }
        tracing::info!(
            entries = stats.entries,
            bytes = stats.bytes,
            "layer applied"
        );
        Ok(tmp)
    }
}

/// Make the applied tree durable, then rename it into place. If another process committed the
/// same chain first, its copy stays and ours is removed.
fn commit(tmp: tempfile::TempDir, dest: &Path) -> Result<(), Error> {
    // The rename must not become durable before the files it publishes.
    let tree = File::open(tmp.path()).map_err(Error::io("open", tmp.path()))?;
    nix::unistd::syncfs(&tree).map_err(|e| Error::io("sync", tmp.path())(e.into()))?;

    let renamed = nix::fcntl::renameat2(
        AT_FDCWD,
        tmp.path(),
        AT_FDCWD,
        dest,
        RenameFlags::RENAME_NOREPLACE,
    );
    match renamed {
        Ok(()) => {
            let _kept = tmp.keep();
        }
        Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => {
            tracing::debug!(dest = %dest.display(), "another process committed this snapshot");
            return Ok(());
        }
        Err(err) => return Err(Error::io("commit snapshot", dest)(err.into())),
    }

    let parent = dest.parent().unwrap_or(dest);
    let dir = File::open(parent).map_err(Error::io("open", parent))?;
    dir.sync_all().map_err(Error::io("sync", parent))
}

/// Make the upper, work and (for no layers) empty lower directories and mount overlayfs.
fn mount_overlay(active: &Path, lowers: &[Snapshot], target: &Path) -> Result<(), Error> {
    let upper = active.join("upper");
    let work = active.join("work");
    mkdir(&upper, 0o755)?;
    mkdir(&work, 0o700)?;

    // overlayfs needs at least one lower directory; an image with no layers gets an empty one.
    let mut lower_dirs: Vec<PathBuf> = lowers.iter().rev().map(|s| s.dir.clone()).collect();
    if lower_dirs.is_empty() {
        let empty = active.join("empty");
        mkdir(&empty, 0o755)?;
        lower_dirs.push(empty);
    }
    overlay_mount(active, &lower_dirs, target)
}

/// Mount overlayfs at `target` over `lower_dirs` (top first) with the upper and work
/// directories of `active`.
fn overlay_mount(active: &Path, lower_dirs: &[PathBuf], target: &Path) -> Result<(), Error> {
    let upper = active.join("upper");
    let work = active.join("work");
    let options = overlay_options(lower_dirs, &upper, &work)?;
    tracing::debug!(target = %target.display(), %options, "mounting overlay");
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(&*options),
    )
    .map_err(|err| Error::Mount {
        target: target.to_path_buf(),
        source: err.into(),
    })
}

/// `lowerdir=<top>:...:<bottom>,upperdir=...,workdir=...` (kernel overlayfs.rst "Multiple
/// lower layers"); `lowers` is already top first.
fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, Error> {
    for path in lowers.iter().map(PathBuf::as_path).chain([upper, work]) {
        let special = |b: &u8| matches!(b, b',' | b':' | b'\\');
        if path.as_os_str().as_bytes().iter().any(special) || path.to_str().is_none() {
            return Err(Error::OverlayPath(path.to_path_buf()));
        }
    }

    let lower: Vec<&str> = lowers.iter().filter_map(|p| p.to_str()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );

    // TODO: past one page, mount with fsconfig(2) and `lowerdir+` (Linux 6.8) instead.
    if options.len() > MAX_MOUNT_OPTIONS {
        return Err(Error::MountOptionsTooLong {
            layers: lowers.len(),
            len: options.len(),
            max: MAX_MOUNT_OPTIONS,
        });
    }
    Ok(options)
}

/// Unmount, detaching lazily when busy; not being mounted is not an error.
fn unmount(target: &Path) -> Result<(), Error> {
    let err = match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EBUSY) => {
            tracing::warn!(target = %target.display(), "mount busy, detaching lazily");
            match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
                Ok(()) => return Ok(()),
                Err(err) => err,
            }
        }
        Err(err) => err,
    };
    Err(Error::Unmount {
        target: target.to_path_buf(),
        source: err.into(),
    })
}

fn mkdir(path: &Path, mode: u32) -> Result<(), Error> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(Error::io("create directory", path))?;

    // The process umask may have narrowed the mode.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Error::io("chmod", path))
}

fn is_dir(path: &Path) -> Result<bool, Error> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(meta.is_dir()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io("inspect", path)(err)),
    }
}

/// The hex part of `sha256:<64 lowercase hex>`, which is all a diff ID or chain ID may be
/// before it names a directory.
fn digest_hex(digest: &str) -> Result<&str, Error> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if hex.len() == 64 && hex.bytes().all(lower_hex) {
        Ok(hex)
    } else {
        Err(Error::InvalidDigest(digest.to_string()))
    }
}

/// Removes apply directories that an interrupted process left: none has been touched for an
/// hour (a running apply writes into its directory all the time).
// TODO: a lock held by the applying process would tell exactly; the garbage collector of
// issue 5 is the place for it.
fn sweep_abandoned_applies(tmp: &std::path::Path) {
    let hour = std::time::Duration::from_secs(3600);
    for entry in fs::read_dir(tmp).into_iter().flatten().flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > hour);
        if old {
            tracing::info!(path = %entry.path().display(), "removing an interrupted layer apply");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_matches_the_image_spec() {
        let d0 = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
        let d1 = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
        assert_eq!(Snapshotter::chain_id(None, d0), d0);

        // `printf '%s %s' "$d0" "$d1" | sha256sum`, computed outside this crate.
        let want = "sha256:71dec89dc33c1a1cd5f73cd1e0885ec74b73b03fb9d5a98fddb6486563565072";
        assert_eq!(Snapshotter::chain_id(Some(d0), d1), want);
    }

    #[test]
    fn digest_hex_refuses_anything_but_sha256_hex() {
        let good = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
        assert_eq!(digest_hex(good).unwrap(), &good[7..]);
        for bad in [
            "sha256:../../etc",
            "sha512:00",
            "a3ed95",
            &good.to_uppercase(),
            &good[..70],
        ] {
            assert_eq!(
                digest_hex(bad).unwrap_err().to_string(),
                format!("invalid layer digest {bad:?}")
            );
        }
    }

    #[test]
    fn overlay_options_put_the_top_layer_first_and_refuse_separators() {
        let lowers = [PathBuf::from("/s/top"), PathBuf::from("/s/bottom")];
        let options = overlay_options(&lowers, Path::new("/a/u"), Path::new("/a/w")).unwrap();
        assert_eq!(
            options,
            "lowerdir=/s/top:/s/bottom,upperdir=/a/u,workdir=/a/w"
        );

        let bad = [PathBuf::from("/s/a,b")];
        let err = overlay_options(&bad, Path::new("/a/u"), Path::new("/a/w")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"path "/s/a,b" cannot be used as an overlay layer (it contains ',', ':' or '\\')"#
        );
    }
}
