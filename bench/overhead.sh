#!/usr/bin/env bash
# Steady-state overhead of the sandbox (issue 5): the same work run bare and
# inside `pinfold exec`, interleaved in one run, medians compared.
#
#   bench/overhead.sh [BUILD_RUNS] [LOOP_RUNS] [WALK_RUNS]
#                                  (as root; defaults 7, 11 and 30)
#
# Workloads, both in a Debian bookworm rootfs with gcc and make (debootstrap'ed
# once into bench/.cache/debian-build; apt's mirror):
#   build    make -j2 of zstd's C library (the copy cargo vendored for
#            zstd-sys): 40 files compiled and archived, fork/exec/file heavy;
#   syscalls a static C loop of getppid + stat("/") + read + write, 1M rounds
#            (4M syscalls; the seccomp filter answers each without looking at
#            arguments, so the kernel's seccomp cache can skip it: see README).
# Bare: `chroot --userspec=pinfold-test` into the same rootfs (no namespace,
# no seccomp, no Landlock). Sandboxed: `pinfold exec --rootfs` as pinfold-test
# with the default policy. Both build in the same host directory
# (rootfs/workspace, bound read-write into the container), so both write to
# the same file system; the sandbox reads the toolchain through its overlay.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_RUNS=${1:-7}
LOOP_RUNS=${2:-11}
WALK_RUNS=${3:-30}
[ "$(id -u)" = 0 ] || { echo "run as root (chroot for the bare runs)" >&2; exit 1; }
id pinfold-test >/dev/null 2>&1 || { echo "user pinfold-test is missing: bash tests/setup.sh" >&2; exit 1; }
# Numeric: chroot looks names up in the rootfs's /etc/passwd.
uidgid="$(id -u pinfold-test):$(id -g pinfold-test)"

cache=bench/.cache
rootfs=$cache/debian-build
if [ ! -x "$rootfs/usr/bin/make" ]; then
  MIRROR=$( (grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null; grep -h '^deb ' /etc/apt/sources.list 2>/dev/null) | grep -o 'https\?://[^ ]*debian' | head -n1 || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
  rm -rf "$rootfs.tmp"
  mkdir -p "$cache"
  debootstrap --variant=minbase --include=gcc,make,libc6-dev bookworm "$rootfs.tmp" "$MIRROR" >/dev/null
  mv "$rootfs.tmp" "$rootfs"
fi
rootfs=$(realpath "$rootfs")

cargo build --release --quiet
zstd=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/zstd-sys-*/zstd/lib 2>/dev/null | tail -n1 || true)
if [ -z "$zstd" ]; then
  cargo fetch --quiet
  zstd=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/zstd-sys-*/zstd/lib | tail -n1)
fi

