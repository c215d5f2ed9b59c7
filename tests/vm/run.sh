#!/usr/bin/env bash
# The kernel matrix: boots Debian's own kernels under qemu (TCG) with a Debian
# 12 root (systemd as PID 1 on cgroup v2), runs tests/vm/guest.sh and its
# checks (tests/vm/checks/*.sh) in each and prints one table row per kernel.
# tests/run.sh runs it after the cargo tests (PINFOLD_SKIP_VM=1 skips it);
# alone:
#   sudo bash tests/vm/run.sh
# Env: PINFOLD_VM_KERNELS="pkg ..." (default: bookworm's linux-image-amd64
# dependency, the 6.1 stock kernel; linux-image-6.12-amd64's; and
# trixie-backports' linux-image-amd64 dependency, the newest Debian kernel),
# PINFOLD_VM_TIMEOUT (seconds per boot, default 900: the first row also runs
# the units and user-session checks), PINFOLD_VM_JOBS
# (guests booted at once, default: the host's cores), PINFOLD_VM_CACHE
# (downloaded kernels and the built root, default tests/vm/.cache; several
# checkouts may share one), PINFOLD_VM_RUN (this run's payload, disks and
# results, default tests/vm/.run), PINFOLD_VM_ACCEL (auto, tcg or kvm;
# auto: KVM only where a 20 s probe boot prints the kernel's banner),
# PINFOLD_VM_GUEST (a script run in the
# guests instead of guest.sh, for trying a check out by hand).
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
         depmod:kmod cpio:cpio umoci:umoci cc:gcc python3:python3 mkfs.ext4:e2fsprogs \
         pasta:passt xz:xz-utils zstd:zstd; do
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
# The newest kernel comes from trixie-backports (bookworm's newest is 6.12),
# through an apt configuration of its own under the cache: its own sources
# list, lists and archives, used only to resolve and download the kernel
# package; the host's sources are not touched.
tb="$cache/apt-trixie-backports"
tb_apt=(-o "Dir::Etc::SourceList=$tb/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$tb/lists" -o "Dir::Cache=$tb/cache" -o APT::Architectures=amd64)
tb_update() {
  mkdir -p "$tb/lists/partial" "$tb/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main" >"$tb/sources.list"
  # Refreshed once a day: the newest kernel moves on, the old .deb stays.
  if [ -z "$(find "$tb/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null)" ]; then
    apt-get "${tb_apt[@]}" update -qq >/dev/null 2>"$tb/update.err" \
      || die "apt-get update of trixie-backports failed (see $tb/update.err): is deb.debian.org reachable?"
  fi
}
dep_of() { apt-cache "${@:2}" depends "$1" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
if [ -n "${PINFOLD_VM_KERNELS:-}" ]; then
  read -ra kernels <<<"$PINFOLD_VM_KERNELS"
else
  k61=$(dep_of linux-image-amd64); k612=$(dep_of linux-image-6.12-amd64)
  [ -n "$k61" ] && [ -n "$k612" ] || die "cannot resolve linux-image-amd64 / linux-image-6.12-amd64: run apt-get update (bookworm and bookworm-security must be in the sources)"
  tb_update
  knew=$(dep_of linux-image-amd64 "${tb_apt[@]}")
  [ -n "$knew" ] || die "cannot resolve trixie-backports' linux-image-amd64 (see $tb/update.err); set PINFOLD_VM_KERNELS to skip it"
  kernels=("$k61" "$k612" "$knew")
fi
# download PKG: its .deb into $cache/debs, from the host's sources, else
# trixie-backports'.
download() {
  ls "$cache/debs/${1}_"*.deb >/dev/null 2>&1 && return 0
  (cd "$cache/debs" && { apt-get download -q "$1" >/dev/null 2>"$cache/debs/$1.err" \
     || { tb_update && apt-get "${tb_apt[@]}" download -q "$1" >/dev/null 2>>"$cache/debs/$1.err"; }; }) \
    || die "apt-get download $1 failed (see $cache/debs/$1.err): run apt-get update, or set PINFOLD_VM_KERNELS to packages apt-cache search linux-image lists"
}
for k in "${kernels[@]}"; do
  download "$k"
  # Since 7.x Debian splits the kernel: linux-image-X depends on
  # linux-binary-X (vmlinuz) and linux-modules-X; older ones carry both.
  parts=("$k")
  for d in $(dpkg-deb -f "$cache/debs/${k}_"*.deb Depends | tr ',|' '\n\n' | awk '{print $1}' | grep -E '^linux-(binary|modules)-' || true); do
    download "$d"; parts+=("$d")
  done
  kd="$cache/k/$k"
  if [ ! -f "$kd/initrd.gz" ]; then
    rm -rf "$kd"; mkdir -p "$kd"
    for part in "${parts[@]}"; do
      dpkg-deb -x "$cache/debs/${part}_"*.deb "$kd" || die "dpkg-deb -x of $part failed: delete $cache/debs/${part}_*.deb and rerun"
    done
    # Merged /usr (trixie on): the modules are in usr/lib/modules.
    if [ ! -d "$kd/lib/modules" ] && [ -d "$kd/usr/lib/modules" ]; then
      mkdir -p "$kd/lib" && mv "$kd/usr/lib/modules" "$kd/lib/modules"
    fi
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

# --- the payload: fresh pinfold, the probe, a busybox rootfs, the images, pasta --
echo "tests/vm/run.sh: building pinfold" >&2
(cd "$repo" && cargo build -q --bin pinfold) || die "cargo build --bin pinfold failed"
run=${PINFOLD_VM_RUN:-$here/.run}
rm -rf "$run"; mkdir -p "$run/payload"
p="$run/payload"
bin="${CARGO_TARGET_DIR:-$repo/target}/debug/pinfold"
objcopy --strip-debug "$bin" "$p/pinfold" || cp "$bin" "$p/pinfold"
bash "$repo/tests/make-busybox-rootfs.sh" "$p/rootfs"
cc -static -O2 -Wall -o "$p/rootfs/bin/probe" "$repo/tests/probe/probe.c" \
  || die "cc -static probe.c failed: install gcc and libc6-dev (tests/setup.sh)"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$p/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$p/rootfs/etc/group"
# The whiteout image (tests/make-whiteout-image.sh: layers that delete and
# replace files and directories, opaque directories); umoci's unpack of it
# stays on the host, where summarize.py compares the guests' listings with it.
bash "$repo/tests/make-whiteout-image.sh" "$run/img" >/dev/null
umoci unpack --rootless --image "$run/img/layout:wh" "$run/img/umoci" >/dev/null
export PINFOLD_VM_WHITEOUT_ROOTFS="$run/img/umoci/rootfs"
mv "$run/img/layout" "$p/layout"
cp "$here/list-tree.sh" "$p/list-tree.sh"
# The job image of checks/50-run.sh: plain busybox, pinned by digest.
job_ref=$(bash "$repo/tests/make-busybox-image.sh" "$run/job")
mv "$run/job/layout" "$p/job-layout"
echo "${job_ref##*@}" >"$p/job-image.digest"
# pasta for network mode egress: the host's (Debian 12's passt, the same
# libc as the guests' root), not in the root's recipe.
pasta=$(command -v pasta) || die "pasta is missing: apt-get install passt (tests/setup.sh)"
cp "$pasta" "$p/pasta"
# For tests/vm/checks/units.sh: the Debian package of this same debug build
# (`cargo deb --no-build --profile dev`: the package's files and maintainer
# scripts are what the check proves, not the dist build's code generation),
# and a busybox image of its own for the jobs it submits.
bash "$here/cargo-deb.sh" || die "installing cargo-deb failed (tests/vm/cargo-deb.sh)"
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

# --- the accelerator: KVM only where a short probe shows it works ---------------
# /dev/kvm exists on the CI machine, but a guest hangs under it before it
# prints anything (nested virtualisation is incomplete there). So KVM is used
# only when the first kernel, booted under it with no root, prints its banner
# on the serial console within 20 s; otherwise TCG. PINFOLD_VM_ACCEL=tcg|kvm
# skips the probe.
accel_mode=${PINFOLD_VM_ACCEL:-auto}
if [ "$accel_mode" = auto ]; then
  accel_mode=tcg
  if [ -w /dev/kvm ]; then
    k0="$cache/k/${kernels[0]}"; r0=$(ls "$k0/lib/modules")
    v0="$k0/boot/vmlinuz-$r0"; [ -f "$v0" ] || v0="$k0/lib/modules/$r0/vmlinuz"
    # In a subshell, so a qemu that aborts (as here) is reported in the log only.
    (timeout --kill-after=5 20 qemu-system-x86_64 -accel kvm -cpu host -m 512M -nodefaults \
      -display none -serial stdio -monitor none -no-reboot -nic none -kernel "$v0" \
      -append "console=ttyS0 panic=-1" || true) </dev/null >"$run/kvm-probe.log" 2>&1
    if grep -q "Linux version" "$run/kvm-probe.log"; then accel_mode=kvm; fi
  fi
fi
case $accel_mode in
  kvm) accel=(-accel kvm -cpu host); accel_why="KVM" ;;
  tcg) accel=(-accel tcg,thread=single); accel_why="TCG (KVM: $( [ -w /dev/kvm ] && echo "no banner within 20 s, see $run/kvm-probe.log" || echo "no /dev/kvm"))" ;;
  *) die "PINFOLD_VM_ACCEL=$accel_mode: use auto, tcg or kvm" ;;
