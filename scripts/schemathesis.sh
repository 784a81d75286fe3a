#!/usr/bin/env bash
# Schemathesis against the records service's OpenAPI document and the admin
# API's (the dashboard mounted at /dashboard), in a bounded mode: no 5xx,
# responses match their schema, status codes and content types are declared.
#
#   scripts/schemathesis.sh
#
# Env: SCHEMATHESIS_MAX_EXAMPLES (default 30 per operation),
#      SCHEMATHESIS_MAX_TIME (seconds per API document, default 120),
#      SCHEMATHESIS_VENV (default ~/.cache/offload-schemathesis).
# Starts the service on a free 127.0.0.1 port with a temporary SQLite
# database and stops it on exit. Exits non-zero if any check fails.
set -euo pipefail

cd "$(dirname "$0")/.."
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-30}"
max_time="${SCHEMATHESIS_MAX_TIME:-120}"
venv="${SCHEMATHESIS_VENV:-$HOME/.cache/offload-schemathesis}"

if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "installing schemathesis into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet schemathesis
fi

cargo build --quiet -p offload-records
bin="${CARGO_TARGET_DIR:-target}/debug/offload-records"

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
"$bin" --database-url "sqlite://$work/records.db" --listen "127.0.0.1:$port" \
    --hash-rounds 10 --job-delay-ms 1 >"$work/service.log" 2>&1 &
service=$!
stop() {
    kill "$service" 2>/dev/null || true
    wait "$service" 2>/dev/null || true
    if [ "${status:-1}" -ne 0 ]; then
        echo "--- service log (last 40 lines) ---" >&2
        tail -n 40 "$work/service.log" >&2 || true
    fi
    rm -rf "$work"
}
trap stop EXIT

for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$base/openapi.json" 2>/dev/null && break
    kill -0 "$service" 2>/dev/null || { echo "the service exited" >&2; exit 1; }
    sleep 0.1
done

checks="not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
run() {
    local name="$1" schema="$2" url="$3"
    echo "=== $name: $schema" >&2
    "$venv/bin/schemathesis" run "$schema" --url "$url" \
        --checks "$checks" \
        --max-examples "$max_examples" \
        --max-time "$max_time" \
        --generation-database none \
        --request-timeout 10 \
        --no-color
}

status=0
run "records API" "$base/openapi.json" "$base" || status=1
run "admin API" "$base/dashboard/api/openapi.json" "$base/dashboard" || status=1
exit "$status"
