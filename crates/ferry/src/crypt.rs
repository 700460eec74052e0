//! `ferry image encrypt` / `ferry image decrypt`, and the decrypting layer opener `ferry run`
//! uses (ocicrypt-compatible; the work is in the ferry-crypt crate).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use ferry_content::Store;
use ferry_crypt::{KeyRing, KeySpec, Recipient};
use ferry_oci::{Descriptor, Platform};

use crate::commands::find_image;
use crate::context::Context;

/// Where keys are found without `--key` (containerd looks in /etc/containerd/ocicrypt/keys).
const SYSTEM_KEYS: &str = "/etc/ferry/ocicrypt/keys";

/// `ferry image`.
#[derive(Args)]
pub struct ImageArgs {
    /// The image command.
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// Image commands.
#[derive(Subcommand)]
pub enum ImageCommand {
    /// Encrypt an image's layers for recipients (ocicrypt: AES-256-CTR + HMAC-SHA256, keys
    /// wrapped in JWE, PKCS#7 or OpenPGP) and name the result DST; the config stays readable.
    #[command(
        after_help = "Examples:\n  ferry image encrypt --recipient jwe:mykey.pub.pem debian:12 debian:12-enc\n  \
        ferry image encrypt --recipient pkcs7:mycert.pem --recipient pgp:alice.asc debian:12 debian:12-enc\n\n\
        The result opens in skopeo (--decryption-key), nerdctl and containerd's imgcrypt."
    )]
    Encrypt(EncryptArgs),
    /// Decrypt an encrypted image's layers and name the result DST.
    #[command(
        after_help = "Example:\n  ferry image decrypt --key mykey.pem debian:12-enc debian:12-dec\n\n\
        Keys in /etc/ferry/ocicrypt/keys and ROOT/keys are tried too. A key file must not be \
        readable by group or others. A pkcs7 layer needs the RSA key; its certificate \
        (--dec-recipient pkcs7:CERT, or CERT as a --key) picks the recipient it is."
    )]
    Decrypt(DecryptArgs),
}

/// The platforms to convert (nerdctl's flags; the default is the host's platform only, other
/// platforms are left out of the result).
#[derive(Args)]
pub struct PlatformArgs {
    /// Convert only these platforms (os/arch[/variant]); repeatable, or comma-separated.
    #[arg(
        long,
        value_name = "PLATFORM",
        conflicts_with = "all_platforms",
        value_delimiter = ','
    )]
    pub platform: Vec<String>,
    /// Convert every platform of a multi-platform image.
    #[arg(long)]
    pub all_platforms: bool,
}

/// `ferry image encrypt`.
#[derive(Args)]
pub struct EncryptArgs {
    /// Who can decrypt: jwe:PUBLIC_KEY (PEM, DER or JWK; RSA or EC), pkcs7:CERTIFICATE (X.509,
    /// RSA), pgp:KEY_FILE (armored or binary, a keyring encrypts to all its keys) or pgp:NAME
    /// (looked up with gpg); repeatable, or comma-separated.
    #[arg(
        long,
        value_name = "SCHEME:FILE",
        required = true,
        value_delimiter = ','
    )]
    pub recipient: Vec<String>,
    /// gpg's home directory, where pgp:NAME recipients are looked up.
    #[arg(long, value_name = "DIR")]
    pub gpg_homedir: Option<PathBuf>,
    #[command(flatten)]
    pub platforms: PlatformArgs,
    /// The local image to encrypt.
    pub src: String,
    /// The name of the encrypted image.
    pub dst: String,
}

/// `ferry image decrypt`.
#[derive(Args)]
pub struct DecryptArgs {
    /// A private key: FILE, FILE:PASSWORD, FILE:pass=PASSWORD or FILE:filename=PASSWORD_FILE;
    /// repeatable. RSA and EC keys (PEM, DER, JWK) or OpenPGP secret keys.
    #[arg(long, value_name = "FILE[:PASSWORD]")]
    pub key: Vec<KeySpec>,
    /// The certificate of a pkcs7 recipient the key is: pkcs7:CERT; repeatable.
    #[arg(long, value_name = "pkcs7:FILE")]
    pub dec_recipient: Vec<String>,
    #[command(flatten)]
    pub platforms: PlatformArgs,
    /// The local encrypted image.
    pub src: String,
    /// The name of the decrypted image.
    pub dst: String,
}

/// Runs `ferry image ...`.
pub fn image(ctx: &Context, args: ImageArgs) -> Result<()> {
    match args.command {
        ImageCommand::Encrypt(args) => encrypt(ctx, &args),
        ImageCommand::Decrypt(args) => decrypt(ctx, &args),
    }
}

