#!/usr/bin/env bash
# Run the UpHub platform locally with a demo tenant:
#   services (PostgreSQL, Redis, RabbitMQ) -> release build -> migrate -> demo
#   -> (re)start `uphub serve` + `uphub worker` in the background -> wait for /readyz.
# Idempotent: running it again rebuilds and restarts serve/worker.
# Logs: var/log/serve.log, var/log/worker.log. Pid files: var/run/*.pid.
# Stop everything it started:  scripts/run.sh --stop
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"

say() { printf '[run] %s\n' "$*"; }
die() { printf '[run] ERROR: %s\n' "$*" >&2; exit 1; }

STOP_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --stop) STOP_ONLY=1 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

# ------------------------------------------------------------ environment ---

# Optional .env in the repo root (see .env.example). Variables already set in
# the environment win over the file.
if [ -f .env ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line#"${line%%[![:space:]]*}"}"          # ltrim
    case "$line" in ''|'#'*) continue ;; esac
    line="${line#export }"
    key="${line%%=*}"
    [ "$key" != "$line" ] || continue
    [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    val="${line#*=}"
    case "$val" in
      \"*\") val="${val#\"}"; val="${val%\"}" ;;
      \'*\') val="${val#\'}"; val="${val%\'}" ;;
    esac
    if [ -z "${!key+x}" ]; then export "$key=$val"; fi
  done < .env
fi

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/uphub_dev}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export UPHUB_LISTEN="${UPHUB_LISTEN:-127.0.0.1:8080}"
export UPHUB_ENV="${UPHUB_ENV:-dev}"

BIN="${CARGO_TARGET_DIR:-target}/release/uphub"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac

RUN_DIR="$ROOT/var/run"
LOG_DIR="$ROOT/var/log"
mkdir -p "$RUN_DIR" "$LOG_DIR"

# ------------------------------------------------------- process handling ---

# pid_alive <pidfile>: prints the pid if it is a live uphub process.
pid_alive() {
  local f="$1" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: only touch processes that are an uphub binary.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'uphub' || return 1
  printf '%s' "$pid"
}

stop_role() {
  local role="$1" f="$RUN_DIR/$1.pid" pid i
  if pid="$(pid_alive "$f")"; then
    say "stopping previous uphub $role (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "uphub $role (pid $pid) did not stop in 10s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$f"
}

start_role() {
  local role="$1" log="$LOG_DIR/$1.log" pidf="$RUN_DIR/$1.pid" i
  [ -f "$log" ] && mv -f "$log" "$log.1"
  rm -f "$pidf"
  # New session (setsid) + nohup: keeps running after this script exits and is
  # not hit by a Ctrl-C in this terminal. The wrapper records its own pid and
  # then execs the binary, so the pid file is exact even if setsid had to fork.
  nohup setsid bash -c 'echo $$ >"$0"; exec "$1" "$2"' "$pidf" "$BIN" "$role" \
    >"$log" 2>&1 </dev/null &
  for ((i = 0; i < 50; i++)); do [ -s "$pidf" ] && break; sleep 0.1; done
  [ -s "$pidf" ] || die "uphub $role did not start (see ${log#"$ROOT"/})"
  say "started uphub $role (pid $(cat "$pidf"), log ${log#"$ROOT"/})"
}

if [ "$STOP_ONLY" -eq 1 ]; then
  stop_role serve
  stop_role worker
  say "stopped"
  exit 0
fi

# ------------------------------------------------------------------ steps ---

scripts/services-up.sh

command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust: https://rustup.rs)"
say "building: cargo build --release -p uphub-api"
cargo build --release -p uphub-api
[ -x "$BIN" ] || die "binary not found at $BIN after build"

# Create the database if missing (name/credentials taken from DATABASE_URL).
db_url_noquery="${DATABASE_URL%%\?*}"
db_name="${db_url_noquery##*/}"
db_query=""
[ "$db_url_noquery" != "$DATABASE_URL" ] && db_query="?${DATABASE_URL#*\?}"
admin_url="${db_url_noquery%/*}/postgres${db_query}"
[[ "$db_name" =~ ^[A-Za-z0-9_-]+$ ]] || die "unexpected database name '$db_name' in DATABASE_URL"
if [ "$(psql -w "$admin_url" -tAc "select 1 from pg_database where datname = '$db_name'" </dev/null)" = "1" ]; then
  say "database $db_name: exists"
else
  if [ "$DATABASE_URL" = "postgres://postgres@127.0.0.1:5432/$db_name" ]; then
    createdb -w -h 127.0.0.1 -U postgres "$db_name"
  else
    psql -w "$admin_url" -v ON_ERROR_STOP=1 -qc "create database \"$db_name\"" </dev/null
  fi
  say "database $db_name: created"
fi

say "migrating: uphub migrate"
"$BIN" migrate

say "demo data: uphub demo"
"$BIN" demo

stop_role serve
stop_role worker

host="${UPHUB_LISTEN%:*}"; port="${UPHUB_LISTEN##*:}"
host="${host#[}"; host="${host%]}"
[ "$host" = "0.0.0.0" ] && host=127.0.0.1
[ "$host" = "::" ] && host=::1
if timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
  die "something else is already listening on $UPHUB_LISTEN (not started by this script); stop it or set UPHUB_LISTEN"
fi

start_role serve
start_role worker

case "$host" in *:*) url_host="[$host]" ;; *) url_host="$host" ;; esac
BASE="http://$url_host:$port"

say "waiting for $BASE/readyz (up to 60s)"
ready=0
code=""
deadline=$((SECONDS + 60))
while [ "$SECONDS" -lt "$deadline" ]; do
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)"
  if [ "$code" = "200" ]; then ready=1; break; fi
  pid_alive "$RUN_DIR/serve.pid" >/dev/null || break
  sleep 0.5
done

if [ "$ready" -ne 1 ]; then
  if pid_alive "$RUN_DIR/serve.pid" >/dev/null; then
    printf '[run] ERROR: %s/readyz did not return 200 within 60s (last status: %s)\n' "$BASE" "${code:-none}" >&2
  else
    printf '[run] ERROR: uphub serve exited during startup\n' >&2
  fi
  echo "----- tail var/log/serve.log -----" >&2
  tail -n 40 "$LOG_DIR/serve.log" >&2 || true
  echo "----- tail var/log/worker.log -----" >&2
  tail -n 20 "$LOG_DIR/worker.log" >&2 || true
  stop_role serve
  stop_role worker
  exit 1
fi

if ! pid_alive "$RUN_DIR/worker.pid" >/dev/null; then
  echo "----- tail var/log/worker.log -----" >&2
  tail -n 40 "$LOG_DIR/worker.log" >&2 || true
  stop_role serve
  die "uphub worker exited during startup (serve stopped too)"
fi

say "ready: serve pid $(cat "$RUN_DIR/serve.pid"), worker pid $(cat "$RUN_DIR/worker.pid"); stop with: scripts/run.sh --stop"
echo "GraphiQL: $BASE/graphql"
