//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

/// Examples shown under `ferry --help`.
const EXAMPLES: &str = "\
Push an image into IPFS on one host and get a CID; run it by CID on any other host, which
fetches it from the peers that hold it:

  host A$ ferry load -i debian.tar
  host A$ ferry push ipfs://debian:12          # prints the image CID
  host A$ ferry daemon                         # serves it; `ferry ipfs id` shows its address
  host B$ ferry run --rm --peer /ip4/A/tcp/4001/p2p/PEER_ID ipfs://CID cat /etc/debian_version";

/// Share container images peer to peer over IPFS, with no registry.
#[derive(Parser)]
#[command(name = "ferry", version, max_term_width = 100, after_help = EXAMPLES)]
pub struct Cli {
    /// Where images, blobs, snapshots and the node identity are kept.
    #[arg(long, global = true, env = "FERRY_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log diagnostics at debug level on stderr (or set FERRY_LOG, e.g. FERRY_LOG=ferry_bitswap=trace).
    #[arg(long, short = 'D', global = true)]
    pub debug: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// ferry's commands.
#[derive(Subcommand)]
pub enum Command {
    /// Load an image archive: an OCI archive, a Docker archive (docker save) or an OCI layout dir.
    Load(LoadArgs),
    /// Save images to an archive (Docker-compatible OCI layout; -o FILE, else stdout).
    Save(SaveArgs),
    /// Pull an image from a registry (HOST:PORT/REPO:TAG) or from IPFS (ipfs://CID or a bare CID).
    Pull(PullArgs),
    /// Push a local image into IPFS (ipfs://NAME, prints its CID) or to a registry
    /// (HOST:PORT/REPO:TAG).
    Push(PushArgs),
    /// Give an image (a name, an image ID or ipfs://CID) another name, for pushing to a registry.
    Tag(TagArgs),
    /// List images.
    Images(ImagesArgs),
    /// Remove images (their names; the content goes when nothing else refers to it).
    Rmi(RmiArgs),
    /// Manage images.
    Image(ImageArgs),
    /// Run a command in a new container (pulling the image first if it is not here).
    Run(Box<RunArgs>),
    /// Run the IPFS node: serve this host's images to peers and on the registry endpoint, fetch
    /// for the CLI.
    Daemon(DaemonArgs),
    /// IPFS commands, named as kubo names them.
    Ipfs(IpfsArgs),
    /// List containers.
    Ps(crate::lifecycle::PsArgs),
    /// Print the output of a detached container.
    Logs(crate::lifecycle::LogsArgs),
    /// Stop running containers: SIGTERM, then SIGKILL after a grace period.
    Stop(crate::lifecycle::StopArgs),
    /// Send a signal (default SIGKILL) to running containers.
    Kill(crate::lifecycle::KillArgs),
    /// Start stopped containers again, detached.
    Start(crate::lifecycle::StartArgs),
    /// Remove containers.
    Rm(crate::lifecycle::RmArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(crate::lifecycle::WaitArgs),
    /// Print what ferry knows about containers, as JSON.
    Inspect(crate::lifecycle::InspectArgs),
    /// Run a command in a running container.
    Exec(crate::lifecycle::ExecArgs),
    /// Log in to a registry: check the credentials, then keep them as docker does.
    Login(crate::login::LoginArgs),
    /// Log out from a registry: forget its stored credentials.
    Logout(crate::login::LogoutArgs),
    /// Make an image of a container's changes: a new layer on top of its image.
    Commit(crate::commit::CommitArgs),
    /// Supervise a detached container (started by `run -d` and `start`).
    #[command(hide = true)]
    ContainerShim(crate::shim::ShimArgs),
}

/// `ferry load`.
#[derive(Args)]
pub struct LoadArgs {
    /// The archive (or OCI layout directory) to read; `-` or none reads the archive from stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
}

/// `ferry save`.
#[derive(Args)]
#[command(after_help = "\
The default archive is an OCI layout that also holds Docker's manifest.json (as Docker 25+ and
nerdctl write): `ferry load`, `docker load`, `skopeo copy docker-archive:FILE ...` and
`skopeo copy oci-archive:FILE ...` read it. Blobs are written as stored, so a load anywhere gives
the same image digest.")]
pub struct SaveArgs {
    /// Write the archive to FILE (default: stdout, when it is not a terminal).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// `docker` (OCI layout plus Docker's manifest.json) or `oci` (OCI layout only).
    #[arg(long, default_value = "docker", value_name = "FORMAT")]
    pub format: String,
    /// Save only this platform's manifest of a multi-platform image (os/arch[/variant]).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Save every platform of a multi-platform image (all must be here).
    #[arg(long)]
    pub all_platforms: bool,
    /// Images: names, image IDs or ipfs://CID.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// How to reach peers when the command needs the network and no daemon runs on this root.
#[derive(Args, Clone, Default)]
pub struct NetArgs {
    /// A peer to fetch from, as a multiaddr (/ip4/1.2.3.4/tcp/4001/p2p/ID); repeatable. Added
    /// to the `peers` of ROOT/config.json. When a daemon runs on this root, it dials the peer.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<Multiaddr>,
    /// How long to wait for any one block before giving up (e.g. 30s, 5m). With no daemon on
    /// this root, a command none of whose peers can be reached gives up after 10 s at most.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// The private network key (kubo's swarm.key format); default: ROOT/swarm.key if present.
    /// Ignored when a daemon runs (it has its own key).
    #[arg(long, value_name = "FILE")]
    pub swarm_key: Option<PathBuf>,
}

/// `ferry pull`.
#[derive(Args)]
pub struct PullArgs {
    /// The image: HOST:PORT/REPO:TAG, NAME:TAG (Docker Hub), ipfs://CID or a bare CID.
    pub image: String,
    /// Reach this registry over plain HTTP, or HTTPS without verifying its certificate
    /// (localhost and 127.0.0.0/8 fall back to plain HTTP when they do not speak TLS);
    /// repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Trust this CA certificate (PEM) for the registry; repeatable (certs.d is read too).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
    /// Print only the image name when done.
    #[arg(short, long)]
    pub quiet: bool,
    /// Pull this platform's manifest of a multi-platform image (os/arch[/variant]; default:
    /// the host's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Pull every platform of a multi-platform image (the index and each manifest, config and
    /// layer).
    #[arg(long)]
    pub all_platforms: bool,
    /// Also unpack the image's layers for this host into snapshots, as `run` would (encrypted
    /// layers need a key: --key, /etc/ferry/ocicrypt/keys or ROOT/keys).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub unpack: Option<bool>,
    /// A private key for encrypted layers when unpacking: FILE or FILE:PASSWORD; repeatable.
    #[arg(long, value_name = "FILE[:PASSWORD]")]
    pub key: Vec<ferry_crypt::KeySpec>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// `ferry push`.
#[derive(Args)]
#[command(after_help = "\
Examples:
  ferry push -q ipfs://debian:12                          # prints the image CID
  ferry tag ipfs://CID 127.0.0.1:5000/me/debian:ipfs
  ferry push 127.0.0.1:5000/me/debian:ipfs                # to a registry

Pushing to a registry skips blobs it already has. IPFS urls in an image from IPFS are dropped
(registries refuse them), so its manifest digest in the registry may differ from the local one;
the local name then points at what the registry holds.")]
pub struct PushArgs {
    /// ipfs://NAME, where NAME is a local image (ipfs://debian:12), or a registry reference
    /// HOST[:PORT]/REPO:TAG naming a local image (see `ferry tag`).
    pub target: String,
    /// Print only the CID (IPFS) or the name (registry).
    #[arg(short, long)]
    pub quiet: bool,
    /// Reach this registry over plain HTTP, or HTTPS without verifying its certificate
    /// (localhost and 127.0.0.0/8 fall back to plain HTTP when they do not speak TLS);
    /// repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Trust this CA certificate (PEM) for the registry; repeatable (certs.d is read too).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
    /// Push only this platform's manifest of a multi-platform image (os/arch[/variant]).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Push every platform of a multi-platform image (all must be here). Without it (or
    /// --platform), a registry gets the whole index when every manifest is here, else the
    /// host's manifest; IPFS gets the host's.
    #[arg(long)]
    pub all_platforms: bool,
    /// Recompress the layers first: `zstd` or `gzip` (new layer digests, same diff_ids; the
    /// local image stays as it is).
    #[arg(long, value_name = "ALGORITHM", conflicts_with = "estargz")]
    pub compression: Option<ferry_distribution::Compression>,
    /// Convert the layers to eStargz for this push (see `ferry image convert --help`).
    #[command(flatten)]
    pub estargz: crate::estargz::EstargzArgs,
}

/// `ferry tag`.
#[derive(Args)]
pub struct TagArgs {
    /// The image: a local name, an image ID (digest or its first 12+ hex digits) or ipfs://CID.
    pub source: String,
    /// The new name: HOST[:PORT]/REPO:TAG (or NAME:TAG for Docker Hub).
    pub target: String,
    #[command(flatten)]
    pub net: NetArgs,
}

/// `ferry images`.
#[derive(Args)]
pub struct ImagesArgs {
    /// Print only image IDs (one per name, as docker does), e.g. for `ferry rmi $(ferry images -q)`.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show the full digest of each image (the manifest or index digest).
    #[arg(long)]
    pub digests: bool,
    /// Output format: `table` or `json` (one JSON object per line, as docker prints).
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    pub format: String,
}

/// `ferry rmi` and `ferry image rm`.
#[derive(Args)]
#[command(after_help = "\
An image given by name loses that name; given by ID it loses all its names (with -f when it
has several). When an image's last name goes, its blobs and snapshots that nothing else needs
are deleted. An image that a kept container was made from stays unless -f.")]
pub struct RmiArgs {
    /// Remove even when a container uses the image or it has several names.
    #[arg(short, long)]
    pub force: bool,
    /// Images: names, image IDs or ipfs://CID.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

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
    /// Show an image as JSON: its descriptor, index, manifest and config.
    Inspect(ImageInspectArgs),
    /// Remove images nothing names (with -a: every image no container uses) and collect
    /// the blobs, CID-index entries and snapshots nothing refers to.
    Prune(ImagePruneArgs),
    /// Remove images (same as `ferry rmi`).
    Rm(RmiArgs),
    /// List images (same as `ferry images`).
    Ls(ImagesArgs),
    /// Save images to an archive (same as `ferry save`).
    Save(SaveArgs),
    /// Convert an image's layers to eStargz (lazy-pullable, still plain gzip to other tools)
    /// and name the result DST.
    Convert(crate::estargz::ConvertArgs),
    /// encrypt, decrypt
    #[command(flatten)]
    Crypt(crate::crypt::ImageCommand),
}

/// `ferry image inspect`.
#[derive(Args)]
pub struct ImageInspectArgs {
    /// Show this platform's manifest of a multi-platform image (default: the host's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Images: names, image IDs or ipfs://CID.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// `ferry image prune`.
#[derive(Args)]
pub struct ImagePruneArgs {
    /// Remove every image no container uses, not only unnamed ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask for confirmation (ferry never asks; accepted for docker's scripts).
    #[arg(short, long)]
    pub force: bool,
}

/// `ferry run`.
#[derive(Args)]
#[command(
    trailing_var_arg = true,
    after_help = "Not yet: -t with -d. Without --rm the stopped container stays (`ferry ps -a`) \
                  until `ferry rm`."
)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container ID; `ferry logs` shows its output.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep stdin open and pass it to the container (without it the container's stdin is
    /// empty).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a pseudo-terminal; with -i, your terminal is put in raw mode and
    /// drives it (Ctrl-C and Ctrl-D go to the container, its window size follows yours).
    #[arg(short, long)]
    pub tty: bool,
    /// Name the container (default: a made-up name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// How the image's layers become the container's root: `overlayfs` unpacks them first;
    /// `stargz` mounts eStargz layers (`ferry push --estargz`) through FUSE and fetches each
    /// file's chunks when they are read (lazy pulling), from IPFS peers (ipfs://CID: needs
    /// `ferry daemon` or --peer) or by HTTP Range from a registry (not with -d). Default:
    /// `snapshotter` in ROOT/config.json, else overlayfs.
    #[arg(long, value_enum, value_name = "NAME")]
    pub snapshotter: Option<SnapshotterKind>,
    /// Run as this user: a name or uid, optionally with :GROUP, looked up in the image's
    /// /etc/passwd and /etc/group.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// The container's hostname (default: the first 12 characters of its ID).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Mount a volume: HOST_PATH:CONTAINER_PATH[:ro], NAME:CONTAINER_PATH[:ro] for a named
    /// volume kept under ROOT/volumes, or CONTAINER_PATH for a new anonymous one; repeatable.
    #[arg(short, long = "volume", value_name = "SRC:DEST[:ro]")]
    pub volume: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines; repeatable.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Memory limit, e.g. 512m or 1g.
    #[arg(short, long, value_name = "BYTES", value_parser = crate::runopts::parse_bytes)]
    pub memory: Option<i64>,
    /// CPUs the container may use, e.g. 1.5.
    #[arg(long, value_name = "NUMBER", value_parser = crate::runopts::parse_cpus)]
    pub cpus: Option<f64>,
    /// Most processes the container may have.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub pids_limit: Option<i64>,
    /// When to pull the image: always, missing (when not here) or never.
    #[arg(long, value_enum, default_value = "missing", value_name = "WHEN")]
    pub pull: PullPolicy,
    /// The network: bridge (its own namespace on the bridge ferry0, 10.4.0.0/24, with
    /// outbound access), host (the host's) or none (only loopback).
    #[arg(long = "net", alias = "network", default_value = "bridge", value_name = "NETWORK",
          value_parser = crate::runopts::parse_network)]
    pub network: crate::runopts::NetMode,
    /// Publish a container port on the host: [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp];
    /// repeatable (bridge network only).
    #[arg(short, long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]",
          value_parser = crate::cni::parse_publish)]
    pub publish: Vec<crate::cni::PortMapping>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass ferry's own value); repeatable.
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Replace the image's entrypoint ("" clears it).
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// A private key for encrypted layers: FILE or FILE:PASSWORD; repeatable. Keys in
    /// /etc/ferry/ocicrypt/keys and ROOT/keys are tried too.
    #[arg(long, value_name = "FILE[:PASSWORD]")]
    pub key: Vec<ferry_crypt::KeySpec>,
    #[command(flatten)]
    pub net: NetArgs,
    /// The image: a local name, HOST:PORT/REPO:TAG, ipfs://CID or a bare CID.
    pub image: String,
    /// The command and its arguments (default: the image's).
    #[arg(allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `ferry run --pull`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull even when the image is here.
    Always,
    /// Pull only when the image is not here.
    Missing,
    /// Never pull; fail when the image is not here.
    Never,
}

