//! The first pass of the builder: the layer's tar stream is spooled to a file while its
//! headers are read, so the second pass can write the entries in any order with their header
//! blocks copied byte for byte (PAX and GNU long-name records included).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use tar::{EntryType, Header};

use crate::{Error, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_NAME};

const BLOCK: u64 = 512;
/// The most PAX and GNU long-name record bytes accepted for one entry (they hold names and
/// xattrs); more is refused as a hostile layer.
const MAX_EXTENSION: u64 = 1 << 20;

/// One tar entry as it lies in the spool file.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    /// Where its first block (an extension header, or the header itself) starts.
    pub start: u64,
    /// Where its payload starts (the end of its header blocks).
    pub payload_at: u64,
    /// Payload bytes (without the padding to the next block).
    pub size: u64,
    /// What the TOC says about it.
    pub meta: Meta,
}

/// An entry's fields after its PAX and GNU records are applied, as Go's tar reader gives them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Meta {
    pub name: String,
    pub kind: &'static str,
    pub link_name: String,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub user_name: String,
    pub group_name: String,
    /// Seconds since the epoch, rounded to the second.
    pub mtime: i64,
    pub dev_major: i64,
    pub dev_minor: i64,
    pub xattrs: std::collections::BTreeMap<String, Vec<u8>>,
}

/// The spooled entries in tar order; an entry whose name comes again later is left out and the
/// later one kept at its own place (stargz-snapshotter's builder does the same).
pub(crate) struct Scanned {
    pub items: Vec<Item>,
}

/// `name` without `./`, leading or doubled slashes and `.`/`..` steps, as Go's
/// `path.Clean("/" + name)` without the leading slash.
pub(crate) fn clean_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Reads the tar stream `input` up to its end blocks, copying it to `spool`. Earlier layers'
/// landmarks and TOC are dropped (the builder writes its own).
pub(crate) fn scan<R: Read, W: Write>(input: R, spool: W) -> Result<Scanned, Error> {
    let mut reader = Spooler {
        input,
        spool,
        pos: 0,
    };
    let mut items: Vec<Option<Item>> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut pending = Pending::default();
    let mut start = 0;
    loop {
        let mut block = [0u8; BLOCK as usize];
        if !reader.block(&mut block)? {
            break;
        }
        if block.iter().all(|b| *b == 0) {
            break;
        }
        let header = Header::from_byte_slice(&block);
        check_sum(&block, reader.pos - BLOCK)?;
        let size = header
            .entry_size()
            .map_err(|e| bad(reader.pos, &format!("size field: {e}")))?;
        let kind = header.entry_type();
        let extension = [
            EntryType::XHeader,
            EntryType::XGlobalHeader,
            EntryType::GNULongName,
            EntryType::GNULongLink,
        ];
        if extension.contains(&kind) {
            pending.bytes += size;
            if pending.bytes > MAX_EXTENSION {
                let why = format!("more than {MAX_EXTENSION} bytes of extension records");
                return Err(bad(reader.pos, &why));
            }
            let data = reader.payload(size)?;
            pending.apply(kind, &data, reader.pos)?;
            continue;
        }

        let (meta, pax_size) = pending.take().meta(header, kind, reader.pos)?;
        // Go's reader gives header-only types (links, dirs, devices) no payload whatever
        // their size field says.
        let size = match meta.kind {
            "reg" => pax_size.unwrap_or(size),
            _ => 0,
        };
        let payload_at = reader.pos;
        reader.skip(padded(size))?;
        let item = Item {
            start,
            payload_at,
            size,
            meta,
        };
        start = reader.pos;
        let clean = clean_name(&item.meta.name);
        if clean == TOC_NAME || clean == PREFETCH_LANDMARK || clean == NO_PREFETCH_LANDMARK {
            continue;
        }
        if let Some(earlier) = by_name.insert(clean, items.len()) {
            items[earlier] = None;
        }
        items.push(Some(item));
    }
    reader
        .spool
        .flush()
        .map_err(|e| Error::Io(format!("write the spool file: {e}")))?;
    Ok(Scanned {
        items: items.into_iter().flatten().collect(),
    })
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

fn bad(at: u64, why: &str) -> Error {
    Error::Tar(format!("at byte {at}: {why}"))
}

/// The header checksum: the byte sum with the checksum field counted as spaces.
fn check_sum(block: &[u8; BLOCK as usize], at: u64) -> Result<(), Error> {
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let want = u64::from_str_radix(text.trim(), 8)
        .map_err(|_| bad(at, "the header's checksum is not octal (not a tar stream?)"))?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u64
            }
        })
        .sum();
    if sum != want {
        return Err(bad(at, "header checksum mismatch (not a tar stream?)"));
    }
    Ok(())
}

