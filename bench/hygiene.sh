#!/usr/bin/env bash
# Seat hygiene benchmark (issue 13): a reclaim pass over a 100,000-user tenant with 10,000
# idle seats and 10,000 people waiting, on the release binary and SQLite. The server runs on a
# test clock (so a month can pass); users are seeded through SCIM /Bulk, 80,000 of the 90,000
# seat holders are reported active through POST /api/v1/activity a month later, and the
# scheduler pass (POST /api/v1/scheduler/run?tenant=) is timed end to end: 10,000 licenses
# reclaimed and 10,000 waiters promoted, with their audit records and events, in one
# transaction.
# Then an import of every user's seat (USERS rows): over HTTP in one transaction, and through
# the CLI in parts; then `reconcile --check` of the tenant.
# Usage: bash bench/hygiene.sh [users] [idle]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-100000}
IDLE=${2:-10000}
. bench/lib.sh
cargo build --release --bin seatkeeper >/dev/null 2>&1 || cargo build --release --bin seatkeeper
BIN=target/release/seatkeeper
WORK=$(mktemp -d)
DB="sqlite://$WORK/hygiene.db"
ADMIN=bench-admin
trap 'kill $PID 2>/dev/null; rm -rf "$WORK"' EXIT
T=$($BIN tenant create Hygiene --database "$DB")
TOK=$($BIN token create --tenant "$T" --database "$DB")
KEY=$($BIN app-key create --tenant "$T" --database "$DB")
SEATS=$((USERS - IDLE))
cat >"$WORK/model.toml" <<TOML
[[products]]
key = "workspace"
[[products.plans]]
key = "pro"
rank = 1
features = ["export"]
[[tenants]]
id = "$T"
[[tenants.subscriptions]]
product = "workspace"
plan = "pro"
seats = $SEATS
starts_at = "2026-01-01T00:00:00Z"
enforcement = "hard"
idle_after_days = 30
on_idle = "reclaim"
TOML
$BIN apply "$WORK/model.toml" --database "$DB" >/dev/null
SEATKEEPER_ADMIN_TOKEN=$ADMIN $BIN serve --listen 127.0.0.1:0 --database "$DB" --test-clock 2026-11-01T00:00:00Z \
  --rate-limit 100000000 --rate-burst 100000000 >"$WORK/server.log" 2>&1 &
PID=$!
wait_listen "$WORK/server.log"
echo "seeding $USERS users ($SEATS seats, $IDLE wait)…" >&2
python3 bench/seed.py "$BASE" "$TOK" "$USERS"
python3 - "$BASE" "$ADMIN" "$KEY" "$T" "$USERS" "$IDLE" "$WORK/import.csv" <<'PY'
import json, sys, time, urllib.request
base, admin, key, tenant, users, idle = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
def call(method, path, token, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    t = time.monotonic()
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.load(r)
    return out, time.monotonic() - t
call("POST", "/api/v1/clock", admin, {"advance_seconds": 31 * 86400})
active = users - 2 * idle  # the seat holders who stay active; the next `idle` holders go idle
t0 = time.monotonic()
for start in range(0, active, 10000):
    names = [f"seed{i}@bench.example" for i in range(start, min(start + 10000, active))]
    out, _ = call("POST", "/api/v1/activity", key, {"users": names})
    assert out["recorded"] == len(names), out
report_s = time.monotonic() - t0
usage, _ = call("GET", f"/api/v1/tenants/{tenant}/usage", admin)
before = usage["subscriptions"][0]
preview, preview_s = call("GET", f"/api/v1/tenants/{tenant}/idle?preview=reclaim&limit=10", admin)
run, run_s = call("POST", f"/api/v1/scheduler/run?tenant={tenant}", admin)
usage, _ = call("GET", f"/api/v1/tenants/{tenant}/usage", admin)
after = usage["subscriptions"][0]
o = run["tenants"].get(tenant, {})
print()
print(f"seatkeeper hygiene benchmark — {time.strftime('%Y-%m-%d', time.gmtime())}, release build, SQLite, loopback")
print()
print(f"| step | figures | seconds |")
print(f"|---|---|---|")
print(f"| activity reports, {active:,} users in batches of 10,000 | | {report_s:.2f} |")
print(f"| preview of the next pass (`/idle?preview=reclaim`) | {preview['total']:,} would be reclaimed | {preview_s:.2f} |")
print(f"| **reclaim pass** ({users:,} users, {before['active']:,} seats held, {before['waitlisted']:,} waiting) | {o.get('reclaimed', 0):,} reclaimed, {o.get('promoted', 0):,} promoted | **{run_s:.2f}** |")
print()
print(f"before: active {before['active']}, waitlisted {before['waitlisted']}; after: active {after['active']}, waitlisted {after['waitlisted']}")
assert o.get("reclaimed") == idle and o.get("promoted") == idle, run
# An import of every user's seat, 2015 onwards a minute apart, over HTTP in one transaction.
rows = ["user,product,plan,assigned_at"] + [
    f"seed{i}@bench.example,workspace,pro,{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(1420070400 + 60 * i))}"
    for i in range(users)]
body = ("\n".join(rows) + "\n").encode()
req = urllib.request.Request(f"{base}/api/v1/tenants/{tenant}/import", data=body, method="POST",
                             headers={"Authorization": f"Bearer {admin}", "Content-Type": "text/csv"})
t = time.monotonic()
with urllib.request.urlopen(req, timeout=600) as r:
    rep = json.load(r)
import_s = time.monotonic() - t
print(f"| **import over HTTP**, {users:,} rows ({len(body) / 1e6:.1f} MB CSV, one transaction) | {len(rep['matched']):,} matched, {len(rep['pending'])} pending, {len(rep['refused'])} refused | **{import_s:.2f}** |")
assert len(rep["matched"]) == users, {k: len(v) if isinstance(v, list) else v for k, v in rep.items()}
with open(sys.argv[7], "wb") as f:
    f.write(body.replace(b"2015-", b"2014-"))
PY
# The same rows through the CLI (parts of 20,000 rows, progress on stderr), on a stopped server.
kill $PID; wait $PID 2>/dev/null || true
START=$(date +%s.%N)
$BIN import "$WORK/import.csv" --tenant "$T" --database "$DB" >"$WORK/import.out" 2>"$WORK/import.err"
END=$(date +%s.%N)
python3 -c "print(f'| **import through the CLI**, $USERS rows (parts of 20,000) | $(grep -o 'matched: [0-9]*' "$WORK/import.out") | **{$END - $START:.2f}** |')"
tail -1 "$WORK/import.err" >&2
# The self-check of the whole tenant: every decision made again and compared.
START=$(date +%s.%N)
$BIN reconcile --check --tenant "$T" --database "$DB" >"$WORK/check.out"
END=$(date +%s.%N)
python3 -c "print(f'| **reconcile --check**, a {$USERS:,}-user tenant | $(tail -1 "$WORK/check.out" | cut -c1-40) | **{$END - $START:.2f}** |')"
