#!/usr/bin/env bash
# The soak's load for SECONDS (default 100), and the CPU each answered request costs between
# 40 s and the end (from /proc/<pid>/stat): a quick A/B of two builds.
# On SQLite (the default), one node. With SOAK_CPU_PG=1, two nodes over one PostgreSQL
# started here, and PostgreSQL's CPU too (its live processes and those that ended, such as
# autovacuum workers). RATE (default 25) and CHECKS (default 5000) set the load: below what
# the machine carries, so that the figure is the cost of the work and not of a backlog.
# Usage: bash bench/soak-cpu.sh [BINARY] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release --bin seatkeeper --example soak >/dev/null 2>&1 || cargo build --release --bin seatkeeper --example soak
BIN=${1:-target/release/seatkeeper}
SECS=${2:-100}
RATE=${RATE:-25}
CHECKS=${CHECKS:-5000}
W=$(mktemp -d)
PIDS=()
PGPORT=23470
PGDATA=/tmp/seatkeeper-soak-cpu-pg
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${SOAK_CPU_PG:-}" = 1 ]; then
    SEATKEEPER_TEST_PGPORT=$PGPORT SEATKEEPER_TEST_PGDATA=$PGDATA bash .ci/postgres.sh stop >/dev/null 2>&1 || true
    rm -rf "$PGDATA"
  fi
  rm -rf "$W"
}
trap cleanup EXIT
start() { # start LOG DATABASE: the server's pid is ${PIDS[-1]}, its URL $BASE
  SEATKEEPER_ADMIN_TOKEN=soak-admin-token SEATKEEPER_LOG=warn,seatkeeper=info "$BIN" serve --listen 127.0.0.1:0 \
    --database "$2" --rate-limit 100000000 --rate-burst 100000000 \
    --app-rate-limit 100000000 --app-rate-burst 100000000 >"$1" 2>&1 &
  PIDS+=("$!")
  wait_listen "$1"
}
# CPU ticks of a process (user + system).
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# CPU ticks of PostgreSQL: its live processes, and the ended children the postmaster reaped.
pg_ticks() {
  local pm t p
  pm=$(head -1 "$PGDATA/postmaster.pid")
  t=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat")
  for p in $(pgrep -P "$pm"); do t=$((t + $(ticks "$p" 2>/dev/null || echo 0))); done
  echo "$t"
}
if [ "${SOAK_CPU_PG:-}" = 1 ]; then
  PG=$(SEATKEEPER_TEST_PGPORT=$PGPORT SEATKEEPER_TEST_PGDATA=$PGDATA bash .ci/postgres.sh start | tail -n1)
  start "$W/log1" "$PG"; B1=$BASE
  start "$W/log2" "$PG"; B2=$BASE
  BASES="$B1,$B2"
  WAL=()
else
  start "$W/log" "sqlite://$W/s.db"
  BASES=$BASE
  WAL=(--wal "$W/s.db-wal")
fi
PIDLIST=$(IFS=,; echo "${PIDS[*]}")
target/release/examples/soak --base "$BASES" --admin soak-admin-token --tenants 100 --rate "$RATE" --checks "$CHECKS" \
  --seconds "$SECS" --pids "$PIDLIST" --sample 10 "${WAL[@]}" >"$W/out" 2>"$W/err" &
S=$!
sleep 42
nodes() { local t=0 p; for p in "${PIDS[@]}"; do t=$((t + $(ticks "$p"))); done; echo $t; }
a=$(nodes); pa=0
[ "${SOAK_CPU_PG:-}" = 1 ] && pa=$(pg_ticks)
t0=$(date +%s)
wait $S
b=$(nodes); pb=0
[ "${SOAK_CPU_PG:-}" = 1 ] && pb=$(pg_ticks)
t1=$(date +%s)
# Requests answered per second over the 10-s samples from 50 s on (the intervals after 40 s).
read -r n k < <(grep -E '^t=' "$W/err" | awk -F'[ =s]' '$2 >= 50' | sed 's/.*answered=\([0-9]*\).*/\1/' \
  | awk '{ n += $1; k++ } END { print n + 0, k + 0 }')
hz=$(getconf CLK_TCK)
echo "| seatkeeper CPU (cores) | PostgreSQL CPU (cores) | answered/s | seatkeeper CPU µs per request | PostgreSQL CPU µs per request |"
echo "|---|---|---|---|---|"
awk -v t="$((b - a))" -v p="$((pb - pa))" -v hz="$hz" -v s="$((t1 - t0))" -v n="$n" -v k="$k" \
  'BEGIN { c = t / hz / s; q = p / hz / s; rate = n / (k * 10); printf "| %.2f | %.2f | %.0f | %.0f | %.0f |\n", c, q, rate, c * 1e6 / rate, q * 1e6 / rate }'
echo
head -8 "$W/out"
