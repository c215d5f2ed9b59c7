#!/usr/bin/env bash
# GitHub Actions container-hook overhead: a 5-step job run as the
# self-hosted runner runs it with ACTIONS_RUNNER_CONTAINER_HOOKS
# (bench/gha_job.py: prepare_job, 5 x run_script_step, cleanup_job, each a
# new hook process), through the shipped ci-templates/github/pinfold-hook.js
# (node, then pinfold gha-hook) and through `pinfold gha-hook` called
# directly, against the same 5 scripts run by the same harness with no
# sandbox (sh -e SCRIPT on the host, as the runner runs a job without a
# container); and 0-step jobs for the per-job cost. Interleaved in random
# order in one run (bench/alternate.py); medians. The last line is what
# scripts read:
#   per job: N ms, per step: M ms (hook.js); direct: N2 ms, M2 ms (bare 5-step job: B ms)
#
#   bench/gha.sh [RUNS]     (as root: runs the hook as pinfold-test)
#
# pinfold is the `dist` build unless PINFOLD_BIN names a binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-20}
bench_work pinfold-bench-gha dist
# The job's image: busybox, built with umoci.
image=$(bash tests/make-busybox-image.sh "$work")
r="$work/runner"
mkdir -p "$r/_work/_temp/_runner_hook_responses" "$r/_work/_temp/_github_home" \
  "$r/_work/_temp/_github_workflow" "$r/externals"
cp ci-templates/github/pinfold-hook.js "$work/"
chmod -R a+rX "$work"
own_work
run() {
  "${as_user[@]}" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work" PINFOLD_HOME="$work/home" \
    PINFOLD_BIN="$work/pinfold" PINFOLD_POLICY=default PINFOLD_GHA_ALLOW_LOCAL_IMAGES=true "$@"
}
job="/usr/bin/python3 $PWD/bench/gha_job.py $r $image"
js="$(command -v node) $work/pinfold-hook.js"
run $job 5 $js   # imports the image once
run python3 bench/alternate.py "$RUNS" 3 "$work/result.json" \
  "bare 5-step=$job 5 bare" \
  "bare 0-step=$job 0 bare" \
  "hook.js 5-step=$job 5 $js" \
  "hook.js 0-step=$job 0 $js" \
  "direct 5-step=$job 5 $work/pinfold gha-hook" \
  "direct 0-step=$job 0 $work/pinfold gha-hook"
python3 - "$work/result.json" <<'PY'
import json, sys
r = {x["name"]: x["median_ms"] for x in json.load(open(sys.argv[1]))["results"]}
def of(k):
    # The harness's own start (python) is in every row: the bare 0-step job
    # is that alone. A job's cost is the 0-step job less it; a step's is
    # the 5-step job less the 0-step job less the bare job's 5 steps, / 5.
    h = r["bare 0-step"]
    job = r[f"{k} 0-step"] - h
    return job, (r[f"{k} 5-step"] - r[f"{k} 0-step"] - (r["bare 5-step"] - h)) / 5
j, s = of("hook.js")
dj, ds = of("direct")
print(f"per job: {j:.1f} ms, per step: {s:.1f} ms (hook.js); direct: {dj:.1f} ms, {ds:.1f} ms (bare 5-step job: {r['bare 5-step']:.1f} ms)")
PY
