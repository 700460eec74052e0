//! Checking a whole eStargz blob before it is reused as it is (formats.md 5.5): the TOC must
//! match the digest the descriptor announces, and every file's payload, read from the member
//! the TOC points at, must match its `chunkDigest` (and the whole file its `digest`).

use std::io::{self, BufReader, Read, Seek, SeekFrom};

use ferry_oci::Digest;
use flate2::bufread::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use crate::{read_toc, Error, ReadToc, TocEntry};

/// Verifies the eStargz blob `blob` of `size` bytes against `toc_digest` (the layer's
/// `containerd.io/snapshot/stargz/toc.digest`); returns its TOC. Blocking; reads every chunk.
pub fn verify_layer<R: Read + Seek>(
    blob: &mut R,
    size: u64,
    toc_digest: &Digest,
) -> Result<ReadToc, Error> {
    let read = read_toc(blob, size, Some(toc_digest))?;
    let mut file: Option<FileCheck> = None;
    for entry in &read.toc.entries {
        match entry.kind.as_str() {
            "reg" => {
                if let Some(open) = file.take() {
                    open.finish()?;
                }
                if entry.size < 0 {
                    return Err(chunk_err(entry, "negative size"));
                }
                file = Some(FileCheck::new(entry));
                if entry.size == 0 {
                    continue;
                }
            }
            "chunk" => {}
            _ => continue,
        }
        let check = file
            .as_mut()
            .filter(|f| f.name == entry.name)
            .ok_or_else(|| chunk_err(entry, "a chunk that follows no regular file of its name"))?;
        check.chunk(blob, entry, read.offset)?;
    }
    if let Some(open) = file {
        open.finish()?;
    }
    Ok(read)
}

/// A regular file whose chunks are being checked in order.
struct FileCheck {
    name: String,
    size: u64,
    /// Bytes of the file checked so far.
    done: u64,
    whole: Sha256,
    digest: String,
}

impl FileCheck {
    fn new(entry: &TocEntry) -> Self {
        FileCheck {
            name: entry.name.clone(),
            size: entry.size as u64,
            done: 0,
            whole: Sha256::new(),
            digest: entry.digest.clone(),
        }
    }

    fn chunk<R: Read + Seek>(
        &mut self,
        blob: &mut R,
        entry: &TocEntry,
        toc_offset: u64,
    ) -> Result<(), Error> {
        if entry.chunk_offset as u64 != self.done {
            let why = format!("chunk at {}, want {}", entry.chunk_offset, self.done);
            return Err(chunk_err(entry, &why));
        }
        let len = match entry.chunk_size {
            0 => self.size - self.done,
            n if n > 0 && (n as u64) <= self.size - self.done => n as u64,
            n => {
                return Err(chunk_err(
                    entry,
                    &format!("chunk size {n} past the file's end"),
                ))
            }
        };
        if entry.offset <= 0 || entry.offset as u64 >= toc_offset {
            let why = format!("member offset {} outside the payload area", entry.offset);
            return Err(chunk_err(entry, &why));
        }
        if entry.chunk_digest.is_empty() {
            return Err(chunk_err(entry, "no chunkDigest"));
        }

        let io = |e: io::Error| chunk_err(entry, &format!("inflate: {e}"));
        blob.seek(SeekFrom::Start(entry.offset as u64))
            .map_err(io)?;
        let mut member = MultiGzDecoder::new(BufReader::new(&mut *blob));
        io::copy(
            &mut (&mut member).take(entry.inner_offset.max(0) as u64),
            &mut io::sink(),
        )
        .map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            member.read_exact(&mut buf[..n]).map_err(io)?;
            hasher.update(&buf[..n]);
            self.whole.update(&buf[..n]);
            left -= n as u64;
        }
        let got = Digest::from_bytes(hasher.finalize().into()).to_string();
        if got != entry.chunk_digest {
            let why = format!("bytes hash to {got}, the TOC says {}", entry.chunk_digest);
            return Err(chunk_err(entry, &why));
        }
        self.done += len;
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        if self.done != self.size {
            let why = format!("chunks cover {} of {} bytes", self.done, self.size);
            return Err(Error::Chunk(format!("{}: {why}", self.name)));
        }
        let got = Digest::from_bytes(self.whole.finalize().into()).to_string();
        if !self.digest.is_empty() && got != self.digest {
            let why = format!("file hashes to {got}, the TOC says {}", self.digest);
            return Err(Error::Chunk(format!("{}: {why}", self.name)));
        }
        Ok(())
    }
}

fn chunk_err(entry: &TocEntry, why: &str) -> Error {
    Error::Chunk(format!(
        "{} at offset {}: {why}",
        entry.name, entry.chunk_offset
    ))
}
