//! The layer cipher `AES_256_CTR_HMAC_SHA256` (ocicrypt `blockcipher/blockcipher_aes_ctr.go`)
//! and its options JSON (`blockcipher/blockcipher.go`).
//!
//! The ciphertext is as long as the plaintext (CTR, no padding); the HMAC-SHA256 of the whole
//! ciphertext, keyed with the AES key itself, goes into the public options. Both directions
//! stream: neither reader holds more than a chunk and a short tail in memory.

use std::io::{self, Read};

use aes::cipher::{KeyIvInit, StreamCipher};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ferry_oci::Digest;
use hmac::Mac;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Error;

/// The one cipher ocicrypt defines (`blockcipher.AES256CTR`).
pub const CIPHER: &str = "AES_256_CTR_HMAC_SHA256";

type Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = hmac::Hmac<Sha256>;

/// How much decrypted plaintext [`DecryptReader`] keeps back until the HMAC is checked
/// (ocicrypt's `DelayedReader` holds 10 KiB): the consumer can never see the end of the stream
/// before the whole ciphertext was authenticated.
const HOLD_BACK: usize = 10 * 1024;

/// Size of one read from the ciphertext.
const CHUNK: usize = 64 * 1024;

/// The secret half of a layer's options: what each recipient's wrapped key unlocks.
#[derive(Clone)]
pub struct PrivateOptions {
    /// The 32-byte AES key (also the HMAC key).
    pub symkey: Zeroizing<[u8; 32]>,
    /// The digest of the plaintext layer blob.
    pub digest: Digest,
    /// The 16-byte initial counter block.
    pub nonce: [u8; 16],
}

impl std::fmt::Debug for PrivateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateOptions")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// The options JSON with Go's field names and order (`PrivateLayerBlockCipherOptions`).
#[derive(Serialize, Deserialize)]
struct PrivateJson {
    symkey: String,
    digest: String,
    #[serde(default)]
    cipheroptions: std::collections::BTreeMap<String, String>,
}

/// `PublicLayerBlockCipherOptions`.
#[derive(Serialize, Deserialize)]
struct PublicJson {
    cipher: String,
    #[serde(default)]
    hmac: String,
    #[serde(default)]
    cipheroptions: std::collections::BTreeMap<String, String>,
}

impl PrivateOptions {
    /// A fresh random key and nonce for a layer whose plaintext digest is `digest`.
    pub fn generate(digest: Digest) -> Result<PrivateOptions, Error> {
        let mut symkey = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 16];
        getrandom::fill(symkey.as_mut()).map_err(|e| Error::Random(e.to_string()))?;
        getrandom::fill(&mut nonce).map_err(|e| Error::Random(e.to_string()))?;
        Ok(PrivateOptions {
            symkey,
            digest,
            nonce,
        })
    }

    /// The JSON every key wrapper encrypts.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let mut cipheroptions = std::collections::BTreeMap::new();
        cipheroptions.insert("nonce".to_string(), B64.encode(self.nonce));
        let json = PrivateJson {
            symkey: B64.encode(self.symkey.as_ref()),
            digest: self.digest.to_string(),
            cipheroptions,
        };
        Zeroizing::new(serde_json::to_vec(&json).expect("plain struct serialises"))
    }

    /// Parses the JSON a key wrapper decrypted.
    pub fn from_json(bytes: &[u8]) -> Result<PrivateOptions, Error> {
        let bad = |why: &str| Error::Format(format!("private layer options: {why}"));
        let json: PrivateJson = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
        let symkey = Zeroizing::new(B64.decode(&json.symkey).map_err(|_| bad("symkey"))?);
        let symkey: [u8; 32] = symkey[..]
            .try_into()
            .map_err(|_| bad("symkey is not 32 bytes (only AES-256 is defined)"))?;
        let nonce = json
            .cipheroptions
            .get("nonce")
            .ok_or_else(|| bad("no nonce"))?;
        let nonce: [u8; 16] = B64
            .decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| bad("nonce is not 16 bytes of base64"))?;
        let digest = json.digest.parse().map_err(|_| bad("digest"))?;
        Ok(PrivateOptions {
            symkey: Zeroizing::new(symkey),
            digest,
            nonce,
        })
    }
}

