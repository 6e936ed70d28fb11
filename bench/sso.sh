#!/usr/bin/env bash
# OIDC sign-in benchmark: the release binary on a temporary SQLite file over loopback, a
# local issuer (crates/server/examples/oidc_issuer.rs) serving its JWKS.
#  1. Returning users: USERS users seeded through SCIM, each signing in with an RS256 ID
#     token (keys cached after the first): verification, lookup, the sign-in's transaction
#     (count, activity, user.login), entitlements and a signed token — wrk -c CONNS.
#  2. The same with ES256 and EdDSA tokens.
#  3. First sign-ins: new users created just in time (licensed in the create's transaction).
# Usage: bash bench/sso.sh [seconds] [users] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20}
USERS=${2:-10000}
CONNS=${3:-32}
. bench/lib.sh
need_wrk
cargo build --release --bin seatkeeper --example oidc_issuer >/dev/null 2>&1 || cargo build --release --bin seatkeeper --example oidc_issuer
BIN=target/release/seatkeeper
ISSUER=target/release/examples/oidc_issuer
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

DB="sqlite://$WORK/sso.db"
NOW=$(date -u +%s)
CLOCK=$(date -u -d "@$NOW" +%Y-%m-%dT%H:%M:%SZ)
T=$($BIN tenant create bench --database "$DB")
TOKEN=$($BIN token create --tenant "$T" --database "$DB")
KEY=$($BIN app-key create --tenant "$T" --name bench --database "$DB")
cat >"$WORK/model.toml" <<TOML
[[products]]
key = "workspace"
[[products.plans]]
key = "pro"
rank = 1
features = ["export"]
[[products.roles]]
key = "member"
permissions = ["docs.read"]
[[tenants]]
id = "$T"
[[tenants.subscriptions]]
product = "workspace"
plan = "pro"
seats = $((USERS * 4))
starts_at = "2026-01-01T00:00:00Z"
[[tenants.role_rules]]
name = "everyone"
filter = "active eq true"
product = "workspace"
role = "member"
TOML
$BIN apply "$WORK/model.toml" --database "$DB" >/dev/null
ADMIN=bench-admin-token
SEATKEEPER_ADMIN_TOKEN=$ADMIN SEATKEEPER_LOG=warn,seatkeeper=info $BIN serve --listen 127.0.0.1:0 --database "$DB" \
  --rate-limit 100000000 --rate-burst 100000000 --app-rate-limit 100000000 --app-rate-burst 100000000 \
  --test-clock "$CLOCK" >"$WORK/server.log" 2>&1 &
PID=$!; PIDS+=("$PID")
wait_listen "$WORK/server.log"
echo "seeding $USERS users through /Bulk…" >&2
python3 bench/seed.py "$BASE" "$TOKEN" "$USERS" --emails --external-ids

issuer() { # alg first count file -> sets ISSUER_URL
  "$ISSUER" "$1" "$2" "$3" "$4" "$NOW" >"$WORK/issuer-$1.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 600); do grep -q "^issuer " "$WORK/issuer-$1.log" 2>/dev/null && break; sleep 0.1; done
  ISSUER_URL=$(grep "^issuer " "$WORK/issuer-$1.log" | cut -d' ' -f2)
}
connect() { # issuer url
  curl -sf -X PUT -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d "{\"issuer\": \"$1\", \"audiences\": [\"bench\"]}" "$BASE/api/v1/tenants/$T/sso" >/dev/null
}

run() { # tokens-file -> RESULT line
  local out
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 5s -s bench/login.lua "$BASE" -- "$KEY" "$1" 2 2>&1)
  echo "$out" | grep '^RESULT' || { echo "$out" >&2; echo "RESULT rps=0 p50_ms=0 p99_ms=0 requests=0 errors=-1"; }
}
field() { echo "$1" | grep -o "$2=[-0-9.]*" | cut -d= -f2; }
ROWS=()
for alg in ${BENCH_ALGS-RS256 ES256 EdDSA}; do
  echo "returning users, $alg…" >&2
  issuer "$alg" 0 "$USERS" "$WORK/$alg.txt"
  connect "$ISSUER_URL"
  FIRST=$(curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d "{\"id_token\": \"$(head -1 "$WORK/$alg.txt")\"}" "$BASE/api/v1/sso/login")
  echo "$FIRST" | grep -q '"created":false' || { echo "unexpected first sign-in: $FIRST" >&2; exit 1; }
  ROWS+=("returning users, $alg|$(run "$WORK/$alg.txt")")
done
echo "first sign-ins (just in time), EdDSA…" >&2
# Enough new users that none signs in twice within the run.
issuer EdDSA "$USERS" $((DURATION * 8000)) "$WORK/jit.txt"
connect "$ISSUER_URL"
R=$(run "$WORK/jit.txt")
ROWS+=("first sign-ins (JIT create), EdDSA|$R")
CREATED=$(sqlite3 "$WORK/sso.db" "SELECT COUNT(*) FROM sso_managed" 2>/dev/null || echo "?")

echo
echo "seatkeeper OIDC sign-in benchmark — $(date -u +%Y-%m-%d), $(nproc) cores, release build, SQLite, loopback"
echo "wrk -t2 -c$CONNS -d${DURATION}s, POST /api/v1/sso/login, a tenant of $USERS users; keys cached after the first sign-in"
echo
printf '| %-40s | %9s | %8s | %8s | %7s |\n' "scenario" "logins/s" "p50 ms" "p99 ms" "errors"
printf '|%s|%s|%s|%s|%s|\n' "------------------------------------------" "-----------" "----------" "----------" "---------"
for row in "${ROWS[@]}"; do
  IFS='|' read -r name R <<<"$row"
  printf '| %-40s | %9.0f | %8.2f | %8.2f | %7s |\n' "$name" "$(field "$R" rps)" "$(field "$R" p50_ms)" "$(field "$R" p99_ms)" "$(field "$R" errors)"
done
echo
echo "users created just in time during the run: $CREATED (of $((DURATION * 8000)) tokens: each login in that row created its user)"
echo "target: p99 < 10 ms on SQLite, keys cached"
