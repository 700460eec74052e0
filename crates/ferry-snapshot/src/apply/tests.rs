//! Layer application over the in-memory filesystem, which follows no symlink: any call that
//! would pass through one fails, so these tests prove the path logic alone keeps entries inside.

use super::*;
use crate::fs::mem::{MemFs, MemKind};

#[path = "../../tests/common/mod.rs"]
mod common;
use common::{chain, digest, raw_header, Layer, MTIME};

const ROOT: &str = "/layer";

fn apply(layer: Vec<u8>) -> (MemFs, Result<ApplyStats, Error>) {
    let fs = MemFs::new(Path::new(ROOT));
    let result = apply_with(&fs, &layer[..], Path::new(ROOT));
    (fs, result)
}

fn kind(fs: &MemFs, path: &str) -> Option<MemKind> {
    fs.get(path).map(|n| n.kind)
}

#[test]
fn apply_hashes_the_whole_stream_and_counts_entries() {
    let layer = Layer::new().dir("a").file("a/f", b"hello").finish();
    let (_, result) = apply(layer.clone());
    let stats = result.unwrap();
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.bytes, layer.len() as u64);
    assert_eq!(stats.diff_id, digest(&layer));
}

#[test]
fn apply_turns_whiteouts_into_overlay_form() {
    let layer = Layer::new()
        .file("a/.wh.gone", b"")
        .file("d/.wh..wh..opq", b"")
        .finish();
    let (fs, result) = apply(layer);
    result.unwrap();

    assert_eq!(
        kind(&fs, "/layer/a/gone"),
        Some(MemKind::Node(Node::Char(0, 0)))
    );
    assert_eq!(fs.get("/layer/a/gone").unwrap().mode, 0);
    assert_eq!(kind(&fs, "/layer/a/.wh.gone"), None);

    let d = fs.get("/layer/d").unwrap();
    assert_eq!(
        d.xattrs.get(&b"trusted.overlay.opaque"[..]),
        Some(&b"y".to_vec())
    );
    assert_eq!(kind(&fs, "/layer/d/.wh..wh..opq"), None);
}

#[test]
fn apply_refuses_whiteout_of_dotdot() {
    let (_, result) = apply(Layer::new().file("a/.wh...", b"").finish());
    assert_eq!(
        chain(&result.unwrap_err()),
        r#"layer entry "a/.wh...": whiteout names no file"#
    );
}

#[test]
fn apply_writes_through_symlinked_parent_inside_the_root() {
    let layer = Layer::new()
        .symlink("evil", "/")
        .file("evil/etc/x", b"x")
        .finish();
    let (fs, result) = apply(layer);
    result.unwrap();
    assert_eq!(
        kind(&fs, "/layer/etc/x"),
        Some(MemKind::File(b"x".to_vec()))
    );
    assert_eq!(kind(&fs, "/layer/evil"), Some(MemKind::Symlink("/".into())));
}

#[test]
fn apply_sets_owner_before_mode_and_xattrs_and_directory_times_last() {
    let mut header = raw_header("bin/ping", tar::EntryType::Regular, 2, 0o4755);
    header.set_uid(1000);
    header.set_gid(1001);
    let layer = Layer::new()
        .dir("bin")
        .pax(&[
            ("SCHILY.xattr.security.capability", b"cap"),
            ("mtime", b"1234.5"),
        ])
        .entry(header, b"hi")
        .finish();
    let (fs, result) = apply(layer);
    result.unwrap();

    let log = fs.log.borrow().join("\n");
    let want = "mkdir /layer/bin\nchown /layer/bin\nchmod /layer/bin\n\
        write /layer/bin/ping\nchown /layer/bin/ping\nchmod /layer/bin/ping\n\
        xattr /layer/bin/ping\nmtime /layer/bin/ping\nmtime /layer/bin";
    assert_eq!(log, want);

    let ping = fs.get("/layer/bin/ping").unwrap();
    assert_eq!(
        (ping.mode, ping.owner, ping.mtime),
        (0o4755, (1000, 1001), Some((1234, 500_000_000)))
    );
    assert_eq!(fs.get("/layer/bin").unwrap().mtime, Some((MTIME as i64, 0)));
}

#[test]
fn apply_skips_overlay_xattrs_from_the_layer() {
    let layer = Layer::new()
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.user.a", b"1"),
        ])
        .dir("d")
        .finish();
    let (fs, result) = apply(layer);
    result.unwrap();
    let xattrs = fs.get("/layer/d").unwrap().xattrs;
    assert_eq!(
        xattrs.into_iter().collect::<Vec<_>>(),
        vec![(b"user.a".to_vec(), b"1".to_vec())]
    );
}

#[test]
fn apply_drops_directory_time_when_a_symlink_replaces_its_parent() {
    // Setting `a/b`'s time at the end would go through the symlink `a -> /` to the host.
    let layer = Layer::new().dir("a").dir("a/b").symlink("a", "/").finish();
    let (fs, result) = apply(layer);
    result.unwrap();
    let log = fs.log.borrow();
    assert!(
        !log.iter().any(|op| op == "mtime /layer/a/b"),
        "log: {log:?}"
    );
    assert_eq!(kind(&fs, "/layer/a"), Some(MemKind::Symlink("/".into())));
}

#[test]
fn apply_merges_directory_over_directory() {
    let mut again = raw_header("d", tar::EntryType::Directory, 0, 0o700);
    again.set_uid(5);
    let layer = Layer::new()
        .dir("d")
        .file("d/f", b"1")
        .entry(again, b"")
        .finish();
    let (fs, result) = apply(layer);
    result.unwrap();
    assert_eq!(kind(&fs, "/layer/d/f"), Some(MemKind::File(b"1".to_vec())));
    let d = fs.get("/layer/d").unwrap();
    assert_eq!((d.mode, d.owner), (0o700, (5, 0)));
}

#[test]
fn apply_replaces_a_file_with_a_directory_and_back() {
    let layer = Layer::new()
        .file("x", b"1")
        .dir("x")
        .file("x/y", b"2")
        .file("x", b"3")
        .finish();
    let (fs, result) = apply(layer);
    result.unwrap();
    assert_eq!(kind(&fs, "/layer/x"), Some(MemKind::File(b"3".to_vec())));
    assert_eq!(kind(&fs, "/layer/x/y"), None);
}

#[test]
fn apply_refuses_a_root_entry_that_is_not_a_directory() {
    let (_, result) = apply(Layer::new().file("./", b"").finish());
    assert_eq!(
        chain(&result.unwrap_err()),
        r#"layer entry "./": the layer root can only be a directory"#
    );
}

#[test]
fn apply_reports_a_truncated_stream() {
    let mut layer = Layer::new().file("big", &[7u8; 2000]).finish();
    layer.truncate(512 + 1000);
    let (_, result) = apply(layer);
    assert_eq!(
        chain(&result.unwrap_err()),
        r#"layer entry "big": tar stream ends after 1000 of 2000 bytes of the entry"#
    );
}

#[test]
fn parse_time_reads_pax_fractions() {
    assert_eq!(parse_time(b"12").unwrap(), (12, 0));
    assert_eq!(parse_time(b"12.25").unwrap(), (12, 250_000_000));
    assert_eq!(parse_time(b"1.1234567891").unwrap(), (1, 123_456_789));
    assert_eq!(parse_time(b"-0.5").unwrap(), (-1, 500_000_000));
    assert_eq!(parse_time(b"-2").unwrap(), (-2, 0));
    assert_eq!(
        chain(&parse_time(b"1.x").unwrap_err()),
        r#"bad tar header: bad time "1.x""#
    );
}
