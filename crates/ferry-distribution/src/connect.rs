//! Reaching a registry: HTTPS or plain HTTP, which certificate authorities to trust, and
//! `login`'s check of credentials against `/v2/`.
//!
//! A registry is reached over HTTPS, verified against the system's roots plus the CA
//! certificates the caller gives. Loopback registries (Docker's always-insecure ones) and the
//! `--insecure-registry` hosts are tried over HTTPS first and fall back to plain HTTP when they
//! do not speak TLS (as containerd and nerdctl do); a loopback registry that does speak TLS is
//! verified like any other, an insecure-listed one is not.

use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::Client;

use crate::error::{Error, ErrorKind, Fail};
use crate::pull::{chain, is_loopback};
use crate::Auth;

/// How long the HTTPS probe of a loopback or insecure registry may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach one registry, decided once per pull, push or login.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    domain: String,
    plain_http: bool,
    skip_verify: bool,
    certs: Vec<Vec<u8>>,
}

impl Connection {
    /// Decides how to reach `domain`: checks the CA certificates (PEM) and, for a loopback or
    /// insecure-listed registry, whether it speaks TLS.
    pub(crate) async fn open(
        domain: &str,
        insecure: &[String],
        ca_certs: &[Vec<u8>],
    ) -> Result<Connection, Fail> {
        for pem in ca_certs {
            match reqwest::Certificate::from_pem_bundle(pem) {
                Ok(certs) if !certs.is_empty() => {}
                Ok(_) => return Err(Fail::invalid("CA certificate: no PEM certificate found")),
                Err(e) => return Err(Fail::invalid(format!("CA certificate: {}", chain(&e)))),
            }
        }
        let skip_verify = insecure.iter().any(|h| h == domain || h == host_of(domain));
        let mut connection = Connection {
            domain: domain.to_string(),
            plain_http: false,
            skip_verify,
            certs: ca_certs.to_vec(),
        };
        if skip_verify || is_loopback(domain) {
            connection.plain_http = !connection.speaks_tls().await;
            tracing::debug!(domain, plain_http = connection.plain_http, "probed");
        }
        Ok(connection)
    }

    /// The URL scheme used for this registry.
    pub(crate) fn scheme(&self) -> &'static str {
        match self.plain_http {
            true => "http",
            false => "https",
        }
    }

    /// oci-client's settings: bounded waits so a dead registry gives an error, not a hang.
    pub(crate) fn config(&self) -> ClientConfig {
        let protocol = match self.plain_http {
            true => ClientProtocol::HttpsExcept(vec![self.domain.clone()]),
            false => ClientProtocol::Https,
        };
        ClientConfig {
            protocol,
            accept_invalid_certificates: self.skip_verify,
            extra_root_certificates: self
                .certs
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            // Index entries are chosen by the caller, with ferry's platform rules.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        }
    }

    /// An oci-client client with [`Connection::config`] (and `monolithic` pushes or not).
    pub(crate) fn client(&self, monolithic: bool) -> Result<Client, Fail> {
        let mut config = self.config();
        config.use_monolithic_push = monolithic;
        Client::try_from(config).map_err(|e| Fail::invalid(format!("registry client: {e}")))
    }

    /// A plain reqwest client with the same trust settings, for requests oci-client does not
    /// make (the probe, login).
    fn http(&self, timeout: Duration) -> Result<reqwest::Client, Fail> {
        let mut roots = Vec::new();
        for pem in &self.certs {
            roots.extend(reqwest::Certificate::from_pem_bundle(pem).unwrap_or_default());
        }
        reqwest::Client::builder()
            .tls_certs_merge(roots)
            .tls_danger_accept_invalid_certs(self.skip_verify)
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| Fail::invalid(format!("registry client: {}", chain(&e))))
    }

    /// Whether the registry answers a TLS handshake: any answer over HTTPS, or a certificate it
    /// presented that did not verify. A registry that answers in plain HTTP, closes the
    /// connection or refuses it does not.
    async fn speaks_tls(&self) -> bool {
        let Ok(http) = self.http(PROBE_TIMEOUT) else {
            return false;
        };
        match http
            .get(format!("https://{}/v2/", self.domain))
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) => chain(&e).contains("certificate"),
        }
    }
}

