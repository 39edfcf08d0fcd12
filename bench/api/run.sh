#!/usr/bin/env bash
# One-command API benchmark: GET /healthz vs. authenticated GraphQL `me`.
#
#   bench/api/run.sh
#
# Env knobs (all optional):
#   DURATION=20            seconds per measured wrk run
#   WARMUP=2               seconds of unmeasured warm-up per endpoint (0 = none)
#   WRK_THREADS=2          wrk -t
#   WRK_CONNECTIONS=64     wrk -c
#   BENCH_LISTEN=127.0.0.1:18080          where the bench server listens
#   BENCH_REDIS_URL=redis://127.0.0.1:6379/0
#   BENCH_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f
#   UPHUB_BENCH_BIN=/path/to/uphub      bench this binary as is (no cargo build),
#                                       e.g. a copy of an earlier build, to compare
#                                       two builds back to back on the same machine
#
# Uses a fresh database uphub_bench_<timestamp> (also the Redis/RabbitMQ
# namespace) and removes it afterwards. Results: bench/results/api-<timestamp>.txt
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT="$(pwd)"

say() { printf '[bench] %s\n' "$*"; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

TS="$(date -u +%Y%m%d%H%M%S)"
DB="uphub_bench_${TS}"
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-2}"
WRK_THREADS="${WRK_THREADS:-2}"
WRK_CONNECTIONS="${WRK_CONNECTIONS:-64}"

BIN="${UPHUB_BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/uphub}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac

RESULTS_DIR="$ROOT/bench/results"
RESULT_FILE="$RESULTS_DIR/api-${TS}.txt"
LOG_DIR="$ROOT/var/log"
SERVER_LOG="$LOG_DIR/bench-serve-${TS}.log"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/uphub-bench.XXXXXX")"
mkdir -p "$RESULTS_DIR" "$LOG_DIR"

# ---------------------------------------------------------------- cleanup ---

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
      || dropdb -w -h 127.0.0.1 -U postgres --if-exists "$DB" \
      || say "warning: could not drop database $DB"
    # Best effort: remove this run's namespace from Redis and RabbitMQ.
    if command -v redis-cli >/dev/null 2>&1; then
      redis-cli -u "$REDIS_URL" --scan --pattern "${DB}*" 2>/dev/null \
        | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1
    fi
    if command -v rabbitmqctl >/dev/null 2>&1; then
      timeout 30 rabbitmqctl -q list_queues name 2>/dev/null | grep "^${DB}" \
        | while read -r q; do timeout 15 rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1; done
    fi
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ setup ---

scripts/services-up.sh --bench

if [ -n "${UPHUB_BENCH_BIN:-}" ]; then
  say "benchmarking $BIN as is (UPHUB_BENCH_BIN; no build)"
else
  command -v cargo >/dev/null 2>&1 || die "cargo not found"
  say "building: cargo build --release -p uphub-api"
  cargo build --release -p uphub-api
fi
[ -x "$BIN" ] || die "binary not found at $BIN"

export UPHUB_ENV=dev
export UPHUB_COST_RATE_PER_SEC=100000000
export UPHUB_COST_BURST=100000000
# /healthz and the signup are unauthenticated: lift the per-IP limit as well,
# otherwise wrk from 127.0.0.1 measures 429s.
export UPHUB_IP_RATE_PER_SEC=100000000
export UPHUB_IP_BURST=100000000
# Queues of this throw-away namespace expire once unused.
export UPHUB_QUEUE_EXPIRES_MS="${UPHUB_QUEUE_EXPIRES_MS:-60000}"
export UPHUB_LISTEN="${BENCH_LISTEN:-127.0.0.1:18080}"
export UPHUB_NAMESPACE="$DB"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}"
export AMQP_URL="${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

host="${UPHUB_LISTEN%:*}"; port="${UPHUB_LISTEN##*:}"
[ "$host" = "0.0.0.0" ] && host=127.0.0.1
BASE="http://${host}:${port}"

if timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
  die "$UPHUB_LISTEN is already in use; set BENCH_LISTEN=host:port"
fi

say "creating database $DB"
createdb -w -h 127.0.0.1 -U postgres "$DB"
DB_CREATED=1

say "migrating"
"$BIN" migrate

show_log() { echo "----- tail ${SERVER_LOG#"$ROOT"/} -----" >&2; tail -n 40 "$SERVER_LOG" >&2 || true; }

