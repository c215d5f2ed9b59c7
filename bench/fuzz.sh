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
# Rust, and without ASan each target runs several times faster). The build
# is cargo-fuzz's default: optimised, with debug assertions and overflow
# checks on (`-O` would turn them off, and an input-controlled length that
# overflows would go unseen). An input that runs over TIMEOUT seconds
# (default 10) is a crash too (fuzz/artifacts/TARGET/timeout-*).
# Crashing inputs land in fuzz/artifacts/TARGET/; seeds are in fuzz/seeds/,
# the growing corpus in fuzz/corpus/ (neither artifacts nor corpus is
# committed; the last run's log of each target is fuzz/artifacts/TARGET.log);
# inputs that once crashed are kept in fuzz/regressions/. The seconds column
# is the time the target actually ran: a crash stops it early.
set -euo pipefail
seconds=${1:-60}
sanitizer=${SANITIZER:-none}
timeout=${TIMEOUT:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz into ~/.cargo/bin" >&2
    nice -n 10 cargo install --locked cargo-fuzz
fi
command -v c++ >/dev/null || { echo "fuzz.sh: libFuzzer needs a C++ compiler: apt-get install g++" >&2; exit 1; }

echo "==> building the targets (sanitizer: $sanitizer)" >&2
nice -n 10 cargo fuzz build --sanitizer "$sanitizer" >&2

targets=$(cargo fuzz list)
results=()
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log="artifacts/$t.log"
    start=$(date +%s)
    echo "==> $t: ${seconds}s" >&2
    # -rss_limit_mb: the coordinator target holds a SQLite store in memory.
    set +e
    nice -n 10 cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    took=$(( $(date +%s) - start ))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    after=$(find "artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes="?(exit $rc)"; fi
    if [ "$rc" -ne 0 ]; then
        grep -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | head -3 >&2 || true
    fi
    results+=("$(printf '%-16s %8s %12s %8s' "$t" "$took" "${runs:-0}" "$crashes")")
done
printf '%-16s %8s %12s %8s\n' target seconds executions crashes
printf '%s\n' "${results[@]}"
