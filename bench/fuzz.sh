#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and
# prints, per target, the executions and the crashes found.
#
#   bash bench/fuzz.sh [SECONDS]
#
# Only the stable toolchain is needed: cargo-fuzz passes nightly -Z flags to
# rustc, which RUSTC_BOOTSTRAP=1 lets stable accept. libFuzzer itself is
# compiled by libfuzzer-sys with the machine's C++ compiler (g++).
# SANITIZER=address adds ASan (default none: the code under test is safe
# Rust, and without ASan each target runs several times faster).
# Crashing inputs land in fuzz/artifacts/TARGET/; seeds are in fuzz/seeds/,
# the growing corpus in fuzz/corpus/ (neither artifacts nor corpus is
# committed); inputs that once crashed are kept in fuzz/regressions/.
set -euo pipefail
seconds=${1:-60}
sanitizer=${SANITIZER:-none}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz into ~/.cargo/bin" >&2
    nice -n 10 cargo install --locked cargo-fuzz
fi
command -v c++ >/dev/null || { echo "fuzz.sh: libFuzzer needs a C++ compiler: apt-get install g++" >&2; exit 1; }

echo "==> building the targets (sanitizer: $sanitizer)" >&2
nice -n 10 cargo fuzz build -O --sanitizer "$sanitizer" >&2

targets=$(cargo fuzz list)
results=()
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log=$(mktemp)
    echo "==> $t: ${seconds}s" >&2
    # -rss_limit_mb: the coordinator target holds a SQLite store in memory.
    set +e
    nice -n 10 cargo fuzz run -O --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    after=$(find "artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes="?(exit $rc)"; fi
    if [ "$rc" -ne 0 ]; then
        grep -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | head -3 >&2 || true
    fi
    results+=("$(printf '%-16s %8s %12s %8s' "$t" "$seconds" "${runs:-0}" "$crashes")")
    rm -f "$log"
done
printf '%-16s %8s %12s %8s\n' target seconds executions crashes
printf '%s\n' "${results[@]}"
