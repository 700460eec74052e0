//! The FUSE side: a [`Layer`] served read-only at a directory, and the cleanup of mounts whose
//! server is gone.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    ReplyXattr, Request, Session, SessionACL,
};
use nix::mount::{umount2, MntFlags};

use crate::layer::Layer;
use crate::tree::{Inode, Kind};
use crate::Error;

/// How long the kernel may keep names and attributes: the layer never changes.
const TTL: Duration = Duration::from_secs(3600);
/// The filesystem type's subtype, as `/proc/self/mountinfo` shows it (`fuse.ferry-lazy`).
const SUBTYPE: &str = "ferry-lazy";
/// The mount's source, as `/proc/self/mountinfo` shows it.
const FSNAME: &str = "ferry-lazy";

struct LazyFs {
    layer: Arc<Layer>,
    runtime: tokio::runtime::Handle,
    /// When a failed read was last logged as a warning.
    last_warning: Arc<Mutex<Option<Instant>>>,
}

/// At most one failed read per this interval is a warning; the rest are debug lines (with no
/// peer left, a container that reads thousands of files fails thousands of reads at once).
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Whether a failure now should be a warning, given when the last one was.
fn warn_now(last: &Mutex<Option<Instant>>) -> bool {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < WARNING_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}

fn kind(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
    }
}

fn attr(node: &Inode) -> FileAttr {
    FileAttr {
        ino: INodeNo(node.ino),
        size: node.size,
        blocks: node.size.div_ceil(512),
        atime: node.mtime,
        mtime: node.mtime,
        ctime: node.mtime,
        crtime: node.mtime,
        kind: kind(node.kind),
        perm: node.perm,
        nlink: node.nlink,
        uid: node.uid,
        gid: node.gid,
        rdev: node.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// Answers an xattr request: the size when `size` is 0, else the bytes if they fit.
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.layer.tree().lookup(parent.0, name) {
            Some(node) => reply.entry(&TTL, &attr(node), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.layer.tree().get(ino.0) {
            Some(node) => reply.attr(&TTL, &attr(node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.layer.tree().get(ino.0) {
            Some(node) if node.kind == Kind::Symlink => reply.data(&node.target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.layer.tree().get(ino.0) {
            Some(node) if node.kind == Kind::Dir => reply.error(Errno::EISDIR),
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Answered from a task: a read waiting for the network holds up no other request.
        let layer = self.layer.clone();
        let last_warning = self.last_warning.clone();
        self.runtime.spawn(async move {
            match layer.read(ino.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    if warn_now(&last_warning) {
                        tracing::warn!(ino = ino.0, offset, size, error = %e, "lazy read failed");
                    } else {
                        tracing::debug!(ino = ino.0, offset, size, error = %e, "lazy read failed");
                    }
                    reply.error(Errno::EIO);
                }
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.layer.tree();
        let Some(dir) = tree.get(ino.0).filter(|n| n.kind == Kind::Dir) else {
            reply.error(Errno::ENOTDIR);
            return;
        };
        let dots = [
            (dir.ino, FileType::Directory, OsStr::new(".")),
            (dir.parent, FileType::Directory, OsStr::new("..")),
        ];
        let children = dir.children.iter().filter_map(|(name, &child)| {
            let node = tree.get(child)?;
            Some((child, kind(node.kind), name.as_os_str()))
        });
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(children)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(node) = self.layer.tree().get(ino.0) else {
            reply.error(Errno::ENOENT);
            return;
        };
        match name.to_str().and_then(|n| node.xattrs.get(n)) {
            Some(value) => xattr_reply(reply, size, value),
            None => reply.error(Errno::ENODATA),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(node) = self.layer.tree().get(ino.0) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let mut names = Vec::new();
        for name in node.xattrs.keys() {
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        xattr_reply(reply, size, &names);
    }

    fn access(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mask: fuser::AccessFlags,
        reply: fuser::ReplyEmpty,
    ) {
        // default_permissions: the kernel checks modes itself.
        match self.layer.tree().get(ino.0) {
            Some(_) => reply.ok(),
            None => reply.error(Errno::ENOENT),
        }
    }
}

/// Mounts `layer` read-only at `mountpoint` (created if needed) for every user, with the
/// kernel checking permissions, and serves it from a thread of its own until it is unmounted.
/// Reads are answered by tasks on `runtime`.
pub fn mount(
    layer: Arc<Layer>,
    mountpoint: &Path,
    runtime: tokio::runtime::Handle,
) -> Result<std::thread::JoinHandle<()>, Error> {
    std::fs::create_dir_all(mountpoint).map_err(Error::io("create mount point", mountpoint))?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(FSNAME.into()),
        MountOption::Subtype(SUBTYPE.into()),
        MountOption::DefaultPermissions,
        MountOption::Dev,
        MountOption::Suid,
        MountOption::Exec,
    ];
    config.acl = SessionACL::All;
    let fs = LazyFs {
        layer,
        runtime,
        last_warning: Arc::new(Mutex::new(None)),
    };
    let session = Session::new(fs, mountpoint, &config).map_err(Error::io("mount", mountpoint))?;
    let path = mountpoint.to_path_buf();
    Ok(std::thread::spawn(move || {
        if let Err(e) = session.run() {
            tracing::warn!(mountpoint = %path.display(), error = %e, "lazy layer server stopped");
        }
        tracing::debug!(mountpoint = %path.display(), "lazy layer unmounted");
    }))
}

/// Detaches the mount at `mountpoint` (it goes once nothing uses it, an overlay on top
/// included) and removes the directory; nothing happens when nothing is mounted there.
pub fn unmount(mountpoint: &Path) -> Result<(), Error> {
    match umount2(mountpoint, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(Error::Io {
                what: "unmount",
                path: mountpoint.to_path_buf(),
                source: e.into(),
            })
        }
    }
    match std::fs::remove_dir(mountpoint) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove mount point", mountpoint)(e)),
    }
}

/// The FUSE mounts of this kind under `dir`, from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut fields = right.split(' ');
            let (fstype, source) = (fields.next()?, fields.next()?);
            // `fuse.ferry-lazy`, or plain `fuse` with the source named so (a mount by root)
            let ours =
                fstype == format!("fuse.{SUBTYPE}") || (fstype == "fuse" && source == FSNAME);
            if !ours {
                return None;
            }
            let point = PathBuf::from(unescape(left.split(' ').nth(4)?));
            point.starts_with(dir).then_some(point)
        })
        .collect()
}

/// A mountinfo path with its `\NNN` octal escapes decoded.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Some(n) = text
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a FUSE file system is mounted at `path` as this process sees it: a daemon in
/// another mount namespace (as `ip netns exec` gives one) mounts where the CLI cannot see.
pub fn is_mounted(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
}

/// Lazily unmounts every lazy-layer mount under `dir` whose server has gone (the kernel
/// answers ENOTCONN), so a killed ferry leaves none behind; returns the ones removed.
pub fn sweep_stale(dir: &Path) -> Vec<PathBuf> {
    let mut swept = Vec::new();
    for point in mounts_under(dir) {
        // statfs always asks the server (a stat may be answered from cached attributes)
        let stale = matches!(
            nix::sys::statfs::statfs(&point),
            Err(nix::errno::Errno::ENOTCONN)
        );
        if !stale {
            continue;
        }
        match unmount(&point) {
            Ok(()) => swept.push(point),
            Err(e) => tracing::warn!(error = %e, "cannot remove a stale lazy mount"),
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape(r"/plain"), "/plain");
    }
}
