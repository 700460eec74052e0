#!/bin/sh
# Build the test images once and cache them under target/fixtures:
#   target/fixtures/busybox       OCI layout (tag latest), ~1 MB, prints "hello from busybox"
#   target/fixtures/busybox.tar   the same as an OCI archive (skopeo oci-archive)
#   target/fixtures/debian        OCI layout of Debian bookworm minbase (only with "debian")
#   target/fixtures/debian.tar    the same as an OCI archive, tag debian:12
#   target/fixtures/python.tar    Debian bookworm minbase with python3, pip and numpy, tag
#                                 python:3 (only with "python"; 250 MB unpacked, 83 MB gzip;
#                                 for the lazy-pulling benchmark)
# Usage: scripts/fixtures.sh [debian] [python]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${FERRY_SHARED_PEERS:-$root/../shared/peers}
out="$root/target/fixtures"
mkdir -p "$out"
# one build at a time: tests running in parallel may each ask for a fixture
exec 9>"$out/.lock"
flock 9

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

# python_layout LAYOUT: Debian minbase plus python3, made like the shared Debian script.
python_layout() {
  work=$(mktemp -d)
  SOURCE_DATE_EPOCH=1700000000 mmdebstrap --variant=minbase --mode=root --include=python3,python3-pip,python3-numpy \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$work/rootfs.tar" >/dev/null 2>&1
  "$peers/make-oci-from-rootfs.sh" "$work/rootfs.tar" "$1" latest /usr/bin/python3 >/dev/null
  rm -rf "$work"
}

build busybox make-busybox-oci.sh busybox:latest
for extra in "$@"; do
  case $extra in
    debian) build debian make-debian-oci.sh debian:12 ;;
    python)
      [ -f "$out/python/index.json" ] || { rm -rf "$out/python"; python_layout "$out/python.tmp"; mv "$out/python.tmp" "$out/python"; }
      [ -f "$out/python.tar" ] || {
        skopeo copy -q "oci:$out/python:latest" "oci-archive:$out/python.tar.tmp:python:3"
        mv "$out/python.tar.tmp" "$out/python.tar"; } ;;
    *) echo "fixtures.sh: unknown fixture $extra (debian, python)" >&2; exit 2 ;;
  esac
done
echo "$out"
