#!/usr/bin/env bash
# The whole test suite: set-up (as root), lint, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/toolchain.sh
if [ "$(id -u)" = 0 ]; then
  bash tests/setup.sh
else
  echo "tests/run.sh: not root, skipping tests/setup.sh (run it once as root)" >&2
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
