//! The overlay snapshotter as root: committing layers, whiteouts through a real overlay mount,
//! and cleanup.

mod common;

use std::cell::Cell;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use common::{chain, digest, Layer};
use ferry_snapshot::{Error, Snapshot, Snapshotter};

fn can_mount() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: mounting overlayfs needs root");
        return false;
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.lines().any(|l| l.ends_with("\toverlay")) {
        eprintln!("skipping: the kernel has no overlay filesystem");
        return false;
    }
    true
}

/// Unmounts on drop, so a failing test leaves nothing mounted.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// An `open_tar` that serves `layer` and counts its calls.
fn opener<'a>(
    layer: &'a [u8],
    calls: &'a Cell<u32>,
) -> impl FnMut() -> Result<Box<dyn Read + Send>, Error> + 'a {
    move || {
        calls.set(calls.get() + 1);
        Ok(Box::new(std::io::Cursor::new(layer.to_vec())))
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn is_mounted(target: &Path) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = target.to_str().unwrap();
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target))
}

#[test]
fn overlay_shows_layers_through_whiteouts_and_opaque_dirs() {
    if !can_mount() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(root.path().join("snapshots")).unwrap();
    let layer1 = Layer::new()
        .file("a/keep", b"k")
        .file("a/gone", b"g")
        .file("d/old", b"o")
        .finish();
    let layer2 = Layer::new()
        .file("a/.wh.gone", b"")
        .file("d/.wh..wh..opq", b"")
        .file("d/new", b"n")
        .finish();
    let (diff1, diff2) = (digest(&layer1), digest(&layer2));

    let calls = Cell::new(0);
    let s1 = snapshotter
        .ensure(None, &diff1, &mut opener(&layer1, &calls))
        .unwrap();
    let s2 = snapshotter
        .ensure(Some(&s1), &diff2, &mut opener(&layer2, &calls))
        .unwrap();
    assert_eq!(s1.chain_id, diff1);
    assert_eq!(s2.chain_id, Snapshotter::chain_id(Some(&diff1), &diff2));

    let merged = root.path().join("merged");
    fs::create_dir(&merged).unwrap();
    snapshotter.mount_active("c1", &[s1, s2], &merged).unwrap();
    let guard = MountGuard(merged.clone());

    assert_eq!(names(&merged.join("a")), ["keep"]);
    assert_eq!(fs::read(merged.join("a/keep")).unwrap(), b"k");
    assert_eq!(names(&merged.join("d")), ["new"]);
    assert_eq!(fs::read(merged.join("d/new")).unwrap(), b"n");

    // Writes land in the upper directory, never in a committed snapshot.
    fs::write(merged.join("a/written"), b"w").unwrap();
    let upper = root.path().join("snapshots/active/c1/upper");
    assert_eq!(fs::read(upper.join("a/written")).unwrap(), b"w");

    snapshotter.remove_active("c1", &merged).unwrap();
    drop(guard);
    assert!(!is_mounted(&merged), "{} still mounted", merged.display());
    assert!(!root.path().join("snapshots/active/c1").exists());
    assert_eq!(
        names(&root.path().join("snapshots/active")),
        Vec::<String>::new()
    );
    assert_eq!(names(&merged), Vec::<String>::new());
}

