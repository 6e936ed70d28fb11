#!/usr/bin/env bash
# Events benchmark (issue 4): propagation latency from a billing event to the licensing API
# and to a webhook receiver, and webhook delivery throughput. Release build, SQLite, loopback.
# Usage: bash bench/events.sh [events] [users]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin seatkeeper --example events_bench >/dev/null 2>&1 \
  || cargo build --release --bin seatkeeper --example events_bench
target/release/examples/events_bench target/release/seatkeeper "${1:-1000}" "${2:-10000}"