/// `ferry daemon` and `ferry ipfs daemon`.
#[derive(Args)]
pub struct DaemonArgs {
    /// Listen for peers on this multiaddr; repeatable. Default: the `listen` of
    /// ROOT/config.json, else /ip4/0.0.0.0/tcp/4001.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Dial this peer at start and whenever it is not connected; repeatable (also `peers` in
    /// ROOT/config.json).
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<Multiaddr>,
    /// Start no network: only answer the CLI.
    #[arg(long)]
    pub offline: bool,
    /// Do not look for peers on the local network with mDNS (also `"mdns": false` in
    /// ROOT/config.json).
    #[arg(long)]
    pub no_mdns: bool,
    /// Join the private network of this key (kubo's swarm.key format): talk only to peers
    /// holding the same key. Default: ROOT/swarm.key if present.
    #[arg(long, value_name = "FILE")]
    pub swarm_key: Option<PathBuf>,
    /// Serve the registry endpoint (`HOST:PORT/ipfs/CID`) on this address; port 0 picks one.
    #[arg(long, value_name = "HOST:PORT", default_value = "localhost:5050")]
    pub registry: String,
    /// Do not serve the registry endpoint.
    #[arg(long, conflicts_with = "registry")]
    pub no_registry: bool,
}

/// `ferry ipfs`.
#[derive(Args)]
pub struct IpfsArgs {
    /// The IPFS command.
    #[command(subcommand)]
    pub command: IpfsCommand,
}

