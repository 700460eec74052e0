//! A container's directory, `ROOT/containers/<id>`: the runtime bundle (`config.json`), the
//! rootfs mount point, an `rm` marker for `--rm` containers, a `lock` file, the container's
//! record (`state.json`: name, image, status, exit code) and, for detached containers, the
//! log of its output (`container.log`, docker's json-file lines) and its supervisor's own
//! diagnostics (`shim.log`). Names are reserved in `ROOT/names/<name>`, which holds the ID.
//!
//! A container's states: created (directory, bundle and record written) → running (runc
//! started it; the record has its pid) → exited (the record has its exit code; the rootfs is
//! unmounted, its upper directory kept for `start` and `commit`) → removed (`rm`, or at exit
//! with `--rm`). `start` goes from exited back to running.
//!
//! The lock is an `flock` taken by the ferry process that runs the container and inherited by
//! its runc, so it is held exactly as long as either of them lives. A directory whose lock can be
//! taken belongs to a run that was killed: [`sweep`] unmounts it and, for `--rm` containers,
//! removes it with its snapshot and runc state.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use ferry_runtime::Runc;
use ferry_snapshot::Snapshotter;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use serde::{Deserialize, Serialize};

/// A container directory in use by this process.
pub struct ContainerDir {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    remove: bool,
    _lock: File,
}

impl ContainerDir {
    /// Takes the lock of the existing container `id`; fails when a process (a run, a
    /// supervisor) holds it, that is while the container runs.
    pub fn open(root: &Path, id: &str) -> Result<ContainerDir> {
        let bundle = root.join("containers").join(id);
        let lock = File::open(bundle.join("lock"))
            .with_context(|| format!("open the lock of container {id}"))?;
        if try_lock(&lock).is_err() {
            bail!("container {id} is in use by another process");
        }
        fcntl(&lock, FcntlArg::F_SETFD(FdFlag::empty())).context("share the container lock")?;
        let remove = bundle.join("rm").exists();
        Ok(ContainerDir {
            id: id.to_string(),
            rootfs: bundle.join("rootfs"),
            bundle,
            remove,
            _lock: lock,
        })
    }

    /// The lock's descriptor, inherited by a supervisor that takes the container over.
    pub fn lock_fd(&self) -> i32 {
        self._lock.as_raw_fd()
    }

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
        release_dir(&self.id, &self.bundle, self.remove, snapshotter);
    }
}

/// Takes a container that no longer runs off its network and unmounts its rootfs; with
/// `remove`, also removes its snapshot and directory.
pub fn release_dir(id: &str, bundle: &Path, remove: bool, snapshotter: &Snapshotter) {
    let rootfs = bundle.join("rootfs");
    release_network(id, bundle);
    if remove {
        if let Err(e) = snapshotter.remove_active(id, &rootfs) {
            tracing::warn!(container = %id, error = %e, "removing the container's snapshot failed");
        }
        // bundle = ROOT/containers/<id>; its lazy layers go now that the overlay over them is
        if let Some(root) = bundle.parent().and_then(Path::parent) {
            crate::lazy::release(root, id);
        }
        if let Err(e) = std::fs::remove_dir_all(bundle) {
            tracing::warn!(container = %id, error = %e, "removing the container failed");
        }
    } else {
        // The container's changes stay in its active snapshot for a later commit or start.
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        // Lazy layers served by the daemon stay mounted for `start` (a foreground run that
        // served them itself unmounts them when it ends).
    }
}

/// Detaches the container from the bridge network and removes its network namespace.
fn release_network(id: &str, bundle: &Path) {
    if let Err(e) = crate::cni::teardown(bundle, id) {
        tracing::warn!(container = %id, error = %format!("{e:#}"), "removing the container's network failed");
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
    crate::lazy::sweep(root);
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
            if remove {
                if let Ok(record) = Record::load(root, &id) {
                    release_name(root, &record.name, &id);
                }
            }
            release_dir(&id, &bundle, remove, snapshotter);
        }
    }
}

/// Where a container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Set up, never started (or its start failed).
    Created,
    /// Its process runs.
    Running,
    /// Its process ended; `exit_code` says how.
    Exited,
}

impl Status {
    /// Docker's word for the status (`docker inspect` `.State.Status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// A lower layer of a container's rootfs: the committed snapshot's chain ID and directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lower {
    /// The chain ID.
    pub chain_id: String,
    /// The committed snapshot's directory.
    pub dir: PathBuf,
}

