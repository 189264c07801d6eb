#!/usr/bin/env bash
# Runs schemathesis against the /openapi.json of a running Herald (admin key, fresh
# SQLite database) and fails on any 5xx. Gated: does nothing unless
# HERALD_TEST_SCHEMATHESIS=1. Bounded: SCHEMATHESIS_SECONDS (default 120) of testing; give it
# at least 60 (the spec's long-poll examples, `:claim` with `wait`, take ~20 s of it).
# schemathesis is installed (PyPI) into a venv outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${HERALD_TEST_SCHEMATHESIS:-}" != 1 ]; then
    echo "schemathesis: skipped (set HERALD_TEST_SCHEMATHESIS=1 to run)"
    exit 0
fi
TOOLS="${HERALD_SPEC_TOOLS:-/var/cache/herald-tools}"
VENV="$TOOLS/schemathesis"
if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet 'schemathesis>=4,<5'
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/herald-target}"
cargo build --quiet -p herald
work="$(mktemp -d)"
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/herald.toml" <<'TOML'
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
[webhooks]
allow_private_destinations = false
TOML
key="schemathesis-admin-key"
HERALD_ADMIN_KEY="$key" HERALD_LOG=error "$CARGO_TARGET_DIR/debug/herald" serve \
    --listen 127.0.0.1:0 --database "sqlite://$work/herald.db" --config "$work/herald.toml" \
    > "$work/out.log" 2>&1 &
pid=$!
base=""
for _ in $(seq 1 100); do
    base="$(sed -n 's/^herald listening on //p' "$work/out.log" | head -1)"
    [ -n "$base" ] && break
    sleep 0.1
done
[ -n "$base" ] || { cat "$work/out.log"; echo "herald did not start"; exit 1; }
echo "schemathesis against $base/openapi.json"
# Only the one check that matters here: no 5xx, whatever is sent. Long polls are
# bounded by the request timeout.
# Run from the scratch folder: schemathesis keeps a cache in its working directory.
status=0
(cd "$work" && timeout $(( ${SCHEMATHESIS_SECONDS:-120} + 60 )) "$VENV/bin/schemathesis" run "$base/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks not_a_server_error \
    --max-time "${SCHEMATHESIS_SECONDS:-120}" \
    --request-timeout 30 \
    --workers 2 \
    --seed "${SCHEMATHESIS_SEED:-42}" \
    --report junit --report-dir "$work/report" "$@") || status=$?
kill -0 "$pid" || { echo "herald died during the run"; cat "$work/out.log"; exit 1; }
# A failed check (a 5xx) is a <failure> in the JUnit report. schemathesis also exits non-zero
# for its own runtime errors (seen here: a hypothesis SystemError while generating data), which
# say nothing about Herald's answers: those are reported, not failed on.
if grep -q "<failure" "$work"/report/*.xml 2>/dev/null; then
    echo "schemathesis: Herald answered with a 5xx"; exit 1
fi
if [ "$status" -ne 0 ]; then
    ls "$work"/report/*.xml >/dev/null 2>&1 || { echo "schemathesis failed to run (exit $status)"; exit 1; }
    echo "schemathesis: exit $status from its own runtime errors; no check failed"
fi
echo "schemathesis: no 5xx"
