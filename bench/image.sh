#!/usr/bin/env bash
# Image store benchmark: cold unpack vs umoci and tar, warm rootfs preparation,
# pull from a loopback registry. Medians from hyperfine, side by side, one run.
# Run as root (debootstrap); pinfold itself runs as $BENCH_USER (default pinfold-test).
# Usage: bench/image.sh [path/to/pinfold]   (default: target/release/pinfold)
set -euo pipefail
cd "$(dirname "$0")/.."
PF=${1:-${CARGO_TARGET_DIR:-target}/release/pinfold}
U=${BENCH_USER:-pinfold-test}
W=$(mktemp -d /tmp/pinfold-bench.XXXX); chmod 755 "$W"
trap 'kill ${REG:-} 2>/dev/null || true; umount "$W/tmpfs" 2>/dev/null || true; rm -rf "$W"' EXIT
cp "$PF" "$W/pinfold"; chmod 755 "$W/pinfold"
as() { runuser -u "$U" -- env PINFOLD_HOME="$W/home" "$@"; }
# hyperfine's markdown gives means; the figures to quote are medians.
medians() { python3 -c 'import json,sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("median %10.1f ms  %s" % (r["median"] * 1000, r["command"]))' "$1"; }

# 1. A Debian bookworm minbase rootfs (apt's mirror), packed as one gzip layer by umoci.
MIRROR=$( (grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null; grep -h '^deb ' /etc/apt/sources.list 2>/dev/null) | grep -o 'https\?://[^ ]*debian' | head -n1 || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
debootstrap --variant=minbase bookworm "$W/deb" "$MIRROR" >/dev/null
umoci init --layout "$W/L" && umoci new --image "$W/L:deb"
umoci unpack --rootless --image "$W/L:deb" "$W/b" >/dev/null
rm -rf "$W/b/rootfs" && mv "$W/deb" "$W/b/rootfs"
umoci repack --image "$W/L:deb" "$W/b"  # $W/b stays: see step 2
umoci config --image "$W/L:deb" --config.env PATH=/usr/bin:/bin
chmod -R a+rX "$W/L"; mkdir -p "$W/home" "$W/x"; chown "$U" "$W/home" "$W/x"
BLOB=$(ls -S "$W/L/blobs/sha256" | head -1)
echo "image: $(du -sh "$W/L/blobs/sha256/$BLOB" | cut -f1) gzip, $(tar -tzf "$W/L/blobs/sha256/$BLOB" | wc -l) entries"

# 2. Cold unpack: pinfold import (verify + unpack into the cache) vs umoci vs tar,
#    on the disk and on a tmpfs. tar cannot mknod the image's /dev nodes
#    unprivileged and exits 2; the test -x after it proves the tree was extracted.
# Every run unpacks into a new directory ($DIR/cur points at it) and nothing is
# deleted while measuring. This VM's disk is ext4 without a journal, whose
# inode allocator skips inodes freed in the last 60 s (360 s while their
# inode-table block is dirty; fs/ext4/ialloc.c recently_deleted()): after a
# big delete anywhere near, every tool spends seconds of kernel time scanning
# inode tables. The README's first figures had an `rm -rf` of the previous
# tree in the prepare step and measured mostly that. So: `sync` (no
# writeback of the previous run left, the window back to 60 s), wait it out
# once, and measure on a tmpfs as well, where only the tools' own work counts.
cold() { # NAME DIR
  local dir=$2
  mkdir -p "$dir/x"
  printf 'd=%s/x/$(date +%%s%%N); mkdir -p $d/home; chown -R %s $d; ln -sfn $d %s/cur; sync\n' "$dir" "$U" "$dir" > "$W/prep-$1"
  printf 'exec runuser -u %s -- env RUST_LOG=error PINFOLD_HOME=%s/cur/home %s/pinfold image import oci:%s/L:deb >/dev/null\n' "$U" "$dir" "$W" "$W" > "$W/pinfold-$1"
  printf 'exec runuser -u %s -- umoci unpack --rootless --image %s/L:deb %s/cur/u >/dev/null 2>&1\n' "$U" "$W" "$dir" > "$W/umoci-$1"
  printf 'exec runuser -u %s -- sh -c "mkdir %s/cur/t && { tar -xzf %s -C %s/cur/t 2>/dev/null; test -x %s/cur/t/bin/sh; }"\n' "$U" "$dir" "$W/L/blobs/sha256/$BLOB" "$dir" "$dir" > "$W/tar-$1"
  sync; sleep 61
  # Interleaved (bench/alternate.py, a random order each round), so that a
  # slow spell of the disk falls on every tool alike.
  ALTERNATE_PREPARE="sh $W/prep-$1" python3 bench/alternate.py 7 1 "$W/cold-$1.json" \
    "pinfold image import ($1)=/bin/sh $W/pinfold-$1" \
    "umoci unpack --rootless ($1)=/bin/sh $W/umoci-$1" \
    "tar -xzf ($1)=/bin/sh $W/tar-$1"
}
cold disk "$W/d"
mkdir -p "$W/tmpfs" && mount -t tmpfs -o size=12G,mode=755 tmpfs "$W/tmpfs"
cold tmpfs "$W/tmpfs"
umount "$W/tmpfs"

# 3. Warm start: the image is cached; exec --image vs exec --rootfs (same tree)
#    isolates the cost of resolving the image to its layer dirs.
as "$W/pinfold" image import "oci:$W/L:deb" >/dev/null
as "$W/pinfold" image unpack "oci:$W/L:deb" "$W/x/flat"
hyperfine -N --warmup 3 --runs 30 --export-markdown "$W/warm.md" --export-json "$W/warm.json" \
  -n "exec --image (cached)" "runuser -u $U -- env PINFOLD_HOME=$W/home $W/pinfold exec --image oci:$W/L:deb -- /bin/true" \
  -n "exec --rootfs (flat dir)" "runuser -u $U -- env PINFOLD_HOME=$W/home $W/pinfold exec --rootfs $W/x/flat -- /bin/true" \
  -n "image inspect (resolution only)" "runuser -u $U -- env PINFOLD_HOME=$W/home $W/pinfold image inspect oci:$W/L:deb"
cat "$W/warm.md"; medians "$W/warm.json"

# 4. Pull from a loopback docker-registry.
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mkdir -p "$W/reg"
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' "$W/reg" "$PORT" > "$W/reg.yml"
docker-registry serve "$W/reg.yml" >/dev/null 2>&1 & REG=$!
sleep 2
skopeo copy -q --dest-tls-verify=false --digestfile "$W/digest" "oci:$W/L:deb" "docker://127.0.0.1:$PORT/bench/deb:1"
REF="docker://127.0.0.1:$PORT/bench/deb@$(cat "$W/digest")"
sync; sleep 61
PREP="sh -c 'd=$W/x/\$(date +%s%N); mkdir -p \$d/home; chown -R $U \$d; ln -sfn \$d $W/cur; sync'"
hyperfine -N --warmup 1 --runs 5 --export-markdown "$W/pull.md" --export-json "$W/pull.json" \
  -p "$PREP" \
  -n "pinfold image pull (cold)" "runuser -u $U -- env RUST_LOG=error PINFOLD_HOME=$W/cur/home $W/pinfold image pull $REF" \
  -n "skopeo copy to oci: (download only)" "skopeo copy -q --src-tls-verify=false $REF oci:$W/cur/s:x"
cat "$W/pull.md"; medians "$W/pull.json"
