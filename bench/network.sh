#!/usr/bin/env bash
# Network modes benchmark: an HTTP download from an "outside" host (a network
# namespace on a veth at 198.51.100.1 serving on the public-looking
# 192.0.43.80, routed into the veth by a /32 route, as in tests/network.rs:
# egress refuses documentation and private ranges, and nothing leaves the
# machine), side by side in one run:
#   host       busybox wget on the host, no sandbox (the peer)
#   egress     pinfold exec --policy trusted (pasta's user-mode stack)
#   allowlist  pinfold exec with network.allow naming the host (the proxy in
#              pinfold exec relays it)
# Two sizes: a large file (throughput) and a 3-byte file (exec start plus one
# connection through each path).
#
#   sudo bench/network.sh [RUNS] [SIZE_MB]      (root: makes the namespace,
#                                                runs the sandboxes as pinfold-test)
#
# PINFOLD_BIN=path uses that binary instead of a fresh release build.
# Needs: hyperfine, busybox-static, passt, python3, iproute2 (tests/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
SIZE=${2:-256}
if [ "$(id -u)" != 0 ]; then
  echo "bench/network.sh: run as root (it creates a network namespace and a veth pair)" >&2
  exit 2
fi
. bench/lib.sh
bench_work pinfold-bench release
ns="pf-bench-$$"
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
  ip link del "pfbh$$" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"
bash tests/make-busybox-rootfs.sh "$rootfs" >/dev/null
mkdir "$work/www"
head -c "$((SIZE << 20))" /dev/urandom >"$work/www/big"
echo hi >"$work/www/small"
cat >"$work/allowlist.toml" <<'EOF'
description = "bench: allowlist"
[network]
mode = "allowlist"
loopback_tcp = false
allow = ["192.0.43.80:8080"]
EOF
chown -R pinfold-test: "$work"

ip netns add "$ns"
ip link add "pfbh$$" type veth peer name "pfbo$$"
ip link set "pfbo$$" netns "$ns"
ip addr add 198.51.100.2/24 dev "pfbh$$"
ip link set "pfbh$$" up
ip -n "$ns" addr add 198.51.100.1/24 dev "pfbo$$"
ip -n "$ns" link set "pfbo$$" up
ip -n "$ns" link set lo up
# The server's address is public-looking and reached through the veth only
# (its replies go to 198.51.100.2, on-link: the namespace has no default
# route, so nothing it sends, a name lookup of its own, can leave).
ip -n "$ns" addr add 192.0.43.80/32 dev "pfbo$$"
ip route add 192.0.43.80/32 via 198.51.100.1 dev "pfbh$$"
ip netns exec "$ns" python3 -m http.server --bind 192.0.43.80 --directory "$work/www" 8080 \
  >/dev/null 2>&1 &
server=$!
for _ in $(seq 100); do
  busybox wget -q -O /dev/null http://192.0.43.80:8080/small 2>/dev/null && break
  sleep 0.05
done

px=(env PINFOLD_HOME="$work/home" "$work/pinfold" exec --rootfs "$rootfs")
run() { # FILE RUNS [EXTRA HYPERFINE ARGS]
  local url="http://192.0.43.80:8080/$1"
  runuser -u pinfold-test -- hyperfine -N --warmup 2 --runs "$2" \
    --export-json "$work/$1.json" "${@:3}" \
    -n "host" "busybox wget -q -O /dev/null $url" \
    -n "egress" "${px[*]} --policy trusted -- wget -q -O /dev/null $url" \
    -n "allowlist" "${px[*]} --policy $work/allowlist.toml -- wget -q -O /dev/null $url" \
    >/dev/null
}
run big "$RUNS"
# The exec start alone, for scale: what each mode adds to it is its set-up.
run small "$((RUNS * 3))" -n "exec only (none)" "${px[*]} -- /bin/true"
python3 - "$work" "$SIZE" <<'PY'
import json, sys
work, size = sys.argv[1], int(sys.argv[2])
for name, label in (("big", f"{size} MiB download"), ("small", "3-byte download")):
    r = {x["command"]: x for x in json.load(open(f"{work}/{name}.json"))["results"]}
    host = r["host"]["median"]
    print(f"{label}:")
    for cmd, x in r.items():
        extra = f"  {size / x['median']:7.0f} MiB/s" if name == "big" else ""
        print(f"  {cmd:16} {x['median']*1000:9.1f} ms  {x['median']/host:5.2f}x host{extra}")
PY
