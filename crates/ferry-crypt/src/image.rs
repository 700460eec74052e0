//! Whole images: encrypt every layer of the chosen platforms into new blobs and bind the result
//! as a new image (imgcrypt `images/encryption/encryption.go`), decrypt back, and open one
//! encrypted layer as a plaintext stream for unpacking.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ferry_content::Store;
use ferry_oci::{go_json, media, Descriptor, Index, Manifest, Platform};

use crate::cipher::{self, DecryptReader, EncryptReader, PrivateOptions};
use crate::keys::{self, KeySpec, PrivateKey, PublicKey};
use crate::{jwe, Error};

/// The annotation holding the JWE-wrapped private options.
pub const ANNOTATION_JWE: &str = "org.opencontainers.image.enc.keys.jwe";
/// The annotation holding the public options.
pub const ANNOTATION_PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
/// The prefix of every ocicrypt annotation (all removed on decrypt).
const ANNOTATION_PREFIX: &str = "org.opencontainers.image.enc.";
/// The media type suffix of an encrypted layer.
const ENCRYPTED: &str = "+encrypted";

/// Someone an image is encrypted for (`--recipient jwe:FILE`).
#[derive(Clone, Debug)]
pub enum Recipient {
    /// A JWE recipient's public key.
    Jwe(PublicKey),
}

impl Recipient {
    /// Parses `SCHEME:FILE`, reading the key file.
    pub fn parse(spec: &str) -> Result<Recipient, Error> {
        match spec.split_once(':') {
            Some(("jwe", file)) => Ok(Recipient::Jwe(keys::load_public_key(Path::new(file))?)),
            // TODO: pkcs7 (X.509, CMS EnvelopedData) and pgp recipients, issue 7 items 5.
            Some((scheme @ ("pkcs7" | "pgp" | "pkcs11" | "provider"), _)) => {
                Err(Error::Invalid(format!(
                    "recipient {spec}: {scheme} recipients are not supported yet (use jwe:FILE)"
                )))
            }
            _ => Err(Error::Invalid(format!(
                "recipient {spec}: expected SCHEME:FILE, as jwe:key.pub.pem"
            ))),
        }
    }
}

/// The private keys available to decrypt, with where they were looked for.
#[derive(Default)]
pub struct KeyRing {
    keys: Vec<(PathBuf, PrivateKey)>,
    searched: Vec<PathBuf>,
}

impl KeyRing {
    /// Loads the keys named on the command line (any failure is an error) and every key file
    /// in `dirs` (a file that is not a usable key is skipped with a warning).
    pub fn load(specs: &[KeySpec], dirs: &[PathBuf]) -> Result<KeyRing, Error> {
        let mut ring = KeyRing::default();
        for spec in specs {
            let password = spec.password.as_ref().map(|p| p.as_str());
            let key = keys::load_private_key(&spec.path, password)?;
            ring.keys.push((spec.path.clone(), key));
        }
        for dir in dirs {
            ring.searched.push(dir.clone());
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths.into_iter().filter(|p| p.is_file()) {
                match keys::load_private_key(&path, None) {
                    Ok(key) => ring.keys.push((path, key)),
                    Err(e) => tracing::warn!("skipping {e}"),
                }
            }
        }
        Ok(ring)
    }

    /// Whether no key was found.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn private_keys(&self) -> Vec<PrivateKey> {
        self.keys.iter().map(|(_, k)| k.clone()).collect()
    }

    /// What was tried, for the error naming a layer no key opens.
    fn describe(&self) -> String {
        if self.keys.is_empty() {
            let dirs: Vec<String> = self
                .searched
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            return format!(
                "no key: none given with --key, none found in {}",
                dirs.join(" or ")
            );
        }
        let kinds: Vec<&str> = self
            .keys
            .iter()
            .map(|(_, k)| match k {
                PrivateKey::Rsa(_) => "RSA",
                PrivateKey::P256(_) => "EC P-256",
                PrivateKey::P384(_) => "EC P-384",
                PrivateKey::P521(_) => "EC P-521",
            })
            .collect();
        format!("{} jwe key(s): {}", kinds.len(), kinds.join(", "))
    }
}

/// Whether a layer descriptor is encrypted (its media type ends in `+encrypted`).
pub fn is_encrypted(layer: &Descriptor) -> bool {
    layer.media_type.ends_with(ENCRYPTED)
}

/// Encrypts the layers of `target`'s manifests for `platform` (all platforms when `None`) and
/// stores the new manifests (and index); returns the new top descriptor. Other platforms are
/// left out of the result, as nerdctl does.
pub fn encrypt_image(
    store: &Store,
    target: &Descriptor,
    recipients: &[Recipient],
    platform: Option<&Platform>,
) -> Result<Descriptor, Error> {
    if recipients.is_empty() {
        return Err(Error::Invalid(
            "encrypt needs at least one --recipient".into(),
        ));
    }
    let jwe_keys: Vec<PublicKey> = recipients
        .iter()
        .map(|Recipient::Jwe(k)| k.clone())
        .collect();
    convert_image(store, target, platform, &mut |layer| {
        encrypt_layer(store, layer, &jwe_keys)
    })
}

