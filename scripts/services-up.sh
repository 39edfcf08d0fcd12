#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ are installed, running and answering
# on 127.0.0.1. Idempotent: installs only what is missing, starts only what is
# down. Works without systemd (containers / CI machines).
#
#   scripts/services-up.sh           # services only
#   scripts/services-up.sh --bench   # also install wrk (for bench/api/run.sh)
set -euo pipefail

cd "$(dirname "$0")/.."

BENCH=0
for arg in "$@"; do
  case "$arg" in
    --bench) BENCH=1 ;;
    -h|--help)
      sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
      exit 0 ;;
    *) echo "services-up: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

WAIT_SECS="${SERVICES_WAIT_SECS:-60}"

say() { printf '[services-up] %s\n' "$*"; }
die() { printf '[services-up] ERROR: %s\n' "$*" >&2; exit 1; }

# Run privileged commands directly as root, through sudo otherwise.
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=()
  say "not root and no sudo: install/start steps may fail"
fi
priv() { "${SUDO[@]}" "$@"; }

# ---------------------------------------------------------------- install ---

have() { command -v "$1" >/dev/null 2>&1; }
# PATH of non-root users often lacks /usr/sbin (rabbitmq-server lives there).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

pg_server_installed() {
  have pg_ctlcluster && have pg_isready && have psql &&
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

missing=()
pg_server_installed || missing+=(postgresql)
{ have redis-server && have redis-cli; } || missing+=(redis-server)
have rabbitmq-server || missing+=(rabbitmq-server)
if [ "$BENCH" -eq 1 ] && ! have wrk; then missing+=(wrk); fi

if [ "${#missing[@]}" -gt 0 ]; then
  say "installing: ${missing[*]}"
  priv env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  priv env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  say "installed: ${missing[*]}"
else
  say "packages: all present$([ "$BENCH" -eq 1 ] && echo ' (incl. wrk)')"
fi

# ------------------------------------------------------------------ helpers --

# wait_until <seconds> <command...>: poll once a second.
wait_until() {
  local secs="$1"; shift
  local i
  for ((i = 0; i < secs; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  return 1
}

tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# --------------------------------------------------------------- postgres ---

pg_version() {
  local v
  v="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1 || true)"
  if [ -z "$v" ]; then
    # Package installed but no cluster was created (e.g. create_main_cluster=false).
    v="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
    say "postgresql: no cluster found, creating $v/main" >&2
    priv pg_createcluster "$v" main >/dev/null
  fi
  printf '%s' "$v"
}

PG_VER="$(pg_version)"
pg_state=0
pg_isready -q -h 127.0.0.1 || pg_state=$?
case "$pg_state" in
  0) say "postgresql $PG_VER: already running" ;;
  1) say "postgresql $PG_VER: starting up (rejecting connections), waiting" ;;
  *)
    say "postgresql $PG_VER: down, starting"
    priv pg_ctlcluster --skip-systemctl-redirect "$PG_VER" main start
    say "postgresql $PG_VER: started" ;;
esac
wait_until "$WAIT_SECS" pg_isready -q -h 127.0.0.1 \
  || die "postgresql did not become ready within ${WAIT_SECS}s (see /var/log/postgresql/)"

pg_trust_ok() {
  PGCONNECT_TIMEOUT=5 psql -w -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' \
    </dev/null >/dev/null 2>&1
}
if pg_trust_ok; then
  say "postgresql: trust auth for postgres@127.0.0.1 ok"
else
  HBA="/etc/postgresql/$PG_VER/main/pg_hba.conf"
  say "postgresql: enabling trust auth on 127.0.0.1/::1 in $HBA"
  priv cp -p "$HBA" "$HBA.bak.$(date +%s)"
  # First matching line wins: putting the trust rules at the top overrides the
  # packaged scram/md5 loopback rules without having to rewrite them.
  priv sed -i \
    -e '1i host    all             all             127.0.0.1/32            trust  # added by scripts/services-up.sh' \
    -e '1i host    all             all             ::1/128                 trust  # added by scripts/services-up.sh' \
    "$HBA"
  priv pg_ctlcluster --skip-systemctl-redirect "$PG_VER" main reload
  10 pg_trust_ok \
    || die "psql -h 127.0.0.1 -U postgres still fails after editing $HBA"
  say "postgresql: trust auth enabled and reloaded"
fi

# ------------------------------------------------------------------ redis ---

redis_ok() { [ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" = "PONG" ]; }
if redis_ok; then
  say "redis: already running"
else
  say "redis: down, starting"
  priv mkdir -p /var/lib/redis /var/log/redis
  priv redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  say "redis: started"
fi
wait_until "$WAIT_SECS" redis_ok \
  || die "redis did not answer PING within ${WAIT_SECS}s (see /var/log/redis/ci.log)"

# --------------------------------------------------------------- rabbitmq ---

rabbit_diag_ok() {
  # The diagnostics need the Erlang cookie: root (or sudo) only.
  if have rabbitmq-diagnostics && { [ "$(id -u)" -eq 0 ] || [ "${#SUDO[@]}" -gt 0 ]; }; then
    priv timeout 20 rabbitmq-diagnostics -q ping
  else
    return 0
  fi
}
rabbit_ok() { tcp_open 127.0.0.1 5672 && rabbit_diag_ok; }

if tcp_open 127.0.0.1 5672; then
  say "rabbitmq: already running (5672 open)"
elif rabbit_diag_ok >/dev/null 2>&1 && have rabbitmq-diagnostics; then
  say "rabbitmq: node up, AMQP listener not open yet, waiting"
else
  say "rabbitmq: down, starting"
  # -detached returns immediately; the node boots in the background.
  priv rabbitmq-server -detached || say "rabbitmq: start command returned non-zero, waiting anyway"
  say "rabbitmq: started"
fi
wait_until "$WAIT_SECS" rabbit_ok \
  || die "rabbitmq did not become ready within ${WAIT_SECS}s (see /var/log/rabbitmq/)"

# ------------------------------------------------------------------- done ---

say "ready: postgresql $PG_VER (127.0.0.1:5432), redis (127.0.0.1:6379), rabbitmq (127.0.0.1:5672)"
if [ "$BENCH" -eq 1 ]; then
  have wrk || die "wrk is not installed"
  say "wrk: $(wrk --version 2>&1 | head -n1 || true)"
fi