#[test]
fn mount_active_handles_one_layer_and_no_layers() {
    if !can_mount() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(root.path().join("snapshots")).unwrap();
    let layer = Layer::new().file("etc/hostname", b"h").finish();
    let calls = Cell::new(0);
    let only = snapshotter
        .ensure(None, &digest(&layer), &mut opener(&layer, &calls))
        .unwrap();

    let one = root.path().join("one");
    let none = root.path().join("none");
    fs::create_dir(&one).unwrap();
    fs::create_dir(&none).unwrap();
    snapshotter.mount_active("one", &[only], &one).unwrap();
    let _g1 = MountGuard(one.clone());
    snapshotter.mount_active("none", &[], &none).unwrap();
    let _g2 = MountGuard(none.clone());

    assert_eq!(fs::read(one.join("etc/hostname")).unwrap(), b"h");
    assert_eq!(names(&none), Vec::<String>::new());
    fs::write(none.join("f"), b"f").unwrap();
    assert_eq!(
        names(&root.path().join("snapshots/active/none/upper")),
        ["f"]
    );

    let err = snapshotter.mount_active("one", &[], &none).unwrap_err();
    assert_eq!(chain(&err), r#"active snapshot "one" already exists"#);
    let err = snapshotter.mount_active("../x", &[], &none).unwrap_err();
    assert_eq!(chain(&err), r#"invalid active snapshot key "../x""#);

    snapshotter.remove_active("one", &one).unwrap();
    snapshotter.remove_active("none", &none).unwrap();
    assert!(!is_mounted(&one) && !is_mounted(&none));
    assert_eq!(
        names(&root.path().join("snapshots/active")),
        Vec::<String>::new()
    );

    // Removing again finds nothing to do.
    snapshotter.remove_active("none", &none).unwrap();
}

#[test]
fn remove_active_detaches_a_busy_mount() {
    if !can_mount() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(root.path().join("snapshots")).unwrap();
    let merged = root.path().join("merged");
    fs::create_dir(&merged).unwrap();
    snapshotter.mount_active("busy", &[], &merged).unwrap();
    let _guard = MountGuard(merged.clone());

    // An open file keeps the mount busy, so a plain unmount fails with EBUSY.
    let open = fs::File::create(merged.join("held")).unwrap();
    snapshotter.remove_active("busy", &merged).unwrap();
    assert!(!is_mounted(&merged));
    assert!(!root.path().join("snapshots/active/busy").exists());
    drop(open);
}

#[test]
fn ensure_refuses_wrong_diff_id_and_keeps_nothing() {
    if !can_mount() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("snapshots");
    let snapshotter = Snapshotter::new(&dir).unwrap();
    let layer = Layer::new().file("f", b"data").finish();
    let claimed = digest(b"some other layer");
    let calls = Cell::new(0);

    let err = snapshotter
        .ensure(None, &claimed, &mut opener(&layer, &calls))
        .unwrap_err();
    let want = format!(
        "layer tar stream has digest {}, the image expects {claimed}",
        digest(&layer)
    );
    assert_eq!(chain(&err), want);
    assert_eq!(names(&dir.join("committed")), Vec::<String>::new());
    assert_eq!(names(&dir.join("tmp")), Vec::<String>::new());
}

#[test]
fn ensure_removes_temp_dir_when_a_layer_is_refused() {
    if !can_mount() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("snapshots");
    let snapshotter = Snapshotter::new(&dir).unwrap();
    let layer = Layer::new()
        .file("ok", b"")
        .file("../escape", b"x")
        .finish();
    let calls = Cell::new(0);

    let err = snapshotter
        .ensure(None, &digest(&layer), &mut opener(&layer, &calls))
        .unwrap_err();
    assert_eq!(
        chain(&err),
        r#"layer entry "../escape": path climbs above the layer root"#
    );
    assert_eq!(names(&dir.join("committed")), Vec::<String>::new());
    assert_eq!(names(&dir.join("tmp")), Vec::<String>::new());
    assert_eq!(names(root.path()), ["snapshots"]);
}

#[test]
fn ensure_applies_each_chain_once() {
    if !can_mount() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(root.path().join("snapshots")).unwrap();
    let layer = Layer::new().file("f", b"data").finish();
    let diff_id = digest(&layer);
    let calls = Cell::new(0);

    let first = snapshotter
        .ensure(None, &diff_id, &mut opener(&layer, &calls))
        .unwrap();
    let again = snapshotter
        .ensure(None, &diff_id, &mut opener(&layer, &calls))
        .unwrap();
    assert_eq!(calls.get(), 1);
    assert_eq!(first, again);
    assert_eq!(
        first.dir,
        root.path().join("snapshots/committed").join(&diff_id[7..])
    );
    assert_eq!(fs::read(first.dir.join("f")).unwrap(), b"data");

    // Another snapshotter over the same directory (another process) finds it too.
    let other = Snapshotter::new(root.path().join("snapshots")).unwrap();
    other
        .ensure(None, &diff_id, &mut opener(&layer, &calls))
        .unwrap();
    assert_eq!(calls.get(), 1);
}

#[test]
fn ensure_racing_on_one_chain_both_succeed() {
    if !can_mount() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("snapshots");
    let layer: Arc<Vec<u8>> = Arc::new(Layer::new().file("f", &[1u8; 100_000]).finish());
    let diff_id = digest(&layer);
    let barrier = Arc::new(Barrier::new(2));

    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (dir, layer, diff_id, barrier) =
                (dir.clone(), layer.clone(), diff_id.clone(), barrier.clone());
            std::thread::spawn(move || -> Result<Snapshot, Error> {
                let snapshotter = Snapshotter::new(dir)?;
                let mut open = || -> Result<Box<dyn Read + Send>, Error> {
                    barrier.wait();
                    Ok(Box::new(std::io::Cursor::new(layer.to_vec())))
                };
                snapshotter.ensure(None, &diff_id, &mut open)
            })
        })
        .collect();

    let results: Vec<Snapshot> = racers
        .into_iter()
        .map(|r| r.join().unwrap().unwrap())
        .collect();
    assert_eq!(results[0], results[1]);
    assert_eq!(
        fs::read(results[0].dir.join("f")).unwrap(),
        vec![1u8; 100_000]
    );
    assert_eq!(names(&dir.join("committed")), [diff_id[7..].to_string()]);
    assert_eq!(names(&dir.join("tmp")), Vec::<String>::new());
}

#[test]
fn ensure_refuses_a_diff_id_that_is_not_a_digest() {
    let root = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(root.path().join("snapshots")).unwrap();
    let calls = Cell::new(0);
    let err = snapshotter
        .ensure(None, "sha256:../../x", &mut opener(b"", &calls))
        .unwrap_err();
    assert_eq!(chain(&err), r#"invalid layer digest "sha256:../../x""#);
    assert_eq!(calls.get(), 0);
}
