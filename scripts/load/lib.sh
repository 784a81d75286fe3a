# Shared by scripts/load-test.sh and scripts/repro-stuck-running.sh; source
# it, do not run it. The caller sets ROOT, PORT, PG_URL, WORKERS,
# HASH_ROUNDS, JOB_DELAY_MS and WORK (a scratch directory removed at exit)
# first, then calls `trap cleanup EXIT`, `need_tools` and `service_binary`.
# shellcheck shell=bash

BASE="http://127.0.0.1:${PORT}"
# Read by the callers.
# shellcheck disable=SC2034
LUA="$ROOT/scripts/load/post-record.lua"
# shellcheck disable=SC2034
CHECK="$ROOT/scripts/load/check_acked.py"
DB_PREFIX=${DB_PREFIX:-offload_load}
SERVICE_PID=""
PG_DATABASES=()

log() { printf '\n== %s\n' "$*" >&2; }

cleanup() {
    if [ -n "$SERVICE_PID" ] && kill -0 "$SERVICE_PID" 2>/dev/null; then
        kill -TERM "$SERVICE_PID" 2>/dev/null || true
        wait "$SERVICE_PID" 2>/dev/null || true
    fi
    for db in "${PG_DATABASES[@]}"; do
        psql "$PG_URL/postgres" -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}

# wrk (installed from the Debian package when missing), python3, curl.
need_tools() {
    if ! command -v wrk >/dev/null; then
        log "installing wrk (Debian package)"
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
        else
            echo "wrk is missing: install it (apt-get install wrk) and run again" >&2
            exit 2
        fi
    fi
    command -v python3 >/dev/null || { echo "python3 is needed for the crash check" >&2; exit 2; }
    command -v curl >/dev/null || { echo "curl is needed" >&2; exit 2; }
}

# Sets BIN: OFFLOAD_RECORDS_BIN, or a release build (honouring CARGO_TARGET_DIR).
service_binary() {
    if [ -n "${OFFLOAD_RECORDS_BIN:-}" ]; then
        BIN=$OFFLOAD_RECORDS_BIN
    else
        log "building offload-records (release)"
        cargo build --release -q -p offload-records
        BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/offload-records"
    fi
}

start_service() { # url logfile
    "$BIN" --database-url "$1" --listen "127.0.0.1:${PORT}" \
        --worker-concurrency "$WORKERS" --hash-rounds "$HASH_ROUNDS" \
        --job-delay-ms "$JOB_DELAY_MS" --log-format json >>"$2" 2>&1 &
    SERVICE_PID=$!
    for _ in $(seq 1 150); do
        if curl -fs -o /dev/null "$BASE/stats"; then return 0; fi
        kill -0 "$SERVICE_PID" 2>/dev/null || { echo "service exited; log:" >&2; tail -20 "$2" >&2; exit 1; }
        sleep 0.2
    done
    echo "service did not become ready in 30 s" >&2
    exit 1
}

stop_service() { # signal
    kill "-$1" "$SERVICE_PID" 2>/dev/null || true
    # SIGTERM: bounded by the service's shutdown timeout (10 s) plus margin.
    for _ in $(seq 1 300); do
        kill -0 "$SERVICE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVICE_PID" 2>/dev/null; then
        echo "service still running 30 s after SIG$1; killing it" >&2
        kill -KILL "$SERVICE_PID" 2>/dev/null || true
    fi
    wait "$SERVICE_PID" 2>/dev/null || true
    SERVICE_PID=""
}

fresh_database() { # backend name; sets DB_URL (not in a subshell, so cleanup sees the database)
    case "$1" in
    sqlite) DB_URL="sqlite://$WORK/$2.db" ;;
    postgres)
        local db="${DB_PREFIX}_$$_$2"
        psql "$PG_URL/postgres" -qAt -c "DROP DATABASE IF EXISTS $db" >/dev/null
        psql "$PG_URL/postgres" -qAt -c "CREATE DATABASE $db" >/dev/null
        PG_DATABASES+=("$db")
        # shellcheck disable=SC2034
        DB_URL="$PG_URL/$db"
        ;;
    esac
}

# Other processes on the machine skew every figure: show how busy it was.
load_average() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }
