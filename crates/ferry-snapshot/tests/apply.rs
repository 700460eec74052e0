//! `apply_layer` on the real filesystem: hostile layers and the metadata a layer keeps.
//!
//! Each test applies into `outer/l1/l2/target` and checks that `outer` holds nothing else
//! afterwards, so an escape through a symlink or `..` (up to three levels) shows up as a stray
//! file in `outer` instead of landing on the host. Escapes through `/` use names unique to the
//! test, which it checks for and removes on the host.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{chain, digest, raw_header, Layer, MTIME};
use ferry_snapshot::apply_layer;
use tar::EntryType;

/// Where the target sits below `outer`.
const TARGET: &str = "l1/l2/target";

/// A temporary `outer` directory with an empty `outer/l1/l2/target`.
struct Dirs {
    outer: tempfile::TempDir,
    target: PathBuf,
}

impl Dirs {
    /// A name no other test or host file has, for escapes aimed at the host's `/`.
    fn unique(&self) -> String {
        let outer = self
            .outer
            .path()
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        format!("ferry-escape{outer}")
    }
}

fn dirs() -> Dirs {
    let outer = tempfile::tempdir().expect("create a temporary directory");
    let target = outer.path().join(TARGET);
    fs::create_dir_all(&target).expect("create the target directory");
    Dirs { outer, target }
}

/// Fail (after removing it) if a file escaped to this host path.
fn assert_not_on_host(path: &Path) {
    if fs::symlink_metadata(path).is_ok() {
        let _ = fs::remove_dir_all(path).or_else(|_| fs::remove_file(path));
        panic!("{} was written on the host", path.display());
    }
}

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: applying layers needs root (chown, mknod, trusted xattrs)");
    false
}

/// Every path below `dir`, relative to it, sorted.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Apply and return the error's full text, asserting nothing left `target`.
fn refusal(dirs: &Dirs, layer: Vec<u8>, outside_before: &[&str]) -> String {
    let err = apply_layer(&layer[..], &dirs.target).unwrap_err();
    assert_outer_untouched(dirs, outside_before);
    chain(&err)
}

/// `outer` holds the target (and whatever the test put there itself) and nothing else.
fn assert_outer_untouched(dirs: &Dirs, outside_before: &[&str]) {
    let outside: Vec<String> = listing(dirs.outer.path())
        .into_iter()
        .filter(|p| !p.starts_with(TARGET))
        .collect();
    let mut want = vec!["l1".to_string(), "l1/l2".to_string()];
    want.extend(outside_before.iter().map(|p| p.to_string()));
    want.sort();
    assert_eq!(outside, want, "something was written outside the target");
}

#[test]
fn apply_refuses_dotdot_path() {
    if !is_root() {
        return;
    }
    let dirs = dirs();
    let layer = Layer::new().file("../escape", b"x").finish();
    assert_eq!(
        refusal(&dirs, layer, &[]),
        r#"layer entry "../escape": path climbs above the layer root"#
    );

    let layer = Layer::new().dir("a").file("a/../../escape", b"x").finish();
    assert_eq!(
        refusal(&dirs, layer, &[]),
        r#"layer entry "a/../../escape": path climbs above the layer root"#
    );
}

#[test]
fn apply_confines_absolute_symlink_parent_to_target() {
    if !is_root() {
        return;
    }
    let dirs = dirs();
    let outer = dirs.outer.path().display().to_string();
    let x = dirs.unique();
    let layer = Layer::new()
        .symlink("evil", "/")
        .file(&format!("evil/etc/{x}"), b"one")
        .symlink("evil2", &outer)
        .file("evil2/y", b"two")
        .finish();
    let result = apply_layer(&layer[..], &dirs.target);
    assert_not_on_host(&Path::new("/etc").join(&x));
    result.unwrap();

    assert_eq!(fs::read(dirs.target.join("etc").join(&x)).unwrap(), b"one");
    let inner = dirs.target.join(outer.trim_start_matches('/')).join("y");
    assert_eq!(fs::read(inner).unwrap(), b"two");
    assert_eq!(
        fs::read_link(dirs.target.join("evil")).unwrap(),
        Path::new("/")
    );
    assert_outer_untouched(&dirs, &[]);
}