/// The public options annotation's value (base64 of the JSON) for a layer with this HMAC.
pub fn public_options(hmac: &[u8; 32]) -> String {
    let json = PublicJson {
        cipher: CIPHER.to_string(),
        hmac: B64.encode(hmac),
        cipheroptions: Default::default(),
    };
    B64.encode(serde_json::to_vec(&json).expect("plain struct serialises"))
}

/// The HMAC from a public options annotation; refuses other ciphers and a missing HMAC (as
/// ocicrypt refuses to decrypt without one).
pub fn parse_public_options(annotation: &str) -> Result<[u8; 32], Error> {
    let bad = |why: &str| Error::Format(format!("public layer options: {why}"));
    let json = B64
        .decode(annotation.trim())
        .map_err(|_| bad("not base64"))?;
    let json: PublicJson = serde_json::from_slice(&json).map_err(|e| bad(&e.to_string()))?;
    if json.cipher != CIPHER {
        return Err(bad(&format!("unsupported cipher {:?}", json.cipher)));
    }
    B64.decode(&json.hmac)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| bad("no 32-byte hmac"))
}

/// Encrypts a plaintext stream as it is read; [`EncryptReader::finish`] gives the HMAC.
pub struct EncryptReader<R> {
    inner: R,
    ctr: Ctr,
    mac: HmacSha256,
}

impl<R: Read> EncryptReader<R> {
    /// Encrypts `inner` with the key and nonce of `opts`.
    pub fn new(inner: R, opts: &PrivateOptions) -> EncryptReader<R> {
        EncryptReader {
            inner,
            ctr: Ctr::new((&*opts.symkey).into(), (&opts.nonce).into()),
            mac: <HmacSha256 as hmac::KeyInit>::new_from_slice(opts.symkey.as_ref())
                .expect("HMAC takes any key length"),
        }
    }

    /// The HMAC of all ciphertext read so far (call after the end of the stream).
    pub fn finish(self) -> [u8; 32] {
        self.mac.finalize().into_bytes().into()
    }
}

impl<R: Read> Read for EncryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctr.apply_keystream(&mut buf[..n]);
        self.mac.update(&buf[..n]);
        Ok(n)
    }
}

/// Decrypts a ciphertext stream as it is read. The last [`HOLD_BACK`] bytes are released only
/// after the end of the ciphertext, once its HMAC and the plaintext's digest both matched; on a
/// mismatch the read fails with `InvalidData`, so a consumer that reads to the end (the
/// snapshotter does) never accepts an altered or truncated layer.
pub struct DecryptReader<R> {
    inner: R,
    ctr: Ctr,
    mac: Option<HmacSha256>,
    plain: Sha256,
    expected_mac: [u8; 32],
    expected_digest: Digest,
    /// Decrypted bytes not yet handed out, from `pos`.
    buf: Vec<u8>,
    pos: usize,
    verified: bool,
    /// How much to keep back until the end: [`HOLD_BACK`], or 0 when the ciphertext was
    /// authenticated before (see [`DecryptReader::authenticated`]).
    hold: usize,
}

impl<R: Read> DecryptReader<R> {
    /// Decrypts `inner` with `opts`, checking it against the public options' `hmac`.
    pub fn new(inner: R, opts: &PrivateOptions, hmac: [u8; 32]) -> DecryptReader<R> {
        DecryptReader {
            inner,
            ctr: Ctr::new((&*opts.symkey).into(), (&opts.nonce).into()),
            mac: Some(
                <HmacSha256 as hmac::KeyInit>::new_from_slice(opts.symkey.as_ref())
                    .expect("HMAC takes any key length"),
            ),
            plain: Sha256::new(),
            expected_mac: hmac,
            expected_digest: opts.digest.clone(),
            buf: Vec::new(),
            pos: 0,
            verified: false,
            hold: HOLD_BACK,
        }
    }

