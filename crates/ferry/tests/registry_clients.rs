//! Real registry clients pulling IPFS images through `ferry ipfs registry serve`: containerd
//! (ctr, with the hosts.toml ferry prints) and buildah building on top of an IPFS image, whose
//! result ferry pushes back to IPFS and runs.

mod common;

use std::process::Command;

use common::{
    busybox_pushed, ferry, ok, shared_peers, skip_unless_root, tool_installed, Containerd,
    RegistryServe,
};

#[test]
fn containerd_pulls_and_runs_an_ipfs_image_through_the_endpoint() {
    let test = "containerd_pulls_and_runs_an_ipfs_image_through_the_endpoint";
    if skip_unless_root(test) || !tool_installed(test, "containerd") {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    let endpoint = RegistryServe::start(a.path(), &[]);
    let containerd = Containerd::start();

    // the hosts.toml ferry prints is what makes containerd use plain HTTP (no --plain-http)
    let hosts = containerd.dir.path().join("certs.d");
    let host_dir = hosts.join(&endpoint.addr);
    std::fs::create_dir_all(&host_dir).unwrap();
    let toml =
        ok(ferry(a.path()).args(["ipfs", "registry", "hosts-toml", "--listen", &endpoint.addr]));
    std::fs::write(host_dir.join("hosts.toml"), toml).unwrap();

    let image = format!("{}/ipfs/{cid}:latest", endpoint.addr);
    ok(containerd
        .ctr()
        .args(["images", "pull", "--hosts-dir"])
        .arg(&hosts)
        .arg(&image));
    let name = format!("ferry-registry-{}", std::process::id());
    let stdout = ok(containerd.ctr().args(["run", "--rm", &image, &name]));
    assert_eq!(stdout.trim(), "hello from busybox");
}

/// Removes a buildah image when dropped.
struct BuildahImage(String);

impl Drop for BuildahImage {
    fn drop(&mut self) {
        let _ = buildah().args(["rmi", "-f", &self.0]).output();
    }
}

fn buildah() -> Command {
    let mut cmd = Command::new("buildah");
    cmd.env(
        "CONTAINERS_CONF",
        shared_peers().join("podman-containers.conf"),
    );
    cmd.env(
        "CONTAINERS_STORAGE_CONF",
        shared_peers().join("podman-storage.conf"),
    );
    cmd
}

#[test]
fn buildah_builds_from_an_ipfs_image_and_ferry_runs_the_result() {
    let test = "buildah_builds_from_an_ipfs_image_and_ferry_runs_the_result";
    if skip_unless_root(test) || !tool_installed(test, "buildah") {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let cid = busybox_pushed(a.path());
    let endpoint = RegistryServe::start(a.path(), &[]);

    let context = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "ARG BASE\nFROM {}/ipfs/$BASE\nRUN echo hello > /hello\n",
        endpoint.addr
    );
    std::fs::write(context.path().join("Dockerfile"), dockerfile).unwrap();
    let tag = BuildahImage(format!(
        "localhost/ferry-registry-{}:latest",
        std::process::id()
    ));
    ok(buildah()
        .args(["bud", "--tls-verify=false", "--build-arg"])
        .arg(format!("BASE={cid}"))
        .args(["-t", &tag.0])
        .arg(context.path()));

    let archive = context.path().join("built.tar");
    ok(buildah()
        .args(["push", &tag.0])
        .arg(format!("oci-archive:{}:latest", archive.display())));
    let b = tempfile::tempdir().unwrap();
    let loaded = ok(ferry(b.path()).args(["load", "-i"]).arg(&archive));
    let name = loaded
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("Loaded image: "))
        .unwrap()
        .to_string();
    let built = ok(ferry(b.path()).args(["push", "-q", &format!("ipfs://{name}")]));
    let built = built.trim();
    assert_ne!(built, cid);
    let stdout = ok(ferry(b.path()).args(["run", "--rm", built, "cat", "/hello"]));
    assert_eq!(stdout, "hello\n");
}
