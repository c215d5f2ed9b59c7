#!/usr/bin/env bash
# GitLab driver overhead: a 5-stage GitLab job run through `pinfold
# gitlab-driver` (config, prepare, 5 x run, cleanup: what GitLab Runner's
# Custom executor calls), against the same 5 stage scripts run by the same
# harness with no sandbox (bash SCRIPT, as the shell executor does), and a
# 0-stage job through the driver (config, prepare, cleanup: the per-job
# cost). Interleaved in random order in one run (bench/alternate.py);
# medians. The last line is what scripts read:
#   per job: N ms, per stage: M ms (bare 5-stage job: B ms)
# per job = driver 0-stage; per stage = (driver 5-stage - driver 0-stage -
# bare 5-stage) / 5.
#
#   bench/gitlab.sh [RUNS]     (as root: runs the driver as pinfold-test)
#
# pinfold is the `dist` build unless PINFOLD_BIN names a binary, with the
# pinfold-exec beside it; PINFOLD_BASE=OLD/pinfold adds OLD's two driver
# rows (e.g. main before the job container: one pinfold exec per stage).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-30}
bench_work pinfold-bench-gitlab dist
if [ -x "$(dirname "$bin")/pinfold-exec" ]; then
  cp "$(dirname "$bin")/pinfold-exec" "$work/pinfold-exec"
fi
base=()
if [ -n "${PINFOLD_BASE:-}" ]; then
  mkdir -p "$work/base"
  cp "$PINFOLD_BASE" "$work/base/pinfold"
  base=("base driver 5-stage=/bin/sh $work/job.sh driver 5 $work/base/pinfold"
    "base driver 0-stage=/bin/sh $work/job.sh driver 0 $work/base/pinfold")
fi
# The job's image: busybox, built with umoci.
image=$(bash tests/make-busybox-image.sh "$work")
# Five stages as GitLab names them, each script a small real step.
mkdir -p "$work/scripts"
i=0
for s in "echo building" "ls / >/dev/null" "ls /etc >/dev/null" "date >/dev/null" "echo done"; do
  i=$((i + 1))
  printf '#!/bin/sh\nset -e\n%s\n' "$s" >"$work/scripts/$i"
done
stages="get_sources restore_cache step_script after_script upload_artifacts_on_success"
cat >"$work/job.sh" <<SH
#!/bin/sh
# job.sh bare|driver N [PINFOLD]: one job of N stages, as GitLab Runner runs it.
set -e
p=\${3:-'$work/pinfold'}
export BUILD_FAILURE_EXIT_CODE=37 SYSTEM_FAILURE_EXIT_CODE=73
export CUSTOM_ENV_CI_JOB_IMAGE='$image' PINFOLD_HOME='$work/home'
i=0
if [ "\$1" = bare ]; then
  for s in $stages; do i=\$((i + 1)); [ \$i -le \$2 ] || break; bash '$work/scripts/'\$i; done
  exit 0
fi
PINFOLD_GITLAB_JOB=\$("\$p" gitlab-driver config | sed -n 's/.*"PINFOLD_GITLAB_JOB": *"\([0-9a-f]*\)".*/\1/p')
export PINFOLD_GITLAB_JOB
"\$p" gitlab-driver prepare --policy default --allow-local-images >/dev/null
for s in $stages; do i=\$((i + 1)); [ \$i -le \$2 ] || break; "\$p" gitlab-driver run '$work/scripts/'\$i \$s; done
"\$p" gitlab-driver cleanup
SH
chmod -R a+rX "$work"
own_work
run() { "${as_user[@]}" "$@"; }
run sh "$work/job.sh" driver 5 >/dev/null   # imports the image once
if [ -n "${PINFOLD_BASE:-}" ]; then run sh "$work/job.sh" driver 5 "$work/base/pinfold" >/dev/null; fi
[ -n "${BENCH_KEEP:-}" ] && { trap - EXIT; echo "work: $work"; }
run python3 bench/alternate.py "$RUNS" 3 "$work/result.json" \
  "bare 5-stage=/bin/sh $work/job.sh bare 5" \
  "driver 5-stage=/bin/sh $work/job.sh driver 5" \
  "driver 0-stage=/bin/sh $work/job.sh driver 0" "${base[@]}"
python3 - "$work/result.json" <<'PY'
import json, sys
r = {x["name"]: x["median_ms"] for x in json.load(open(sys.argv[1]))["results"]}
job = r["driver 0-stage"]
stage = (r["driver 5-stage"] - r["driver 0-stage"] - r["bare 5-stage"]) / 5
if "base driver 5-stage" in r:
    b = (r["base driver 5-stage"] - r["base driver 0-stage"] - r["bare 5-stage"]) / 5
    print(f"base: per job: {r['base driver 0-stage']:.1f} ms, per stage: {b:.1f} ms")
print(f"per job: {job:.1f} ms, per stage: {stage:.1f} ms (bare 5-stage job: {r['bare 5-stage']:.1f} ms)")
PY
