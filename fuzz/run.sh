#!/usr/bin/env bash
# Build every fuzz target and run each for SECONDS (default 60); exit non-zero on any
# crash, leak, timeout or failed regression input.
#
#   fuzz/run.sh [SECONDS]
#   FUZZ_TARGETS="server_reader dot_stuff" FUZZ_SANITIZER=address fuzz/run.sh 300
#
# Only the stable toolchain is needed: cargo-fuzz passes nightly-only -Z flags to rustc,
# which RUSTC_BOOTSTRAP=1 lets stable accept. The default sanitizer is "none": the codec
# forbids unsafe code, so ASan would mostly halve the executions; set FUZZ_SANITIZER=address
# to use it anyway. Builds are release with debug assertions and overflow checks on.
set -euo pipefail

seconds=${1:-60}
case $seconds in
    '' | *[!0-9]*)
        echo "usage: $0 [SECONDS]" >&2
        exit 2
        ;;
esac
cd "$(dirname "$0")"
export RUSTUP_TOOLCHAIN=${RUSTUP_TOOLCHAIN:-stable}
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-none}
triple=$(rustc -vV | sed -n 's/^host: //p')

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}

python3 make_corpus.py corpus
cargo fuzz build -s "$sanitizer"
mkdir -p target/logs

failed=()
for target in $targets; do
    bin=target/$triple/release/$target
    # Every saved reproducer must pass before fuzzing starts.
    if compgen -G "regressions/$target/*" >/dev/null; then
        if ! "$bin" regressions/"$target"/* >"target/logs/$target.regressions.log" 2>&1; then
            echo "FAIL $target: a regression input crashes (target/logs/$target.regressions.log)"
            failed+=("$target")
            continue
        fi
    fi
    log=target/logs/$target.log
    mkdir -p "artifacts/$target"
    if "$bin" "corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -dict=smtp.dict -print_final_stats=1 -artifact_prefix="artifacts/$target/" \
        >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        failed+=("$target")
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    corpus=$(find "corpus/$target" -type f | wc -l)
    echo "$status $target: ${runs:-?} executions (limit ${seconds}s), $cov, corpus $corpus (log $log)"
    if [ "$status" = CRASH ]; then
        grep -m 5 -E 'panicked|ERROR|Test unit written' "$log" || true
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]} (reproducers in fuzz/artifacts/<target>/;" \
        "keep them in fuzz/regressions/<target>/)" >&2
    exit 1
fi
echo "all targets ran ${seconds}s without a crash"
