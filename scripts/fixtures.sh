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

# build NAME SCRIPT REF: the OCI layout target/fixtures/NAME from the shared SCRIPT, then the
# OCI archive NAME.tar whose image is named REF; each step is skipped when its result exists.
build() {
  name=$1; script=$2; ref=$3
  if [ ! -f "$out/$name/index.json" ]; then
    rm -rf "$out/$name.tmp"
    "$peers/$script" "$out/$name.tmp" latest >/dev/null
    rm -rf "$out/$name"; mv "$out/$name.tmp" "$out/$name"
  fi
  if [ ! -f "$out/$name.tar" ]; then
    skopeo copy -q "oci:$out/$name:latest" "oci-archive:$out/$name.tar.tmp:$ref"
    mv "$out/$name.tar.tmp" "$out/$name.tar"
  fi
}

build busybox make-busybox-oci.sh busybox:latest
[ "${1:-}" = debian ] && build debian make-debian-oci.sh debian:12
echo "$out"
