//! Unit tests: CIDs of inputs whose CIDs were computed outside ferry (formats.md 1.7 and 1.9,
//! the shared peers README's known values), the reader, and refusals.

use std::collections::HashMap;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use sha2::{Digest, Sha256};

use super::*;

const KIB_256: usize = 262_144;
const MIB: usize = 1_048_576;

/// kubo's deterministic test data (formats.md 1.9): the ChaCha20 keystream under key
/// SHA-256(seed), zero nonce, counter 0.
fn chacha_data(seed: &str, len: usize) -> Vec<u8> {
    let key: [u8; 32] = Sha256::digest(seed.as_bytes()).into();
    let mut cipher = ChaCha20::new(&key.into(), &[0u8; 12].into());
    let mut data = vec![0u8; len];
    cipher.apply_keystream(&mut data);
    data
}

/// The bytes `add-cid.mjs --gen N` writes: xorshift32 from seed 1, low byte of each state.
fn xorshift_data(len: usize) -> Vec<u8> {
    let mut x: u32 = 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn cid(s: &str) -> Cid {
    Cid::try_from(s).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// One block as the importer handed it out: CID, bytes, and the file offset for leaves.
struct Block {
    cid: Cid,
    data: Vec<u8>,
    offset: Option<u64>,
}

/// Imports `data` written in slices of `slice` bytes and keeps every block.
fn import(data: &[u8], profile: Profile, slice: usize) -> (Cid, u64, Vec<Block>) {
    let mut blocks = Vec::new();
    let mut sink = |block: ImportedBlock<'_>| match block {
        ImportedBlock::Leaf { cid, offset, data } => blocks.push(Block {
            cid,
            data: data.to_vec(),
            offset: Some(offset),
        }),
        ImportedBlock::Node { cid, data } => blocks.push(Block {
            cid,
            data,
            offset: None,
        }),
    };

    let mut importer = Importer::new(profile);
    for piece in data.chunks(slice.max(1)) {
        importer.write(piece, &mut sink);
    }
    let (root, size) = importer.finish(&mut sink);
    (root, size, blocks)
}

/// Rebuilds a file from its blocks by walking the DAG from `root` with `decode_file_node`.
fn read_back(root: &Cid, blocks: &[Block]) -> Vec<u8> {
    let by_cid: HashMap<Cid, &[u8]> = blocks.iter().map(|b| (b.cid, b.data.as_slice())).collect();
    let mut out = Vec::new();
    let mut stack = vec![(*root, 0u64)];
    while let Some((cid, start)) = stack.pop() {
        let data = by_cid[&cid];
        verify_block(&cid, data).unwrap();
        match decode_file_node(&cid, data).unwrap() {
            FileNode::Data(bytes) => {
                assert_eq!(start, out.len() as u64, "{cid} placed at its offset");
                out.extend_from_slice(&bytes);
            }
            FileNode::Links { children, .. } => {
                for child in children.iter().rev() {
                    stack.push((child.cid, start + child.offset));
                }
            }
        }
    }
    out
}

#[test]
fn hello_world_is_one_raw_leaf() {
    let expected = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    assert_eq!(
        cid_of(b"hello world\n", Profile::KUBO_V1).to_string(),
        expected
    );
    assert_eq!(raw_cid(b"hello world\n").to_string(), expected);

    // kubo test/cli/add_test.go, same under both profiles (formats.md 1.9).
    let no_newline = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
    assert_eq!(
        cid_of(b"hello world", Profile::KUBO_V1).to_string(),
        no_newline
    );
    assert_eq!(
        cid_of(b"hello world", Profile::UNIXFS_V1_2025).to_string(),
        no_newline
    );
}

#[test]
fn empty_file_is_the_empty_raw_block() {
    let (root, size, blocks) = import(&[], Profile::KUBO_V1, 1);
    assert_eq!(
        root.to_string(),
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    );
    assert_eq!(size, 0);
    assert_eq!(blocks.len(), 1);
    assert_eq!(
        (blocks[0].cid, blocks[0].offset, blocks[0].data.len()),
        (root, Some(0), 0)
    );
}

#[test]
fn one_mib_of_zeros_matches_kubo() {
    let (root, size, blocks) = import(&vec![0u8; MIB], Profile::KUBO_V1, MIB);
    assert_eq!(
        root.to_string(),
        "bafybeiggzq4ryi7hscq5hzvzcnk4urnxt3asp37dhgvnjilf7exskximla"
    );
    assert_eq!(size, MIB as u64);
    assert_eq!(blocks.len(), 5, "four leaves and a root");
}

#[test]
fn one_mib_from_add_cid_gen_matches_ipfs_unixfs_importer() {
    let data = xorshift_data(MIB);
    assert_eq!(
        &data[..4],
        [0x21, 0x01, 0xc5, 0x4f],
        "xorshift32 reproduces add-cid.mjs"
    );
    let expected = "bafybeibwvtpwlzgif3swhuckm2vfa2eslywiyq7prevcpxm3jotzmek4pm";
    assert_eq!(cid_of(&data, Profile::KUBO_V1).to_string(), expected);
}

#[test]
fn worked_example_root_block_matches_formats_1_7_byte_for_byte() {
    let data = chacha_data("chunk-v0-seed", KIB_256 + 1);
    let (root, size, blocks) = import(&data, Profile::KUBO_V1, 100_000);

    let expected_root = hex(
        "122c 0a24 01551220 7bdb75a98b03a7dead10d95621c79cfd626c7c17d2737d9319ab6af08debbfa3
         1200 18808010
         122a 0a24 01551220 ef2d127de37b942baad06145e54b0c619a1f22327b2ebbcfbec78f5564afe39d
         1200 1801
         0a0c 0802 18818010 20808010 2001",
    );
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[2].data, expected_root);
    assert_eq!(blocks[2].cid, root);
    assert_eq!(
        root.to_string(),
        "bafybeibyui7o3sbw3yifnewshhrbnuntcehluzvbkwgi5vmtsdobnc2c6y"
    );
    assert_eq!(size, KIB_256 as u64 + 1);

    assert_eq!(blocks[0].cid.to_bytes(), expected_root[4..40]);
    assert_eq!((blocks[0].offset, blocks[0].data.len()), (Some(0), KIB_256));
    assert_eq!(blocks[1].cid.to_bytes(), expected_root[50..86]);
    assert_eq!(
        (blocks[1].offset, blocks[1].data.len()),
        (Some(KIB_256 as u64), 1)
    );
}

