#!/usr/bin/env bash
# Runs every cargo-fuzz target for a while (default 60 s each, one after the other) and prints
# what libFuzzer reports. Needs cargo-fuzz (installed if missing); the toolchain here is stable,
# so RUSTC_BOOTSTRAP=1 lets it use the nightly-only sanitizer flags libFuzzer needs.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Crashes land in fuzz/artifacts/<target>/; add each as a regression test in
# tests/fuzz_regressions.rs. Corpora grow in fuzz/corpus/<target>/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(decode command changes)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
target_dir="${BATON_FUZZ_TARGET_DIR:-fuzz/target}"
cargo fuzz build --target-dir "$target_dir"

status=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    dict="fuzz/dict/${target}.dict"
    [ "$target" = decode ] && dict=fuzz/dict/resp.dict
    dict_arg=()
    [ -f "$dict" ] && dict_arg=(-dict="$dict")
    mkdir -p "fuzz/seeds/$target"
    echo "== fuzzing $target for ${seconds}s"
    if ! cargo fuzz run --target-dir "$target_dir" "$target" "fuzz/corpus/$target" fuzz/seeds/"$target" -- \
        -max_total_time="$seconds" "${dict_arg[@]}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 2>&1 | tee "fuzz/artifacts/$target/last-run.log" | grep -E '^(#[0-9]+ +DONE|stat::|==|SUMMARY|artifact_prefix|Test unit written)' ; then
        :
    fi
    if grep -q -E 'Test unit written|SUMMARY: ' "fuzz/artifacts/$target/last-run.log"; then
        echo "!! $target found a failure; see fuzz/artifacts/$target/"
        status=1
    fi
done
exit $status
