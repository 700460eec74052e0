#!/bin/bash
# The registry endpoint against a direct pull and against docker-registry, on the Debian image:
#   endpoint-local   skopeo copy docker://EP/ipfs/CID:latest dir:OUT, blocks in EP's store
#   endpoint-remote  the same with EP on an empty root fetching from a ferry daemon (--peer)
#   ferry-pull       ferry pull ipfs://CID on an empty root from the same daemon
#   docker-registry  skopeo copy docker://REG/debian:12 dir:OUT from docker-registry
# Each side runs RUNS times (default 5), alternately; prints every time and the medians.
# (dir: because containers/image does not copy layers with urls into an oci: layout.)
# Usage: scripts/bench-registry.sh [RUNS]   (FERRY_BIN=path picks the ferry binary)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"
runs=${1:-5}
ferry=${FERRY_BIN:-$root/target/release/ferry}
[ -x "$ferry" ] || ferry="$root/target/debug/ferry"
archive="$root/target/fixtures/debian.tar"
[ -f "$archive" ] || "$root/scripts/fixtures.sh" debian
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A: the image, pushed; a daemon serving it; an endpoint on A's store
"$ferry" --root "$work/a" load -i "$archive" >/dev/null
cid=$("$ferry" --root "$work/a" push -q ipfs://debian:12)
"$ferry" --root "$work/a" daemon --listen /ip4/127.0.0.1/tcp/0 --no-registry > "$work/daemon.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do grep -q "Daemon is ready" "$work/daemon.out" && break; sleep 0.1; done
peer=$(sed -n 's/^Swarm listening on //p' "$work/daemon.out" | head -1)
ep_port=$(free_port)
"$ferry" --root "$work/a" ipfs registry serve --listen "127.0.0.1:$ep_port" >/dev/null 2>&1 &
pids+=($!)

# docker-registry holding the same image
reg_port=$(free_port)
mkdir -p "$work/reg"
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$work/reg/data" "$reg_port" > "$work/reg/config.yml"
docker-registry serve "$work/reg/config.yml" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$reg_port/v2/" >/dev/null && curl -sf "http://127.0.0.1:$ep_port/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy -q --dest-tls-verify=false "oci-archive:$archive" "docker://127.0.0.1:$reg_port/debian:12"

copy() { rm -rf "$work/out"; skopeo copy -q --src-tls-verify=false "$1" "dir:$work/out"; }
time_it() { local t0; t0=$(now); "$@" >/dev/null; awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

endpoint_local() { copy "docker://127.0.0.1:$ep_port/ipfs/$cid:latest"; }
endpoint_remote() {
  rm -rf "$work/b"; local port; port=$(free_port)
  "$ferry" --root "$work/b" ipfs registry serve --listen "127.0.0.1:$port" --peer "$peer" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
  local t0; t0=$(now)
  copy "docker://127.0.0.1:$port/ipfs/$cid:latest"
  awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }' > "$work/remote.t"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
ferry_pull() { rm -rf "$work/c"; "$ferry" --root "$work/c" pull -q --peer "$peer" "ipfs://$cid"; }
registry_copy() { copy "docker://127.0.0.1:$reg_port/debian:12"; }

declare -A times
for i in $(seq "$runs"); do
  times[endpoint-local]+="$(time_it endpoint_local) "
  endpoint_remote; times[endpoint-remote]+="$(cat "$work/remote.t") "
  times[ferry-pull]+="$(time_it ferry_pull) "
  times[docker-registry]+="$(time_it registry_copy) "
done

# the runs are one line, space-separated: one per line for lib.sh's median
median_of() { tr ' ' '\n' | grep . | median; }
echo "image: $archive ($cid), $runs runs each, seconds"
printf '%-16s %-8s %s\n' side median runs
for side in endpoint-local endpoint-remote ferry-pull docker-registry; do
  printf '%-16s %-8.3f %s\n' "$side" "$(echo "${times[$side]}" | median_of)" "${times[$side]}"
done
