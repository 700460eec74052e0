//! Names of tar entries and their resolution inside the layer root.
//!
//! A symlink met while walking the parent directories of an entry is followed as if the layer
//! root were `/`: an absolute target starts again at the root and `..` stops at the root. This
//! is how containerd confines layer application (continuity `fs.RootPath`), and real images
//! depend on it (Debian's `var/run -> /run`, merged `/usr`'s `lib -> usr/lib`).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::fs::{Fs, Kind};
use crate::EntryError;

/// Most symlinks followed while resolving one path; Linux's MAXSYMLINKS.
const MAX_SYMLINK_HOPS: usize = 40;

/// Split a tar name into normal components: empty and `.` components (a `./` prefix, a leading
/// `/`) are dropped and `..` removes the component before it. `None` when a `..` would climb
/// above the root.
pub(crate) fn clean_name(name: &[u8]) -> Option<Vec<OsString>> {
    let mut parts: Vec<OsString> = Vec::new();
    for comp in name.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            _ => parts.push(OsStr::from_bytes(comp).to_os_string()),
        }
    }
    Some(parts)
}

/// A directory path resolved inside the root.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Normal components below the root, free of symlinks.
    pub parts: Vec<OsString>,
    /// Index of the first component that does not exist yet (all after it are missing too).
    pub missing_from: Option<usize>,
}

impl Resolved {
    /// The host path of the directory.
    pub(crate) fn host_path(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(&self.parts);
        path
    }
}

/// Resolve `dir` (clean components) inside `root`, following every symlink met with `root` as
/// `/`, at most [`MAX_SYMLINK_HOPS`] of them.
pub(crate) fn resolve_dir(
    fs: &dyn Fs,
    root: &Path,
    dir: &[OsString],
) -> Result<Resolved, EntryError> {
    let mut pending: VecDeque<OsString> = dir.iter().cloned().collect();
    let mut resolved = Resolved {
        parts: Vec::new(),
        missing_from: None,
    };
    let mut hops = 0;

    while let Some(comp) = pending.pop_front() {
        if comp == ".." {
            resolved.parts.pop();
            if resolved
                .missing_from
                .is_some_and(|i| i >= resolved.parts.len())
            {
                resolved.missing_from = None;
            }
            continue;
        }

        if resolved.missing_from.is_some() {
            resolved.parts.push(comp);
            continue;
        }

        let path = resolved.host_path(root).join(&comp);
        match fs.kind(&path).map_err(EntryError::io("inspect", &path))? {
            Kind::Dir => resolved.parts.push(comp),
            Kind::Missing => {
                resolved.missing_from = Some(resolved.parts.len());
                resolved.parts.push(comp);
            }
            Kind::Other => {
                resolved.parts.push(comp);
                return Err(EntryError::NotADirectory(display(&resolved.parts)));
            }
            Kind::Symlink(target) => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(EntryError::TooManySymlinks(display(dir)));
                }
                follow(&target, &mut resolved.parts, &mut pending);
            }
        }
    }
    Ok(resolved)
}

