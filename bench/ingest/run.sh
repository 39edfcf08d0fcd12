#!/usr/bin/env bash
# One command: builds the ingestion benchmark in release mode and runs it on a fresh database.
# Knob: ORDERS_PER_PLATFORM (default 5000; three platforms).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/services-up.sh >/dev/null
cargo build -q --release -p uphub-bench-ingest
mkdir -p bench/results
out="bench/results/ingest-$(date -u +%Y%m%d%H%M%S).txt"
RUST_LOG=error "${CARGO_TARGET_DIR:-target}/release/bench-ingest" | tee "$out"
echo "results: $out"
