#!/usr/bin/env bash
# Installs the spec validators the contract tests use, outside the checkout:
#   openapi-spec-validator (PyPI) in a venv, @asyncapi/parser (npm) in a node_modules.
# Idempotent: a second run only checks. Then run the tests with
#   HERALD_TEST_SPEC_VALIDATORS=1 HERALD_SPEC_TOOLS=/var/cache/herald-tools cargo test -p herald-server --test it contract::
set -euo pipefail
TOOLS="${HERALD_SPEC_TOOLS:-/var/cache/herald-tools}"
mkdir -p "$TOOLS"

if ! "$TOOLS/venv/bin/openapi-spec-validator" --help >/dev/null 2>&1; then
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --upgrade pip
    "$TOOLS/venv/bin/pip" install --quiet 'openapi-spec-validator>=0.7'
fi

if [ ! -d "$TOOLS/node/node_modules/@asyncapi/parser" ]; then
    mkdir -p "$TOOLS/node"
    (cd "$TOOLS/node" && { [ -f package.json ] || npm init -y >/dev/null; } \
        && npm install --silent --no-audit --no-fund '@asyncapi/parser@^3')
fi

echo "spec validators ready in $TOOLS"
echo "  openapi: $TOOLS/venv/bin/openapi-spec-validator"
echo "  asyncapi: node with NODE_PATH=$TOOLS/node/node_modules (@asyncapi/parser)"
