//! Swarming (issue 9): a seeder and four pullers in network namespaces on a bridge, every link
//! limited to 100 Mbit/s each way by tc, all pulling one image at the same moment through their
//! daemons (scripts/swarm.sh does the setup, the pulls, the checks and the cleanup). Every pull
//! must complete with the seeder's image, the seeder must upload less than two and a half
//! copies (about one and a half in practice; four without a swarm): the pullers carried the rest
//! between them; and no puller may receive much more than one copy (a block is asked of a second
//! peer only when the first is too slow).

mod common;

use std::path::Path;
use std::process::Command;

use common::{is_root, pseudo_random_file, sha256sum, workspace};

const PULLERS: u64 = 4;

/// Writes an OCI archive of one uncompressed layer holding `data` (a file of random bytes);
/// returns the layer's size.
fn random_image(dir: &Path, archive: &Path) -> u64 {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    // 96 leaves of 256 KiB: many more than the few want-blocks a puller keeps at one peer, so
    // most wait and go to the pullers that hold them by then (few and the swarm has nothing to
    // do)
    pseudo_random_file(&rootfs.join("data"), 24 << 20, std::process::id() as u64);
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = dir.join("layer.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs)
        .arg("data")
        .status()
        .unwrap();
    assert!(status.success());
    let put = |path: &Path| -> (String, u64) {
        let digest = sha256sum(path);
        let size = std::fs::metadata(path).unwrap().len();
        std::fs::copy(path, blobs.join(&digest)).unwrap();
        (digest, size)
    };
    let (layer_digest, layer_size) = put(&layer);
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_digest}"]}}}}"#
        ),
    )
    .unwrap();
    let (config_digest, config_size) = put(&config);
    let manifest = dir.join("manifest.json");
    std::fs::write(
        &manifest,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_digest}","size":{layer_size}}}]}}"#
        ),
    )
    .unwrap();
    let (manifest_digest, manifest_size) = put(&manifest);
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_digest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"1"}}}}]}}"#
        ),
    )
    .unwrap();
    let status = Command::new("tar")
        .arg("-cf")
        .arg(archive)
        .arg("-C")
        .arg(&layout)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(status.success());
    layer_size
}

#[test]
fn four_hosts_pulling_at_once_share_the_image() {
    if !is_root() {
        eprintln!("SKIP four_hosts_pulling_at_once_share_the_image: needs root (ip netns, tc)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let layer_size = random_image(dir.path(), &archive);

    let out = Command::new(workspace().join("scripts/swarm.sh"))
        .arg(PULLERS.to_string())
        .args(["--rate", "100mbit", "--image"])
        .arg(&archive)
        .env("FERRY_BIN", env!("CARGO_BIN_EXE_ferry"))
        .output()
        .expect("run scripts/swarm.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The script checks that every puller holds the image by its CID, with the seeder's config
    // (ferry verified every block against its CID and the layer against its digest).
    assert!(
        out.status.success(),
        "swarm.sh failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    eprintln!("{stdout}");
    let row = |host: &str| -> Vec<String> {
        stdout
            .lines()
            // the table's row, not the seeder's opening line
            .rfind(|l| l.split_whitespace().next() == Some(host))
            .unwrap_or_else(|| panic!("no row for {host}: {stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    for i in 1..=PULLERS {
        let pull = row(&format!("pull{i}"));
        let received: u64 = pull[3].parse().unwrap();
        assert!(
            received >= layer_size,
            "pull{i} received {received} bytes, less than the layer's {layer_size}: {stdout}"
        );
        assert!(
            received < layer_size * 3 / 2,
            "pull{i} received {received} bytes, 1.5 x the layer's {layer_size} or more: \
             blocks were asked of several peers at once: {stdout}"
        );
    }
    let seeder_sent: u64 = row("seeder")[2].parse().unwrap();
    assert!(
        seeder_sent < layer_size * 5 / 2,
        "the seeder uploaded {seeder_sent} bytes, not less than 2.5 x {layer_size}: {stdout}"
    );
}
