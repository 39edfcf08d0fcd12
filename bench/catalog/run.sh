#!/usr/bin/env bash
# One-command catalog benchmark: the products page with SKUs, channel prices and stock.
#
#   bench/catalog/run.sh
#
# Builds the release binary, creates a fresh database, starts `uphub serve`, seeds 200 products
# x 2 SKUs, a sales channel with listings, a warehouse with stock (through GraphQL), then runs
#   products(first: 50) { id title skus { id code price(channel: $c) inventory { available } } }
# with wrk at concurrency 32 for 20 s and reports requests/s, p50/p99 and SQL per request, twice
# in the same invocation: with the per-process catalog cache (the default) and, as the baseline,
# with it off (UPHUB_CATALOG_CACHE_PAGES=0, a restarted server on the same data).
#
# Env knobs: DURATION (20), WARMUP (2), WRK_THREADS (2), WRK_CONNECTIONS (32), PRODUCTS (200),
# BENCH_LISTEN (127.0.0.1:18081), BENCH_REDIS_URL, BENCH_AMQP_URL.
# Results: bench/results/catalog-<timestamp>.txt
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT="$(pwd)"

say() { printf '[bench] %s\n' "$*"; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

TS="$(date -u +%Y%m%d%H%M%S)"
DB="uphub_bench_cat_${TS}"
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-2}"
WRK_THREADS="${WRK_THREADS:-2}"
WRK_CONNECTIONS="${WRK_CONNECTIONS:-32}"
export PRODUCTS="${PRODUCTS:-200}"

BIN="${CARGO_TARGET_DIR:-target}/release/uphub"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac

RESULTS_DIR="$ROOT/bench/results"
RESULT_FILE="$RESULTS_DIR/catalog-${TS}.txt"
LOG_DIR="$ROOT/var/log"
SERVER_LOG="$LOG_DIR/bench-catalog-serve-${TS}.log"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/uphub-bench-catalog.XXXXXX")"
mkdir -p "$RESULTS_DIR" "$LOG_DIR"

SERVER_PID=""
DB_CREATED=0

cleanup() {
  local rc=$?
  set +e
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    say "stopping bench server (pid $SERVER_PID)"
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  if [ "$DB_CREATED" -eq 1 ]; then
    say "dropping database $DB"
    dropdb -w -h 127.0.0.1 -U postgres --if-exists --force "$DB" 2>/dev/null \
      || say "warning: could not drop database $DB"
    if command -v redis-cli >/dev/null 2>&1; then
      redis-cli -u "$REDIS_URL" --scan --pattern "*${DB}*" 2>/dev/null \
        | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1
    fi
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/services-up.sh --bench

say "building: cargo build --release -p uphub-api"
cargo build --release -p uphub-api
[ -x "$BIN" ] || die "binary not found at $BIN"

export UPHUB_ENV=dev
# Budgets out of the way: this measures the query, not the limiter.
export UPHUB_COST_RATE_PER_SEC=100000000
export UPHUB_COST_BURST=100000000
export UPHUB_IP_RATE_PER_SEC=100000000
export UPHUB_IP_BURST=100000000
export UPHUB_MAX_COMPLEXITY=100000
export UPHUB_QUEUE_EXPIRES_MS="${UPHUB_QUEUE_EXPIRES_MS:-60000}"
export UPHUB_LISTEN="${BENCH_LISTEN:-127.0.0.1:18081}"
export UPHUB_NAMESPACE="$DB"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}"
export AMQP_URL="${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

host="${UPHUB_LISTEN%:*}"; port="${UPHUB_LISTEN##*:}"
BASE="http://${host}:${port}"
if timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
  die "$UPHUB_LISTEN is already in use; set BENCH_LISTEN=host:port"
fi

say "creating database $DB"
createdb -w -h 127.0.0.1 -U postgres "$DB"
DB_CREATED=1
"$BIN" migrate

