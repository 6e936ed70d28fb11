#!/usr/bin/env bash
# Console benchmark: the overview with TENANTS tenants of two subscriptions each (first page
# by name, a page sorted by utilisation), and a tenant page with a year of hourly history, on
# the release binary and SQLite, signed in, driven by wrk over loopback; then the storage a
# year of hourly history takes. Usage: bash bench/console.sh [seconds] [tenants] [users]
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
python3 bench/seed_tenants.py "$BASE" "$ADMIN" "$TENANTS" "$USERS" >/dev/null
TENANT=$(curl -s -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/usage?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["usage"][0]["tenant"])')
echo "a year of hourly history for $TENANT…" >&2
python3 bench/seed_history.py "$WORK/bench.db" "$TENANT" bench-a,bench-b 365 >/dev/null
COOKIE=$(python3 bench/console_login.py "$BASE" "$ADMIN")

run() { # name conns path
  local out line
  out=$(wrk -t2 -c"$2" -d"${DURATION}s" --timeout 10s -s bench/cookie_get.lua "$BASE" -- "$COOKIE" "$3" 2>&1)
  line=$(echo "$out" | grep '^RESULT' || { echo "$out" >&2; echo "RESULT rps=0 p50_ms=0 p99_ms=0 requests=0 errors=-1"; })
  echo "$1|$2|$line"
}
RESULTS=()
RESULTS+=("$(run "overview, first page by name" 2 "/ui")")
RESULTS+=("$(run "overview, searched (\"Tenant 0999\")" 2 "/ui?q=Tenant+0999")")
RESULTS+=("$(run "overview, sorted by utilisation" 2 "/ui?sort=utilisation&order=desc")")
RESULTS+=("$(run "overview, sorted by idle" 2 "/ui?sort=idle&order=desc")")
# The same sort while seats change: 20 subscriptions a second, each one transaction.
python3 bench/seat_churn.py "$BASE" "$ADMIN" "$((DURATION + 2))" 20 >"$WORK/churn.txt" &
CHURN=$!
sleep 1
RESULTS+=("$(run "overview, by utilisation, 20 seat changes/s" 2 "/ui?sort=utilisation&order=desc")")
wait $CHURN
echo "seat changes during that run: $(cat "$WORK/churn.txt")" >&2
RESULTS+=("$(run "tenant page, 365 days of hourly history" 2 "/ui/tenants/$TENANT?days=365")")
RESULTS+=("$(run "tenant page, 30 days (hourly buckets)" 2 "/ui/tenants/$TENANT?days=30")")

# Storage: hourly points for 100 subscriptions over a year, every hour a change (the worst
# case: an unchanged hour stores nothing), measured as the growth of a fresh SQLite file.
python3 - "$WORK" <<'PY'
import os, sqlite3, sys
work = sys.argv[1]
path = os.path.join(work, "history-size.db")
db = sqlite3.connect(path)
db.execute("CREATE TABLE usage_points (tenant_id TEXT NOT NULL, product TEXT NOT NULL, at BIGINT NOT NULL, seats BIGINT NOT NULL, active BIGINT NOT NULL, waitlisted BIGINT NOT NULL, overage BIGINT NOT NULL, idle BIGINT NOT NULL, PRIMARY KEY (tenant_id, product, at)) WITHOUT ROWID")
db.execute("CREATE INDEX usage_points_at ON usage_points (at)")
db.commit()
base = os.path.getsize(path)
import uuid
subs = 100
for s in range(subs):
    t = str(uuid.uuid4())
    db.executemany("INSERT INTO usage_points VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   ((t, "workspace", 1_700_000_000 + h * 3600, 500, 300 + h % 50, h % 7, 0, h % 30) for h in range(8760)))
db.commit()
db.execute("VACUUM")
size = os.path.getsize(path) - base
per_sub = size / subs
print(f"STORAGE per_subscription_year_bytes={per_sub:.0f} ten_thousand_subscriptions_gb={per_sub * 10000 / 1e9:.2f}")
PY
echo
echo "seatkeeper console benchmark — $(date -u +%Y-%m-%d), $(nproc) cores, release build, SQLite, wrk -t2 -d${DURATION}s over loopback"
echo "$TENANTS tenants, 2 subscriptions each, $USERS users per tenant; the tenant page's tenant has 365 days of hourly points for both"
echo
printf '| %-42s | %5s | %8s | %9s | %9s | %6s |\n' "page" "conns" "req/s" "p50 ms" "p99 ms" "errors"
printf '|%s|%s|%s|%s|%s|%s|\n' "--------------------------------------------" "-------" "----------" "-----------" "-----------" "--------"
for r in "${RESULTS[@]}"; do
  IFS='|' read -r name conns line <<<"$r"
  rps=$(echo "$line" | grep -o 'rps=[0-9.]*' | cut -d= -f2)
  p50=$(echo "$line" | grep -o 'p50_ms=[0-9.]*' | cut -d= -f2)
  p99=$(echo "$line" | grep -o 'p99_ms=[0-9.]*' | cut -d= -f2)
  err=$(echo "$line" | grep -o 'errors=[-0-9]*' | cut -d= -f2)
  printf '| %-42s | %5s | %8.1f | %9.2f | %9.2f | %6s |\n' "$name" "$conns" "$rps" "$p50" "$p99" "$err"
done
