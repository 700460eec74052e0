#!/bin/bash
# ferry pull and push against docker-registry on loopback, beside skopeo copy doing the same,
# on the Debian image, with wall time and peak memory (max RSS, from /usr/bin/time) of each:
#   ferry-pull   ferry pull REG/debian:12 into an empty root
#   skopeo-pull  skopeo copy docker://REG/debian:12 oci:OUT:12
#   ferry-push   ferry push REG2/debian:12 from a root holding the image, to an empty registry
#   skopeo-push  skopeo copy oci:target/fixtures/debian:latest docker://REG2/debian:12, the same
# Each push goes to a docker-registry started empty for it, so every blob is sent. The sides
# run RUNS times (default 5), alternately; prints every run and the medians.
# Usage: scripts/bench-registry-pull.sh [RUNS]   (FERRY_BIN=path picks the ferry binary)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"
runs=${1:-5}
ferry=${FERRY_BIN:-$root/target/release/ferry}
[ -x "$ferry" ] || ferry="$root/target/debug/ferry"
archive="$root/target/fixtures/debian.tar"
layout="$root/target/fixtures/debian"
[ -f "$archive" ] || "$root/scripts/fixtures.sh" debian
if [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# registry DIR: starts an empty docker-registry with storage under DIR; prints HOST:PORT
registry() {
  local port; port=$(free_port)
  mkdir -p "$1"
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$1/data" "$port" > "$1/config.yml"
  docker-registry serve "$1/config.yml" >/dev/null 2>&1 &
  pids+=($!)
  echo $! > "$1/pid"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
  echo "127.0.0.1:$port"
}
stop_registry() { local pid; pid=$(cat "$1/pid"); kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$1"; }

# measured NAME CMD...: runs CMD, appends "seconds" and "peak KiB" to NAME's lists
declare -A secs rss
measured() {
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >/dev/null 2>"$work/err" || {
    cat "$work/err" >&2; exit 1; }
  read -r s k < "$work/time.out"
  secs[$name]+="$s "; rss[$name]+="$k "
}

# the pull source: one registry holding the image, pushed by skopeo
src=$(registry "$work/src")
skopeo copy -q --dest-tls-verify=false "oci-archive:$archive" "docker://$src/debian:12"
# the push source: a root holding the image
"$ferry" --root "$work/pushroot" load -i "$archive" >/dev/null

for i in $(seq "$runs"); do
  rm -rf "$work/pull"
  measured ferry-pull "$ferry" --root "$work/pull" pull -q "$src/debian:12"
  rm -rf "$work/oci"
  measured skopeo-pull skopeo copy -q --src-tls-verify=false "docker://$src/debian:12" "oci:$work/oci:12"

  dest=$(registry "$work/dest")
  "$ferry" --root "$work/pushroot" tag debian:12 "$dest/debian:12"
  measured ferry-push "$ferry" --root "$work/pushroot" push -q "$dest/debian:12"
  "$ferry" --root "$work/pushroot" rmi "$dest/debian:12" >/dev/null
  stop_registry "$work/dest"
  dest=$(registry "$work/dest")
  measured skopeo-push skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$dest/debian:12"
  stop_registry "$work/dest"
done

median_of() { tr ' ' '\n' | grep . | median; }
echo "image: $archive, $runs runs each; ferry: $ferry"
printf '%-12s %-9s %-13s %s\n' side seconds "peak MiB" "runs (s)"
for side in ferry-pull skopeo-pull ferry-push skopeo-push; do
  mib=$(echo "${rss[$side]}" | tr ' ' '\n' | grep . | awk '{ printf "%.1f\n", $1 / 1024 }' | median)
  printf '%-12s %-9s %-13s %s\n' "$side" "$(echo "${secs[$side]}" | median_of)" "$mib" "${secs[$side]}"
done