fn encrypt(ctx: &Context, args: &EncryptArgs) -> Result<()> {
    let recipients = args
        .recipient
        .iter()
        .map(|r| Recipient::parse(r, args.gpg_homedir.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let image = find_image(&ctx.store, &args.src)?;
    let platforms = platforms(&args.platforms)?;
    let target = ferry_crypt::encrypt_image(&ctx.store, &image.target, &recipients, &platforms)
        .with_context(|| format!("encrypt {}", args.src))?;
    bind(ctx, &args.dst, &target)
}

fn decrypt(ctx: &Context, args: &DecryptArgs) -> Result<()> {
    let mut keys = keyring(&ctx.root, &args.key)?;
    keys.add_certificates(&dec_recipients(&args.dec_recipient)?)?;
    let image = find_image(&ctx.store, &args.src)?;
    let platforms = platforms(&args.platforms)?;
    let target = ferry_crypt::decrypt_image(&ctx.store, &image.target, &keys, &platforms)
        .with_context(|| format!("decrypt {}", args.src))?;
    bind(ctx, &args.dst, &target)
}

/// Names the new image as a reference would be named (`debian:enc` is `docker.io/library/...`
/// as everywhere else) and prints its digest, as nerdctl does.
fn bind(ctx: &Context, dst: &str, target: &Descriptor) -> Result<()> {
    let name = dst
        .parse::<ferry_oci::Reference>()
        .map(|r| r.image_name())
        .unwrap_or_else(|_| dst.to_string());
    ctx.store.put_image(&name, target)?;
    outln!("{}", target.digest);
    Ok(())
}

/// The platforms to convert; empty means all of them.
fn platforms(args: &PlatformArgs) -> Result<Vec<Platform>> {
    if args.all_platforms {
        return Ok(Vec::new());
    }
    if args.platform.is_empty() {
        return Ok(vec![Platform::host()]);
    }
    args.platform.iter().map(|p| parse_platform(p)).collect()
}

fn parse_platform(text: &str) -> Result<Platform> {
    let parts: Vec<&str> = text.split('/').collect();
    let (os, architecture, variant) = match parts[..] {
        [os, arch] => (os, arch, ""),
        [os, arch, variant] => (os, arch, variant),
        _ => bail!("platform {text:?}: expected os/arch[/variant], as linux/amd64"),
    };
    let mut platform = Platform::host();
    platform.os = os.to_string();
    platform.architecture = architecture.to_string();
    platform.variant = variant.to_string();
    Ok(platform)
}

/// The certificate files of `--dec-recipient pkcs7:FILE`.
pub fn dec_recipients(specs: &[String]) -> Result<Vec<PathBuf>> {
    specs
        .iter()
        .map(|spec| match spec.split_once(':') {
            Some(("pkcs7", file)) => Ok(PathBuf::from(file)),
            _ => bail!("--dec-recipient {spec}: expected pkcs7:CERTIFICATE_FILE"),
        })
        .collect()
}

/// The keys of `--key` plus those in /etc/ferry/ocicrypt/keys and ROOT/keys.
pub fn keyring(root: &Path, keys: &[KeySpec]) -> Result<KeyRing> {
    let dirs = [PathBuf::from(SYSTEM_KEYS), root.join("keys")];
    Ok(KeyRing::load(keys, &dirs)?)
}

/// Opens a stored layer for unpacking, decrypting it when it is encrypted (the keys are read
/// only then).
pub fn open_layer(
    root: &Path,
    store: &Store,
    layer: &Descriptor,
    keys: &[KeySpec],
) -> Result<Box<dyn Read + Send>> {
    let ring = if ferry_crypt::image::is_encrypted(layer) {
        keyring(root, keys)?
    } else {
        KeyRing::default()
    };
    Ok(ferry_crypt::open_layer(store, layer, &ring)?)
}

/// Checks that the keys open every encrypted layer of a manifest (run checks this even when
/// the layers' snapshots exist, so a host without the key cannot run an image another user
/// unpacked with it).
pub fn authorize(root: &Path, layers: &[Descriptor], keys: &[KeySpec]) -> Result<()> {
    if !layers.iter().any(ferry_crypt::image::is_encrypted) {
        return Ok(());
    }
    let ring = keyring(root, keys)?;
    for layer in layers {
        ferry_crypt::image::authorize(layer, &ring)?;
    }
    Ok(())
}
