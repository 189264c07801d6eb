#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ briefly (FUZZ_SECONDS each, default 20): signature
# verification and header parsing, config parsing, request bodies through the router.
# Gated: does nothing unless HERALD_TEST_FUZZ=1. cargo-fuzz needs nightly features; on a
# stable toolchain they are unlocked with RUSTC_BOOTSTRAP=1. Installs cargo-fuzz if missing.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${HERALD_TEST_FUZZ:-}" != 1 ]; then
    echo "fuzz-smoke: skipped (set HERALD_TEST_FUZZ=1 to run)"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# The fuzz build is instrumented: keep it apart from the normal target directory.
export CARGO_TARGET_DIR="${HERALD_FUZZ_TARGET_DIR:-/var/cache/herald-target-fuzz}"
seconds="${FUZZ_SECONDS:-20}"
# Safe Rust: the sanitizer adds little; debug assertions (on in fuzz builds) catch overflows.
sanitizer="${FUZZ_SANITIZER:-none}"
cd fuzz
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
for target in $targets; do
    echo "fuzz-smoke: $target for ${seconds}s"
    mkdir -p "corpus/$target"
    cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "fuzz-smoke: no crashes"
