//! Public keys (recipients) and private keys for JWE, read from PEM, DER or JWK files as
//! ocicrypt reads them (`utils/utils.go` `ParsePublicKey` / `ParsePrivateKey`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use pkcs8::der::pem;
use pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::{BoxedUint, PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::{openpgp, pkcs7, Error};

/// An elliptic curve public key on one of the curves JOSE names.
#[derive(Clone, Debug)]
pub enum EcPublic {
    /// NIST P-256.
    P256(p256::PublicKey),
    /// NIST P-384.
    P384(p384::PublicKey),
    /// NIST P-521.
    P521(p521::PublicKey),
}

/// A recipient's public key and the JWE key-management algorithm used for it.
#[derive(Clone, Debug)]
pub enum PublicKey {
    /// RSA: `RSA-OAEP` (SHA-1, go-jose's and ocicrypt's default) or `RSA-OAEP-256`.
    Rsa {
        /// The key.
        key: Box<RsaPublicKey>,
        /// The JWE `alg`.
        alg: &'static str,
    },
    /// EC: `ECDH-ES+A256KW` by default (or A128KW / A192KW when a JWK says so).
    Ec {
        /// The key.
        key: EcPublic,
        /// The JWE `alg`.
        alg: &'static str,
    },
}

/// A private key that can unwrap JWE recipients.
#[derive(Clone)]
pub enum PrivateKey {
    /// RSA.
    Rsa(Box<RsaPrivateKey>),
    /// P-256.
    P256(p256::SecretKey),
    /// P-384.
    P384(p384::SecretKey),
    /// P-521.
    P521(p521::SecretKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrivateKey::Rsa(_) => "PrivateKey::Rsa",
            PrivateKey::P256(_) => "PrivateKey::P256",
            PrivateKey::P384(_) => "PrivateKey::P384",
            PrivateKey::P521(_) => "PrivateKey::P521",
        })
    }
}

/// A private key file given on the command line: `FILE`, `FILE:PASSWORD`, `FILE:pass=PASSWORD`
/// or `FILE:filename=PASSWORD_FILE` (nerdctl's and skopeo's `--key` forms).
#[derive(Clone, Debug)]
pub struct KeySpec {
    /// The key file.
    pub path: PathBuf,
    /// The password of an encrypted key.
    pub password: Option<Zeroizing<String>>,
}

impl std::str::FromStr for KeySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<KeySpec, String> {
        // A path that exists as typed wins over splitting at a colon.
        if Path::new(s).exists() {
            return Ok(KeySpec {
                path: s.into(),
                password: None,
            });
        }
        let Some((path, secret)) = s.split_once(':') else {
            return Ok(KeySpec {
                path: s.into(),
                password: None,
            });
        };
        let password = if let Some(p) = secret.strip_prefix("pass=") {
            p.to_string()
        } else if let Some(file) = secret.strip_prefix("filename=") {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("read password file {file}: {e}"))?;
            text.trim_end_matches(['\n', '\r']).to_string()
        } else if secret.starts_with("fd=") {
            return Err("key passwords from a file descriptor are not supported".into());
        } else {
            secret.to_string()
        };
        Ok(KeySpec {
            path: path.into(),
            password: Some(Zeroizing::new(password)),
        })
    }
}

/// Reads a recipient's public key (PEM `PUBLIC KEY` or `RSA PUBLIC KEY`, DER, or a JWK).
pub fn load_public_key(path: &Path) -> Result<PublicKey, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::key(path, e))?;
    parse_public_key(&bytes).map_err(|reason| Error::key(path, reason))
}

/// Reads a private key file, refusing one that group or others may read (as ssh refuses an
/// unprotected private key).
pub fn load_private_key(path: &Path, password: Option<&str>) -> Result<PrivateKey, Error> {
    check_permissions(path)?;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| Error::key(path, e))?);
    parse_private_key(&bytes, password).map_err(|reason| Error::key(path, reason))
}