work=$(mktemp -d /tmp/pinfold-overhead-XXXXXX)
ws=$rootfs/workspace
trap 'rm -rf "$work" "$ws"' EXIT
chmod 755 "$work"
cp "${CARGO_TARGET_DIR:-target}/release/pinfold" "$work/pinfold"
rm -rf "$ws"
mkdir -p "$ws"
cp -r "$zstd" "$ws/zstd"
cat > "$ws/Makefile" <<'MK'
# zstd's library sources, each compiled as zstd's own Makefile does (-O3).
SRCS := $(wildcard zstd/common/*.c zstd/compress/*.c zstd/decompress/*.c zstd/dictBuilder/*.c)
OBJS := $(patsubst zstd/%.c,out/%.o,$(SRCS))
CFLAGS := -O3 -DXXH_NAMESPACE=ZSTD_ -DZSTD_MULTITHREAD=0 -DZSTD_DISABLE_ASM -Izstd -Izstd/common
out/libzstd.a: $(OBJS)
	ar rcs $@ $^
out/%.o: zstd/%.c
	@mkdir -p $(dir $@)
	cc $(CFLAGS) -c $< -o $@
MK
cat > "$ws/loop.c" <<'C'
/* 4 syscalls a round: none is answered from the vDSO or a libc cache. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int z = open("/dev/zero", O_RDONLY), nul = open("/dev/null", O_WRONLY);
    char c;
    struct stat st;
    for (long i = 0; i < n; i++) {
        syscall(SYS_getppid);
        stat("/", &st);
        if (read(z, &c, 1) != 1 || write(nul, &c, 1) != 1) return 1;
    }
    return 0;
}
C
chown -R pinfold-test: "$work" "$ws"
# Compile the loop once, bare, with the rootfs's gcc.
chroot --userspec=$uidgid "$rootfs" sh -c 'cd /workspace && cc -O2 -static -o loop loop.c'

cat > "$work/bare-build" <<EOF
#!/bin/sh
exec chroot --userspec=$uidgid $rootfs sh -c 'cd /workspace && rm -rf out && make -s -j2 >/dev/null'
EOF
cat > "$work/sandbox-build" <<EOF
#!/bin/sh
exec runuser -u pinfold-test -- env PINFOLD_HOME=$work/home $work/pinfold exec --rootfs $rootfs --bind $ws:/workspace:rw -- sh -c 'rm -rf out && make -s -j2 >/dev/null'
EOF
cat > "$work/bare-loop" <<EOF
#!/bin/sh
exec chroot --userspec=$uidgid $rootfs /workspace/loop 1000000
EOF
cat > "$work/sandbox-loop" <<EOF
#!/bin/sh
exec runuser -u pinfold-test -- env PINFOLD_HOME=$work/home $work/pinfold exec --rootfs $rootfs --bind $ws:/workspace:rw -- /workspace/loop 1000000
EOF
chmod 755 "$work"/bare-* "$work"/sandbox-*

echo "== build: make -j2 of zstd's library ($BUILD_RUNS runs each, interleaved)"
python3 bench/alternate.py "$BUILD_RUNS" 1 "$work/build.json" \
  "bare=$work/bare-build" "pinfold exec=$work/sandbox-build"
echo "== syscalls: 1M rounds of getppid+stat+read+write ($LOOP_RUNS runs each, interleaved)"
python3 bench/alternate.py "$LOOP_RUNS" 1 "$work/loop.json" \
  "bare=$work/bare-loop" "pinfold exec=$work/sandbox-loop"
# Tree walks of the image: `du -s /usr` once and twice in one container (a
# fresh overlay each run), and the same command's start alone (`true`), so
# that the first and the second walk can be told apart.
for n in 0 1 2; do
  cat > "$work/bare-walk$n" <<EOF
#!/bin/sh
exec chroot --userspec=$uidgid $rootfs sh -c 'for i in \$(seq $n); do du -s /usr >/dev/null; done'
EOF
  cat > "$work/sandbox-walk$n" <<EOF
#!/bin/sh
exec runuser -u pinfold-test -- env PINFOLD_HOME=$work/home $work/pinfold exec --rootfs $rootfs -- sh -c 'for i in \$(seq $n); do du -s /usr >/dev/null; done'
EOF
done
chmod 755 "$work"/*-walk*
echo "== tree walks: du -s /usr of the image, 0, 1 and 2 times ($WALK_RUNS runs each, interleaved)"
python3 bench/alternate.py "$WALK_RUNS" 2 "$work/walk.json" \
  "bare 0=$work/bare-walk0" "bare 1=$work/bare-walk1" "bare 2=$work/bare-walk2" \
  "pinfold 0=$work/sandbox-walk0" "pinfold 1=$work/sandbox-walk1" "pinfold 2=$work/sandbox-walk2"
python3 - "$work/build.json" "$work/loop.json" <<'PY'
import json, sys
for name, path in zip(["build", "syscalls"], sys.argv[1:]):
    r = json.load(open(path))["results"]
    bare, box = r[0]["median_ms"], r[1]["median_ms"]
    print(f"{name:9} bare {bare/1000:7.3f}s  pinfold {box/1000:7.3f}s  overhead {100*(box/bare-1):+5.1f}%")
PY
python3 - "$work/walk.json" <<'PY'
import json, sys
m = {r["name"]: r["median_ms"] for r in json.load(open(sys.argv[1]))["results"]}
for label, a, b in [("first walk", 0, 1), ("second walk", 1, 2)]:
    bare = m[f"bare {b}"] - m[f"bare {a}"]
    box = m[f"pinfold {b}"] - m[f"pinfold {a}"]
    print(f"{label:11} bare {bare:6.1f}ms  pinfold {box:6.1f}ms  ratio {box/bare:4.2f}x")
PY
