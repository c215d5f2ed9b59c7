#!/usr/bin/env bash
# The whole test suite: set-up (as root), lint, every test, then the kernel
# matrix (tests/vm/run.sh: qemu guests booting Debian's kernels, as root; CI
# runs it, PINFOLD_SKIP_VM=1 skips it for quick local loops).
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/toolchain.sh
if [ "$(id -u)" = 0 ]; then
  bash tests/setup.sh
else
  echo "tests/run.sh: not root, skipping tests/setup.sh (run it once as root)" >&2
fi
cargo fmt --all --check
err=$(mktemp)
trap 'rm -f "$err" "${deb_log:-}"' EXIT
# forbid PACKAGE WHY 'NAME [-e normal]'...: fails when `cargo tree -p
# PACKAGE -i NAME` finds NAME. `cargo tree -i` refuses a package that is
# not in the graph at all ("did not match"): that counts as absent.
forbid() {
  local pkg=$1 why=$2 inv tree
  shift 2
  for inv in "$@"; do
    # shellcheck disable=SC2086
    if ! tree=$(cargo tree --locked -p "$pkg" -i $inv 2>"$err") &&
      ! grep -q 'did not match any packages' "$err"; then
      cat "$err" >&2
      exit 1
    fi
    if [ -n "$tree" ]; then
      echo "tests/run.sh: $pkg depends on ${inv%% *} (cargo tree -p $pkg -i $inv): $why" >&2
      exit 1
    fi
  done
}
# A runner must not link the server: the agent reaches the coordinator
# through pinfold-client alone, so neither the coordinator nor its axum and
# SQLite may turn up in the agent's tree.
forbid pinfold-agent "a runner must not link the server" \
  "pinfold-coordinator" "rusqlite -e normal" "axum -e normal"
# The lean exec entry point is the sandbox alone: no registry client, no
# async runtime, nothing of the server, the client or the agent.
forbid pinfold-exec "it must stay the sandbox alone" \
  "ureq -e normal" "tokio -e normal" "pinfold-coordinator -e normal" \
  "pinfold-client -e normal" "pinfold-agent -e normal"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-run
# cargo-deb for the kernel matrix builds while the tests run.
deb_log=$(mktemp)
deb_pid=
if [ "${PINFOLD_SKIP_VM:-}" != 1 ] && [ "$(id -u)" = 0 ]; then
  bash tests/vm/cargo-deb.sh >"$deb_log" 2>&1 &
  deb_pid=$!
fi
cargo test --workspace --locked
if [ "${PINFOLD_SKIP_VM:-}" = 1 ]; then
  echo "tests/run.sh: PINFOLD_SKIP_VM=1: the kernel matrix (tests/vm/run.sh) is skipped" >&2
elif [ "$(id -u)" = 0 ]; then
  wait "$deb_pid" || { cat "$deb_log" >&2; echo "tests/run.sh: installing cargo-deb failed" >&2; exit 1; }
  bash tests/vm/run.sh
else
  echo "tests/run.sh: the kernel matrix needs root: sudo bash tests/vm/run.sh (or PINFOLD_SKIP_VM=1)" >&2
  exit 1
fi
