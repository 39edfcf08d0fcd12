#!/usr/bin/env bash
# One command: builds `uphub` and the flash-sale benchmark in release mode, then runs it on a
# fresh database: the edge (`uphub seckill`) and a worker as child processes, 20,000 buyers
# against a quota of 1,000 over HTTP keep-alive, raw redis-benchmark EVALSHA of the admission
# script, and the same buyers against a Postgres-only hot row.
# Knobs: DURATION (s, default 10), CONNECTIONS (64), BUYERS (20000), QUOTA (1000),
# BENCH_LISTEN (127.0.0.1:18081), BUYER_RATE_PER_SEC (5), BUYER_BURST (10).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/services-up.sh >/dev/null
if ! command -v redis-benchmark >/dev/null 2>&1; then
  sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools >/dev/null
fi
cargo build -q --release -p uphub-api -p uphub-bench-seckill
mkdir -p bench/results
out="bench/results/seckill-$(date -u +%Y%m%d%H%M%S).txt"
target="${CARGO_TARGET_DIR:-target}/release"
UPHUB_BIN="$target/uphub" RUST_LOG=error "$target/bench-seckill" | tee "$out"
echo "results: $out"
