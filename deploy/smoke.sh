#!/usr/bin/env bash
# Runs the container's run stage without a container engine: the binary from deploy/build.sh
# with the Dockerfile's ENV and CMD (its /data volume a temporary directory, its port a free
# one on loopback), then the Dockerfile's HEALTHCHECK command, which must succeed; then a
# graceful stop. CI runs this beside the build stage (deploy/build.sh).
# Usage: bash deploy/smoke.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/dist/seatkeeper}
DATA=$(mktemp -d)
LOG=$(mktemp)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true; rm -rf "$DATA" "$LOG"; }
trap cleanup EXIT
# The Dockerfile's ENV, as the container sees it.
db=$(grep -o 'SEATKEEPER_DATABASE=[^ \\]*' Dockerfile | head -1 | cut -d= -f2-)
format=$(grep -o 'SEATKEEPER_LOG_FORMAT=[^ \\]*' Dockerfile | head -1 | cut -d= -f2-)
cmd=$(grep -o '^CMD \["[a-z]*"\]' Dockerfile | grep -o '"[a-z]*"' | tr -d '"')
health=$(grep -o 'CMD \["seatkeeper", "healthcheck"\]' Dockerfile >/dev/null && echo healthcheck)
[ -n "$db" ] && [ -n "$cmd" ] && [ "$health" = healthcheck ] || { echo "Dockerfile: ENV, CMD or HEALTHCHECK not found"; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SEATKEEPER_DATABASE=${db//\/data/$DATA}
export SEATKEEPER_LISTEN=127.0.0.1:$PORT
export SEATKEEPER_LOG_FORMAT=$format
export SEATKEEPER_ADMIN_TOKEN=smoke-admin-token-0123456789
"$BIN" "$cmd" >"$LOG" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  "$BIN" healthcheck >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN" healthcheck || { cat "$LOG"; exit 1; }
[ -f "$DATA/seatkeeper.db" ] || { echo "no database in the /data volume"; exit 1; }
kill -TERM "$PID"
wait "$PID"
PID=""
echo "container run stage: served from the /data volume, healthy, stopped cleanly"
