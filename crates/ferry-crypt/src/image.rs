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
use crate::keys::{self, KeyMaterial, KeySpec, PrivateKey, PublicKey};
use crate::{jwe, openpgp, pkcs7, Error};

/// The annotation holding the JWE-wrapped private options.
pub const ANNOTATION_JWE: &str = "org.opencontainers.image.enc.keys.jwe";
/// The annotation holding the PKCS#7 (CMS EnvelopedData) wrapped private options.
pub const ANNOTATION_PKCS7: &str = "org.opencontainers.image.enc.keys.pkcs7";
/// The annotation holding the OpenPGP-wrapped private options.
pub const ANNOTATION_PGP: &str = "org.opencontainers.image.enc.keys.pgp";
/// The annotation holding the public options.
pub const ANNOTATION_PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
/// The prefix of every ocicrypt annotation (all removed on decrypt).
const ANNOTATION_PREFIX: &str = "org.opencontainers.image.enc.";
/// The media type suffix of an encrypted layer.
const ENCRYPTED: &str = "+encrypted";

/// Someone an image is encrypted for (`--recipient SCHEME:FILE`).
#[derive(Clone, Debug)]
pub enum Recipient {
    /// A JWE recipient's public key (`jwe:FILE`).
    Jwe(PublicKey),
    /// A PKCS#7 recipient's X.509 certificate (`pkcs7:FILE`).
    Pkcs7(Box<pkcs7::Certificate>),
    /// An OpenPGP recipient's public keys (`pgp:FILE`, a key or keyring file, or `pgp:NAME`
    /// looked up with `gpg --export`).
    Pgp(Vec<openpgp::PublicKey>),
}

impl Recipient {
    /// Parses `SCHEME:FILE`, reading the key file; `gpg_homedir` is where `pgp:NAME` is
    /// looked up when NAME is not a file (gpg's default home when `None`).
    pub fn parse(spec: &str, gpg_homedir: Option<&Path>) -> Result<Recipient, Error> {
        match spec.split_once(':') {
            Some(("jwe", file)) => Ok(Recipient::Jwe(keys::load_public_key(Path::new(file))?)),
            Some(("pkcs7", file)) => Ok(Recipient::Pkcs7(Box::new(keys::load_certificate(
                Path::new(file),
            )?))),
            Some(("pgp", name)) if Path::new(name).is_file() => {
                Ok(Recipient::Pgp(keys::load_pgp_public_keys(Path::new(name))?))
            }
            Some(("pgp", name)) if !name.is_empty() => {
                Ok(Recipient::Pgp(gpg_export(name, gpg_homedir)?))
            }
            // TODO: pkcs11 and keyprovider recipients need a PKCS#11 module or a key provider
            // daemon; nothing here uses them yet.
            Some((scheme @ ("pkcs11" | "provider"), _)) => Err(Error::Invalid(format!(
                "recipient {spec}: {scheme} recipients are not supported (use jwe:, pkcs7: or pgp:)"
            ))),
            _ => Err(Error::Invalid(format!(
                "recipient {spec}: expected SCHEME:FILE, as jwe:key.pub.pem, pkcs7:cert.pem or pgp:key.asc"
            ))),
        }
    }
}

/// The public keys gpg has for `name` (as ocicrypt finds `pgp:` recipients).
fn gpg_export(name: &str, homedir: Option<&Path>) -> Result<Vec<openpgp::PublicKey>, Error> {
    let mut gpg = std::process::Command::new("gpg");
    if let Some(dir) = homedir {
        gpg.arg("--homedir").arg(dir);
    }
    let out = gpg
        .args(["--batch", "--export", name])
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Error::Invalid(format!(
                "recipient pgp:{name}: not a file, and gpg cannot be run to look it up: {e}"
            ))
        })?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(Error::Invalid(format!(
            "recipient pgp:{name}: not a file, and gpg has no public key for it"
        )));
    }
    openpgp::parse_public_keys(&out.stdout)
        .map_err(|reason| Error::Invalid(format!("recipient pgp:{name}: gpg's key {reason}")))
}

/// The keys available to decrypt, with where they were looked for.
#[derive(Default)]
pub struct KeyRing {
    keys: Vec<(PathBuf, PrivateKey)>,
    certs: Vec<(PathBuf, pkcs7::Certificate)>,
    pgp: Vec<(PathBuf, openpgp::SecretKey)>,
    searched: Vec<PathBuf>,
}

impl KeyRing {
    /// Loads the keys named on the command line (any failure is an error) and every key file
    /// in `dirs` (a file that is not a usable key is skipped with a warning). A key file may
    /// hold a private key (PEM, DER or JWK), OpenPGP secret keys, or an X.509 certificate
    /// naming a pkcs7 recipient.
    pub fn load(specs: &[KeySpec], dirs: &[PathBuf]) -> Result<KeyRing, Error> {
        let mut ring = KeyRing::default();
        for spec in specs {
            let password = spec.password.as_ref().map(|p| p.as_str());
            let material = keys::load_key_file(&spec.path, password)?;
            ring.add(&spec.path, material);
        }
        for dir in dirs {
            ring.searched.push(dir.clone());
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths.into_iter().filter(|p| p.is_file()) {
                match keys::load_key_file(&path, None) {
                    Ok(material) => ring.add(&path, material),
                    Err(e) => tracing::warn!("skipping {e}"),
                }
            }
        }
        Ok(ring)
    }

