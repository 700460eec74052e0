//! The OCI image-spec structures, with fields in the Go structs' order.
//!
//! Decoding ignores unknown fields and re-encoding (through [`crate::go_json`]) writes the known
//! fields only, which is what containerd's converter does when nerdctl pushes to IPFS
//! (reference/nerdctl-ipfs.md 1.3a).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

/// A pointer to a blob: media type, digest and size, and optional urls, annotations, platform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The blob's media type (Go writes it even when empty).
    #[serde(default)]
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Other places the blob can be fetched from; `ipfs://CID` in IPFS images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Free-form annotations, sorted by key as Go writes maps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Embedded blob bytes, base64, passed through untouched.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub data: String,
    /// The platform of the manifest this descriptor points at (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type of an artifact manifest.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub artifact_type: String,
}

impl Descriptor {
    /// A descriptor with only media type, digest and size.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            data: String::new(),
            platform: None,
            artifact_type: String::new(),
        }
    }

    /// The CID of the first `ipfs://` url, as nerdctl resolves it (first match wins).
    pub fn ipfs_url(&self) -> Option<&str> {
        self.urls.iter().find_map(|u| u.strip_prefix("ipfs://"))
    }
}

/// An OS and architecture an image runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in Go's words (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// OS version (Windows).
    #[serde(rename = "os.version", default, skip_serializing_if = "is_empty")]
    pub os_version: String,
    /// Required OS features (Windows).
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v8` for arm64).
    #[serde(default, skip_serializing_if = "is_empty")]
    pub variant: String,
}

impl Platform {
    /// The platform of this host, in Go's architecture words.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: architecture.to_string(),
            os: std::env::consts::OS.to_string(),
            os_version: String::new(),
            os_features: Vec::new(),
            variant: String::new(),
        }
    }

    /// Whether an index entry for `self` can run on `host` (os and architecture must match; a
    /// variant is compared only when both name one).
    pub fn matches(&self, host: &Platform) -> bool {
        self.os == host.os
            && self.architecture == host.architecture
            && (self.variant.is_empty() || host.variant.is_empty() || self.variant == host.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// A single-platform image manifest (OCI, or Docker schema 2 which has the same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: i64,
    /// The manifest's own media type; absent in some OCI manifests (umoci writes none).
    #[serde(default, skip_serializing_if = "is_empty")]
    pub media_type: String,
    /// The artifact type of an artifact manifest.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub artifact_type: String,
    /// The image config.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI, or a Docker manifest list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: i64,
    /// The index's own media type, if it states one.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub media_type: String,
    /// The artifact type of an artifact index.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub artifact_type: String,
    /// One descriptor per manifest, usually with a platform.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The parts of an image config that ferry reads (the blob itself is never re-encoded).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfig {
    /// When the image was created (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// How to run a container of the image.
    #[serde(default)]
    pub config: Option<ProcessConfig>,
    /// The uncompressed layer digests.
    #[serde(default)]
    pub rootfs: RootFs,
}

/// The `config` object of an image config: the defaults of a container's process.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessConfig {
    /// `uid`, `uid:gid`, `name` or `name:group`.
    #[serde(default)]
    pub user: Option<String>,
    /// `KEY=value` pairs.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// The executable and its first arguments.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments (or the command, with no entrypoint).
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// The process's working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// The `rootfs` object of an image config.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The digest of each layer's uncompressed tar, base first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::go_json;

    const D: &str = "sha256:80d6aec48c0a74635a5f3dc106328c1673afaa21ed6e1270a9a44de66e8ffa55";

    #[test]
    fn descriptor_encodes_in_go_field_order_and_omits_empty_fields() {
        let mut d = Descriptor::new(crate::media::OCI_INDEX, D.parse().unwrap(), 314);
        d.urls
            .push("ipfs://bafkreiea22xmjdakorrvuxz5yeddfdawoox2uipnnyjhbknejxtg5d72ku".into());
        let json = String::from_utf8(go_json::to_vec(&d).unwrap()).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"{D}\",\
                 \"size\":314,\"urls\":[\"ipfs://bafkreiea22xmjdakorrvuxz5yeddfdawoox2uipnnyjhbknejxtg5d72ku\"]}}"
            )
        );
    }

    #[test]
    fn manifest_without_media_type_stays_without_and_unknown_fields_drop() {
        let src = format!(
            "{{\"schemaVersion\":2,\"extra\":1,\"config\":{{\"mediaType\":\"x\",\"digest\":\"{D}\",\"size\":1}},\
             \"layers\":[],\"annotations\":{{\"b\":\"<&>\",\"a\":\"1\"}}}}"
        );
        let m: Manifest = serde_json::from_str(&src).unwrap();
        let out = String::from_utf8(go_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(
            out,
            format!(
                "{{\"schemaVersion\":2,\"config\":{{\"mediaType\":\"x\",\"digest\":\"{D}\",\"size\":1}},\
                 \"layers\":[],\"annotations\":{{\"a\":\"1\",\"b\":\"\\u003c\\u0026\\u003e\"}}}}"
            )
        );
    }
}
