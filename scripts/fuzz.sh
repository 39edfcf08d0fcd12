#!/usr/bin/env bash
# Fuzzes the GraphQL endpoint of a running dev server (scripts/run.sh) with schemathesis.
# Coded errors (VALIDATION, RATE_LIMITED, …) are expected answers; what matters is that no
# response is a 5xx or carries INTERNAL / no code. Usage: scripts/fuzz.sh [url] [max-examples]
set -euo pipefail
url="${1:-http://127.0.0.1:8080/graphql}"
examples="${2:-40}"
command -v st >/dev/null || python3 -m pip install -q schemathesis
token=$(curl -s -X POST "$url" -H 'content-type: application/json' \
  -d '{"query":"mutation{login(input:{tenantSlug:\"demo\",email:\"owner@demo.uphub.local\",password:\"demo-password-123\"}){accessToken}}"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["login"]["accessToken"])')
log=$(mktemp)
# logout would revoke the fuzzer's own session halfway through.
st run "$url" -H "Authorization: Bearer $token" --max-examples "$examples" \
  --checks not_a_server_error --exclude-operation-id Mutation.logout >"$log" 2>&1 || true
grep -E "Test cases:|generated" -A1 "$log" | head -4
if grep -E '"code":"INTERNAL"|\[5[0-9][0-9]\]' "$log" >/dev/null || grep -E '"errors":\[\{[^}]*\}\]' "$log" | grep -v '"code"' >/dev/null; then
  echo "FUZZ FOUND INTERNAL, 5xx OR UNCODED ERRORS:"; grep -E '"code":"INTERNAL"|\[5[0-9][0-9]\]' -B3 "$log" | head -40
  exit 1
fi
echo "fuzz: no 5xx, INTERNAL or uncoded errors (full log: $log)"