    /// Adds the certificates of pkcs7 recipients (`--dec-recipient pkcs7:FILE`), which tell
    /// which recipient of a layer a private key is.
    pub fn add_certificates(&mut self, paths: &[PathBuf]) -> Result<(), Error> {
        for path in paths {
            let cert = keys::load_certificate(path)?;
            self.certs.push((path.clone(), cert));
        }
        Ok(())
    }

    fn add(&mut self, path: &Path, material: KeyMaterial) {
        let path = path.to_path_buf();
        match material {
            KeyMaterial::Private(key) => self.keys.push((path, key)),
            KeyMaterial::Certificate(cert) => self.certs.push((path, *cert)),
            KeyMaterial::Pgp(keys) => self.pgp.extend(keys.into_iter().map(|k| (path.clone(), k))),
        }
    }

    /// Whether no key was found.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.pgp.is_empty()
    }

    fn private_keys(&self) -> Vec<PrivateKey> {
        self.keys.iter().map(|(_, k)| k.clone()).collect()
    }

    fn rsa_keys(&self) -> Vec<&rsa::PrivateKey> {
        self.keys
            .iter()
            .filter_map(|(_, k)| match k {
                PrivateKey::Rsa(k) => Some(&**k),
                _ => None,
            })
            .collect()
    }

    fn certificates(&self) -> Vec<pkcs7::Certificate> {
        self.certs.iter().map(|(_, c)| c.clone()).collect()
    }

    fn pgp_keys(&self) -> Vec<openpgp::SecretKey> {
        self.pgp.iter().map(|(_, k)| k.clone()).collect()
    }

    /// What was tried, for the error naming a layer no key opens.
    fn describe(&self) -> String {
        if self.is_empty() {
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
        let mut kinds: Vec<String> = self
            .keys
            .iter()
            .map(|(_, k)| {
                match k {
                    PrivateKey::Rsa(_) => "RSA (jwe, pkcs7)",
                    PrivateKey::P256(_) => "EC P-256 (jwe)",
                    PrivateKey::P384(_) => "EC P-384 (jwe)",
                    PrivateKey::P521(_) => "EC P-521 (jwe)",
                }
                .to_string()
            })
            .collect();
        kinds.extend(
            self.pgp
                .iter()
                .map(|(_, k)| format!("OpenPGP {} (pgp)", k.id())),
        );
        let certs = match self.certs.len() {
            0 => String::new(),
            n => format!(" and {n} pkcs7 certificate(s)"),
        };
        format!("{} key(s): {}{certs}", kinds.len(), kinds.join(", "))
    }
}

/// Whether a layer descriptor is encrypted (its media type ends in `+encrypted`).
pub fn is_encrypted(layer: &Descriptor) -> bool {
    layer.media_type.ends_with(ENCRYPTED)
}

/// Encrypts the layers of `target`'s manifests for `platforms` (all platforms when empty) and
/// stores the new manifests (and index); returns the new top descriptor. Other platforms are
/// left out of the result, as nerdctl does; a single manifest is converted whatever its
/// platform (containerd's converter checks platforms only in an index).
pub fn encrypt_image(
    store: &Store,
    target: &Descriptor,
    recipients: &[Recipient],
    platforms: &[Platform],
) -> Result<Descriptor, Error> {
    if recipients.is_empty() {
        return Err(Error::Invalid(
            "encrypt needs at least one --recipient".into(),
        ));
    }
    let mut layers = 0;
    let desc = convert_image(store, target, platforms, &mut |layer| {
        layers += 1;
        encrypt_layer(store, layer, recipients)
    })?;
    if layers == 0 {
        return Err(Error::Invalid(format!(
            "the image has no layers to encrypt{}",
            for_platforms(platforms)
        )));
    }
    Ok(desc)
}

/// Decrypts every encrypted layer of `target`'s manifests for `platforms` (all when empty);
/// returns the new top descriptor. The plaintext blobs are verified against the digest in each
/// layer's private options before they are stored. An image with no encrypted layer there is
/// an error.
pub fn decrypt_image(
    store: &Store,
    target: &Descriptor,
    keys: &KeyRing,
    platforms: &[Platform],
) -> Result<Descriptor, Error> {
    let mut encrypted = 0;
    let desc = convert_image(store, target, platforms, &mut |layer| {
        if is_encrypted(layer) {
            encrypted += 1;
            decrypt_layer(store, layer, keys)
        } else {
            Ok(layer.clone())
        }
    })?;
    if encrypted == 0 {
        return Err(Error::Invalid(format!(
            "the image has no encrypted layers{}",
            for_platforms(platforms)
        )));
    }
    Ok(desc)
}