/// Decrypts every encrypted layer of `target`'s manifests for `platform` (all when `None`);
/// returns the new top descriptor. The plaintext blobs are verified against the digest in each
/// layer's private options before they are stored.
pub fn decrypt_image(
    store: &Store,
    target: &Descriptor,
    keys: &KeyRing,
    platform: Option<&Platform>,
) -> Result<Descriptor, Error> {
    convert_image(store, target, platform, &mut |layer| {
        if is_encrypted(layer) {
            decrypt_layer(store, layer, keys)
        } else {
            Ok(layer.clone())
        }
    })
}

/// Opens a stored layer for unpacking: the blob itself, or, when it is encrypted, its
/// plaintext, after the whole ciphertext was checked against its digest and HMAC.
pub fn open_layer(
    store: &Store,
    layer: &Descriptor,
    keys: &KeyRing,
) -> Result<Box<dyn Read + Send>, Error> {
    let blob = BufReader::new(store.open_blob_verified(&layer.digest)?);
    if !is_encrypted(layer) {
        return Ok(Box::new(blob));
    }
    let (opts, hmac) = layer_options(layer, keys)?;
    // Two passes: authenticate the whole blob, then decrypt. A single streaming pass would hand
    // altered plaintext to the decompressor, which then fails first with a confusing error.
    cipher::authenticate(blob, &opts, &hmac)?;
    let file = BufReader::new(store.open_blob(&layer.digest)?);
    Ok(Box::new(DecryptReader::authenticated(file, &opts)))
}

type LayerFn<'a> = dyn FnMut(&Descriptor) -> Result<Descriptor, Error> + 'a;

fn convert_image(
    store: &Store,
    target: &Descriptor,
    platform: Option<&Platform>,
    layer_fn: &mut LayerFn<'_>,
) -> Result<Descriptor, Error> {
    if media::is_manifest(&target.media_type) {
        return convert_manifest(store, target, layer_fn);
    }
    if !media::is_index(&target.media_type) {
        return Err(Error::Invalid(format!(
            "{} is neither an image index nor a manifest ({})",
            target.digest, target.media_type
        )));
    }
    let mut index: Index = read_json(store, &target.digest, "index")?;
    let mut manifests = Vec::new();
    for desc in &index.manifests {
        let wanted = match (platform, &desc.platform) {
            (None, _) | (Some(_), None) => true,
            (Some(want), Some(have)) => have.matches(want),
        };
        if wanted && media::is_manifest(&desc.media_type) {
            manifests.push(convert_manifest(store, desc, layer_fn)?);
        }
    }
    if manifests.is_empty() {
        let which = platform.map_or("any platform".to_string(), |p| p.to_string());
        return Err(Error::Invalid(format!("image has no manifest for {which}")));
    }
    index.manifests = manifests;
    index.media_type = media::OCI_INDEX.to_string();
    write_json(store, &index, target, media::OCI_INDEX)
}

fn convert_manifest(
    store: &Store,
    desc: &Descriptor,
    layer_fn: &mut LayerFn<'_>,
) -> Result<Descriptor, Error> {
    let mut manifest: Manifest = read_json(store, &desc.digest, "manifest")?;
    for layer in &mut manifest.layers {
        *layer = layer_fn(layer)?;
    }
    // Docker schema 2 has no layer annotations: the result is always an OCI manifest.
    manifest.media_type = media::OCI_MANIFEST.to_string();
    manifest.config.media_type = media::to_oci(&manifest.config.media_type).to_string();
    write_json(store, &manifest, desc, media::OCI_MANIFEST)
}

fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    digest: &ferry_oci::Digest,
    what: &str,
) -> Result<T, Error> {
    serde_json::from_slice(&store.read_blob(digest)?)
        .map_err(|e| Error::Invalid(format!("{what} {digest}: {e}")))
}

fn write_json<T: serde::Serialize>(
    store: &Store,
    value: &T,
    old: &Descriptor,
    media_type: &str,
) -> Result<Descriptor, Error> {
    let bytes = go_json::to_vec(value).map_err(|e| Error::Invalid(e.to_string()))?;
    let digest = store.write_blob(&bytes, None)?;
    let mut desc = Descriptor::new(media_type, digest, bytes.len() as u64);
    desc.platform = old.platform.clone();
    desc.annotations = old.annotations.clone();
    Ok(desc)
}

