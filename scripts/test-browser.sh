#!/usr/bin/env bash
# The dashboard's browser test: builds herald, then runs tests/browser with node's
# test runner (the test starts herald on port 0 and a webhook receiver itself).
# Gated: without HERALD_TEST_BROWSER=1 it prints "skipped" and succeeds.
# Needs scripts/install-browser-deps.sh to have run. Screenshots go to
# $HERALD_SCREENSHOTS_DIR when set (e.g. docs/screenshots).
set -euo pipefail
if [ "${HERALD_TEST_BROWSER:-}" != "1" ]; then
    echo "browser test skipped (set HERALD_TEST_BROWSER=1 to run it)"
    exit 0
fi
cd "$(dirname "$0")/.."
export HERALD_TOOLS_DIR="${HERALD_TOOLS_DIR:-/var/cache/herald-tools}"
if [ ! -d "$HERALD_TOOLS_DIR/node_modules/playwright-core" ] || ! command -v chromium >/dev/null; then
    echo "missing browser deps: run scripts/install-browser-deps.sh first" >&2
    exit 1
fi
cargo build -p herald --quiet
target_dir="${CARGO_TARGET_DIR:-target}"
export HERALD_BIN="${HERALD_BIN:-$(realpath "$target_dir")/debug/herald}"
node --test --test-reporter=spec tests/browser/
