#!/usr/bin/env bash
# The main job on an embedded default: build pinfold, make a busybox rootfs,
# and run a shell in a hardened rootless container that reports what it sees.
#
#   sudo bash tests/demo.sh     (installs packages, then runs the sandbox as
#                                $SUDO_USER, or as pinfold-test when run as root)
#   bash tests/demo.sh          (as an ordinary user, once tests/setup.sh has run)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash tests/setup.sh; fi
cargo build --release --quiet
demo=$(mktemp -d /tmp/pinfold-demo-XXXXXX)
trap 'rm -rf "$demo"' EXIT
chmod 755 "$demo"
cp target/release/pinfold "$demo/pinfold"
rootfs="$demo/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for a in $(busybox --list); do [ "$a" = busybox ] || ln -s busybox "$rootfs/bin/$a"; done
run=()
if [ "$(id -u)" = 0 ]; then
  user=${SUDO_USER:-pinfold-test}
  [ "$user" = root ] && user=pinfold-test
  chown -R "$user": "$demo"
  run=(runuser -u "$user" --)
fi
"${run[@]}" env PINFOLD_HOME="$demo/home" "$demo/pinfold" exec --verbose --rootfs "$rootfs" --timeout 30s -- /bin/sh -c '
  echo "hello from $(hostname), uid $(id -u) inside"
  grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status
  echo "network interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | tr "\n" " ")"
  mount -t tmpfs none /mnt 2>&1 | sed "s/^/mount: /" || true
  echo pinfold > /etc/written && echo "wrote /etc/written (to a throw-away layer)"
'
