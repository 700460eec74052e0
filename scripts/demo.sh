#!/bin/bash
# The main job, end to end on this machine: build a real Debian image, load and push it into
# IPFS on node A, start node A and node B as daemons (own roots, own ports, B dials A), and run
# `cat /etc/debian_version` from the image CID on B, which fetches it from A over Bitswap.
# Prints the CID and how long push, pull and run took. Run as root (containers need it).
# Usage: scripts/demo.sh            (installs packages, builds ferry, ~3 min the first time)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/scripts/lib.sh"

scripts/setup.sh >/dev/null
echo "== building ferry"
cargo build --locked -q -p ferry
ferry="$root/target/debug/ferry"
echo "== building the Debian image (cached in target/fixtures)"
scripts/fixtures.sh debian >/dev/null

work=$(mktemp -d /tmp/ferry-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM


# start_daemon ROOT [ARGS...]: starts a daemon and waits until it is ready; its address is
# then in ROOT.addr (not printed: a command substitution would lose the PID kept for cleanup)
start_daemon() {
  local r=$1; shift
  "$ferry" --root "$r" daemon --listen /ip4/127.0.0.1/tcp/0 --registry 127.0.0.1:0 "$@" >"$r.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q "Daemon is ready" "$r.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "Daemon is ready" "$r.log" || { cat "$r.log" >&2; exit 1; }
  grep -m1 "Swarm listening on" "$r.log" | awk '{print $4}' >"$r.addr"
}

echo "== node A: load and push"
"$ferry" --root "$work/a" load -i target/fixtures/debian.tar
t=$(now)
cid=$("$ferry" --root "$work/a" push -q ipfs://debian:12)
push_time=$(since "$t")
echo "image CID: $cid"
start_daemon "$work/a"
addr_a=$(cat "$work/a.addr")
echo "node A listens on $addr_a"

echo "== node B: pull from A and run"
start_daemon "$work/b" --peer "$addr_a"
t=$(now)
"$ferry" --root "$work/b" pull "ipfs://$cid"
pull_time=$(since "$t")
t=$(now)
version=$("$ferry" --root "$work/b" run --rm "ipfs://$cid" cat /etc/debian_version)
run_time=$(since "$t")

echo
echo "Debian version printed by the container on node B: $version"
echo "image CID: $cid"
printf 'push %ss   pull over loopback %ss   first run %ss\n' "$push_time" "$pull_time" "$run_time"
registry=$(sed -n 's/^Registry listening on //p' "$work/b.log")
echo "node B also serves it to registry clients as $registry/ipfs/$cid (skopeo, containerd, buildah)"
