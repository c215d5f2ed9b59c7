#!/usr/bin/env bash
# Exec start benchmark: median wall time of `pinfold exec -- /bin/true` against
# bubblewrap, side by side in one run, the commands interleaved in random
# order (bench/alternate.py) so that a busy machine loads every one alike.
#
#   bench/exec.sh [RUNS]        (as root: runs the sandboxes as pinfold-test)
#
# Compared (ratios are to the first):
#   bwrap          the issue's reference: all namespaces, a bind rootfs, /proc, /dev;
#   bwrap matched  bubblewrap given what it can of pinfold's isolation: read-only
#                  rootfs, tmpfs /tmp, hostname, new session, pinfold's own
#                  seccomp program (--seccomp). bwrap 0.8 has no overlay, no
#                  Landlock, no rlimits, no /proc masks beyond its own;
#   unshare floor  `unshare -Urmpfn --mount-proc /bin/true`: the namespaces
#                  alone, nothing else (the floor every sandbox starts above);
#   pinfold-exec single  the lean exec entry point (exec/: the sandbox crate
#                  alone), the same run as `pinfold single`;
#   pinfold single / sub-id  the default policy: overlay rootfs with a tmpfs
#                  upper, masked /proc, Landlock, seccomp, rlimits, generated
#                  /etc; one id mapped (written by the child itself), or the
#                  caller's sub-id range through newuidmap/newgidmap.
#
# pinfold is the `dist` build (Cargo.toml: fat LTO, one codegen unit), the one
# the README says to install on runners; the first run builds it (~9 min).
#
#   PINFOLD_BASE=OLD/pinfold bench/exec.sh   adds OLD's starts, interleaved
#
# Needs: bubblewrap, busybox-static, python3 (tests/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-200}
bin=$(pinfold_bin dist)
# pinfold-exec alone, so that the sandbox is built without its registry
# client, as the lean binary is shipped.
cargo build --profile dist --quiet -p pinfold-exec
make_work pinfold-bench "$bin"
cp "${PINFOLD_EXEC_BIN:-${CARGO_TARGET_DIR:-target}/dist/pinfold-exec}" "$work/pinfold-exec"
rootfs="$work/rootfs"
bash tests/make-busybox-rootfs.sh "$rootfs"
own_work
run() { "${as_user[@]}" env PINFOLD_HOME="$work/home" "$@"; }
# pinfold's compiled seccomp program, raw, for bwrap --seccomp (the cache
# file is: u32 length, the instructions, sha256).
run "$work/pinfold" exec --userns single --rootfs "$rootfs" -- /bin/true
python3 - "$work"/home/cache/seccomp/*.bpf "$work/seccomp.raw" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()[:-32]
n = struct.unpack_from("<I", data)[0]
assert len(data) == 4 + 8 * n, "one program expected"
open(sys.argv[2], "wb").write(data[4:])
PY
chmod 644 "$work/seccomp.raw"
# PINFOLD_BASE=BINARY adds an older build's two starts, interleaved with the
# rest (a before/after of a change, in one run).
base=()
if [ -n "${PINFOLD_BASE:-}" ]; then
  cp "$PINFOLD_BASE" "$work/pinfold-base"
  chmod 755 "$work/pinfold-base"
  base=("base single=$work/pinfold-base exec --userns single --rootfs $rootfs -- /bin/true"
    "base sub-id=$work/pinfold-base exec --rootfs $rootfs -- /bin/true")
fi
run python3 bench/alternate.py "$RUNS" 20 "$work/result.json" \
  "bwrap=$(command -v bwrap) --unshare-all --die-with-parent --bind $rootfs / --proc /proc --dev /dev /bin/true" \
  "unshare floor=$(command -v unshare) -Urmpfn --mount-proc /bin/true" \
  "pinfold-exec single=$work/pinfold-exec --userns single --rootfs $rootfs -- /bin/true" \
  "bwrap matched=$(command -v bwrap) --unshare-all --die-with-parent --new-session --hostname pinfold --ro-bind $rootfs / --proc /proc --dev /dev --tmpfs /tmp --seccomp 3 3<$work/seccomp.raw /bin/true" \
  "pinfold single=$work/pinfold exec --userns single --rootfs $rootfs -- /bin/true" \
  "pinfold sub-id=$work/pinfold exec --rootfs $rootfs -- /bin/true" "${base[@]}"
