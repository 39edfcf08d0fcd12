-- wrk script: the catalog page `products(first: 50) { id title skus { id code price(channel)
-- inventory { available } } }` against POST /graphql.
--   UPHUB_BENCH_TOKEN=<token> UPHUB_BENCH_CHANNEL=<channel id> wrk -s bench/catalog/products.lua URL
-- Counts non-200 responses and responses carrying GraphQL "errors", so a fast benchmark of
-- error responses cannot pass unnoticed.

local token = os.getenv("UPHUB_BENCH_TOKEN")
local channel = os.getenv("UPHUB_BENCH_CHANNEL")
if token == nil or token == "" or channel == nil or channel == "" then
  io.stderr:write("products.lua: UPHUB_BENCH_TOKEN and UPHUB_BENCH_CHANNEL must be set\n")
  os.exit(2)
end

wrk.method = "POST"
wrk.body = '{"query":"query($c: ID) { products(first: 50) { edges { node { id title skus { id code price(channel: $c) { amount currency } inventory { available } } } } } }","variables":{"c":"' .. channel .. '"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

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
  io.write(string.format("products.lua responses: %d\n", total))
  io.write(string.format("products.lua non-200: %d\n", bad_status))
  io.write(string.format("products.lua graphql-errors: %d\n", bad_body))
end
