//! Registry credentials and trusted CAs for pulls and pushes, kept where Docker and nerdctl
//! keep them.
//!
//! Credentials live in Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`): `auths` maps a registry to `{"auth": base64("user:password")}`
//! (or an `identitytoken` / `registrytoken`), `credHelpers` maps a registry to a credential
//! helper and `credsStore` names the helper for all the others. A helper NAME is the program
//! `docker-credential-NAME` (`get`, `store`, `erase`, the server on stdin). Docker Hub's key is
//! `https://index.docker.io/v1/`; other registries are keyed by `HOST[:PORT]`.
//!
//! CA certificates for a registry: the `--ca-cert` files, then every `*.crt` in
//! `/etc/docker/certs.d/HOST[:PORT]/` and `ROOT/certs.d/HOST[:PORT]/` (Docker's layout).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use ferry_distribution::Auth;
use ferry_oci::Reference;
use serde_json::{Map, Value};

/// Docker Hub's registry name in references.
pub const DOCKER_HUB: &str = "docker.io";

/// Docker Hub's key in `config.json` and for credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Where Docker keeps its client settings: `$DOCKER_CONFIG`, else `~/.docker`.
fn docker_config_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("neither DOCKER_CONFIG nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".docker"))
}

/// The `config.json` file of [`docker_config_dir`].
pub fn docker_config_file() -> Result<PathBuf> {
    Ok(docker_config_dir()?.join("config.json"))
}

