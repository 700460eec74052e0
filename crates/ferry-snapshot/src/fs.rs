//! The seam between layer application and the filesystem.
//!
//! Every call takes a full path whose parent directories the caller has already resolved
//! inside the layer root, and none of them follows a symlink in the last component. The host
//! implementation makes the system calls; the test implementation keeps a tree in memory and
//! refuses any path that would pass through a symlink, so unit tests prove the caller never
//! relies on the system to follow one.

use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

/// What a path names, without following a symlink in its last component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Nothing.
    Missing,
    /// A directory.
    Dir,
    /// A symlink with this target.
    Symlink(PathBuf),
    /// A regular file, device node, fifo or socket.
    Other,
}

/// A special file made with mknod(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// The filesystem calls layer application needs.
pub(crate) trait Fs {
    /// What `path` names (lstat).
    fn kind(&self, path: &Path) -> io::Result<Kind>;
    /// Create a directory (mode 0755 until its own metadata is set).
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Remove whatever `path` names, a directory with all it holds.
    fn remove_all(&self, path: &Path) -> io::Result<()>;
    /// Create a new regular file from `data`; returns the bytes written.
    fn write_file(&self, path: &Path, data: &mut dyn Read) -> io::Result<u64>;
    /// Create a symlink at `path` pointing at `target`, stored as it is.
    fn symlink(&self, target: &Path, path: &Path) -> io::Result<()>;
    /// Create a hardlink at `path` to the existing `existing` (not followed if a symlink).
    fn hardlink(&self, existing: &Path, path: &Path) -> io::Result<()>;
    /// Create a device node or fifo with permission bits 0 (set later by `chmod`).
    fn mknod(&self, path: &Path, node: Node) -> io::Result<()>;
    /// Set owner and group, not following a symlink.
    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Set the mode bits (including setuid, setgid, sticky); never called on a symlink.
    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Set an extended attribute, not following a symlink.
    fn lsetxattr(&self, path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()>;
    /// Set access and modification time, not following a symlink.
    fn set_mtime(&self, path: &Path, secs: i64, nanos: u32) -> io::Result<()>;
}

/// The real filesystem.
pub(crate) struct HostFs;

impl Fs for HostFs {
    fn kind(&self, path: &Path) -> io::Result<Kind> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Kind::Missing),
            Err(err) => return Err(err),
        };
        if meta.is_dir() {
            Ok(Kind::Dir)
        } else if meta.file_type().is_symlink() {
            Ok(Kind::Symlink(fs::read_link(path)?))
        } else {
            Ok(Kind::Other)
        }
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        fs::DirBuilder::new().mode(0o755).create(path)
    }

    fn remove_all(&self, path: &Path) -> io::Result<()> {
        match self.kind(path)? {
            Kind::Missing => Ok(()),
            Kind::Dir => fs::remove_dir_all(path),
            Kind::Symlink(_) | Kind::Other => fs::remove_file(path),
        }
    }

    fn write_file(&self, path: &Path, data: &mut dyn Read) -> io::Result<u64> {
        // O_EXCL | O_NOFOLLOW: the caller removed what was there, so anything met now is a bug
        // and must not be written through.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        io::copy(data, &mut file)
    }

    fn symlink(&self, target: &Path, path: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, path)
    }

    fn hardlink(&self, existing: &Path, path: &Path) -> io::Result<()> {
        // Flags 0: a symlink named by `existing` is linked itself, not followed.
        nix::unistd::linkat(AT_FDCWD, existing, AT_FDCWD, path, AtFlags::empty())
            .map_err(io::Error::from)
    }

    fn mknod(&self, path: &Path, node: Node) -> io::Result<()> {
        let (kind, dev) = match node {
            Node::Char(major, minor) => (SFlag::S_IFCHR, libc::makedev(major, minor)),
            Node::Block(major, minor) => (SFlag::S_IFBLK, libc::makedev(major, minor)),
            Node::Fifo => (SFlag::S_IFIFO, 0),
        };
        nix::sys::stat::mknod(path, kind, Mode::empty(), dev).map_err(io::Error::from)
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        nix::unistd::fchownat(AT_FDCWD, path, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)
    }

    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn lsetxattr(&self, path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
        let path = c_string(path.as_os_str())?;
        let name = c_string(name)?;
        // SAFETY: both strings are NUL-terminated and outlive the call; the value pointer and
        // length describe one live slice.
        let rc = unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn set_mtime(&self, path: &Path, secs: i64, nanos: u32) -> io::Result<()> {
        let time = TimeSpec::new(secs, i64::from(nanos));
        let flag = UtimensatFlags::NoFollowSymlink;
        nix::sys::stat::utimensat(AT_FDCWD, path, &time, &time, flag).map_err(io::Error::from)
    }
}

/// A C string from an OS string, refusing interior NUL bytes.
fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))
}

