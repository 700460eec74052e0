//! Reading the TOC of a layer: footer → TOC member → its tar entry → JSON, checked against the
//! digest the layer's descriptor announces.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use ferry_oci::Digest;
use flate2::read::GzDecoder;

use crate::{parse_footer, Error, Toc, FOOTER_SIZE, TOC_NAME};

/// The largest TOC JSON accepted (stargz-snapshotter's limit is 50 MiB as well).
pub const MAX_TOC_SIZE: u64 = 50 << 20;

/// A layer's TOC with the digest of its JSON bytes.
#[derive(Clone, Debug)]
pub struct ReadToc {
    /// The decoded TOC.
    pub toc: Toc,
    /// sha256 of the JSON bytes, the value of the toc.digest annotation.
    pub digest: Digest,
    /// Blob offset of the TOC's gzip member (where the footer points).
    pub offset: u64,
}

/// The TOC JSON inside `member`, the blob's bytes from the TOC offset up to the footer: one gzip
/// member holding the tar header of `stargz.index.json`, the JSON, and the tar end blocks.
pub fn toc_json_from_member(member: &[u8]) -> Result<Vec<u8>, Error> {
    let mut archive = tar::Archive::new(GzDecoder::new(member));
    let mut entries = archive
        .entries()
        .map_err(|e| Error::Toc(format!("read the TOC member: {e}")))?;
    let entry = entries
        .next()
        .ok_or_else(|| Error::Toc("the TOC member holds no tar entry".into()))?
        .map_err(|e| Error::Toc(format!("read the TOC member: {e}")))?;
    let name = entry.path_bytes().into_owned();
    if name != TOC_NAME.as_bytes() {
        return Err(Error::Toc(format!(
            "the TOC member holds {:?}, not {TOC_NAME}",
            String::from_utf8_lossy(&name)
        )));
    }
    let size = entry.header().size().unwrap_or(u64::MAX);
    if size > MAX_TOC_SIZE {
        return Err(Error::Toc(format!(
            "{size} bytes, more than {MAX_TOC_SIZE}"
        )));
    }
    let mut json = Vec::with_capacity(size as usize);
    entry
        .take(MAX_TOC_SIZE)
        .read_to_end(&mut json)
        .map_err(|e| Error::Toc(format!("read the TOC member: {e}")))?;
    Ok(json)
}

/// Decodes the TOC from `member` (see [`toc_json_from_member`]) found at blob offset `offset`,
/// and checks it against `want` (the toc.digest annotation) when given.
pub fn toc_from_member(
    member: &[u8],
    offset: u64,
    want: Option<&Digest>,
) -> Result<ReadToc, Error> {
    let json = toc_json_from_member(member)?;
    let digest = Digest::of(&json);
    if let Some(want) = want {
        if *want != digest {
            return Err(Error::Toc(format!(
                "digest {digest}, the layer announces {want}"
            )));
        }
    }
    Ok(ReadToc {
        toc: Toc::parse(&json)?,
        digest,
        offset,
    })
}

/// Where the footer of a blob of `size` bytes starts: the range to fetch for [`toc_range`].
pub fn footer_range(size: u64) -> Result<Range<u64>, Error> {
    if size < FOOTER_SIZE as u64 {
        return Err(Error::Footer(format!("the layer has only {size} bytes")));
    }
    Ok(size - FOOTER_SIZE as u64..size)
}

/// The blob range of the TOC member named by `tail` (the bytes of [`footer_range`]), checked
/// to lie before the footer and to be no larger than [`MAX_TOC_SIZE`].
pub fn toc_range(size: u64, tail: &[u8]) -> Result<Range<u64>, Error> {
    let footer_at = footer_range(size)?.start;
    let offset = parse_footer(tail)?;
    if offset >= footer_at {
        return Err(Error::Footer(format!(
            "TOC offset {offset} is past the footer at {footer_at}"
        )));
    }
    if footer_at - offset > MAX_TOC_SIZE {
        return Err(Error::Toc(format!(
            "{} bytes, more than {MAX_TOC_SIZE}",
            footer_at - offset
        )));
    }
    Ok(offset..footer_at)
}

/// Reads the TOC of a whole eStargz blob of `size` bytes (local, seekable).
pub fn read_toc<R: Read + Seek>(
    blob: &mut R,
    size: u64,
    want: Option<&Digest>,
) -> Result<ReadToc, Error> {
    let io = |e: std::io::Error| Error::Toc(format!("read the layer: {e}"));
    let footer = footer_range(size)?;
    blob.seek(SeekFrom::Start(footer.start)).map_err(io)?;
    let mut tail = [0u8; FOOTER_SIZE];
    blob.read_exact(&mut tail).map_err(io)?;
    let toc = toc_range(size, &tail)?;
    blob.seek(SeekFrom::Start(toc.start)).map_err(io)?;
    let mut member = vec![0u8; (toc.end - toc.start) as usize];
    blob.read_exact(&mut member).map_err(io)?;
    toc_from_member(&member, toc.start, want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build_footer;

    #[test]
    fn toc_range_is_checked_against_the_blob() {
        assert_eq!(footer_range(1000).unwrap(), 949..1000);
        assert_eq!(toc_range(1000, &build_footer(900)).unwrap(), 900..949);
        let err = toc_range(1000, &build_footer(949)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not an eStargz footer: TOC offset 949 is past the footer at 949"
        );
        let err = footer_range(50).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not an eStargz footer: the layer has only 50 bytes"
        );
        let big = MAX_TOC_SIZE + 100;
        let err = toc_range(big + 51, &build_footer(0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("eStargz TOC: {big} bytes, more than {MAX_TOC_SIZE}")
        );
    }
}
