//! PKCS#7 key wrapping of the private layer options (ocicrypt `keywrap/pkcs7`, which calls
//! Mozilla's Go `pkcs7.Encrypt` with AES-128-GCM).
//!
//! Wrap: one CMS EnvelopedData for all recipient certificates; the content key goes to each
//! certificate's RSA key with PKCS#1 v1.5 (`rsaEncryption`), each recipient named by issuer
//! and serial number. The bytes are those Go writes, quirks included: the GCM parameters
//! `SEQUENCE {nonce, icvLen}` sit inside a second, primitive-tagged SEQUENCE (Go marshals an
//! `asn1.RawValue` around the already-encoded parameters), and the ciphertext is a constructed
//! `[0]` holding one OCTET STRING, and the nonce is tagged `[4]`. Go's decoder reads the parameters from inside that wrapper,
//! so writing plain DER would make Go fail; OpenSSL in turn refuses Go's form. Unwrap accepts
//! both forms.

use aes_gcm::aead::{Aead, KeyInit};
use der::asn1::ObjectIdentifier;
use der::{DecodePem as _, Encode as _};
use getrandom::rand_core::UnwrapErr;
use getrandom::SysRng;
use pkcs8::DecodePublicKey as _;
use rsa::{Pkcs1v15Encrypt, PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use zeroize::Zeroizing;

use crate::Error;

const ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const AES128_GCM: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.6");
const AES256_GCM: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.46");

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
/// `[0]` constructed (explicit content of ContentInfo; Go's encrypted content).
const CONTEXT_0: u8 = 0xa0;
/// `[0]` primitive (encrypted content as RFC 5652 writes it).
const CONTEXT_0_PRIMITIVE: u8 = 0x80;
/// The universal SEQUENCE tag without the constructed bit, as Go writes the GCM parameters.
const GO_RAW_SEQUENCE: u8 = 0x10;
/// `[4]` primitive: Go's struct tag `asn1:"tag:4"` on the GCM nonce makes it context-specific
/// where RFC 5084 has a universal OCTET STRING (also tag number 4).
const GO_NONCE: u8 = 0x84;

/// A recipient's X.509 certificate: its RSA key and the issuer and serial number that name it
/// in an EnvelopedData.
#[derive(Clone, Debug)]
pub struct Certificate {
    /// The subject, for messages.
    pub subject: String,
    /// The certificate's RSA public key.
    pub key: RsaPublicKey,
    /// DER `IssuerAndSerialNumber`.
    issuer_and_serial: Vec<u8>,
}

/// Parses an X.509 certificate (PEM or DER) with an RSA key.
pub fn parse_certificate(bytes: &[u8]) -> Result<Certificate, String> {
    let cert =
        if bytes.starts_with(b"-----BEGIN") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            let text = std::str::from_utf8(bytes).map_err(|_| "bad PEM: not UTF-8".to_string())?;
            let start = text.find("-----BEGIN ").unwrap_or(0);
            x509_cert::Certificate::from_pem(&text[start..])
        } else {
            <x509_cert::Certificate as der::Decode>::from_der(bytes)
        }
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let tbs = cert.tbs_certificate();
    let spki = tbs
        .subject_public_key_info()
        .to_der()
        .map_err(|e| format!("certificate key: {e}"))?;
    let key = RsaPublicKey::from_public_key_der(&spki)
        .map_err(|_| "the certificate's key is not RSA (pkcs7 recipients need RSA)".to_string())?;
    let mut body = tbs
        .issuer()
        .to_der()
        .map_err(|e| format!("certificate issuer: {e}"))?;
    body.extend(
        tbs.serial_number()
            .to_der()
            .map_err(|e| format!("certificate serial: {e}"))?,
    );
    Ok(Certificate {
        subject: tbs.subject().to_string(),
        key,
        issuer_and_serial: tlv(SEQUENCE, &body),
    })
}

