#!/usr/bin/env bash
# The main job on an embedded default: build pinfold, make a busybox rootfs,
# run a shell in a hardened rootless container that reports what it sees,
# then `pinfold run` a real two-step job (ci-templates/hello.yaml) on a
# digest-pinned busybox OCI image built with umoci: logs on the terminal,
# a secret masked, state kept across steps, artifacts copied out.
#
#   sudo bash tests/demo.sh     (installs packages, then runs the sandbox as
#                                $SUDO_USER, or as pinfold-test when run as root)
#   bash tests/demo.sh          (as an ordinary user, once tests/setup.sh has run)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/toolchain.sh
if [ "$(id -u)" = 0 ]; then bash tests/setup.sh; fi
. bench/lib.sh
bin=$(pinfold_bin release)
make_work pinfold-demo "$bin"
demo=$work
rootfs="$demo/rootfs"
bash tests/make-busybox-rootfs.sh "$rootfs"
user=${SUDO_USER:-pinfold-test}
[ "$user" = root ] && user=pinfold-test
own_work "$user"
"${as_user[@]}" env PINFOLD_HOME="$demo/home" "$demo/pinfold" exec --verbose --rootfs "$rootfs" --timeout 30s -- /bin/sh -c '
  echo "hello from $(hostname), uid $(id -u) inside"
  grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status
  echo "network interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | tr "\n" " ")"
  mount -t tmpfs none /mnt 2>&1 | sed "s/^/mount: /" || true
  echo pinfold > /etc/written && echo "wrote /etc/written (to a throw-away layer)"
'

# The job: a pinned image, a source directory, a secret, artifacts.
image=$(bash tests/make-busybox-image.sh "$demo/image")
sed "s|IMAGE|$image|" ci-templates/hello.yaml > "$demo/hello.yaml"
mkdir -p "$demo/src"
echo "hello from the job's source" > "$demo/src/message.txt"
if [ "$(id -u)" = 0 ]; then chown -R "$user": "$demo"; fi
echo
echo "== pinfold run $demo/hello.yaml"
"${as_user[@]}" env PINFOLD_HOME="$demo/home" PINFOLD_SECRET_DEMO_TOKEN=not-for-logs \
  "$demo/pinfold" run "$demo/hello.yaml" --source "$demo/src" --out "$demo/artifacts"
echo "== artifacts:"
(cd "$demo/artifacts" && find . -type f -exec sha256sum {} +)