#[cfg(test)]
pub(crate) mod mem {
    //! An in-memory filesystem that follows no symlink at all.

    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// One node of the in-memory tree.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct MemNode {
        pub kind: MemKind,
        pub mode: u32,
        pub owner: (u32, u32),
        pub mtime: Option<(i64, u32)>,
        pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    }

    /// What a node is.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum MemKind {
        Dir,
        File(Vec<u8>),
        Symlink(PathBuf),
        Node(Node),
    }

    /// A tree keyed by full path; `root` exists from the start.
    pub(crate) struct MemFs {
        root: PathBuf,
        pub nodes: RefCell<BTreeMap<PathBuf, MemNode>>,
        /// Every mutating call, in order, as "op path".
        pub log: RefCell<Vec<String>>,
    }

    impl MemFs {
        pub(crate) fn new(root: &Path) -> Self {
            let nodes = BTreeMap::from([(root.to_path_buf(), node(MemKind::Dir))]);
            let log = RefCell::new(Vec::new());
            MemFs {
                root: root.to_path_buf(),
                nodes: RefCell::new(nodes),
                log,
            }
        }

        pub(crate) fn get(&self, path: &str) -> Option<MemNode> {
            self.nodes.borrow().get(Path::new(path)).cloned()
        }

        /// Insert a node directly (test setup), parents must exist.
        pub(crate) fn put(&self, path: &str, kind: MemKind) {
            self.nodes
                .borrow_mut()
                .insert(PathBuf::from(path), node(kind));
        }

        /// Fail unless every parent of `path` inside the root is a directory, never a symlink.
        fn check_parents(&self, path: &Path) -> io::Result<()> {
            let nodes = self.nodes.borrow();
            let parents = path
                .ancestors()
                .skip(1)
                .filter(|p| p.starts_with(&self.root));
            for parent in parents {
                match nodes.get(parent).map(|n| &n.kind) {
                    Some(MemKind::Dir) => {}
                    Some(MemKind::Symlink(_)) => return Err(fake_err("path passes a symlink")),
                    Some(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                    None => return Err(io::Error::from(io::ErrorKind::NotFound)),
                }
            }
            Ok(())
        }

        fn create(&self, op: &str, path: &Path, kind: MemKind) -> io::Result<()> {
            self.check_parents(path)?;
            self.log
                .borrow_mut()
                .push(format!("{op} {}", path.display()));
            let mut nodes = self.nodes.borrow_mut();
            if nodes.contains_key(path) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            nodes.insert(path.to_path_buf(), node(kind));
            Ok(())
        }

        fn update(&self, op: &str, path: &Path, f: impl FnOnce(&mut MemNode)) -> io::Result<()> {
            self.check_parents(path)?;
            self.log
                .borrow_mut()
                .push(format!("{op} {}", path.display()));
            let mut nodes = self.nodes.borrow_mut();
            let found = nodes.get_mut(path).ok_or(io::ErrorKind::NotFound)?;
            f(found);
            Ok(())
        }
    }

    fn node(kind: MemKind) -> MemNode {
        let mode = if kind == MemKind::Dir { 0o755 } else { 0o600 };
        MemNode {
            kind,
            mode,
            owner: (0, 0),
            mtime: None,
            xattrs: BTreeMap::new(),
        }
    }

    fn fake_err(msg: &str) -> io::Error {
        io::Error::other(format!("memfs: {msg}"))
    }

    impl Fs for MemFs {
        fn kind(&self, path: &Path) -> io::Result<Kind> {
            self.check_parents(path)?;
            Ok(match self.nodes.borrow().get(path).map(|n| &n.kind) {
                None => Kind::Missing,
                Some(MemKind::Dir) => Kind::Dir,
                Some(MemKind::Symlink(target)) => Kind::Symlink(target.clone()),
                Some(_) => Kind::Other,
            })
        }

        fn mkdir(&self, path: &Path) -> io::Result<()> {
            self.create("mkdir", path, MemKind::Dir)
        }

        fn remove_all(&self, path: &Path) -> io::Result<()> {
            self.check_parents(path)?;
            self.log
                .borrow_mut()
                .push(format!("remove {}", path.display()));
            self.nodes.borrow_mut().retain(|p, _| !p.starts_with(path));
            Ok(())
        }

        fn write_file(&self, path: &Path, data: &mut dyn Read) -> io::Result<u64> {
            let mut bytes = Vec::new();
            data.read_to_end(&mut bytes)?;
            let len = bytes.len() as u64;
            self.create("write", path, MemKind::File(bytes))?;
            Ok(len)
        }

        fn symlink(&self, target: &Path, path: &Path) -> io::Result<()> {
            self.create("symlink", path, MemKind::Symlink(target.to_path_buf()))
        }

        fn hardlink(&self, existing: &Path, path: &Path) -> io::Result<()> {
            self.check_parents(existing)?;
            let found = self.nodes.borrow().get(existing).cloned();
            let found = found.ok_or(io::ErrorKind::NotFound)?;
            self.create("link", path, found.kind)
        }

        fn mknod(&self, path: &Path, node: Node) -> io::Result<()> {
            self.create("mknod", path, MemKind::Node(node))?;
            self.update("chmod", path, |n| n.mode = 0)
        }

        fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
            self.update("chown", path, |n| n.owner = (uid, gid))
        }

        fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
            self.update("chmod", path, |n| n.mode = mode)
        }

        fn lsetxattr(&self, path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
            let (name, value) = (name.as_bytes().to_vec(), value.to_vec());
            self.update("xattr", path, |n| {
                n.xattrs.insert(name, value);
            })
        }

        fn set_mtime(&self, path: &Path, secs: i64, nanos: u32) -> io::Result<()> {
            self.update("mtime", path, |n| n.mtime = Some((secs, nanos)))
        }
    }
}