/// The registry part of a server as users write it (`https://host:5000/v2/`, `host:5000`,
/// `docker.io`): `HOST[:PORT]`, with Docker Hub's names all `docker.io`.
pub fn registry_domain(server: &str) -> String {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

/// The key a registry's credentials are stored under.
pub fn config_key(domain: &str) -> String {
    match domain == DOCKER_HUB {
        true => DOCKER_HUB_KEY.to_string(),
        false => domain.to_string(),
    }
}

/// The credentials stored for the registry of `reference`; anonymous when there are none.
pub fn credentials(reference: &Reference) -> Result<Auth> {
    let Reference::Registry { domain, .. } = reference else {
        return Ok(Auth::Anonymous);
    };
    Ok(stored(domain)?.unwrap_or_default())
}

/// The credentials stored for `domain` (`HOST[:PORT]`, or `docker.io`), if any.
pub fn stored(domain: &str) -> Result<Option<Auth>> {
    let path = docker_config_file()?;
    let config = read_config(&path)?;
    let key = config_key(domain);
    if let Some(helper) = helper_for(&config, domain) {
        if let Some(auth) = helper_get(&helper, &key)? {
            return Ok(Some(auth));
        }
    }
    let Some(entry) = find_auths_entry(&config, domain) else {
        return Ok(None);
    };
    auth_of_entry(entry).with_context(|| format!("{}: auths entry for {key}", path.display()))
}

/// Stores credentials for `domain`: with its credential helper when one is configured, else
/// base64 in `auths` of `config.json` (mode 600, replaced atomically, other settings kept).
/// Returns where they went, for the user.
pub fn store(domain: &str, username: &str, password: &str) -> Result<String> {
    let path = docker_config_file()?;
    let mut config = read_config(&path)?;
    let key = config_key(domain);
    if let Some(helper) = helper_for(&config, domain) {
        let input = serde_json::json!({"ServerURL": key, "Username": username, "Secret": password});
        run_helper(&helper, "store", &input.to_string())?;
        return Ok(format!("credential helper docker-credential-{helper}"));
    }
    let auths = object_field(&mut config, "auths", &path)?;
    // An older entry under another spelling of the same registry would shadow nothing but
    // confuse; replace it.
    auths.retain(|k, _| registry_domain(k) != domain);
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    auths.insert(key, serde_json::json!({ "auth": encoded }));
    write_config(&path, &config)?;
    Ok(path.display().to_string())
}

/// Removes the credentials stored for `domain` (from its helper and from `auths`). Returns
/// whether there were any.
pub fn erase(domain: &str) -> Result<bool> {
    let path = docker_config_file()?;
    let mut config = read_config(&path)?;
    let mut found = false;
    if let Some(helper) = helper_for(&config, domain) {
        let key = config_key(domain);
        found = helper_get(&helper, &key)?.is_some();
        if found {
            run_helper(&helper, "erase", &key)?;
        }
    }
    if let Some(Value::Object(auths)) = config.get_mut("auths") {
        let before = auths.len();
        auths.retain(|k, _| registry_domain(k) != domain);
        if auths.len() != before {
            found = true;
            write_config(&path, &config)?;
        }
    }
    Ok(found)
}

/// [`ca_certs`] for the registry of `reference` (none for an IPFS reference).
pub fn ca_certs_for(reference: &Reference, flags: &[PathBuf], root: &Path) -> Result<Vec<Vec<u8>>> {
    match reference {
        Reference::Registry { domain, .. } => ca_certs(domain, flags, root),
        _ => Ok(Vec::new()),
    }
}

/// CA certificates (PEM) to trust for `domain`: `flags` (the `--ca-cert` files), then the
/// `*.crt` files of `/etc/docker/certs.d/DOMAIN/` and `ROOT/certs.d/DOMAIN/`.
pub fn ca_certs(domain: &str, flags: &[PathBuf], root: &Path) -> Result<Vec<Vec<u8>>> {
    let mut files: Vec<PathBuf> = flags.to_vec();
    for dir in [Path::new("/etc/docker/certs.d"), &root.join("certs.d")] {
        let dir = dir.join(domain.replace(['[', ']'], ""));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
        .iter()
        .map(|file| {
            let pem = std::fs::read(file)
                .with_context(|| format!("read CA certificate {}", file.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                bail!(
                    "CA certificate {}: no PEM certificate in it",
                    file.display()
                );
            }
            Ok(pem)
        })
        .collect()
}

fn read_config(path: &Path) -> Result<Value> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Value::Object(Map::new())),
        Ok(bytes) => {
            let value: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("read {}", path.display()))?;
            match value {
                Value::Object(_) => Ok(value),
                _ => bail!("read {}: not a JSON object", path.display()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Object(Map::new())),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Writes `config` to `path` through a temporary file in the same directory (mode 600), so a
/// reader sees the old file or the new one, never a part.
fn write_config(path: &Path, config: &Value) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("write {}", path.display()))?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("write {}", path.display()))?;
    let mut text = serde_json::to_vec_pretty(config)?;
    text.push(b'\n');
    file.write_all(&text)
        .and_then(|_| file.as_file().sync_all())
        .with_context(|| format!("write {}", path.display()))?;
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// The object at `config[name]`, made when missing.
fn object_field<'c>(
    config: &'c mut Value,
    name: &str,
    path: &Path,
) -> Result<&'c mut Map<String, Value>> {
    let Value::Object(map) = config else {
        bail!("{}: not a JSON object", path.display());
    };
    match map.entry(name).or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(field) => Ok(field),
        _ => bail!("{}: {name} is not a JSON object", path.display()),
    }
}

/// The credential helper for `domain`: its `credHelpers` entry, else `credsStore`.
fn helper_for(config: &Value, domain: &str) -> Option<String> {
    let named = config
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|helpers| {
            helpers
                .iter()
                .find(|(k, _)| registry_domain(k) == domain)
                .and_then(|(_, v)| v.as_str())
        });
    named
        .or_else(|| config.get("credsStore").and_then(Value::as_str))
        .filter(|name| !name.is_empty())
        .map(str::to_string)
}

/// The `auths` entry for `domain`, whichever way its key is written (`https://host/v1/`,
/// `host`).
fn find_auths_entry<'c>(config: &'c Value, domain: &str) -> Option<&'c Value> {
    let auths = config.get("auths")?.as_object()?;
    auths.get(&config_key(domain)).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| registry_domain(k) == domain)
            .map(|(_, v)| v)
    })
}

