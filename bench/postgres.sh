#!/usr/bin/env bash
# SQLite and PostgreSQL side by side in one run (issue 17): create, get, PATCH and filter on one
# tenant and on four, CPU µs per request in seatkeeper and in PostgreSQL, PostgreSQL round trips
# per request, a plan change for a tenant's users, and two nodes on one PostgreSQL with the
# invariants checked after. Starts its own PostgreSQL (installed with apt-get if missing).
# Usage: bash bench/postgres.sh [seconds per run] [users per tenant] [--max-connections N]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
USERS=${2:-10000}
shift $(( $# > 2 ? 2 : $# ))
. bench/lib.sh
need_wrk
cargo build --release --bin seatkeeper --example scale >/dev/null 2>&1 || cargo build --release --bin seatkeeper --example scale
PGPORT=23460
PGDATA=/tmp/seatkeeper-bench-pg
cleanup() {
  SEATKEEPER_TEST_PGPORT=$PGPORT SEATKEEPER_TEST_PGDATA=$PGDATA bash .ci/postgres.sh stop >/dev/null 2>&1 || true
  rm -rf "$PGDATA"
}
trap cleanup EXIT
# PostgreSQL's default durability (fsync on, synchronous_commit on), unlike the tests'.
PG=$(SEATKEEPER_TEST_PG_DURABLE=1 SEATKEEPER_TEST_PGPORT=$PGPORT SEATKEEPER_TEST_PGDATA=$PGDATA bash .ci/postgres.sh start | tail -n1)
python3 bench/postgres.py "$PG" --seconds "$SECS" --users "$USERS" "$@"
