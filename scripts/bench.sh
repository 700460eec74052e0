#!/bin/bash
# Benchmark the main path against the registry path, side by side, on this machine:
#   push:  ferry push ipfs://  vs  skopeo copy oci: -> docker:// (local docker-registry)
#   pull:  ferry pull ipfs://CID from a daemon over loopback  vs  skopeo copy docker:// -> oci:
#   run:   ferry run --rm ipfs://CID (fresh node: pull + unpack + run)
#          vs skopeo copy docker:// -> oci: + umoci unpack + runc run
# Each side runs ROUNDS times (default 5), alternating, and the table shows medians.
# Usage: scripts/bench.sh [debian|busybox] [ROUNDS]   (as root; ferry is the dev build CI uses)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/scripts/lib.sh"
image=${1:-debian}
rounds=${2:-5}
scripts/setup.sh >/dev/null
cargo build --locked -q -p ferry
ferry="$root/target/debug/ferry"
scripts/fixtures.sh "$image" >/dev/null
layout="$root/target/fixtures/$image"

work=$(mktemp -d /tmp/ferry-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
pids+=("$("$root/../shared/peers/start-registry.sh" "$reg" "$work/registry")")


# node A holds the image and serves it
"$ferry" --root "$work/a" load -i "$layout" >/dev/null
cid=$("$ferry" --root "$work/a" push -q "ipfs://$(basename "$layout")" 2>/dev/null || true)
if [ -z "$cid" ]; then
  name=$("$ferry" --root "$work/a" images -q | head -1)
  cid=$("$ferry" --root "$work/a" push -q "ipfs://$name")
fi
"$ferry" --root "$work/a" daemon --listen /ip4/127.0.0.1/tcp/0 --no-registry >"$work/a.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "Daemon is ready" "$work/a.log" && break; sleep 0.1; done
addr=$(grep -m1 "Swarm listening on" "$work/a.log" | awk '{print $4}')
skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$reg/bench:latest" >/dev/null

for i in $(seq "$rounds"); do
  # push
  r=$work/push$i
  "$ferry" --root "$r" load -i "$layout" >/dev/null
  name=$("$ferry" --root "$r" images -q | head -1)
  timed "$ferry" --root "$r" push -q "ipfs://$name" >>"$work/ferry_push"
  timed skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$reg/push$i:latest" >>"$work/skopeo_push"
  rm -rf "$r"
  # pull
  timed "$ferry" --root "$work/pull$i" pull --peer "$addr" "ipfs://$cid" >>"$work/ferry_pull"
  timed skopeo copy -q --src-tls-verify=false "docker://$reg/bench:latest" "oci:$work/skpull$i:latest" >>"$work/skopeo_pull"
  rm -rf "$work/pull$i" "$work/skpull$i"
  # first run (pull + unpack + run)
  timed "$ferry" --root "$work/run$i" run --rm --peer "$addr" "ipfs://$cid" true >>"$work/ferry_run"
  regrun() {
    skopeo copy -q --src-tls-verify=false "docker://$reg/bench:latest" "oci:$work/skrun$i:latest" &&
      umoci unpack --image "$work/skrun$i:latest" "$work/bundle$i" &&
      jq '.process.terminal = false | .process.args = ["true"]' "$work/bundle$i/config.json" \
        >"$work/bundle$i/c.json" && mv "$work/bundle$i/c.json" "$work/bundle$i/config.json" &&
      runc --root "$work/runc" run --bundle "$work/bundle$i" "bench$i"
  }
  (cd "$work" && timed regrun) >>"$work/skopeo_run" || true
  rm -rf "$work/run$i" "$work/skrun$i" "$work/bundle$i"
done

printf '\n%s image, %s rounds, medians in seconds (%s)\n\n' "$image" "$rounds" "$(date -u +%Y-%m-%d)"
printf '| step | ferry | registry path | ferry / registry |\n|---|---|---|---|\n'
for step in push pull run; do
  f=$(median <"$work/ferry_$step"); s=$(median <"$work/skopeo_$step")
  printf '| %s | %s | %s | %s |\n' "$step" "$f" "$s" "$(awk -v f="$f" -v s="$s" 'BEGIN { printf "%.2f", f / s }')"
done
