#!/usr/bin/env bash
# Scale: (1) TENANTS tenants of USERS users each (default 10,000 × 100 = 1,000,000 users):
# start-up time, resident memory, CPU at idle, a cold tenant's first check, a scheduler pass;
# (2) one tenant of BIG users (default 1,000,000): userName lookups p50/p99, a plan change for
# all of them, and the entitlement snapshot's memory. Users are created through SCIM Bulk, the
# product's own write path (crates/server/examples/scale.rs). Release build, SQLite, loopback.
# Usage: bash bench/scale.sh [tenants] [users] [big]   (tenants 0 skips part 1)
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS=${1:-10000}
USERS=${2:-100}
BIG=${3:-1000000}
. bench/lib.sh
cargo build --release --bin seatkeeper --example scale >/dev/null 2>&1 || cargo build --release --bin seatkeeper --example scale
BIN=target/release/seatkeeper
SCALE=target/release/examples/scale
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # The servers' logs outlive the run: a failure is read from them.
  mkdir -p target/bench-logs && cp "$WORK"/*.log target/bench-logs/ 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ADMIN=scale-admin-token
LIFT=(--rate-limit 100000000 --rate-burst 100000000 --app-rate-limit 100000000 --app-rate-burst 100000000 --request-timeout 600)
start() { # start LOG DB: pid ${PIDS[-1]}, URL $BASE
  SEATKEEPER_ADMIN_TOKEN=$ADMIN SEATKEEPER_LOG=warn,seatkeeper=info $BIN serve --listen 127.0.0.1:0 --database "$2" "${LIFT[@]}" >"$1" 2>&1 &
  PIDS+=("$!")
  wait_listen "$1"
}
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ms() { date +%s%3N; }

if [ "$TENANTS" -gt 0 ]; then
echo "== $TENANTS tenants × $USERS users"
DB="sqlite://$WORK/many.db"
start "$WORK/seed.log" "$DB"
$SCALE seed --base "$BASE" --admin "$ADMIN" --tenants "$TENANTS" --users "$USERS" --out "$WORK/keys"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
T0=$(ms)
start "$WORK/many.log" "$DB"
until curl -sf "$BASE/readyz" >/dev/null; do sleep 0.05; done
T1=$(ms)
PID=${PIDS[-1]}
echo "start-up to ready: $((T1 - T0)) ms; resident memory $(rss_mb "$PID") MB; database $(du -m "$WORK/many.db" | cut -f1) MB"
sleep 5
C0=$(cpu_ticks "$PID"); sleep 60; C1=$(cpu_ticks "$PID")
HZ=$(getconf CLK_TCK)
echo "CPU at idle over 60 s: $(awk -v t=$((C1 - C0)) -v hz="$HZ" 'BEGIN {printf "%.2f", t / hz / 60 * 100}') % of a core"
$SCALE first-check --base "$BASE" --keys "$WORK/keys"
T0=$(ms); curl -sf -X POST -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/scheduler/run" >/dev/null; T1=$(ms)
echo "a scheduler pass over $TENANTS tenants: $((T1 - T0)) ms"
echo "resident memory after: $(rss_mb "$PID") MB"
kill "$PID"; wait "$PID" 2>/dev/null || true
echo
fi

echo "== one tenant of $BIG users"
DB="sqlite://$WORK/big.db"
start "$WORK/big.log" "$DB"
PID=${PIDS[-1]}
$SCALE seed --base "$BASE" --admin "$ADMIN" --tenants 1 --users "$BIG" --out "$WORK/bigkeys"
read -r _ T TOKEN KEY <"$WORK/bigkeys"
$SCALE lookups --base "$BASE" --token "$TOKEN" --users "$BIG" --requests 4000
# A fresh process: its memory before and after the tenant's snapshot is built.
kill "$PID"; wait "$PID" 2>/dev/null || true
start "$WORK/big2.log" "$DB"
PID=${PIDS[-1]}
until curl -sf "$BASE/readyz" >/dev/null; do sleep 0.05; done
sleep 2
BEFORE=$(rss_mb "$PID")
T0=$(ms)
curl -sf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d "{\"user\":\"user1@t0.example.com\",\"feature\":\"write\"}" "$BASE/api/v1/check" >/dev/null
T1=$(ms)
AFTER=$(rss_mb "$PID")
echo "first check (snapshot of $BIG users loaded): $((T1 - T0)) ms; resident memory $BEFORE → $AFTER MB (snapshot ≈ $((AFTER - BEFORE)) MB)"
T0=$(ms)
curl -sS -X PUT -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d '{"filter":"active eq true","product":"scale","plan":"enterprise","priority":1}' \
  "$BASE/api/v1/tenants/$T/rules/everyone" >"$WORK/change.json" || echo "no answer (curl exit $?)"
T1=$(ms)
echo "plan change pro → enterprise for $BIG users: $((T1 - T0)) ms ($(head -c 300 "$WORK/change.json"))"
echo "resident memory after: $(rss_mb "$PID") MB; database $(du -m "$WORK/big.db" | cut -f1) MB"
