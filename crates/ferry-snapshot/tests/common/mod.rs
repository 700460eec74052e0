//! Building layer tar streams for tests, including hostile ones the `tar` builder refuses.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// The mtime every test entry gets unless it sets its own.
pub const MTIME: u64 = 1_700_000_000;

/// A layer tar stream under construction.
pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Self {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// A directory owned by root with mode 0755.
    pub fn dir(self, name: &str) -> Self {
        self.entry(raw_header(name, EntryType::Directory, 0, 0o755), b"")
    }

    /// A regular file owned by root with mode 0644.
    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(
            raw_header(name, EntryType::Regular, data.len() as u64, 0o644),
            data,
        )
    }

    /// A symlink; the target is written byte for byte.
    pub fn symlink(self, name: &str, target: &str) -> Self {
        let mut header = raw_header(name, EntryType::Symlink, 0, 0o777);
        set_raw_link(&mut header, target);
        self.entry(header, b"")
    }

    /// A hardlink; the target is written byte for byte.
    pub fn hardlink(self, name: &str, target: &str) -> Self {
        let mut header = raw_header(name, EntryType::Link, 0, 0o644);
        set_raw_link(&mut header, target);
        self.entry(header, b"")
    }

    /// Any entry from a header the test prepared (see [`raw_header`]).
    pub fn entry(mut self, mut header: Header, data: &[u8]) -> Self {
        header.set_cksum();
        self.builder
            .append(&header, data)
            .expect("append to an in-memory tar");
        self
    }

    /// PAX records for the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .expect("append PAX records to an in-memory tar");
        self
    }

    /// The finished stream, end blocks included.
    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish an in-memory tar")
    }
}

/// A ustar header with `name` written straight into the name field, so names with `..` or a
/// leading `/` survive (the builder refuses them).
pub fn raw_header(name: &str, kind: EntryType, size: u64, mode: u32) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    let slot = &mut header.as_old_mut().name;
    assert!(
        name.len() <= slot.len(),
        "test name {name:?} too long for a ustar header"
    );
    slot.fill(0);
    slot[..name.len()].copy_from_slice(name.as_bytes());
    header
}

/// Write a link name straight into the header.
pub fn set_raw_link(header: &mut Header, target: &str) {
    let slot = &mut header.as_old_mut().linkname;
    assert!(
        target.len() <= slot.len(),
        "test link {target:?} too long for a ustar header"
    );
    slot.fill(0);
    slot[..target.len()].copy_from_slice(target.as_bytes());
}

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An error and all its sources, joined with ": " as the CLI prints them.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
