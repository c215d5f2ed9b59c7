#!/usr/bin/env bash
# Job file system benchmark: what the per-job tmpfs (issue 13 point 3) costs
# a job against the host directories it replaced, side by side in one run,
# interleaved in random order (bench/alternate.py), medians.
#
#   bench/jobfs.sh OLD_PINFOLD [RUNS]     (as root: runs pinfold as pinfold-test)
#
# OLD_PINFOLD is a release build from before the job file system (e.g.
# `git worktree add /tmp/old 1713264 && cargo build --release` there), whose
# runner gave each step `--bind JOBDIR/workspace:/workspace:rw
# --writable-layer JOBDIR/layer` on the host disk. The new one is this tree's
# release build: one holder per job, each step attaches its two tmpfs.
#
# Compared, each a whole `pinfold run` of a job on the busybox image:
#   1 step / 5 steps  `true` steps: the per-job cost (holder start) and the
#                     per-step cost (fetch + attach the mounts) show as the
#                     difference at 1 step and the difference in slope;
#   write 64M         one step writing 64 MiB into /workspace and 64 MiB into
#                     the rootfs (the layer), then reading them back: the
#                     file systems themselves (host disk vs tmpfs);
#   loop ext4         (as root only) what the rejected alternative would add
#                     per job: a sparse 4G image, mkfs.ext4, mount -o loop,
#                     umount. Project quotas cannot be measured here: the
#                     runner's disk would have to be mounted with prjquota.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: bench/jobfs.sh OLD_PINFOLD [RUNS]}
RUNS=${2:-30}
. bench/lib.sh
bin=$(pinfold_bin release)
make_work pinfold-bench
cp "$bin" "$work/new"
cp "$OLD" "$work/old"
image=$(bash tests/make-busybox-image.sh "$work/image")
job() {
  printf 'image: %s\nsteps:\n' "$image"
  shift_n=$1; shift
  for i in $(seq 1 "$shift_n"); do printf '  - name: s%s\n    run: %s\n' "$i" "$*"; done
}
job 1 true > "$work/one.yaml"
job 5 true > "$work/five.yaml"
job 1 "dd if=/dev/zero of=ws bs=1M count=64 2>/dev/null; dd if=/dev/zero of=/etc/layer bs=1M count=64 2>/dev/null; cat ws /etc/layer >/dev/null" > "$work/write.yaml"
own_work
# One home per binary, the image imported once (untimed).
for b in old new; do
  "${as_user[@]}" env PINFOLD_HOME="$work/home-$b" "$work/$b" run "$work/one.yaml" >/dev/null
done
cmd() { echo "${as_user[*]} $(command -v env) PINFOLD_HOME=$work/home-$1 $work/$1 run $work/$2.yaml"; }
loop=()
if [ "$(id -u)" = 0 ]; then
  mkdir "$work/mnt"
  cat > "$work/loop.sh" <<LOOP
set -e
truncate -s 4G $work/loop.img
mkfs.ext4 -q -F $work/loop.img
mount -o loop $work/loop.img $work/mnt
umount $work/mnt
rm $work/loop.img
LOOP
  loop=("loop ext4 per job (root)=$(command -v bash) $work/loop.sh")
fi
python3 bench/alternate.py "$RUNS" 3 "$work/result.json" \
  "host dirs, 1 step=$(cmd old one)" \
  "job fs, 1 step=$(cmd new one)" \
  "host dirs, 5 steps=$(cmd old five)" \
  "job fs, 5 steps=$(cmd new five)" \
  "host dirs, write 64M+64M=$(cmd old write)" \
  "job fs, write 64M+64M=$(cmd new write)" \
  "${loop[@]}"
