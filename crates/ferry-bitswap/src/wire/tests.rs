//! Byte-exact checks against the worked examples of formats.md 2.6.

use super::*;

/// The binary CID of "hello world\n" as a raw CIDv1 (formats.md 2.6).
const HELLO_CID_HEX: &str =
    "01551220a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

fn hex(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap_or(0))
        .collect()
}

fn hello_cid() -> Cid {
    parse_cid(&hex(HELLO_CID_HEX)).unwrap_or_default()
}

fn presence(kind: PresenceType) -> Message {
    Message {
        wantlist: Some(Wantlist::default()),
        block_presences: vec![BlockPresence {
            cid: hex(HELLO_CID_HEX),
            r#type: kind as i32,
        }],
        ..Message::default()
    }
}

#[test]
fn want_have_entry_matches_formats_2_6() {
    let message = Message {
        wantlist: Some(Wantlist {
            entries: vec![Entry {
                block: hex(HELLO_CID_HEX),
                priority: i32::MAX,
                cancel: false,
                want_type: WantType::Have as i32,
                send_dont_have: true,
            }],
            full: false,
        }),
        ..Message::default()
    };
    let expected = format!("34 0a32 0a30 0a24 {HELLO_CID_HEX} 10ffffffff07 2001 2801");
    assert_eq!(encode_frame(&message), hex(&expected));
}

#[test]
fn block_response_matches_formats_2_6() {
    let message = Message {
        wantlist: Some(Wantlist::default()),
        payload: vec![Block {
            prefix: prefix(&hello_cid()),
            data: Bytes::from_static(b"hello world\n"),
        }],
        ..Message::default()
    };
    let expected = "18 0a00 1a14 0a04 01551220 120c 68656c6c6f20776f726c640a";
    assert_eq!(encode_frame(&message), hex(expected));
}

#[test]
fn have_and_dont_have_match_formats_2_6() {
    let have = format!("2a 0a00 2226 0a24 {HELLO_CID_HEX}");
    let dont_have = format!("2c 0a00 2228 0a24 {HELLO_CID_HEX} 1001");
    assert_eq!(encode_frame(&presence(PresenceType::Have)), hex(&have));
    assert_eq!(
        encode_frame(&presence(PresenceType::DontHave)),
        hex(&dont_have)
    );
}

#[test]
fn decoding_fills_missing_fields_with_proto3_defaults() {
    // A HAVE with no type field, and a want-block entry with only its CID.
    let have = Message::decode(&hex(&format!("0a00 2226 0a24 {HELLO_CID_HEX}"))[..]);
    let have = have.unwrap_or_default();
    assert_eq!(have.block_presences[0].r#type(), PresenceType::Have);
    assert_eq!(have.wantlist, Some(Wantlist::default()));

    let truncated = Message::decode(&hex("0a05 0a03")[..]);
    assert!(truncated.is_err(), "a truncated wantlist must not decode");

    let want = Message::decode(&hex(&format!("0a28 0a26 0a24 {HELLO_CID_HEX}"))[..]);
    let entry = want
        .unwrap_or_default()
        .wantlist
        .unwrap_or_default()
        .entries;
    assert_eq!(entry.len(), 1);
    assert_eq!(entry[0].want_type(), WantType::Block);
    assert_eq!(
        (entry[0].priority, entry[0].cancel, entry[0].send_dont_have),
        (0, false, false)
    );
    assert_eq!(parse_cid(&entry[0].block), Some(hello_cid()));
}

#[test]
fn block_cid_recomputes_the_hello_world_cid() {
    let block = Block {
        prefix: hex("01551220"),
        data: Bytes::from_static(b"hello world\n"),
    };
    assert_eq!(block_cid(&block), Ok(hello_cid()));
    assert_eq!(
        hello_cid().to_string(),
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    );
}

#[test]
fn block_cid_refuses_other_hashes_and_bad_prefixes() {
    let blake3 = Block {
        prefix: hex("01551e20"),
        data: Bytes::from_static(b"x"),
    };
    assert_eq!(block_cid(&blake3), Err(BlockRefusal::UnsupportedHash(0x1e)));
    let trailing = Block {
        prefix: hex("0155122000"),
        data: Bytes::from_static(b"x"),
    };
    assert_eq!(block_cid(&trailing), Err(BlockRefusal::BadPrefix));
    let v0_raw = Block {
        prefix: hex("00551220"),
        data: Bytes::from_static(b"x"),
    };
    assert_eq!(block_cid(&v0_raw), Err(BlockRefusal::BadPrefix));
}

#[test]
fn parse_cid_refuses_trailing_bytes_and_overlong_cids() {
    let mut bytes = hex(HELLO_CID_HEX);
    bytes.push(0);
    assert_eq!(parse_cid(&bytes), None);
    assert_eq!(parse_cid(&[0x01; MAX_CID_LEN + 1]), None);
}

#[test]
fn version_1_0_0_keeps_only_raw_cidv0_blocks() {
    let v0_prefix = hex("00701220");
    let message = Message {
        payload: vec![
            Block {
                prefix: v0_prefix,
                data: Bytes::from_static(b"pb"),
            },
            Block {
                prefix: hex("01551220"),
                data: Bytes::from_static(b"raw"),
            },
        ],
        block_presences: presence(PresenceType::Have).block_presences,
        ..Message::default()
    };
    let old = message.for_version(ProtocolVersion::V100);
    assert_eq!(old.blocks, vec![Bytes::from_static(b"pb")]);
    assert!(old.payload.is_empty() && old.block_presences.is_empty());
}

#[tokio::test]
async fn read_frame_reads_messages_until_end_and_refuses_oversize() {
    let mut bytes = encode_frame(&presence(PresenceType::Have));
    bytes.extend(encode_frame(&presence(PresenceType::DontHave)));
    let mut reader = futures::io::Cursor::new(bytes);
    let first = read_frame(&mut reader, 1 << 22).await;
    assert_eq!(first.ok().flatten(), Some(presence(PresenceType::Have)));
    let second = read_frame(&mut reader, 1 << 22).await;
    assert_eq!(
        second.ok().flatten(),
        Some(presence(PresenceType::DontHave))
    );
    assert!(matches!(read_frame(&mut reader, 1 << 22).await, Ok(None)));

    // 4 MiB + 1 announced: refused from the length alone.
    let mut big = Vec::new();
    write_varint(&mut big, (1 << 22) + 1);
    let mut reader = futures::io::Cursor::new(big);
    let refused = read_frame(&mut reader, 1 << 22).await;
    assert!(matches!(refused, Err(FrameError::TooLarge(4_194_305))));
}
