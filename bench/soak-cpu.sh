#!/usr/bin/env bash
# The soak's load for SECONDS (default 100) on SQLite, and the server's CPU per answered
# request between 40 s and the end (from /proc/<pid>/stat): a quick A/B of two builds.
# Usage: bash bench/soak-cpu.sh [BINARY] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release --bin seatkeeper --example soak >/dev/null 2>&1 || cargo build --release --bin seatkeeper --example soak
BIN=${1:-target/release/seatkeeper}
SECS=${2:-100}
W=$(mktemp -d)
SEATKEEPER_ADMIN_TOKEN=soak-admin-token SEATKEEPER_LOG=warn,seatkeeper=info "$BIN" serve --listen 127.0.0.1:0 \
  --database "sqlite://$W/s.db" --rate-limit 100000000 --rate-burst 100000000 \
  --app-rate-limit 100000000 --app-rate-burst 100000000 >"$W/log" 2>&1 &
P=$!
trap 'kill $P 2>/dev/null || true; rm -rf "$W"' EXIT
wait_listen "$W/log"
target/release/examples/soak --base "$BASE" --admin soak-admin-token --tenants 100 --rate 25 --checks 5000 \
  --seconds "$SECS" --pids "$P" --sample 10 --wal "$W/s.db-wal" >"$W/out" 2>"$W/err" &
S=$!
sleep 42
a=$(awk '{print $14 + $15}' "/proc/$P/stat")
t0=$(date +%s)
wait $S
b=$(awk '{print $14 + $15}' "/proc/$P/stat")
t1=$(date +%s)
# Requests answered per second over the 10-s samples from 50 s on (the intervals after 40 s).
read -r n k < <(grep -E '^t=' "$W/err" | awk -F'[ =s]' '$2 >= 50' | sed 's/.*answered=\([0-9]*\).*/\1/' \
  | awk '{ n += $1; k++ } END { print n + 0, k + 0 }')
hz=$(getconf CLK_TCK)
echo "| server CPU (cores) | answered/s | CPU µs per request |"
echo "|---|---|---|"
awk -v t="$((b - a))" -v hz="$hz" -v s="$((t1 - t0))" -v n="$n" -v k="$k" \
  'BEGIN { cores = t / hz / s; rate = n / (k * 10); printf "| %.2f | %.0f | %.0f |\n", cores, rate, cores * 1e6 / rate }'
echo
head -8 "$W/out"
