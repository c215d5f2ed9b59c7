#!/usr/bin/env bash
# `pinfold shell {0}` overhead under the real engine: the same 5-step
# workflow run by act (tests/.venv, from tests/setup.sh) offline on this
# host, once with `shell: sh -e {0}` (no sandbox) and once with
# `shell: pinfold shell {0}`; interleaved in random order in one run
# (bench/alternate.py), medians. The last line is what scripts read:
#   per job: N ms over bare act (M ms), per step: S ms
#
#   bench/actions.sh [RUNS]     (as root: runs act as pinfold-test)
#
# pinfold is the `dist` build unless PINFOLD_BIN names a binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-10}
act=$PWD/tests/.venv/bin/act
[ -x "$act" ] || { echo "bench/actions.sh: $act is missing: run sudo bash tests/setup.sh" >&2; exit 1; }
bench_work pinfold-bench-actions dist
rootfs="$work/rootfs"
bash tests/make-busybox-rootfs.sh "$rootfs"
for shell in bare pinfold; do
  r="$work/repo-$shell"
  mkdir -p "$r/.github/workflows"
  case $shell in
  bare) sh='sh -e {0}' ;;
  pinfold) sh="$work/pinfold shell {0}" ;;
  esac
  cat >"$r/.github/workflows/ci.yml" <<YML
on: push
env:
  PINFOLD_ROOTFS: $rootfs
  PINFOLD_HOME: $work/home
defaults:
  run:
    shell: $sh
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo building
      - run: ls / >/dev/null
      - run: echo "v=1" >> "\$GITHUB_OUTPUT"
      - run: date >/dev/null
      - run: echo done
YML
  cat >"$work/$shell.sh" <<SH
#!/bin/sh
cd '$r' && exec '$act' push -P ubuntu-latest=-self-hosted --action-offline-mode >/dev/null 2>&1
SH
done
chmod -R a+rX "$work"
own_work
run() { "${as_user[@]}" env HOME="$work" PATH=/usr/local/bin:/usr/bin:/bin "$@"; }
run sh "$work/pinfold.sh"
run python3 bench/alternate.py "$RUNS" 2 "$work/result.json" \
  "act, sh -e {0}=/bin/sh $work/bare.sh" \
  "act, pinfold shell {0}=/bin/sh $work/pinfold.sh"
python3 - "$work/result.json" <<'PY'
import json, sys
r = [x["median_ms"] for x in json.load(open(sys.argv[1]))["results"]]
print(f"per job: {r[1] - r[0]:.1f} ms over bare act ({r[0]:.1f} ms), per step: {(r[1] - r[0]) / 5:.1f} ms")
PY
