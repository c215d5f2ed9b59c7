#!/usr/bin/env bash
# The coordinator's dispatch benchmark (coordinator/benches/dispatch.rs),
# this tree against an older build of it, interleaved in one run: each round
# runs both bench binaries once, in random order, and the medians and their
# ratio are printed at the end. For a before/after of a change.
#
#   bench/dispatch-ab.sh BASE_BENCH_BINARY [ROUNDS] [JOBS] [LOG_MIB]
#
# BASE_BENCH_BINARY: the older tree's bench executable, from
#   `cargo bench --no-run -p pinfold-coordinator --bench dispatch` there
#   (it prints the path). Defaults: 8 rounds, 2000 jobs, 64 MiB of log.
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1
rounds=${2:-8}
jobs=${3:-2000}
mib=${4:-64}
new=$(cargo bench --no-run -p pinfold-coordinator --bench dispatch --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "dispatch" and m.get("executable"):
        print(m["executable"])')
python3 - "$base" "$new" "$rounds" "$jobs" "$mib" <<'PY'
import random, re, statistics, subprocess, sys
base, new, rounds, jobs, mib = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
res = {"base": {"d": [], "l": []}, "this tree": {"d": [], "l": []}}
for r in range(rounds):
    order = [("base", base), ("this tree", new)]
    random.shuffle(order)
    for name, exe in order:
        out = subprocess.run([exe, jobs, mib, "1"], check=True, capture_output=True, text=True).stdout
        res[name]["d"].append(float(re.search(r"median dispatch: (\d+)", out).group(1)))
        res[name]["l"].append(float(re.search(r"median log ingest: (\d+)", out).group(1)))
    print(f"round {r + 1}/{rounds}: " + ", ".join(
        f"{n} {v['d'][-1]:.0f} jobs/s {v['l'][-1]:.0f} MB/s" for n, v in res.items()), flush=True)
print(f"| build | dispatch, 50 runners (jobs/s) | log ingest (MB/s) |")
print("|---|---|---|")
for n, v in res.items():
    print(f"| {n} | {statistics.median(v['d']):.0f} | {statistics.median(v['l']):.0f} |")
b, t = res["base"], res["this tree"]
print(f"| ratio this/base | {statistics.median(t['d']) / statistics.median(b['d']):.2f}x | "
      f"{statistics.median(t['l']) / statistics.median(b['l']):.2f}x |")
PY
