#!/usr/bin/env bash
# Reproduction of the PostgreSQL "job stuck `running`" bug fixed in d0730a6
# (a request cancelled during sqlx's `BEGIN` left its pooled connection
# inside a transaction; a job's autocommit completion written on it later
# was rolled back with someone else's transaction, so the job stayed
# `running` on a live, heartbeating worker and was never rescued).
#
# On 127.0.0.1 only, every phase bounded in time: starts the release
# offload-records on a fresh PostgreSQL database with one transaction per
# request (GROUP_COMMIT_WRITERS=0), then
#   1. RUNS short wrk runs at concurrency 64; each run ends with up to 64
#      requests in flight, whose connections wrk closes as it exits, so
#      their handlers are cancelled wherever they are, `BEGIN` included;
#      then waits for the queue to drain and counts;
#   2. SIGKILLs the service under load, restarts it, AFTER_RUNS more runs,
#      waits for the drain and counts again.
# Counts: acknowledged (201) records, those never `done`
# (scripts/load/check_acked.py), jobs still `running` once the queue is
# empty (psql on offload_jobs), and the service log's lines with "there is
# already a transaction in progress", "there is no transaction in
# progress", "no longer this attempt" and the fix's own warning. Exits 1 if
# any acknowledged record is unprocessed or any job stays `running`.
#
# Usage: scripts/repro-stuck-running.sh
# Environment:
#   RUNS=30 AFTER_RUNS=10   wrk runs before and after the SIGKILL
#   RUN_SECONDS=2          seconds per run
#   WRK_TIMEOUT=1s         wrk --timeout (how long wrk counts a request as
#                          pending; the connections close at each run's end)
#   DRAIN_TIMEOUT=180      most seconds to wait for the drain, per phase
#                          (the backlog drains at a few hundred jobs/s on
#                          a busy 2-core machine)
#   STUCK_AFTER=20         seconds the queue must stay empty with jobs
#                          `running` before they count as stuck (more than
#                          the 15-s lease, so jobs a killed worker held are
#                          rescued first)
#   PORT=3901  PG_URL=postgres://postgres@127.0.0.1:5432   (a fresh database
#                          is created and dropped at exit)
#   WORKERS=16 HASH_ROUNDS=1000 JOB_DELAY_MS=0   service tuning (no job
#                          delay, so the backlog drains within DRAIN_TIMEOUT)
#   GROUP_COMMIT_WRITERS=0   (the bug's setting)
#   OFFLOAD_RECORDS_BIN=…  use this binary instead of building one
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${RUNS:-30}
AFTER_RUNS=${AFTER_RUNS:-10}
RUN_SECONDS=${RUN_SECONDS:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-1s}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-180}
STUCK_AFTER=${STUCK_AFTER:-20}
PORT=${PORT:-3901}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
WORKERS=${WORKERS:-16}
HASH_ROUNDS=${HASH_ROUNDS:-1000}
JOB_DELAY_MS=${JOB_DELAY_MS:-0}
export GROUP_COMMIT_WRITERS=${GROUP_COMMIT_WRITERS:-0}
DB_PREFIX=offload_repro
WORK=$(mktemp -d -t offload-repro.XXXXXX)
# shellcheck source=scripts/load/lib.sh
. "$ROOT/scripts/load/lib.sh"
trap cleanup EXIT
need_tools
psql "$PG_URL/postgres" -qAt -c 'SELECT 1' >/dev/null 2>&1 || {
    echo "PostgreSQL at $PG_URL is not reachable (or psql is missing)" >&2
    exit 2
}
service_binary

SERVICE_LOG="$WORK/service.log"
FAILED=0
SUMMARY=()

sql() { psql "$DB_URL" -qAt -c "$1"; }

wrk_runs() { # count label
    local requests=0 i out
    for i in $(seq 1 "$1"); do
        out=$(wrk -t2 -c64 -d"${RUN_SECONDS}s" --timeout "$WRK_TIMEOUT" -s "$LUA" "$BASE" \
            -- "$WORK/acked.$2-$i" 2>&1 | grep '^RESULT' || true)
        requests=$(( requests + $(echo "$out" | sed -n 's/.* requests=\([0-9]*\).*/\1/p' | grep . || echo 0) ))
    done
    log "$2: $1 runs of ${RUN_SECONDS}s at c=64, $requests requests (load average now $(load_average))"
}