#[test]
fn derived_vectors_of_formats_1_9_match() {
    let n174 = 174 * KIB_256;
    let cases: [(&str, Vec<u8>, &str); 9] = [
        (
            "zeros",
            vec![0; KIB_256],
            "bafkreiekhhjkxu4ztk3tyng3er3ijhg56mb44oe3gwbgquhzu4afrg2ksa",
        ),
        (
            "zeros",
            vec![0; KIB_256 + 1],
            "bafybeigllfqgfpqydppr6cmv56g7ax4wyhruzswvcefv6j5kj77nzttfki",
        ),
        (
            "zeros",
            vec![0; MIB],
            "bafybeiggzq4ryi7hscq5hzvzcnk4urnxt3asp37dhgvnjilf7exskximla",
        ),
        (
            "zeros",
            vec![0; n174],
            "bafybeibxsa3ioclowpaq7b6gxl65gzqneopfr3fnhedak6sqr4bjz5lnyq",
        ),
        (
            "zeros",
            vec![0; n174 + 1],
            "bafybeihqwzd3o6q6v3pmwhzjy22vokhr767burokmqemg63hptx2nqd7ym",
        ),
        (
            "chunk-v0-seed",
            chacha_data("chunk-v0-seed", KIB_256),
            "bafkreid33n22tcydu7pk2egzkyq4phh5mjwhyf6son6zggnlnlyi3257um",
        ),
        (
            "chunk-v0-seed",
            chacha_data("chunk-v0-seed", KIB_256 + 1),
            "bafybeibyui7o3sbw3yifnewshhrbnuntcehluzvbkwgi5vmtsdobnc2c6y",
        ),
        (
            "v0-seed",
            chacha_data("v0-seed", n174),
            "bafybeidajp2ewrtxcagm2u3qstbk2kw5srzbu7g7oraqepajpgumviz3z4",
        ),
        (
            "v0-seed",
            chacha_data("v0-seed", n174 + 1),
            "bafybeifr472xiwfk53w5s7bayijk3lq2go6ocqqcfch6ygy5qwza5hkdl4",
        ),
    ];
    for (name, data, expected) in cases {
        let got = cid_of(&data, Profile::KUBO_V1);
        assert_eq!(got.to_string(), expected, "{name} x {} bytes", data.len());
    }
}