/// IPFS commands.
#[derive(Subcommand)]
pub enum IpfsCommand {
    /// Run the IPFS node (same as `ferry daemon`).
    Daemon(DaemonArgs),
    /// Print this node's peer ID and addresses (as JSON, like `ipfs id`).
    Id,
    /// Add a file to the local IPFS store, pin it and print its CID (CIDv1, raw leaves, 256 KiB
    /// chunks: what `ipfs add --cid-version=1` gives).
    Add(AddArgs),
    /// Print the bytes of a UnixFS file, fetching it from peers when it is not here.
    Cat(CatArgs),
    /// The peers of the running daemon.
    Swarm(SwarmArgs),
    /// The read-only registry endpoint for IPFS images (HOST:PORT/ipfs/CID).
    Registry(crate::registry::RegistryArgs),
    /// Counters of the running daemon.
    Stats(StatsArgs),
}

/// `ferry run --snapshotter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotterKind {
    /// Unpack every layer before the container starts.
    Overlayfs,
    /// Lazy pulling of eStargz layers through FUSE.
    Stargz,
}

/// `ferry ipfs stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// What to show.
    #[command(subcommand)]
    pub command: StatsCommand,
}

/// Counters of the running daemon.
#[derive(Subcommand)]
pub enum StatsCommand {
    /// Blocks and bytes received and sent over Bitswap, the CIDs being fetched and the number
    /// of connected peers, as `ipfs stats bitswap` prints them.
    Bitswap {
        /// Also list the connected peers.
        #[arg(short, long)]
        verbose: bool,
    },
}