/// The encrypted media type for a layer type (`spec/spec.go`; Docker types mapped to OCI).
fn encrypted_type(media_type: &str) -> Result<String, Error> {
    let oci = media::to_oci(media_type);
    let known = oci.starts_with("application/vnd.oci.image.layer.")
        || oci == "application/vnd.wasm.content.layer.v1+wasm";
    if !known {
        return Err(Error::Invalid(format!(
            "cannot encrypt a layer of type {media_type}"
        )));
    }
    Ok(format!("{oci}{ENCRYPTED}"))
}

fn encrypt_layer(
    store: &Store,
    layer: &Descriptor,
    recipients: &[PublicKey],
) -> Result<Descriptor, Error> {
    if is_encrypted(layer) {
        return Err(Error::Invalid(format!(
            "layer {} is already encrypted",
            layer.digest
        )));
    }
    let media_type = encrypted_type(&layer.media_type)?;
    let opts = PrivateOptions::generate(layer.digest.clone())?;
    let blob = BufReader::new(store.open_blob_verified(&layer.digest)?);
    let mut reader = EncryptReader::new(blob, &opts);
    let mut ingest = store.ingest()?;
    io::copy(&mut reader, &mut ingest).map_err(|source| Error::Io {
        what: format!("encrypt layer {}", layer.digest),
        source,
    })?;
    let hmac = reader.finish();
    let (digest, size) = ingest.commit(None)?;
    tracing::debug!(plain = %layer.digest, encrypted = %digest, size, "encrypted layer");

    let wrapped = jwe::wrap(recipients, &opts.to_json())?;
    let mut desc = Descriptor::new(&media_type, digest, size);
    desc.annotations = layer.annotations.clone();
    desc.annotations
        .insert(ANNOTATION_JWE.into(), B64.encode(wrapped));
    desc.annotations
        .insert(ANNOTATION_PUBOPTS.into(), cipher::public_options(&hmac));
    // The old urls (ipfs://) name the plaintext blob: never carry them over.
    Ok(desc)
}

fn decrypt_layer(store: &Store, layer: &Descriptor, keys: &KeyRing) -> Result<Descriptor, Error> {
    let (opts, hmac) = layer_options(layer, keys)?;
    let blob = BufReader::new(store.open_blob_verified(&layer.digest)?);
    let mut reader = DecryptReader::new(blob, &opts, hmac);
    let mut ingest = store.ingest()?;
    io::copy(&mut reader, &mut ingest).map_err(|source| Error::Io {
        what: format!("decrypt layer {}", layer.digest),
        source,
    })?;
    // CTR keeps the length: the plaintext is as long as the ciphertext.
    let (digest, size) = ingest.commit(Some((&opts.digest, layer.size)))?;
    let media_type = layer.media_type.trim_end_matches(ENCRYPTED);
    let mut desc = Descriptor::new(media_type, digest, size);
    desc.annotations = layer.annotations.clone();
    desc.annotations
        .retain(|k, _| !k.starts_with(ANNOTATION_PREFIX));
    Ok(desc)
}

/// The private options (unwrapped with the first key that opens one of the layer's JWEs) and
/// the HMAC from the public options.
fn layer_options(layer: &Descriptor, keys: &KeyRing) -> Result<(PrivateOptions, [u8; 32]), Error> {
    let pubopts = layer.annotations.get(ANNOTATION_PUBOPTS).ok_or_else(|| {
        Error::Format(format!(
            "layer {} has no {ANNOTATION_PUBOPTS}",
            layer.digest
        ))
    })?;
    let hmac = cipher::parse_public_options(pubopts)?;
    let private_keys = keys.private_keys();
    let mut algs = Vec::new();
    if let Some(value) = layer.annotations.get(ANNOTATION_JWE) {
        for entry in value.split(',').filter(|e| !e.is_empty()) {
            let text = B64.decode(entry.trim()).map_err(|_| {
                Error::Format(format!(
                    "layer {}: {ANNOTATION_JWE} is not base64",
                    layer.digest
                ))
            })?;
            algs.extend(jwe::recipient_algs(&text));
            if let Some(json) = jwe::unwrap(&text, &private_keys)? {
                return Ok((PrivateOptions::from_json(&json)?, hmac));
            }
        }
    }
    let mut wrapped: Vec<String> = layer
        .annotations
        .keys()
        .filter_map(|k| k.strip_prefix("org.opencontainers.image.enc.keys."))
        .map(|scheme| match scheme {
            "jwe" => format!("jwe recipients ({})", algs.join(", ")),
            other => format!("{other} recipients"),
        })
        .collect();
    if wrapped.is_empty() {
        wrapped.push("no wrapped keys".into());
    }
    Err(Error::NoKey {
        layer: layer.digest.clone(),
        tried: keys.describe(),
        wrapped: wrapped.join(", "),
    })
}