show_log() { echo "----- tail ${SERVER_LOG#"$ROOT"/} -----" >&2; tail -n 40 "$SERVER_LOG" >&2 || true; }
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
# start_server <catalog cache pages>
start_server() {
  say "starting uphub serve on $UPHUB_LISTEN, catalog cache pages=$1 (log ${SERVER_LOG#"$ROOT"/})"
  UPHUB_CATALOG_CACHE_PAGES="$1" RUST_LOG=warn "$BIN" serve >>"$SERVER_LOG" 2>&1 </dev/null &
  SERVER_PID=$!
  local deadline=$((SECONDS + 60))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)" = "200" ]; do
    kill -0 "$SERVER_PID" 2>/dev/null || { show_log; die "uphub serve exited during startup"; }
    [ "$SECONDS" -lt "$deadline" ] || { show_log; die "$BASE/readyz not 200 within 60s"; }
    sleep 0.5
  done
}
start_server 512

# Stock is seeded through inventorySet when this build has it.
if grep -q "inventorySet" schema.graphql; then export WITH_STOCK=1; else export WITH_STOCK=0; say "no inventorySet: skipping stock"; fi
say "seeding $PRODUCTS products x 2 SKUs, listings, stock=$WITH_STOCK"
read -r TOKEN CHANNEL < <(python3 bench/catalog/seed.py "$BASE" "$TS") || { show_log; die "seeding failed"; }
[ -n "${CHANNEL:-}" ] || { show_log; die "seeding returned no token/channel"; }
export UPHUB_BENCH_TOKEN="$TOKEN" UPHUB_BENCH_CHANNEL="$CHANNEL"

psql_db() { psql -w -h 127.0.0.1 -U postgres -d "$DB" -Atc "$1"; }
# pg_stat_statements counts statements exactly when the server preloads it; otherwise fall back
# to committed transactions: every read of this page is one statement in its own transaction
# (tenant_read's implicit one, or BEGIN/scope/SELECT/COMMIT), so transactions = statements.
HAVE_PGSS=0
if psql_db "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT count(*) FROM pg_stat_statements" >/dev/null 2>&1; then
  HAVE_PGSS=1
fi
# Statistics reach pg_stat_database lazily (up to ~10 s after a backend goes idle).
settled_commits() {
  sleep 10
  local last now stable=0
  last="$(psql_db "SELECT xact_commit - sessions FROM pg_stat_database WHERE datname = current_database()")"
  for _ in $(seq 1 30); do
    sleep 1
    now="$(psql_db "SELECT xact_commit - sessions FROM pg_stat_database WHERE datname = current_database()")"
    if [ "$now" = "$last" ]; then stable=$((stable + 1)); else stable=0; fi
    last="$now"
    [ "$stable" -ge 4 ] && break
  done
  echo "$last"
}

WRK=(wrk "-t${WRK_THREADS}" "-c${WRK_CONNECTIONS}")
# measure <label>: warm-up, wrk, and the transactions it caused; writes $WORK/<label>.{wrk,c0,c1}
measure() {
  if [ "$WARMUP" != "0" ]; then
    say "[$1] warm-up ${WARMUP}s"
    "${WRK[@]}" "-d${WARMUP}s" -s bench/catalog/products.lua "$BASE/graphql" >/dev/null
  fi
  say "[$1] waiting for statistics to settle"
  settled_commits >"$WORK/$1.c0"
  [ "$HAVE_PGSS" -eq 1 ] && psql_db "SELECT pg_stat_statements_reset()" >/dev/null
  say "[$1] wrk ${WRK[*]:1} -d${DURATION}s --latency POST $BASE/graphql (products page)"
  "${WRK[@]}" "-d${DURATION}s" --latency -s bench/catalog/products.lua "$BASE/graphql" | tee "$WORK/$1.wrk"
  kill -0 "$SERVER_PID" 2>/dev/null || { show_log; die "uphub serve died during the benchmark"; }
  local pgss="n/a"
  if [ "$HAVE_PGSS" -eq 1 ]; then
    # Statements other than transaction control and the tenant-scope setting.
    pgss="$(psql_db "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query !~* '^\\s*(BEGIN|COMMIT|ROLLBACK|SELECT set_config)'")"
  fi
  echo "$pgss" >"$WORK/$1.pgss"
  say "[$1] waiting for statistics to settle"
  settled_commits >"$WORK/$1.c1"
}

measure cached
stop_server
start_server 0
measure uncached

GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo 'no-commit')"
[ -n "$(git status --porcelain 2>/dev/null | head -n1)" ] && GIT_REV="${GIT_REV}+dirty"

