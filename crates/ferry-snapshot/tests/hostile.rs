//! A corpus of hostile layers, one table: each is applied (through `decompress` and a 16 MiB
//! `limit`, as a caller guarding against bombs does) into `outer/l1/l2/target`, next to a
//! sentinel directory `outer/sentinel` holding one file. Each case says whether the layer is
//! refused (with the exact error) or applied confined to the target (with a check of what it
//! made there); in every case the sentinel and the rest of `outer` must be unchanged.

mod common;

use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{chain, raw_header, Layer};
use ferry_snapshot::{apply_layer, decompress, limit};
use tar::EntryType;

/// Where the target sits below `outer`.
const TARGET: &str = "l1/l2/target";
/// The most bytes a layer may expand to in this corpus.
const LIMIT: u64 = 16 << 20;
/// What the sentinel file holds.
const PRECIOUS: &[u8] = b"precious\n";

/// What applying a case must give.
enum Expect {
    /// Refused with exactly this error chain.
    Refused(&'static str),
    /// Applied; the check looks at the target.
    Applied(fn(&Path)),
}

/// One hostile layer: a name, the layer built from the sentinel's absolute path, the outcome.
struct Case {
    name: &'static str,
    layer: fn(&str) -> Vec<u8>,
    expect: Expect,
}

fn header(name: &str, kind: EntryType, size: u64, mode: u32) -> tar::Header {
    raw_header(name, kind, size, mode)
}

fn device(name: &str, kind: EntryType, major: u32, minor: u32) -> tar::Header {
    let mut h = header(name, kind, 0, 0o666);
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    h
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn kind_of(path: &Path) -> String {
    match fs::symlink_metadata(path) {
        Err(_) => "missing".into(),
        Ok(m) if m.file_type().is_symlink() => {
            format!("symlink {}", fs::read_link(path).unwrap().display())
        }
        Ok(m) if m.is_dir() => "dir".into(),
        Ok(m) if m.file_type().is_char_device() => format!("char {:#x}", m.rdev()),
        Ok(m) if m.file_type().is_block_device() => format!("block {:#x}", m.rdev()),
        Ok(m) => format!("file {:o} {}", m.mode() & 0o7777, m.len()),
    }
}

/// The sentinel directory beside the target `t`.
fn sentinel_of(t: &Path) -> std::path::PathBuf {
    t.ancestors().nth(3).unwrap().join("sentinel")
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "dotdot name",
            layer: |_| Layer::new().file("../../../sentinel/owned", b"x").finish(),
            expect: Expect::Refused(
                "layer entry \"../../../sentinel/owned\": path climbs above the layer root",
            ),
        },
        Case {
            name: "dotdot after a directory",
            layer: |_| Layer::new().dir("a").file("a/../../x", b"x").finish(),
            expect: Expect::Refused("layer entry \"a/../../x\": path climbs above the layer root"),
        },
        Case {
            name: "absolute name",
            layer: |sentinel| {
                let name = format!("{sentinel}/owned");
                Layer::new().file(&name, b"x").finish()
            },
            // an absolute name is read inside the layer root, as every runtime does
            expect: Expect::Applied(|t| {
                let abs = t.parent().unwrap().parent().unwrap().parent().unwrap();
                let inside = t.join(abs.join("sentinel/owned").strip_prefix("/").unwrap());
                assert_eq!(kind_of(&inside), "file 644 1");
            }),
        },
        Case {
            name: "absolute symlink parent",
            layer: |sentinel| {
                Layer::new()
                    .symlink("s", sentinel)
                    .file("s/owned", b"x")
                    .finish()
            },
            // the link is followed inside the layer root
            expect: Expect::Applied(|t| {
                let inside = t.join(sentinel_of(t).strip_prefix("/").unwrap());
                assert_eq!(kind_of(&inside.join("owned")), "file 644 1");
            }),
        },
        Case {
            name: "relative symlink parent",
            layer: |_| {
                Layer::new()
                    .symlink("s", "../../../sentinel")
                    .file("s/owned", b"x")
                    .finish()
            },
            // `..` stops at the layer root, as at `/`
            expect: Expect::Applied(|t| {
                assert_eq!(kind_of(&t.join("s")), "symlink ../../../sentinel");
                assert_eq!(kind_of(&t.join("sentinel/owned")), "file 644 1");
            }),
        },
        Case {
            name: "symlink replaced by a file",
            layer: |sentinel| {
                let target = format!("{sentinel}/file");
                Layer::new()
                    .symlink("f", &target)
                    .file("f", b"new")
                    .finish()
            },
            expect: Expect::Applied(|t| assert_eq!(kind_of(&t.join("f")), "file 644 3")),
        },
        Case {
            name: "hardlink to a relative outside path",
            layer: |_| {
                Layer::new()
                    .hardlink("h", "../../../sentinel/file")
                    .finish()
            },
            expect: Expect::Refused(
                "layer entry \"h\": hardlink target \"../../../sentinel/file\" climbs above the \
                 layer root",
            ),
        },
        Case {
            name: "hardlink to an absolute outside path",
            layer: |sentinel| {
                let target = format!("{sentinel}/file");
                Layer::new().hardlink("h", &target).finish()
            },
            expect: Expect::Refused(
                "layer entry \"h\": hardlink target \"SENTINEL/file\" does not exist inside the \
                 layer root",
            ),
        },
        Case {
            name: "hardlink through a symlinked parent",
            layer: |_| {
                Layer::new()
                    .symlink("s", "../../../sentinel")
                    .hardlink("h", "s/file")
                    .finish()
            },
            expect: Expect::Refused(
                "layer entry \"h\": hardlink target \"s/file\" does not exist inside the layer root",
            ),
        },
        Case {
            name: "character and block devices",
            layer: |_| {
                Layer::new()
                    .dir("dev")
                    .entry(device("dev/mem", EntryType::Char, 1, 1), b"")
                    .entry(device("dev/sda", EntryType::Block, 8, 0), b"")
                    .finish()
            },
            // nodes are kept, as docker keeps them: inside the rootfs they grant nothing the
            // container's device cgroup does not allow
            expect: Expect::Applied(|t| {
                assert_eq!(kind_of(&t.join("dev/mem")), "char 0x101");
                assert_eq!(kind_of(&t.join("dev/sda")), "block 0x800");
            }),
        },
        Case {
            name: "setuid and setgid bits",
            layer: |_| {
                Layer::new()
                    .entry(header("su", EntryType::Regular, 2, 0o6755), b"#!")
                    .finish()
            },
            // kept, as in the image (docker keeps them; the container runs without new privs)
            expect: Expect::Applied(|t| assert_eq!(kind_of(&t.join("su")), "file 6755 2")),
        },
        Case {
            name: "declared size larger than the data",
            layer: |_| {
                let mut tar = Layer::new()
                    .entry(header("big", EntryType::Regular, 1 << 40, 0o644), b"")
                    .finish();
                tar.truncate(512);
                tar.extend_from_slice(&[b'x'; 10]);
                tar
            },
            expect: Expect::Refused(
                "layer entry \"big\": tar stream ends after 10 of 1099511627776 bytes of the entry",
            ),
        },
        Case {
            name: "whiteout of dotdot",
            layer: |_| Layer::new().file(".wh..", b"").finish(),
            expect: Expect::Refused("layer entry \".wh..\": whiteout names no file"),
        },
        Case {
            name: "whiteout escaping the root",
            layer: |_| {
                Layer::new()
                    .file("../../../sentinel/.wh.file", b"")
                    .finish()
            },
            expect: Expect::Refused(
                "layer entry \"../../../sentinel/.wh.file\": path climbs above the layer root",
            ),
        },
        Case {
            name: "whiteout through a symlinked parent",
            layer: |_| {
                Layer::new()
                    .symlink("s", "../../../sentinel")
                    .file("s/.wh.file", b"")
                    .finish()
            },
            // the whiteout lands inside the root, where the link leads there
            expect: Expect::Applied(|t| {
                assert_eq!(kind_of(&t.join("sentinel/file")), "char 0x0");
            }),
        },
        Case {
            name: "gzip bomb",
            layer: |_| {
                let zeros = vec![0u8; 64 << 20];
                gzip(&Layer::new().file("zeros", &zeros).finish())
            },
            expect: Expect::Refused(
                "layer entry \"zeros\": write \"TARGET/zeros\": layer expands past 16777216 bytes",
            ),
        },
    ]
}

