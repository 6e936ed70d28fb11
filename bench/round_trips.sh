#!/usr/bin/env bash
# PostgreSQL round trips per SCIM request of the soak's mix (lookup by filter, create, PATCH,
# member add and remove), one request at a time, without and with the tenant's entitlement
# snapshot loaded (bench/round_trips.py). Starts its own PostgreSQL (installed if missing).
# Usage: bash bench/round_trips.sh [requests per operation]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
cargo build --release --bin seatkeeper >/dev/null 2>&1 || cargo build --release --bin seatkeeper
PGPORT=23480
PGDATA=/tmp/seatkeeper-trips-pg
cleanup() {
  SEATKEEPER_TEST_PGPORT=$PGPORT SEATKEEPER_TEST_PGDATA=$PGDATA bash .ci/postgres.sh stop >/dev/null 2>&1 || true
  rm -rf "$PGDATA"
}
trap cleanup EXIT
PG=$(SEATKEEPER_TEST_PGPORT=$PGPORT SEATKEEPER_TEST_PGDATA=$PGDATA bash .ci/postgres.sh start | tail -n1)
python3 bench/round_trips.py "$PG" --requests "$N"