fn check_permissions(path: &Path) -> Result<(), Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::key(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::key(
            path,
            format!("permissions {mode:04o} are too open: a private key must not be readable by group or others (chmod 600)"),
        ));
    }
    Ok(())
}

/// What a file given to decrypt with holds.
#[derive(Clone, Debug)]
pub enum KeyMaterial {
    /// An RSA or EC private key (jwe, and pkcs7 for RSA).
    Private(PrivateKey),
    /// An X.509 certificate naming the pkcs7 recipient a private key is (skopeo takes it in
    /// the key list, nerdctl as `--dec-recipient pkcs7:FILE`).
    Certificate(Box<pkcs7::Certificate>),
    /// OpenPGP secret keys (`gpg --export-secret-keys`, armored or binary).
    Pgp(Vec<openpgp::SecretKey>),
}

/// Reads a key file for decryption: a private key, an OpenPGP secret key or a certificate.
/// Private keys must not be readable by group or others; a certificate is public.
pub fn load_key_file(path: &Path, password: Option<&str>) -> Result<KeyMaterial, Error> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| Error::key(path, e))?);
    let pem_cert = find(&bytes, b"-----BEGIN CERTIFICATE-----").is_some();
    let binary = find(&bytes, b"-----BEGIN ").is_none() && !looks_like_json(&bytes);
    if pem_cert || (binary && !openpgp::looks_like_pgp(&bytes)) {
        match pkcs7::parse_certificate(&bytes) {
            Ok(cert) => return Ok(KeyMaterial::Certificate(Box::new(cert))),
            Err(reason) if pem_cert => return Err(Error::key(path, reason)),
            Err(_) => {}
        }
    }
    check_permissions(path)?;
    if openpgp::looks_like_pgp(&bytes) {
        return openpgp::parse_secret_keys(&bytes, password)
            .map(KeyMaterial::Pgp)
            .map_err(|reason| Error::key(path, reason));
    }
    parse_private_key(&bytes, password)
        .map(KeyMaterial::Private)
        .map_err(|reason| Error::key(path, reason))
}

/// Reads a pkcs7 recipient's X.509 certificate (PEM or DER, RSA key).
pub fn load_certificate(path: &Path) -> Result<pkcs7::Certificate, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::key(path, e))?;
    pkcs7::parse_certificate(&bytes).map_err(|reason| Error::key(path, reason))
}

/// Reads a pgp recipient's public keys (armored or binary; every key of a keyring).
pub fn load_pgp_public_keys(path: &Path) -> Result<Vec<openpgp::PublicKey>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::key(path, e))?;
    openpgp::parse_public_keys(&bytes).map_err(|reason| Error::key(path, reason))
}

/// Parses a public key from PEM, DER or JWK bytes.
pub fn parse_public_key(bytes: &[u8]) -> Result<PublicKey, String> {
    if looks_like_json(bytes) {
        return parse_jwk(bytes)?
            .0
            .ok_or_else(|| "the JWK holds no public key".to_string());
    }
    let (label, der) = pem_or_der(bytes)?;
    match label.as_str() {
        "RSA PUBLIC KEY" => RsaPublicKey::from_pkcs1_der(&der)
            .map(rsa_public)
            .map_err(|e| format!("PKCS#1 public key: {e}")),
        "PUBLIC KEY" | "" => spki_public(&der),
        "CERTIFICATE" => Err("an X.509 certificate is a pkcs7 recipient, not jwe".into()),
        other => Err(format!("PEM block {other:?} is not a public key")),
    }
}

