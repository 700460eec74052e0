//! A container's directory, `ROOT/containers/<id>`: the runtime bundle (`config.json`), the
//! rootfs mount point, an `rm` marker for `--rm` containers, and a `lock` file.
//!
//! The lock is an `flock` taken by the ferry process that runs the container and inherited by
//! its runc, so it is held exactly as long as either of them lives. A directory whose lock can be
//! taken belongs to a run that was killed: [`sweep`] unmounts it and, for `--rm` containers,
//! removes it with its snapshot and runc state.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use ferry_runtime::Runc;
use ferry_snapshot::Snapshotter;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// A container directory in use by this process.
pub struct ContainerDir {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    remove: bool,
    _lock: File,
}

impl ContainerDir {
    /// Creates the directory of container `id` and takes its lock.
    pub fn create(root: &Path, id: &str, remove: bool) -> Result<ContainerDir> {
        let bundle = root.join("containers").join(id);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).with_context(|| format!("create {}", rootfs.display()))?;
        let lock = File::create(bundle.join("lock")).context("create container lock")?;
        try_lock(&lock).context("lock the container directory")?;
        // runc inherits the descriptor, so the lock outlives a killed ferry while runc runs.
        fcntl(&lock, FcntlArg::F_SETFD(FdFlag::empty())).context("share the container lock")?;
        if remove {
            File::create(bundle.join("rm")).context("mark the container for removal")?;
        }
        Ok(ContainerDir {
            id: id.to_string(),
            bundle,
            rootfs,
            remove,
            _lock: lock,
        })
    }

    /// Unmounts the rootfs; with `--rm`, also removes the snapshot and the directory.
    pub fn release(&self, snapshotter: &Snapshotter) {
        release(&self.id, &self.bundle, self.remove, snapshotter);
    }
}

fn release(id: &str, bundle: &Path, remove: bool, snapshotter: &Snapshotter) {
    let rootfs = bundle.join("rootfs");
    if remove {
        if let Err(e) = snapshotter.remove_active(id, &rootfs) {
            tracing::warn!(container = %id, error = %e, "removing the container's snapshot failed");
        }
        if let Err(e) = std::fs::remove_dir_all(bundle) {
            tracing::warn!(container = %id, error = %e, "removing the container failed");
        }
    } else {
        // The container's changes stay in its active snapshot for a later commit or start.
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn try_lock(file: &File) -> std::io::Result<()> {
    // SAFETY: flock only reads the descriptor number, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Cleans up after runs that were killed (their lock is free): unmounts their rootfs, deletes
/// their runc state and removes `--rm` containers.
pub fn sweep(root: &Path, snapshotter: &Snapshotter, runc: &Runc) {
    let Ok(entries) = std::fs::read_dir(root.join("containers")) else {
        return;
    };
    for entry in entries.flatten() {
        let bundle = entry.path();
        let Ok(lock) = File::open(bundle.join("lock")) else {
            continue;
        };
        if try_lock(&lock).is_err() {
            continue;
        }
        let id = entry.file_name().to_string_lossy().into_owned();
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .is_ok_and(|m| m.contains(&bundle.join("rootfs").to_string_lossy().into_owned()));
        let remove = bundle.join("rm").exists();
        if mounted || remove {
            tracing::info!(container = %id, "cleaning up after an interrupted run");
            let _ = runc.delete(&id);
            release(&id, &bundle, remove, snapshotter);
        }
    }
}