esac
[ -z "${PINFOLD_VM_ACCEL:-}" ] || accel_why="${accel_why%% (*} (PINFOLD_VM_ACCEL)"
echo "tests/vm/run.sh: accelerator: $accel_why" >&2

# --- boot each kernel -----------------------------------------------------------
# Under TCG, one host thread for both vCPUs (thread=single): with multi-threaded TCG,
# 6.12 dies at boot with "Oops: int3" in patched kernel text (a static key
# flipped while the other vCPU runs it). So each guest is one busy host
# thread: PINFOLD_VM_JOBS guests (default: the host's cores) boot at once.
# boot KERNEL: boots one guest; its status ("ok", "timeout", "qemu-exit-N")
# goes to its share's boot-status.
boot() {
  local k=$1 kd rel share vmlinuz disk status=ok start rc
  kd="$cache/k/$k"; rel=$(ls "$kd/lib/modules")
  share="$run/share-$rel"
  mkdir -p "$share"
  cp "${PINFOLD_VM_GUEST:-$here/guest.sh}" "$share/guest.sh"
  rm -rf "$share/checks" "$share/system"
  cp -r "$here/checks" "$share/checks"
  cp -r "$here/system" "$share/system"
  # The units and user-session checks do not depend on the kernel and take
  # ~6 min under TCG: the first kernel's row only (Debian 12's stock kernel).
  [ "$k" != "${kernels[0]}" ] || touch "$share/system/units.on"
  # Since 7.x the image is in the modules' directory, not /boot.
  vmlinuz="$kd/boot/vmlinuz-$rel"
  [ -f "$vmlinuz" ] || vmlinuz="$kd/lib/modules/$rel/vmlinuz"
  disk="$run/disk-$rel.qcow2"
  qemu-img create -q -f qcow2 -F raw -b "$rootdir/root.img" "$disk"
  start=$(date +%s)
  timeout --kill-after=10 "$boot_timeout" qemu-system-x86_64 \
    "${accel[@]}" -m 2G -smp 2 -nodefaults -display none -serial stdio -monitor none -no-reboot -nic none \
    -kernel "$vmlinuz" -initrd "$kd/initrd.gz" \
    -append "console=ttyS0 root=/dev/vda rw panic=-1 systemd.unit=pinfold-vm.service systemd.show_status=0" \
    -drive "file=$disk,if=virtio,format=qcow2" \
    -drive "file=$run/payload.img,if=virtio,format=raw,readonly=on" \
    -virtfs "local,path=$share,mount_tag=share,security_model=none,id=share" \
    -virtfs "local,path=$kd/lib/modules,mount_tag=modules,security_model=none,readonly=on,id=modules" \
    </dev/null >"$share/console.log" 2>&1 || { rc=$?; [ $rc = 124 ] || [ $rc = 137 ] && status=timeout || status="qemu-exit-$rc"; }
  echo "tests/vm/run.sh: $rel: guest ran $(( $(date +%s) - start )) s ($status)" >&2
  mkdir -p "$share/out"; cp "$share/console.log" "$share/out/console.log"
  echo "$status" >"$share/boot-status"
  rm -f "$disk"
}
jobs=${PINFOLD_VM_JOBS:-$(nproc)}
running=0
for k in "${kernels[@]}"; do
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
  boot "$k" &
  running=$((running + 1))
done
wait
python3 "$here/summarize.py" --header
fail=0
for k in "${kernels[@]}"; do
  share="$run/share-$(ls "$cache/k/$k/lib/modules")"
  python3 "$here/summarize.py" "$k" "$share/out" "$(cat "$share/boot-status" 2>/dev/null || echo missing)" || fail=1
done
echo "tests/vm/run.sh: $SECONDS s in all, guests under $accel_why" >&2
exit $fail