#[test]
fn hostile_layers_are_refused_or_stay_inside_the_target() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: applying layers needs root (chown, mknod)");
        return;
    }
    let mut failures = Vec::new();
    for case in cases() {
        let outer = tempfile::tempdir().unwrap();
        let target = outer.path().join(TARGET);
        fs::create_dir_all(&target).unwrap();
        let sentinel = outer.path().join("sentinel");
        fs::create_dir(&sentinel).unwrap();
        fs::write(sentinel.join("file"), PRECIOUS).unwrap();
        let before = listing(outer.path());

        let layer = (case.layer)(&sentinel.display().to_string());
        let stream = decompress(Box::new(Cursor::new(layer))).unwrap();
        let result = apply_layer(limit(stream, LIMIT), &target);

        let after = listing(outer.path());
        assert_eq!(
            after, before,
            "{}: something was written outside the target",
            case.name
        );
        assert_eq!(
            fs::read(sentinel.join("file")).unwrap(),
            PRECIOUS,
            "{}",
            case.name
        );
        match (&case.expect, result) {
            (Expect::Refused(want), Err(e)) => {
                let got = chain(&e)
                    .replace(&target.display().to_string(), "TARGET")
                    .replace(&sentinel.display().to_string(), "SENTINEL");
                if got != *want {
                    failures.push(format!("{}: refused with {got:?}", case.name));
                }
            }
            (Expect::Refused(want), Ok(_)) => {
                failures.push(format!(
                    "{}: applied, want refused with {want:?}",
                    case.name
                ));
            }
            (Expect::Applied(check), Ok(_)) => check(&target),
            (Expect::Applied(_), Err(e)) => {
                failures.push(format!("{}: refused with {:?}", case.name, chain(&e)));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Every path below `dir` outside the target, with what it is, sorted.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            if rel == TARGET {
                continue;
            }
            out.push(format!("{rel} {}", kind_of(&path)));
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
