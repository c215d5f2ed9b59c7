#!/usr/bin/env bash
# Exec start benchmark: median wall time of `pinfold exec -- /bin/true` against
# bubblewrap doing the least it can (all namespaces, a bind rootfs, /proc, /dev),
# side by side in one run. pinfold does more: overlay rootfs, Landlock, seccomp,
# rlimits, masked /proc, generated /etc.
#
#   bench/exec.sh [RUNS]        (as root: runs the sandboxes as pinfold-test)
#
# Needs: hyperfine, bubblewrap, busybox-static, python3 (tests/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-200}
cargo build --release --quiet
work=$(mktemp -d /tmp/pinfold-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
cp target/release/pinfold "$work/pinfold"
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for a in $(busybox --list); do [ "$a" = busybox ] || ln -s busybox "$rootfs/bin/$a"; done
as_user=()
if [ "$(id -u)" = 0 ]; then
  chown -R pinfold-test: "$work"
  as_user=(runuser -u pinfold-test --)
fi
"${as_user[@]}" env PINFOLD_HOME="$work/home" hyperfine -N --warmup 20 --runs "$RUNS" \
  --export-json "$work/result.json" \
  -n "pinfold (sub-id map)" "$work/pinfold exec --rootfs $rootfs -- /bin/true" \
  -n "pinfold (single map)" "$work/pinfold exec --userns single --rootfs $rootfs -- /bin/true" \
  -n "bwrap" "bwrap --unshare-all --die-with-parent --bind $rootfs / --proc /proc --dev /dev /bin/true" \
  >/dev/null
python3 - "$work/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
bw = r["bwrap"]["median"]
print(f"{'command':24} {'median':>9} {'ratio to bwrap':>15}")
for name, x in r.items():
    print(f"{name:24} {x['median']*1000:7.2f}ms {x['median']/bw:14.2f}x")
PY
