-- wrk script: authenticated GraphQL `me` query against POST /graphql.
--   UPHUB_BENCH_TOKEN=<access token> wrk -s bench/api/me.lua http://127.0.0.1:18080/graphql
-- Counts non-200 responses and responses carrying GraphQL "errors" so that a
-- fast benchmark of error responses cannot pass unnoticed.

local token = os.getenv("UPHUB_BENCH_TOKEN")
if token == nil or token == "" then
  io.stderr:write("me.lua: UPHUB_BENCH_TOKEN is not set\n")
  os.exit(2)
end

wrk.method = "POST"
wrk.body = '{"query":"{ me { id email roles tenant { id slug name } } }"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

-- Each wrk thread runs its own Lua state; keep handles to aggregate in done().
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  responses = 0
  non200 = 0
  gql_errors = 0
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    non200 = non200 + 1
  end
  if body ~= nil and string.find(body, '"errors"', 1, true) then
    gql_errors = gql_errors + 1
  end
end

function done(summary, latency, requests)
  local total, bad_status, bad_body = 0, 0, 0
  for _, t in ipairs(threads) do
    total = total + (t:get("responses") or 0)
    bad_status = bad_status + (t:get("non200") or 0)
    bad_body = bad_body + (t:get("gql_errors") or 0)
  end
  io.write(string.format("me.lua responses: %d\n", total))
  io.write(string.format("me.lua non-200: %d\n", bad_status))
  io.write(string.format("me.lua graphql-errors: %d\n", bad_body))
end
