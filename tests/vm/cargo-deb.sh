#!/usr/bin/env bash
# Installs cargo-deb, which packages the debug build for the VM matrix's
# units check (tests/vm/run.sh: `cargo deb --no-build`, so no second build of
# pinfold), unless this version is there already. Pinned: the
# [package.metadata.deb] keys and the flags run.sh passes are this version's.
# Takes ~5 min of 2 cores once per machine, so tests/run.sh starts it in the
# background while the cargo tests run (which leave cores idle waiting on
# containers and servers).
set -euo pipefail
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "tests/vm/cargo-deb.sh: installing cargo-deb $CARGO_DEB_VERSION (cargo install)" >&2
  nice -n 10 cargo install --quiet --locked --version "$CARGO_DEB_VERSION" cargo-deb
fi
