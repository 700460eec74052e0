#!/bin/bash
# One image to many hosts at once (issue 9), on one machine: a Linux bridge and one network
# namespace per host, each joined to the bridge by its own veth pair with its own address and a
# tc bandwidth limit on its link in both directions (tbf on both veth ends).
#
# Swarm case (default): a seeder and N pullers, each running `ferry daemon` on its own root
# (--listen on its address, --no-registry, --no-mdns; every puller dials the seeder and the
# pullers started before it with --peer, so the swarm is a full mesh). The seeder loads the
# image and pushes it into IPFS; then all N pullers run `ferry pull ipfs://CID` at the same
# moment (the CLI hands the network work to its daemon over the control socket).
#
# Registry case (--registry): one docker-registry in its own namespace behind the same limit
# holding the same image (pushed by `ferry push` from inside that namespace), and N `ferry pull`
# (no daemon) from it at the same moment.
#
# Prints each pull's time, min/median/max, the bytes each host sent and received during the
# pulls (its veth's counters) and, in the swarm case, each daemon's peak memory (VmHWM) and CPU
# time (user + system, since it started).
# Removes every namespace, veth, bridge, process and temp dir it made, even when interrupted.
#
# Usage: scripts/swarm.sh [N] [--rate 100mbit] [--image FILE] [--registry]   (as root)
#   N        pullers (default 4)
#   --rate   tc rate of every host link, each direction (default 100mbit)
#   --image  an image archive `ferry load` reads (default target/fixtures/debian.tar)
# FERRY_BIN=path picks the ferry binary (default target/debug/ferry, built if missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"

n=4
rate=100mbit
image=
registry=0
while [ $# -gt 0 ]; do
  case $1 in
    --rate) rate=${2:?--rate needs a value}; shift 2 ;;
    --image) image=${2:?--image needs a file}; shift 2 ;;
    --registry) registry=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *[!0-9]* | '') echo "swarm.sh: unknown argument: $1" >&2; exit 2 ;;
    *) n=$1; shift ;;
  esac
done
[ "$n" -ge 1 ] || { echo "swarm.sh: N must be at least 1" >&2; exit 2; }
if [ "$(id -u)" -ne 0 ]; then
  echo "swarm.sh: must run as root (it makes network namespaces, a bridge and tc limits)" >&2
  exit 1
fi
for tool in ip tc; do
  command -v "$tool" >/dev/null || { echo "swarm.sh: $tool is missing (apt-get install iproute2)" >&2; exit 1; }
done
if [ "$registry" = 1 ] && ! command -v docker-registry >/dev/null; then
  echo "swarm.sh: docker-registry is missing (scripts/setup.sh installs it)" >&2
  exit 1
fi
if [ -z "$image" ]; then
  image="$root/target/fixtures/debian.tar"
  [ -f "$image" ] || "$root/scripts/fixtures.sh" debian >/dev/null
fi
[ -f "$image" ] || { echo "swarm.sh: no image archive at $image" >&2; exit 1; }
ferry=${FERRY_BIN:-$root/target/debug/ferry}
[ -x "$ferry" ] || (cd "$root" && cargo build --locked -q -p ferry)

# Names and addresses carry the PID, so parallel runs do not collide: namespaces fsw<ID>-<i>,
# bridge fsb<ID>, veth ends fs<ID>h<i> (bridge side) and fs<ID>n<i> (host side), addresses
# 10.<A>.<B>.<i+1>/24. Host 0 is the seeder (or the registry); hosts 1..N pull.
id=$(($$ % 100000))
net="10.$((200 + id % 50)).$((id / 50 % 250))"
bridge="fsb$id"
work=$(mktemp -d /tmp/ferry-swarm.XXXXXX)
made_ns=()
pids=()
bridge_made=0
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  for f in "$work"/pull*.pid; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # deleting a veth end deletes its pair, even while a process still holds the namespace
  for i in "${!made_ns[@]}"; do
    ip link del "fs${id}h$i" 2>/dev/null || true
    ip netns del "${made_ns[$i]}" 2>/dev/null || true
  done
  [ "$bridge_made" = 0 ] || ip link del "$bridge" 2>/dev/null || true
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ns() { echo "fsw$id-$1"; }
addr() { echo "$net.$(($1 + 1))"; }
in_ns() { local i=$1; shift; ip netns exec "$(ns "$i")" "$@"; }

