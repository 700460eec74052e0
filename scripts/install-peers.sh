#!/bin/sh
# Install the JavaScript peers that ferry's tests compare against into target/peers.
#
# - ipfs-unixfs-importer + blockstore-core: used by add-cid.mjs (from the shared peers folder)
#   to compute the CID `ipfs add --cid-version=1` gives a file.
#
# Idempotent: when the pinned versions are already installed it returns at once.
# Usage: scripts/install-peers.sh   (from anywhere; paths are relative to the repository root)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
peers="$root/target/peers"

# Exact versions, checked with `npm view` when this script was written.
UNIXFS_IMPORTER=17.1.1
BLOCKSTORE_CORE=7.0.1

installed_version() {
  # Prints the version of an installed package, or nothing when it is absent.
  pkg="$peers/node_modules/$1/package.json"
  [ -f "$pkg" ] || return 0
  node -e 'process.stdout.write(require(process.argv[1]).version)' "$pkg"
}

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "install-peers: node and npm are required (apt-get install nodejs npm)" >&2
  exit 1
fi

if [ "$(installed_version ipfs-unixfs-importer)" = "$UNIXFS_IMPORTER" ] &&
  [ "$(installed_version blockstore-core)" = "$BLOCKSTORE_CORE" ]; then
  echo "install-peers: already installed in $peers"
  exit 0
fi

mkdir -p "$peers"
[ -f "$peers/package.json" ] || echo '{ "name": "ferry-test-peers", "private": true }' >"$peers/package.json"
npm install --prefix "$peers" --save-exact --no-audit --no-fund \
  "ipfs-unixfs-importer@$UNIXFS_IMPORTER" "blockstore-core@$BLOCKSTORE_CORE"
echo "install-peers: installed in $peers"