# start_server <UPHUB_ME_CACHE: true|false>
start_server() {
  say "starting uphub serve on $UPHUB_LISTEN, me cache $1 (log ${SERVER_LOG#"$ROOT"/})"
  UPHUB_ME_CACHE="$1" RUST_LOG=warn "$BIN" serve >>"$SERVER_LOG" 2>&1 </dev/null &
  SERVER_PID=$!
  local deadline=$((SECONDS + 60))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)" = "200" ]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then show_log; die "uphub serve exited during startup"; fi
    if [ "$SECONDS" -ge "$deadline" ]; then show_log; die "$BASE/readyz not 200 within 60s"; fi
    sleep 0.5
  done
  say "server ready"
}
stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
start_server true

# ----------------------------------------------------------------- tenant ---

gql() { # gql <json-body> [token]
  local auth=()
  [ -n "${2:-}" ] && auth=(-H "Authorization: Bearer $2")
  curl -sS --max-time 30 -X POST "$BASE/graphql" \
    -H 'Content-Type: application/json' "${auth[@]}" --data-binary "$1"
}

SIGNUP_BODY="$(python3 -c '
import json, sys
ts = sys.argv[1]
print(json.dumps({
  "query": "mutation($i:TenantSignupInput!){tenantSignup(input:$i){accessToken userErrors{code message}}}",
  "variables": {"i": {"name": "Bench", "slug": "bench" + ts,
                      "ownerEmail": "owner@bench.test", "ownerPassword": "bench-password-123"}},
}))' "$TS")"

say "signing up tenant bench${TS}"
SIGNUP_RESP="$(gql "$SIGNUP_BODY")" || { show_log; die "tenantSignup request failed"; }
TOKEN="$(printf '%s' "$SIGNUP_RESP" | python3 -c '
import json, sys
raw = sys.stdin.read()
try:
    d = json.loads(raw)
    tok = ((d.get("data") or {}).get("tenantSignup") or {}).get("accessToken")
except Exception:
    tok = None
if not tok:
    sys.stderr.write("tenantSignup returned no accessToken: " + raw[:2000] + "\n")
    sys.exit(1)
print(tok)')" || { show_log; die "could not obtain an access token"; }
export UPHUB_BENCH_TOKEN="$TOKEN"

ME_BODY='{"query":"{ me { id email roles tenant { id slug name } } }"}'
ME_RESP="$(gql "$ME_BODY" "$TOKEN")" || die "me request failed"
printf '%s' "$ME_RESP" | python3 -c '
import json, sys
raw = sys.stdin.read()
d = json.loads(raw)
if d.get("errors") or not (d.get("data") or {}).get("me"):
    sys.stderr.write("me query does not work with the token: " + raw[:2000] + "\n")
    sys.exit(1)' || die "sanity check of the me query failed"
say "me query ok: $ME_RESP"

# -------------------------------------------------------------------- wrk ---

WRK=(wrk "-t${WRK_THREADS}" "-c${WRK_CONNECTIONS}")

if [ "$WARMUP" != "0" ]; then
  say "warm-up ${WARMUP}s per endpoint"
  "${WRK[@]}" "-d${WARMUP}s" "$BASE/healthz" >/dev/null
  "${WRK[@]}" "-d${WARMUP}s" -s bench/api/me.lua "$BASE/graphql" >/dev/null
fi

say "wrk ${WRK[*]:1} -d${DURATION}s --latency GET $BASE/healthz"
"${WRK[@]}" "-d${DURATION}s" --latency "$BASE/healthz" | tee "$WORK/healthz.txt"

say "wrk ${WRK[*]:1} -d${DURATION}s --latency POST $BASE/graphql (me)"
"${WRK[@]}" "-d${DURATION}s" --latency -s bench/api/me.lua "$BASE/graphql" | tee "$WORK/me.txt"

kill -0 "$SERVER_PID" 2>/dev/null || { show_log; die "uphub serve died during the benchmark"; }

# The baseline of the same invocation: every `me` pays its tenant transaction (no me cache).
stop_server
start_server false
if [ "$WARMUP" != "0" ]; then
  "${WRK[@]}" "-d${WARMUP}s" -s bench/api/me.lua "$BASE/graphql" >/dev/null
fi
say "wrk ${WRK[*]:1} -d${DURATION}s --latency POST $BASE/graphql (me, UPHUB_ME_CACHE=false)"
"${WRK[@]}" "-d${DURATION}s" --latency -s bench/api/me.lua "$BASE/graphql" | tee "$WORK/me-uncached.txt"
kill -0 "$SERVER_PID" 2>/dev/null || { show_log; die "uphub serve died during the benchmark"; }

# ---------------------------------------------------------------- summary ---

GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo 'no-commit')"
if [ -n "$(git status --porcelain 2>/dev/null | head -n1)" ]; then GIT_REV="${GIT_REV}+dirty"; fi

set +e
python3 - "$WORK/healthz.txt" "$WORK/me.txt" "$WORK/me-uncached.txt" >"$WORK/summary.txt" <<'PY'
import re, sys

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}

