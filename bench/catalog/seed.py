"""Seeds the catalog benchmark through GraphQL: a tenant, a channel, PRODUCTS products with two
SKUs each, a listing per SKU and (when the schema has inventorySet) a warehouse with stock.
Prints `TOKEN CHANNEL_ID` on stdout."""
import json, os, sys, urllib.request

BASE, TS = sys.argv[1], sys.argv[2]
PRODUCTS = int(os.environ.get("PRODUCTS", "200"))
WITH_STOCK = os.environ.get("WITH_STOCK", "1") == "1"


def gql(query, variables=None, token=None):
    req = urllib.request.Request(
        BASE + "/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": "Bearer " + token} if token else {})},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        d = json.loads(r.read())
    if d.get("errors"):
        sys.exit("GraphQL errors: " + json.dumps(d)[:2000])
    return d["data"]


def payload(d, name, key):
    p = d[name]
    if p.get("userErrors"):
        sys.exit(f"{name}: {p['userErrors']}")
    return p[key]


token = payload(gql("mutation($i:TenantSignupInput!){tenantSignup(input:$i){accessToken userErrors{code field message}}}",
                    {"i": {"name": "Catalog bench", "slug": "catbench" + TS, "ownerEmail": "owner@catbench.test",
                           "ownerPassword": "bench-password-123"}}), "tenantSignup", "accessToken")
channel = payload(gql("mutation($i:SalesChannelCreateInput!){salesChannelCreate(input:$i){salesChannel{id} userErrors{code field message}}}",
                      {"i": {"type": "WECHAT_MINI", "shopId": "wx-bench", "name": "小程序"}}, token),
                  "salesChannelCreate", "salesChannel")["id"]
warehouse = None
if WITH_STOCK:
    warehouse = payload(gql("mutation($i:WarehouseCreateInput!){warehouseCreate(input:$i){warehouse{id} userErrors{code field message}}}",
                            {"i": {"code": "BENCH", "name": "Bench"}}, token), "warehouseCreate", "warehouse")["id"]
for i in range(PRODUCTS):
    skus = [{"code": f"B{i:04d}-{s}", "name": f"款式 {s}", "weightGrams": 200 + i,
             "options": [{"name": "颜色", "value": "红"}, {"name": "尺码", "value": s}],
             "price": {"amount": f"{50 + i % 50}.90", "currency": "CNY"}} for s in ("M", "L")]
    product = payload(gql("mutation($i:ProductCreateInput!){productCreate(input:$i){product{id skus{id code}} userErrors{code field message}}}",
                          {"i": {"title": f"Bench 商品 {i}", "kind": "PHYSICAL", "status": "ACTIVE", "tags": ["bench"], "skus": skus}}, token),
                      "productCreate", "product")
    for n, sku in enumerate(product["skus"]):
        if n == 0:  # half the SKUs have a channel price, the rest fall back to the base price
            payload(gql("mutation($i:ListingUpsertInput!){listingUpsert(input:$i){listing{listed} userErrors{code field message}}}",
                        {"i": {"skuId": sku["id"], "channelId": channel, "price": {"amount": "39.90", "currency": "CNY"}}}, token),
                    "listingUpsert", "listing")
        if warehouse:
            payload(gql("mutation($i:InventorySetInput!){inventorySet(input:$i){inventoryLevel{onHand} userErrors{code field message}}}",
                        {"i": {"skuId": sku["id"], "warehouseId": warehouse, "quantity": 100 + i, "changeFrom": 0}}, token),
                    "inventorySet", "inventoryLevel")
print(token, channel)
