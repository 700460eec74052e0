use std::io::Write;
use std::time::Duration;

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

#[test]
fn opening_the_store_removes_abandoned_scratch_entries_only() {
    let (dir, s) = store();
    let live_dir = s.scratch_dir("load-").unwrap();
    std::fs::write(live_dir.path().join("blob"), b"extracted").unwrap();
    let live_file = s.scratch_file().unwrap();
    let abandoned_dir = dir.path().join("tmp/load-killed");
    std::fs::create_dir(&abandoned_dir).unwrap();
    std::fs::write(abandoned_dir.join("blob"), b"extracted").unwrap();
    let abandoned_file = dir.path().join("tmp/.tmpkilled");
    std::fs::write(&abandoned_file, b"stdin copy").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for path in [
        live_dir.path(),
        live_file.path(),
        abandoned_dir.as_path(),
        abandoned_file.as_path(),
    ] {
        std::fs::File::open(path)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    let _again = Store::open(dir.path()).unwrap();
    assert!(
        !abandoned_dir.exists(),
        "an unlocked old scratch directory survived"
    );
    assert!(
        !abandoned_file.exists(),
        "an unlocked old scratch file survived"
    );
    assert!(
        live_dir.path().join("blob").exists(),
        "a scratch directory in use was removed"
    );
    assert!(
        live_file.path().exists(),
        "a scratch file in use was removed"
    );
}

/// A manifest naming `config` and `layers`, stored; returns its descriptor.
fn manifest(s: &Store, config: &Digest, layers: &[&Digest]) -> Descriptor {
    let d = |digest: &Digest| serde_json::json!({"mediaType": "x", "digest": digest.to_string(), "size": 1});
    let json = serde_json::json!({
        "schemaVersion": 2,
        "config": d(config),
        "layers": layers.iter().map(|l| d(l)).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&json).unwrap();
    let digest = s.write_blob(&bytes, None).unwrap();
    Descriptor::new(ferry_oci::media::OCI_MANIFEST, digest, bytes.len() as u64)
}

/// A dag-pb node linking to `children` (PBNode.Links[].Hash only).
fn dag_pb(children: &[cid::Cid]) -> Vec<u8> {
    let mut node = Vec::new();
    for child in children {
        let hash = child.to_bytes();
        let mut link = vec![0x0a, hash.len() as u8];
        link.extend(hash);
        node.push(0x12);
        node.push(link.len() as u8);
        node.extend(link);
    }
    node
}

fn dag_pb_cid(node: &[u8]) -> cid::Cid {
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, Digest::of(node).as_bytes()).unwrap();
    cid::Cid::new_v1(0x70, mh)
}

fn blob_names(s: &Store) -> Vec<Digest> {
    let mut names: Vec<Digest> = std::fs::read_dir(s.root().join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            format!("sha256:{}", e.unwrap().file_name().to_string_lossy())
                .parse()
                .unwrap()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn collect_keeps_what_names_pins_and_roots_reach_and_removes_the_rest() {
    let (_d, s) = store();
    let config = s.write_blob(b"{\"config\":1}", None).unwrap();
    let layer = s.write_blob(b"layer one", None).unwrap();
    let other_layer = s.write_blob(b"layer two", None).unwrap();
    let kept = manifest(&s, &config, &[&layer]);
    let dropped = manifest(&s, &config, &[&other_layer]);
    let container_layer = s.write_blob(b"layer of a container's image", None).unwrap();
    let container_image = manifest(&s, &config, &[&container_layer]);
    let stray = s.write_blob(b"nobody's", None).unwrap();
    s.put_image("a:1", &kept).unwrap();
    s.put_image("b:1", &dropped).unwrap();
    assert!(s.delete_image("b:1").unwrap());
    assert!(!s.delete_image("b:1").unwrap());

    // a pinned DAG: a root node (inline) linking to a leaf that is a range of `layer`...
    let leaf_mh =
        cid::multihash::Multihash::<64>::wrap(0x12, Digest::of(b"layer").as_bytes()).unwrap();
    let leaf = cid::Cid::new_v1(0x55, leaf_mh);
    let root_node = dag_pb(&[leaf]);
    let root = dag_pb_cid(&root_node);
    // ...and an unpinned node, and a leaf inside the stray blob
    let loose_node = dag_pb(&[]);
    let loose = dag_pb_cid(&loose_node);
    let stray_mh =
        cid::multihash::Multihash::<64>::wrap(0x12, Digest::of(b"nobody").as_bytes()).unwrap();
    let stray_leaf = cid::Cid::new_v1(0x55, stray_mh);
    let range = |digest: &Digest| BlockLocation::Blob {
        digest: digest.clone(),
        offset: 0,
        length: 5,
    };
    s.put_blocks(&[
        BlockEntry {
            cid: root,
            location: BlockLocation::Inline(root_node),
        },
        BlockEntry {
            cid: leaf,
            location: range(&layer),
        },
        BlockEntry {
            cid: loose,
            location: BlockLocation::Inline(loose_node),
        },
        BlockEntry {
            cid: stray_leaf,
            location: range(&stray),
        },
    ])
    .unwrap();
    s.put_file(&stray_leaf, &stray).unwrap();
    s.pin(&root, "root").unwrap();

    let report = s
        .collect(
            &s.exclusive(Duration::from_secs(1)).unwrap(),
            std::slice::from_ref(&container_image.digest),
        )
        .unwrap();

    let mut want = vec![
        config,
        layer,
        kept.digest,
        container_layer,
        container_image.digest.clone(),
    ];
    want.sort();
    assert_eq!(blob_names(&s), want);
    let mut gone = vec![other_layer, dropped.digest, stray];
    gone.sort();
    assert_eq!(
        report
            .blobs
            .iter()
            .map(|(d, _)| d.clone())
            .collect::<Vec<_>>(),
        gone
    );
    // loose node, stray leaf, stray file row
    assert_eq!(report.rows, 3);
    assert!(s.has_block(&root).unwrap());
    assert!(s.has_block(&leaf).unwrap());
    assert!(s.block_location(&loose).unwrap().is_none());
    assert!(s.block_location(&stray_leaf).unwrap().is_none());

    // nothing more to collect
    assert_eq!(
        s.collect(
            &s.exclusive(Duration::ZERO).unwrap(),
            &[container_image.digest]
        )
        .unwrap(),
        Default::default()
    );
}

#[test]
fn collect_waits_for_leases_and_gives_up_removing_nothing() {
    let (_d, s) = store();
    let stray = s.write_blob(b"being pulled", None).unwrap();
    let lease = s.lease().unwrap();
    // a second process's lease is the same lock; another handle on the store shows it
    let other = Store::open(s.root()).unwrap();
    let e = other.exclusive(Duration::from_millis(200)).err().unwrap();
    assert!(matches!(e, Error::Busy), "{e}");
    assert_eq!(
        e.to_string(),
        "other operations on this root (a pull, load, push or run) are still running"
    );
    assert!(s.has_blob(&stray));
    drop(lease);
    let held = other.exclusive(Duration::from_millis(200)).unwrap();
    let report = other.collect(&held, &[]).unwrap();
    assert_eq!(report.blobs, vec![(stray, 12)]);
}

fn raw_cid(data: &[u8]) -> cid::Cid {
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, Digest::of(data).as_bytes()).unwrap();
    cid::Cid::new_v1(0x55, mh)
}

fn ingest_rows(s: &Store) -> i64 {
    s.db()
        .query_row("SELECT count(*) FROM ingest_blocks", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn verified_blocks_of_an_ingest_are_served_by_every_store_of_the_root() {
    let (dir, s) = store();
    let (a, b) = (b"first block ".as_slice(), b"second block".as_slice());
    let mut ingest = s.ingest().unwrap();
    ingest.write_at(a.len() as u64, b).unwrap();
    ingest
        .index_blocks(&[(raw_cid(b), a.len() as u64, b.len() as u64)])
        .unwrap();

    // another process of the same root sees the block, not the one not yet written
    let other = Store::open(dir.path()).unwrap();
    assert_eq!(other.get_block(&raw_cid(b)).unwrap().as_deref(), Some(b));
    assert!(other.has_block(&raw_cid(b)).unwrap());
    assert_eq!(other.block_size(&raw_cid(b)).unwrap(), Some(b.len()));
    assert_eq!(other.get_block(&raw_cid(a)).unwrap(), None);
    assert!(!other.has_block(&raw_cid(a)).unwrap());
    assert_eq!(other.block_location(&raw_cid(b)).unwrap(), None);

    // the commit points the row at the blob
    ingest.write_at(0, a).unwrap();
    ingest
        .index_blocks(&[(raw_cid(a), 0, a.len() as u64)])
        .unwrap();
    let whole = [a, b].concat();
    let (digest, _) = ingest
        .commit(Some((&Digest::of(&whole), whole.len() as u64)))
        .unwrap();
    assert_eq!(ingest_rows(&other), 0);
    assert_eq!(
        other.block_location(&raw_cid(b)).unwrap(),
        Some(BlockLocation::Blob {
            digest: digest.clone(),
            offset: a.len() as u64,
            length: b.len() as u64,
        })
    );
    assert_eq!(other.get_block(&raw_cid(a)).unwrap().as_deref(), Some(a));
    assert_eq!(other.get_block(&raw_cid(b)).unwrap().as_deref(), Some(b));
    assert_eq!(blob_names(&s), vec![digest]);
    assert_eq!(
        std::fs::read_dir(dir.path().join("ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn an_abandoned_ingest_takes_its_blocks_out_of_the_index() {
    let (_d, s) = store();
    let data = b"a block of an abandoned pull";
    let mut ingest = s.ingest().unwrap();
    ingest.write_at(0, data).unwrap();
    ingest
        .index_blocks(&[(raw_cid(data), 0, data.len() as u64)])
        .unwrap();
    assert!(s.has_block(&raw_cid(data)).unwrap());
    drop(ingest);
    assert_eq!(ingest_rows(&s), 0);
    assert_eq!(s.get_block(&raw_cid(data)).unwrap(), None);
    assert!(!s.has_block(&raw_cid(data)).unwrap());
}

#[test]
fn a_failed_commit_takes_the_blocks_out_of_the_index() {
    let (_d, s) = store();
    let data = b"block of a blob that will not verify";
    let mut ingest = s.ingest().unwrap();
    ingest.write_at(0, data).unwrap();
    ingest
        .index_blocks(&[(raw_cid(data), 0, data.len() as u64)])
        .unwrap();
    let err = ingest
        .commit(Some((&Digest::of(b"other"), data.len() as u64)))
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }));
    assert_eq!(ingest_rows(&s), 0);
    assert_eq!(s.get_block(&raw_cid(data)).unwrap(), None);
}

#[test]
fn after_a_crash_only_verified_blocks_of_ingest_files_are_visible() {
    let (dir, s) = store();
    let good = b"verified before the crash";
    let lost = b"bytes the crash did not keep";
    let mut ingest = s.ingest().unwrap();
    let path = ingest.path().to_path_buf();
    ingest.write_at(0, good).unwrap();
    // a row whose bytes never reached the file (a power loss can do that)
    let at = good.len() as u64;
    ingest
        .index_blocks(&[
            (raw_cid(good), 0, good.len() as u64),
            (raw_cid(lost), at, lost.len() as u64),
        ])
        .unwrap();
    ingest.write_at(at, &vec![0u8; lost.len()]).unwrap();
    // the process dies: neither commit nor drop runs
    std::mem::forget(ingest);
    drop(s);

    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        s.get_block(&raw_cid(good)).unwrap().as_deref(),
        Some(&good[..])
    );
    assert_eq!(s.get_block(&raw_cid(lost)).unwrap(), None);

    // once the leftover file is swept, its rows go with it at the next open
    std::fs::remove_file(&path).unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(ingest_rows(&s), 0);
    assert_eq!(s.get_block(&raw_cid(good)).unwrap(), None);
}
