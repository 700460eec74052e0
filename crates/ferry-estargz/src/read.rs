//! Reading the TOC of a layer: footer → TOC member → its tar entry → JSON, checked against the
//! digest the layer's descriptor announces.

use std::io::{Read, Seek, SeekFrom};

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

/// Reads the TOC of a whole eStargz blob of `size` bytes (local, seekable).
pub fn read_toc<R: Read + Seek>(
    blob: &mut R,
    size: u64,
    want: Option<&Digest>,
) -> Result<ReadToc, Error> {
    let io = |e: std::io::Error| Error::Toc(format!("read the layer: {e}"));
    if size < FOOTER_SIZE as u64 {
        return Err(Error::Footer(format!("the layer has only {size} bytes")));
    }
    let footer_at = size - FOOTER_SIZE as u64;
    blob.seek(SeekFrom::Start(footer_at)).map_err(io)?;
    let mut tail = [0u8; FOOTER_SIZE];
    blob.read_exact(&mut tail).map_err(io)?;
    let offset = parse_footer(&tail)?;
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
    blob.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut member = vec![0u8; (footer_at - offset) as usize];
    blob.read_exact(&mut member).map_err(io)?;
    toc_from_member(&member, offset, want)
}
