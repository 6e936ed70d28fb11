#!/usr/bin/env bash
# Report benchmark: GET /api/v1/usage (first page, sorted two ways, the CSV export) and the
# compliance report, over TENANTS tenants with two subscriptions each and USERS users per
# tenant (each user holds two licenses), on the release binary and SQLite, driven by wrk over
# loopback. Prints a table. Usage: bash bench/reports.sh [seconds] [tenants] [users]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
TENANTS=${2:-10000}
USERS=${3:-3}
. bench/lib.sh
need_wrk
cargo build --release --bin seatkeeper >/dev/null 2>&1 || cargo build --release --bin seatkeeper
BIN=target/release/seatkeeper
WORK=$(mktemp -d)
DB="sqlite://$WORK/bench.db"
ADMIN=bench-admin
SEATKEEPER_ADMIN_TOKEN=$ADMIN $BIN serve --listen 127.0.0.1:0 --database "$DB" \
  --rate-limit 100000000 --rate-burst 100000000 --max-body 67108864 >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$WORK"' EXIT
wait_listen "$WORK/server.log"
echo "seeding $TENANTS tenants × 2 subscriptions, $USERS users each…" >&2
START=$(date +%s)
python3 bench/seed_tenants.py "$BASE" "$ADMIN" "$TENANTS" "$USERS" >/dev/null
echo "seeded in $(( $(date +%s) - START )) s" >&2

run() { # name conns path
  local out line
  out=$(wrk -t2 -c"$2" -d"${DURATION}s" --timeout 10s -s bench/admin_get.lua "$BASE" -- "$ADMIN" "$3" 2>&1)
  line=$(echo "$out" | grep '^RESULT' || { echo "$out" >&2; echo "RESULT rps=0 p50_ms=0 p99_ms=0 requests=0 errors=-1"; })
  echo "$1|$2|$line"
}
RESULTS=()
RESULTS+=("$(run "usage, first page of 50 by name" 4 "/api/v1/usage?limit=50")")
RESULTS+=("$(run "usage, first page of 50 by idle, desc" 4 "/api/v1/usage?sort=idle&order=desc&limit=50")")
RESULTS+=("$(run "usage, every row as CSV" 2 "/api/v1/usage?format=csv")")
RESULTS+=("$(run "compliance report, every tenant" 2 "/api/v1/reports/compliance")")
RESULTS+=("$(run "tenant usage (one tenant)" 4 "/api/v1/tenants/$(curl -s -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/usage?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["usage"][0]["tenant"])')/usage")")
ROWS=$(curl -s -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/usage?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')

echo
echo "seatkeeper report benchmark — $(date -u +%Y-%m-%d), $(nproc) cores, release build, SQLite, wrk -t2 -d${DURATION}s over loopback"
echo "$TENANTS tenants, $ROWS subscriptions, $USERS users per tenant ($(( TENANTS * USERS * 2 )) licenses)"
echo
printf '| %-40s | %5s | %8s | %9s | %9s | %6s |\n' "request" "conns" "req/s" "p50 ms" "p99 ms" "errors"
printf '|%s|%s|%s|%s|%s|%s|\n' "------------------------------------------" "-------" "----------" "-----------" "-----------" "--------"
for r in "${RESULTS[@]}"; do
  IFS='|' read -r name conns line <<<"$r"
  rps=$(echo "$line" | grep -o 'rps=[0-9.]*' | cut -d= -f2)
  p50=$(echo "$line" | grep -o 'p50_ms=[0-9.]*' | cut -d= -f2)
  p99=$(echo "$line" | grep -o 'p99_ms=[0-9.]*' | cut -d= -f2)
  err=$(echo "$line" | grep -o 'errors=[-0-9]*' | cut -d= -f2)
  printf '| %-40s | %5s | %8.1f | %9.2f | %9.2f | %6s |\n' "$name" "$conns" "$rps" "$p50" "$p99" "$err"
done
