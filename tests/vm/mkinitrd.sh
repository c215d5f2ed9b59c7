#!/usr/bin/env bash
# Builds a small initramfs for one extracted Debian kernel package: a static
# busybox, the modules needed to reach the root (virtio-blk + ext4) and the 9p
# shares (with their dependencies from modules.dep, decompressed), and an
# /init that loads them, mounts /dev/vda, the "modules" share on
# /lib/modules and the "share" share on /share, then switch_roots to systemd.
#   tests/vm/mkinitrd.sh KERNEL_DIR OUT.cpio.gz
# KERNEL_DIR is `dpkg-deb -x` of linux-image-*.deb after `depmod -b`.
set -euo pipefail
kdir=${1:?usage: tests/vm/mkinitrd.sh KERNEL_DIR OUT}
out=${2:?usage: tests/vm/mkinitrd.sh KERNEL_DIR OUT}
rel=$(ls "$kdir/lib/modules")
mods="$kdir/lib/modules/$rel"
[ -f "$mods/modules.dep" ] || { echo "mkinitrd.sh: $mods/modules.dep is missing: run depmod -b $kdir $rel first" >&2; exit 1; }
busybox=$(command -v busybox) || { echo "mkinitrd.sh: busybox is missing: apt-get install busybox-static" >&2; exit 1; }
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' \
  || ldd "$busybox" 2>&1 | grep -q 'not a dynamic' \
  || { echo "mkinitrd.sh: $busybox is not static: apt-get install busybox-static" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,dev,proc,sys,newroot,mods}
cp "$busybox" "$work/bin/busybox"
ln -s busybox "$work/bin/sh"

# Module paths in load order: each module's dependencies (modules.dep lists
# them so that the last one loads first) before it, each once.
order=()
add() { # add MODULE_NAME: appends its path (and its deps') to order
  local name=$1 line path deps d i
  line=$(grep -E "(^|/)${name}\.ko(\.xz|\.zst|\.gz)?:" "$mods/modules.dep" | head -1) || true
  [ -n "$line" ] || return 0   # built in (or absent): nothing to load
  path=${line%%:*}
  for p in "${order[@]:-}"; do [ "$p" = "$path" ] && return 0; done
  read -ra deps <<<"${line#*:}"
  for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
    d=$(basename "${deps[$i]}"); d=${d%%.ko*}; add "$d"
  done
  order+=("$path")
}
for m in crc32c_generic crc32c-intel virtio_pci virtio_blk ext4 9pnet_virtio 9p; do add "$m"; done
: >"$work/modules.order"
for p in "${order[@]}"; do
  n=$(basename "$p"); n=${n%%.ko*}.ko
  case $p in
    *.xz) xz -dc "$mods/$p" >"$work/mods/$n" ;;
    *.zst) zstd -qdc "$mods/$p" >"$work/mods/$n" ;;
    *.gz) gzip -dc "$mods/$p" >"$work/mods/$n" ;;
    *) cp "$mods/$p" "$work/mods/$n" ;;
  esac
  echo "$n" >>"$work/modules.order"
done

cat >"$work/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "pinfold-vm initramfs: $*"; echo "PINFOLD-VM-FAILED"; poweroff -f; }
for m in $(cat /modules.order); do insmod "/mods/$m" || echo "pinfold-vm initramfs: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount /dev/vda"
mount -t 9p -o trans=virtio,version=9p2000.L,ro modules /newroot/lib/modules || fail "cannot mount the modules share"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /newroot/share || fail "cannot mount the share"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
INIT
chmod +x "$work/init"
(cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