#[test]
fn unixfs_v1_2025_vectors_of_formats_1_9_match() {
    let data = chacha_data("chunk-v1-seed", MIB + 1);
    let one_chunk = cid_of(&data[..MIB], Profile::UNIXFS_V1_2025);
    assert_eq!(
        one_chunk.to_string(),
        "bafkreiacndfy443ter6qr2tmbbdhadvxxheowwf75s6zehscklu6ezxmta"
    );
    let two_chunks = cid_of(&data, Profile::UNIXFS_V1_2025);
    assert_eq!(
        two_chunks.to_string(),
        "bafybeigmix7t42i6jacydtquhet7srwvgpizfg7gjbq7627d35mjomtu64"
    );
}

#[test]
fn slice_sizes_do_not_change_blocks() {
    let data = chacha_data("slices", 5 * KIB_256 + 17);
    let (whole, _, whole_blocks) = import(&data, Profile::KUBO_V1, data.len());
    for slice in [1 << 20, KIB_256, KIB_256 - 1, KIB_256 + 1, 65_537, 4_096] {
        let (root, size, blocks) = import(&data, Profile::KUBO_V1, slice);
        assert_eq!(
            (root, size),
            (whole, data.len() as u64),
            "slices of {slice}"
        );
        let cids: Vec<_> = blocks.iter().map(|b| b.cid).collect();
        let whole_cids: Vec<_> = whole_blocks.iter().map(|b| b.cid).collect();
        assert_eq!(cids, whole_cids, "slices of {slice}");
    }
}

#[test]
fn leaves_come_in_file_order_and_parents_after_children() {
    // 3 links per node and 10-byte chunks: 30 leaves make a 4-level DAG with a ragged right edge.
    let profile = Profile {
        chunk_size: 10,
        max_links: 3,
    };
    let data = chacha_data("order", 295);
    let (root, _, blocks) = import(&data, profile, 7);

    let mut seen = std::collections::HashSet::new();
    let mut next_offset = 0;
    for block in &blocks {
        if let Some(offset) = block.offset {
            assert_eq!(offset, next_offset);
            assert_eq!(block.data, data[offset as usize..][..block.data.len()]);
            next_offset += block.data.len() as u64;
        } else if let FileNode::Links { children, .. } =
            decode_file_node(&block.cid, &block.data).unwrap()
        {
            assert!(
                children.iter().all(|c| seen.contains(&c.cid)),
                "{} after children",
                block.cid
            );
        }
        seen.insert(block.cid);
    }
    assert_eq!(blocks.last().map(|b| b.cid), Some(root));
    assert_eq!(next_offset, 295);
}

#[test]
fn balanced_layout_puts_all_leaves_at_one_depth() {
    // formats.md 1.6: 175 chunks -> root with [node of 174 leaves, node of 1 leaf].
    let profile = Profile {
        chunk_size: 1,
        max_links: 174,
    };
    let data = chacha_data("depth", 175);
    let (root, _, blocks) = import(&data, profile, 175);
    let by_cid: HashMap<Cid, &[u8]> = blocks.iter().map(|b| (b.cid, b.data.as_slice())).collect();

    let FileNode::Links { children, filesize } = decode_file_node(&root, by_cid[&root]).unwrap()
    else {
        panic!("root is not an interior node");
    };
    assert_eq!(filesize, 175);
    let shape: Vec<_> = children
        .iter()
        .map(|c| (c.cid.codec(), c.offset, c.size))
        .collect();
    assert_eq!(shape, [(DAG_PB, 0, 174), (DAG_PB, 174, 1)]);
}

