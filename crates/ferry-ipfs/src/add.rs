//! Adding blobs as UnixFS files: the CID index points into the blob files, so a layer's bytes
//! are stored once.

use std::io::Read;
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
    let mut file = store.open_blob(digest)?;
    let path = store.blob_path(digest);
    let mut importer = Importer::new(profile);
    let mut entries = Vec::new();
    let mut sink = |b: ImportedBlock<'_>| entries.push(entry(digest, b));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| ferry_content::Error::Io {
            path: path.clone(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        importer.write(&buf[..n], &mut sink);
    }
    let (root, _size) = importer.finish(&mut sink);
    store.put_blocks(&entries)?;
    Ok(root)
}

/// Stores `bytes` as a blob and adds it (see [`add_blob`]).
pub fn add_bytes(store: &Store, bytes: &[u8], profile: Profile) -> Result<(Digest, Cid), Error> {
    let digest = store.write_blob(bytes, None)?;
    let cid = add_blob(store, &digest, profile)?;
    Ok((digest, cid))
}

fn entry(digest: &Digest, block: ImportedBlock<'_>) -> BlockEntry {
    match block {
        ImportedBlock::Leaf { cid, offset, data } => BlockEntry {
            cid,
            location: BlockLocation::Blob {
                digest: digest.clone(),
                offset,
                length: data.len() as u64,
            },
        },
        ImportedBlock::Node { cid, data } => BlockEntry {
            cid,
            location: BlockLocation::Inline(data),
        },
    }
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
        let location = self.0.block_location(cid).map_err(std::io::Error::other)?;
        Ok(location.map(|l| match l {
            BlockLocation::Inline(data) => data.len(),
            BlockLocation::Blob { length, .. } => length as usize,
        }))
    }
}
