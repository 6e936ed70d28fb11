#!/usr/bin/env bash
# Licensing benchmark: the release binary on a temporary SQLite file over loopback.
#  1. SCIM create throughput (wrk, POST /Users) for a tenant without licensing and for a
#     tenant whose every create is licensed in the same transaction (a hard subscription and
#     three rules, one reading nested groups).
#  2. Changes that re-decide every license of a 10,000-user tenant — a plan swap, a seat cut
#     to zero, seats bought back — each timed end to end (HTTP request to committed licenses,
#     audit entries and outbox events).
# Usage: bash bench/licensing.sh [seconds] [users]
# With BENCH_COMPARE="server flags" each round also runs the licensed creates on a server
# started with those flags, interleaved with the others (an A/B on one binary: for example
# BENCH_COMPARE="--usage-sample-seconds 0" measures what usage history costs).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
USERS=${2:-10000}
THREADS=${BENCH_WRK_THREADS:-2}
. bench/lib.sh
need_wrk
cargo build --release --bin seatkeeper >/dev/null 2>&1 || cargo build --release --bin seatkeeper
BIN=target/release/seatkeeper
WORK=$(mktemp -d)
ADMIN=bench-admin
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  [ -n "${BENCH_KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap stop_all EXIT

# Each measurement gets its own database and server, so neither run reads a file the other
# has grown.
start_server() { # database-url log [flags…] -> sets BASE
  local db=$1 log=$2
  shift 2
  # shellcheck disable=SC2068
  SEATKEEPER_ADMIN_TOKEN=$ADMIN SEATKEEPER_LOG=info $BIN serve --listen 127.0.0.1:0 --database "$db" \
    --rate-limit 100000000 --rate-burst 100000000 $@ >"$log" 2>&1 &
  PIDS+=($!)
  wait_listen "$log"
}
stop_server() { kill "${PIDS[-1]}" 2>/dev/null; wait "${PIDS[-1]}" 2>/dev/null || true; }

model() { # tenant seats plan rules(yes|no)
  cat <<TOML
[[products]]
key = "workspace"
name = "Workspace"
[[products.plans]]
key = "free"
rank = 0
features = ["docs.read"]
[[products.plans]]
key = "pro"
rank = 1
features = ["docs.read", "docs.write", "export"]
limits = { projects = 100 }
[[products.plans]]
key = "enterprise"
rank = 2
features = ["docs.read", "docs.write", "export", "sso"]
limits = { projects = 1000 }

[[tenants]]
id = "$1"
[[tenants.subscriptions]]
product = "workspace"
plan = "$3"
seats = $2
starts_at = "2026-01-01T00:00:00Z"
enforcement = "hard"
TOML
  if [ "$4" = yes ]; then cat <<TOML
[[tenants.rules]]
name = "engineering"
filter = 'groups.display eq "Engineering"'
product = "workspace"
plan = "enterprise"
priority = 20
[[tenants.rules]]
name = "managers"
filter = 'title co "Manager"'
product = "workspace"
plan = "pro"
priority = 10
[[tenants.rules]]
name = "everyone"
filter = 'userName pr'
product = "workspace"
plan = "free"
priority = 1
TOML
  fi
}

run() { # tenant-token prefix
  local out
  out=$(wrk -t"$THREADS" -c32 -d"${DURATION}s" --timeout 5s -s bench/create.lua "$BASE" -- "$1" "$2" 2>&1)
  echo "$out" | grep '^RESULT' || { echo "$out" >&2; echo "RESULT rps=0 p50_ms=0 p99_ms=0 requests=0 errors=-1"; }
}
field() { echo "$1" | grep -o "$2=[-0-9.]*" | cut -d= -f2; }

# Creates with and without licensing, ROUNDS rounds of one run each, each run on a fresh
# database and server (single runs on this machine vary by ±15 %).
ROUNDS=${BENCH_ROUNDS:-3}
create_run() { # label licensed(yes|no) [server flags…] -> RESULT line
  local db="sqlite://$WORK/$1.db" t tok
  t=$($BIN tenant create "$1" --database "$db")
  tok=$($BIN token create --tenant "$t" --database "$db")
  if [ "$2" = yes ]; then
    model "$t" 100000000 enterprise yes >"$WORK/$1.toml"
    $BIN apply "$WORK/$1.toml" --database "$db" >/dev/null
  fi
  # Nothing of an earlier run may still be on its way to disk while this one runs.
  sync
  local label=$1
  shift 2
  start_server "$db" "$WORK/$label.log" "$@"
  run "$tok" "$label"
  stop_server
  # Its file goes at once: the kernel then drops its dirty pages instead of writing a run's
  # hundreds of megabytes back during the next run (which would slow whichever side ran after
  # the side that wrote more).
  rm -f "$WORK/$label.db" "$WORK/$label.db-wal" "$WORK/$label.db-shm"
}
PLAIN_RS=(); LIC_RS=(); CMP_RS=()
COMPARE=${BENCH_COMPARE:-}
# The order alternates by round, so neither side always runs first.
for i in $(seq 1 "$ROUNDS"); do
  if [ $((i % 2)) = 1 ]; then
    echo "create without, then with licensing ($i/$ROUNDS)…" >&2
    PLAIN_RS+=("$(create_run "plain$i" no)")
    LIC_RS+=("$(create_run "licensed$i" yes)")
    if [ -n "$COMPARE" ]; then CMP_RS+=("$(create_run "compared$i" yes $COMPARE)"); fi
  else
    echo "create with, then without licensing ($i/$ROUNDS)…" >&2
    if [ -n "$COMPARE" ]; then CMP_RS+=("$(create_run "compared$i" yes $COMPARE)"); fi
    LIC_RS+=("$(create_run "licensed$i" yes)")
    PLAIN_RS+=("$(create_run "plain$i" no)")
  fi
done
median_run() { # RESULT lines -> the one with the median rps
  printf '%s\n' "$@" | awk '{for(i=1;i<=NF;i++) if ($i ~ /^rps=/) {split($i,a,"="); print a[2], $0}}' \
    | sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}' | cut -d' ' -f2-
}
PLAIN_R=$(median_run "${PLAIN_RS[@]}")
LIC_R=$(median_run "${LIC_RS[@]}")
ALL_PLAIN=$(for r in "${PLAIN_RS[@]}"; do printf '%.0f ' "$(field "$r" rps)"; done)
ALL_LIC=$(for r in "${LIC_RS[@]}"; do printf '%.0f ' "$(field "$r" rps)"; done)