#[test]
fn apply_confines_relative_symlink_parent_to_target() {
    if !is_root() {
        return;
    }
    let dirs = dirs();
    let layer = Layer::new()
        .symlink("up", "../../..")
        .file("up/x", b"one")
        .dir("a")
        .dir("a/b")
        .symlink("a/b/up", "../../..")
        .file("a/b/up/y", b"two")
        .finish();
    apply_layer(&layer[..], &dirs.target).unwrap();

    assert_eq!(fs::read(dirs.target.join("x")).unwrap(), b"one");
    assert_eq!(fs::read(dirs.target.join("y")).unwrap(), b"two");
    assert_outer_untouched(&dirs, &[]);
}

#[test]
fn apply_replaces_symlink_instead_of_writing_through_it() {
    if !is_root() {
        return;
    }
    let dirs = dirs();
    let victim = dirs.outer.path().join("victim");
    fs::write(&victim, b"original").unwrap();
    let layer = Layer::new()
        .symlink("f", &victim.display().to_string())
        .file("f", b"new")
        .symlink("d", &dirs.outer.path().display().to_string())
        .dir("d")
        .file("d/z", b"z")
        .finish();
    apply_layer(&layer[..], &dirs.target).unwrap();

    assert_eq!(fs::read(&victim).unwrap(), b"original");
    assert!(fs::symlink_metadata(dirs.target.join("f"))
        .unwrap()
        .is_file());
    assert_eq!(fs::read(dirs.target.join("f")).unwrap(), b"new");
    assert!(fs::symlink_metadata(dirs.target.join("d"))
        .unwrap()
        .is_dir());
    assert_eq!(fs::read(dirs.target.join("d/z")).unwrap(), b"z");
    assert_outer_untouched(&dirs, &["victim"]);
}

#[test]
fn apply_refuses_hardlink_outside_target() {
    if !is_root() {
        return;
    }
    let dirs = dirs();
    let layer = Layer::new().hardlink("h", "../../etc/passwd").finish();
    assert_eq!(
        refusal(&dirs, layer, &[]),
        r#"layer entry "h": hardlink target "../../etc/passwd" climbs above the layer root"#
    );
}

#[test]
fn apply_refuses_hardlink_through_symlinked_parent() {
    if !is_root() {
        return;
    }
    let dirs = dirs();
    let secret = dirs.outer.path().join("secret");
    fs::write(&secret, b"secret").unwrap();
    let outer = dirs.outer.path().display().to_string();

    let layer = Layer::new()
        .symlink("s", &outer)
        .hardlink("h", "s/secret")
        .finish();
    assert_eq!(
        refusal(&dirs, layer, &["secret"]),
        r#"layer entry "h": hardlink target "s/secret" does not exist inside the layer root"#
    );

    let layer = Layer::new()
        .symlink("r", "../../..")
        .hardlink("h2", "r/secret")
        .finish();
    assert_eq!(
        refusal(&dirs, layer, &["secret"]),
        r#"layer entry "h2": hardlink target "r/secret" does not exist inside the layer root"#
    );
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
}

#[test]
fn apply_refuses_symlink_loop_in_parent() {
    if !is_root() {
        return;
    }
    let dirs = dirs();
    let layer = Layer::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"")
        .finish();
    assert_eq!(
        refusal(&dirs, layer, &[]),
        r#"layer entry "a/x": more than 40 symlinks met while resolving "a""#
    );
}

