#!/usr/bin/env bash
# The kernel matrix: boots Debian's own kernels under qemu (TCG) with a Debian
# 12 root (systemd as PID 1 on cgroup v2), runs tests/vm/guest.sh in each and
# prints one table row per kernel. Opt-in, not part of tests/run.sh yet:
#   sudo bash tests/vm/run.sh
# Env: PINFOLD_VM_KERNELS="pkg ..." (default: bookworm's linux-image-amd64
# dependency, the 6.1 stock kernel, and linux-image-6.12-amd64's), PINFOLD_VM_TIMEOUT
# (seconds per boot, default 900: the first row runs the ~6 min units and
# user-session checks), PINFOLD_VM_CACHE (downloaded kernels and the
# built root, default tests/vm/.cache; several checkouts may share one),
# PINFOLD_VM_RUN (this run's payload, disks and results, default tests/vm/.run).
# Exit status: 0 when every row is green or a documented refusal, 1 otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${PINFOLD_VM_CACHE:-$here/.cache}
boot_timeout=${PINFOLD_VM_TIMEOUT:-900}
die() { echo "tests/vm/run.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it installs qemu and debootstraps the guests' root)"

# --- host tools -------------------------------------------------------------
need=()
for t in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils debootstrap:debootstrap \
         depmod:kmod cpio:cpio umoci:umoci cc:gcc python3:python3 mkfs.ext4:e2fsprogs; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
{ command -v busybox >/dev/null && file -L "$(command -v busybox)" | grep -q static; } 2>/dev/null \
  || dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || need+=(busybox-static file)
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/vm/run.sh: installing ${need[*]}" >&2
  apt-get update -qq || die "apt-get update failed: is deb.debian.org reachable?"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed"
fi
mkdir -p "$cache/debs" "$cache/k"

# --- kernels ------------------------------------------------------------------
dep_of() { apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
if [ -n "${PINFOLD_VM_KERNELS:-}" ]; then
  read -ra kernels <<<"$PINFOLD_VM_KERNELS"
else
  k61=$(dep_of linux-image-amd64); k612=$(dep_of linux-image-6.12-amd64)
  [ -n "$k61" ] && [ -n "$k612" ] || die "cannot resolve linux-image-amd64 / linux-image-6.12-amd64: run apt-get update (bookworm and bookworm-security must be in the sources)"
  kernels=("$k61" "$k612")
fi
for k in "${kernels[@]}"; do
  if ! ls "$cache/debs/${k}_"*.deb >/dev/null 2>&1; then
    (cd "$cache/debs" && apt-get download -q "$k" >/dev/null 2>"$cache/debs/$k.err") \
      || die "apt-get download $k failed (see $cache/debs/$k.err): run apt-get update, or set PINFOLD_VM_KERNELS to packages apt-cache search linux-image lists"
  fi
  kd="$cache/k/$k"
  if [ ! -f "$kd/initrd.gz" ]; then
    rm -rf "$kd"; mkdir -p "$kd"
    dpkg-deb -x "$cache/debs/${k}_"*.deb "$kd" || die "dpkg-deb -x of $k failed: delete $cache/debs/${k}_*.deb and rerun"
    rel=$(ls "$kd/lib/modules")
    depmod -b "$kd" "$rel" || die "depmod for $k failed"
    bash "$here/mkinitrd.sh" "$kd" "$kd/initrd.gz.tmp" && mv "$kd/initrd.gz.tmp" "$kd/initrd.gz"
  fi
done

# --- the guests' root, rebuilt when build-root.sh changes ----------------------
recipe=$(sha256sum "$here/build-root.sh" | cut -c1-16)
rootdir="$cache/root-$recipe"
if [ ! -f "$rootdir/root.img" ]; then
  for old in "$cache"/root-*; do [ "$old" = "$rootdir" ] || rm -rf "$old"; done
  echo "tests/vm/run.sh: building the Debian 12 root (debootstrap, once per recipe)" >&2
  t=$SECONDS
  bash "$here/build-root.sh" "$rootdir" >&2
  echo "tests/vm/run.sh: root built in $((SECONDS - t)) s" >&2
fi

# --- the payload: fresh pinfold, the probe, a busybox rootfs, the whiteout image -
echo "tests/vm/run.sh: building pinfold" >&2
(cd "$repo" && cargo build -q --bin pinfold) || die "cargo build --bin pinfold failed"
run=${PINFOLD_VM_RUN:-$here/.run}
rm -rf "$run"; mkdir -p "$run/payload"
p="$run/payload"
objcopy --strip-debug "$repo/target/debug/pinfold" "$p/pinfold" || cp "$repo/target/debug/pinfold" "$p/pinfold"
bash "$repo/tests/make-busybox-rootfs.sh" "$p/rootfs"
cc -static -O2 -Wall -o "$p/rootfs/bin/probe" "$repo/tests/probe/probe.c" \
  || die "cc -static probe.c failed: install gcc and libc6-dev (tests/setup.sh)"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$p/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$p/rootfs/etc/group"
# The whiteout image: busybox, then a second layer that deletes /bin/yes (an
# ordinary .wh.yes entry, as umoci repack writes it).
bash "$repo/tests/make-busybox-image.sh" "$run/img" >/dev/null
umoci unpack --rootless --image "$run/img/layout:busybox" "$run/img/bundle" >/dev/null
rm "$run/img/bundle/rootfs/bin/yes"
umoci repack --image "$run/img/layout:busybox" "$run/img/bundle" >/dev/null
mv "$run/img/layout" "$p/layout"
# For tests/vm/checks/units.sh: the Debian package of this same debug build
# (`cargo deb --no-build --profile dev`: the package's files and maintainer
# scripts are what the check proves, not the dist build's code generation),
# and a busybox image of its own for the jobs it submits.
command -v cargo-deb >/dev/null \
  || die "cargo-deb is missing: tests/setup.sh installs it (cargo install cargo-deb --locked)"
mkdir -p "$p/units"
(cd "$repo" && cargo deb -q --no-build --profile dev --fast -o "$p/units/pinfold.deb" >/dev/null 2>"$run/cargo-deb.err") \
  || die "cargo deb failed: see $run/cargo-deb.err"
ref=$(bash "$repo/tests/make-busybox-image.sh" "$run/units-img")
mv "$run/units-img/layout" "$p/units/layout"
chmod -R a+rX "$p/units/layout"  # umoci writes 0600 files; the agent runs as pinfold
echo "${ref##*@}" >"$p/units/digest"
# Handed over as a read-only virtio disk: under TCG, reading ~50 MB over 9p
# takes most of a minute, a disk a few seconds.
truncate -s 256M "$run/payload.img"
mkfs.ext4 -q -F -L payload -d "$p" "$run/payload.img"

# --- boot each kernel -----------------------------------------------------------
# TCG always: /dev/kvm exists on the CI machine but a guest hangs under it.
# One host thread for both vCPUs (thread=single): with multi-threaded TCG,
# 6.12 dies at boot with "Oops: int3" in patched kernel text (a static key
# flipped while the other vCPU runs it).
echo "| kernel package | release | cgroup | Landlock ABI | probe holes, default | probe holes, untrusted | whiteout image | units/.deb | user session | result |"
echo "|---|---|---|---|---|---|---|---|---|---|"
fail=0
for k in "${kernels[@]}"; do
  kd="$cache/k/$k"; rel=$(ls "$kd/lib/modules")
  share="$run/share-$rel"
  mkdir -p "$share"
  cp "$here/guest.sh" "$share/guest.sh"
  rm -rf "$share/checks"; cp -r "$here/checks" "$share/checks"
  # The units and user-session checks do not depend on the kernel and take
  # ~6 min under TCG: the first kernel's row only (Debian 12's stock kernel).
  [ "$k" != "${kernels[0]}" ] || touch "$share/checks/units.on"
  disk="$run/disk-$rel.qcow2"
  qemu-img create -q -f qcow2 -F raw -b "$rootdir/root.img" "$disk"
  status=ok
  start=$(date +%s)
  timeout --kill-after=10 "$boot_timeout" qemu-system-x86_64 \
    -accel tcg,thread=single -m 2G -smp 2 -nodefaults -display none -serial stdio -monitor none -no-reboot -nic none \
    -kernel "$kd/boot/vmlinuz-$rel" -initrd "$kd/initrd.gz" \
    -append "console=ttyS0 root=/dev/vda rw panic=-1 systemd.unit=pinfold-vm.service systemd.show_status=0" \
    -drive "file=$disk,if=virtio,format=qcow2" \
    -drive "file=$run/payload.img,if=virtio,format=raw,readonly=on" \
    -virtfs "local,path=$share,mount_tag=share,security_model=none,id=share" \
    -virtfs "local,path=$kd/lib/modules,mount_tag=modules,security_model=none,readonly=on,id=modules" \
    </dev/null >"$share/console.log" 2>&1 || { rc=$?; [ $rc = 124 ] || [ $rc = 137 ] && status=timeout || status="qemu-exit-$rc"; }
  echo "tests/vm/run.sh: $rel: guest ran $(( $(date +%s) - start )) s ($status)" >&2
  mkdir -p "$share/out"; cp "$share/console.log" "$share/out/console.log"
  python3 "$here/summarize.py" "$k" "$share/out" "$status" || fail=1
  rm -f "$disk"
done
echo "tests/vm/run.sh: $SECONDS s in all" >&2
exit $fail
