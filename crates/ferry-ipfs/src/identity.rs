//! The node's persistent peer identity (`ROOT/identity.key`, an Ed25519 key in libp2p's
//! protobuf encoding, readable by root only).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use libp2p::identity::Keypair;

use crate::Error;

/// Loads the key at `path`, creating a new Ed25519 key there first if there is none.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, Error> {
    let err = |why: String| Error::Identity {
        path: path.display().to_string(),
        why,
    };
    match fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(e.to_string()))?;
            // Write to a temporary name and rename, so two processes starting at once agree on
            // one identity and nobody reads a half-written key.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(&bytes)
                .and_then(|_| f.sync_all())
                .map_err(|e| err(e.to_string()))?;
            if fs::hard_link(&tmp, path).is_err() && !path.exists() {
                let _ = fs::remove_file(&tmp);
                return Err(err("cannot create the key file".into()));
            }
            let _ = fs::remove_file(&tmp);
            load_or_create_identity(path)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn identity_persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = super::load_or_create_identity(&path).unwrap();
        let b = super::load_or_create_identity(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    }
}
