//! The protobuf subset that dag-pb file nodes need: varints, the canonical encoder of
//! formats.md 1.4/1.5, and a strict reader.
//!
//! Written by hand instead of with a protobuf library because CID equality depends on the exact
//! bytes (the empty link Name, Links before Data, unpacked blocksizes), which generic encoders
//! do not promise.

/// Protobuf wire type of varint fields.
pub(crate) const WIRE_VARINT: u8 = 0;
/// Protobuf wire type of length-delimited fields.
pub(crate) const WIRE_LEN: u8 = 2;
/// Protobuf wire type of 64-bit fixed fields (only skipped, never produced).
const WIRE_FIXED64: u8 = 1;
/// Protobuf wire type of 32-bit fixed fields (only skipped, never produced).
const WIRE_FIXED32: u8 = 5;

/// UnixFS `Data.Type` value of a file node (formats.md 1.5).
pub(crate) const UNIXFS_FILE: u64 = 2;

/// Appends `value` as an unsigned varint (formats.md 1.1).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The number of bytes `put_varint` writes for `value`.
pub(crate) fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// One link of a file node as the encoder needs it.
pub(crate) struct LinkOut<'a> {
    /// Binary CID of the child.
    pub cid: &'a [u8],
    /// Cumulative block size under the child (PBLink.Tsize).
    pub tsize: u64,
}

/// Encodes a UnixFS file node exactly as kubo does (formats.md 1.4, 1.5, 1.7): every link as
/// `Hash, Name = "", Tsize`, all links before Data, Data = {Type = File, filesize, one unpacked
/// blocksize per link}.
pub(crate) fn encode_file_node(links: &[LinkOut<'_>], blocksizes: &[u64]) -> Vec<u8> {
    let filesize: u64 = blocksizes.iter().sum();
    let data_len =
        2 + 1 + varint_len(filesize) + blocksizes.iter().map(|b| 1 + varint_len(*b)).sum::<usize>();
    let mut out = Vec::with_capacity(links.len() * 48 + data_len + 4);

    for link in links {
        // Hash (0a len cid) + Name (12 00) + Tsize (18 varint).
        let inner = 1 + varint_len(link.cid.len() as u64) + link.cid.len() + 2 + 1;
        let inner = inner + varint_len(link.tsize);
        out.push(0x12);
        put_varint(&mut out, inner as u64);
        out.push(0x0a);
        put_varint(&mut out, link.cid.len() as u64);
        out.extend_from_slice(link.cid);
        out.extend_from_slice(&[0x12, 0x00, 0x18]);
        put_varint(&mut out, link.tsize);
    }

    out.push(0x0a);
    put_varint(&mut out, data_len as u64);
    out.extend_from_slice(&[0x08, UNIXFS_FILE as u8, 0x18]);
    put_varint(&mut out, filesize);
    for size in blocksizes {
        out.push(0x20);
        put_varint(&mut out, *size);
    }
    out
}

/// A protobuf field value as read from the wire.
pub(crate) enum Value<'a> {
    /// A varint field.
    Varint(u64),
    /// A length-delimited field's bytes.
    Bytes(&'a [u8]),
    /// A fixed-width field (skipped by every caller, kept to report it).
    Fixed,
}

/// A cursor over protobuf bytes that yields `(field number, value)` pairs.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads one unsigned varint; errors on truncation, overlong (over 10 bytes) or overflow.
    pub(crate) fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for (i, byte) in self.buf.iter().enumerate().take(10) {
            let part = u64::from(byte & 0x7f);
            if i == 9 && part > 1 {
                return Err("varint overflows 64 bits");
            }
            value |= part << (7 * i);
            if byte & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err("truncated varint")
    }

    /// Reads the next field, or `None` at the end of the buffer.
    pub(crate) fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, &'static str> {
        if self.buf.is_empty() {
            return Ok(None);
        }

        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err("field number 0");
        }

        let value = match (key & 7) as u8 {
            WIRE_VARINT => Value::Varint(self.varint()?),
            WIRE_LEN => Value::Bytes(self.bytes()?),
            WIRE_FIXED64 => self.skip(8)?,
            WIRE_FIXED32 => self.skip(4)?,
            _ => return Err("unsupported wire type"),
        };
        Ok(Some((number, value)))
    }

    /// Reads a length-delimited payload.
    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| "length too large")?;
        if len > self.buf.len() {
            return Err("truncated length-delimited field");
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    /// Skips a fixed-width payload of `n` bytes.
    fn skip(&mut self, n: usize) -> Result<Value<'a>, &'static str> {
        if n > self.buf.len() {
            return Err("truncated fixed-width field");
        }
        self.buf = &self.buf[n..];
        Ok(Value::Fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_encodes_little_endian_groups() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (262144, &[0x80, 0x80, 0x10]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(varint_len(value), bytes.len(), "length of {value}");
            assert_eq!(Reader::new(bytes).varint(), Ok(value), "decoding {value}");
        }
    }

    #[test]
    fn varint_reader_refuses_truncated_and_overflowing_input() {
        assert_eq!(Reader::new(&[0x80]).varint(), Err("truncated varint"));
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(
            Reader::new(&too_big).varint(),
            Err("varint overflows 64 bits")
        );
    }

    #[test]
    fn empty_file_node_matches_kubo_bytes() {
        // formats.md 1.3: the CIDv0 empty file block is `0a 04 08 02 18 00`.
        assert_eq!(
            encode_file_node(&[], &[]),
            [0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]
        );
    }
}
