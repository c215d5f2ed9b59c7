#!/usr/bin/env bash
# Builds a minimal busybox rootfs in DIR: /bin/busybox from Debian's
# busybox-static with one symlink per applet, /etc and /tmp.
#   tests/make-busybox-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: tests/make-busybox-rootfs.sh DIR}
busybox=$(command -v busybox) || { echo "busybox is missing: apt-get install busybox-static (tests/setup.sh)" >&2; exit 1; }
mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root" "$dir/proc" "$dir/dev" "$dir/sys"
chmod 1777 "$dir/tmp"
cp "$busybox" "$dir/bin/busybox"
for a in $("$busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$dir/bin/$a"; done
