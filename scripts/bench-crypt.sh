#!/bin/bash
# Encrypted images (issue 7): `ferry image encrypt` / `decrypt` of the Debian image beside
# `skopeo copy --encryption-key` / `--decryption-key` (Go ocicrypt) doing the same, and what
# decryption adds to `ferry run` of a local image (fresh snapshots each time). One RSA-2048 JWE
# recipient. Alternating rounds; medians.
# Usage: scripts/bench-crypt.sh [ROUNDS]      (default 5; the run part needs root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/scripts/lib.sh"
rounds=${1:-5}
cargo build --locked -q -p ferry
ferry="$root/target/debug/ferry"
layout="$root/target/fixtures/debian"
[ -d "$layout" ] || scripts/fixtures.sh >/dev/null

work=$(mktemp -d /tmp/ferry-crypt.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/key.pem" 2>/dev/null
openssl pkey -in "$work/key.pem" -pubout -out "$work/key.pub.pem"
chmod 600 "$work/key.pem"
r="$work/root"
"$ferry" --root "$r" load -i "$root/target/fixtures/debian.tar" >/dev/null
name=$("$ferry" --root "$r" images -q | head -1)
tag=$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]' "$layout/index.json")
skopeo copy -q --encryption-key "jwe:$work/key.pub.pem" "oci:$layout:$tag" "oci:$work/sk-enc:enc"
"$ferry" --root "$r" image encrypt --recipient "jwe:$work/key.pub.pem" "$name" enc >/dev/null
cat "$layout"/blobs/sha256/* >/dev/null # page cache warm for everyone

for i in $(seq "$rounds"); do
  timed "$ferry" --root "$r" image encrypt --recipient "jwe:$work/key.pub.pem" "$name" "enc$i" >>"$work/ferry-enc"
  timed skopeo copy -q --encryption-key "jwe:$work/key.pub.pem" "oci:$layout:$tag" "oci:$work/sk$i:enc" >>"$work/skopeo-enc"
  timed "$ferry" --root "$r" image decrypt --key "$work/key.pem" enc "dec$i" >>"$work/ferry-dec"
  timed skopeo copy -q --decryption-key "$work/key.pem" "oci:$work/sk-enc:enc" "oci:$work/skd$i:dec" >>"$work/skopeo-dec"
  rm -rf "$work/sk$i" "$work/skd$i"
done

run_rows=""
if [ "$(id -u)" = 0 ]; then
  for i in $(seq "$rounds"); do
    rm -rf "$r/snapshots"
    timed "$ferry" --root "$r" run --rm "$name" true >>"$work/run-plain"
    rm -rf "$r/snapshots"
    timed "$ferry" --root "$r" run --rm --key "$work/key.pem" enc true >>"$work/run-enc"
  done
  p=$(median <"$work/run-plain"); e=$(median <"$work/run-enc")
  run_rows=$(printf '| `ferry run --rm IMAGE true`, fresh snapshots | %s | %s (with --key) | %s |' \
    "$p" "$e" "$(awk -v a="$e" -v b="$p" 'BEGIN { printf "%.2f", a / b }')")
fi

fe=$(median <"$work/ferry-enc"); se=$(median <"$work/skopeo-enc")
fd=$(median <"$work/ferry-dec"); sd=$(median <"$work/skopeo-dec")
manifest="$layout/blobs/sha256/$(jq -r '.manifests[0].digest' "$layout/index.json" | cut -c8-)"
size=$(jq -r '[.layers[].size] | add' "$manifest")
printf '\nDebian image (%s bytes of layers), %s rounds, medians in seconds (%s)\n\n' "$size" "$rounds" "$(date -u +%Y-%m-%d)"
printf '| step | ferry | skopeo | ferry / skopeo |\n|---|---|---|---|\n'
printf '| encrypt | %s | %s | %s |\n' "$fe" "$se" "$(awk -v a="$fe" -v b="$se" 'BEGIN { printf "%.2f", a / b }')"
printf '| decrypt | %s | %s | %s |\n' "$fd" "$sd" "$(awk -v a="$fd" -v b="$sd" 'BEGIN { printf "%.2f", a / b }')"
if [ -n "$run_rows" ]; then
  printf '\n| run | plain image | encrypted image | encrypted / plain |\n|---|---|---|---|\n%s\n' "$run_rows"
fi
