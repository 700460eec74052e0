//! JWE key wrapping of the private layer options (ocicrypt `keywrap/jwe`, go-jose v4).
//!
//! Wrap: one JWE for all recipients, content encrypted with A256GCM; RSA recipients get
//! `RSA-OAEP` (or `RSA-OAEP-256` from a JWK), EC recipients `ECDH-ES+A256KW`. One recipient is
//! written in flattened JSON with its header merged into the protected header, several in
//! general JSON with per-recipient headers, as go-jose's `FullSerialize` does. Unwrap accepts
//! flattened, general and compact forms.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use getrandom::rand_core::UnwrapErr;
use getrandom::SysRng;
use rsa::Oaep;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::keys::{EcPublic, PrivateKey, PublicKey};
use crate::Error;

/// Encrypts `plaintext` for every recipient; returns the JWE JSON text.
pub fn wrap(recipients: &[PublicKey], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let mut cek = Zeroizing::new([0u8; 32]);
    let mut iv = [0u8; 12];
    getrandom::fill(cek.as_mut()).map_err(|e| Error::Random(e.to_string()))?;
    getrandom::fill(&mut iv).map_err(|e| Error::Random(e.to_string()))?;

    let mut headers = Vec::new();
    for recipient in recipients {
        headers.push(wrap_cek(recipient, cek.as_ref())?);
    }
    let (protected, body) = match headers.as_slice() {
        [(header, key)] => {
            let mut protected = header.clone();
            protected.insert("enc".into(), "A256GCM".into());
            let mut body = Map::new();
            body.insert("encrypted_key".into(), B64URL.encode(key).into());
            (protected, body)
        }
        _ => {
            let list: Vec<Value> = headers
                .iter()
                .map(|(header, key)| json!({"header": header, "encrypted_key": B64URL.encode(key)}))
                .collect();
            let mut protected = Map::new();
            protected.insert("enc".into(), "A256GCM".into());
            let mut body = Map::new();
            body.insert("recipients".into(), list.into());
            (protected, body)
        }
    };
    let protected = B64URL.encode(serde_json::to_vec(&protected).expect("json map"));
    let cipher = aes_gcm::Aes256Gcm::new((&*cek).into());
    let sealed = cipher
        .encrypt(
            (&iv).into(),
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .map_err(|_| Error::Format("A256GCM encryption failed".into()))?;
    let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);

    let mut jwe = Map::new();
    jwe.insert("protected".into(), protected.into());
    jwe.extend(body);
    jwe.insert("iv".into(), B64URL.encode(iv).into());
    jwe.insert("ciphertext".into(), B64URL.encode(ciphertext).into());
    jwe.insert("tag".into(), B64URL.encode(tag).into());
    Ok(serde_json::to_vec(&jwe).expect("json map"))
}

/// The recipient header (`alg`, and `epk` for ECDH-ES) and the encrypted content key.
fn wrap_cek(recipient: &PublicKey, cek: &[u8]) -> Result<(Map<String, Value>, Vec<u8>), Error> {
    let mut header = Map::new();
    let mut rng = UnwrapErr(SysRng);
    let key = match recipient {
        PublicKey::Rsa { key, alg } => {
            header.insert("alg".into(), (*alg).into());
            let sealed = if *alg == "RSA-OAEP-256" {
                key.encrypt(&mut rng, Oaep::<Sha256>::new(), cek)
            } else {
                key.encrypt(&mut rng, Oaep::<sha1::Sha1>::new(), cek)
            };
            sealed.map_err(|e| Error::Format(format!("RSA-OAEP: {e}")))?
        }
        PublicKey::Ec { key, alg } => {
            header.insert("alg".into(), (*alg).into());
            let (z, epk) = match key {
                EcPublic::P256(k) => ephemeral::<p256::NistP256>(k, "P-256"),
                EcPublic::P384(k) => ephemeral::<p384::NistP384>(k, "P-384"),
                EcPublic::P521(k) => ephemeral::<p521::NistP521>(k, "P-521"),
            };
            header.insert("epk".into(), epk);
            let kek = concat_kdf(&z, alg, kw_len(alg));
            aes_kw_wrap(&kek, cek)?
        }
    };
    Ok((header, key))
}

fn kw<K: KeyInit>(kek: &[u8]) -> Result<K, Error> {
    K::new_from_slice(kek).map_err(|_| Error::Format("bad key-wrapping key length".into()))
}

