#!/usr/bin/env bash
# Installs what the dashboard's browser test needs: Debian's chromium and
# playwright-core (npm) in a folder outside the checkout. Idempotent.
set -euo pipefail
TOOLS_DIR="${HERALD_TOOLS_DIR:-/var/cache/herald-tools}"
PLAYWRIGHT_VERSION="${PLAYWRIGHT_VERSION:-1.64.1}"

if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

mkdir -p "$TOOLS_DIR"
if [ ! -f "$TOOLS_DIR/node_modules/playwright-core/package.json" ] ||
    ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$TOOLS_DIR/node_modules/playwright-core/package.json"; then
    [ -f "$TOOLS_DIR/package.json" ] || echo '{ "name": "herald-tools", "private": true }' >"$TOOLS_DIR/package.json"
    # playwright-core never downloads a browser; the test uses /usr/bin/chromium.
    (cd "$TOOLS_DIR" && npm install --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION")
fi
echo "browser deps ready: $(command -v chromium), playwright-core in $TOOLS_DIR"
