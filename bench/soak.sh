#!/usr/bin/env bash
# Soak: TENANTS tenants, each sending an Entra-like mix (lookups by filter, creates, PATCHes,
# group member changes) at RATE requests/s, plus CHECKS entitlement checks/s, for SECONDS —
# first on SQLite (one node), then on two nodes over one PostgreSQL (started here). Reports
# p50/p99 per operation, errors, resident memory over time and the WAL's size
# (crates/server/examples/soak.rs drives it).
# Usage: bash bench/soak.sh [seconds] [tenants] [rate] [checks]   (SOAK_ONLY=sqlite or postgres: one phase;
#   SOAK_STEADY=USERS: each tenant's population held near USERS, leavers deleted as joiners come;
#   SOAK_NODE_THREADS=N: each server's request threads, TOKIO_WORKER_THREADS)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-600}
TENANTS=${2:-100}
RATE=${3:-25}
CHECKS=${4:-5000}
STEADY=()
# With a steady population the tenants grow for about two minutes first: memory growth is
# measured from 180 s on.
[ -n "${SOAK_STEADY:-}" ] && STEADY=(--steady "$SOAK_STEADY" --warm 180)
. bench/lib.sh
# BIN=path runs another build of the server (a profiling one, say); the driver is always built.
# Server and driver are built by one command: built apart, each build's features differ and
# each rebuilds the server's library.
BUILD=(--example soak)
[ -z "${BIN:-}" ] && BUILD=(--bin seatkeeper --example soak)
cargo build --release "${BUILD[@]}" >/dev/null 2>&1 || cargo build --release "${BUILD[@]}"
BIN=${BIN:-target/release/seatkeeper}
SOAK=target/release/examples/soak
WORK=$(mktemp -d)
PIDS=()
PGPORT=23450
PGDATA=/tmp/seatkeeper-soak-pg
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  SEATKEEPER_TEST_PGPORT=$PGPORT SEATKEEPER_TEST_PGDATA=$PGDATA bash .ci/postgres.sh stop >/dev/null 2>&1 || true
  rm -rf "$PGDATA"
  rm -rf "$WORK"
}
trap cleanup EXIT
ADMIN=soak-admin-token
LIFT=(--rate-limit 100000000 --rate-burst 100000000 --app-rate-limit 100000000 --app-rate-burst 100000000)

start() { # start LOG DB: the server's pid is ${PIDS[-1]}, its URL $BASE
  SEATKEEPER_ADMIN_TOKEN=$ADMIN SEATKEEPER_LOG=warn,seatkeeper=info env ${SOAK_NODE_THREADS:+TOKIO_WORKER_THREADS=$SOAK_NODE_THREADS} $BIN serve --listen 127.0.0.1:0 --database "$2" "${LIFT[@]}" >"$1" 2>&1 &
  PIDS+=("$!")
  wait_listen "$1"
}

if [ "${SOAK_ONLY:-}" != postgres ]; then
echo "== SQLite, one node: $TENANTS tenants × $RATE req/s + $CHECKS checks/s for $SECONDS_RUN s"
DB="sqlite://$WORK/soak.db"
start "$WORK/sqlite.log" "$DB"
$SOAK --base "$BASE" --admin "$ADMIN" --tenants "$TENANTS" --rate "$RATE" --checks "$CHECKS" \
  --seconds "$SECONDS_RUN" --pids "${PIDS[-1]}" --wal "$WORK/soak.db-wal" "${STEADY[@]}"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

fi
[ "${SOAK_ONLY:-}" = sqlite ] && exit 0

echo
echo "== PostgreSQL, two nodes: the same load, spread over both"
PG=$(SEATKEEPER_TEST_PGPORT=$PGPORT SEATKEEPER_TEST_PGDATA=$PGDATA bash .ci/postgres.sh start | tail -n1)
start "$WORK/pg1.log" "$PG"; P1=${PIDS[-1]}; B1=$BASE
start "$WORK/pg2.log" "$PG"; P2=${PIDS[-1]}; B2=$BASE
# PostgreSQL's WAL: what the run wrote (from the WAL position before and after) and what
# pg_wal holds at the end (checkpoints recycle it).
PSQL=(psql -h 127.0.0.1 -p "$PGPORT" -U postgres -d seatkeeper_test -XtAq)
command -v psql >/dev/null || PSQL[0]=$(ls /usr/lib/postgresql/*/bin/psql | tail -n1)
LSN=$("${PSQL[@]}" -c "SELECT pg_current_wal_lsn()")
$SOAK --base "$B1,$B2" --admin "$ADMIN" --tenants "$TENANTS" --rate "$RATE" --checks "$CHECKS" \
  --seconds "$SECONDS_RUN" --pids "$P1,$P2" "${STEADY[@]}"
"${PSQL[@]}" -F ' ' -c "SELECT 'PostgreSQL WAL: ' || pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), '$LSN')) \
  || ' written in the run, ' || (SELECT pg_size_pretty(sum(size)) FROM pg_ls_waldir()) || ' in pg_wal at the end'"
