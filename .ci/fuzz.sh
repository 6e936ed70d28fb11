#!/usr/bin/env bash
# Runs every fuzz target (fuzz/) for a bounded time: FUZZ_SECONDS each (default 30).
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
# Usage: bash .ci/fuzz.sh [seconds] [target…]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-${FUZZ_SECONDS:-30}}
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cargo fuzz list)
fi
cargo fuzz build --sanitizer none >/dev/null
printf '%-12s %12s %10s %8s\n' target executions coverage result
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  # New inputs go to a scratch corpus, so the committed seeds stay small; crashes land in
  # artifacts/<target>/ and fail the run.
  scratch=$(mktemp -d)
  log=$(mktemp)
  rc=0
  cargo fuzz run --sanitizer none "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  if [ "$rc" = 0 ]; then result=ok; else result=FAILED; fi
  printf '%-12s %12s %10s %8s\n' "$t" "$execs" "$cov" "$result"
  if [ "$rc" != 0 ]; then
    tail -60 "$log"
    exit 1
  fi
  rm -rf "$scratch" "$log"
done
