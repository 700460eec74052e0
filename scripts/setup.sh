#!/bin/sh
# Install what ferry's build, tests and main job need on a fresh Debian machine (run as root).
# Idempotent: packages already present are not fetched again.
# Usage: scripts/setup.sh
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)

# runc runs containers; docker-registry, skopeo and umoci are the real registry and image tools
# the tests compare against; busybox-static and mmdebstrap build the test images; containerd and
# buildah pull through the registry endpoint in its tests; iproute2 makes the network namespaces
# of the mDNS test; sqlite3 reads the CID index in the garbage collection test; openssl makes
# the encryption tests' keys and python3-cryptography runs the ocicrypt checker of ../shared/peers;
# apache2-utils: htpasswd, for the basic-auth registry of tests/registry_auth.rs;
# zstd compresses and checks the compression tests' zstd layers;
# containernetworking-plugins (bridge, host-local, portmap, firewall, loopback) and iptables
# make ferry's default bridge network and its published ports; gnupg makes the pgp test's keys
# (and skopeo's ocicrypt finds pgp recipients with it); fuse3 (fusermount3) and the kernel's
# FUSE serve lazily pulled eStargz layers; golang-go and the stargz-snapshotter source package
# build ctr-remote, the reference eStargz converter the interop tests compare against.
packages="runc docker-registry skopeo umoci busybox-static mmdebstrap jq curl ca-certificates containerd buildah iproute2 sqlite3 openssl python3-cryptography apache2-utils zstd containernetworking-plugins iptables gnupg fuse3 golang-go golang-github-containerd-stargz-snapshotter-dev"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

"$root/scripts/install-peers.sh"
