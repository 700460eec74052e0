//! The builder's contract, checked with independent readers (the `tar` crate, flate2's
//! multi-member and single-member gzip decoders, sha256 of the bytes).

use std::io::{Cursor, Read};

use ferry_oci::Digest;
use flate2::read::{GzDecoder, MultiGzDecoder};

use crate::{build, parse_footer, read_toc, verify_layer, BuildOptions, Built, FOOTER_SIZE};

const BIG: usize = 10_000;
const CHUNK: u64 = 4096;

fn big_payload() -> Vec<u8> {
    (0..BIG).map(|i| (i * 7 % 251) as u8).collect()
}

/// A layer with every kind of entry a layer carries, GNU long names and PAX xattrs.
fn input_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_username("alice").unwrap();
        if let Some(link) = link {
            b.append_link(&mut h, name, link).unwrap();
        } else {
            b.append_data(&mut h, name, data).unwrap();
        }
    };
    add("etc/", tar::EntryType::Directory, b"", None);
    add("etc/hello", tar::EntryType::Regular, b"hello world\n", None);
    add("etc/empty", tar::EntryType::Regular, b"", None);
    add("etc/.wh.gone", tar::EntryType::Regular, b"", None);
    add("etc/link", tar::EntryType::Symlink, b"", Some("hello"));
    add("etc/hard", tar::EntryType::Link, b"", Some("etc/hello"));
    add("bin/", tar::EntryType::Directory, b"", None);
    add("bin/big", tar::EntryType::Regular, &big_payload(), None);
    let long = format!("usr/{}/file", "d".repeat(120));
    add(&long, tar::EntryType::Regular, b"deep\n", None);
    add("dev/", tar::EntryType::Directory, b"", None);
    add("dev/fifo", tar::EntryType::Fifo, b"", None);
    let mut dev = tar::Header::new_gnu();
    dev.set_entry_type(tar::EntryType::Char);
    dev.set_size(0);
    dev.set_mode(0o666);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    b.append_data(&mut dev, "dev/null", &b""[..]).unwrap();
    b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v\x00w"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(3);
    h.set_mode(0o600);
    b.append_data(&mut h, "etc/attr", &b"xa\n"[..]).unwrap();
    b.into_inner().unwrap()
}

fn built(opts: &BuildOptions) -> (Built, Vec<u8>) {
    let mut blob = Vec::new();
    let built = build(&input_tar()[..], &mut blob, opts).unwrap();
    (built, blob)
}

fn small_chunks() -> BuildOptions {
    BuildOptions {
        chunk_size: CHUNK,
        ..BuildOptions::default()
    }
}

/// The input's bytes before its end-of-archive blocks.
fn without_end(tar: &[u8]) -> &[u8] {
    let mut end = tar.len();
    while end >= 512 && tar[end - 512..end].iter().all(|b| *b == 0) {
        end -= 512;
    }
    &tar[..end]
}

