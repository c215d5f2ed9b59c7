#!/usr/bin/env bash
# Builds the guests' Debian 12 root once: debootstrap into DIR/root, then an
# ext4 image DIR/root.img from it. The harness (tests/vm/run.sh) keeps the
# result keyed by a hash of this file, so editing the recipe rebuilds it.
#   tests/vm/build-root.sh DIR
# The root boots systemd as PID 1 (bookworm's systemd 252 mounts the unified
# cgroup v2 hierarchy by default), has an unprivileged user pinfold-test with
# a sub-id range, and a oneshot pinfold-vm.service that the kernel command line
# starts (systemd.unit=pinfold-vm.service): it runs /share/guest.sh from the
# 9p share and powers off. Kernel modules are not in the image: each boot
# mounts its kernel's /lib/modules from a second 9p share.
set -euo pipefail
dir=${1:?usage: tests/vm/build-root.sh DIR}
[ "$(id -u)" = 0 ] || { echo "build-root.sh: run as root (debootstrap needs it)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "build-root.sh: debootstrap is missing: apt-get install debootstrap (tests/vm/run.sh installs it)" >&2; exit 1; }
mirror=${PINFOLD_VM_MIRROR:-http://deb.debian.org/debian}
root="$dir/root"
rm -rf "$root" "$dir/root.img"
mkdir -p "$root"
# minbase + systemd as init; uidmap for the sub-id mode; kmod so modprobe
# finds overlay & co. in the shared /lib/modules; passt for pasta (network
# mode egress). For the units check (tests/vm/checks/units.sh): adduser, a
# dependency of the pinfold .deb that minbase lacks; dbus (named: debootstrap
# resolves no virtual package, and libpam-systemd needs a system bus) and
# dbus-user-session, so logind runs, `loginctl enable-linger` starts a user
# manager and `systemd-run --user` reaches it; apparmor, as on a stock
# Debian 12 host, whose 3.0 parser the postinst must leave alone.
debootstrap --variant=minbase \
  --include=systemd-sysv,kmod,uidmap,procps,iproute2,passt,adduser,dbus,dbus-user-session,apparmor \
  bookworm "$root" "$mirror" >"$dir/debootstrap.log" 2>&1 \
  || { echo "build-root.sh: debootstrap failed (is deb.debian.org reachable?); see $dir/debootstrap.log" >&2; exit 1; }
echo pinfold-vm >"$root/etc/hostname"
# The root is mounted rw by the initramfs; an empty fstab keeps systemd from
# waiting for a dev-vda.device that no udev will announce.
: >"$root/etc/fstab"
chroot "$root" useradd --create-home --shell /bin/sh pinfold-test
chroot "$root" usermod --add-subuids 300000-365535 --add-subgids 300000-365535 pinfold-test
chroot "$root" passwd -d root >/dev/null
mkdir -p "$root/share" "$root/lib/modules"
# The test unit: as root, in its own cgroup with Delegate=yes (a writable
# cgroup v2 subtree); guest.sh drops to pinfold-test for the unprivileged part.
cat >"$root/etc/systemd/system/pinfold-vm.service" <<'UNIT'
[Unit]
Description=pinfold VM matrix: run /share/guest.sh and power off
After=sysinit.target
[Service]
Type=oneshot
Delegate=yes
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=0
ExecStart=/bin/sh /share/guest.sh
ExecStopPost=/bin/systemctl --no-block poweroff --force
UNIT
# Nothing else to start: no getty, no network, no timers.
chroot "$root" systemctl mask getty@tty1.service serial-getty@ttyS0.service \
  systemd-timesyncd.service systemd-networkd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# 3 GiB: the root is read-write through a throwaway qcow2 overlay per boot.
truncate -s 3G "$dir/root.img"
mkfs.ext4 -q -F -L pinfold-vm -d "$root" "$dir/root.img"
echo "build-root.sh: $dir/root.img ready"