/// What ferry keeps about one container (`ROOT/containers/<id>/state.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The 64-hex ID.
    pub id: String,
    /// The unique name (`--name`, or one made up).
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The digest of the image's manifest or index (the IMAGE ID of `ferry images`).
    pub image_id: String,
    /// The resolved command and arguments.
    pub command: Vec<String>,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Current status.
    pub status: Status,
    /// The container's first process, while it runs.
    pub pid: Option<i32>,
    /// How the last run ended (128+N for signal N).
    pub exit_code: Option<i32>,
    /// Why the last start failed.
    pub error: Option<String>,
    /// Start of the last run, RFC 3339.
    pub started_at: Option<String>,
    /// End of the last run, RFC 3339.
    pub finished_at: Option<String>,
    /// Removed when it exits (`--rm`).
    pub auto_remove: bool,
    /// Output goes to `container.log` (detached) rather than to the terminal of `ferry run`.
    pub detached: bool,
    /// The image's layers, bottom first, to mount the rootfs again on `start`.
    pub lowers: Vec<Lower>,
}

/// RFC 3339 time of now, with nanoseconds as docker prints it.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Record {
    fn path(root: &Path, id: &str) -> PathBuf {
        root.join("containers").join(id).join("state.json")
    }

    /// Reads the record of container `id`.
    pub fn load(root: &Path, id: &str) -> Result<Record> {
        let path = Self::path(root, id);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
    }

    /// Writes the record atomically (a reader sees the old or the new one, never a mix).
    pub fn save(&self, root: &Path) -> Result<()> {
        let path = Self::path(root, &self.id);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(&tmp, json).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))
    }

    /// Whether a process holds the container's lock (a run or a supervisor is attached).
    pub fn in_use(&self, root: &Path) -> bool {
        let lock = root.join("containers").join(&self.id).join("lock");
        File::open(lock).is_ok_and(|f| try_lock(&f).is_err())
    }

    /// The status, corrected for a supervisor that died without writing the end of the run:
    /// such a container counts as exited with 255, as docker reports containers whose
    /// daemon died.
    pub fn effective(mut self, root: &Path) -> Record {
        if self.status == Status::Running && !self.in_use(root) {
            self.status = Status::Exited;
            self.pid = None;
            self.exit_code.get_or_insert(255);
        }
        self
    }
}

/// Every kept container, newest first. Records that cannot be read are skipped with a warning.
pub fn list(root: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(root.join("containers")) else {
        return Vec::new();
    };
    let mut records: Vec<Record> = entries
        .flatten()
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| {
            let id = e.file_name().to_string_lossy().into_owned();
            match Record::load(root, &id) {
                Ok(r) => Some(r.effective(root)),
                Err(err) => {
                    tracing::warn!(container = %id, error = %err, "unreadable container record");
                    None
                }
            }
        })
        .collect();
    records.sort_by(|a, b| b.created.cmp(&a.created));
    records
}

/// A kept container and the image it was made from.
#[allow(dead_code)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUse {
    /// The container's ID.
    pub container_id: String,
    /// The container's name.
    pub container_name: String,
    /// The image as the user named it.
    pub image: String,
    /// The digest of the image's manifest or index.
    pub image_id: String,
}

/// The images that kept containers (running or not) were made from: what `rmi` must not
/// remove without `--force`, and what image garbage collection must keep.
// TODO: the allow goes when `rmi` and image collection (issue 5) call this.
#[allow(dead_code)]
pub fn images_in_use(root: &Path) -> Vec<ImageUse> {
    list(root)
        .into_iter()
        .map(|r| ImageUse {
            container_id: r.id,
            container_name: r.name,
            image: r.image,
            image_id: r.image_id,
        })
        .collect()
}

/// The container named `text`: a name, a full ID or an unambiguous ID prefix (as docker).
pub fn find(root: &Path, text: &str) -> Result<Record> {
    let no_such = || anyhow!("no such container: {text}");
    if text.is_empty() {
        return Err(no_such());
    }
    if let Ok(id) = std::fs::read_to_string(root.join("names").join(text)) {
        if let Ok(record) = Record::load(root, id.trim()) {
            return Ok(record.effective(root));
        }
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(no_such());
    }
    let mut matches = list(root).into_iter().filter(|r| r.id.starts_with(text));
    let first = matches.next().ok_or_else(no_such)?;
    if matches.next().is_some() {
        bail!("multiple containers match {text}: give more of the ID");
    }
    Ok(first)
}

