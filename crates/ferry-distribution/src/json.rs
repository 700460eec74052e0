//! Reading manifests and indexes: size caps, media types, decoding.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use ferry_oci::media;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{ErrorKind, Fail};

/// The largest manifest, index or image config read into memory. Real ones are a few KiB;
/// the cap keeps a hostile archive or registry from making us buffer gigabytes.
pub(crate) const MAX_JSON: u64 = 4 << 20;

/// The fields that tell what kind of document a manifest or index is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versioned {
    #[serde(default)]
    schema_version: i64,
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// The media type of a manifest or index: its `mediaType` field, or, when it has none (umoci
/// and skopeo write OCI manifests without one, which the image-spec allows), the OCI type its
/// shape says: `manifests` makes an index, `config` a manifest.
pub(crate) fn media_type_of(bytes: &[u8], what: &str) -> Result<String, Fail> {
    let v: Versioned = decode(bytes, what)?;
    if v.schema_version == 1 {
        return Err(Fail::new(
            ErrorKind::Unsupported,
            format!("{what}: schema 1 manifest"),
        ));
    }
    if !v.media_type.is_empty() {
        return Ok(v.media_type);
    }
    match (v.manifests.is_some(), v.config.is_some()) {
        (true, false) => Ok(media::OCI_INDEX.to_string()),
        (false, true) => Ok(media::OCI_MANIFEST.to_string()),
        _ => Err(Fail::invalid(format!(
            "{what}: neither a manifest nor an index"
        ))),
    }
}

/// Decodes JSON, naming `what` in the error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Fail> {
    serde_json::from_slice(bytes).map_err(|e| Fail::invalid(format!("{what}: {e}")))
}

/// Reads a whole JSON file, refusing one over [`MAX_JSON`].
pub(crate) fn read_capped(path: &Path, what: &str) -> Result<Vec<u8>, Fail> {
    let file = File::open(path).map_err(|e| Fail::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Fail::io(path, e))?;
    check_size(bytes.len() as u64, what)?;
    Ok(bytes)
}

/// Refuses JSON over [`MAX_JSON`].
pub(crate) fn check_size(len: u64, what: &str) -> Result<(), Fail> {
    if len > MAX_JSON {
        return Err(Fail::invalid(format!(
            "{what}: larger than the {MAX_JSON} byte limit"
        )));
    }
    Ok(())
}

/// Reads a manifest or index of the store, refusing one over the JSON cap; a missing one is
/// named with the hint that fetches it (an index's other platforms are kept only with
/// `--all-platforms`).
pub(crate) fn read_document(
    store: &ferry_content::Store,
    d: &ferry_oci::Descriptor,
) -> Result<Vec<u8>, Fail> {
    check_size(d.size, &format!("manifest {}", d.digest))?;
    store.read_blob(&d.digest).map_err(|e| {
        let hint = match e.kind() {
            ferry_content::ErrorKind::NotFound => " (pull it with --all-platforms)",
            _ => "",
        };
        let fail = Fail::store(&d.digest, e);
        Fail::new(fail.kind, format!("{}{hint}", fail.why))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_comes_from_the_field_or_the_shape() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{}}}}"#,
            media::DOCKER_MANIFEST
        );
        let docker = docker.as_bytes();
        assert_eq!(media_type_of(docker, "m").unwrap(), media::DOCKER_MANIFEST);
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"config":{}}"#, "m").unwrap(),
            media::OCI_MANIFEST
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#, "m").unwrap(),
            media::OCI_INDEX
        );
        let e = media_type_of(br#"{"schemaVersion":1,"fsLayers":[]}"#, "manifest x").unwrap_err();
        assert_eq!(
            (e.kind, e.why.as_str()),
            (ErrorKind::Unsupported, "manifest x: schema 1 manifest")
        );
    }
}
