#!/usr/bin/env bash
# `pinfold verify` against N x `pinfold run`, side by side in one hyperfine
# run, on the same job (a busybox image, a build that gzips ~2 s of data)
# and on a tiny job (where verify's 1.5 s time gap shows). The target: N
# runs take no more than N x one run + 5%.
#
#   bench/verify.sh [RUNS]      (as root: runs pinfold as pinfold-test)
#
# PINFOLD_BIN=path uses that binary instead of building target/release.
# Needs: hyperfine, umoci, busybox-static, python3 (tests/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-5}
bench_work pinfold-bench-verify release

# A busybox OCI image (as tests/verify.rs builds it).
l=$work/img/layout b=$work/img/bundle
umoci init --layout "$l"
umoci new --image "$l:img"
umoci unpack --rootless --image "$l:img" "$b" >/dev/null
r=$b/rootfs
mkdir -p "$r/bin" "$r/tmp" "$r/etc"
cp "$(command -v busybox)" "$r/bin/busybox"
for c in $("$r/bin/busybox" --list); do [ "$c" = busybox ] || ln -s busybox "$r/bin/$c"; done
chmod 1777 "$r/tmp"
umoci repack --image "$l:img" "$b" >/dev/null
rm -rf "$b"
digest=$(python3 -c "import json;print(json.load(open('$l/index.json'))['manifests'][0]['digest'])")
image="oci:$l@$digest"

mkdir -p "$work/src"
for n in a b c d e f g h; do seq 1 1000 | sed "s/^/$n /" > "$work/src/$n"; done
cat > "$work/build.yaml" <<EOF
image: $image
steps:
  - name: build
    run: |
      mkdir -p out
      cat a b c d e f g h > out/all.txt
      seq 1 1500000 | gzip -n -6 > out/seq.gz
artifacts: [out/*]
EOF
cat > "$work/tiny.yaml" <<EOF
image: $image
steps:
  - name: build
    run: mkdir -p out; cat a b > out/ab
artifacts: [out/*]
EOF

own_work
cd "$work"
P="$work/pinfold"
# Pull the image into the store once (both sides then find it cached).
"${as_user[@]}" env PINFOLD_HOME="$work/home" "$P" run tiny.yaml --source src >/dev/null
for job in build tiny; do
  "${as_user[@]}" env PINFOLD_HOME="$work/home" hyperfine -N --warmup 1 --runs "$RUNS" \
    --export-json "$work/$job.json" \
    -n "run x1" "$P run $job.yaml --source src --out o-run" \
    -n "verify --runs 2" "$P verify $job.yaml --source src --out o-v" \
    -n "verify --runs 2 --jobs 1" "$P verify $job.yaml --source src --out o-v1 --jobs 1" \
    -n "verify --runs 2 --vary=-time" "$P verify $job.yaml --source src --out o-vt --vary=-time" \
    >/dev/null
  python3 - "$work/$job.json" "$job" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
one = r["run x1"]["median"]
print(f"job {sys.argv[2]}: {'command':30} {'median':>8} {'/ (2 x run)':>12}")
for name, x in r.items():
    print(f"{'':{len(sys.argv[2]) + 5}}{name:30} {x['median']:7.2f}s {x['median'] / (2 * one):11.2f}x")
PY
done
echo "cpus: $(nproc); runs at once by default: min(cpus, N)"
