//! What users type to name an image: `debian:12`, `127.0.0.1:5000/a/b:t`, `ipfs://CID`, a CID.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// The registry Docker means when a name has none.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// An image in a registry, normalised as Docker does (`ubuntu` is
    /// `docker.io/library/ubuntu:latest`).
    Registry {
        /// Host and optional port.
        domain: String,
        /// Repository path inside the registry.
        repository: String,
        /// Tag, `latest` when neither tag nor digest was given.
        tag: Option<String>,
        /// Digest, when pinned.
        digest: Option<Digest>,
    },
    /// An image in IPFS by its image CID (`ipfs://CID` or a bare CID), normalised to CIDv1
    /// base32 as nerdctl prints it.
    Ipfs(cid::Cid),
}

/// Why a reference was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The text is not a valid reference.
    #[error("invalid reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

impl Reference {
    /// The name an image with this reference is stored under locally: the full registry
    /// reference, or the bare CID for IPFS images (as nerdctl names them).
    pub fn image_name(&self) -> String {
        self.to_string()
    }

    /// Parses a CID given as `ipfs://CID` or bare, accepting CIDv0 and any multibase.
    fn parse_ipfs(s: &str) -> Option<Result<Reference, ReferenceError>> {
        let (text, explicit) = match s.strip_prefix("ipfs://") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        // The cid crate also takes paths (`HOST/ipfs/CID`): a CID is one alphanumeric word.
        let word = text.bytes().all(|b| b.is_ascii_alphanumeric());
        match cid::Cid::try_from(text) {
            Ok(c) if word => Some(Ok(Reference::Ipfs(to_v1(c)))),
            _ if explicit => Some(Err(ReferenceError::Invalid(s.into(), "not a CID"))),
            _ => None,
        }
    }
}

/// CIDv0 becomes the CIDv1 of the same block (dag-pb), so every spelling gives one name.
fn to_v1(c: cid::Cid) -> cid::Cid {
    if c.version() == cid::Version::V0 {
        cid::Cid::new_v1(c.codec(), *c.hash())
    } else {
        c
    }
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* (distribution-spec name grammar)
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || b"._-".contains(&x))
}

fn split_domain(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ if name.contains('/') => (DOCKER_HUB.to_string(), name.to_string()),
        _ => (DOCKER_HUB.to_string(), format!("library/{name}")),
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why| ReferenceError::Invalid(s.to_string(), why);
        if s.len() >= 46 || s.starts_with("ipfs://") {
            if let Some(r) = Reference::parse_ipfs(s) {
                return r;
            }
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|_| invalid("bad digest"))?),
            ),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid("bad tag"));
            }
        }
        let (domain, repository) = split_domain(name);
        if domain.is_empty() || !repository.split('/').all(valid_component) {
            return Err(invalid(
                "repository must be lowercase letters, digits and separators",
            ));
        }
        if let Some((_, port)) = domain.rsplit_once(':') {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid("bad registry port"));
            }
        }
        // distribution-spec: clients cap host + "/" + name at 255 characters
        if domain.len() + 1 + repository.len() > 255 {
            return Err(invalid("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference::Registry {
            domain,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Ipfs(c) => write!(f, "{c}"),
            Reference::Registry {
                domain,
                repository,
                tag,
                digest,
            } => {
                write!(f, "{domain}/{repository}")?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                if let Some(d) = digest {
                    write!(f, "@{d}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> String {
        s.parse::<Reference>().unwrap().to_string()
    }

    #[test]
    fn docker_names_are_normalised() {
        assert_eq!(parse("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(parse("me/app:1.0"), "docker.io/me/app:1.0");
        assert_eq!(parse("127.0.0.1:5000/a/b:t"), "127.0.0.1:5000/a/b:t");
        assert_eq!(parse("localhost/x"), "localhost/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse(&format!("reg.io/x@{d}")), format!("reg.io/x@{d}"));
    }

    #[test]
    fn ipfs_references_accept_prefix_bare_and_v0() {
        let v1 = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
        assert_eq!(parse(&format!("ipfs://{v1}")), v1);
        assert_eq!(parse(v1), v1);
        assert_eq!(
            parse("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"),
            "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"
        );
    }

    #[test]
    fn registry_endpoint_names_stay_registry_references() {
        let v1 = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
        let name = format!("127.0.0.1:5050/ipfs/{v1}");
        assert_eq!(parse(&name), format!("{name}:latest"));
        assert!(format!("ipfs://x/ipfs/{v1}").parse::<Reference>().is_err());
    }

    #[test]
    fn bad_references_say_why() {
        let e = "Ubuntu".parse::<Reference>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid reference \"Ubuntu\": repository must be lowercase letters, digits and separators"
        );
        assert!("ipfs://nope".parse::<Reference>().is_err());
        assert!("a:b:c".parse::<Reference>().is_err());
        let e = "127.0.0.1:99999/x:y".parse::<Reference>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid reference \"127.0.0.1:99999/x:y\": bad registry port"
        );
        assert!(format!("reg.io/{}", "a".repeat(300))
            .parse::<Reference>()
            .is_err());
    }
}