/// Parses a private key from PEM (PKCS#8, encrypted PKCS#8, PKCS#1, SEC1), DER or JWK bytes.
pub fn parse_private_key(bytes: &[u8], password: Option<&str>) -> Result<PrivateKey, String> {
    if looks_like_json(bytes) {
        return parse_jwk(bytes)?
            .1
            .ok_or_else(|| "the JWK holds no private key".to_string());
    }
    let (label, der) = pem_or_der(bytes)?;
    if std::str::from_utf8(bytes).is_ok_and(|t| t.contains("Proc-Type: 4,ENCRYPTED")) {
        return Err("legacy OpenSSL-encrypted PEM is not supported: convert it to encrypted PKCS#8 (openssl pkcs8 -topk8)".into());
    }
    match label.as_str() {
        "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_der(&der)
            .map(|k| PrivateKey::Rsa(Box::new(k)))
            .map_err(|e| format!("PKCS#1 private key: {e}")),
        "EC PRIVATE KEY" => sec1_private(&der),
        "ENCRYPTED PRIVATE KEY" => {
            let password =
                password.ok_or("the key is encrypted: give its password (FILE:PASSWORD)")?;
            let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice())
                .map_err(|e| format!("encrypted PKCS#8: {e}"))?;
            let plain = info
                .decrypt(password)
                .map_err(|_| "cannot decrypt the key: wrong password?".to_string())?;
            pkcs8_private(plain.as_bytes())
        }
        "PRIVATE KEY" => pkcs8_private(&der),
        "" => pkcs8_private(&der)
            .or_else(|_| sec1_private(&der))
            .or_else(|_| {
                RsaPrivateKey::from_pkcs1_der(&der)
                    .map(|k| PrivateKey::Rsa(Box::new(k)))
                    .map_err(|_| "not a DER private key".to_string())
            }),
        other => Err(format!("PEM block {other:?} is not a private key")),
    }
}

fn looks_like_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The PEM label and DER bytes, or `""` and the input when it is not PEM.
fn pem_or_der(bytes: &[u8]) -> Result<(String, Zeroizing<Vec<u8>>), String> {
    let Some(start) = find(bytes, b"-----BEGIN ") else {
        return Ok((String::new(), Zeroizing::new(bytes.to_vec())));
    };
    let (label, der) = pem::decode_vec(&bytes[start..]).map_err(|e| format!("bad PEM: {e}"))?;
    Ok((label.to_string(), Zeroizing::new(der)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rsa_public(key: RsaPublicKey) -> PublicKey {
    PublicKey::Rsa {
        key: Box::new(key),
        alg: "RSA-OAEP",
    }
}

fn ec_public(key: EcPublic) -> PublicKey {
    PublicKey::Ec {
        key,
        alg: "ECDH-ES+A256KW",
    }
}

fn spki_public(der: &[u8]) -> Result<PublicKey, String> {
    if let Ok(k) = RsaPublicKey::from_public_key_der(der) {
        return Ok(rsa_public(k));
    }
    if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
        return Ok(ec_public(EcPublic::P256(k)));
    }
    if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
        return Ok(ec_public(EcPublic::P384(k)));
    }
    if let Ok(k) = p521::PublicKey::from_public_key_der(der) {
        return Ok(ec_public(EcPublic::P521(k)));
    }
    Err("not an RSA or EC (P-256, P-384, P-521) public key".into())
}

fn pkcs8_private(der: &[u8]) -> Result<PrivateKey, String> {
    if let Ok(k) = RsaPrivateKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::Rsa(Box::new(k)));
    }
    if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::P256(k));
    }
    if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::P384(k));
    }
    if let Ok(k) = p521::SecretKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::P521(k));
    }
    Err("not an RSA or EC (P-256, P-384, P-521) PKCS#8 private key".into())
}

fn sec1_private(der: &[u8]) -> Result<PrivateKey, String> {
    if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P256(k));
    }
    if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P384(k));
    }
    if let Ok(k) = p521::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P521(k));
    }
    Err("not a P-256, P-384 or P-521 EC private key".into())
}

/// The fields of an RSA or EC JWK (RFC 7517, RFC 7518 section 6).
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    d: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    p: Option<String>,
    #[serde(default)]
    q: Option<String>,
}

type KeyPair = (Option<PublicKey>, Option<PrivateKey>);

