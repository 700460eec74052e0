//! Multi-platform images: a two-platform index (the busybox fixture's manifest for the host's
//! architecture, and a second manifest whose config says another architecture) survives pull,
//! push to a registry and to IPFS, and save, with the index and both manifests unchanged.
//! skopeo puts the index into a real docker-registry and reads back what ferry wrote.

mod common;

use std::path::Path;
use std::process::Command;

use common::{ferry, fixture, ok, output, sha256sum, skopeo, tool_installed, Daemon, Registry};

fn tools(test: &str) -> bool {
    tool_installed(test, "skopeo") && tool_installed(test, "docker-registry")
}

fn sha256_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    std::fs::write(&file, bytes).unwrap();
    format!("sha256:{}", sha256sum(&file))
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The host's architecture as Go names it, and another one.
fn architectures() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    }
}

/// A two-platform OCI layout built from the busybox fixture, and its digests.
struct Multi {
    dir: tempfile::TempDir,
    index: String,
    /// The host architecture's manifest and config.
    host: (String, String),
    /// The other architecture's manifest and config.
    other: (String, String),
    layer: String,
}

impl Multi {
    fn layout(&self) -> std::path::PathBuf {
        self.dir.path().join("multi")
    }
}

fn multi() -> Multi {
    let (host_arch, other_arch) = architectures();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("multi");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(fixture("busybox"))
        .arg(&layout)
        .status()
        .unwrap();
    assert!(copied.success());
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest[7..]);
    let put = |bytes: &[u8]| {
        let digest = sha256_of(bytes);
        std::fs::write(blob(&digest), bytes).unwrap();
        digest
    };

    let top = json(&std::fs::read(layout.join("index.json")).unwrap());
    let manifest_digest = top["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest_bytes = std::fs::read(blob(&manifest_digest)).unwrap();
    let manifest = json(&manifest_bytes);
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    let mut config = json(&std::fs::read(blob(&config_digest)).unwrap());
    config["architecture"] = other_arch.into();
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let other_config = put(&config_bytes);
    let mut other = manifest.clone();
    other["config"]["digest"] = other_config.clone().into();
    other["config"]["size"] = config_bytes.len().into();
    let other_bytes = serde_json::to_vec(&other).unwrap();
    let other_manifest = put(&other_bytes);

    let entry = |digest: &str, size: usize, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(&manifest_digest, manifest_bytes.len(), host_arch),
            entry(&other_manifest, other_bytes.len(), other_arch),
        ],
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_digest = put(&index_bytes);
    let layout_index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest,
            "size": index_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&layout_index).unwrap(),
    )
    .unwrap();
    Multi {
        dir,
        index: index_digest,
        host: (manifest_digest, config_digest),
        other: (other_manifest, other_config),
        layer,
    }
}

/// `ferry image inspect` of one image, as JSON.
fn inspect(root: &Path, image: &str, platform: &str) -> serde_json::Value {
    let out = ok(ferry(root).args(["image", "inspect", "--platform", platform, image]));
    json(out.as_bytes())[0].clone()
}

/// The digests of the index entries `ferry image inspect` shows.
fn index_entries(image: &serde_json::Value) -> Vec<String> {
    image["Index"]["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_two_platform_index_survives_pull_push_and_save() {
    let test = "a_two_platform_index_survives_pull_push_and_save";
    if !tools(test) {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let (_, other_arch) = architectures();
    let other_platform = format!("linux/{other_arch}");
    let m = multi();
    let reg = &registry.addr;
    let source = format!("{reg}/multi:1");
    skopeo(&[
        "copy",
        "-q",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", m.layout().display()),
        &format!("docker://{source}"),
    ]);

    // Default: the index and the host's manifest only.
    let root = tempfile::tempdir().unwrap();
    ok(ferry(root.path()).args(["pull", "-q", &source]));
    let image = inspect(root.path(), &source, &other_platform);
    assert_eq!(image["Id"], m.index.as_str());
    assert_eq!(
        index_entries(&image),
        vec![m.host.0.clone(), m.other.0.clone()]
    );
    assert!(image.get("Manifest").is_none(), "{image}");
    let image = inspect(root.path(), &source, "linux/amd64");
    if other_arch != "amd64" {
        assert_eq!(image["ManifestDescriptor"]["digest"], m.host.0.as_str());
    }
    // A push of that names the host's manifest alone, as what is here.
    let (code, _, err) = output(ferry(root.path()).args(["push", "--all-platforms", &source]));
    assert_eq!(code, 1);
    assert!(err.contains("(pull it with --all-platforms)"), "{err}");

    // --platform: the other manifest and its config.
    let root = tempfile::tempdir().unwrap();
    ok(ferry(root.path()).args(["pull", "-q", "--platform", &other_platform, &source]));
    let image = inspect(root.path(), &source, &other_platform);
    assert_eq!(image["ManifestDescriptor"]["digest"], m.other.0.as_str());
    assert_eq!(image["Manifest"]["config"]["digest"], m.other.1.as_str());
    assert_eq!(image["Architecture"], other_arch);

    // --all-platforms: everything, then pushed to the registry as it was.
    let root = tempfile::tempdir().unwrap();
    ok(ferry(root.path()).args(["pull", "-q", "--all-platforms", &source]));
    for digest in [
        &m.index, &m.host.0, &m.host.1, &m.other.0, &m.other.1, &m.layer,
    ] {
        assert!(
            root.path().join("blobs/sha256").join(&digest[7..]).exists(),
            "{digest} not pulled"
        );
    }
    let copy = format!("{reg}/copy:2");
    ok(ferry(root.path()).args(["tag", &source, &copy]));
    let out = ok(ferry(root.path()).args(["push", "--all-platforms", &copy]));
    assert!(
        out.starts_with(&format!("2: digest: {} size: ", m.index)),
        "{out}"
    );
    let index = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{copy}"),
    ]);
    assert_eq!(sha256_of(&index), m.index);
    for (manifest, config) in [&m.host, &m.other] {
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reg}/copy@{manifest}"),
        ]);
        assert_eq!(sha256_of(&raw), *manifest);
        assert_eq!(json(&raw)["config"]["digest"], config.as_str());
    }

    // Saved with both platforms: skopeo copies the whole index out of the archive.
    let archive = m.dir.path().join("multi.tar");
    ok(ferry(root.path())
        .args(["save", "--all-platforms", "-o"])
        .arg(&archive)
        .arg(&source));
    let out_dir = m.dir.path().join("out");
    skopeo(&[
        "copy",
        "-q",
        "--all",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}", out_dir.display()),
    ]);
    let layout = json(&std::fs::read(out_dir.join("index.json")).unwrap());
    assert_eq!(layout["manifests"][0]["digest"], m.index.as_str());
    for digest in [&m.host.0, &m.other.0, &m.host.1, &m.other.1, &m.layer] {
        let file = out_dir.join("blobs/sha256").join(&digest[7..]);
        assert_eq!(format!("sha256:{}", sha256sum(&file)), *digest);
    }
    // ... and a fresh root loads it under the same digest, both platforms there.
    let fresh = tempfile::tempdir().unwrap();
    ok(ferry(fresh.path()).args(["load", "-i"]).arg(&archive));
    let image = inspect(fresh.path(), &source, &other_platform);
    assert_eq!(image["Id"], m.index.as_str());
    assert_eq!(image["Manifest"]["config"]["digest"], m.other.1.as_str());
}

