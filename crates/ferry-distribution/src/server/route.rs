//! What a request path asks for (formats.md 3.1): the API root, a manifest, a blob or the tag
//! list of one `ipfs/<CID>` repository.

use cid::Cid;
use ferry_oci::Digest;

use super::error::ApiError;

/// The longest repository name accepted; clients cap host + name at 255 characters.
const MAX_NAME: usize = 255;

/// A parsed request path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v2/`.
    Root,
    /// `/v2/ipfs/<CID>/manifests/<reference>`.
    Manifest(Cid, ManifestRef),
    /// `/v2/ipfs/<CID>/blobs/<digest>`.
    Blob(Cid, Digest),
    /// `/v2/ipfs/<CID>/tags/list`.
    Tags(Cid),
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ManifestRef {
    /// A tag; only `latest` exists in an IPFS image.
    Tag(String),
    /// A digest of a manifest or index in the image.
    Digest(Digest),
}

/// Parses `path` (without the query). Refusals carry the OCI error code that fits: a name
/// that breaks the spec's grammar (`..`, empty segments, percent escapes) is NAME_INVALID, a
/// valid name other than `ipfs/<CID>` is NAME_UNKNOWN, a bad digest DIGEST_INVALID.
pub(crate) fn parse(path: &str) -> Result<Route, ApiError> {
    if path == "/v2/" || path == "/v2" {
        return Ok(Route::Root);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Err(ApiError::not_found_path(path));
    };

    // the name is everything before the last `/manifests/`, `/blobs/` or `/tags/list`
    let (name, kind, tail) = split_endpoint(rest).ok_or_else(|| ApiError::not_found_path(path))?;
    let cid = parse_name(name)?;
    match kind {
        "manifests" => Ok(Route::Manifest(cid, parse_reference(tail)?)),
        "blobs" => Ok(Route::Blob(cid, parse_digest(tail)?)),
        _ => Ok(Route::Tags(cid)),
    }
}

fn split_endpoint(rest: &str) -> Option<(&str, &str, &str)> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some((name, "tags", ""));
    }
    let (head, tail) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    matches!(kind, "manifests" | "blobs").then_some((name, kind, tail))
}

/// `ipfs/<CID>` with a CID of any version and multibase; a CIDv0 (`Qm…`) breaks the spec's
/// lowercase name grammar but is accepted, as its owner typed it.
fn parse_name(name: &str) -> Result<Cid, ApiError> {
    if name.len() > MAX_NAME || !name.split('/').all(valid_component) {
        if let Some(cid) = name
            .strip_prefix("ipfs/")
            .and_then(|c| Cid::try_from(c).ok())
        {
            return Ok(cid);
        }
        return Err(ApiError::name_invalid(name));
    }
    let Some(text) = name.strip_prefix("ipfs/") else {
        return Err(ApiError::name_unknown(
            name,
            "only ipfs/<CID> repositories are served",
        ));
    };
    Cid::try_from(text).map_err(|e| ApiError::name_invalid_because(name, &e.to_string()))
}

/// One path component of the spec's name grammar: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|&&x| x == b).count();
        let ok = match b {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
        i += run;
    }
    true
}

fn parse_reference(text: &str) -> Result<ManifestRef, ApiError> {
    if text.contains(':') {
        return parse_digest(text).map(ManifestRef::Digest);
    }
    Ok(ManifestRef::Tag(text.to_string()))
}

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    text.parse().map_err(|_| ApiError::digest_invalid(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    const CID_V0: &str = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";
    const DIGEST: &str = "sha256:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

    fn code(path: &str) -> &'static str {
        parse(path).unwrap_err().code
    }

    #[test]
    fn parses_the_pull_endpoints() {
        let cid = Cid::try_from(CID).unwrap();
        assert_eq!(parse("/v2/").unwrap(), Route::Root);
        assert_eq!(
            parse(&format!("/v2/ipfs/{CID}/manifests/latest")).unwrap(),
            Route::Manifest(cid, ManifestRef::Tag("latest".into()))
        );
        assert_eq!(
            parse(&format!("/v2/ipfs/{CID}/blobs/{DIGEST}")).unwrap(),
            Route::Blob(cid, DIGEST.parse().unwrap())
        );
        assert_eq!(
            parse(&format!("/v2/ipfs/{CID}/tags/list")).unwrap(),
            Route::Tags(cid)
        );
    }

    #[test]
    fn accepts_cidv0_and_other_bases() {
        let v0 = Cid::try_from(CID_V0).unwrap();
        let route = parse(&format!("/v2/ipfs/{CID_V0}/manifests/latest")).unwrap();
        assert_eq!(
            route,
            Route::Manifest(v0, ManifestRef::Tag("latest".into()))
        );
        let base58 = Cid::try_from(CID)
            .unwrap()
            .to_string_of_base(cid::multibase::Base::Base58Btc)
            .unwrap();
        assert!(base58.starts_with('z'));
        let route = parse(&format!("/v2/ipfs/{base58}/tags/list")).unwrap();
        assert_eq!(route, Route::Tags(Cid::try_from(CID).unwrap()));
    }

    #[test]
    fn refuses_traversal_bad_names_and_bad_digests() {
        assert_eq!(
            code(&format!("/v2/ipfs/../{CID}/manifests/latest")),
            "NAME_INVALID"
        );
        assert_eq!(code("/v2/ipfs/%2e%2e/manifests/latest"), "NAME_INVALID");
        assert_eq!(code("/v2/ipfs//manifests/latest"), "NAME_INVALID");
        assert_eq!(code("/v2/ipfs/notacid/manifests/latest"), "NAME_INVALID");
        assert_eq!(code("/v2/library/busybox/manifests/latest"), "NAME_UNKNOWN");
        assert_eq!(
            code(&format!("/v2/ipfs/{CID}/blobs/sha256:abc")),
            "DIGEST_INVALID"
        );
        assert_eq!(
            code(&format!("/v2/ipfs/{CID}/manifests/md5:00")),
            "DIGEST_INVALID"
        );
        assert_eq!(code(&format!("/v2/ipfs/{CID}/uploads/")), "UNSUPPORTED");
        assert_eq!(code("/etc/passwd"), "UNSUPPORTED");
    }

    #[test]
    fn name_grammar_follows_the_spec() {
        for ok in ["a", "a.b", "a__b", "a---b", "ab0"] {
            assert!(valid_component(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a..b", "a___b", "-a", "a-", "A", "a%2e"] {
            assert!(!valid_component(bad), "{bad}");
        }
    }
}