# Waits until no job is available, scheduled or retryable and none
# running, or until the queue has stayed empty for STUCK_AFTER seconds
# with jobs still running, or DRAIN_TIMEOUT. Sets PENDING and STUCK.
drain() { # label
    local deadline=$(( SECONDS + DRAIN_TIMEOUT )) empty_since="" counts
    while :; do
        counts=$(sql "SELECT count(*) FILTER (WHERE state IN ('available','scheduled','retryable')),
                             count(*) FILTER (WHERE state = 'running') FROM offload_jobs")
        PENDING=${counts%|*}
        STUCK=${counts#*|}
        if [ "$PENDING" -eq 0 ]; then
            [ "$STUCK" -eq 0 ] && break
            [ -z "$empty_since" ] && empty_since=$SECONDS
            [ $(( SECONDS - empty_since )) -ge "$STUCK_AFTER" ] && break
        else
            empty_since=""
        fi
        [ "$SECONDS" -ge "$deadline" ] && break
        sleep 1
    done
    log "$1: pending=$PENDING running=$STUCK${empty_since:+ ($(( SECONDS - empty_since )) s after the queue emptied)}"
    if [ "$PENDING" -gt 0 ]; then
        echo "  the queue did not drain in ${DRAIN_TIMEOUT} s: inconclusive (raise DRAIN_TIMEOUT)" >&2
    elif [ "$STUCK" -gt 0 ]; then
        echo "  stuck jobs (first 10), with their worker's last heartbeat:" >&2
        sql "SELECT '  job ' || j.id || ' attempt=' || j.attempt || ' attempted ' ||
                    round(extract(epoch FROM now() - j.attempted_at)) || ' s ago, worker ' ||
                    coalesce(j.worker_id, '?') || ' heartbeat ' ||
                    coalesce(round(extract(epoch FROM now() - w.heartbeat_at))::text || ' s ago', 'gone')
             FROM offload_jobs j LEFT JOIN offload_workers w ON w.id = j.worker_id
             WHERE j.state = 'running' ORDER BY j.id LIMIT 10" >&2
    fi
}

check() { # label acked-files...
    local label=$1 result status=0
    shift
    # The drain above did the waiting: this only reads.
    result=$(python3 "$CHECK" "$BASE" "$@" --timeout 5 2>&1) || status=$?
    echo "$result" | grep -v '^service not answering' | head -12 >&2
    local line
    line=$(echo "$result" | tail -1)
    local acked=${line#ACKED=}
    acked=${acked%% *}
    local lost=${line##*LOST=}
    lost=${lost%% *}
    SUMMARY+=("$(printf '%-22s acked=%s unprocessed=%s running_after_drain=%s pending=%s' \
        "$label" "$acked" "$lost" "$STUCK" "$PENDING")")
    if [ "$status" -ne 0 ] || [ "$STUCK" -gt 0 ] || [ "$PENDING" -gt 0 ]; then FAILED=1; fi
}

echo "offload-records stuck-running repro: $(nproc) cores, binary $BIN, runs=$RUNS+$AFTER_RUNS x ${RUN_SECONDS}s c=64, workers=$WORKERS hash_rounds=$HASH_ROUNDS job_delay_ms=$JOB_DELAY_MS group_commit_writers=$GROUP_COMMIT_WRITERS, load average $(load_average)" >&2
fresh_database postgres stuck
start_service "$DB_URL" "$SERVICE_LOG"

wrk_runs "$RUNS" before-kill
drain "before the SIGKILL"
check "before the SIGKILL" "$WORK"/acked.before-kill-*

log "SIGKILL under load, restart"
wrk -t2 -c64 -d4s --timeout "$WRK_TIMEOUT" -s "$LUA" "$BASE" -- "$WORK/acked.kill" >/dev/null 2>&1 &
wrk_pid=$!
sleep 2
stop_service KILL
wait "$wrk_pid" || true
start_service "$DB_URL" "$SERVICE_LOG"
wrk_runs "$AFTER_RUNS" after-restart
drain "after the restart"
check "after the restart (all)" "$WORK"/acked.*
stop_service TERM

echo
echo "== summary ($(( SECONDS / 60 )) min $(( SECONDS % 60 )) s wall time)"
printf '%s\n' "${SUMMARY[@]}"
echo "service log (both processes):"
for pattern in "there is already a transaction in progress" "there is no transaction in progress" \
    "no longer this attempt" "rolling back a transaction whose BEGIN was cancelled"; do
    printf '  %6d  %s\n' "$(grep -c "$pattern" "$SERVICE_LOG" || true)" "$pattern"
done
[ "$FAILED" -eq 0 ] && echo "PASS: every acknowledged record processed, no job left running" \
    || echo "FAIL: acknowledged records unprocessed or jobs left running (see above)"
exit "$FAILED"
