#!/usr/bin/env bash
# Permission checks against feature checks: the release binary on a temporary SQLite file
# over loopback, a tenant of USERS licensed users who all hold the admin role (a role rule).
# Rounds alternate: feature checks (granted, lacking, a limit), then permission checks
# (granted, lacking), wrk -t2 -c CONNS each; the table shows every round and the medians.
# Usage: bash bench/permissions.sh [seconds] [users] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15}
USERS=${2:-100000}
ROUNDS=${3:-3}
CONNS=${BENCH_CONNS:-64}
. bench/lib.sh
need_wrk
cargo build --release --bin seatkeeper >/dev/null 2>&1 || cargo build --release --bin seatkeeper
BIN=target/release/seatkeeper
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

DB="sqlite://$WORK/perm.db"
T=$($BIN tenant create bench --database "$DB")
TOKEN=$($BIN token create --tenant "$T" --database "$DB")
KEY=$($BIN app-key create --tenant "$T" --name bench --database "$DB")
cat >"$WORK/model.toml" <<TOML
[[products]]
key = "workspace"
[[products.plans]]
key = "free"
rank = 0
features = ["docs.read"]
limits = { projects = 3 }
[[products.plans]]
key = "pro"
rank = 1
features = ["docs.read", "docs.write", "export"]
limits = { projects = 100 }
[[products.roles]]
key = "admin"
permissions = ["billing.manage", "users.invite"]
[[products.roles]]
key = "viewer"
permissions = ["docs.read"]
requires_license = false
[[tenants]]
id = "$T"
[[tenants.subscriptions]]
product = "workspace"
plan = "pro"
seats = $USERS
starts_at = "2026-01-01T00:00:00Z"
[[tenants.role_rules]]
name = "everyone"
filter = "active eq true"
product = "workspace"
role = "admin"
TOML
$BIN apply "$WORK/model.toml" --database "$DB" >/dev/null
TOKIO_WORKER_THREADS=2 SEATKEEPER_LOG=warn,seatkeeper=info $BIN serve --listen 127.0.0.1:0 --database "$DB" \
  --rate-limit 100000000 --rate-burst 100000000 --app-rate-limit 100000000 --app-rate-burst 100000000 \
  >"$WORK/server.log" 2>&1 &
PID=$!; PIDS+=("$PID")
wait_listen "$WORK/server.log"
echo "seeding $USERS licensed users with the admin role through /Bulk…" >&2
python3 bench/seed.py "$BASE" "$TOKEN" "$USERS"
FIRST=$(curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"user":"seed0@bench.example","permission":"billing.manage"}' "$BASE/api/v1/check")
echo "$FIRST" | grep -q '"allowed":true' || { echo "unexpected first answer: $FIRST" >&2; exit 1; }

run() { # mode -> RESULT line
  local out
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 5s -s bench/check.lua "$BASE" -- "$KEY" "$USERS" /api/v1/check "$1" 2>&1)
  echo "$out" | grep '^RESULT' || { echo "$out" >&2; echo "RESULT rps=0 p50_ms=0 p99_ms=0 requests=0 errors=-1"; }
}
field() { echo "$1" | grep -o "$2=[-0-9.]*" | cut -d= -f2; }
F=(); P=(); ROWS=()
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r: features…" >&2
  R=$(run features); F+=("$(field "$R" rps)"); ROWS+=("$r|features|$R")
  echo "round $r: permissions…" >&2
  R=$(run permissions); P+=("$(field "$R" rps)"); ROWS+=("$r|permissions|$R")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
MF=$(median "${F[@]}"); MP=$(median "${P[@]}")

echo
echo "seatkeeper permission vs feature checks — $(date -u +%Y-%m-%d), $(nproc) cores, release build, SQLite, loopback"
echo "wrk -t2 -c$CONNS -d${DURATION}s, POST /api/v1/check, random users of a tenant of $USERS licensed users, each an admin"
echo
printf '| %5s | %-11s | %9s | %8s | %8s | %7s |\n' "round" "checks" "checks/s" "p50 ms" "p99 ms" "errors"
printf '|%s|%s|%s|%s|%s|%s|\n' "-------" "-------------" "-----------" "----------" "----------" "---------"
for row in "${ROWS[@]}"; do
  IFS='|' read -r r kind R <<<"$row"
  printf '| %5s | %-11s | %9.0f | %8.2f | %8.2f | %7s |\n' "$r" "$kind" "$(field "$R" rps)" "$(field "$R" p50_ms)" "$(field "$R" p99_ms)" "$(field "$R" errors)"
done
echo
python3 -c "print(f'medians: features {$MF:,.0f}/s, permissions {$MP:,.0f}/s; permissions at {100 * $MP / $MF:.1f}% of features (target: within 5%)')"