#[test]
fn apply_keeps_pending_directory_times_inside_target() {
    if !is_root() {
        return;
    }
    let dirs = dirs();
    let outside_dir = dirs.outer.path().join("b");
    fs::create_dir(&outside_dir).unwrap();
    let times = nix::sys::time::TimeSpec::new(1000, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &outside_dir,
        &times,
        &times,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();

    // `a/b`'s time is due at the end; by then `a` points at `outer`, which has a `b`.
    let outer = dirs.outer.path().display().to_string();
    let layer = Layer::new()
        .dir("a")
        .dir("a/b")
        .symlink("a", &outer)
        .finish();
    apply_layer(&layer[..], &dirs.target).unwrap();

    assert_eq!(fs::metadata(&outside_dir).unwrap().mtime(), 1000);
    assert_outer_untouched(&dirs, &["b"]);
}

#[test]
fn apply_keeps_mode_owner_mtime_links_nodes_and_xattrs() {
    if !is_root() {
        return;
    }
    let dirs = dirs();
    let mut ping = raw_header("bin/ping", EntryType::Regular, 4, 0o4755);
    ping.set_uid(1000);
    ping.set_gid(1001);
    let mut tmp = raw_header("tmp", EntryType::Directory, 0, 0o1777);
    tmp.set_mtime(1_600_000_000);
    let mut null = raw_header("dev/null", EntryType::Char, 0, 0o666);
    null.set_device_major(1).unwrap();
    null.set_device_minor(3).unwrap();
    let layer = Layer::new()
        .dir("bin")
        .pax(&[
            ("SCHILY.xattr.user.note", b"hello"),
            ("SCHILY.xattr.trusted.t", b"1"),
        ])
        .entry(ping, b"ping")
        .hardlink("bin/ping6", "bin/ping")
        .pax(&[("SCHILY.xattr.user.on-symlink", b"refused by linux")])
        .symlink("bin/sh", "/bin/busybox")
        .entry(tmp, b"")
        .file("tmp/inside", b"")
        .entry(null, b"")
        .entry(raw_header("run/fifo", EntryType::Fifo, 0, 0o600), b"")
        .finish();
    let stats = apply_layer(&layer[..], &dirs.target).unwrap();
    assert_eq!((stats.entries, stats.diff_id), (8, digest(&layer)));

    let t = &dirs.target;
    let meta = fs::symlink_metadata(t.join("bin/ping")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o4755, 1000, 1001)
    );
    assert_eq!((meta.mtime(), meta.nlink()), (MTIME as i64, 2));
    assert_eq!(
        fs::symlink_metadata(t.join("bin/ping6")).unwrap().ino(),
        meta.ino()
    );
    assert_eq!(
        xattr::get(t.join("bin/ping"), "user.note").unwrap(),
        Some(b"hello".to_vec())
    );
    assert_eq!(
        xattr::get(t.join("bin/ping"), "trusted.t").unwrap(),
        Some(b"1".to_vec())
    );

    let sh = fs::symlink_metadata(t.join("bin/sh")).unwrap();
    assert!(sh.file_type().is_symlink());
    assert_eq!(
        fs::read_link(t.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(sh.mtime(), MTIME as i64);

    let tmp = fs::symlink_metadata(t.join("tmp")).unwrap();
    assert_eq!(
        (tmp.permissions().mode() & 0o7777, tmp.mtime()),
        (0o1777, 1_600_000_000)
    );

    let null = fs::symlink_metadata(t.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (null.rdev(), null.mode() & 0o7777),
        (libc::makedev(1, 3), 0o666)
    );
    assert!(fs::symlink_metadata(t.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn apply_sets_root_metadata_from_dot_entry() {
    if !is_root() {
        return;
    }
    let dirs = dirs();
    let layer = Layer::new()
        .entry(raw_header("./", EntryType::Directory, 0, 0o750), b"")
        .finish();
    apply_layer(&layer[..], &dirs.target).unwrap();
    let meta = fs::metadata(&dirs.target).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.mtime()), (0o750, MTIME as i64));
}