/// A fresh ephemeral key on the recipient's curve: the shared secret Z and the `epk` JWK.
fn ephemeral<C>(recipient: &elliptic_curve::PublicKey<C>, crv: &str) -> (Zeroizing<Vec<u8>>, Value)
where
    C: elliptic_curve::CurveArithmetic,
    C::AffinePoint: elliptic_curve::sec1::FromSec1Point<C> + elliptic_curve::sec1::ToSec1Point<C>,
    C::FieldBytesSize: elliptic_curve::sec1::ModulusSize,
{
    let secret = <elliptic_curve::ecdh::EphemeralSecret<C> as elliptic_curve::Generate>::generate();
    let shared = secret.diffie_hellman(recipient);
    let z = Zeroizing::new(shared.raw_secret_bytes().to_vec());
    let point = elliptic_curve::sec1::ToSec1Point::to_sec1_point(&secret.public_key(), false);
    let epk = json!({
        "kty": "EC",
        "crv": crv,
        "x": B64URL.encode(point.x().expect("uncompressed point")),
        "y": B64URL.encode(point.y().expect("uncompressed point")),
    });
    (z, epk)
}

fn kw_len(alg: &str) -> usize {
    match alg {
        "ECDH-ES+A128KW" => 16,
        "ECDH-ES+A192KW" => 24,
        _ => 32,
    }
}

/// The Concat KDF of RFC 7518 section 4.6.2 (NIST SP 800-56A), with empty `apu` and `apv` as
/// go-jose writes them, and the `alg` value as AlgorithmID for key agreement with key wrapping.
fn concat_kdf(z: &[u8], alg: &str, len: usize) -> Zeroizing<Vec<u8>> {
    concat_kdf_with(z, alg, &[], &[], len)
}

fn concat_kdf_with(z: &[u8], alg: &str, apu: &[u8], apv: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut other = Vec::new();
    for part in [alg.as_bytes(), apu, apv] {
        other.extend_from_slice(&(part.len() as u32).to_be_bytes());
        other.extend_from_slice(part);
    }
    other.extend_from_slice(&((len * 8) as u32).to_be_bytes());
    let mut out = Zeroizing::new(Vec::new());
    let mut counter = 1u32;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        h.update(&other);
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

fn aes_kw_wrap(kek: &[u8], cek: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; cek.len() + 8];
    let fail = |_| Error::Format("AES key wrap failed".into());
    let out = match kek.len() {
        16 => kw::<aes_kw::KwAes128>(kek)?
            .wrap_key(cek, &mut buf)
            .map_err(fail)?,
        24 => kw::<aes_kw::KwAes192>(kek)?
            .wrap_key(cek, &mut buf)
            .map_err(fail)?,
        _ => kw::<aes_kw::KwAes256>(kek)?
            .wrap_key(cek, &mut buf)
            .map_err(fail)?,
    };
    Ok(out.to_vec())
}

fn aes_kw_unwrap(kek: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; wrapped.len().checked_sub(8)?]);
    let len = match kek.len() {
        16 => kw::<aes_kw::KwAes128>(kek)
            .ok()?
            .unwrap_key(wrapped, &mut buf)
            .ok()?
            .len(),
        24 => kw::<aes_kw::KwAes192>(kek)
            .ok()?
            .unwrap_key(wrapped, &mut buf)
            .ok()?
            .len(),
        _ => kw::<aes_kw::KwAes256>(kek)
            .ok()?
            .unwrap_key(wrapped, &mut buf)
            .ok()?
            .len(),
    };
    buf.truncate(len);
    Some(buf)
}

/// A JWE in any serialisation, normalised to the JSON fields.
struct Parsed {
    protected_b64: String,
    protected: Map<String, Value>,
    shared: Map<String, Value>,
    recipients: Vec<(Map<String, Value>, Vec<u8>)>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
    aad: Option<String>,
}

fn b64(v: Option<&Value>, what: &str) -> Result<Vec<u8>, Error> {
    let s = v.and_then(Value::as_str).unwrap_or("");
    B64URL
        .decode(s.trim_end_matches('='))
        .map_err(|_| Error::Format(format!("JWE {what} is not base64url")))
}

