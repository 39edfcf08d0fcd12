#!/usr/bin/env bash
# End-to-end test of docker/Dockerfile and docker/compose.yml:
#   docker/test.sh            (KEEP=1 leaves the stack running afterwards)
#
# 1. Makes sure a Docker daemon runs (installs docker.io and docker-compose from Debian and
#    starts dockerd when there is none; no systemd needed).
# 2. Uses the official images the compose file names when they are present or can be pulled.
#    Where Docker Hub cannot be reached it builds stand-ins from the Debian archive instead
#    (docker/offline/README.md says what each one honours) and points the compose file's image
#    variables at them. UPHUB_DOCKER_OFFLINE=1 forces the stand-ins, =0 forbids them.
# 3. `compose up --build` under its own project name and ports, then checks what a user would:
#    /readyz (Postgres, Redis, RabbitMQ all answer from inside the stack), the demo login, `me`,
#    and a staff invitation whose e-mail the worker container writes (outbox -> RabbitMQ ->
#    consumer). Then restarts the API container (migrate and demo run again: idempotent) and
#    logs in again, and finally removes the stack and its volumes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PROJECT=${PROJECT:-uphub-dtest}
export UPHUB_PORT=${UPHUB_PORT:-18090}
export UPHUB_RABBITMQ_UI_PORT=${UPHUB_RABBITMQ_UI_PORT:-18672}
OFFLINE=${UPHUB_DOCKER_OFFLINE:-auto}
URL="http://127.0.0.1:${UPHUB_PORT}"