/// Encrypts `plaintext` for every certificate; returns the DER ContentInfo.
pub fn wrap(recipients: &[Certificate], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let mut cek = Zeroizing::new([0u8; 16]);
    let mut nonce = [0u8; 12];
    getrandom::fill(cek.as_mut()).map_err(|e| Error::Random(e.to_string()))?;
    getrandom::fill(&mut nonce).map_err(|e| Error::Random(e.to_string()))?;

    let mut infos = Vec::new();
    for cert in recipients {
        let encrypted_key = cert
            .key
            .encrypt(&mut UnwrapErr(SysRng), Pkcs1v15Encrypt, cek.as_ref())
            .map_err(|e| Error::Format(format!("RSA PKCS#1 v1.5 for {}: {e}", cert.subject)))?;
        let info = [
            tlv(INTEGER, &[0]),
            cert.issuer_and_serial.clone(),
            tlv(SEQUENCE, &oid(&RSA_ENCRYPTION)),
            tlv(OCTET_STRING, &encrypted_key),
        ]
        .concat();
        infos.push(tlv(SEQUENCE, &info));
    }
    // DER orders SET OF by encoding (Go's encoding/asn1 does too).
    infos.sort();

    let sealed = aes_gcm::Aes128Gcm::new((&*cek).into())
        .encrypt((&nonce).into(), plaintext)
        .map_err(|_| Error::Format("AES-128-GCM encryption failed".into()))?;
    let params = tlv(
        SEQUENCE,
        &[tlv(GO_NONCE, &nonce), tlv(INTEGER, &[16])].concat(),
    );
    let algorithm = tlv(
        SEQUENCE,
        &[oid(&AES128_GCM), tlv(GO_RAW_SEQUENCE, &params)].concat(),
    );
    let content_info = tlv(
        SEQUENCE,
        &[
            oid(&DATA),
            algorithm,
            tlv(CONTEXT_0, &tlv(OCTET_STRING, &sealed)),
        ]
        .concat(),
    );
    let enveloped = tlv(
        SEQUENCE,
        &[tlv(INTEGER, &[0]), tlv(SET, &infos.concat()), content_info].concat(),
    );
    Ok(tlv(
        SEQUENCE,
        &[oid(&ENVELOPED_DATA), tlv(CONTEXT_0, &enveloped)].concat(),
    ))
}

/// One recipient of an EnvelopedData.
struct RecipientInfo<'a> {
    issuer_and_serial: &'a [u8],
    encrypted_key: &'a [u8],
}

/// How many recipients an EnvelopedData names (for messages); `None` when it cannot be read.
pub fn recipient_count(message: &[u8]) -> Option<usize> {
    parse(message).ok().map(|(infos, _)| infos.len())
}

/// Decrypts `message` with the first key that opens it: a key whose certificate is in `certs`
/// is used only for the recipient that certificate names; any other RSA key is tried on every
/// recipient (the AES-GCM tag tells a right key from a wrong one). `None` when no key opens it.
pub fn unwrap(
    message: &[u8],
    keys: &[&RsaPrivateKey],
    certs: &[Certificate],
) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
    let (infos, content) = parse(message)?;
    for key in keys {
        let public: &RsaPublicKey = key.as_ref();
        let named: Vec<&[u8]> = certs
            .iter()
            .filter(|c| &c.key == public)
            .map(|c| c.issuer_and_serial.as_slice())
            .collect();
        for info in &infos {
            if !named.is_empty() && !named.contains(&info.issuer_and_serial) {
                continue;
            }
            let Ok(cek) = key.decrypt(Pkcs1v15Encrypt, info.encrypted_key) else {
                continue;
            };
            let cek = Zeroizing::new(cek);
            match content.decrypt(&cek) {
                Some(plain) => return Ok(Some(plain)),
                // The certificate says this recipient is this key: the message was altered.
                None if !named.is_empty() => {
                    return Err(Error::Integrity(
                        "the PKCS#7 content does not decrypt: the wrapped key was altered",
                    ))
                }
                None => continue,
            }
        }
    }
    Ok(None)
}

/// The encrypted content and how to decrypt it.
struct Content<'a> {
    algorithm: ObjectIdentifier,
    nonce: &'a [u8],
    ciphertext: Vec<u8>,
}

impl Content<'_> {
    fn decrypt(&self, cek: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let nonce: &[u8; 12] = self.nonce.try_into().ok()?;
        let plain = match (self.algorithm, cek.len()) {
            (AES128_GCM, 16) => aes_gcm::Aes128Gcm::new_from_slice(cek)
                .ok()?
                .decrypt(nonce.into(), self.ciphertext.as_slice()),
            (AES256_GCM, 32) => aes_gcm::Aes256Gcm::new_from_slice(cek)
                .ok()?
                .decrypt(nonce.into(), self.ciphertext.as_slice()),
            _ => return None,
        };
        plain.ok().map(Zeroizing::new)
    }
}