/// `ferry ipfs add`.
#[derive(Args)]
pub struct AddArgs {
    /// The file to add.
    pub file: PathBuf,
    /// Print only the CID.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `ferry ipfs cat`.
#[derive(Args)]
pub struct CatArgs {
    /// The file's CID (any version and base).
    pub cid: String,
    #[command(flatten)]
    pub net: NetArgs,
}

/// `ferry ipfs swarm`.
#[derive(Args)]
pub struct SwarmArgs {
    /// The swarm command.
    #[command(subcommand)]
    pub command: SwarmCommand,
}

/// Swarm commands (they need `ferry daemon` running on the root).
#[derive(Subcommand)]
pub enum SwarmCommand {
    /// List the connected peers, one multiaddr each.
    Peers,
    /// Dial a peer now (the daemon keeps redialing it while it runs).
    Connect {
        /// The peer's multiaddr, ending in /p2p/PEER_ID.
        addr: Multiaddr,
    },
}

/// Parses `30s`, `5m`, `1h`, `250ms` or plain seconds: more than zero, at most a year.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let value: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("invalid duration {s:?}: use ms, s, m or h")),
    };
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    if !(secs > 0.0 && secs <= YEAR) {
        return Err(format!(
            "invalid duration {s:?}: must be more than 0 and at most a year"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            super::parse_duration("90").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            super::parse_duration("5m").unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            super::parse_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            super::parse_duration("3x").unwrap_err(),
            "invalid duration \"3x\": use ms, s, m or h"
        );
        let huge = super::parse_duration("99999999999999999999h").unwrap_err();
        let limits = "must be more than 0 and at most a year";
        assert_eq!(
            huge,
            format!("invalid duration \"99999999999999999999h\": {limits}")
        );
        assert!(super::parse_duration("0").is_err());
    }
}