say() { printf '[docker-test] %s\n' "$*"; }
die() { printf '[docker-test] FAIL: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ daemon and clients ---
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
has_compose() { command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1; }
if ! command -v dockerd >/dev/null || ! has_compose; then
  say "installing docker.io and docker-compose (Debian)"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose >/dev/null
fi
# Debian's client talks BuildKit by itself; a newer client without the buildx plugin does not.
DOCKER=docker
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
if ! "$DOCKER" info >/dev/null 2>&1; then
  say "starting dockerd"
  mkdir -p "$ROOT/var/log"
  "${SUDO[@]}" sh -c "nohup dockerd >'$ROOT/var/log/dockerd.log' 2>&1 &"
  for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || die "dockerd did not start (see var/log/dockerd.log)"
fi
if "$DOCKER" compose version >/dev/null 2>&1; then
  COMPOSE=("$DOCKER" compose)
else
  # docker-compose v1 shells out to `docker build`: make it find the BuildKit-capable client.
  PATH="$(dirname "$DOCKER"):$PATH"
  export PATH
  COMPOSE=(docker-compose)
fi
COMPOSE+=(-p "$PROJECT" -f docker/compose.yml)
say "docker $("$DOCKER" version --format '{{.Server.Version}}'), compose: ${COMPOSE[*]:0:2}"

# ------------------------------------------------------------------------------ images ---
have_or_pull() {
  "$DOCKER" image inspect "$1" >/dev/null 2>&1 && return 0
  [ "$OFFLINE" = 1 ] && return 1
  timeout 120 "$DOCKER" pull -q "$1" >/dev/null 2>&1
}

DEBIAN_LOCAL=uphub-local/debian:bookworm
debian_base() {
  "$DOCKER" image inspect "$DEBIAN_LOCAL" >/dev/null 2>&1 && return 0
  command -v debootstrap >/dev/null \
    || "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  local root
  root=$(mktemp -d)
  say "debootstrap bookworm (minbase) -> $DEBIAN_LOCAL"
  "${SUDO[@]}" debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
  "${SUDO[@]}" rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  "${SUDO[@]}" tar -C "$root" -c . | "$DOCKER" import - "$DEBIAN_LOCAL" >/dev/null
  "${SUDO[@]}" rm -rf "$root"
}

standin() { # <official image> <compose variable> <offline dockerfile or ''> <local tag>
  local official=$1 var=$2 file=$3 tag=$4
  if [ "$OFFLINE" != 1 ] && have_or_pull "$official"; then
    say "image $official: official"
    return 0
  fi
  [ "$OFFLINE" = 0 ] && die "$official is not available and UPHUB_DOCKER_OFFLINE=0"
  debian_base
  if [ -n "$file" ] && ! "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
    say "building stand-in $tag for $official"
    local ca=docker/offline/ca-certificates
    mkdir -p "$ca"
    cp /usr/local/share/ca-certificates/*.crt "$ca"/ 2>/dev/null || true
    "$DOCKER" build -q --build-arg "DEBIAN_IMAGE=$DEBIAN_LOCAL" -t "$tag" \
      -f "docker/offline/$file" docker/offline >/dev/null
  fi
  export "$var=$tag"
  say "image $official: stand-in $tag"
}
standin debian:bookworm-slim UPHUB_DEBIAN_IMAGE "" "$DEBIAN_LOCAL"
standin rust:1-bookworm UPHUB_RUST_IMAGE rust.Dockerfile uphub-local/rust:1-bookworm
standin postgres:15 UPHUB_POSTGRES_IMAGE postgres.Dockerfile uphub-local/postgres
standin redis:7 UPHUB_REDIS_IMAGE redis.Dockerfile uphub-local/redis
standin rabbitmq:3.12-management UPHUB_RABBITMQ_IMAGE rabbitmq.Dockerfile uphub-local/rabbitmq

# -------------------------------------------------------------------------------- stack ---
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    say "logs of the failed run:"
    "${COMPOSE[@]}" logs --no-color --tail=40 >&2 || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    say "KEEP=1: stack left running (${COMPOSE[*]} down -v)"
  else
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true

started=$(date +%s)
say "compose up --build (a cold image build compiles the workspace: ~15-25 min on 2 cores)"
"${COMPOSE[@]}" up -d --build
say "up after $(( $(date +%s) - started )) s"

wait_ready() {
  for _ in $(seq 180); do
    curl -fsS "$URL/readyz" >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "the API did not become ready at $URL/readyz"
}

gql() { # <token or ''> <json body> -> response on stdout
  local auth=()
  [ -n "$1" ] && auth=(-H "Authorization: Bearer $1")
  curl -fsS "$URL/graphql" -H 'content-type: application/json' "${auth[@]}" -d "$2"
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }

login() {
  gql "" '{"query":"mutation{login(input:{tenantSlug:\"demo\",email:\"owner@demo.uphub.local\",password:\"demo-password-123\"}){accessToken userErrors{code message}}}"}' \
    | field "['data']['login']['accessToken']"
}

wait_ready
ready=$(curl -fsS "$URL/readyz")
say "readyz: $ready"
token=$(login)
if [ -z "$token" ] || [ "$token" = None ]; then die "demo login returned no token"; fi
email=$(gql "$token" '{"query":"{me{email tenant{slug}}}"}' | field "['data']['me']['email']")
[ "$email" = owner@demo.uphub.local ] || die "me answered email=$email"
say "demo login and me: ok ($email)"

invitee="docker-test-$(date +%s)@example.com"
inv=$(gql "$token" "{\"query\":\"mutation{staffInvite(input:{email:\\\"$invitee\\\",roles:[\\\"OPERATOR\\\"]}){staffMember{id} userErrors{code}}}\"}")
[ "$(printf '%s' "$inv" | field "['data']['staffInvite']['userErrors']")" = "[]" ] \
  || die "staffInvite: $inv"
mailed=""
for _ in $(seq 60); do
  if "${COMPOSE[@]}" exec -T worker sh -c "grep -rl '$invitee' var/mail 2>/dev/null" | grep -q .; then
    mailed=1
    break
  fi
  sleep 1
done
[ -n "$mailed" ] || die "the worker container wrote no invitation mail to $invitee"
say "staff.invited: outbox -> RabbitMQ -> worker -> invitation mail: ok"

say "restarting the API container (migrate and demo run again)"
"${COMPOSE[@]}" restart uphub >/dev/null
sleep 2
wait_ready
"${COMPOSE[@]}" logs --no-color uphub | grep -q "demo tenant already exists" \
  || die "the second start did not find the demo tenant"
token=$(login)
if [ -z "$token" ] || [ "$token" = None ]; then die "login after restart returned no token"; fi
say "restart: idempotent migrate + demo, login ok"
say "PASS in $(( $(date +%s) - started )) s"