# The LAN: the bridge, then one namespace per host with a limited veth to it.
ip link add "$bridge" type bridge
bridge_made=1
ip link set "$bridge" up
hosts=$n # hosts 0..n
for i in $(seq 0 "$hosts"); do
  name=$(ns "$i")
  ip netns add "$name"
  made_ns+=("$name")
  ip link add "fs${id}h$i" type veth peer name "fs${id}n$i" netns "$name"
  ip link set "fs${id}h$i" master "$bridge" up
  ip -n "$name" addr add "$(addr "$i")/24" dev "fs${id}n$i"
  ip -n "$name" link set "fs${id}n$i" up
  ip -n "$name" link set lo up
  # The host's upload is its own end's egress, its download the bridge end's egress.
  in_ns "$i" tc qdisc add dev "fs${id}n$i" root tbf rate "$rate" burst 64kb latency 50ms
  tc qdisc add dev "fs${id}h$i" root tbf rate "$rate" burst 64kb latency 50ms
done

# counters I: "sent received" bytes of host I so far (its bridge end counts the other way)
counters() {
  local s=/sys/class/net/fs${id}h$1/statistics
  echo "$(cat "$s/rx_bytes") $(cat "$s/tx_bytes")"
}

# start_daemon I ARGS...: `ferry daemon` in host I's namespace on its own root; waits until it
# is ready and keeps its address (with /p2p/ID) in $work/I.addr and its PID in $work/I.pid.
start_daemon() {
  local i=$1; shift
  # `ip netns exec` execs ferry, so $! is the daemon's own PID
  ip netns exec "$(ns "$i")" "$ferry" --root "$work/root$i" daemon \
    --listen "/ip4/$(addr "$i")/tcp/4001" --no-registry --no-mdns "$@" >"$work/daemon$i.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/$i.pid"
  for _ in $(seq 300); do grep -qs 'Daemon is ready' "$work/daemon$i.log" && break; sleep 0.1; done
  grep -q 'Daemon is ready' "$work/daemon$i.log" || {
    echo "swarm.sh: daemon $i did not start:" >&2; cat "$work/daemon$i.log" >&2; exit 1; }
  grep -m1 '^Swarm listening on ' "$work/daemon$i.log" | cut -d' ' -f4 >"$work/$i.addr"
}

name=swarm/bench:1
if [ "$registry" = 1 ]; then
  reg="$(addr 0):5000"
  mkdir -p "$work/registry"
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
    "$work/registry/data" "$reg" >"$work/registry/config.yml"
  ip netns exec "$(ns 0)" docker-registry serve "$work/registry/config.yml" >"$work/registry.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do in_ns 0 curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.1; done
  "$ferry" --root "$work/root0" load -i "$image" >/dev/null
  "$ferry" --root "$work/root0" tag "$("$ferry" --root "$work/root0" images -q | head -1)" "$reg/$name"
  in_ns 0 "$ferry" --root "$work/root0" push -q --insecure-registry "$reg" "$reg/$name" >/dev/null
  ref="$reg/$name"
  echo "registry $reg holds $ref ($(du -b "$image" | cut -f1) bytes archive), $n pullers, $rate per link"
else
  "$ferry" --root "$work/root0" load -i "$image" >/dev/null
  "$ferry" --root "$work/root0" tag "$("$ferry" --root "$work/root0" images -q | head -1)" "$name"
  cid=$("$ferry" --root "$work/root0" push -q "ipfs://$name")
  start_daemon 0
  peers=(--peer "$(cat "$work/0.addr")")
  for i in $(seq 1 "$n"); do
    start_daemon "$i" "${peers[@]}"
    peers+=(--peer "$(cat "$work/$i.addr")")
  done
  # every puller connected to all other hosts before the pulls start
  for i in $(seq 1 "$n"); do
    for _ in $(seq 300); do
      connected=$("$ferry" --root "$work/root$i" ipfs swarm peers 2>/dev/null | grep -c /p2p/ || true)
      [ "$connected" -ge "$n" ] && break
      sleep 0.1
    done
    [ "$connected" -ge "$n" ] || echo "swarm.sh: puller $i has only $connected of $n peers" >&2
  done
  ref="ipfs://$cid"
  echo "seeder $(cat "$work/0.addr") serves $ref, $n pullers, $rate per link"