/// `ferry ipfs cat CID` on a root that holds the blocks, as JSON.
fn cat(root: &Path, cid: &str) -> serde_json::Value {
    json(ok(ferry(root).args(["ipfs", "cat", cid])).as_bytes())
}

fn ipfs_url(d: &serde_json::Value) -> String {
    d["urls"][0]
        .as_str()
        .unwrap()
        .strip_prefix("ipfs://")
        .unwrap()
        .to_string()
}

#[test]
fn ipfs_push_keeps_the_platforms_asked_for() {
    let m = multi();
    let root = tempfile::tempdir().unwrap();
    ok(ferry(root.path()).args(["load", "-i"]).arg(m.layout()));
    let image = "docker.io/library/multi:latest";
    let (host_arch, other_arch) = architectures();

    // Each manifest in IPFS is re-encoded with ipfs:// urls, so it is compared by its config.
    let configs = |cid: &str| -> Vec<(String, String)> {
        let top = cat(root.path(), cid);
        assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
        let index = cat(root.path(), &ipfs_url(&top));
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                let manifest = cat(root.path(), &ipfs_url(entry));
                (
                    entry["platform"]["architecture"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    manifest["config"]["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let all =
        ok(ferry(root.path()).args(["push", "-q", "--all-platforms", &format!("ipfs://{image}")]));
    assert_eq!(
        configs(all.trim()),
        vec![
            (host_arch.to_string(), m.host.1.clone()),
            (other_arch.to_string(), m.other.1.clone())
        ]
    );
    let default = ok(ferry(root.path()).args(["push", "-q", &format!("ipfs://{image}")]));
    assert_eq!(
        configs(default.trim()),
        vec![(host_arch.to_string(), m.host.1.clone())]
    );
    let other = ok(ferry(root.path()).args([
        "push",
        "-q",
        "--platform",
        &format!("linux/{other_arch}"),
        &format!("ipfs://{image}"),
    ]));
    assert_eq!(
        configs(other.trim()),
        vec![(other_arch.to_string(), m.other.1.clone())]
    );

    // A peer pulling with --all-platforms gets every manifest, config and layer; by default
    // only the host's.
    let daemon = Daemon::start(root.path(), "/ip4/127.0.0.1/tcp/0", &["--no-mdns"]);
    for (flags, want) in [
        (vec!["--all-platforms"], vec![&m.host.1, &m.other.1]),
        (vec![], vec![&m.host.1]),
    ] {
        let peer = tempfile::tempdir().unwrap();
        let mut pull = ferry(peer.path());
        pull.args(["pull", "-q", "--peer", &daemon.addr])
            .args(&flags);
        ok(pull.arg(format!("ipfs://{}", all.trim())));
        for config in [&m.host.1, &m.other.1, &m.layer] {
            let here = peer.path().join("blobs/sha256").join(&config[7..]).exists();
            let wanted = want.contains(&config) || *config == m.layer;
            assert_eq!(here, wanted, "{config} with {flags:?}");
        }
    }

    // The same through a daemon running on the pulling root (the CLI hands it the pull).
    let peer = tempfile::tempdir().unwrap();
    let _peer_daemon = Daemon::start(
        peer.path(),
        "/ip4/127.0.0.1/tcp/0",
        &["--no-mdns", "--no-registry"],
    );
    ok(ferry(peer.path()).args([
        "pull",
        "-q",
        "--all-platforms",
        "--peer",
        &daemon.addr,
        &format!("ipfs://{}", all.trim()),
    ]));
    for config in [&m.host.1, &m.other.1, &m.layer] {
        assert!(peer.path().join("blobs/sha256").join(&config[7..]).exists());
    }
}
