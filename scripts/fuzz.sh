#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and fails on the
# first crash (the crashing input is kept in fuzz/artifacts/TARGET/).
#
#   scripts/fuzz.sh                 # each target for 30 s
#   FUZZ_SECONDS=300 scripts/fuzz.sh records_body
#
# Only stable Rust is installed: RUSTC_BOOTSTRAP=1 lets it accept the
# nightly-only sanitizer flags cargo-fuzz passes.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-30}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
    echo "=== fuzzing $target for ${seconds}s" >&2
    mkdir -p "corpus/$target"
    # Exits non-zero on a crash, a panic or a leak.
    cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1
done
echo "no crashes in: ${targets[*]}" >&2