#[test]
fn blob_gunzips_to_the_input_entries_byte_for_byte() {
    let (built, blob) = built(&small_chunks());
    let mut plain = Vec::new();
    MultiGzDecoder::new(&blob[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(built.diff_id, Digest::of(&plain));
    assert_eq!(built.uncompressed_size, plain.len() as u64);
    assert_eq!(built.digest, Digest::of(&blob));
    assert_eq!(built.size, blob.len() as u64);

    // landmark entry (header + 1 padded block), the input as it was, the TOC entry, 2 end blocks
    let input = input_tar();
    let body = without_end(&input);
    assert_eq!(&plain[512..513], &[0x0f]);
    assert_eq!(&plain[1024..1024 + body.len()], body);
    let mut archive = tar::Archive::new(&plain[..]);
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if name == "bin/big" {
            assert_eq!(data, big_payload());
        }
        if name == "etc/attr" {
            let pax: Vec<_> = entry.pax_extensions().unwrap().unwrap().collect();
            assert_eq!(pax[0].as_ref().unwrap().value_bytes(), b"v\x00w");
        }
        names.push(name);
    }
    let long = format!("usr/{}/file", "d".repeat(120));
    let want = [
        ".no.prefetch.landmark",
        "etc/",
        "etc/hello",
        "etc/empty",
        "etc/.wh.gone",
        "etc/link",
        "etc/hard",
        "bin/",
        "bin/big",
        &long,
        "dev/",
        "dev/fifo",
        "dev/null",
        "etc/attr",
        "stargz.index.json",
    ];
    assert_eq!(names, want);
}

#[test]
fn footer_points_at_the_toc_and_the_toc_at_every_chunk() {
    let (built, blob) = built(&small_chunks());
    let toc_offset = parse_footer(&blob[blob.len() - FOOTER_SIZE..]).unwrap();
    let read = read_toc(
        &mut Cursor::new(&blob),
        blob.len() as u64,
        Some(&built.toc_digest),
    )
    .unwrap();
    assert_eq!(read.offset, toc_offset);
    assert_eq!(read.toc, built.toc);

    let big: Vec<_> = read
        .toc
        .entries
        .iter()
        .filter(|e| e.name == "bin/big")
        .collect();
    let shape: Vec<_> = big
        .iter()
        .map(|e| (e.kind.as_str(), e.chunk_offset, e.chunk_size))
        .collect();
    assert_eq!(
        shape,
        [("reg", 0, 4096), ("chunk", 4096, 4096), ("chunk", 8192, 0)]
    );
    assert_eq!(big[0].size, BIG as i64);
    assert_eq!(big[0].digest, Digest::of(&big_payload()).to_string());

    // Each payload is the start of its own gzip member: a single-member decoder at its offset
    // yields exactly the chunk's bytes first.
    let payload = big_payload();
    for e in &big {
        let start = e.chunk_offset as usize;
        let end = if e.chunk_size == 0 {
            BIG
        } else {
            start + e.chunk_size as usize
        };
        let mut got = vec![0u8; end - start];
        GzDecoder::new(&blob[e.offset as usize..])
            .read_exact(&mut got)
            .unwrap();
        assert_eq!(got, payload[start..end]);
        assert_eq!(e.chunk_digest, Digest::of(&got).to_string());
    }
    let hello = read
        .toc
        .entries
        .iter()
        .find(|e| e.name == "etc/hello")
        .unwrap();
    let mut got = vec![0u8; 12];
    GzDecoder::new(&blob[hello.offset as usize..])
        .read_exact(&mut got)
        .unwrap();
    assert_eq!(got, b"hello world\n");
}

#[test]
fn toc_entries_carry_the_tar_metadata() {
    let (built, _) = built(&small_chunks());
    let by_name = |n: &str| built.toc.entries.iter().find(|e| e.name == n).unwrap();
    let hard = by_name("etc/hard");
    assert_eq!(
        (hard.kind.as_str(), hard.link_name.as_str()),
        ("hardlink", "etc/hello")
    );
    assert_eq!(by_name("etc/link").link_name, "hello");
    assert_eq!(by_name("dev/fifo").kind, "fifo");
    let null = by_name("dev/null");
    assert_eq!(
        (null.kind.as_str(), null.dev_major, null.dev_minor),
        ("char", 1, 3)
    );
    let hello = by_name("etc/hello");
    assert_eq!(hello.mod_time, "2023-11-14T22:13:20Z");
    assert_eq!((hello.uid, hello.gid, hello.mode), (1000, 1000, 0o644));
    // the user name is written once per uid
    assert_eq!(by_name("etc/").user_name, "alice");
    assert_eq!(hello.user_name, "");
    assert_eq!(by_name("etc/attr").xattrs["user.k"], b"v\x00w");
    let empty = by_name("etc/empty");
    assert_eq!((empty.size, empty.offset), (0, 0));
    assert_eq!(empty.digest, Digest::of(b"").to_string());
    let landmark = by_name(".no.prefetch.landmark");
    assert_eq!(
        (landmark.size, landmark.chunk_digest.clone()),
        (1, Digest::of(&[0x0f]).to_string())
    );
}

#[test]
fn prioritized_files_come_first_then_the_landmark() {
    let opts = BuildOptions {
        prioritized: vec!["/bin/big".into(), "/etc/hard".into(), "/nope".into()],
        ..small_chunks()
    };
    let (built, _) = built(&opts);
    let order: Vec<_> = built
        .toc
        .entries
        .iter()
        .filter(|e| e.kind != "chunk")
        .map(|e| e.name.as_str())
        .take(7)
        .collect();
    // a hardlink brings its target (and the target's directory) along
    let want = [
        "bin/",
        "bin/big",
        "etc/",
        "etc/hello",
        "etc/hard",
        ".prefetch.landmark",
        "etc/empty",
    ];
    assert_eq!(order, want);
    assert_eq!(built.missing_prioritized, ["/nope"]);
    assert!(!built
        .toc
        .entries
        .iter()
        .any(|e| e.name == ".no.prefetch.landmark"));
}

#[test]
fn the_same_input_builds_the_same_blob() {
    let (a, blob_a) = built(&small_chunks());
    let (b, blob_b) = built(&small_chunks());
    assert_eq!(blob_a, blob_b);
    assert_eq!((&a.digest, &a.toc_digest), (&b.digest, &b.toc_digest));
    let (fast, _) = built(&BuildOptions {
        compression_level: 1,
        ..small_chunks()
    });
    // Another level changes the compressed bytes and so the TOC's offsets, nothing else.
    assert_ne!(fast.digest, a.digest);
    let no_offsets = |b: &Built| {
        let mut toc = b.toc.clone();
        toc.entries.iter_mut().for_each(|e| e.offset = 0);
        toc
    };
    assert_eq!(no_offsets(&fast), no_offsets(&a));
}

#[test]
fn rebuilding_an_estargz_drops_its_toc_and_landmark() {
    let (first, blob) = built(&small_chunks());
    let mut again = Vec::new();
    let second = build(MultiGzDecoder::new(&blob[..]), &mut again, &small_chunks()).unwrap();
    assert_eq!(second.diff_id, first.diff_id);
    assert_eq!(second.toc, first.toc);
}

#[test]
fn verifier_accepts_the_blob_and_names_a_corrupt_chunk() {
    let (built, mut blob) = built(&small_chunks());
    let size = blob.len() as u64;
    verify_layer(&mut Cursor::new(&blob), size, &built.toc_digest).unwrap();

    let other = Digest::of(b"other");
    let err = verify_layer(&mut Cursor::new(&blob), size, &other).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "eStargz TOC: digest {}, the layer announces {other}",
            built.toc_digest
        )
    );

    // Damage the deflate data of the second chunk of bin/big (past its 10-byte gzip header).
    let chunk = built
        .toc
        .entries
        .iter()
        .find(|e| e.kind == "chunk")
        .unwrap();
    blob[chunk.offset as usize + 20] ^= 0xff;
    let err = verify_layer(&mut Cursor::new(&blob), size, &built.toc_digest).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("eStargz chunk: bin/big at offset 4096: "),
        "{err}"
    );
}

