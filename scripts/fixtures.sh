#!/bin/sh
# Build the test images once and cache them under target/fixtures:
#   target/fixtures/busybox       OCI layout (tag latest), ~1 MB, prints "hello from busybox"
#   target/fixtures/busybox.tar   the same as an OCI archive (skopeo oci-archive)
#   target/fixtures/debian        OCI layout of Debian bookworm minbase (only with "debian")
#   target/fixtures/debian.tar    the same as an OCI archive, tag debian:12
# Usage: scripts/fixtures.sh [debian]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${FERRY_SHARED_PEERS:-$root/../shared/peers}
out="$root/target/fixtures"
mkdir -p "$out"

build_busybox() {
  if [ ! -f "$out/busybox/index.json" ]; then
    rm -rf "$out/busybox.tmp"
    "$peers/make-busybox-oci.sh" "$out/busybox.tmp" latest >/dev/null
    rm -rf "$out/busybox"; mv "$out/busybox.tmp" "$out/busybox"
  fi
  if [ ! -f "$out/busybox.tar" ]; then
    skopeo copy -q "oci:$out/busybox:latest" "oci-archive:$out/busybox.tar.tmp:busybox:latest"
    mv "$out/busybox.tar.tmp" "$out/busybox.tar"
  fi
}

build_debian() {
  if [ ! -f "$out/debian/index.json" ]; then
    rm -rf "$out/debian.tmp"
    "$peers/make-debian-oci.sh" "$out/debian.tmp" latest >/dev/null
    rm -rf "$out/debian"; mv "$out/debian.tmp" "$out/debian"
  fi
  if [ ! -f "$out/debian.tar" ]; then
    skopeo copy -q "oci:$out/debian:latest" "oci-archive:$out/debian.tar.tmp:debian:12"
    mv "$out/debian.tar.tmp" "$out/debian.tar"
  fi
}

build_busybox
[ "${1:-}" = debian ] && build_debian
echo "$out"
