#!/bin/sh
# Run ferry's whole test suite: installs what the tests need (scripts/setup.sh), builds the
# test images once (scripts/fixtures.sh), then runs every test of the workspace. Tests that need
# root, runc or overlayfs run only as root (as CI runs) and say SKIP otherwise.
# Usage: scripts/test.sh [extra arguments for cargo nextest / cargo test]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
# the Debian image: the lazy-pulling tests need a layer large enough to fetch a fraction of
scripts/fixtures.sh debian >/dev/null
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  exec cargo test --workspace --locked --no-fail-fast "$@"
fi
