#!/usr/bin/env bash
# Runs every test: unit, doc and integration tests against real PostgreSQL
# and real SQLite. PostgreSQL must listen on 127.0.0.1:5432 (trust auth);
# DATABASE_URL may point elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

# The dashboard's browser test drives Debian's Chromium through chromedriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing chromium and chromium-driver for the browser test" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "PostgreSQL is not answering on 127.0.0.1:5432; starting it" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

cargo test --workspace --all-targets --locked -- --test-threads=4
cargo test --workspace --doc --locked

# The chaos suite restarts PostgreSQL, so it runs alone, after the rest.
bash scripts/chaos.sh