/// Reserves `name` for container `id`; fails when another container has it.
pub fn reserve_name(root: &Path, name: &str, id: &str) -> Result<()> {
    let valid = name
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'_' | b'.' | b'-')));
    if name.is_empty() || !valid {
        bail!("invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    }
    let dir = root.join("names");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path);
    match file {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(id.as_bytes())
                .with_context(|| format!("write {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            let short = owner.get(..12).unwrap_or(&owner);
            bail!("the container name {name:?} is already in use by container {short}")
        }
        Err(e) => Err(e).with_context(|| format!("create {}", path.display())),
    }
}

/// Frees `name` if it still belongs to `id`.
pub fn release_name(root: &Path, name: &str, id: &str) {
    let path = root.join("names").join(name);
    if std::fs::read_to_string(&path).is_ok_and(|owner| owner == id) {
        let _ = std::fs::remove_file(path);
    }
}

/// A made-up name for a container run without `--name`: two words and a number drawn from
/// the ID, as docker makes up `adjective_noun` names.
pub fn made_up_name(id: &str) -> String {
    const ADJECTIVES: [&str; 16] = [
        "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nimble", "proud", "quiet", "swift", "tender", "witty",
    ];
    const NOUNS: [&str; 16] = [
        "barge", "buoy", "canoe", "dinghy", "ferry", "galley", "junk", "kayak", "ketch", "punt",
        "raft", "schooner", "skiff", "sloop", "tug", "yawl",
    ];
    let byte = |i: usize| usize::from_str_radix(id.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0);
    format!(
        "{}_{}_{}",
        ADJECTIVES[byte(0) % 16],
        NOUNS[byte(2) % 16],
        byte(4)
    )
}

/// Removes a container that no process uses: its runc state, rootfs mount, active snapshot,
/// directory and name.
pub fn remove(root: &Path, record: &Record) -> Result<()> {
    let dir = ContainerDir::open(root, &record.id)?;
    let runc = Runc::new(root.join("runc"));
    runc.delete(&record.id)
        .with_context(|| format!("remove container {}", record.id))?;
    let snapshotter = Snapshotter::new(root.join("snapshots")).map_err(|e| anyhow!(e))?;
    snapshotter
        .remove_active(&record.id, &dir.rootfs)
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("remove the snapshot of container {}", record.id))?;
    // the lazy layers the daemon kept for `start` go with the overlay over them
    crate::lazy::release(root, &record.id);
    release_network(&record.id, &dir.bundle);
    release_name(root, &record.name, &record.id);
    std::fs::remove_dir_all(&dir.bundle).with_context(|| format!("remove {}", dir.bundle.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(root: &Path, id: &str, name: &str) -> Record {
        std::fs::create_dir_all(root.join("containers").join(id)).unwrap();
        let r = Record {
            id: id.to_string(),
            name: name.to_string(),
            image: "busybox".into(),
            image_id: "sha256:aa".into(),
            command: vec!["sh".into()],
            created: now(),
            status: Status::Created,
            pid: None,
            exit_code: None,
            error: None,
            started_at: None,
            finished_at: None,
            auto_remove: false,
            detached: true,
            lowers: Vec::new(),
        };
        r.save(root).unwrap();
        reserve_name(root, name, id).unwrap();
        r
    }

    #[test]
    fn containers_are_found_by_name_id_and_unique_prefix() {
        let root = tempfile::tempdir().unwrap();
        let a = "ab".repeat(32);
        let b = format!("ac{}", "0".repeat(62));
        record(root.path(), &a, "web");
        record(root.path(), &b, "db");
        assert_eq!(find(root.path(), "web").unwrap().id, a);
        assert_eq!(find(root.path(), "abab").unwrap().id, a);
        assert_eq!(find(root.path(), &b).unwrap().name, "db");
        let err = find(root.path(), "a").unwrap_err().to_string();
        assert_eq!(err, "multiple containers match a: give more of the ID");
        let err = find(root.path(), "nope").unwrap_err().to_string();
        assert_eq!(err, "no such container: nope");
        let uses = images_in_use(root.path());
        assert_eq!(uses.len(), 2);
        assert!(uses.iter().all(|u| u.image_id == "sha256:aa"));
    }

    #[test]
    fn a_name_is_given_once() {
        let root = tempfile::tempdir().unwrap();
        reserve_name(root.path(), "web", &"1".repeat(64)).unwrap();
        let err = reserve_name(root.path(), "web", &"2".repeat(64)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the container name \"web\" is already in use by container 111111111111"
        );
        let err = reserve_name(root.path(), "../x", "2").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("invalid container name \"../x\""));
        release_name(root.path(), "web", &"1".repeat(64));
        reserve_name(root.path(), "web", &"2".repeat(64)).unwrap();
    }

    #[test]
    fn a_running_record_without_its_supervisor_reads_as_exited_255() {
        let root = tempfile::tempdir().unwrap();
        let id = "cd".repeat(32);
        let mut r = record(root.path(), &id, "x");
        r.status = Status::Running;
        r.pid = Some(1);
        r.save(root.path()).unwrap();
        File::create(root.path().join("containers").join(&id).join("lock")).unwrap();
        let r = find(root.path(), "x").unwrap();
        assert_eq!(
            (r.status, r.exit_code, r.pid),
            (Status::Exited, Some(255), None)
        );
    }
}
