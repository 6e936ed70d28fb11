#!/usr/bin/env bash
# SCIM benchmark: the release binary on a temporary SQLite file, driven by wrk over loopback.
# Prints a table of req/s, p50 and p99 per scenario. Usage: bash bench/run.sh [seconds] [users]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
USERS=${2:-100000}
THREADS=${BENCH_WRK_THREADS:-2}
. bench/lib.sh
need_wrk
cargo build --release --bin seatkeeper --example read_ceiling >/dev/null 2>&1 || cargo build --release --bin seatkeeper --example read_ceiling
BIN=target/release/seatkeeper
WORK=$(mktemp -d)
DB="sqlite://$WORK/bench.db"
SYNC=${SEATKEEPER_SQLITE_SYNCHRONOUS:-NORMAL}
TENANT=$($BIN tenant create bench --database "$DB")
TOKEN=$($BIN token create --tenant "$TENANT" --database "$DB")
LOG="$WORK/server.log"
SEATKEEPER_LOG=warn $BIN serve --listen 127.0.0.1:0 --database "$DB" --rate-limit 100000000 --rate-burst 100000000 \
  --sqlite-synchronous "$SYNC" >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$WORK"' EXIT
SEATKEEPER_LOG=info
for _ in $(seq 1 100); do grep -q "listening on" "$LOG" 2>/dev/null && break; sleep 0.1; done
# The listen line is logged at info; with SEATKEEPER_LOG=warn we read the port from /proc instead.
PORT=""
for _ in $(seq 1 50); do
  PORT=$(ss -ltnp 2>/dev/null | grep "pid=$PID," | grep -o '127.0.0.1:[0-9]*' | head -1 | cut -d: -f2 || true)
  [ -n "$PORT" ] && break; sleep 0.1
done
BASE="http://127.0.0.1:$PORT"
echo "server pid $PID at $BASE, SQLite synchronous=$SYNC, database $WORK/bench.db" >&2

echo "seeding $USERS users through /Bulk…" >&2
SEED_START=$(date +%s.%N)
python3 bench/seed.py "$BASE" "$TOKEN" "$USERS" --emails
SEED_END=$(date +%s.%N)
SEED_RATE=$(python3 -c "print(f'{$USERS / ($SEED_END - $SEED_START):.0f}')")
curl -s -H "Authorization: Bearer $TOKEN" "$BASE/scim/v2/Users?count=1000&startIndex=$((USERS / 2))&attributes=id" \
  | python3 -c "import json,sys; [print(r['id']) for r in json.load(sys.stdin)['Resources']]" >"$WORK/ids.txt"

run() { # name connections script args...
  local name=$1 conns=$2 script=$3; shift 3
  local out
  out=$(wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --timeout 5s -s "bench/$script" "$BASE" -- "$@" 2>&1)
  local line
  line=$(echo "$out" | grep '^RESULT' || { echo "$out" >&2; echo "RESULT rps=0 p50_ms=0 p99_ms=0 requests=0 errors=-1"; })
  echo "$name $conns $line"
}

# Reads first, so they run against a tenant of exactly $USERS users; creates last.
RESULTS=()
RESULTS+=("$(run "get by id (GET /Users/{id})" 64 get.lua "$TOKEN" "$WORK/ids.txt")")
# The ceiling for get by id, in the same run: a bare axum handler reading the same rows from
# the same SQLite file (crates/server/examples/read_ceiling.rs), same wrk settings.
SK_BASE=$BASE
target/release/examples/read_ceiling "$WORK/bench.db" "$TENANT" >"$WORK/ceiling.log" 2>&1 &
CPID=$!
wait_listen "$WORK/ceiling.log"
CEILING="$(run "bare axum + rusqlite read (the ceiling)" 64 get.lua "$TOKEN" "$WORK/ids.txt")"
kill "$CPID"; wait "$CPID" 2>/dev/null || true
# The same reads with the rendered-user cache off: every read goes to SQLite, as a first read
# of each user (a reconciliation's) does. A second server on the same file.
$BIN serve --listen 127.0.0.1:0 --database "$DB" --rate-limit 100000000 --rate-burst 100000000 \
  --user-cache-mb 0 >"$WORK/nocache.log" 2>&1 &
NPID=$!
wait_listen "$WORK/nocache.log"
UNCACHED="$(run "get by id, cache off (--user-cache-mb 0)" 64 get.lua "$TOKEN" "$WORK/ids.txt")"
kill "$NPID"; wait "$NPID" 2>/dev/null || true
BASE=$SK_BASE
RESULTS+=("$(run "filter userName eq (in $USERS seeded)" 50 filter.lua "$TOKEN" "$USERS")")
RESULTS+=("$(run "PATCH active (Entra deprovision)" 32 patch.lua "$TOKEN" "$WORK/ids.txt")")
RESULTS+=("$(run "list page of 100 (random startIndex)" 16 list.lua "$TOKEN" "$USERS")")
RESULTS+=("$(run "list page of 100 (cursor, RFC 9865)" 16 cursor.lua "$TOKEN" "$WORK/ids.txt")")
RESULTS+=("$(run "create user (POST /Users)" 32 create.lua "$TOKEN" bench)")
RESULTS+=("$UNCACHED")
RESULTS+=("$CEILING")
TOTAL=$(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/scim/v2/Users?count=0" | python3 -c "import json,sys; print(json.load(sys.stdin)['totalResults'])")

echo
echo "seatkeeper SCIM benchmark — $(date -u +%Y-%m-%d), $(nproc) cores, release build, SQLite synchronous=$SYNC, wrk -t$THREADS -d${DURATION}s over loopback"
echo "tenant of $USERS users for the reads (seeded through /Bulk at $SEED_RATE users/s); $TOTAL users after the create run"
echo
printf '| %-38s | %5s | %10s | %9s | %9s | %7s |\n' "scenario" "conns" "req/s" "p50 ms" "p99 ms" "errors"
printf '|%s|%s|%s|%s|%s|%s|\n' "----------------------------------------" "-------" "------------" "-----------" "-----------" "---------"
for r in "${RESULTS[@]}"; do
  name=$(echo "$r" | sed 's/ [0-9]* RESULT.*//')
  conns=$(echo "$r" | grep -o ' [0-9]* RESULT' | awk '{print $1}')
  rps=$(echo "$r" | grep -o 'rps=[0-9.]*' | cut -d= -f2)
  p50=$(echo "$r" | grep -o 'p50_ms=[0-9.]*' | cut -d= -f2)
  p99=$(echo "$r" | grep -o 'p99_ms=[0-9.]*' | cut -d= -f2)
  err=$(echo "$r" | grep -o 'errors=[-0-9]*' | cut -d= -f2)
  printf '| %-38s | %5s | %10.0f | %9.2f | %9.2f | %7s |\n' "$name" "$conns" "$rps" "$p50" "$p99" "$err"
done

get_rps=$(echo "${RESULTS[0]}" | grep -o 'rps=[0-9.]*' | cut -d= -f2)
ceil_rps=$(echo "$CEILING" | grep -o 'rps=[0-9.]*' | cut -d= -f2)
unc_rps=$(echo "$UNCACHED" | grep -o 'rps=[0-9.]*' | cut -d= -f2)
python3 -c "print(f'get by id answers at {100 * $get_rps / $ceil_rps:.0f}% of the bare read ceiling (target: >= 90%); with the cache off, {100 * $unc_rps / $ceil_rps:.0f}%')"
