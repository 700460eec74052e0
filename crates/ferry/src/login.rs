//! `ferry login` and `ferry logout`: registry credentials checked and kept as Docker keeps
//! them (see [`crate::auth`]).

use std::io::Read as _;
use std::path::PathBuf;

use crate::auth::DOCKER_HUB;
use anyhow::{bail, Context as _, Result};
use clap::Args;
use ferry_distribution::Auth;

use crate::auth;
use crate::context::Context;

/// `ferry login`.
#[derive(Args)]
#[command(after_help = "\
Credentials go where docker and nerdctl keep them: the credential helper that config.json
names for the registry (credHelpers, credsStore), else base64 in config.json (auths), in
$DOCKER_CONFIG or ~/.docker.")]
pub struct LoginArgs {
    /// The registry, HOST[:PORT] (default: Docker Hub).
    pub server: Option<String>,
    /// The user name.
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password (visible to other users in the process list; prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Trust this CA certificate (PEM) for the registry; repeatable.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
    /// Reach this registry over plain HTTP, or HTTPS without verifying its certificate;
    /// repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
}

/// `ferry logout`.
#[derive(Args)]
pub struct LogoutArgs {
    /// The registry, HOST[:PORT] (default: Docker Hub).
    pub server: Option<String>,
}

/// Checks the credentials against the registry, then stores them.
pub async fn login(ctx: &Context, args: &LoginArgs) -> Result<()> {
    let domain = auth::registry_domain(args.server.as_deref().unwrap_or(DOCKER_HUB));
    let password = match (&args.password, args.password_stdin) {
        (Some(p), _) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            Some(p.clone())
        }
        (None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read the password from stdin")?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        }
        (None, false) => None,
    };
    let credentials = match (&args.username, password) {
        (Some(username), Some(password)) if !username.is_empty() && !password.is_empty() => {
            Auth::Basic {
                username: username.clone(),
                password,
            }
        }
        (Some(_), Some(_)) => bail!("login {domain}: the user name and password must not be empty"),
        (None, Some(_)) => bail!("login {domain}: give the user name with -u"),
        // As docker does, a login without a password checks the stored credentials.
        // TODO: ask for them on a terminal, as docker does, when none are stored.
        (_, None) => auth::stored(&domain)?.ok_or_else(|| {
            anyhow::anyhow!(
                "login {domain}: no stored credentials; give -u USER and -p or --password-stdin"
            )
        })?,
    };
    let check_domain = match domain == DOCKER_HUB {
        true => "registry-1.docker.io".to_string(),
        false => domain.clone(),
    };
    let ca_certs = auth::ca_certs(&domain, &args.ca_cert, &ctx.root)?;
    ferry_distribution::login(
        &check_domain,
        &credentials,
        &args.insecure_registries,
        &ca_certs,
    )
    .await?;
    if let (Auth::Basic { username, password }, Some(_)) = (&credentials, &args.username) {
        let place = auth::store(&domain, username, password)?;
        tracing::debug!(%place, "credentials stored");
    }
    outln!("Login Succeeded");
    Ok(())
}

/// Forgets the credentials stored for a registry.
pub fn logout(args: &LogoutArgs) -> Result<()> {
    let domain = auth::registry_domain(args.server.as_deref().unwrap_or(DOCKER_HUB));
    let key = auth::config_key(&domain);
    match auth::erase(&domain)? {
        true => outln!("Removing login credentials for {key}"),
        false => outln!("Not logged in to {key}"),
    }
    Ok(())
}
