#!/usr/bin/env bash
# Builds the release binary (stripped, see [profile.release]) and copies it to OUT (default
# target/dist). The Dockerfile's build stage runs exactly this; so does .ci/run, which has no
# container engine. Prints the binary's size and version.
# Usage: bash deploy/build.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/dist}
cargo build --release --locked --bin seatkeeper
mkdir -p "$OUT"
install -m 0755 target/release/seatkeeper "$OUT/seatkeeper"
"$OUT/seatkeeper" --version
echo "binary: $OUT/seatkeeper, $(du -h "$OUT/seatkeeper" | cut -f1) ($(stat -c %s "$OUT/seatkeeper") bytes)"
