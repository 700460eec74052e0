//! Opening a layer blob as a tar stream, whatever its compression.

use std::io::{self, Cursor, Read};

use crate::Error;

/// gzip members start with these two bytes (RFC 1952 section 2.3.1).
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// zstd frames start with this little-endian magic number (RFC 8878 section 3.1.1).
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Open a layer blob's bytes as a decompressed tar stream (gzip / zstd / plain by magic bytes).
///
/// The compression is read from the first bytes, not from the media type, because Docker
/// media types and some registries mislabel layers. gzip input may be several members in a
/// row (eStargz and pigz write them) and zstd input several frames; all are read.
pub fn decompress(mut blob: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>, Error> {
    let head = read_head(&mut blob, ZSTD_MAGIC.len()).map_err(Error::ReadBlob)?;
    let whole = Cursor::new(head.clone()).chain(blob);

    if head.starts_with(GZIP_MAGIC) {
        tracing::debug!("layer is gzip compressed");
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(whole)));
    }

    if head.starts_with(ZSTD_MAGIC) {
        tracing::debug!("layer is zstd compressed");
        let decoder = zstd::stream::read::Decoder::new(whole).map_err(Error::ReadBlob)?;
        return Ok(Box::new(decoder));
    }

    tracing::debug!("layer is not compressed");
    Ok(Box::new(whole))
}

/// A stream that fails once more than `max` bytes come out of `stream`: a layer that expands
/// past what the caller accepts (a decompression bomb) is refused before it fills the disk.
/// The error reads "layer expands past MAX bytes".
pub fn limit(stream: Box<dyn Read + Send>, max: u64) -> Box<dyn Read + Send> {
    Box::new(Limit {
        inner: stream,
        read: 0,
        max,
    })
}

struct Limit {
    inner: Box<dyn Read + Send>,
    read: u64,
    max: u64,
}

impl Read for Limit {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the limit is enough to tell a stream that ends at it from a longer one.
        let room = (self.max - self.read.min(self.max)).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        if self.read > self.max {
            return Err(io::Error::other(format!(
                "layer expands past {} bytes",
                self.max
            )));
        }
        Ok(n)
    }
}

/// Read up to `len` bytes, fewer only at the end of the stream.
fn read_head(blob: &mut dyn Read, len: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(len);
    blob.take(len as u64).read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(blob: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut reader = decompress(Box::new(Cursor::new(blob))).unwrap();
        reader.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn limit_passes_a_stream_of_exactly_the_limit_and_refuses_one_byte_more() {
        let mut out = Vec::new();
        let n = limit(Box::new(Cursor::new(vec![7u8; 100])), 100).read_to_end(&mut out);
        assert_eq!(n.unwrap(), 100);
        let err = limit(Box::new(Cursor::new(vec![7u8; 101])), 100)
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(err.to_string(), "layer expands past 100 bytes");
    }

    #[test]
    fn decompress_passes_plain_bytes_through() {
        assert_eq!(read_all(b"plain tar bytes".to_vec()), b"plain tar bytes");
        assert_eq!(read_all(b"ab".to_vec()), b"ab");
        assert_eq!(read_all(Vec::new()), b"");
    }

    #[test]
    fn decompress_reads_every_gzip_member() {
        let mut blob = Vec::new();
        for part in [&b"first "[..], b"second"] {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(part).unwrap();
            blob.extend(enc.finish().unwrap());
        }
        assert_eq!(read_all(blob), b"first second");
    }

    #[test]
    fn decompress_reads_every_zstd_frame() {
        let mut blob = zstd::stream::encode_all(&b"one "[..], 3).unwrap();
        blob.extend(zstd::stream::encode_all(&b"two"[..], 3).unwrap());
        assert_eq!(read_all(blob), b"one two");
    }
}