/// Put a symlink's target in front of the components still to walk; an absolute target restarts
/// at the root.
fn follow(target: &Path, parts: &mut Vec<OsString>, pending: &mut VecDeque<OsString>) {
    if target.is_absolute() {
        parts.clear();
    }

    for comp in target.components().rev() {
        match comp {
            Component::Normal(name) => pending.push_front(name.to_os_string()),
            Component::ParentDir => pending.push_front(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// Create the missing directories of `dir` and return its host path.
pub(crate) fn create_dirs(fs: &dyn Fs, root: &Path, dir: &Resolved) -> Result<PathBuf, EntryError> {
    let Some(first) = dir.missing_from else {
        return Ok(dir.host_path(root));
    };

    let mut path = root.to_path_buf();
    path.extend(&dir.parts[..first]);
    for comp in &dir.parts[first..] {
        path.push(comp);
        fs.mkdir(&path)
            .map_err(EntryError::io("create directory", &path))?;
    }
    Ok(path)
}

/// Resolve a hardlink's target name to the host path of an existing non-directory inside
/// `root`. Its parents are resolved like any entry's; its last component is not followed.
pub(crate) fn resolve_link_target(
    fs: &dyn Fs,
    root: &Path,
    link_name: &[u8],
) -> Result<PathBuf, EntryError> {
    let shown = String::from_utf8_lossy(link_name).into_owned();
    let parts =
        clean_name(link_name).ok_or_else(|| EntryError::HardlinkEscapesRoot(shown.clone()))?;
    let Some((last, parents)) = parts.split_last() else {
        return Err(EntryError::HardlinkToDirectory(shown));
    };

    let dir = resolve_dir(fs, root, parents)?;
    if dir.missing_from.is_some() {
        return Err(EntryError::HardlinkTargetMissing(shown));
    }

    let path = dir.host_path(root).join(last);
    match fs.kind(&path).map_err(EntryError::io("inspect", &path))? {
        Kind::Missing => Err(EntryError::HardlinkTargetMissing(shown)),
        Kind::Dir => Err(EntryError::HardlinkToDirectory(shown)),
        Kind::Symlink(_) | Kind::Other => Ok(path),
    }
}

/// Components joined with `/`, for messages.
pub(crate) fn display(parts: &[OsString]) -> String {
    let joined: Vec<_> = parts.iter().map(|p| p.to_string_lossy()).collect();
    joined.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::mem::{MemFs, MemKind};

    const ROOT: &str = "/layer";

    fn parts(s: &str) -> Vec<OsString> {
        clean_name(s.as_bytes()).unwrap()
    }

    fn resolve(fs: &MemFs, dir: &str) -> Result<(String, Option<usize>), String> {
        match resolve_dir(fs, Path::new(ROOT), &parts(dir)) {
            Ok(r) => Ok((display(&r.parts), r.missing_from)),
            Err(err) => Err(err.to_string()),
        }
    }

    fn symlink(fs: &MemFs, path: &str, target: &str) {
        fs.put(path, MemKind::Symlink(PathBuf::from(target)));
    }

    #[test]
    fn clean_name_strips_prefixes_and_refuses_climbing() {
        let cases: &[(&str, Option<&str>)] = &[
            ("./a/b", Some("a/b")),
            ("/etc/passwd", Some("etc/passwd")),
            ("a//b/./c/", Some("a/b/c")),
            ("a/../b", Some("b")),
            ("./", Some("")),
            ("/", Some("")),
            ("../escape", None),
            ("a/../../escape", None),
            ("/..", None),
            ("a/b/../../..", None),
        ];
        for (name, want) in cases {
            let got = clean_name(name.as_bytes()).map(|p| display(&p));
            assert_eq!(got.as_deref(), *want, "name {name:?}");
        }
    }

    #[test]
    fn resolve_follows_absolute_symlink_from_the_root() {
        let fs = MemFs::new(Path::new(ROOT));
        fs.put("/layer/usr", MemKind::Dir);
        fs.put("/layer/usr/lib", MemKind::Dir);
        symlink(&fs, "/layer/lib", "/usr/lib");
        symlink(&fs, "/layer/evil", "/");
        assert_eq!(
            resolve(&fs, "lib/x86_64"),
            Ok(("usr/lib/x86_64".into(), Some(2)))
        );
        assert_eq!(resolve(&fs, "evil/etc"), Ok(("etc".into(), Some(0))));
        assert_eq!(resolve(&fs, "usr/lib"), Ok(("usr/lib".into(), None)));

        // An absolute target restarts at the root from any depth.
        symlink(&fs, "/layer/usr/lib/conf", "/etc/conf");
        assert_eq!(
            resolve(&fs, "usr/lib/conf/a"),
            Ok(("etc/conf/a".into(), Some(0)))
        );
    }

    #[test]
    fn resolve_stops_relative_symlink_at_the_root() {
        let fs = MemFs::new(Path::new(ROOT));
        fs.put("/layer/a", MemKind::Dir);
        symlink(&fs, "/layer/a/up", "../../../..");
        symlink(&fs, "/layer/a/side", "../b/./c");
        assert_eq!(resolve(&fs, "a/up/tmp"), Ok(("tmp".into(), Some(0))));
        assert_eq!(resolve(&fs, "a/up"), Ok(("".into(), None)));
        assert_eq!(resolve(&fs, "a/side"), Ok(("b/c".into(), Some(0))));
    }

    #[test]
    fn resolve_refuses_symlink_loops_after_40_hops() {
        let fs = MemFs::new(Path::new(ROOT));
        symlink(&fs, "/layer/loop", "loop");
        assert_eq!(
            resolve(&fs, "loop/x"),
            Err(r#"more than 40 symlinks met while resolving "loop/x""#.into())
        );

        // A chain of exactly 40 links still resolves.
        for i in 0..40 {
            symlink(&fs, &format!("/layer/l{i}"), &format!("l{}", i + 1));
        }
        fs.put("/layer/l40", MemKind::Dir);
        assert_eq!(resolve(&fs, "l0"), Ok(("l40".into(), None)));
    }

    #[test]
    fn resolve_refuses_a_file_as_parent() {
        let fs = MemFs::new(Path::new(ROOT));
        fs.put("/layer/file", MemKind::File(Vec::new()));
        assert_eq!(
            resolve(&fs, "file/x"),
            Err(r#"parent "file" is not a directory"#.into())
        );
    }

    #[test]
    fn link_target_resolves_inside_the_root() {
        let fs = MemFs::new(Path::new(ROOT));
        let root = Path::new(ROOT);
        fs.put("/layer/etc", MemKind::Dir);
        fs.put("/layer/etc/passwd", MemKind::File(b"root".to_vec()));
        symlink(&fs, "/layer/abs", "/etc");
        symlink(&fs, "/layer/up", "../../..");

        let found = resolve_link_target(&fs, root, b"abs/passwd").unwrap();
        assert_eq!(found, Path::new("/layer/etc/passwd"));
        let found = resolve_link_target(&fs, root, b"up/etc/passwd").unwrap();
        assert_eq!(found, Path::new("/layer/etc/passwd"));

        let err = |name: &str| resolve_link_target(&fs, root, name.as_bytes()).unwrap_err();
        assert_eq!(
            err("../etc/passwd").to_string(),
            r#"hardlink target "../etc/passwd" climbs above the layer root"#
        );
        assert_eq!(
            err("etc").to_string(),
            r#"hardlink target "etc" is a directory"#
        );
        assert_eq!(
            err("abs/shadow").to_string(),
            r#"hardlink target "abs/shadow" does not exist inside the layer root"#
        );
    }
}