#[test]
fn bad_options_and_non_tar_input_are_refused() {
    let opts = BuildOptions {
        chunk_size: 0,
        ..BuildOptions::default()
    };
    let err = build(&input_tar()[..], Vec::new(), &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid eStargz option: chunk size must be more than 0"
    );
    let err = build(&[7u8; 1024][..], Vec::new(), &BuildOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer tar: at byte 0: the header's checksum is not octal (not a tar stream?)"
    );
}

#[test]
fn a_toc_too_large_to_be_read_is_refused() {
    // one-byte chunks: a TOC entry of ~200 bytes per byte of the file, more than readers take
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(300_000);
    h.set_mode(0o644);
    b.append_data(&mut h, "big", &vec![1u8; 300_000][..])
        .unwrap();
    let opts = BuildOptions {
        chunk_size: 1,
        compression_level: 1,
        ..BuildOptions::default()
    };
    let Err(err) = build(&b.into_inner().unwrap()[..], std::io::sink(), &opts) else {
        panic!("a TOC over the readers' limit was built");
    };
    let text = err.to_string();
    assert!(
        text.starts_with("invalid eStargz option: the TOC would be ")
            && text.ends_with(
                " bytes, more than the 52428800 a reader accepts: use a larger chunk size"
            ),
        "{text}"
    );
}

#[test]
fn a_hardlink_cycle_among_prioritized_files_ends() {
    let mut b = tar::Builder::new(Vec::new());
    for (name, target) in [("a", "b"), ("b", "a")] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, name, target).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let opts = BuildOptions {
        prioritized: vec!["a".into()],
        ..BuildOptions::default()
    };
    let built = build(&tar[..], Vec::new(), &opts).unwrap();
    let names: Vec<_> = built.toc.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["b", "a", ".prefetch.landmark"]);
}

#[test]
fn endless_extension_records_are_refused() {
    let mut b = tar::Builder::new(Vec::new());
    let value = vec![b'x'; 100_000];
    for _ in 0..11 {
        b.append_pax_extensions([("SCHILY.xattr.user.big", &value[..])])
            .unwrap();
    }
    let tar = b.into_inner().unwrap();
    let err = build(&tar[..], Vec::new(), &BuildOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with(": more than 1048576 bytes of extension records"),
        "{err}"
    );
}
