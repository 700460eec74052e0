//! OpenPGP key wrapping of the private layer options (ocicrypt `keywrap/pgp`, which calls Go's
//! `openpgp.Encrypt`): one OpenPGP message to every recipient key, a public-key encrypted
//! session key packet per key and the options in a SEIPD (version 1, AES-256, with MDC)
//! packet, binary, as Go writes it. Keys are read with rPGP from armored or binary files
//! (`gpg --export` / `gpg --export-secret-keys`).

use std::io::Cursor;

use pgp::composed::{Deserializable as _, Esk, Message, MessageBuilder, SignedPublicKey};
use pgp::composed::{SignedPublicSubKey, SignedSecretKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{KeyDetails as _, Password};
use rand_core_06::OsRng;
use zeroize::Zeroizing;

use crate::Error;

/// A recipient's OpenPGP key (a transferable public key).
#[derive(Clone, Debug)]
pub struct PublicKey {
    key: SignedPublicKey,
}

impl PublicKey {
    /// The primary key's ID, 16 hex digits, as gpg shows it.
    pub fn id(&self) -> String {
        hex::encode_upper(self.key.legacy_key_id().as_ref())
    }
}

/// An OpenPGP secret key (a transferable secret key, unencrypted or with its password).
#[derive(Clone)]
pub struct SecretKey {
    key: SignedSecretKey,
    password: Zeroizing<String>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pgp::SecretKey({})", self.id())
    }
}

impl SecretKey {
    /// The primary key's ID, 16 hex digits, as gpg shows it.
    pub fn id(&self) -> String {
        hex::encode_upper(self.key.legacy_key_id().as_ref())
    }
}

/// Whether `bytes` look like OpenPGP data: ASCII armor, or a binary packet whose first byte
/// is a public or secret key packet tag (old or new format).
pub fn looks_like_pgp(bytes: &[u8]) -> bool {
    if bytes.windows(15).any(|w| w == b"-----BEGIN PGP ") {
        return true;
    }
    match bytes.first() {
        // New format: 0xC0 | tag; old format: 0x80 | tag << 2 | length type.
        Some(&b) if b & 0xc0 == 0xc0 => matches!(b & 0x3f, 5 | 6),
        Some(&b) if b & 0xc0 == 0x80 => matches!((b >> 2) & 0x0f, 5 | 6),
        _ => false,
    }
}

/// Reads every public key of an armored or binary keyring.
pub fn parse_public_keys(bytes: &[u8]) -> Result<Vec<PublicKey>, String> {
    let (keys, _) = SignedPublicKey::from_reader_many(Cursor::new(bytes))
        .map_err(|e| format!("not an OpenPGP public key: {e}"))?;
    let keys: Vec<PublicKey> = keys
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not an OpenPGP public key: {e}"))?
        .into_iter()
        .map(|key| PublicKey { key })
        .collect();
    if keys.is_empty() {
        return Err("holds no OpenPGP public key".into());
    }
    Ok(keys)
}

/// Reads every secret key of an armored or binary file; `password` unlocks protected keys.
pub fn parse_secret_keys(bytes: &[u8], password: Option<&str>) -> Result<Vec<SecretKey>, String> {
    let (keys, _) = SignedSecretKey::from_reader_many(Cursor::new(bytes))
        .map_err(|e| format!("not an OpenPGP secret key: {e}"))?;
    let keys: Vec<SecretKey> = keys
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not an OpenPGP secret key: {e}"))?
        .into_iter()
        .map(|key| SecretKey {
            key,
            password: Zeroizing::new(password.unwrap_or_default().to_string()),
        })
        .collect();
    if keys.is_empty() {
        return Err("holds no OpenPGP secret key".into());
    }
    Ok(keys)
}

/// The subkeys a message to `key` is encrypted for: every subkey whose binding signature allows
/// encryption, or, when none does, the primary key if its algorithm can encrypt.
fn encryption_subkeys(key: &SignedPublicKey) -> Vec<&SignedPublicSubKey> {
    key.public_subkeys
        .iter()
        .filter(|sub| {
            sub.key.algorithm().can_encrypt()
                && sub.signatures.iter().any(|sig| {
                    let flags = sig.key_flags();
                    flags.encrypt_comms() || flags.encrypt_storage()
                })
        })
        .collect()
}

/// Encrypts `plaintext` to every recipient; returns the binary OpenPGP message.
pub fn wrap(recipients: &[PublicKey], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let mut builder = MessageBuilder::from_bytes("", plaintext.to_vec())
        .seipd_v1(OsRng, SymmetricKeyAlgorithm::AES256);
    for recipient in recipients {
        let subkeys = encryption_subkeys(&recipient.key);
        let fail =
            |e: pgp::errors::Error| Error::Format(format!("OpenPGP key {}: {e}", recipient.id()));
        if subkeys.is_empty() {
            if !recipient.key.primary_key.algorithm().can_encrypt() {
                return Err(Error::Invalid(format!(
                    "OpenPGP key {} has no key that can encrypt",
                    recipient.id()
                )));
            }
            builder
                .encrypt_to_key(OsRng, &recipient.key.primary_key)
                .map_err(fail)?;
        }
        for sub in subkeys {
            builder.encrypt_to_key(OsRng, &sub.key).map_err(fail)?;
        }
    }
    builder
        .to_vec(OsRng)
        .map_err(|e| Error::Format(format!("OpenPGP message: {e}")))
}

/// The key IDs a message is encrypted to (16 hex digits each), for messages.
pub fn recipient_ids(message: &[u8]) -> Vec<String> {
    let Ok(Message::Encrypted { esk, .. }) = Message::from_bytes(message) else {
        return Vec::new();
    };
    esk.iter()
        .filter_map(|e| match e {
            Esk::PublicKeyEncryptedSessionKey(p) => p.id().ok(),
            Esk::SymKeyEncryptedSessionKey(_) => None,
        })
        .map(|id| hex::encode_upper(id.as_ref()))
        .collect()
}

/// Decrypts `message` with the first key that opens it; `None` when no key does. A message
/// that decrypts but fails its integrity check (MDC) is an error.
pub fn unwrap(message: &[u8], keys: &[SecretKey]) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
    for key in keys {
        let parsed = Message::from_bytes(message)
            .map_err(|e| Error::Format(format!("OpenPGP message: {e}")))?;
        let password = Password::from(key.password.as_str());
        let Ok(mut plain) = parsed.decrypt(&password, &key.key) else {
            continue;
        };
        if plain.is_compressed() {
            plain = plain
                .decompress()
                .map_err(|e| Error::Format(format!("OpenPGP message: {e}")))?;
        }
        let data = plain.as_data_vec().map_err(|_| {
            Error::Integrity("the OpenPGP message does not decrypt: the wrapped key was altered")
        })?;
        return Ok(Some(Zeroizing::new(data)));
    }
    Ok(None)
}
