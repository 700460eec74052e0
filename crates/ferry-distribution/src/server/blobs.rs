//! Blob bodies: byte ranges (RFC 9110 section 14, formats.md 3.3) and where the bytes come
//! from: the store when the blob is here, else IPFS as the blocks arrive.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use ferry_ipfs::BlobDownload;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::OwnedSemaphorePermit;

use super::error::ApiError;
use super::images::Entry;
use super::Shared;

/// Bytes read from a stored blob per chunk of the response body.
const FILE_CHUNK: usize = 256 * 1024;

/// What a `Range` header asks of a blob of a given size.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// No usable Range header: the whole blob, 200.
    Full,
    /// One satisfiable range, clamped to the blob: 206.
    Part(Range<u64>),
    /// A range that starts past the end: 416.
    Unsatisfiable,
    /// More than one range: refused with 400, which stargz-snapshotter answers by asking for
    /// one range at a time.
    Multiple,
}

/// Parses a `Range` header for a blob of `size` bytes. A header that is not a valid `bytes=`
/// range is ignored, as RFC 9110 14.2 allows; numbers too large for 64 bits count as the
/// largest value, so a huge start is unsatisfiable and a huge end is clamped.
pub(crate) fn parse_range(header: Option<&str>, size: u64) -> Ranged {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ranged::Full;
    };
    let parts: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    match parts.as_slice() {
        [] => Ranged::Full,
        [one] => one_range(one, size),
        _ => Ranged::Multiple,
    }
}

fn one_range(spec: &str, size: u64) -> Ranged {
    let Some((first, last)) = spec.split_once('-') else {
        return Ranged::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // a suffix: the last N bytes
        return match number(last) {
            Some(n) if n > 0 && size > 0 => Ranged::Part(size.saturating_sub(n)..size),
            Some(_) => Ranged::Unsatisfiable,
            None => Ranged::Full,
        };
    }
    let Some(start) = number(first) else {
        return Ranged::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return Ranged::Full,
        }
    };
    if start >= size {
        return Ranged::Unsatisfiable;
    }
    Ranged::Part(start..end.min(size - 1) + 1)
}

/// Decimal digits as a u64, saturating; None for anything else.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// The body for `range` of the blob `entry`: from its stored file, from a download of the whole
/// blob into the store (started here or shared with other requests), or, for a part of a blob
/// that is not here, from the blocks under that part only.
/// Refuses a blob whose descriptor states a size other than its UnixFS file's (the stored
/// blob's length, or the root block's file size): the size becomes Content-Length, so a wrong
/// one would send a truncated or mis-framed body.
pub(crate) async fn check_size(shared: &Shared, entry: &Entry) -> Result<(), ApiError> {
    let declared = entry.desc.size;
    let actual = match std::fs::metadata(shared.store.blob_path(&entry.desc.digest)) {
        Ok(meta) => meta.len(),
        Err(_) => {
            let local = shared.store.get_block(&entry.cid).ok().flatten();
            let block = match local {
                Some(block) => bytes::Bytes::from(block),
                None => shared
                    .source
                    .get_block(entry.cid, shared.read.timeout)
                    .await
                    .map_err(|e| ApiError::unavailable(&format!("ipfs://{}: {e}", entry.cid)))?,
            };
            match ferry_unixfs::decode_file_node(&entry.cid, &block) {
                Ok(ferry_unixfs::FileNode::Data(bytes)) => bytes.len() as u64,
                Ok(ferry_unixfs::FileNode::Links { filesize, .. }) => filesize,
                Err(e) => return Err(ApiError::size_invalid(&e.to_string())),
            }
        }
    };
    if actual != declared {
        let why = format!(
            "blob {} is {actual} bytes, its descriptor says {declared}",
            entry.desc.digest
        );
        return Err(ApiError::size_invalid(&why));
    }
    Ok(())
}