def parse(path):
    text = open(path).read()
    r = {"rps": None, "p50": None, "p99": None, "non2xx": 0, "sock": "0",
         "responses": None, "non200": None, "gqlerr": None}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m: r["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s(?:\.000)?%%\s+([\d.]+)(us|ms|s|m|h)\s*$" % pct, text, re.M)
        if m: r["p" + pct] = float(m.group(1)) * UNIT_MS[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m: r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors:\s+(.*)", text)
    if m: r["sock"] = m.group(1).strip()
    for key, label in (("responses", "responses"), ("non200", "non-200"), ("gqlerr", "graphql-errors")):
        m = re.search(r"me\.lua %s:\s+(\d+)" % re.escape(label), text)
        if m: r[key] = int(m.group(1))
    return r

h, me, mu = parse(sys.argv[1]), parse(sys.argv[2]), parse(sys.argv[3])

def f(v, fmt):
    return "n/a" if v is None else format(v, fmt)

def ratio(a, b):
    return None if a is None or not b else a / b

print("%-22s %12s %10s %10s" % ("endpoint", "requests/s", "p50 ms", "p99 ms"))
print("%-22s %12s %10s %10s" % ("GET /healthz", f(h["rps"], ".1f"), f(h["p50"], ".3f"), f(h["p99"], ".3f")))
print("%-22s %12s %10s %10s" % ("POST /graphql me", f(me["rps"], ".1f"), f(me["p50"], ".3f"), f(me["p99"], ".3f")))
print("%-22s %12s %10s %10s" % ("ratio me/healthz", f(ratio(me["rps"], h["rps"]), ".3f"),
                                 f(ratio(me["p50"], h["p50"]), ".2f") + "x" if ratio(me["p50"], h["p50"]) else "n/a",
                                 f(ratio(me["p99"], h["p99"]), ".2f") + "x" if ratio(me["p99"], h["p99"]) else "n/a"))
print("%-22s %12s %10s %10s" % ("me, no me cache", f(mu["rps"], ".1f"), f(mu["p50"], ".3f"), f(mu["p99"], ".3f")))
print("%-22s %12s" % ("ratio (no cache)/healthz", f(ratio(mu["rps"], h["rps"]), ".3f")))
print()
print("healthz: non-2xx=%d  socket errors: %s" % (h["non2xx"], h["sock"]))
print("me, no cache: non-200=%s  graphql-errors=%s  responses=%s"
      % (f(mu["non200"], "d"), f(mu["gqlerr"], "d"), f(mu["responses"], "d")))
print("me:      non-200=%s  graphql-errors=%s  responses=%s  socket errors: %s"
      % (f(me["non200"], "d"), f(me["gqlerr"], "d"), f(me["responses"], "d"), me["sock"]))

bad = []
if h["rps"] is None or me["rps"] is None: bad.append("could not parse wrk output")
if h["non2xx"]: bad.append("healthz returned %d non-2xx responses" % h["non2xx"])
if me["non200"] is None: bad.append("me.lua did not report its counters")
elif me["non200"]: bad.append("me returned %d non-200 responses" % me["non200"])
if me["gqlerr"]: bad.append("me returned %d responses with GraphQL errors" % me["gqlerr"])
if me["responses"] == 0: bad.append("me got no responses")
if mu["rps"] is None or mu["non200"] is None: bad.append("the uncached me run did not report")
elif mu["non200"] or mu["gqlerr"]: bad.append("the uncached me run had errors")
for b in bad:
    print("WARNING: " + b + " -- these numbers do not measure successful requests")
sys.exit(1 if bad else 0)
PY
SUMMARY_RC=$?
set -e

{
  echo "UpHub API benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  git ${GIT_REV}${UPHUB_BENCH_BIN:+  binary ${BIN}}"
  echo "host: $(uname -srm), $(nproc) CPUs; wrk -t${WRK_THREADS} -c${WRK_CONNECTIONS} -d${DURATION}s (warm-up ${WARMUP}s); server RUST_LOG=warn, release build"
  echo
  cat "$WORK/summary.txt"
  echo
  echo "===== raw: GET /healthz ====="
  cat "$WORK/healthz.txt"
  echo
  echo "===== raw: POST /graphql me ====="
  cat "$WORK/me.txt"
  echo
  echo "===== raw: POST /graphql me, UPHUB_ME_CACHE=false ====="
  cat "$WORK/me-uncached.txt"
} >"$RESULT_FILE"

echo
echo "================================ summary ================================"
head -n 2 "$RESULT_FILE"
echo
cat "$WORK/summary.txt"
echo "========================================================================="
say "results written to ${RESULT_FILE#"$ROOT"/}"

exit "$SUMMARY_RC"