fi

# The pulls: each waits for the go file, so they start within a few milliseconds.
for i in $(seq 0 "$hosts"); do counters "$i" >"$work/before$i"; done
for i in $(seq 1 "$n"); do
  (
    while [ ! -e "$work/go" ]; do sleep 0.005; done
    t=$(now)
    flags=()
    [ "$registry" = 0 ] || flags=(--insecure-registry "$reg")
    ip netns exec "$(ns "$i")" "$ferry" --root "$work/root$i" pull -q "${flags[@]}" "$ref" \
      >"$work/pull$i.out" 2>"$work/pull$i.err" &
    echo $! >"$work/pull$i.pid" # for the cleanup, should this run be interrupted
    wait $! || { echo fail >"$work/time$i"; exit 1; }
    echo "$(since "$t")" >"$work/time$i"
  ) &
  pids+=($!)
done
touch "$work/go"
failed=0
for p in "${pids[@]: -$n}"; do wait "$p" || failed=1; done
for i in $(seq 0 "$hosts"); do counters "$i" >"$work/after$i"; done

# verify: every puller holds the image under the name it pulled, with the seeder's config
# (same digest) and every layer blob of it (ferry checked each blob's digest as it arrived)
config_of() {
  "$ferry" --root "$work/root$1" image inspect "$2" | jq -r '.[0].ImageConfig | tojson' | sha256sum
}
want_config=$(config_of 0 "$([ "$registry" = 1 ] && echo "$reg/$name" || echo "$name")")
want_name=${ref#ipfs://}
for i in $(seq 1 "$n"); do
  if [ "$(cat "$work/time$i")" = fail ]; then
    echo "puller $i: pull failed:" >&2; tail -5 "$work/pull$i.err" >&2; continue
  fi
  got=$("$ferry" --root "$work/root$i" images --format json | jq -r '.Repository + ":" + .Tag' | head -1)
  case $got in "$want_name" | "$want_name:"*) ;; *)
    echo "puller $i: holds $got, not $want_name" >&2; failed=1; continue ;; esac
  [ "$(config_of "$i" "$ref")" = "$want_config" ] || {
    echo "puller $i: image config differs from the seeder's" >&2; failed=1; }
done

echo
printf '%-8s %10s %14s %14s %12s %8s\n' host 'pull (s)' 'sent (bytes)' 'recv (bytes)' 'VmHWM (KiB)' 'CPU (s)'
tick=$(getconf CLK_TCK)
for i in $(seq 0 "$hosts"); do
  read -r s0 r0 <"$work/before$i"
  read -r s1 r1 <"$work/after$i"
  hwm=-
  cpu=-
  if [ -f "$work/$i.pid" ]; then
    hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$(cat "$work/$i.pid")/status" 2>/dev/null || echo -)
    # user + system time of the daemon since it started (fields 14 and 15 of stat)
    cpu=$(awk -v t="$tick" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$(cat "$work/$i.pid")/stat" 2>/dev/null || echo -)
  fi
  if [ "$i" = 0 ]; then
    label=$([ "$registry" = 1 ] && echo registry || echo seeder); t=-
  else
    label="pull$i"; t=$(cat "$work/time$i")
  fi
  printf '%-8s %10s %14d %14d %12s %8s\n' "$label" "$t" $((s1 - s0)) $((r1 - r0)) "$hwm" "$cpu"
done
times=$(for i in $(seq 1 "$n"); do cat "$work/time$i"; done | grep -v fail || true)
if [ -n "$times" ]; then
  echo
  echo "pull time (s): min $(echo "$times" | sort -n | head -1)" \
    "median $(echo "$times" | median) max $(echo "$times" | sort -n | tail -1)"
fi
[ "$failed" = 0 ] || { echo "swarm.sh: some pulls failed" >&2; exit 1; }