pub(crate) async fn body(
    shared: &Shared,
    entry: &Entry,
    range: Range<u64>,
    permit: OwnedSemaphorePermit,
) -> Result<Body, ApiError> {
    let digest = &entry.desc.digest;
    if shared.store.has_blob(digest) {
        return file_body(shared, entry, range, permit).await;
    }
    let whole = range.start == 0 && range.end == entry.desc.size;
    let download = pick_download(shared, entry, whole)?;
    if let Some(download) = download.filter(|d| whole || d.written() >= range.end) {
        tracing::debug!(%digest, ?range, "streaming from the download");
        return Ok(stream_body(download.read(range), permit));
    }
    tracing::debug!(%digest, ?range, "streaming the range's blocks");
    let stream = ferry_ipfs::read_range(
        shared.source.clone(),
        shared.store.clone(),
        entry.cid,
        range,
        entry.desc.size,
        shared.read,
    );
    Ok(stream_body(stream, permit))
}

async fn file_body(
    shared: &Shared,
    entry: &Entry,
    range: Range<u64>,
    permit: OwnedSemaphorePermit,
) -> Result<Body, ApiError> {
    let path = shared.store.blob_path(&entry.desc.digest);
    let failed = |e: std::io::Error| {
        ApiError::internal(&format!("read {}", entry.desc.digest), &e.to_string())
    };
    let mut file = tokio::fs::File::open(&path).await.map_err(failed)?;
    file.seek(std::io::SeekFrom::Start(range.start))
        .await
        .map_err(failed)?;
    let reader = file.take(range.end - range.start);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, FILE_CHUNK);
    Ok(stream_body(stream, permit))
}

/// A body that holds its request's permit until the last byte is sent.
fn stream_body<S, E>(stream: S, permit: OwnedSemaphorePermit) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let permit = Arc::new(permit);
    let stream = stream.map(move |chunk| {
        let _held = &permit;
        chunk.map_err(|e| {
            // the status line is gone: all that is left is to cut the body short
            tracing::warn!(error = %e, "blob body failed");
            std::io::Error::other(e.to_string())
        })
    });
    Body::from_stream(stream)
}

/// Picks the download of a blob to stream from: the one running, else (when `start` and the
/// bound allows) a new one.
pub(crate) fn pick_download(
    shared: &Shared,
    entry: &Entry,
    start: bool,
) -> Result<Option<Arc<BlobDownload>>, ApiError> {
    let digest = &entry.desc.digest;
    let mut downloads = shared.downloads.lock().unwrap_or_else(|e| e.into_inner());
    downloads.retain(|_, d| !d.is_done());
    if let Some(d) = downloads.get(digest) {
        return Ok(Some(d.clone()));
    }
    if !start || downloads.len() >= shared.max_downloads {
        return Ok(None);
    }
    let download = BlobDownload::start(
        shared.source.clone(),
        shared.store.clone(),
        entry.cid,
        digest.clone(),
        entry.desc.size,
        shared.read,
    )
    .map_err(|e| ApiError::internal(&format!("fetch {digest}"), &e.to_string()))?;
    downloads.insert(digest.clone(), download.clone());
    Ok(Some(download))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |h: &str| parse_range(Some(h), 1000);
        assert_eq!(parse_range(None, 1000), Ranged::Full);
        assert_eq!(r("bytes=0-1"), Ranged::Part(0..2));
        assert_eq!(r("bytes=10-"), Ranged::Part(10..1000));
        assert_eq!(r("bytes=-100"), Ranged::Part(900..1000));
        assert_eq!(r("bytes=-5000"), Ranged::Part(0..1000));
        assert_eq!(r("bytes=990-5000"), Ranged::Part(990..1000));
        assert_eq!(r("bytes=1000-"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-9"), Ranged::Multiple);
        assert_eq!(r("bytes=5-1"), Ranged::Full);
        assert_eq!(r("bytes=x-1"), Ranged::Full);
        assert_eq!(r("items=0-1"), Ranged::Full);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Ranged::Unsatisfiable);
    }

    #[test]
    fn huge_numbers_saturate() {
        let huge = "bytes=99999999999999999999999999-";
        assert_eq!(parse_range(Some(huge), 1000), Ranged::Unsatisfiable);
        let huge_end = "bytes=1-99999999999999999999999999";
        assert_eq!(parse_range(Some(huge_end), 1000), Ranged::Part(1..1000));
    }
}
