#!/bin/bash
# Lazy pulling (issue 8): time from `ferry run` to the command's first output on a cold node,
# eStargz + the stargz snapshotter (lazy) against the same image pulled whole (full).
#
# Two network namespaces joined by a bridge, each link limited by tc (tbf, both directions,
# default 100 Mbit/s). Host A loads the image, pushes it into IPFS twice (as is, and with
# --estargz) and runs `ferry daemon`; host B starts a daemon on a fresh root for every trial,
# dialing A, and runs the command there. Prints, per trial and mode, the seconds to the first
# output line, the bytes B received until then, and the medians.
# Removes every namespace, veth, bridge, process, mount and temp dir it made, even when
# interrupted.
#
# Usage: scripts/bench-lazy.sh [--trials 3] [--rate 100mbit] [--image FILE] [CMD...]   (as root)
#   --image  an image archive `ferry load` reads (default target/fixtures/python.tar,
#            built by scripts/fixtures.sh python)
#   CMD      the command to run (default: python3 -c 'print(1)')
# FERRY_BIN=path picks the ferry binary (default target/debug/ferry, built if missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"

trials=3
rate=100mbit
image=
while [ $# -gt 0 ]; do
  case $1 in
    --trials) trials=${2:?--trials needs a number}; shift 2 ;;
    --rate) rate=${2:?--rate needs a value}; shift 2 ;;
    --image) image=${2:?--image needs a file}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) echo "bench-lazy.sh: unknown option: $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || set -- python3 -c 'print(1)'
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-lazy.sh: must run as root (network namespaces, tc, FUSE)" >&2
  exit 1
fi
if [ -z "$image" ]; then
  image="$root/target/fixtures/python.tar"
  [ -f "$image" ] || "$root/scripts/fixtures.sh" python >/dev/null
fi
[ -f "$image" ] || { echo "bench-lazy.sh: no image archive at $image" >&2; exit 1; }
ferry=${FERRY_BIN:-$root/target/debug/ferry}
[ -x "$ferry" ] || (cd "$root" && cargo build --locked -q -p ferry)

id=$(($$ % 100000))
net="10.$((200 + id % 50)).$((id / 50 % 250))"
bridge="flb$id"
work=$(mktemp -d /tmp/ferry-lazy.XXXXXX)
pids=()
made=0
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # a lazy layer is a FUSE mount under its root; a killed daemon can leave one behind
  # (|| true: under set -e a grep that finds nothing would end the cleanup here)
  { grep -o " $work/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  if [ "$made" = 1 ]; then
    for i in 0 1; do
      ip link del "fl${id}h$i" 2>/dev/null || true
      ip netns del "fl$id-$i" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

addr() { echo "$net.$(($1 + 1))"; }
in_ns() { local i=$1; shift; ip netns exec "fl$id-$i" "$@"; }

made=1
ip link add "$bridge" type bridge
ip link set "$bridge" up
for i in 0 1; do
  ip netns add "fl$id-$i"
  ip link add "fl${id}h$i" type veth peer name "fl${id}n$i" netns "fl$id-$i"
  ip link set "fl${id}h$i" master "$bridge" up
  ip -n "fl$id-$i" addr add "$(addr "$i")/24" dev "fl${id}n$i"
  ip -n "fl$id-$i" link set "fl${id}n$i" up
  ip -n "fl$id-$i" link set lo up
  in_ns "$i" tc qdisc add dev "fl${id}n$i" root tbf rate "$rate" burst 64kb latency 50ms
  tc qdisc add dev "fl${id}h$i" root tbf rate "$rate" burst 64kb latency 50ms
done

# received: bytes host B has received so far (its bridge end's transmit counter)
received() { cat "/sys/class/net/fl${id}h1/statistics/tx_bytes"; }

# start_daemon I ROOT ARGS...: `ferry daemon` in host I's namespace; waits until it is ready and
# prints its address (with /p2p/ID).
start_daemon() {
  local i=$1 dir=$2; shift 2
  # nsenter joins only the network namespace: the daemon's lazy FUSE mounts must be visible to
  # the `ferry run` that stacks them (`ip netns exec` would give it a mount namespace of its own)
  nsenter --net="/run/netns/fl$id-$i" "$ferry" --root "$dir" daemon \
    --listen "/ip4/$(addr "$i")/tcp/4001" --no-registry --no-mdns "$@" >"$dir.log" 2>&1 &
  pids+=($!)
  echo $! >"$dir.pid"
  for _ in $(seq 300); do grep -qs 'Daemon is ready' "$dir.log" && break; sleep 0.1; done
  grep -q 'Daemon is ready' "$dir.log" || {
    echo "bench-lazy.sh: daemon on $dir did not start:" >&2; cat "$dir.log" >&2; exit 1; }
}

stop_daemon() {
  local dir=$1 pid
  pid=$(cat "$dir.pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

a="$work/a"
"$ferry" --root "$a" load -i "$image" >/dev/null
name=$("$ferry" --root "$a" images --format json | jq -r '.Repository + ":" + .Tag' | head -1)
full=$("$ferry" --root "$a" push -q "ipfs://$name")
lazy=$("$ferry" --root "$a" push -q --estargz "ipfs://$name")
start_daemon 0 "$a"
peer=$(grep -m1 '^Swarm listening on ' "$a.log" | cut -d' ' -f4)
size=$(du -b "$image" | cut -f1)
echo "image $name ($size bytes archive): full $full, eStargz $lazy; $rate per link; command: $*"
echo

# trial MODE CID FLAGS...: one cold run on host B; writes "seconds bytes-received output" (at
# the first output line) to $work/trial.
trial() {
  local mode=$1 cid=$2; shift 2
  local b="$work/b-$mode-$t" start before first got p
  start_daemon 1 "$b" --peer "$peer"
  before=$(received)
  start=$(now)
  # The run itself stays in the host's namespaces (runc needs the host's /sys/fs/cgroup, which
  # `ip netns exec` hides); its network work and the lazy mounts go to B's daemon.
  "$ferry" --root "$b" run --rm --net none "$@" "ipfs://$cid" "${cmd[@]}" >"$b.out" 2>"$b.err" &
  p=$!
  pids+=("$p")
  while [ ! -s "$b.out" ] && kill -0 "$p" 2>/dev/null; do sleep 0.01; done
  first=$(since "$start")
  got=$(($(received) - before))
  wait "$p" || { echo "bench-lazy.sh: $mode run failed:" >&2; tail -3 "$b.err" >&2; failed=1; }
  echo "$first $got $(head -1 "$b.out")" >"$work/trial"
  stop_daemon "$b"
}

cmd=("$@")
failed=0
printf '%-6s %-5s %10s %16s  %s\n' trial mode 'first (s)' 'received (B)' output
for t in $(seq 1 "$trials"); do
  for mode in full lazy; do
    if [ "$mode" = full ]; then trial full "$full"; else trial lazy "$lazy" --snapshotter=stargz; fi
    read -r s r o <"$work/trial"
    printf '%-6s %-5s %10s %16s  %s\n' "$t" "$mode" "$s" "$r" "$o"
    echo "$s" >>"$work/$mode.times"
  done
done
echo
f=$(median <"$work/full.times")
l=$(median <"$work/lazy.times")
echo "median first output: full $f s, lazy $l s ($(awk -v f="$f" -v l="$l" 'BEGIN { printf "%.1f", f / l }')x)"
[ "$failed" = 0 ] || { echo "bench-lazy.sh: some runs failed" >&2; exit 1; }