/// Checks credentials against a registry as `docker login` does: `GET /v2/`, then, when the
/// registry asks for them, the same with basic auth or a token request to its token service
/// with them. Succeeds when the registry accepts them (or needs none).
pub async fn login(
    domain: &str,
    auth: &Auth,
    insecure: &[String],
    ca_certs: &[Vec<u8>],
) -> Result<(), Error> {
    check_login(domain, auth, insecure, ca_certs)
        .await
        .map_err(|f| Error::Login {
            registry: domain.to_string(),
            kind: f.kind,
            why: f.why,
        })
}

async fn check_login(
    domain: &str,
    auth: &Auth,
    insecure: &[String],
    ca_certs: &[Vec<u8>],
) -> Result<(), Fail> {
    let connection = Connection::open(domain, insecure, ca_certs).await?;
    let http = connection.http(Duration::from_secs(60))?;
    let url = format!("{}://{domain}/v2/", connection.scheme());
    let send = |request: reqwest::RequestBuilder| async move {
        request.send().await.map_err(|e| unreachable_fail(&e))
    };
    let answer = send(http.get(&url)).await?;
    if answer.status() != reqwest::StatusCode::UNAUTHORIZED {
        return check_status(answer.status());
    }
    let challenge = answer
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let with_auth = |request: reqwest::RequestBuilder| match auth {
        Auth::Anonymous => request,
        Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
        Auth::Bearer(token) => request.bearer_auth(token),
    };
    let scheme = challenge.split_whitespace().next().unwrap_or_default();
    let answer = if scheme.eq_ignore_ascii_case("bearer") {
        let params = challenge_params(&challenge[scheme.len()..]);
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let Some(realm) = param("realm") else {
            return Err(Fail::invalid("bearer challenge without a realm"));
        };
        let mut query = vec![("client_id", "ferry".to_string())];
        if let Some(service) = param("service") {
            query.push(("service", service.clone()));
        }
        if let Auth::Basic { username, .. } = auth {
            query.push(("account", username.clone()));
        }
        send(with_auth(http.get(realm).query(&query))).await?
    } else {
        send(with_auth(http.get(&url))).await?
    };
    check_status(answer.status())
}

/// A registry's answer to a login request as a result.
fn check_status(status: reqwest::StatusCode) -> Result<(), Fail> {
    match status.as_u16() {
        200..=299 => Ok(()),
        401 | 403 => Err(Fail::new(
            ErrorKind::Unauthorized,
            format!("incorrect username or password (the registry answered {status})"),
        )),
        _ => Err(Fail::new(
            ErrorKind::Unavailable,
            format!("the registry answered {status}"),
        )),
    }
}

/// The `key="value"` pairs of a `WWW-Authenticate` challenge.
fn challenge_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            value = quoted[..end].to_string();
            rest = quoted.get(end + 1..).unwrap_or_default();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((key, value));
    }
    out
}

/// A request that got no answer, with the reason a user can act on first.
pub(crate) fn unreachable_fail(e: &dyn std::error::Error) -> Fail {
    let text = chain(e);
    let why = if text.contains("UnknownIssuer") {
        "tls: certificate signed by an unknown authority (trust its CA with --ca-cert)".to_string()
    } else if text.contains("invalid peer certificate") {
        let detail = text
            .split("invalid peer certificate: ")
            .nth(1)
            .unwrap_or_default();
        format!("tls: invalid certificate: {detail}")
    } else if text.contains("Connection refused") {
        "connection refused".to_string()
    } else {
        text
    };
    Fail::new(ErrorKind::Unavailable, why)
}

/// `host` of `host:port` (an IPv6 address in brackets keeps them).
fn host_of(domain: &str) -> &str {
    match domain.rfind(':') {
        Some(i) if !domain[i..].contains(']') && domain.matches(':').count() == 1 => &domain[..i],
        _ => domain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_into_pairs() {
        let params = challenge_params(
            r#" realm="https://auth.example/token",service="registry.example",scope="a,b""#,
        );
        assert_eq!(
            params,
            [
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "a,b".into()),
            ]
        );
        assert_eq!(host_of("example.com:5000"), "example.com");
        assert_eq!(host_of("[::1]:5000"), "[::1]:5000");
    }

    #[test]
    fn refused_and_unknown_ca_read_plainly() {
        let refused = std::io::Error::other("Connection refused");
        assert_eq!(unreachable_fail(&refused).why, "connection refused");
        let ca = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        assert_eq!(
            unreachable_fail(&ca).why,
            "tls: certificate signed by an unknown authority (trust its CA with --ca-cert)"
        );
    }
}
