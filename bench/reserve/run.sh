#!/usr/bin/env bash
# One command: builds the reservation benchmark in release mode and runs every scenario on a
# fresh database. Knobs: DURATION (s per scenario, default 10), CONCURRENCY (default 64).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/services-up.sh >/dev/null
cargo build -q --release -p uphub-bench-reserve
mkdir -p bench/results
out="bench/results/reserve-$(date -u +%Y%m%d%H%M%S).txt"
RUST_LOG=error "${CARGO_TARGET_DIR:-target}/release/bench-reserve" | tee "$out"
echo "results: $out"