/// The credentials an `auths` entry holds; None for an empty entry.
fn auth_of_entry(entry: &Value) -> Result<Option<Auth>> {
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(token) = field("registrytoken") {
        return Ok(Some(Auth::Bearer(token.to_string())));
    }
    if let Some(token) = field("identitytoken") {
        // TODO: Docker exchanges an identity token as an OAuth2 refresh token at the token
        // service; oci-client has no such request, so it is presented as a bearer token.
        return Ok(Some(Auth::Bearer(token.to_string())));
    }
    if let Some(encoded) = field("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| anyhow!("auth is not base64: {e}"))?;
        let text = String::from_utf8(decoded).map_err(|_| anyhow!("auth is not UTF-8"))?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| anyhow!("auth is not base64 of user:password"))?;
        return Ok(Some(Auth::Basic {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => Ok(Some(Auth::Basic {
            username: username.to_string(),
            password: password.to_string(),
        })),
        _ => Ok(None),
    }
}

/// `docker-credential-HELPER get` for `key`: None when the helper has nothing for it.
fn helper_get(helper: &str, key: &str) -> Result<Option<Auth>> {
    let out = match run_helper(helper, "get", key) {
        Ok(out) => out,
        Err(HelperError::NotFound) => return Ok(None),
        Err(HelperError::Failed(e)) => return Err(e),
    };
    let value: Value = serde_json::from_slice(&out)
        .map_err(|e| anyhow!("docker-credential-{helper} get {key}: bad answer: {e}"))?;
    let text = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
    let (username, secret) = (text("Username"), text("Secret"));
    Ok(match (username, secret) {
        (_, "") => None,
        // Docker's convention for an identity token kept by a helper.
        ("<token>", token) => Some(Auth::Bearer(token.to_string())),
        (username, password) => Some(Auth::Basic {
            username: username.to_string(),
            password: password.to_string(),
        }),
    })
}

enum HelperError {
    /// The helper has no credentials for the server.
    NotFound,
    Failed(anyhow::Error),
}

impl From<HelperError> for anyhow::Error {
    fn from(e: HelperError) -> anyhow::Error {
        match e {
            HelperError::NotFound => anyhow!("credentials not found"),
            HelperError::Failed(e) => e,
        }
    }
}

/// Runs `docker-credential-HELPER ACTION` with `input` on stdin; its stdout.
fn run_helper(helper: &str, action: &str, input: &str) -> Result<Vec<u8>, HelperError> {
    let program = format!("docker-credential-{helper}");
    let failed = |why: String| HelperError::Failed(anyhow!("{program} {action}: {why}"));
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let said = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ");
    // The message every helper of docker-credential-helpers gives.
    if said.contains("credentials not found") {
        return Err(HelperError::NotFound);
    }
    Err(failed(format!("{}: {said}", out.status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_normalise_to_registry_domains() {
        assert_eq!(registry_domain("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_domain("registry-1.docker.io"), "docker.io");
        assert_eq!(
            registry_domain("https://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_domain("Example.com:443"), "example.com:443");
        assert_eq!(config_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn auths_entries_give_basic_or_bearer() {
        let config = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "http://r.example:5000": {"identitytoken": "tok"},
            "reg.example": {"registrytoken": "rt"},
            "empty.example": {},
        }});
        let get = |d: &str| auth_of_entry(find_auths_entry(&config, d).unwrap()).unwrap();
        assert_eq!(
            get("docker.io"),
            Some(Auth::Basic {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(get("r.example:5000"), Some(Auth::Bearer("tok".into())));
        assert_eq!(get("reg.example"), Some(Auth::Bearer("rt".into())));
        assert_eq!(get("empty.example"), None);
        assert!(find_auths_entry(&config, "other.example").is_none());
    }

    #[test]
    fn helpers_come_from_cred_helpers_then_creds_store() {
        let config = serde_json::json!({
            "credsStore": "desktop",
            "credHelpers": {"r.example:5000": "pass"},
        });
        assert_eq!(
            helper_for(&config, "r.example:5000").as_deref(),
            Some("pass")
        );
        assert_eq!(helper_for(&config, "docker.io").as_deref(), Some("desktop"));
        assert_eq!(helper_for(&serde_json::json!({}), "docker.io"), None);
    }
}