fn parse_jwk(bytes: &[u8]) -> Result<KeyPair, String> {
    let jwk: Jwk = serde_json::from_slice(bytes).map_err(|e| format!("bad JWK: {e}"))?;
    let field = |v: &Option<String>, name: &str| -> Result<Zeroizing<Vec<u8>>, String> {
        let v = v.as_deref().ok_or_else(|| format!("JWK has no {name:?}"))?;
        B64URL
            .decode(v.trim_end_matches('='))
            .map(Zeroizing::new)
            .map_err(|_| format!("JWK {name:?} is not base64url"))
    };
    let alg = jwk.alg.as_deref();
    match jwk.kty.as_str() {
        "RSA" => {
            let alg = match alg {
                None | Some("RSA-OAEP") => "RSA-OAEP",
                Some("RSA-OAEP-256") => "RSA-OAEP-256",
                Some(other) => {
                    return Err(format!("JWK alg {other:?} is not RSA-OAEP or RSA-OAEP-256"))
                }
            };
            let n = uint(&field(&jwk.n, "n")?);
            let e = uint(&field(&jwk.e, "e")?);
            let public =
                RsaPublicKey::new(n.clone(), e.clone()).map_err(|e| format!("JWK RSA key: {e}"))?;
            let private = match jwk.d {
                None => None,
                Some(_) => {
                    let d = BoxedUint::from_be_slice(&field(&jwk.d, "d")?, n.bits_precision())
                        .map_err(|_| "JWK \"d\" is longer than \"n\"".to_string())?;
                    let primes = vec![uint(&field(&jwk.p, "p")?), uint(&field(&jwk.q, "q")?)];
                    let key = RsaPrivateKey::from_components(n, e, d, primes)
                        .map_err(|e| format!("JWK RSA private key: {e}"))?;
                    Some(PrivateKey::Rsa(Box::new(key)))
                }
            };
            let key = Box::new(public);
            Ok((Some(PublicKey::Rsa { key, alg }), private))
        }
        "EC" => {
            let alg = match alg {
                None | Some("ECDH-ES+A256KW") => "ECDH-ES+A256KW",
                Some("ECDH-ES+A192KW") => "ECDH-ES+A192KW",
                Some("ECDH-ES+A128KW") => "ECDH-ES+A128KW",
                Some(other) => {
                    return Err(format!(
                        "JWK alg {other:?} is not ECDH-ES+A128KW, +A192KW or +A256KW"
                    ))
                }
            };
            let mut point = vec![4u8];
            point.extend_from_slice(&field(&jwk.x, "x")?);
            point.extend_from_slice(&field(&jwk.y, "y")?);
            let bad = |e: &dyn std::fmt::Display| format!("JWK EC key: {e}");
            let d = match jwk.d {
                Some(_) => Some(field(&jwk.d, "d")?),
                None => None,
            };
            let (public, private) = match jwk.crv.as_deref() {
                Some("P-256") => (
                    EcPublic::P256(p256::PublicKey::from_sec1_bytes(&point).map_err(|e| bad(&e))?),
                    d.map(|d| p256::SecretKey::from_slice(&d).map(PrivateKey::P256))
                        .transpose()
                        .map_err(|e| bad(&e))?,
                ),
                Some("P-384") => (
                    EcPublic::P384(p384::PublicKey::from_sec1_bytes(&point).map_err(|e| bad(&e))?),
                    d.map(|d| p384::SecretKey::from_slice(&d).map(PrivateKey::P384))
                        .transpose()
                        .map_err(|e| bad(&e))?,
                ),
                Some("P-521") => (
                    EcPublic::P521(p521::PublicKey::from_sec1_bytes(&point).map_err(|e| bad(&e))?),
                    d.map(|d| p521::SecretKey::from_slice(&d).map(PrivateKey::P521))
                        .transpose()
                        .map_err(|e| bad(&e))?,
                ),
                other => return Err(format!("JWK curve {other:?} is not P-256, P-384 or P-521")),
            };
            Ok((Some(PublicKey::Ec { key: public, alg }), private))
        }
        other => Err(format!("JWK key type {other:?} is not RSA or EC")),
    }
}

