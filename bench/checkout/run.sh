#!/usr/bin/env bash
# One command: builds `uphub` and the checkout benchmark in release mode, then runs it on a fresh
# database: `uphub serve` and `uphub worker` as child processes, the WeChat Pay and mini-program
# login mocks in the bench process. Own-channel orders placed and paid end to end over HTTP at
# concurrency 32 (orderPlace → paymentCreate → signed pay notification → PAID in Postgres), the
# same client's baselines (buyerMe, orderPlace only), then 200 shoppers racing for 10 units.
# Knobs: DURATION (s, default 10), CONNECTIONS (32), BUYERS (256), SHOPPERS (200), UNITS (10),
# BENCH_LISTEN (127.0.0.1:18082), DB_POOL (serve's pool, 32).
# Run it under the shared lock so two benchmarks never overlap:
#   flock /tmp/uphub-bench.lock bench/checkout/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/services-up.sh >/dev/null
cargo build -q --release -p uphub-api -p uphub-bench-checkout
mkdir -p bench/results
out="bench/results/checkout-$(date -u +%Y%m%d%H%M%S).txt"
target="${CARGO_TARGET_DIR:-target}/release"
UPHUB_BIN="$target/uphub" RUST_LOG=error "$target/bench-checkout" | tee "$out"
echo "results: $out"
