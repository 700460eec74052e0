//! The 51-byte footer: an empty gzip member whose Extra field names the TOC's offset.

use crate::Error;

/// The size of an eStargz footer.
pub const FOOTER_SIZE: usize = 51;

/// gzip header: magic, deflate, FLG = FEXTRA, MTIME 0, XFL 0, OS 255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff];
/// An empty stored deflate block, then CRC32 = 0 and ISIZE = 0.
const TRAILER: [u8; 13] = [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
const SUFFIX: &[u8] = b"STARGZ";

/// The footer of a blob whose TOC member starts at `toc_offset`.
pub fn build_footer(toc_offset: u64) -> [u8; FOOTER_SIZE] {
    let mut out = [0u8; FOOTER_SIZE];
    out[..10].copy_from_slice(&HEADER);
    // XLEN = 26: one subfield `SG`, LEN = 22, 16 hex digits + "STARGZ".
    out[10..12].copy_from_slice(&26u16.to_le_bytes());
    out[12..14].copy_from_slice(b"SG");
    out[14..16].copy_from_slice(&22u16.to_le_bytes());
    out[16..32].copy_from_slice(format!("{toc_offset:016x}").as_bytes());
    out[32..38].copy_from_slice(SUFFIX);
    out[38..].copy_from_slice(&TRAILER);
    out
}

/// The TOC offset named by `tail`, the blob's last [`FOOTER_SIZE`] bytes.
pub fn parse_footer(tail: &[u8]) -> Result<u64, Error> {
    let bad = |why: &str| Error::Footer(why.to_string());
    if tail.len() != FOOTER_SIZE {
        return Err(bad(&format!("{} bytes, want {FOOTER_SIZE}", tail.len())));
    }
    if tail[..4] != HEADER[..4] {
        return Err(bad("no gzip header with an Extra field"));
    }
    if tail[10..12] != 26u16.to_le_bytes() || &tail[12..14] != b"SG" {
        return Err(bad("no SG subfield"));
    }
    if tail[14..16] != 22u16.to_le_bytes() || &tail[32..38] != SUFFIX {
        return Err(bad("subfield does not end in STARGZ"));
    }
    let hex = std::str::from_utf8(&tail[16..32]).map_err(|_| bad("TOC offset is not text"))?;
    u64::from_str_radix(hex, 16).map_err(|_| bad("TOC offset is not 16 hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of formats.md 5.3, byte for byte.
    #[test]
    fn footer_matches_the_reference_bytes() {
        let want = "1f8b08040000000000ff1a00534716003030303030303030303030303132333453544152475a010000ffff0000000000000000";
        assert_eq!(hex::encode(build_footer(0x1234)), want);
        assert_eq!(parse_footer(&hex::decode(want).unwrap()).unwrap(), 0x1234);
    }

    #[test]
    fn a_plain_gzip_tail_is_refused() {
        let err = parse_footer(&[0u8; FOOTER_SIZE]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not an eStargz footer: no gzip header with an Extra field"
        );
    }
}