#[test]
fn reader_rebuilds_the_file_from_importer_blocks() {
    let small = Profile {
        chunk_size: 10,
        max_links: 3,
    };
    for (profile, len) in [
        (small, 295),
        (small, 270),
        (small, 9),
        (Profile::KUBO_V1, 3 * KIB_256 + 5),
    ] {
        let data = chacha_data("round trip", len);
        let (root, _, blocks) = import(&data, profile, 4_099);
        assert_eq!(
            read_back(&root, &blocks),
            data,
            "{profile:?} with {len} bytes"
        );
    }
}

#[test]
fn reader_reads_kubo_cidv0_style_leaves() {
    // formats.md 1.9: `hello world` as a dag-pb leaf, and the CIDv0 empty file (1.3).
    let leaf = hex("0a110802120b68656c6c6f20776f726c64180b");
    let leaf_cid = cid("bafybeihykld7uyxzogax6vgyvag42y7464eywpf55gxi5qpoisibh3c5wa");
    verify_block(&leaf_cid, &leaf).unwrap();
    assert_eq!(
        decode_file_node(&leaf_cid, &leaf),
        Ok(FileNode::Data(b"hello world".to_vec()))
    );

    let empty = hex("0a0408021800");
    let empty_cid = cid("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
    verify_block(&empty_cid, &empty).unwrap();
    assert_eq!(
        decode_file_node(&empty_cid, &empty),
        Ok(FileNode::Data(Vec::new()))
    );
}

#[test]
fn reader_accepts_data_before_links() {
    // The worked example's root with its Data field moved in front of the links.
    let data = chacha_data("chunk-v0-seed", KIB_256 + 1);
    let (root, _, blocks) = import(&data, Profile::KUBO_V1, data.len());
    let canonical = &blocks[2].data;
    let mut reordered = canonical[90..].to_vec();
    reordered.extend_from_slice(&canonical[..90]);

    let expected = decode_file_node(&root, canonical).unwrap();
    assert_eq!(
        decode_file_node(&dag_pb_cid(&reordered), &reordered),
        Ok(expected.clone())
    );
    let FileNode::Links { children, filesize } = expected else {
        panic!("not a links node")
    };
    assert_eq!(filesize, KIB_256 as u64 + 1);
    assert_eq!(
        children[1],
        Child {
            cid: blocks[1].cid,
            offset: KIB_256 as u64,
            size: 1
        }
    );
}

/// A two-link file node with the given UnixFS Data payload.
fn node_with_unixfs(unixfs: &str) -> (Cid, Vec<u8>) {
    let leaf = raw_cid(b"x").to_bytes();
    let link = [&[0x0a, 0x24][..], &leaf, &[0x12, 0x00, 0x18, 0x01]].concat();
    let unixfs = hex(unixfs);
    let mut block = Vec::new();
    for _ in 0..2 {
        block.extend_from_slice(&[0x12, link.len() as u8]);
        block.extend_from_slice(&link);
    }
    block.extend_from_slice(&[0x0a, unixfs.len() as u8]);
    block.extend_from_slice(&unixfs);
    (dag_pb_cid(&block), block)
}

#[test]
fn reader_refuses_blocksizes_that_do_not_match_links() {
    let (good_cid, good) = node_with_unixfs("0802 1802 2001 2001");
    assert!(matches!(
        decode_file_node(&good_cid, &good),
        Ok(FileNode::Links { filesize: 2, .. })
    ));

    let (cid, block) = node_with_unixfs("0802 1801 2001");
    let err = decode_file_node(&cid, &block).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("block {cid}: inconsistent sizes: 1 blocksizes for 2 links")
    );

    let (cid, block) = node_with_unixfs("0802 1805 2001 2001");
    let err = decode_file_node(&cid, &block).unwrap_err();
    let text = format!("block {cid}: inconsistent sizes: filesize 5 but blocksizes add up to 2");
    assert_eq!(err.to_string(), text);
}

