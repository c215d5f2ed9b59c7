#!/usr/bin/env bash
# Builds a busybox OCI image with umoci in DIR/layout and prints its pinned
# reference, oci:DIR/layout@sha256:<manifest digest>, for job files.
#   tests/make-busybox-image.sh DIR
set -euo pipefail
dir=${1:?usage: tests/make-busybox-image.sh DIR}
command -v umoci >/dev/null || { echo "umoci is missing: apt-get install umoci (tests/setup.sh)" >&2; exit 1; }
l="$dir/layout"; b="$dir/bundle"
umoci init --layout "$l"
umoci new --image "$l:busybox"
umoci unpack --rootless --image "$l:busybox" "$b" >/dev/null
bash "$(dirname "$0")/make-busybox-rootfs.sh" "$b/rootfs"
umoci repack --image "$l:busybox" "$b" >/dev/null
rm -rf "$b"
digest=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['manifests'][0]['digest'])" "$l/index.json")
echo "oci:$l@$digest"