fn format_error(what: &str) -> Error {
    Error::Format(format!("PKCS#7 EnvelopedData: {what}"))
}

fn parse(message: &[u8]) -> Result<(Vec<RecipientInfo<'_>>, Content<'_>), Error> {
    let mut top = expect(&mut &message[..], SEQUENCE, "ContentInfo")?;
    let content_type = expect(&mut top, OID, "content type")?;
    if content_type != ENVELOPED_DATA.as_bytes() {
        return Err(format_error("the content is not enveloped data"));
    }
    let mut explicit = expect(&mut top, CONTEXT_0, "content")?;
    let mut enveloped = expect(&mut explicit, SEQUENCE, "EnvelopedData")?;
    expect(&mut enveloped, INTEGER, "version")?;
    if peek(enveloped) == Some(CONTEXT_0) {
        // originatorInfo (certificates and CRLs): not needed to decrypt.
        read(&mut enveloped)?;
    }
    let mut set = expect(&mut enveloped, SET, "recipientInfos")?;
    let mut infos = Vec::new();
    while !set.is_empty() {
        let (tag, mut info) = read(&mut set)?;
        // Only KeyTransRecipientInfo (a SEQUENCE); key agreement and the others are skipped.
        if tag != SEQUENCE {
            continue;
        }
        let version = expect(&mut info, INTEGER, "recipient version")?;
        if version != [0] {
            // Version 2 names the recipient by subject key identifier: not ocicrypt's form.
            continue;
        }
        let issuer_and_serial = raw(&mut info, SEQUENCE, "issuerAndSerialNumber")?;
        let mut alg = expect(&mut info, SEQUENCE, "key encryption algorithm")?;
        let alg = expect(&mut alg, OID, "key encryption algorithm")?;
        let encrypted_key = expect(&mut info, OCTET_STRING, "encrypted key")?;
        if alg == RSA_ENCRYPTION.as_bytes() {
            infos.push(RecipientInfo {
                issuer_and_serial,
                encrypted_key,
            });
        }
    }
    let mut eci = expect(&mut enveloped, SEQUENCE, "EncryptedContentInfo")?;
    expect(&mut eci, OID, "content type")?;
    let mut alg = expect(&mut eci, SEQUENCE, "content encryption algorithm")?;
    let algorithm = ObjectIdentifier::from_bytes(expect(&mut alg, OID, "content algorithm")?)
        .map_err(|_| format_error("bad content encryption algorithm"))?;
    if algorithm != AES128_GCM && algorithm != AES256_GCM {
        // TODO: AES-CBC content (OpenSSL's default); ocicrypt writes only AES-128-GCM.
        return Err(format_error(&format!(
            "content encryption {algorithm} is not AES-GCM"
        )));
    }
    let (tag, mut params) = read(&mut alg)?;
    if tag == GO_RAW_SEQUENCE {
        params = expect(&mut params, SEQUENCE, "GCM parameters")?;
    } else if tag != SEQUENCE {
        return Err(format_error("GCM parameters are not a SEQUENCE"));
    }
    let nonce = match read(&mut params)? {
        (OCTET_STRING | GO_NONCE, nonce) => nonce,
        _ => return Err(format_error("GCM nonce is not an OCTET STRING")),
    };
    if !params.is_empty() && expect(&mut params, INTEGER, "GCM tag length")? != [16] {
        return Err(format_error("GCM tag length is not 16"));
    }
    let (tag, body) = read(&mut eci)?;
    let ciphertext = match tag {
        CONTEXT_0_PRIMITIVE => body.to_vec(),
        CONTEXT_0 => {
            let mut parts = body;
            let mut all = Vec::new();
            while !parts.is_empty() {
                all.extend_from_slice(expect(&mut parts, OCTET_STRING, "encrypted content")?);
            }
            all
        }
        _ => return Err(format_error("no encrypted content")),
    };
    let content = Content {
        algorithm,
        nonce,
        ciphertext,
    };
    Ok((infos, content))
}

