//! Blob files: ingest, verify, commit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ferry_oci::Digest;
use sha2::{Digest as _, Sha256};

use crate::partial::IngestIndex;
use crate::{Error, Store};

impl Store {
    /// Where the blob `digest` lives (whether or not it is there yet).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the blob is in the store.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, Error> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(format!("blob {digest}")),
            _ => Error::io(&path, e),
        })
    }

    /// Reads a whole stored blob and checks it against its digest (for manifests and configs;
    /// stream layers with [`Store::open_blob_verified`]).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
        let mut bytes = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&self.blob_path(digest), e))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::CorruptBlob {
                digest: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Opens a stored blob as a reader that checks the bytes against the digest as they pass:
    /// reading past the end of a blob that does not match is an error (`InvalidData`) instead
    /// of a clean end of file.
    pub fn open_blob_verified(&self, digest: &Digest) -> Result<VerifiedBlob, Error> {
        let file = self.open_blob(digest)?;
        Ok(VerifiedBlob {
            file,
            digest: digest.clone(),
            hasher: Some(Sha256::new()),
        })
    }

    /// Stores `bytes` as a blob (nothing is written when it is already there) and returns its
    /// digest, after checking it against `expected` when given.
    pub fn write_blob(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest, Error> {
        let digest = Digest::of(bytes);
        if let Some(want) = expected {
            if *want != digest {
                return Err(Error::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        if !self.has_blob(&digest) {
            let mut ingest = self.ingest()?;
            ingest
                .write_all(bytes)
                .map_err(|e| Error::io(&ingest.path, e))?;
            ingest.commit(Some((&digest, bytes.len() as u64)))?;
        }
        Ok(digest)
    }

    /// Starts writing a new blob.
    pub fn ingest(&self) -> Result<Ingest, Error> {
        let dir = self.root.join("ingest");
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        let (file, path) = file.keep().map_err(|e| Error::io(&dir, e.error))?;
        lock_exclusive(&file).map_err(|e| Error::io(&path, e))?;
        let index = path
            .file_name()
            .and_then(|name| name.to_str())
            .map(|name| IngestIndex {
                db: self.db.clone(),
                name: name.to_string(),
                used: false,
            });
        Ok(Ingest {
            blobs: self.root.join("blobs/sha256"),
            path,
            file: Some(file),
            hasher: Some(Sha256::new()),
            written: 0,
            index,
        })
    }

    /// Moves a file that already holds a blob's bytes (on the store's filesystem, for example
    /// under [`Store::tmp_dir`]) into the store after verifying it, without copying it.
    pub fn import_file(&self, path: &Path, expected: &Digest, size: u64) -> Result<(), Error> {
        if self.has_blob(expected) {
            return Ok(());
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let ingest = Ingest {
            blobs: self.root.join("blobs/sha256"),
            path: path.to_path_buf(),
            file: Some(file),
            hasher: None,
            written: 0,
            index: None,
        };
        ingest.commit(Some((expected, size))).map(|_| ())
    }
}

/// A stored blob read through its digest check (see [`Store::open_blob_verified`]).
pub struct VerifiedBlob {
    file: File,
    digest: Digest,
    hasher: Option<Sha256>,
}

impl Read for VerifiedBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        match (n, self.hasher.as_mut()) {
            (0, Some(_)) => {
                let hasher = self.hasher.take().unwrap_or_default();
                let actual = Digest::from_bytes(hasher.finalize().into());
                if actual != self.digest {
                    let e = Error::CorruptBlob {
                        digest: self.digest.clone(),
                        actual,
                    };
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            (_, Some(h)) => h.update(&buf[..n]),
            (_, None) => {}
        }
        Ok(n)
    }
}

/// A blob being written. Bytes go in order through `Write` (hashed as they pass) or at offsets
/// through [`Ingest::write_at`] (hashed once at commit). Dropping it without committing deletes
/// the file.
pub struct Ingest {
    blobs: PathBuf,
    path: PathBuf,
    file: Option<File>,
    hasher: Option<Sha256>,
    written: u64,
    /// Its rows in the CID index ([`Ingest::index_blocks`]).
    pub(crate) index: Option<IngestIndex>,
}

impl Ingest {
    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the rest of `src` into the blob inside the kernel (`copy_file_range`, no pass
    /// through user memory); the digest is then computed at commit.
    pub fn copy_from(&mut self, src: &mut File) -> Result<u64, Error> {
        self.hasher = None;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| Error::NotFound("ingest file".into()))?;
        let n = io::copy(src, file).map_err(|e| Error::io(&self.path, e))?;
        self.written += n;
        Ok(n)
    }

    /// A second handle on the temporary file, for reading what was written (with positioned
    /// reads) while the ingest goes on; it stays valid after the commit renames the file.
    pub fn reader(&self) -> Result<File, Error> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| Error::NotFound("ingest file".into()))?;
        file.try_clone().map_err(|e| Error::io(&self.path, e))
    }

    /// Writes `data` at `offset`, for blocks that arrive in any order.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.hasher = None;
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| Error::NotFound("ingest file".into()))?;
        file.write_all_at(data, offset)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Syncs, verifies against `expected` (digest and size) when given, and moves the blob
    /// into place. Returns the blob's digest and size.
    pub fn commit(mut self, expected: Option<(&Digest, u64)>) -> Result<(Digest, u64), Error> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Error::NotFound("ingest file".into()))?;
        let (digest, size) = match self.hasher.take() {
            Some(h) => (Digest::from_bytes(h.finalize().into()), self.written),
            None => hash_file(&mut file).map_err(|e| Error::io(&self.path, e))?,
        };
        if let Some((want, want_size)) = expected {
            if *want != digest {
                return Err(Error::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                });
            }
            if want_size != size {
                return Err(Error::SizeMismatch {
                    digest,
                    expected: want_size,
                    actual: size,
                });
            }
        }
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        drop(file);
        let target = self.blobs.join(digest.hex());
        match self.index.as_ref().filter(|index| index.used) {
            None => {
                fs::rename(&self.path, &target).map_err(|e| Error::io(&target, e))?;
                sync_dir(&self.blobs)?;
            }
            Some(index) => {
                // Readers in other processes may have just found a row naming the ingest file:
                // the blob appears under its digest (a link), the rows move to it, and only
                // then does the ingest file's name go, so the block is never missing.
                match fs::hard_link(&self.path, &target) {
                    Ok(()) => {}
                    // the same bytes, committed by another writer meanwhile
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io(&target, e)),
                }
                sync_dir(&self.blobs)?;
                index.switch_to_blob(&digest)?;
                fs::remove_file(&self.path).map_err(|e| Error::io(&self.path, e))?;
                self.index = None;
            }
        }
        self.path = PathBuf::new();
        Ok((digest, size))
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("ingest committed"))?;
        let n = file.write_at(buf, self.written)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
        if let Some(index) = self.index.as_ref().filter(|index| index.used) {
            if let Err(e) = index.forget() {
                // Store::open removes them once the file is gone
                tracing::warn!(error = %e, ingest = %index.name, "could not remove index rows");
            }
        }
    }
}