/// PAX and GNU records waiting for the header they apply to.
#[derive(Default)]
struct Pending {
    /// Record bytes read for the coming entry.
    bytes: u64,
    pax: Vec<(String, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn apply(&mut self, kind: EntryType, data: &[u8], at: u64) -> Result<(), Error> {
        match kind {
            EntryType::GNULongName => self.long_name = Some(until_nul(data).to_vec()),
            EntryType::GNULongLink => self.long_link = Some(until_nul(data).to_vec()),
            // Global records are kept in the stream but not applied (Go's reader refuses them
            // in a layer; no known producer writes them).
            EntryType::XGlobalHeader => {}
            _ => {
                for record in tar::PaxExtensions::new(data) {
                    let record = record.map_err(|e| bad(at, &format!("PAX record: {e}")))?;
                    let key = record.key().map_err(|_| bad(at, "PAX key is not UTF-8"))?;
                    self.pax
                        .push((key.to_string(), record.value_bytes().to_vec()));
                }
            }
        }
        Ok(())
    }

    fn take(&mut self) -> Pending {
        std::mem::take(self)
    }

    /// The entry's fields (the header's, overridden by PAX records and GNU long names) and the
    /// PAX size when there is one.
    fn meta(self, header: &Header, kind: EntryType, at: u64) -> Result<(Meta, Option<u64>), Error> {
        // An empty numeric field is 0, as Go's reader takes it.
        let raw = header.as_bytes();
        let num = |what: &str, range: std::ops::Range<usize>, v: io::Result<u64>| {
            v.or_else(|e| match raw[range].iter().all(|b| *b == 0 || *b == b' ') {
                true => Ok(0),
                false => Err(bad(at, &format!("{what} field: {e}"))),
            })
        };
        let mut name = match self.long_name {
            Some(n) => n,
            None => header.path_bytes().into_owned(),
        };
        let mut link = match self.long_link {
            Some(l) => l,
            None => header.link_name_bytes().unwrap_or_default().into_owned(),
        };
        let mut meta = Meta {
            mode: num("mode", 100..108, header.mode().map(u64::from))? as i64,
            uid: num("uid", 108..116, header.uid())? as i64,
            gid: num("gid", 116..124, header.gid())? as i64,
            mtime: num("mtime", 136..148, header.mtime())? as i64,
            user_name: text(header.username_bytes().unwrap_or_default()),
            group_name: text(header.groupname_bytes().unwrap_or_default()),
            ..Meta::default()
        };
        let number = |v: &[u8], key: &str| -> Result<i64, Error> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(at, &format!("PAX {key} is not a number")))
        };
        let mut pax_size = None;
        for (key, value) in self.pax {
            match key.as_str() {
                "path" => name = value,
                "linkpath" => link = value,
                "uid" => meta.uid = number(&value, "uid")?,
                "gid" => meta.gid = number(&value, "gid")?,
                "uname" => meta.user_name = text(&value),
                "gname" => meta.group_name = text(&value),
                "mtime" => meta.mtime = pax_time(&value).ok_or_else(|| bad(at, "PAX mtime"))?,
                "size" => pax_size = Some(number(&value, "size")?.max(0) as u64),
                k => {
                    if let Some(attr) = k.strip_prefix("SCHILY.xattr.") {
                        meta.xattrs.insert(attr.to_string(), value);
                    }
                }
            }
        }
        meta.name = String::from_utf8(name).map_err(|_| bad(at, "entry name is not UTF-8"))?;
        meta.link_name = String::from_utf8(link).map_err(|_| bad(at, "link name is not UTF-8"))?;
        meta.kind = match kind {
            EntryType::Regular | EntryType::Continuous if meta.name.ends_with('/') => "dir",
            EntryType::Regular | EntryType::Continuous => "reg",
            EntryType::Link => "hardlink",
            EntryType::Symlink => "symlink",
            EntryType::Directory => "dir",
            EntryType::Char => "char",
            EntryType::Block => "block",
            EntryType::Fifo => "fifo",
            other => {
                let why = format!("unsupported tar entry type {:?}", other.as_byte() as char);
                return Err(bad(at, &why));
            }
        };
        if matches!(meta.kind, "char" | "block") {
            meta.dev_major = header.device_major().ok().flatten().unwrap_or(0) as i64;
            meta.dev_minor = header.device_minor().ok().flatten().unwrap_or(0) as i64;
        }
        Ok((meta, pax_size))
    }
}

