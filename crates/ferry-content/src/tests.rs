use std::io::Write;

use ferry_oci::{Descriptor, Digest};

use crate::{BlockEntry, BlockLocation, Error, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn blob_written_in_order_is_stored_under_its_digest() {
    let (_d, s) = store();
    let mut ingest = s.ingest().unwrap();
    ingest.write_all(b"hello ").unwrap();
    ingest.write_all(b"world").unwrap();
    let (digest, size) = ingest.commit(None).unwrap();
    assert_eq!(digest, Digest::of(b"hello world"));
    assert_eq!(size, 11);
    assert_eq!(s.read_blob(&digest).unwrap(), b"hello world");
}

#[test]
fn blob_written_at_offsets_out_of_order_verifies_at_commit() {
    let (_d, s) = store();
    let mut ingest = s.ingest().unwrap();
    ingest.write_at(6, b"world").unwrap();
    ingest.write_at(0, b"hello ").unwrap();
    let want = Digest::of(b"hello world");
    ingest.commit(Some((&want, 11))).unwrap();
    assert!(s.has_blob(&want));
}

#[test]
fn mismatched_blob_is_refused_and_leaves_nothing() {
    let (dir, s) = store();
    let mut ingest = s.ingest().unwrap();
    ingest.write_all(b"evil").unwrap();
    let want = Digest::of(b"good");
    let err = ingest.commit(Some((&want, 4))).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "digest mismatch: expected {want}, got {}",
            Digest::of(b"evil")
        )
    );
    assert!(!s.has_blob(&want));
    assert_eq!(
        std::fs::read_dir(dir.path().join("ingest"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn block_index_reads_ranges_of_blobs_and_inline_nodes() {
    let (_d, s) = store();
    let digest = s.write_blob(b"0123456789", None).unwrap();
    let leaf: cid::Cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
        .parse()
        .unwrap();
    let node: cid::Cid = "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"
        .parse()
        .unwrap();
    s.put_blocks(&[
        BlockEntry {
            cid: leaf,
            location: BlockLocation::Blob {
                digest,
                offset: 3,
                length: 4,
            },
        },
        BlockEntry {
            cid: node,
            location: BlockLocation::Inline(vec![1, 2, 3]),
        },
    ])
    .unwrap();
    assert_eq!(s.get_block(&leaf).unwrap().unwrap(), b"3456");
    assert_eq!(s.get_block(&node).unwrap().unwrap(), vec![1, 2, 3]);
    // the CIDv0 spelling of the same dag-pb block finds it too
    let v0: cid::Cid = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
        .parse()
        .unwrap();
    assert!(s.has_block(&v0).unwrap());
}

#[test]
fn images_are_shared_between_two_open_stores_of_one_root() {
    let (dir, a) = store();
    let b = Store::open(dir.path()).unwrap();
    let d = Descriptor::new(ferry_oci::media::OCI_MANIFEST, Digest::of(b"m"), 1);
    a.put_image("127.0.0.1:5000/x:latest", &d).unwrap();
    let got = b.get_image("127.0.0.1:5000/x:latest").unwrap().unwrap();
    assert_eq!(got.target, d);
    assert_eq!(b.list_images().unwrap().len(), 1);
}

#[test]
fn a_blob_changed_on_disk_is_reported_corrupt() {
    let (_d, s) = store();
    let digest = s.write_blob(b"{\"a\":1}", None).unwrap();
    std::fs::write(s.blob_path(&digest), b"{\"a\":2}").unwrap();
    let err = s.read_blob(&digest).unwrap_err();
    let actual = Digest::of(b"{\"a\":2}");
    assert_eq!(
        err.to_string(),
        format!("blob {digest} is corrupt: its bytes hash to {actual}")
    );
    let mut reader = s.open_blob_verified(&digest).unwrap();
    let err = std::io::Read::read_to_end(&mut reader, &mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn opening_the_store_removes_abandoned_ingest_files_only() {
    let (dir, s) = store();
    let live = s.ingest().unwrap();
    let abandoned = dir.path().join("ingest/blob-abandoned");
    std::fs::write(&abandoned, b"partial").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for path in [&abandoned, &live.path().to_path_buf()] {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(hour_ago).unwrap();
    }
    let _again = Store::open(dir.path()).unwrap();
    assert!(!abandoned.exists(), "an unlocked old ingest file survived");
    assert!(live.path().exists(), "an ingest file in use was removed");
}