/// The next element's tag and contents; single-byte tags and definite lengths only (DER).
fn read<'a>(input: &mut &'a [u8]) -> Result<(u8, &'a [u8]), Error> {
    let (tag, header, len) = header(input)?;
    let body = &input[header..header + len];
    *input = &input[header + len..];
    Ok((tag, body))
}

fn header(input: &[u8]) -> Result<(u8, usize, usize), Error> {
    let truncated = || format_error("truncated");
    let (&tag, rest) = input.split_first().ok_or_else(truncated)?;
    if tag & 0x1f == 0x1f {
        return Err(format_error("multi-byte tags are not used by CMS"));
    }
    let (&first, rest) = rest.split_first().ok_or_else(truncated)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(format_error("bad length (indefinite lengths are not DER)"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        (len, 2 + n)
    };
    if input.len() - header < len {
        return Err(truncated());
    }
    Ok((tag, header, len))
}

fn peek(input: &[u8]) -> Option<u8> {
    input.first().copied()
}

fn expect<'a>(input: &mut &'a [u8], tag: u8, what: &str) -> Result<&'a [u8], Error> {
    let (found, body) = read(input)?;
    if found != tag {
        return Err(format_error(&format!(
            "{what}: unexpected tag 0x{found:02x}"
        )));
    }
    Ok(body)
}

/// The next element, header included, when it has `tag`.
fn raw<'a>(input: &mut &'a [u8], tag: u8, what: &str) -> Result<&'a [u8], Error> {
    let (found, header, len) = header(input)?;
    if found != tag {
        return Err(format_error(&format!(
            "{what}: unexpected tag 0x{found:02x}"
        )));
    }
    let whole = &input[..header + len];
    *input = &input[header + len..];
    Ok(whole)
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

fn oid(oid: &ObjectIdentifier) -> Vec<u8> {
    tlv(OID, oid.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_encode_in_short_and_long_form() {
        assert_eq!(tlv(OCTET_STRING, &[7; 3]), [4, 3, 7, 7, 7]);
        let long = tlv(OCTET_STRING, &[0; 300]);
        assert_eq!(&long[..4], &[4, 0x82, 0x01, 0x2c]);
        let mut input = long.as_slice();
        assert_eq!(read(&mut input).unwrap(), (OCTET_STRING, &[0u8; 300][..]));
        assert!(input.is_empty());
    }

    /// A throwaway RSA key and its self-signed certificate (openssl req -x509), test-only.
    const KEY: &[u8] = include_bytes!("../testdata/pkcs7-key.pem");
    const CERT: &[u8] = include_bytes!("../testdata/pkcs7-cert.pem");

    fn key() -> RsaPrivateKey {
        match crate::keys::parse_private_key(KEY, None).unwrap() {
            crate::keys::PrivateKey::Rsa(k) => *k,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrapped_options_open_with_the_key_with_or_without_its_certificate() {
        let cert = parse_certificate(CERT).unwrap();
        assert_eq!(cert.subject, "CN=ferry unit test");
        let message = wrap(std::slice::from_ref(&cert), b"options").unwrap();
        assert_eq!(recipient_count(&message), Some(1));
        let key = key();
        for certs in [&[][..], std::slice::from_ref(&cert)] {
            let plain = unwrap(&message, &[&key], certs).unwrap().unwrap();
            assert_eq!(&plain[..], b"options");
        }
    }

    #[test]
    fn altered_content_is_an_integrity_error_for_the_named_key_and_no_match_otherwise() {
        let cert = parse_certificate(CERT).unwrap();
        let mut message = wrap(std::slice::from_ref(&cert), b"options").unwrap();
        let last = message.len() - 1;
        message[last] ^= 1; // the GCM tag is the last byte of the content
        let key = key();
        assert!(unwrap(&message, &[&key], &[]).unwrap().is_none());
        assert_eq!(
            unwrap(&message, &[&key], &[cert]).unwrap_err().to_string(),
            "integrity check failed: the PKCS#7 content does not decrypt: the wrapped key was altered"
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let message = tlv(
            SEQUENCE,
            &[oid(&ENVELOPED_DATA), tlv(CONTEXT_0, &[0; 40])].concat(),
        );
        for len in 0..message.len() {
            assert!(parse(&message[..len]).is_err());
        }
    }
}
