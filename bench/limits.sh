#!/usr/bin/env bash
# Cost of the resource-limit supervisor (the fallback used where cgroup v2 is
# not delegated): the same work in the same container with the container-wide
# limits on (memory, pids, cpu_time: the supervisor reads the container's
# procfs every 10 ms) and off (all three 0: no supervisor), side by side in
# one hyperfine run.
#
#   bench/limits.sh [RUNS]        (as root: runs the sandboxes as pinfold-test)
#   PINFOLD=path/to/pinfold bench/limits.sh [RUNS]   (that binary, no build)
#
# Workloads: `/bin/true` (start cost: detection and set-up), a fork-heavy
# shell loop (2000 processes: what a build's make/sh do), and a CPU loop.
# Needs: hyperfine, busybox-static (tests/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-30}
bin=$(pinfold_bin release "${PINFOLD:-}")
make_work pinfold-bench "$bin"
rootfs="$work/rootfs"
bash tests/make-busybox-rootfs.sh "$rootfs"
printf 'description = "limits on"\n[limits]\nmemory = "4G"\npids = 4096\ncpu_time = "1h"\n' >"$work/on.toml"
printf 'description = "limits off"\n[limits]\nmemory = 0\npids = 0\ncpu_time = 0\n' >"$work/off.toml"
own_work
fork='i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done'
cpu='i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'
run() {
  local name=$1 script=$2 runs=$3
  "${as_user[@]}" env PINFOLD_HOME="$work/home" hyperfine -N --warmup 3 --runs "$runs" \
    --export-json "$work/$name.json" \
    -n "$name, limits on" "$work/pinfold exec --policy $work/on.toml --rootfs $rootfs -- /bin/sh -c '$script'" \
    -n "$name, limits off" "$work/pinfold exec --policy $work/off.toml --rootfs $rootfs -- /bin/sh -c '$script'" \
    >/dev/null
}
run true "true" $((RUNS * 5))
run fork "$fork" "$RUNS"
run cpu "$cpu" "$RUNS"
# The supervisor's own CPU time: ticks of the `pinfold exec` parent over 5 s
# of a container holding N sleeping processes (limits on).
supervisor() {
  local n=$1
  "${as_user[@]}" env PINFOLD_HOME="$work/home" sh -c '
    "$1" exec --policy "$2" --rootfs "$3" -- /bin/sh -c "i=0; while [ \$i -lt $4 ]; do sleep 8 & i=\$((i+1)); done; sleep 8" &
    pid=$!; sleep 1
    a=$(cut -d" " -f14,15 /proc/$pid/stat); sleep 5; b=$(cut -d" " -f14,15 /proc/$pid/stat)
    kill $pid
    echo "$a $b"' sh "$work/pinfold" "$work/on.toml" "$rootfs" "$n"
}
hz=$(getconf CLK_TCK)
for n in 1 100; do
  set -- $(supervisor "$n")
  echo "supervisor CPU with $n sleeping processes: $(( ($3 + $4 - $1 - $2) * 100 / ($hz * 5) ))% of a core (over 5 s)" >>"$work/supervisor.txt"
done
python3 - "$work" <<'PY'
import json, sys
print(f"{'workload':28} {'median':>10} {'on/off':>7}")
for w in ["true", "fork", "cpu"]:
    r = {x["command"]: x for x in json.load(open(f"{sys.argv[1]}/{w}.json"))["results"]}
    off = r[f"{w}, limits off"]["median"]
    for name, x in r.items():
        print(f"{name:28} {x['median']*1000:8.2f}ms {x['median']/off:6.3f}x")
PY
cat "$work/supervisor.txt"
