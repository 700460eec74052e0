#!/bin/bash
# UnixFS import rate: `ferry ipfs add` of a file beside `sha256sum` of it (one hash pass, the
# floor) and beside add-cid.mjs (ipfs-unixfs-importer, the JS importer). Each runs ROUNDS
# times, alternating; medians. The file is made once with add-cid.mjs's deterministic generator.
# Also: the importer alone (crates/ferry-unixfs/examples/import.rs), with no store and no copy.
# Usage: scripts/bench-import.sh [SIZE_MIB] [ROUNDS]      (default 1024 MiB, 3 rounds)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/scripts/lib.sh"
size_mib=${1:-1024}
rounds=${2:-3}
scripts/install-peers.sh >/dev/null
cargo build --locked -q -p ferry
cargo build --locked -q -p ferry-unixfs --example import
ferry="$root/target/debug/ferry"
peers="$root/target/peers"
cp "$root/../shared/peers/add-cid.mjs" "$peers/add-cid-bench.mjs"

work=$(mktemp -d /tmp/ferry-import.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
file="$work/data"
node "$peers/add-cid-bench.mjs" --gen $((size_mib * 1048576)) "$file" >/dev/null


cat "$file" >/dev/null # page cache warm for everyone
for i in $(seq "$rounds"); do
  timed sha256sum "$file" >>"$work/sha256sum"
  timed "$ferry" --root "$work/root$i" ipfs add -q "$file" >>"$work/ferry"
  rm -rf "$work/root$i"
  timed node "$peers/add-cid-bench.mjs" "$file" >>"$work/js"
  timed "$root/target/debug/examples/import" "$file" >>"$work/importer"
done
s=$(median <"$work/sha256sum"); f=$(median <"$work/ferry"); j=$(median <"$work/js")
i=$(median <"$work/importer")
printf '\n%s MiB file, %s rounds, medians in seconds (%s)\n\n' "$size_mib" "$rounds" "$(date -u +%Y-%m-%d)"
printf '| | seconds | MiB/s | / sha256sum |\n|---|---|---|---|\n'
for pair in "sha256sum:$s" "ferry importer alone:$i" "ferry ipfs add (stores a copy):$f" "add-cid.mjs:$j"; do
  name=${pair%%:*}; t=${pair##*:}
  printf '| %s | %s | %s | %s |\n' "$name" "$t" "$(awk -v t="$t" -v m="$size_mib" 'BEGIN { printf "%.0f", m / t }')" "$(awk -v t="$t" -v s="$s" 'BEGIN { printf "%.2f", t / s }')"
done
