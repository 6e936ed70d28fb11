#!/usr/bin/env bash
# Entitlement check benchmark: the release binary on a temporary SQLite file over loopback.
#  1. POST /api/v1/check with an app key, 64 connections, random users of a tenant of USERS
#     licensed users (a feature granted, a feature lacking, a limit, in turn).
#  2. The machine's ceiling: a bare axum handler parsing the same body and answering from a
#     HashMap (crates/server/examples/check_ceiling.rs), same wrk settings.
#  Both in two layouts of the 2 cores: the default (2 request threads, wrk -t2: four busy
#  threads on two cores) and one request thread with wrk -t1 (TOKIO_WORKER_THREADS=1).
#  3. Resident memory of the server before and after the tenant's snapshot is loaded.
# The default run lasts 60 s: a full cycle of the per-minute last_seen writes.
# Usage: bash bench/checks.sh [seconds] [users]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-60}
USERS=${2:-100000}
CONNS=${BENCH_CONNS:-64}
. bench/lib.sh
need_wrk
cargo build --release --bin seatkeeper --example check_ceiling >/dev/null 2>&1 || cargo build --release --bin seatkeeper --example check_ceiling
BIN=target/release/seatkeeper
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

DB="sqlite://$WORK/checks.db"
T=$($BIN tenant create bench --database "$DB")
TOKEN=$($BIN token create --tenant "$T" --database "$DB")
KEY=$($BIN app-key create --tenant "$T" --name bench --database "$DB")
cat >"$WORK/model.toml" <<TOML
[[products]]
key = "workspace"
name = "Workspace"
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
[[tenants]]
id = "$T"
[[tenants.subscriptions]]
product = "workspace"
plan = "pro"
seats = $USERS
starts_at = "2026-01-01T00:00:00Z"
enforcement = "hard"
TOML
$BIN apply "$WORK/model.toml" --database "$DB" >/dev/null
SEATKEEPER_LOG=warn,seatkeeper=info $BIN serve --listen 127.0.0.1:0 --database "$DB" \
  --rate-limit 100000000 --rate-burst 100000000 ${BENCH_SERVER_ARGS:-} >"$WORK/server.log" 2>&1 &
PID=$!; PIDS+=("$PID")
wait_listen "$WORK/server.log"
echo "seeding $USERS licensed users through /Bulk…" >&2
python3 bench/seed.py "$BASE" "$TOKEN" "$USERS" --external-ids
RSS_BEFORE=$(rss_mb "$PID")
LOAD_START=$(date +%s.%N)
FIRST=$(curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"user":"seed0@bench.example","feature":"export"}' "$BASE/api/v1/check")
LOAD_END=$(date +%s.%N)
echo "$FIRST" | grep -q '"allowed":true' || { echo "unexpected first answer: $FIRST" >&2; exit 1; }
RSS_LOADED=$(rss_mb "$PID")

wrk_run() { # base wrk-threads -> RESULT line
  local out
  out=$(wrk -t"$2" -c"$CONNS" -d"${DURATION}s" --timeout 5s -s bench/check.lua "$1" -- "$KEY" "$USERS" 2>&1)
  echo "$out" | grep '^RESULT' || { echo "$out" >&2; echo "RESULT rps=0 p50_ms=0 p99_ms=0 requests=0 errors=-1"; }
}
start_seatkeeper() { # request threads
  TOKIO_WORKER_THREADS=$1 SEATKEEPER_LOG=warn,seatkeeper=info $BIN serve --listen 127.0.0.1:0 --database "$DB" \
    --rate-limit 100000000 --rate-burst 100000000 --app-rate-limit 100000000 --app-rate-burst 100000000 \
    ${BENCH_SERVER_ARGS:-} >"$WORK/server.log" 2>&1 &
  PID=$!; PIDS+=("$PID")
  wait_listen "$WORK/server.log"
  curl -s -o /dev/null -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d '{"user":"seed0@bench.example","feature":"export"}' "$BASE/api/v1/check"
}
RSS_AFTER=$(rss_mb "$PID")
kill "$PID"; wait "$PID" 2>/dev/null || true
field() { echo "$1" | grep -o "$2=[-0-9.]*" | cut -d= -f2; }
ROWS=()
for layout in "2 2" "1 1"; do
  set -- $layout
  echo "checks against seatkeeper ($1 request threads, wrk -t$2)…" >&2
  start_seatkeeper "$1"
  R=$(wrk_run "$BASE" "$2")
  [ "$1" = 2 ] && RSS_AFTER=$(rss_mb "$PID")
  kill "$PID"; wait "$PID" 2>/dev/null || true
  echo "checks against the bare axum ceiling ($1 request threads, wrk -t$2)…" >&2
  TOKIO_WORKER_THREADS=$1 target/release/examples/check_ceiling "$USERS" >"$WORK/ceiling.log" 2>&1 &
  CPID=$!; PIDS+=("$CPID")
  wait_listen "$WORK/ceiling.log"
  C=$(wrk_run "$BASE" "$2")
  kill "$CPID"; wait "$CPID" 2>/dev/null || true
  ROWS+=("$1|$2|$R|$C")
done

echo
echo "seatkeeper entitlement check benchmark — $(date -u +%Y-%m-%d), $(nproc) cores, release build, SQLite, loopback"
echo "wrk -c$CONNS -d${DURATION}s, POST /api/v1/check, random users of a tenant of $USERS licensed users"
echo
printf '| %-52s | %9s | %8s | %8s | %7s |\n' "server (request threads, wrk threads)" "checks/s" "p50 ms" "p99 ms" "errors"
printf '|%s|%s|%s|%s|%s|\n' "------------------------------------------------------" "-----------" "----------" "----------" "---------"
for row in "${ROWS[@]}"; do
  IFS='|' read -r w t R C <<<"$row"
  printf '| %-52s | %9.0f | %8.2f | %8.2f | %7s |\n' "seatkeeper ($w, wrk -t$t)" "$(field "$R" rps)" "$(field "$R" p50_ms)" "$(field "$R" p99_ms)" "$(field "$R" errors)"
  printf '| %-52s | %9.0f | %8.2f | %8.2f | %7s |\n' "bare axum + HashMap, the ceiling ($w, wrk -t$t)" "$(field "$C" rps)" "$(field "$C" p50_ms)" "$(field "$C" p99_ms)" "$(field "$C" errors)"
done
echo
for row in "${ROWS[@]}"; do
  IFS='|' read -r w t R C <<<"$row"
  python3 -c "print(f'seatkeeper ($w, wrk -t$t) answers at {100 * $(field "$R" rps) / $(field "$C" rps):.0f}% of the ceiling')"
done
echo "targets: >= 60,000 checks/s with p99 < 2 ms at 64 connections"
python3 -c "print(f'snapshot load on first check: {1000 * ($LOAD_END - $LOAD_START):.0f} ms for $USERS users')"
echo "resident memory: $RSS_BEFORE MB before the snapshot, $RSS_LOADED MB after loading it, $RSS_AFTER MB after the 2-thread run (target: < 200 MB)"