fn uint(bytes: &[u8]) -> BoxedUint {
    let bits = (bytes.len().max(1) * 8).next_multiple_of(64) as u32;
    BoxedUint::from_be_slice(bytes, bits).expect("precision covers the bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwe;
    use elliptic_curve::sec1::ToSec1Point;
    use getrandom::{rand_core::UnwrapErr, SysRng};
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    use rsa::Generate as _;

    fn b64(bytes: &[u8]) -> String {
        B64URL.encode(bytes)
    }

    fn opens(public: &PublicKey, private: &PrivateKey) -> bool {
        let sealed = jwe::wrap(std::slice::from_ref(public), b"options").unwrap();
        jwe::unwrap(&sealed, std::slice::from_ref(private))
            .unwrap()
            .is_some_and(|plain| &plain[..] == b"options")
    }

    #[test]
    fn ec_jwk_keys_with_an_alg_wrap_and_unwrap() {
        let secret = p256::SecretKey::generate();
        let point = secret.public_key().to_sec1_point(false);
        let (x, y) = (b64(point.x().unwrap()), b64(point.y().unwrap()));
        let public =
            format!(r#"{{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A128KW","x":"{x}","y":"{y}"}}"#);
        let private = format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}","d":"{}"}}"#,
            b64(&secret.to_bytes())
        );
        let public = parse_public_key(public.as_bytes()).unwrap();
        assert!(matches!(
            public,
            PublicKey::Ec {
                alg: "ECDH-ES+A128KW",
                ..
            }
        ));
        let private = parse_private_key(private.as_bytes(), None).unwrap();
        assert!(opens(&public, &private));
    }

    #[test]
    fn rsa_jwk_keys_with_rsa_oaep_256_wrap_and_unwrap() {
        let key = RsaPrivateKey::new(&mut UnwrapErr(SysRng), 2048).unwrap();
        let trimmed = |u: &BoxedUint| b64(&u.to_be_bytes_trimmed_vartime());
        let (n, e) = (b64(&key.n_bytes()), b64(&key.e_bytes()));
        let public = format!(r#"{{"kty":"RSA","alg":"RSA-OAEP-256","n":"{n}","e":"{e}"}}"#);
        let primes = key.primes();
        let private = format!(
            r#"{{"kty":"RSA","n":"{n}","e":"{e}","d":"{}","p":"{}","q":"{}"}}"#,
            trimmed(key.d()),
            trimmed(primes[0].as_ref()),
            trimmed(primes[1].as_ref())
        );
        let public = parse_public_key(public.as_bytes()).unwrap();
        assert!(matches!(
            public,
            PublicKey::Rsa {
                alg: "RSA-OAEP-256",
                ..
            }
        ));
        let private = parse_private_key(private.as_bytes(), None).unwrap();
        assert!(opens(&public, &private));
    }

    #[test]
    fn unusable_key_files_say_why() {
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            parse_public_key(cert).unwrap_err(),
            "an X.509 certificate is a pkcs7 recipient, not jwe"
        );
        assert_eq!(
            parse_private_key(br#"{"kty":"oct","k":"AAAA"}"#, None).unwrap_err(),
            "JWK key type \"oct\" is not RSA or EC"
        );
        assert_eq!(
            parse_public_key(br#"{"kty":"RSA","alg":"RSA1_5","n":"AQAB","e":"AQAB"}"#).unwrap_err(),
            "JWK alg \"RSA1_5\" is not RSA-OAEP or RSA-OAEP-256"
        );
    }

    #[test]
    fn key_specs_split_the_password_off() {
        let spec: KeySpec = "/no/such/key.pem:secret".parse().unwrap();
        assert_eq!(spec.path, Path::new("/no/such/key.pem"));
        assert_eq!(spec.password.as_deref().map(String::as_str), Some("secret"));
        let spec: KeySpec = "/no/such/key.pem:pass=a:b".parse().unwrap();
        assert_eq!(spec.password.as_deref().map(String::as_str), Some("a:b"));
        let spec: KeySpec = "/no/such/key.pem".parse().unwrap();
        assert!(spec.password.is_none());
    }
}
