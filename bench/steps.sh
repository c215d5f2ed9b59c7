#!/usr/bin/env bash
# One container per job (issue 19): what a step costs to start inside a job
# container, what a 10-step job of trivial steps costs against today's
# exec-per-step and against bwrap and rootless podman, and how warm the
# image's tree stays between steps. Side by side in one run, the timed
# commands interleaved in random order (bench/alternate.py); medians.
#
#   bench/steps.sh [STEPS] [ROUNDS]   (as root: the sandboxes run as pinfold-test;
#                                      defaults 200 and 30)
#
# 1. Per-step start: a job container (`pinfold exec --control-fd`, driven by
#    sandbox/examples/steps.rs as the runner drives it) runs STEPS steps of a
#    static `probe now`, which prints the monotonic clock first thing; the
#    time from the request to that instruction, median. Against bwrap's
#    cold start (`bwrap --unshare-all ... /bin/true`, ROUNDS runs).
# 2. A 10-step job of `true` steps, whole: `pinfold run` of the job file
#    (the runner's full path: job file system, image lookup, job container),
#    the job container alone, 10 x `pinfold exec`, 10 x bwrap and 10 x
#    `podman run --rm` (rootless, runc, --network none) of the same image,
#    each a shell loop. PINFOLD_BASE=OLD/pinfold adds OLD's `pinfold run`
#    (before the job container: one exec per step).
# 3. The tree walk: `du -s /usr` of a Debian bookworm rootfs (debootstrap
#    --variant=minbase, cached in bench/.cache/debian-minbase) as step 1 and
#    step 2 of one job container, against bare (chroot as pinfold-test),
#    ROUNDS jobs; and a plain overlay alone (unshare -Urm, the same tree as
#    its lower layer, a tmpfs upper, no pinfold), walked twice the same
#    way: the floor of any sandbox with a writable layer over the image.
#
# pinfold is the release build (PINFOLD_BIN=path to use another, e.g. the
# `dist` one that bench/exec.sh uses).
# Needs: bubblewrap, busybox-static, umoci, skopeo, gcc, python3
# (tests/setup.sh installs them); podman and runc for the podman row
# (apt-get install podman runc; skipped when missing); debootstrap (installed when missing).
#
# The last line is for scripts:
#   per-step start median: N ms (bwrap cold start: M ms)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
STEPS=${1:-200}
ROUNDS=${2:-30}
[ "$(id -u)" = 0 ] || { echo "run as root (chroot for the bare walk, podman's user)" >&2; exit 1; }
bin=$(pinfold_bin release "${PINFOLD_BIN:-}")
cargo build --release --quiet -p pinfold-exec
cargo build --release --quiet --example steps -p pinfold-sandbox
make_work pinfold-bench-steps "$bin"
target=${CARGO_TARGET_DIR:-target}/release
cp "$target/examples/steps" "$work/steps"
# Beside pinfold, as installed: `pinfold run` starts its job containers with it.
cp "${PINFOLD_EXEC_BIN:-$target/pinfold-exec}" "$work/pinfold-exec"
rootfs="$work/rootfs"
bash tests/make-busybox-rootfs.sh "$rootfs" >/dev/null
gcc -O2 -static -o "$rootfs/bin/probe" tests/probe/probe.c

cache=bench/.cache
deb=$cache/debian-minbase
if [ ! -x "$deb/usr/bin/du" ]; then
  MIRROR=$( (grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null; grep -h '^deb ' /etc/apt/sources.list 2>/dev/null) | grep -o 'https\?://[^ ]*debian' | head -n1 || true)
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
  rm -rf "$deb.tmp"
  mkdir -p "$cache"
  debootstrap --variant=minbase bookworm "$deb.tmp" "${MIRROR:-http://deb.debian.org/debian}" >/dev/null
  mv "$deb.tmp" "$deb"
fi
deb=$(realpath "$deb")
uidgid="$(id -u pinfold-test):$(id -g pinfold-test)"

# The busybox rootfs as an OCI image, for `pinfold run` and podman.
l=$work/img
umoci init --layout "$l"
umoci new --image "$l:img"
umoci unpack --rootless --image "$l:img" "$work/bundle" >/dev/null
cp -a "$rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$l:img" "$work/bundle" >/dev/null
rm -rf "$work/bundle"
digest=$(python3 -c "import json;print(json.load(open('$l/index.json'))['manifests'][0]['digest'])")
{
  echo "image: oci:$l@$digest"
  echo "steps:"
  for i in 1 2 3 4 5 6 7 8 9 10; do printf '  - name: s%s\n    run: "true"\n' "$i"; done
} > "$work/ten.yaml"

own_work
run() { "${as_user[@]}" env PINFOLD_HOME="$work/home" "$@"; }
P=$work/pinfold
cd "$work"
run "$P" run ten.yaml >/dev/null # the image into the store once

echo "== 1. per-step start: $STEPS steps of 'probe now' in one job container"
start=$(run ./steps start "$STEPS" "$work/pinfold-exec" --rootfs "$rootfs")
echo "$start"
run python3 "$OLDPWD/bench/alternate.py" "$ROUNDS" 5 "$work/bwrap.json" \
  "bwrap cold=$(command -v bwrap) --unshare-all --die-with-parent --bind $rootfs / --proc /proc --dev /dev /bin/true"