#[test]
fn reader_refuses_nodes_that_are_not_files() {
    // formats.md 1.9: the empty directory.
    let dir = hex("0a020801");
    let dir_cid = cid("bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354");
    let err = decode_file_node(&dir_cid, &dir).unwrap_err();
    assert_eq!(
        err,
        Error::NotAFile {
            cid: Box::new(dir_cid),
            unixfs_type: 1
        }
    );
}

#[test]
fn reader_refuses_unknown_codecs_and_malformed_dag_pb() {
    let cbor = Cid::new_v1(0x71, *raw_cid(b"{}").hash());
    let err = decode_file_node(&cbor, b"\xa0").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("block {cbor}: unsupported codec 0x71 in a file dag")
    );

    let cases: [(&str, &str); 5] = [
        (
            "0a0408021800 0a0408021800",
            "malformed dag-pb node: duplicate data field",
        ),
        (
            "0a05080218",
            "malformed dag-pb node: truncated length-delimited field",
        ),
        ("1a00", "malformed dag-pb node: unknown field or wire type"),
        (
            "1204 1200 0a00 0a020802",
            "malformed dag-pb link: link fields out of order or repeated",
        ),
        ("0a021802", "malformed unixfs data: no type field"),
    ];
    for (block, message) in cases {
        let block = hex(block);
        let cid = dag_pb_cid(&block);
        let err = decode_file_node(&cid, &block).unwrap_err();
        assert_eq!(err.to_string(), format!("block {cid}: {message}"));
    }
}

#[test]
fn verify_block_refuses_a_hash_mismatch() {
    let cid = raw_cid(b"hello world\n");
    assert_eq!(verify_block(&cid, b"hello world\n"), Ok(()));

    let err = verify_block(&cid, b"hello world").unwrap_err();
    let actual = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    assert_eq!(
        err.to_string(),
        format!("block {cid}: hash mismatch, bytes hash to sha256:{actual}")
    );
}

#[test]
fn verify_block_refuses_other_hash_functions() {
    let identity = Cid::new_v1(RAW, Multihash::<64>::wrap(0x00, b"hi").unwrap());
    let err = verify_block(&identity, b"hi").unwrap_err();
    assert_eq!(
        err,
        Error::UnsupportedHash {
            cid: Box::new(identity),
            code: 0
        }
    );
    assert_eq!(
        err.to_string(),
        format!("block {identity}: unsupported hash function 0x0")
    );
}

#[test]
fn multihash_helpers_agree_with_the_cid() {
    let cid = raw_cid(b"hello world\n");
    let digest: [u8; 32] = Sha256::digest(b"hello world\n").into();
    assert_eq!(sha256_digest(&cid), Some(digest));
    assert_eq!(cid_from_sha256_digest(RAW, &digest), cid);
    assert_eq!(multihash_bytes(&cid), [&[0x12, 0x20][..], &digest].concat());
    assert_eq!(sha256_multihash(b"hello world\n"), *cid.hash());
    assert_eq!(cid.to_bytes()[..4], [0x01, 0x55, 0x12, 0x20]);
}

#[test]
fn reader_refuses_every_truncation_of_a_node() {
    let data = chacha_data("chunk-v0-seed", KIB_256 + 1);
    let (_, _, blocks) = import(&data, Profile::KUBO_V1, data.len());
    let root = &blocks[2].data;
    for len in 0..root.len() {
        let cut = &root[..len];
        let result = decode_file_node(&dag_pb_cid(cut), cut);
        assert!(
            matches!(result, Err(Error::Malformed { .. })),
            "prefix of {len} bytes: {result:?}"
        );
    }
}