fn hash_file(file: &mut File) -> io::Result<(Digest, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Digest::from_bytes(hasher.finalize().into()), size))
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    let d = OpenOptions::new()
        .read(true)
        .open(dir)
        .map_err(|e| Error::io(dir, e))?;
    d.sync_all().map_err(|e| Error::io(dir, e))
}

/// Takes an exclusive `flock` on `file` without waiting. The lock lives as long as the file is
/// open, so a crashed writer leaves an unlocked file that [`sweep_ingest`] may remove.
fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor number, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How old a leftover must be before a sweep removes it: a writer creates its file and locks it
/// within microseconds, so a minute rules out racing one that is starting.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes ingest files that no process writes (an interrupted pull or load left them).
pub(crate) fn sweep_ingest(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > LEFTOVER_AGE);
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if old && lock_exclusive(&file).is_ok() {
            tracing::info!(path = %path.display(), "removing an interrupted ingest file");
            let _ = fs::remove_file(&path);
        }
    }
}

/// Removes scratch entries of the store's `tmp/` that no process holds (a command killed while
/// loading or copying left them): every entry made by [`Store::scratch_dir`] or
/// [`Store::scratch_file`] stays locked while its owner lives.
pub(crate) fn sweep_tmp(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > LEFTOVER_AGE);
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if old && lock_exclusive(&file).is_ok() {
            tracing::info!(path = %path.display(), "removing an abandoned scratch entry");
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
}

/// A scratch directory under the store's `tmp/`, removed when dropped. It is locked while it
/// lives, so a process killed while holding it leaves it for the next [`Store::open`] to remove.
pub struct ScratchDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl ScratchDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Store {
    /// A new scratch directory under `tmp/` whose name starts with `prefix`.
    pub fn scratch_dir(&self, prefix: &str) -> Result<ScratchDir, Error> {
        let tmp = self.tmp_dir();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let lock = File::open(dir.path()).map_err(|e| Error::io(dir.path(), e))?;
        lock_exclusive(&lock).map_err(|e| Error::io(dir.path(), e))?;
        Ok(ScratchDir { dir, _lock: lock })
    }

    /// A new scratch file under `tmp/`, removed when dropped and locked while it lives (see
    /// [`ScratchDir`]).
    pub fn scratch_file(&self) -> Result<tempfile::NamedTempFile, Error> {
        let tmp = self.tmp_dir();
        let file = tempfile::NamedTempFile::new_in(&tmp).map_err(|e| Error::io(&tmp, e))?;
        lock_exclusive(file.as_file()).map_err(|e| Error::io(file.path(), e))?;
        Ok(file)
    }
}
