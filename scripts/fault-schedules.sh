#!/usr/bin/env bash
# Randomized fault schedules (crates/offload/tests/fault_schedules.rs) at
# scale: SCHEDULES per backend (default 500, so 1,000 in all), PostgreSQL
# and SQLite side by side. Each schedule's event history is written to
# target/tmp/fault-histories/; the run prints, per backend, the schedules
# passed and failed, the first seed, and the jobs, attempts and faults.
# Bounded: each backend fails rather than run past SECONDS_LIMIT (default
# 3600). Replay one schedule with SEED=<seed> SCHEDULES=1.
#   KINDS=half-open,cut-half-open   only these fault kinds (names in the test)
set -euo pipefail
cd "$(dirname "$0")/.."
export OFFLOAD_FAULT_SCHEDULES="${SCHEDULES:-500}"
export OFFLOAD_FAULT_SECONDS="${SECONDS_LIMIT:-3600}"
if [ -n "${SEED:-}" ]; then export OFFLOAD_FAULT_SEED="$SEED"; fi
if [ -n "${KINDS:-}" ]; then export OFFLOAD_FAULT_KINDS="$KINDS"; fi
cargo test -p offload --test fault_schedules --locked -- --nocapture 2>&1 |
  grep -E '^fault schedules|^seed [0-9]+:|panicked|^test result'
