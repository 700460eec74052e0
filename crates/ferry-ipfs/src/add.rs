//! Adding blobs as UnixFS files: the CID index points into the blob files, so a layer's bytes
//! are stored once.

use std::io::{Read, Write};
use std::sync::Arc;

use cid::Cid;
use ferry_content::{BlockEntry, BlockLocation, Store};
use ferry_oci::Digest;
use ferry_unixfs::{ImportedBlock, Importer, Profile};

use crate::Error;

/// Imports the stored blob `digest` as a UnixFS file with `profile` and indexes its blocks.
/// Returns the file's root CID, which is what `ipfs add --cid-version=1` prints for the same
/// bytes. Blocking: call it from a blocking context.
pub fn add_blob(store: &Store, digest: &Digest, profile: Profile) -> Result<Cid, Error> {
    let file = store.open_blob(digest)?;
    let (cid, _) = import(store, file, Target::Existing(digest.clone()), profile)?;
    Ok(cid)
}

/// Adds the regular file at `path`: copied into a new blob inside the kernel, then imported
/// from the blob (faster than one pass through user memory where writes are the cost).
/// Returns the root CID and the blob's digest. Blocking.
pub fn add_file(
    store: &Store,
    path: &std::path::Path,
    profile: Profile,
) -> Result<(Cid, Digest), Error> {
    let mut src =
        std::fs::File::open(path).map_err(|e| Error::Node(format!("{}: {e}", path.display())))?;
    let mut ingest = store.ingest()?;
    ingest.copy_from(&mut src)?;
    let (digest, _) = ingest.commit(None)?;
    let cid = add_blob(store, &digest, profile)?;
    Ok((cid, digest))
}

/// Adds what `reader` yields as a UnixFS file in one pass: the bytes go into a new blob while the
/// importer hashes the chunks. Returns the root CID and the blob's digest. Blocking.
pub fn add_reader(
    store: &Store,
    reader: impl Read,
    profile: Profile,
) -> Result<(Cid, Digest), Error> {
    import(store, reader, Target::New(store.ingest()?), profile)
}

/// Where the imported bytes are: a blob already stored, or a new one being written.
enum Target {
    Existing(Digest),
    New(ferry_content::Ingest),
}

fn import(
    store: &Store,
    mut reader: impl Read,
    mut target: Target,
    profile: Profile,
) -> Result<(Cid, Digest), Error> {
    let mut importer = Importer::new(profile);
    let mut leaves = Vec::new();
    let mut nodes = Vec::new();
    let mut sink = |b: ImportedBlock<'_>| match b {
        ImportedBlock::Leaf { cid, offset, data } => leaves.push((cid, offset, data.len() as u64)),
        ImportedBlock::Node { cid, data } => nodes.push(BlockEntry {
            cid,
            location: BlockLocation::Inline(data),
        }),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::Node(format!("read: {e}")))?;
        if n == 0 {
            break;
        }
        if let Target::New(ingest) = &mut target {
            ingest
                .write_all(&buf[..n])
                .map_err(|e| Error::Node(format!("write blob: {e}")))?;
        }
        importer.write(&buf[..n], &mut sink);
    }
    let (root, _size) = importer.finish(&mut sink);
    let digest = match target {
        Target::New(ingest) => ingest.commit(None)?.0,
        Target::Existing(digest) => digest,
    };
    index_file(store, root, &digest, nodes, leaves)?;
    Ok((root, digest))
}

/// Records a stored UnixFS file: its nodes' bytes (`inline`), its raw leaves as ranges
/// (`cid, offset, length`) of blob `digest`, and that `root` is that blob whole.
pub(crate) fn index_file(
    store: &Store,
    root: Cid,
    digest: &Digest,
    inline: Vec<BlockEntry>,
    leaves: Vec<(Cid, u64, u64)>,
) -> Result<(), Error> {
    let mut entries = inline;
    entries.extend(leaves.into_iter().map(|(cid, offset, length)| BlockEntry {
        cid,
        location: BlockLocation::Blob {
            digest: digest.clone(),
            offset,
            length,
        },
    }));
    store.put_blocks(&entries)?;
    store.put_file(&root, digest)?;
    Ok(())
}

/// Stores `bytes` as a blob and adds it (see [`add_blob`]).
pub fn add_bytes(store: &Store, bytes: &[u8], profile: Profile) -> Result<(Digest, Cid), Error> {
    let digest = store.write_blob(bytes, None)?;
    let cid = add_blob(store, &digest, profile)?;
    Ok((digest, cid))
}

/// The content store seen as a Bitswap blockstore.
pub struct StoreBlocks(pub Arc<Store>);

impl ferry_bitswap::Blockstore for StoreBlocks {
    fn get(&self, cid: &Cid) -> std::io::Result<Option<Vec<u8>>> {
        self.0.get_block(cid).map_err(std::io::Error::other)
    }

    fn has(&self, cid: &Cid) -> std::io::Result<bool> {
        self.0.has_block(cid).map_err(std::io::Error::other)
    }

    fn size(&self, cid: &Cid) -> std::io::Result<Option<usize>> {
        self.0.block_size(cid).map_err(std::io::Error::other)
    }
}