DB="sqlite://$WORK/big.db"
BIG=$($BIN tenant create big --database "$DB")
BIG_TOKEN=$($BIN token create --tenant "$BIG" --database "$DB")
model "$BIG" "$USERS" pro no >"$WORK/big.toml"
$BIN apply "$WORK/big.toml" --database "$DB" >/dev/null
start_server "$DB" "$WORK/big.log"
echo "seeding $USERS licensed users through /Bulk…" >&2
SEED_START=$(date +%s.%N)
python3 bench/seed.py "$BASE" "$BIG_TOKEN" "$USERS"
SEED_END=$(date +%s.%N)
SEED_RATE=$(python3 -c "print(f'{$USERS / ($SEED_END - $SEED_START):.0f}')")

change() { # label plan seats
  local body out
  body=$(printf '{"plan":"%s","seats":%s,"starts_at":"2026-01-01T00:00:00Z","enforcement":"hard"}' "$2" "$3")
  out=$(curl -s -o "$WORK/change.json" -w '%{time_total}' -X PUT -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d "$body" "$BASE/api/v1/tenants/$BIG/subscriptions/workspace")
  local n
  n=$(python3 -c "import json; o=json.load(open('$WORK/change.json'))['licenses']; print(sum(o.values()))")
  printf '| %-44s | %8s | %9.0f |\n' "$1" "$n" "$(python3 -c "print($out * 1000)")"
}