    /// Decrypts ciphertext that [`authenticate`] already accepted: no second HMAC and no
    /// holding back (the stream is released as it is decrypted).
    pub fn authenticated(inner: R, opts: &PrivateOptions) -> DecryptReader<R> {
        let mut reader = DecryptReader::new(inner, opts, [0; 32]);
        reader.mac = None;
        reader.hold = 0;
        reader
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > CHUNK {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let start = self.buf.len();
        self.buf.resize(start + CHUNK, 0);
        let n = loop {
            match self.inner.read(&mut self.buf[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(start + n);
        if n == 0 {
            return self.verify();
        }
        let chunk = &mut self.buf[start..];
        if let Some(mac) = self.mac.as_mut() {
            mac.update(chunk);
        }
        self.ctr.apply_keystream(chunk);
        if self.hold > 0 {
            self.plain.update(&*chunk);
        }
        Ok(())
    }

    fn verify(&mut self) -> io::Result<()> {
        if self.hold == 0 {
            self.verified = true;
            return Ok(());
        }
        let Some(mac) = self.mac.take() else {
            return Err(io::Error::other("read after a failed integrity check"));
        };
        let actual: [u8; 32] = mac.finalize().into_bytes().into();
        if !bool::from(actual.ct_eq(&self.expected_mac)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Error::Integrity("HMAC mismatch: the encrypted layer was altered or truncated"),
            ));
        }
        let digest = Digest::from_bytes(std::mem::take(&mut self.plain).finalize().into());
        if digest != self.expected_digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Error::Integrity("decrypted layer does not match the digest in its options"),
            ));
        }
        self.verified = true;
        Ok(())
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let available = self.buf.len() - self.pos;
            let releasable = if self.verified {
                available
            } else {
                available.saturating_sub(self.hold)
            };
            if releasable > 0 || self.verified {
                let n = releasable.min(out.len());
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.fill()?;
        }
    }
}