echo "== 2. a job of 10 trivial steps, whole ($ROUNDS runs each, interleaved)"
loop() { # NAME CMD...: a script running CMD 10 times
  { echo '#!/bin/sh'; echo 'set -e'; echo "for i in 1 2 3 4 5 6 7 8 9 10; do $2 >/dev/null; done"; } > "$work/$1"
  chmod 755 "$work/$1"
}
loop ten-exec "$P exec --rootfs $rootfs -- /bin/true"
loop ten-bwrap "$(command -v bwrap) --unshare-all --die-with-parent --new-session --ro-bind $rootfs / --proc /proc --dev /dev --tmpfs /tmp /bin/true"
cmds=("pinfold run (job container)=$P run $work/ten.yaml"
  "job container alone=$work/steps job 10 $work/pinfold-exec --rootfs $rootfs"
  "10 x pinfold exec=$work/ten-exec"
  "10 x bwrap=$work/ten-bwrap")
if [ -n "${PINFOLD_BASE:-}" ]; then
  cp "$PINFOLD_BASE" "$work/pinfold-base"
  chmod 755 "$work/pinfold-base"
  cmds+=("pinfold run (base: exec per step)=$work/pinfold-base run $work/ten.yaml")
fi
if command -v podman >/dev/null && command -v runc >/dev/null; then
  uid=$(id -u pinfold-test)
  mkdir -p "/run/user/$uid" "$work/podman-home"
  chown pinfold-test "/run/user/$uid" "$work/podman-home"
  pod=(env XDG_RUNTIME_DIR="/run/user/$uid" HOME="$work/podman-home" podman)
  # podman names an oci: pull after its path (upper case from mktemp is
  # refused): copy it in under a name with skopeo, into podman's storage.
  run env XDG_RUNTIME_DIR="/run/user/$uid" HOME="$work/podman-home" \
    skopeo copy -q "oci:$l:img" containers-storage:localhost/pinfold-steps:latest
  loop ten-podman "${pod[*]} run --rm --runtime runc --network none localhost/pinfold-steps:latest /bin/true"
  cmds+=("10 x podman run --rm (runc)=$work/ten-podman")
else
  echo "(podman or runc missing: apt-get install podman runc for the podman row)"
fi
run python3 "$OLDPWD/bench/alternate.py" "$ROUNDS" 2 "$work/ten.json" "${cmds[@]}"

echo "== 3. the tree walk: du -s /usr of Debian bookworm, step 1 and step 2 of one job ($ROUNDS jobs)"
cat > "$work/bare-walk" <<EOF
#!/bin/sh
exec chroot --userspec=$uidgid $deb du -s /usr
EOF
chmod 755 "$work/bare-walk"
python3 "$OLDPWD/bench/alternate.py" "$ROUNDS" 2 "$work/bare.json" "bare=$work/bare-walk" >/dev/null
: > "$work/walks"
cat > "$work/overlay-walk" <<'EOF'
#!/bin/bash
# overlay-walk TREE (in unshare -Urm): du -s TREE/usr twice through a
# plain overlay of TREE with a tmpfs upper; bash's clock, no fork.
set -e
mount -t tmpfs tmpfs /tmp
mkdir /tmp/u /tmp/w /tmp/r
mount -t overlay overlay -o "lowerdir=$1,upperdir=/tmp/u,workdir=/tmp/w,userxattr" /tmp/r
walk() { local t0=$EPOCHREALTIME; du -s /tmp/r/usr >/dev/null; local t1=$EPOCHREALTIME; echo $(( (${t1/./} - ${t0/./}) )); }
a=$(walk); b=$(walk)
echo "overlay walk: step 1 $a us, step 2 $b us"
EOF
chmod 755 "$work/overlay-walk"
for _ in $(seq "$ROUNDS"); do
  run ./steps walk "$work/pinfold-exec" --rootfs "$deb" >> "$work/walks"
  run unshare -Urm "$work/overlay-walk" "$deb" >> "$work/overlay-walks"
done
python3 - "$work/walks" "$work/overlay-walks" "$work/bare.json" <<'PY'
import json, re, statistics, sys
def walks(path):
    one, two = [], []
    for line in open(path):
        m = re.search(r"step 1 (\d+) us, step 2 (\d+) us", line)
        one.append(int(m[1]) / 1000)
        two.append(int(m[2]) / 1000)
    return statistics.median(one), statistics.median(two)
bare = json.load(open(sys.argv[3]))["results"][0]["median_ms"]
s1, s2 = walks(sys.argv[1])
o1, o2 = walks(sys.argv[2])
print(f"bare (chroot): {bare:.1f} ms; step 1: {s1:.1f} ms ({s1 / bare:.2f}x, includes the container's start); step 2: {s2:.1f} ms ({s2 / bare:.2f}x)")
print(f"a plain overlay alone (no pinfold): first walk {o1:.1f} ms ({o1 / bare:.2f}x), second {o2:.1f} ms ({o2 / bare:.2f}x); pinfold's step 2 over it: {s2 / o2:.2f}x")
PY

first=$(echo "$start" | sed -n 's/first instruction median: \([0-9]*\) us.*/\1/p')
bwrap=$(python3 -c "import json;print(json.load(open('$work/bwrap.json'))['results'][0]['median_ms'])")
python3 -c "print(f'per-step start median: {$first / 1000:.2f} ms (bwrap cold start: {$bwrap:.2f} ms)')"