fn for_platforms(platforms: &[Platform]) -> String {
    if platforms.is_empty() {
        return String::new();
    }
    let names: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
    format!(" for {}", names.join(", "))
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

/// Checks that `keys` open an encrypted layer's wrapped options, without reading the layer (as
/// imgcrypt's authorization check before running an image whose layers are unpacked already).
pub fn authorize(layer: &Descriptor, keys: &KeyRing) -> Result<(), Error> {
    if is_encrypted(layer) {
        layer_options(layer, keys)?;
    }
    Ok(())
}

type LayerFn<'a> = dyn FnMut(&Descriptor) -> Result<Descriptor, Error> + 'a;

fn convert_image(
    store: &Store,
    target: &Descriptor,
    platforms: &[Platform],
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
        let wanted = match &desc.platform {
            Some(have) => platforms.is_empty() || platforms.iter().any(|p| have.matches(p)),
            None => true,
        };
        if wanted && media::is_manifest(&desc.media_type) {
            manifests.push(convert_manifest(store, desc, layer_fn)?);
        }
    }
    if manifests.is_empty() {
        let which = match for_platforms(platforms) {
            none if none.is_empty() => " for any platform".to_string(),
            some => some,
        };
        return Err(Error::Invalid(format!("the image has no manifest{which}")));
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
    recipients: &[Recipient],
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

    let mut desc = Descriptor::new(&media_type, digest, size);
    desc.annotations = layer.annotations.clone();
    let plain = opts.to_json();
    let mut jwe_keys = Vec::new();
    let mut certs = Vec::new();
    let mut pgp_keys = Vec::new();
    for recipient in recipients {
        match recipient {
            Recipient::Jwe(key) => jwe_keys.push(key.clone()),
            Recipient::Pkcs7(cert) => certs.push((**cert).clone()),
            Recipient::Pgp(keys) => pgp_keys.extend(keys.iter().cloned()),
        }
    }
    // One wrapping per scheme covers all of its recipients, as ocicrypt does.
    if !jwe_keys.is_empty() {
        let wrapped = jwe::wrap(&jwe_keys, &plain)?;
        desc.annotations
            .insert(ANNOTATION_JWE.into(), B64.encode(wrapped));
    }
    if !certs.is_empty() {
        let wrapped = pkcs7::wrap(&certs, &plain)?;
        desc.annotations
            .insert(ANNOTATION_PKCS7.into(), B64.encode(wrapped));
    }
    if !pgp_keys.is_empty() {
        let wrapped = openpgp::wrap(&pgp_keys, &plain)?;
        desc.annotations
            .insert(ANNOTATION_PGP.into(), B64.encode(wrapped));
    }
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
    let mut details: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    if let Some(value) = layer.annotations.get(ANNOTATION_JWE) {
        let private_keys = keys.private_keys();
        for text in entries(layer, ANNOTATION_JWE, value)? {
            details
                .entry("jwe")
                .or_default()
                .extend(jwe::recipient_algs(&text));
            if let Some(json) = jwe::unwrap(&text, &private_keys)? {
                return Ok((PrivateOptions::from_json(&json)?, hmac));
            }
        }
    }
    if let Some(value) = layer.annotations.get(ANNOTATION_PKCS7) {
        let (rsa_keys, certs) = (keys.rsa_keys(), keys.certificates());
        for der in entries(layer, ANNOTATION_PKCS7, value)? {
            let count = pkcs7::recipient_count(&der).unwrap_or(0);
            details
                .entry("pkcs7")
                .or_default()
                .push(format!("{count} RSA certificate(s)"));
            if let Some(json) = pkcs7::unwrap(&der, &rsa_keys, &certs)? {
                return Ok((PrivateOptions::from_json(&json)?, hmac));
            }
        }
    }
    if let Some(value) = layer.annotations.get(ANNOTATION_PGP) {
        let pgp_keys = keys.pgp_keys();
        for message in entries(layer, ANNOTATION_PGP, value)? {
            details
                .entry("pgp")
                .or_default()
                .extend(openpgp::recipient_ids(&message));
            if let Some(json) = openpgp::unwrap(&message, &pgp_keys)? {
                return Ok((PrivateOptions::from_json(&json)?, hmac));
            }
        }
    }
    let mut wrapped: Vec<String> = layer
        .annotations
        .keys()
        .filter_map(|k| k.strip_prefix("org.opencontainers.image.enc.keys."))
        .map(|scheme| match details.get(scheme) {
            Some(list) => format!("{scheme} recipients ({})", list.join(", ")),
            None => format!("{scheme} recipients"),
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

/// The base64 entries of a comma-separated key annotation, decoded.
fn entries(layer: &Descriptor, annotation: &str, value: &str) -> Result<Vec<Vec<u8>>, Error> {
    value
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|entry| {
            B64.decode(entry.trim()).map_err(|_| {
                Error::Format(format!(
                    "layer {}: {annotation} is not base64",
                    layer.digest
                ))
            })
        })
        .collect()
}