/// Checks a whole ciphertext against its HMAC before anything is decrypted, so that no
/// unauthenticated plaintext ever reaches a decompressor or an unpacker.
pub fn authenticate(
    mut ciphertext: impl Read,
    opts: &PrivateOptions,
    hmac: &[u8; 32],
) -> Result<(), Error> {
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(opts.symkey.as_ref())
        .expect("HMAC takes any key length");
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match ciphertext.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::Io {
                    what: "read encrypted layer".into(),
                    source,
                })
            }
        };
        mac.update(&buf[..n]);
    }
    let actual: [u8; 32] = mac.finalize().into_bytes().into();
    if !bool::from(actual.ct_eq(hmac)) {
        return Err(Error::Integrity(
            "HMAC mismatch: the encrypted layer was altered or truncated",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_opts(plain: &[u8]) -> PrivateOptions {
        let mut symkey = [0u8; 32];
        symkey
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        let mut nonce = [0u8; 16];
        nonce
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = 0x10 + i as u8);
        PrivateOptions {
            symkey: Zeroizing::new(symkey),
            digest: Digest::of(plain),
            nonce,
        }
    }

    /// The vector of reference/formats.md 4.3-4.4 (computed with Go's crypto/cipher).
    #[test]
    fn encrypts_the_reference_vector() {
        let plain = b"hello world\nhello world\nhello world\n";
        let opts = vector_opts(plain);
        let mut reader = EncryptReader::new(&plain[..], &opts);
        let mut ct = Vec::new();
        reader.read_to_end(&mut ct).unwrap();
        let hmac = reader.finish();
        assert_eq!(
            hex::encode(&ct),
            "81a683e6dd1424898218f8dc5e82c4e296e13cf589f8a0ebde97fc2f320b47bc54741818"
        );
        assert_eq!(
            hex::encode(hmac),
            "523f2895e6f4ec7cba77e4c6c8b2be498d30dbf83672d5c1ddb144a9d249e466"
        );
        let pubopts = B64.decode(public_options(&hmac)).unwrap();
        assert_eq!(
            String::from_utf8(pubopts).unwrap(),
            r#"{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"Uj8oleb07Hy6d+TGyLK+SY0w2/g2ctXB3bFEqdJJ5GY=","cipheroptions":{}}"#
        );
        assert_eq!(
            String::from_utf8(opts.to_json().to_vec()).unwrap(),
            r#"{"symkey":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","digest":"sha256:37fdbe74a4e56943cc901b449e6ba55a0543d3bfb13f10a7174541cb16e7169c","cipheroptions":{"nonce":"EBESExQVFhcYGRobHB0eHw=="}}"#
        );
    }

    fn roundtrip(plain: &[u8], damage: impl Fn(&mut Vec<u8>)) -> io::Result<Vec<u8>> {
        let opts = vector_opts(plain);
        let mut enc = EncryptReader::new(plain, &opts);
        let mut ct = Vec::new();
        enc.read_to_end(&mut ct).unwrap();
        let hmac = enc.finish();
        damage(&mut ct);
        let mut out = Vec::new();
        DecryptReader::new(&ct[..], &opts, hmac)
            .read_to_end(&mut out)
            .map(|_| out)
    }

    #[test]
    fn decrypts_large_streams_and_holds_back_the_tail_until_verified() {
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(roundtrip(&plain, |_| {}).unwrap(), plain);
        assert_eq!(roundtrip(b"", |_| {}).unwrap(), b"");

        let opts = vector_opts(&plain);
        let mut enc = EncryptReader::new(&plain[..], &opts);
        let mut ct = Vec::new();
        enc.read_to_end(&mut ct).unwrap();
        let hmac = enc.finish();
        let last = ct.len() - 1;
        ct[last] ^= 1;
        let mut reader = DecryptReader::new(&ct[..], &opts, hmac);
        let mut seen = Vec::new();
        let err = reader.read_to_end(&mut seen).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            seen.len() <= plain.len() - HOLD_BACK,
            "tail released before the check"
        );
    }

    #[test]
    fn authenticate_then_decrypt_gives_the_plaintext_and_refuses_altered_bytes() {
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let opts = vector_opts(&plain);
        let mut enc = EncryptReader::new(&plain[..], &opts);
        let mut ct = Vec::new();
        enc.read_to_end(&mut ct).unwrap();
        let hmac = enc.finish();
        authenticate(&ct[..], &opts, &hmac).unwrap();
        let mut out = Vec::new();
        DecryptReader::authenticated(&ct[..], &opts)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain);
        ct[5] ^= 4;
        let err = authenticate(&ct[..], &opts, &hmac).unwrap_err();
        assert!(matches!(err, Error::Integrity(_)), "{err}");
    }

    #[test]
    fn altered_or_truncated_ciphertext_fails_the_hmac() {
        let plain = vec![7u8; 50_000];
        let flipped = roundtrip(&plain, |ct| ct[100] ^= 0x80).unwrap_err();
        assert_eq!(
            flipped.to_string(),
            "integrity check failed: HMAC mismatch: the encrypted layer was altered or truncated"
        );
        let cut = roundtrip(&plain, |ct| ct.truncate(40_000)).unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn public_options_refuse_other_ciphers_and_a_missing_hmac() {
        let other = B64.encode(br#"{"cipher":"AES_128_GCM","hmac":"","cipheroptions":{}}"#);
        assert_eq!(
            parse_public_options(&other).unwrap_err().to_string(),
            "invalid encryption metadata: public layer options: unsupported cipher \"AES_128_GCM\""
        );
        let none = B64.encode(br#"{"cipher":"AES_256_CTR_HMAC_SHA256","cipheroptions":{}}"#);
        assert!(parse_public_options(&none).is_err());
    }
}
