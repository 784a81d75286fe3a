#!/usr/bin/env bash
# Load and crash check for the offload-records reference service.
#
# For each backend (SQLite, PostgreSQL) it starts the release build on
# 127.0.0.1, measures `POST /records` with wrk at concurrency 1, 16 and 64
# (req/s, p50, p99), then kills the service under load with SIGKILL,
# restarts it and counts acknowledged (201) records that never reach
# `done`; then the same with SIGTERM. Every phase is bounded in time.
#
# Usage: scripts/load-test.sh [sqlite] [postgres]     (default: both)
# Environment:
#   DURATION=10            seconds per throughput phase
#   CRASH_DURATION=8       seconds of load per crash phase (kill at half)
#   PORT=3900              port on 127.0.0.1
#   PG_URL=postgres://postgres@127.0.0.1:5432   server for the PostgreSQL runs
#                          (a fresh database is created and dropped)
#   WORKERS=16 HASH_ROUNDS=1000 JOB_DELAY_MS=20   service tuning
#   GROUP_COMMIT_WRITERS=0   one transaction per request instead of group
#                          commit (read by the service itself)
#   OFFLOAD_RECORDS_BIN=…  use this binary instead of building one
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10}
CRASH_DURATION=${CRASH_DURATION:-8}
PORT=${PORT:-3900}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
WORKERS=${WORKERS:-16}
HASH_ROUNDS=${HASH_ROUNDS:-1000}
JOB_DELAY_MS=${JOB_DELAY_MS:-20}
BACKENDS=("$@")
[ ${#BACKENDS[@]} -eq 0 ] && BACKENDS=(sqlite postgres)
WORK=$(mktemp -d -t offload-load.XXXXXX)
SUMMARY=()
FAILED=0
# log, cleanup, need_tools, service_binary, start_service, stop_service,
# fresh_database, load_average; BASE, LUA, CHECK, SERVICE_PID.
# shellcheck source=scripts/load/lib.sh
. "$ROOT/scripts/load/lib.sh"
trap cleanup EXIT
need_tools
service_binary

# --- phases --------------------------------------------------------------
throughput() { # backend
    fresh_database "$1" throughput
    start_service "$DB_URL" "$WORK/$1-throughput.log"
    # Warm up connections and caches.
    wrk -t2 -c16 -d2s -s "$LUA" "$BASE" >/dev/null
    for c in 1 16 64; do
        local threads=2
        [ "$c" -eq 1 ] && threads=1
        local before
        before=$(load_average)
        log "$1: POST /records, concurrency $c, ${DURATION}s (load average before: $before)"
        local out
        out=$(wrk -t"$threads" -c"$c" -d"${DURATION}s" --timeout 5s -s "$LUA" "$BASE" | grep '^RESULT')
        echo "$out" >&2
        # Every request must succeed: a failed one fails the run.
        case "$out" in
        *" non2xx=0 socket_errors=0"*) ;;
        *) echo "$1: requests failed at concurrency $c" >&2; FAILED=1 ;;
        esac
        SUMMARY+=("$(printf '%-9s c=%-3s %s loadavg_before=%s' "$1" "$c" "${out#RESULT }" "$before")")
    done
    stop_service TERM
}

crash() { # backend signal
    fresh_database "$1" "crash_$(echo "$2" | tr 'A-Z' 'a-z')"
    local url=$DB_URL
    local service_log="$WORK/$1-crash-$2.log"
    start_service "$url" "$service_log"
    log "$1: load for ${CRASH_DURATION}s at concurrency 16, SIG$2 half-way"
    rm -f "$WORK"/acked.*
    wrk -t2 -c16 -d"${CRASH_DURATION}s" --timeout 2s -s "$LUA" "$BASE" -- "$WORK/acked" >"$WORK/wrk-crash.log" 2>&1 &
    local wrk_pid=$!
    sleep "$(( CRASH_DURATION / 2 ))"
    stop_service "$2"
    wait "$wrk_pid" || true
    log "$1: restarting after SIG$2"
    start_service "$url" "$service_log"
    local result status=0
    result=$(python3 "$CHECK" "$BASE" "$WORK"/acked.* --timeout 180) || status=$?
    echo "$result" >&2
    [ "$status" -ne 0 ] && FAILED=1
    SUMMARY+=("$(printf '%-9s SIG%-5s %s' "$1" "$2" "$(echo "$result" | tail -1)")")
    stop_service TERM
}

echo "offload-records load test: $(nproc) cores, wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), workers=$WORKERS hash_rounds=$HASH_ROUNDS job_delay_ms=$JOB_DELAY_MS group_commit_writers=${GROUP_COMMIT_WRITERS:-default}" >&2
for backend in "${BACKENDS[@]}"; do
    case "$backend" in
    sqlite | postgres) ;;
    *) echo "unknown backend $backend (sqlite or postgres)" >&2; exit 2 ;;
    esac
    if [ "$backend" = postgres ] && ! psql "$PG_URL/postgres" -qAt -c 'SELECT 1' >/dev/null 2>&1; then
        echo "PostgreSQL at $PG_URL is not reachable (or psql is missing); skipping it" >&2
        continue
    fi
    throughput "$backend"
    crash "$backend" KILL
    crash "$backend" TERM
done

echo
echo "== summary (POST /records; latency in ms; LOST = acknowledged records never done)"
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
