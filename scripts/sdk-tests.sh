#!/usr/bin/env bash
# The Python and TypeScript SDKs' tests (sdks/python, sdks/typescript), each against a real
# `herald serve` that the tests start. Gated: does nothing unless HERALD_TEST_SDKS=1.
# Builds Herald (or takes HERALD_BIN), makes a virtualenv outside the checkout
# (HERALD_SDK_CACHE, default ~/.cache/herald-sdk), installs the Python SDK with its one command
# (pip install ./sdks/python) and its pinned test tools, runs mypy --strict and pytest; then
# `npm ci` (node_modules is git-ignored) and `npm test` for the TypeScript SDK.
# A missing python3 (3.11+) or node (20.11+) skips that SDK with a message; with CI=true it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${HERALD_TEST_SDKS:-}" != 1 ]; then
    echo "sdk-tests: skipped (set HERALD_TEST_SDKS=1 to run)"
    exit 0
fi

missing() {
    if [ "${CI:-}" = true ]; then
        echo "sdk-tests: FAILED: $1 is missing, and CI=true requires the $2 SDK's tests"
        exit 1
    fi
    echo "sdk-tests: SKIPPED the $2 SDK's tests: $1 is missing"
}

if [ -z "${HERALD_BIN:-}" ]; then
    cargo build -p herald --bin herald
    HERALD_BIN="${CARGO_TARGET_DIR:-target}/debug/herald"
fi
HERALD_BIN="$(realpath "$HERALD_BIN")"
export HERALD_BIN
cache="${HERALD_SDK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald-sdk}"
mkdir -p "$cache"
failed=()

if command -v python3 >/dev/null && python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    venv="$cache/venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    echo "sdk-tests: Python SDK ($("$venv/bin/python" --version), $venv)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r sdks/python/requirements-dev.txt
    # The documented install command, as a user runs it (a wheel built by the package's backend).
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./sdks/python
    (cd sdks/python && "$venv/bin/mypy" src examples) || failed+=("python: mypy")
    (cd sdks/python && "$venv/bin/python" -m pytest -q -p no:cacheprovider) || failed+=("python: pytest")
else
    missing "python3 (3.11 or later)" Python
fi

if command -v node >/dev/null && command -v npm >/dev/null &&
    node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 11) ? 0 : 1)'; then
    echo "sdk-tests: TypeScript SDK (node $(node --version), npm $(npm --version))"
    (cd sdks/typescript && npm ci --no-audit --no-fund && npm test) || failed+=("typescript: npm test")
else
    missing "node (20.11 or later) with npm" TypeScript
fi

if [ "${#failed[@]}" -gt 0 ]; then
    printf 'sdk-tests: FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "sdk-tests: passed"