fn object(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

fn parse(text: &[u8]) -> Result<Parsed, Error> {
    let bad = |why: &str| Error::Format(format!("JWE: {why}"));
    let trimmed = std::str::from_utf8(text)
        .map_err(|_| bad("not UTF-8"))?
        .trim();
    let jwe: Map<String, Value> = if trimmed.starts_with('{') {
        serde_json::from_str(trimmed).map_err(|e| bad(&e.to_string()))?
    } else {
        let parts: Vec<&str> = trimmed.split('.').collect();
        let [p, k, iv, c, t] = parts[..] else {
            return Err(bad("neither JSON nor compact serialisation"));
        };
        let mut m = Map::new();
        for (name, v) in [
            ("protected", p),
            ("encrypted_key", k),
            ("iv", iv),
            ("ciphertext", c),
            ("tag", t),
        ] {
            m.insert(name.into(), v.into());
        }
        m
    };
    let protected_b64 = jwe
        .get("protected")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let protected: Map<String, Value> = if protected_b64.is_empty() {
        Map::new()
    } else {
        serde_json::from_slice(&b64(jwe.get("protected"), "protected header")?)
            .map_err(|_| bad("protected header is not JSON"))?
    };
    let recipients = match jwe.get("recipients").and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .map(|r| {
                Ok((
                    object(r.get("header")),
                    b64(r.get("encrypted_key"), "encrypted_key")?,
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?,
        None => vec![(
            object(jwe.get("header")),
            b64(jwe.get("encrypted_key"), "encrypted_key")?,
        )],
    };
    Ok(Parsed {
        protected_b64,
        protected,
        shared: object(jwe.get("unprotected")),
        recipients,
        iv: b64(jwe.get("iv"), "iv")?,
        ciphertext: b64(jwe.get("ciphertext"), "ciphertext")?,
        tag: b64(jwe.get("tag"), "tag")?,
        aad: jwe.get("aad").and_then(Value::as_str).map(str::to_string),
    })
}

/// Decrypts a JWE with the first of `keys` that one of its recipients was wrapped for.
/// `Ok(None)`: no key matches any recipient; `Err`: the JWE is malformed or a recipient this key
/// unwrapped does not decrypt the content (tampered).
pub fn unwrap(text: &[u8], keys: &[PrivateKey]) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
    let jwe = parse(text)?;
    for (header, encrypted_key) in &jwe.recipients {
        let mut merged = jwe.protected.clone();
        merged.extend(jwe.shared.clone());
        merged.extend(header.clone());
        for key in keys {
            let Some(cek) = unwrap_cek(&merged, encrypted_key, key)? else {
                continue;
            };
            return decrypt_content(&jwe, &merged, &cek).map(Some);
        }
    }
    Ok(None)
}

fn unwrap_cek(
    header: &Map<String, Value>,
    encrypted_key: &[u8],
    key: &PrivateKey,
) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    match (alg, key) {
        ("RSA-OAEP", PrivateKey::Rsa(k)) => Ok(k
            .decrypt(Oaep::<sha1::Sha1>::new(), encrypted_key)
            .ok()
            .map(Zeroizing::new)),
        ("RSA-OAEP-256", PrivateKey::Rsa(k)) => Ok(k
            .decrypt(Oaep::<Sha256>::new(), encrypted_key)
            .ok()
            .map(Zeroizing::new)),
        ("ECDH-ES+A128KW" | "ECDH-ES+A192KW" | "ECDH-ES+A256KW", _) => {
            let epk = object(header.get("epk"));
            let crv = epk.get("crv").and_then(Value::as_str).unwrap_or("");
            let mut point = vec![4u8];
            point.extend(b64(epk.get("x"), "epk x")?);
            point.extend(b64(epk.get("y"), "epk y")?);
            let bad_epk = || Error::Format(format!("JWE epk is not a point on {crv}"));
            let z: Zeroizing<Vec<u8>> = match (crv, key) {
                ("P-256", PrivateKey::P256(k)) => {
                    let p = p256::PublicKey::from_sec1_bytes(&point).map_err(|_| bad_epk())?;
                    Zeroizing::new(
                        elliptic_curve::ecdh::diffie_hellman(k.to_nonzero_scalar(), p.as_affine())
                            .raw_secret_bytes()
                            .to_vec(),
                    )
                }
                ("P-384", PrivateKey::P384(k)) => {
                    let p = p384::PublicKey::from_sec1_bytes(&point).map_err(|_| bad_epk())?;
                    Zeroizing::new(
                        elliptic_curve::ecdh::diffie_hellman(k.to_nonzero_scalar(), p.as_affine())
                            .raw_secret_bytes()
                            .to_vec(),
                    )
                }
                ("P-521", PrivateKey::P521(k)) => {
                    let p = p521::PublicKey::from_sec1_bytes(&point).map_err(|_| bad_epk())?;
                    Zeroizing::new(
                        elliptic_curve::ecdh::diffie_hellman(k.to_nonzero_scalar(), p.as_affine())
                            .raw_secret_bytes()
                            .to_vec(),
                    )
                }
                _ => return Ok(None),
            };
            let apu = b64(header.get("apu"), "apu")?;
            let apv = b64(header.get("apv"), "apv")?;
            let kek = concat_kdf_with(&z, alg, &apu, &apv, kw_len(alg));
            Ok(aes_kw_unwrap(&kek, encrypted_key))
        }
        _ => Ok(None),
    }
}

fn decrypt_content(
    jwe: &Parsed,
    header: &Map<String, Value>,
    cek: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let enc = header.get("enc").and_then(Value::as_str).unwrap_or("");
    let aad = match &jwe.aad {
        Some(extra) => format!("{}.{extra}", jwe.protected_b64),
        None => jwe.protected_b64.clone(),
    };
    let mut sealed = jwe.ciphertext.clone();
    sealed.extend_from_slice(&jwe.tag);
    let payload = Payload {
        msg: &sealed,
        aad: aad.as_bytes(),
    };
    let iv: [u8; 12] = jwe.iv[..]
        .try_into()
        .map_err(|_| Error::Format("JWE iv is not 12 bytes".into()))?;
    let iv = (&iv).into();
    let fail =
        |_| Error::Integrity("the JWE content does not decrypt: the wrapped key was altered");
    let plain = match (enc, cek.len()) {
        ("A256GCM", 32) => kw::<aes_gcm::Aes256Gcm>(cek)?
            .decrypt(iv, payload)
            .map_err(fail)?,
        ("A128GCM", 16) => kw::<aes_gcm::Aes128Gcm>(cek)?
            .decrypt(iv, payload)
            .map_err(fail)?,
        // TODO: A192GCM and the CBC-HS encodings; go-jose never writes them for ocicrypt.
        _ => {
            return Err(Error::Format(format!(
                "JWE content encryption {enc:?} is not supported"
            )))
        }
    };
    Ok(Zeroizing::new(plain))
}

/// Parsed headers of a JWE for error messages: the `alg` of each recipient.
pub fn recipient_algs(text: &[u8]) -> Vec<String> {
    let Ok(jwe) = parse(text) else {
        return Vec::new();
    };
    jwe.recipients
        .iter()
        .map(|(h, _)| {
            let mut merged: BTreeMap<String, Value> = jwe.protected.clone().into_iter().collect();
            merged.extend(h.clone());
            merged
                .get("alg")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7518 appendix C: the Concat KDF output for its ECDH-ES example.
    #[test]
    fn concat_kdf_matches_rfc7518_appendix_c() {
        let z = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let key = concat_kdf_with(&z, "A128GCM", b"Alice", b"Bob", 16);
        assert_eq!(B64URL.encode(&*key), "VqqN6vgjbSBcIijNcacQGg");
    }
}

#[cfg(test)]
mod roundtrip {
    use super::*;
    use rsa::Generate as _;

    fn rsa_pair() -> (PublicKey, PrivateKey) {
        let key = rsa::PrivateKey::new(&mut UnwrapErr(SysRng), 2048).unwrap();
        let public = PublicKey::Rsa {
            key: Box::new(key.to_public_key()),
            alg: "RSA-OAEP",
        };
        (public, PrivateKey::Rsa(Box::new(key)))
    }

    fn p256_pair() -> (PublicKey, PrivateKey) {
        let key = p256::SecretKey::generate();
        let public = PublicKey::Ec {
            key: EcPublic::P256(key.public_key()),
            alg: "ECDH-ES+A256KW",
        };
        (public, PrivateKey::P256(key))
    }

    #[test]
    fn one_recipient_is_flattened_and_several_are_general() {
        let (rsa_pub, rsa_priv) = rsa_pair();
        let (ec_pub, ec_priv) = p256_pair();
        let (_, stranger) = p256_pair();

        let one: Value =
            serde_json::from_slice(&wrap(std::slice::from_ref(&ec_pub), b"secret").unwrap())
                .unwrap();
        assert!(one.get("recipients").is_none() && one.get("encrypted_key").is_some());
        let protected: Value =
            serde_json::from_slice(&B64URL.decode(one["protected"].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(protected["alg"], "ECDH-ES+A256KW");
        assert_eq!(protected["enc"], "A256GCM");
        assert_eq!(protected["epk"]["crv"], "P-256");

        let both = wrap(&[rsa_pub, ec_pub], b"secret").unwrap();
        let parsed: Value = serde_json::from_slice(&both).unwrap();
        assert_eq!(parsed["recipients"].as_array().unwrap().len(), 2);
        assert_eq!(recipient_algs(&both), ["RSA-OAEP", "ECDH-ES+A256KW"]);
        for key in [rsa_priv, ec_priv] {
            let plain = unwrap(&both, std::slice::from_ref(&key)).unwrap().unwrap();
            assert_eq!(&plain[..], b"secret");
        }
        assert!(unwrap(&both, &[stranger]).unwrap().is_none());
    }

    #[test]
    fn altered_content_is_an_integrity_error() {
        let (ec_pub, ec_priv) = p256_pair();
        let mut jwe: Value = serde_json::from_slice(&wrap(&[ec_pub], b"secret").unwrap()).unwrap();
        jwe["ciphertext"] = B64URL.encode(b"SECRET").into();
        let err = unwrap(&serde_json::to_vec(&jwe).unwrap(), &[ec_priv]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "integrity check failed: the JWE content does not decrypt: the wrapped key was altered"
        );
    }
}