set +e
python3 - "$WORK" >"$WORK/summary.txt" <<'PY'
import re, sys
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
work = sys.argv[1]
def run(label):
    text = open("%s/%s.wrk" % (work, label)).read()
    c0 = int(open("%s/%s.c0" % (work, label)).read())
    c1 = int(open("%s/%s.c1" % (work, label)).read())
    pgss = open("%s/%s.pgss" % (work, label)).read().strip()
    def num(pat):
        m = re.search(pat, text, re.M)
        return m and m.group(1)
    r = {"rps": float(num(r"Requests/sec:\s+([\d.]+)") or "nan")}
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s(?:\.000)?%%\s+([\d.]+)(us|ms|s|m)\s*$" % pct, text, re.M)
        r[pct] = float(m.group(1)) * UNIT_MS[m.group(2)] if m else float("nan")
    r["responses"] = int(num(r"products\.lua responses:\s+(\d+)") or 0)
    r["non200"] = int(num(r"products\.lua non-200:\s+(\d+)") or 0)
    r["gqlerr"] = int(num(r"products\.lua graphql-errors:\s+(\d+)") or 0)
    n = r["responses"]
    r["xacts"] = (c1 - c0) / n if n else float("nan")
    r["stmts"] = "n/a" if pgss == "n/a" else "%.2f" % (int(pgss) / n if n else float("nan"))
    return r
runs = {"cached": run("cached"), "uncached": run("uncached")}
print("products(first: 50) { id title skus { id code price(channel) inventory { available } } }")
print("%-34s %12s %12s" % ("", "cached", "uncached"))
print("%-34s %12.1f %12.1f   (target >= 800; peer ~8)" % ("requests/s", runs["cached"]["rps"], runs["uncached"]["rps"]))
print("%-34s %12.2f %12.2f ms" % ("p50", runs["cached"]["50"], runs["uncached"]["50"]))
print("%-34s %12.2f %12.2f ms (target <= 50)" % ("p99", runs["cached"]["99"], runs["uncached"]["99"]))
print("%-34s %12.2f %12.2f   (peer ~175)" % ("SQL transactions/request", runs["cached"]["xacts"], runs["uncached"]["xacts"]))
print("%-34s %12s %12s   (pg_stat_statements; n/a unless preloaded)" % ("SQL statements/request", runs["cached"]["stmts"], runs["uncached"]["stmts"]))
print("%-34s %12.2fx" % ("requests/s cached / uncached", runs["cached"]["rps"] / runs["uncached"]["rps"]))
print("%-34s %12.0fx" % ("requests/s cached vs peer (8/s)", runs["cached"]["rps"] / 8))
bad = []
for label, r in runs.items():
    print("%s: responses=%d non-200=%d graphql-errors=%d" % (label, r["responses"], r["non200"], r["gqlerr"]))
    if r["responses"] == 0: bad.append("%s: no responses" % label)
    if r["non200"]: bad.append("%s: %d non-200 responses" % (label, r["non200"]))
    if r["gqlerr"]: bad.append("%s: %d responses with GraphQL errors" % (label, r["gqlerr"]))
for b in bad:
    print("WARNING: " + b + " -- these numbers do not measure successful requests")
sys.exit(1 if bad else 0)
PY
SUMMARY_RC=$?
set -e

{
  echo "UpHub catalog benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  git ${GIT_REV}"
  echo "host: $(uname -srm), $(nproc) CPUs; wrk -t${WRK_THREADS} -c${WRK_CONNECTIONS} -d${DURATION}s; ${PRODUCTS} products x 2 SKUs, stock=${WITH_STOCK}; release build"
  echo
  cat "$WORK/summary.txt"
  echo
  echo "===== raw wrk: cached ====="
  cat "$WORK/cached.wrk"
  echo "===== raw wrk: uncached (UPHUB_CATALOG_CACHE_PAGES=0) ====="
  cat "$WORK/uncached.wrk"
} >"$RESULT_FILE"

echo
echo "================================ summary ================================"
cat "$WORK/summary.txt"
echo "========================================================================="
say "results written to ${RESULT_FILE#"$ROOT"/}"
exit "$SUMMARY_RC"