echo
echo "seatkeeper licensing benchmark — $(date -u +%Y-%m-%d), $(nproc) cores, release build, SQLite, loopback"
echo
echo "SCIM create throughput (wrk -t$THREADS -c32 -d${DURATION}s, POST /Users; median of $ROUNDS runs each):"
echo
printf '| %-44s | %9s | %8s | %8s | %7s |\n' "tenant" "req/s" "p50 ms" "p99 ms" "errors"
printf '|%s|%s|%s|%s|%s|\n' "----------------------------------------------" "-----------" "----------" "----------" "---------"
printf '| %-44s | %9.0f | %8.2f | %8.2f | %7s |\n' "without licensing" "$(field "$PLAIN_R" rps)" "$(field "$PLAIN_R" p50_ms)" "$(field "$PLAIN_R" p99_ms)" "$(field "$PLAIN_R" errors)"
printf '| %-44s | %9.0f | %8.2f | %8.2f | %7s |\n' "with licensing (hard seats, 3 rules)" "$(field "$LIC_R" rps)" "$(field "$LIC_R" p50_ms)" "$(field "$LIC_R" p99_ms)" "$(field "$LIC_R" errors)"
echo
echo "runs without licensing: $ALL_PLAIN req/s; with licensing: $ALL_LIC req/s"
# Each round runs the two back to back, so the machine's drift (±15 % over minutes here)
# mostly cancels in the round's own ratio; the median of those is the figure to judge by.
python3 - "$ALL_PLAIN" "$ALL_LIC" <<'PY'
import statistics, sys
plain = [float(x) for x in sys.argv[1].split()]
lic = [float(x) for x in sys.argv[2].split()]
pairs = [100 * l / p for p, l in zip(plain, lic) if p > 0]
print()
print("per round, with licensing / without: " + " ".join(f"{r:.0f}%" for r in pairs))
print(f"with licensing keeps {statistics.median(pairs):.0f}% of the create throughput without "
      f"(median of the rounds' ratios; ratio of the medians: {100 * statistics.median(lic) / statistics.median(plain):.0f}%; target: at least 80%)")
PY
if [ -n "$COMPARE" ]; then
  ALL_CMP=$(for r in "${CMP_RS[@]}"; do printf '%.0f ' "$(field "$r" rps)"; done)
  echo
  echo "licensed creates on a server started with \"$COMPARE\": $ALL_CMP req/s"
  python3 - "$ALL_LIC" "$ALL_CMP" "$COMPARE" <<'PY'
import statistics, sys
lic = [float(x) for x in sys.argv[1].split()]
cmp_ = [float(x) for x in sys.argv[2].split()]
pairs = [100 * (l / c - 1) for l, c in zip(lic, cmp_) if c > 0]
print("per round, default / with those flags: " + " ".join(f"{r:+.1f}%" for r in pairs))
print(f"licensed creates, default vs \"{sys.argv[3]}\": median {statistics.median(lic):.0f} vs "
      f"{statistics.median(cmp_):.0f} req/s ({100 * (statistics.median(lic) / statistics.median(cmp_) - 1):+.1f}%); "
      f"median of the rounds' differences {statistics.median(pairs):+.1f}%")
PY
fi
echo
echo "Re-deciding every license of a $USERS-user tenant (seeded at $SEED_RATE users/s, each licensed on create),"
echo "timed from request to commit of licenses, audit entries and outbox events:"
echo
printf '| %-44s | %8s | %9s |\n' "change (PUT …/subscriptions/workspace)" "licenses" "ms"
printf '|%s|%s|%s|\n' "----------------------------------------------" "----------" "-----------"
change "plan swap pro → enterprise" enterprise "$USERS"
change "seat cut $USERS → 0 (everyone waitlisted)" enterprise 0
change "seats bought back 0 → $USERS (all promoted)" enterprise "$USERS"
change "plan swap enterprise → pro" pro "$USERS"
