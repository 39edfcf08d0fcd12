#!/usr/bin/env bash
# Fuzzes the GraphQL endpoint of a running dev server (scripts/run.sh) with schemathesis, twice:
# as the demo owner (staff) and as a storefront buyer of the demo store (its buyer token is
# minted with the dev signing key for a buyer row added to the dev database, as a mini-program
# login would leave one). Coded errors (VALIDATION, FORBIDDEN, RATE_LIMITED, …) are expected
# answers; what matters is that no response is a 5xx or carries INTERNAL / no code.
# Usage: scripts/fuzz.sh [url] [max-examples]   (DATABASE_URL: the dev server's database)
set -euo pipefail
url="${1:-http://127.0.0.1:8080/graphql}"
examples="${2:-40}"
db="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/uphub_dev}"
secret="${UPHUB_JWT_SECRET:-uphub-dev-jwt-secret-do-not-use-in-production-0123456789}"
command -v st >/dev/null || python3 -m pip install -q schemathesis

staff=$(curl -s -X POST "$url" -H 'content-type: application/json' \
  -d '{"query":"mutation{login(input:{tenantSlug:\"demo\",email:\"owner@demo.uphub.local\",password:\"demo-password-123\"}){accessToken}}"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["login"]["accessToken"])')

tenant=$(psql -w "$db" -tAc "select id from tenants where slug = 'demo'")
[ -n "$tenant" ] || { echo "fuzz: no demo tenant in $db" >&2; exit 1; }
buyer=$(python3 -c 'import uuid; print(uuid.uuid4())')
psql -w "$db" -qc "insert into buyers (tenant_id, id, wechat_openid, nickname)
                   values ('$tenant', '$buyer', 'fuzz-$buyer', 'fuzz buyer')" >/dev/null
buyer_token=$(TENANT="$tenant" BUYER="$buyer" SECRET="$secret" python3 - <<'PY'
import base64, hashlib, hmac, json, os, time, uuid
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
claims = {"sub": os.environ["BUYER"], "tid": os.environ["TENANT"], "roles": [],
          "jti": str(uuid.uuid4()), "iat": now, "iatm": now * 1000, "exp": now + 3600,
          "typ": "buyer"}
head = b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
body = b64(json.dumps(claims).encode())
sig = hmac.new(os.environ["SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(sig)}")
PY
)
# The claims above mirror services/src/auth.rs (issue_buyer_token): if they drift, the server
# refuses the token and the buyer pass would fuzz nothing but UNAUTHENTICATED; stop instead.
me=$(curl -s -X POST "$url" -H 'content-type: application/json' -H "Authorization: Bearer $buyer_token" \
  -d '{"query":"{buyerMe{id}}"}')
echo "$me" | grep -q '"buyerMe":{"id"' || { echo "fuzz: the minted buyer token is refused: $me" >&2; exit 1; }

bad=0
for who in staff buyer; do
  if [ "$who" = staff ]; then token=$staff; else token=$buyer_token; fi
  log=$(mktemp)
  # Logging out would revoke the fuzzer's own session halfway through.
  st run "$url" -H "Authorization: Bearer $token" --max-examples "$examples" \
    --checks not_a_server_error --exclude-name Mutation.logout \
    --exclude-name Mutation.buyerLogout >"$log" 2>&1 || true
  echo "fuzz as $who: $(grep -A1 'Test cases:' "$log" | tail -1 | xargs) (log: $log)"
  if grep -E '"code":"INTERNAL"|\[5[0-9][0-9]\]' "$log" >/dev/null ||
    grep -E '"errors":\[\{[^}]*\}\]' "$log" | grep -v '"code"' >/dev/null; then
    echo "FUZZ AS $who FOUND INTERNAL, 5xx OR UNCODED ERRORS:"
    grep -E '"code":"INTERNAL"|\[5[0-9][0-9]\]' -B3 "$log" | head -40
    bad=1
  fi
  grep -o '"code":"[A-Z_]*"' "$log" | sort | uniq -c | sed "s/^/  $who answers: /"
done
[ "$bad" -eq 0 ] && echo "fuzz: no 5xx, INTERNAL or uncoded errors"
exit "$bad"