fn until_nul(data: &[u8]) -> &[u8] {
    data.split(|b| *b == 0).next().unwrap_or_default()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(until_nul(bytes)).into_owned()
}

/// A PAX time (`seconds[.fraction]`) rounded to the second, as the TOC writes it.
fn pax_time(value: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(value).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let half_up = frac.bytes().next().is_some_and(|d| d >= b'5');
    Some(if half_up && secs >= 0 { secs + 1 } else { secs })
}

/// Reads blocks from the input and copies every byte read to the spool.
struct Spooler<R, W> {
    input: R,
    spool: W,
    pos: u64,
}

impl<R: Read, W: Write> Spooler<R, W> {
    /// The next block, or `false` at a clean end of the stream (no end blocks).
    fn block(&mut self, block: &mut [u8; BLOCK as usize]) -> Result<bool, Error> {
        let mut filled = 0;
        while filled < block.len() {
            match self.input.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(bad(self.pos, "the tar stream ends inside a header")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(format!("read the layer: {e}"))),
            }
        }
        self.write(block)?;
        Ok(true)
    }

    /// The next `size` bytes (plus padding, copied but not returned).
    fn payload(&mut self, size: u64) -> Result<Vec<u8>, Error> {
        let mut data = Vec::with_capacity(size as usize);
        (&mut self.input)
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| Error::Io(format!("read the layer: {e}")))?;
        if data.len() as u64 != size {
            return Err(bad(self.pos, "the tar stream ends inside an entry"));
        }
        self.write(&data)?;
        self.skip(padded(size) - size)?;
        Ok(data)
    }

    /// Copies `n` bytes to the spool without keeping them.
    fn skip(&mut self, n: u64) -> Result<(), Error> {
        let copied = io::copy(&mut (&mut self.input).take(n), &mut self.spool)
            .map_err(|e| Error::Io(format!("copy the layer to the spool file: {e}")))?;
        self.pos += copied;
        if copied != n {
            return Err(bad(self.pos, "the tar stream ends inside an entry"));
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.spool
            .write_all(bytes)
            .map_err(|e| Error::Io(format!("write the spool file: {e}")))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_as_go_does() {
        assert_eq!(clean_name("./usr/bin/"), "usr/bin");
        assert_eq!(clean_name("/a//b/../c"), "a/c");
        assert_eq!(clean_name("./"), "");
    }

    #[test]
    fn pax_times_round_to_the_second() {
        assert_eq!(pax_time(b"1700000000.5"), Some(1700000001));
        assert_eq!(pax_time(b"1700000000.49"), Some(1700000000));
        assert_eq!(pax_time(b"12"), Some(12));
    }
}
