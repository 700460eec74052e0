//! The table of contents, `stargz.index.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The TOC: every entry of the layer, in tar order, and the chunks of large files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Toc {
    /// The format version; must be 1.
    pub version: u32,
    /// Entries in tar order; a chunked file's later chunks follow its `reg` entry.
    pub entries: Vec<TocEntry>,
}

/// One entry of the TOC. Field names and omission rules follow stargz-snapshotter's JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TocEntry {
    /// The full tar path.
    pub name: String,
    /// `dir`, `reg`, `symlink`, `hardlink`, `char`, `block`, `fifo` or `chunk`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The file's size (regular files).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    /// Modification time, RFC 3339 UTC; empty when unknown.
    #[serde(default, rename = "modtime", skip_serializing_if = "String::is_empty")]
    pub mod_time: String,
    /// The target of a symlink or hardlink.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    /// The tar header's mode bits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: i64,
    /// Owner.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: i64,
    /// Group.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: i64,
    /// Owner's name, written only when it changes for that uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    /// Group's name, written only when it changes for that gid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_name: String,
    /// Blob offset of the gzip member holding this file's or chunk's payload.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: i64,
    /// Offset inside that member's decompressed stream (several payloads in one member).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inner_offset: i64,
    /// Device major number (char, block).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dev_major: i64,
    /// Device minor number (char, block).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dev_minor: i64,
    /// Extended attributes; values are base64 in the JSON.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "base64_map"
    )]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// `sha256:` of the whole regular file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// This chunk's offset in the file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_offset: i64,
    /// This chunk's decompressed size; 0 means to the end of the file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_size: i64,
    /// `sha256:` of this chunk's bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chunk_digest: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Toc {
    /// Decodes TOC JSON and checks its version.
    pub fn parse(json: &[u8]) -> Result<Toc, Error> {
        let toc: Toc = serde_json::from_slice(json).map_err(|e| Error::Toc(e.to_string()))?;
        if toc.version != 1 {
            return Err(Error::Toc(format!("version {}, want 1", toc.version)));
        }
        Ok(toc)
    }

    /// The TOC as stargz-snapshotter writes it: JSON indented with tabs.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser).expect("a TOC always serializes");
        out
    }
}

/// Base64 (standard, padded) values in a map, as Go encodes `map[string][]byte`.
mod base64_map {
    use std::collections::BTreeMap;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                let bytes = STANDARD
                    .decode(&v)
                    .map_err(|e| serde::de::Error::custom(format!("xattr {k}: {e}")))?;
                Ok((k, bytes))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stargz_snapshotter_json() {
        let json = br#"{"version":1,"entries":[
            {"name":"bin/","type":"dir","modtime":"2024-01-01T00:00:00Z","mode":493,"NumLink":0},
            {"name":"bin/sh","type":"reg","size":10,"mode":493,"offset":77,"digest":"sha256:aa",
             "chunkSize":4,"chunkDigest":"sha256:bb","xattrs":{"user.a":"eQ=="}},
            {"name":"bin/sh","type":"chunk","offset":99,"chunkOffset":4,"chunkDigest":"sha256:cc"}]}"#;
        let toc = Toc::parse(json).unwrap();
        assert_eq!(toc.entries.len(), 3);
        assert_eq!(toc.entries[1].xattrs["user.a"], b"y");
        assert_eq!(toc.entries[2].chunk_offset, 4);
        let again = Toc::parse(&toc.to_json()).unwrap();
        assert_eq!(again, toc);
    }

    #[test]
    fn refuses_another_version() {
        let err = Toc::parse(br#"{"version":2,"entries":[]}"#).unwrap_err();
        assert_eq!(err.to_string(), "eStargz TOC: version 2, want 1");
    }
}
