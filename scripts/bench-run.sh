#!/bin/bash
# Container start (issue 6): `ferry run --rm busybox true` from start to exit with the image
# local and unpacked, beside `ctr run --rm` (containerd 1.6, started here) and `podman run --rm`
# of the same busybox image. Each runtime is warmed up once; rounds alternate; medians.
# ferry and podman are measured on their default bridge network and without a network (ctr run
# gives a container only loopback).
# Usage: scripts/bench-run.sh [ROUNDS]      (default 10; root; podman from apt, optional)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/scripts/lib.sh"
rounds=${1:-10}
peers="$root/../shared/peers"
cargo build --locked -q -p ferry
ferry="$root/target/debug/ferry"
[ -f "$root/target/fixtures/busybox.tar" ] || scripts/fixtures.sh >/dev/null
archive="$root/target/fixtures/busybox.tar"

work=$(mktemp -d /tmp/ferry-bench-run.XXXXXX)
ctrd_pid=""
cleanup() {
  [ -n "$ctrd_pid" ] && kill "$ctrd_pid" 2>/dev/null || true
  if command -v podman >/dev/null; then podman rmi -f busybox >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

r="$work/ferry"
"$ferry" --root "$r" load -i "$archive" >/dev/null

ctrd_pid=$("$peers/start-containerd.sh" "$work/ctrd")
ctr=(ctr -a "$work/ctrd/containerd.sock")
# named as its archive's index.json names it
"${ctr[@]}" images import "$archive" >/dev/null
ctr_image=busybox:latest

have_podman=""
if command -v podman >/dev/null; then
  export CONTAINERS_CONF="$peers/podman-containers.conf"
  export CONTAINERS_STORAGE_CONF="$peers/podman-storage.conf"
  podman load -q -i "$archive" >/dev/null && have_podman=1
fi

# warm-up: snapshots unpacked, binaries and image in the page cache
"$ferry" --root "$r" run --rm busybox true
"$ferry" --root "$r" run --rm --net none busybox true
"${ctr[@]}" run --rm "$ctr_image" warm true
if [ -n "$have_podman" ]; then
  podman run --rm busybox true
  podman run --rm --network none busybox true
fi

for i in $(seq "$rounds"); do
  timed "$ferry" --root "$r" run --rm busybox true >>"$work/ferry-bridge"
  timed "$ferry" --root "$r" run --rm --net none busybox true >>"$work/ferry-none"
  timed "${ctr[@]}" run --rm "$ctr_image" "c$i" true >>"$work/ctr"
  if [ -n "$have_podman" ]; then
    timed podman run --rm busybox true >>"$work/podman-bridge"
    timed podman run --rm --network none busybox true >>"$work/podman-none"
  fi
done

col() { if [ -s "$work/$1" ]; then median <"$work/$1"; else printf -- '-'; fi; }
printf '\nbusybox, %s rounds, medians in seconds from start to exit (%s)\n\n' "$rounds" "$(date -u +%Y-%m-%d)"
printf '| network | ferry run --rm | ctr run --rm | podman run --rm |\n|---|---|---|---|\n'
printf '| bridge (default of ferry and podman) | %s | - | %s |\n' "$(col ferry-bridge)" "$(col podman-bridge)"
printf '| none / loopback only (default of ctr) | %s | %s | %s |\n' "$(col ferry-none)" "$(col ctr)" "$(col podman-none)"
