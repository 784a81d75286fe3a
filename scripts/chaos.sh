#!/usr/bin/env bash
# Chaos suite: SIGKILLs worker processes during a large drain and restarts
# PostgreSQL mid-drain, one test at a time (they disturb the whole server).
# Bounded: each test fails rather than waits past a few minutes.
# OFFLOAD_CHAOS_JOBS sets the drain size (default 100000).
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
cargo test -p offload --test chaos --locked -- --ignored --test-threads=1 --nocapture \
  repeated_sigkill_during_a_large_drain_loses_nothing workers_reconnect_after_postgres_restarts_mid_drain
