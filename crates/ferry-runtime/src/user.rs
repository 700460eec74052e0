//! User and group resolution against the container's own `/etc/passwd` and `/etc/group`.
//!
//! The rules follow what docker (through runc's libcontainer `user` package) does for the
//! image `User` field: `user[:group]`, where each part is a name or a number. A name must exist
//! in the rootfs's files; a number need not. Supplementary groups are only looked up when no
//! group is given explicitly.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::Error;

/// Largest id accepted, as libcontainer (ids are signed 32-bit there).
const MAX_ID: u32 = i32::MAX as u32;

/// Symlinks followed while resolving one path in the rootfs (the kernel's ELOOP limit).
const MAX_SYMLINKS: usize = 40;

/// passwd and group files larger than this are refused rather than read.
const MAX_DB_FILE: u64 = 4 << 20;

/// The ids a process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `spec` (`""`, `name`, `uid`, `uid:gid`, `name:group`, ...) in `rootfs`.
pub(crate) fn resolve_user(spec: &str, rootfs: &Path) -> Result<Ids, Error> {
    let (user, group) = match spec.split_once(':') {
        Some((_, g)) if g.contains(':') => {
            return Err(Error::InvalidUser {
                spec: spec.to_string(),
                reason: "expected user[:group]",
            })
        }
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };

    // An empty user means root, looked up like "0" so that root's groups apply.
    let user = if user.is_empty() { "0" } else { user };
    let (uid, gid, name) = lookup_user(spec, user, rootfs)?;
    if group.is_none() && name.is_none() {
        return Ok(Ids {
            uid,
            gid,
            additional_gids: Vec::new(),
        });
    }

    let group_path = Path::new("/etc/group");
    let groups = parse_group(&read_db_file(rootfs, group_path)?);
    if let Some(group) = group {
        let gid = lookup_group(spec, group, &groups, group_path)?;
        return Ok(Ids {
            uid,
            gid,
            additional_gids: Vec::new(),
        });
    }

    // Supplementary groups apply only when the group is implicit (libcontainer's rule).
    let name = name.unwrap_or_default();
    let additional_gids = groups
        .iter()
        .filter(|g| g.members.contains(&name))
        .map(|g| g.gid)
        .collect();
    Ok(Ids {
        uid,
        gid,
        additional_gids,
    })
}

/// uid, primary gid and name of `user` (a name or a number); a number not in the passwd file
/// is taken as is with gid 0.
fn lookup_user(spec: &str, user: &str, rootfs: &Path) -> Result<(u32, u32, Option<String>), Error> {
    let path = Path::new("/etc/passwd");
    let passwd = parse_passwd(&read_db_file(rootfs, path)?);
    let numeric = parse_id(spec, user)?;
    let entry = passwd.iter().find(|e| match numeric {
        Some(uid) => e.uid == uid,
        None => e.name == user,
    });

    match (entry, numeric) {
        (Some(e), _) => Ok((e.uid, e.gid, Some(e.name.clone()))),
        (None, Some(uid)) => Ok((uid, 0, None)),
        (None, None) => Err(Error::UnknownUser {
            name: user.to_string(),
            path: path.to_path_buf(),
        }),
    }
}

/// A group given by number is taken as is; by name it must be in the group file.
fn lookup_group(spec: &str, group: &str, groups: &[GroupEntry], path: &Path) -> Result<u32, Error> {
    if let Some(gid) = parse_id(spec, group)? {
        return Ok(gid);
    }
    groups
        .iter()
        .find(|g| g.name == group)
        .map(|g| g.gid)
        .ok_or_else(|| Error::UnknownGroup {
            name: group.to_string(),
            path: path.to_path_buf(),
        })
}

/// `Some(id)` when `part` is all digits; an error when it is a number out of range.
fn parse_id(spec: &str, part: &str) -> Result<Option<u32>, Error> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match part.parse::<u32>() {
        Ok(id) if id <= MAX_ID => Ok(Some(id)),
        _ => Err(Error::InvalidUser {
            spec: spec.to_string(),
            reason: "id out of range",
        }),
    }
}

/// Lines `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.trim();
            let _password = fields.next()?;
            let uid = fields.next()?.trim().parse().ok()?;
            let gid = fields.next()?.trim().parse().ok()?;
            (!name.is_empty() && !name.starts_with('#')).then(|| PasswdEntry {
                name: name.to_string(),
                uid,
                gid,
            })
        })
        .collect()
}

/// Lines `name:password:gid:member,member`; malformed lines are skipped.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.trim();
            let _password = fields.next()?;
            let gid = fields.next()?.trim().parse().ok()?;
            let members = fields
                .next()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            (!name.is_empty() && !name.starts_with('#')).then(|| GroupEntry {
                name: name.to_string(),
                gid,
                members,
            })
        })
        .collect()
}

/// The text of `path` inside `rootfs`, or `""` when it does not exist.
fn read_db_file(rootfs: &Path, path: &Path) -> Result<String, Error> {
    let refuse = |reason: String| Error::RootfsFile {
        path: path.to_path_buf(),
        reason,
    };
    let Some(host_path) = resolve_in_rootfs(rootfs, path).map_err(|e| refuse(e.to_string()))?
    else {
        return Ok(String::new());
    };

    // A hostile image can make /etc/passwd a FIFO or a device; read only regular files.
    let meta = fs::metadata(&host_path).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".to_string()));
    }
    if meta.len() > MAX_DB_FILE {
        return Err(refuse(format!("larger than {MAX_DB_FILE} bytes")));
    }
    let bytes = fs::read(&host_path).map_err(|e| refuse(e.to_string()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Where `path` (absolute, as seen inside the container) is on the host, following symlinks
/// as the container would see them: absolute targets and `..` never leave `rootfs`.
/// `None` when a component does not exist.
pub(crate) fn resolve_in_rootfs(rootfs: &Path, path: &Path) -> io::Result<Option<PathBuf>> {
    let mut pending: VecDeque<PathBuf> = components(path).collect();
    let mut resolved = PathBuf::new();
    let mut symlinks = 0;

    while let Some(part) = pending.pop_front() {
        if part.as_os_str() == ".." {
            resolved.pop();
            continue;
        }
        let candidate = rootfs.join(&resolved).join(&part);
        let meta = match fs::symlink_metadata(&candidate) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_symlink() {
            resolved.push(part);
            continue;
        }

        symlinks += 1;
        if symlinks > MAX_SYMLINKS {
            return Err(io::Error::other("too many levels of symbolic links"));
        }
        let target = fs::read_link(&candidate)?;
        if target.is_absolute() {
            resolved = PathBuf::new();
        }
        for (i, c) in components(&target).enumerate() {
            pending.insert(i, c);
        }
    }
    Ok(Some(rootfs.join(resolved)))
}

/// The normal and `..` components of `path`, as owned single-component paths.
fn components(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(PathBuf::from(n)),
        Component::ParentDir => Some(PathBuf::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # a comment\n\
        broken line\n\
        app:x:1000:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:app,other\n\
        app:x:1001:\n\
        audio:x:29:app\n\
        staff:x:50:\n";

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        dir
    }

    fn ids(uid: u32, gid: u32, additional_gids: &[u32]) -> Ids {
        Ids {
            uid,
            gid,
            additional_gids: additional_gids.to_vec(),
        }
    }

    #[test]
    fn resolve_user_follows_docker_rules() {
        let root = rootfs();
        let table = [
            ("", ids(0, 0, &[])),
            ("root", ids(0, 0, &[])),
            ("app", ids(1000, 1001, &[10, 29])),
            ("1000", ids(1000, 1001, &[10, 29])),
            ("app:staff", ids(1000, 50, &[])),
            ("app:7", ids(1000, 7, &[])),
            ("1000:1000", ids(1000, 1000, &[])),
            ("4242", ids(4242, 0, &[])),
            ("4242:staff", ids(4242, 50, &[])),
            ("app:", ids(1000, 1001, &[10, 29])),
        ];
        for (spec, want) in table {
            assert_eq!(
                resolve_user(spec, root.path()).unwrap(),
                want,
                "user {spec:?}"
            );
        }
    }

    #[test]
    fn resolve_user_names_unknown_user_and_group() {
        let root = rootfs();
        let err = resolve_user("nobody", root.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user nobody: no matching entry in /etc/passwd"
        );
        let err = resolve_user("app:nogroup", root.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find group nogroup: no matching entry in /etc/group"
        );
        let err = resolve_user("a:b:c", root.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid user \"a:b:c\": expected user[:group]"
        );
        let err = resolve_user("4294967295", root.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid user \"4294967295\": id out of range"
        );
    }

    #[test]
    fn resolve_user_without_passwd_accepts_only_numbers() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(resolve_user("", root.path()).unwrap(), ids(0, 0, &[]));
        assert_eq!(
            resolve_user("12:34", root.path()).unwrap(),
            ids(12, 34, &[])
        );
        assert!(matches!(
            resolve_user("root", root.path()),
            Err(Error::UnknownUser { name, .. }) if name == "root"
        ));
    }

    #[test]
    fn passwd_symlink_cannot_leave_rootfs() {
        // An absolute symlink to a host file must resolve inside the rootfs.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        fs::create_dir_all(root.path().join("data")).unwrap();
        fs::write(root.path().join("data/passwd"), "inside:x:7:8::/:/bin/sh\n").unwrap();
        let escape = format!("../../../../../../..{}", outside.path().display());
        symlink(&escape, root.path().join("etc/passwd")).unwrap();
        assert!(matches!(
            resolve_user("evil", root.path()),
            Err(Error::UnknownUser { .. })
        ));

        fs::remove_file(root.path().join("etc/passwd")).unwrap();
        symlink("/data/../data/passwd", root.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve_user("inside", root.path()).unwrap(), ids(7, 8, &[]));
    }

    #[test]
    fn passwd_that_is_not_a_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc/passwd")).unwrap();
        let err = resolve_user("root", root.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read /etc/passwd: not a regular file"
        );
    }
}
