use serde_json::{Value, json};

use crate::helpers::{TestApp, code, spawn_app};
use crate::orders::stock_in;

const CREATE: &str = "mutation($i: ProductCreateInput!) { productCreate(input: $i) {
    product { id title kind status tags courseId membershipPlanId
              skus { id code name weightGrams options { name value } price { amount currency } } }
    userErrors { field code message } } }";

const PRODUCT: &str = "query($id: ID!) { product(id: $id) { id title description status tags
    skus { id code name price { amount currency } } } }";

const SKU: &str = "query($id: ID!, $c: ID) { sku(id: $id) { id code productId
    price { amount } channelPrice: price(channel: $c) { amount currency }
    listings { channel { id } price { amount } listed } } }";

const UPDATE: &str = "mutation($i: ProductUpdateInput!) { productUpdate(input: $i) {
    product { id title status tags } userErrors { field code } } }";

const ARCHIVE: &str = "mutation($i: ProductArchiveInput!) { productArchive(input: $i) {
    product { id status } userErrors { field code } } }";

const SKU_CREATE: &str = "mutation($i: SkuCreateInput!) { skuCreate(input: $i) {
    sku { id code weightGrams price { amount } } userErrors { field code message } } }";

const SKU_UPDATE: &str = "mutation($i: SkuUpdateInput!) { skuUpdate(input: $i) {
    sku { id code name price { amount } } userErrors { field code message } } }";

const CHANNEL: &str = "mutation($i: SalesChannelCreateInput!) { salesChannelCreate(input: $i) {
    salesChannel { id type shopId name } userErrors { field code } } }";

const LISTING: &str = "mutation($i: ListingUpsertInput!) { listingUpsert(input: $i) {
    listing { skuId channel { id type } price { amount } compareAtPrice { amount } listed platformItemId }
    userErrors { field code message } } }";

const LIST: &str = "query($f: ProductFilter, $first: Int, $after: String) {
    products(filter: $f, first: $first, after: $after) {
      edges { cursor node { id title } } pageInfo { hasNextPage endCursor } } }";

fn yuan(amount: &str) -> Value {
    json!({"amount": amount, "currency": "CNY"})
}

fn tshirt(title: &str, codes: &[&str]) -> Value {
    json!({
        "title": title, "kind": "PHYSICAL", "tags": ["新品", "夏季"],
        "skus": codes.iter().map(|c| json!({
            "code": c, "name": format!("{c} 红色 M"), "weightGrams": 250,
            "options": [{"name": "颜色", "value": "红色"}, {"name": "尺码", "value": "M"}],
            "price": yuan("99.90"),
        })).collect::<Vec<_>>(),
    })
}

/// A global ID of `kind` that names nothing.
fn random_id(kind: &str) -> String {
    uphub_domain::gid::encode(kind, uuid::Uuid::now_v7())
}

async fn create(app: &TestApp, token: &str, input: Value) -> Value {
    app.gql(Some(token), CREATE, json!({"i": input})).await["data"]["productCreate"].clone()
}

async fn create_ok(app: &TestApp, token: &str, input: Value) -> Value {
    let p = create(app, token, input).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    p["product"].clone()
}

async fn channel(app: &TestApp, token: &str, ty: &str, shop: &str) -> Value {
    let r = app
        .gql(
            Some(token),
            CHANNEL,
            json!({"i": {"type": ty, "shopId": shop, "name": "店"}}),
        )
        .await;
    r["data"]["salesChannelCreate"].clone()
}

/// A response without its `extensions` (the cost budget left differs from call to call).
fn without_cost(mut r: Value) -> Value {
    if let Some(o) = r.as_object_mut() {
        o.remove("extensions");
    }
    r
}

fn errors(payload: &Value) -> Value {
    let errs = payload["userErrors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Value::Array(
        errs.into_iter()
            .map(|e| json!({"field": e["field"], "code": e["code"]}))
            .collect(),
    )
}

#[tokio::test]
async fn a_product_created_with_skus_reads_back_by_id_and_in_the_list() {
    let app = spawn_app().await;
    let t = &app.a.token;
    let p = create_ok(&app, t, tshirt("纯棉T恤", &["TS-RED-M", "TS-RED-L"])).await;
    assert_eq!(p["kind"], "PHYSICAL");
    assert_eq!(p["status"], "DRAFT");
    assert_eq!(p["tags"], json!(["新品", "夏季"]));
    let skus = p["skus"].as_array().unwrap();
    assert_eq!(skus.len(), 2);
    assert_eq!(skus[0]["code"], "TS-RED-M");
    assert_eq!(skus[0]["weightGrams"], 250);
    assert_eq!(skus[0]["price"], yuan("99.90"));
    assert_eq!(
        skus[0]["options"],
        json!([{"name": "颜色", "value": "红色"}, {"name": "尺码", "value": "M"}])
    );

    let r = app.gql(Some(t), PRODUCT, json!({"id": p["id"]})).await;
    let read = &r["data"]["product"];
    assert_eq!(read["title"], "纯棉T恤", "{r}");
    assert_eq!(read["skus"], json!(skus.iter().map(|s| json!({"id": s["id"], "code": s["code"], "name": s["name"], "price": s["price"]})).collect::<Vec<_>>()));

    let r = app.gql(Some(t), SKU, json!({"id": skus[1]["id"]})).await;
    assert_eq!(r["data"]["sku"]["code"], "TS-RED-L", "{r}");
    assert_eq!(r["data"]["sku"]["productId"], p["id"]);
    assert_eq!(r["data"]["sku"]["listings"], json!([]));

    let r = app.gql(Some(t), LIST, json!({})).await;
    assert_eq!(
        r["data"]["products"]["edges"][0]["node"]["id"], p["id"],
        "{r}"
    );

    // A second SKU added later shows up with the first ones.
    let r = app
        .gql(Some(t), SKU_CREATE, json!({"i": {"productId": p["id"], "code": "TS-RED-XL", "name": "XL", "weightGrams": 300, "price": yuan("109")}}))
        .await;
    assert_eq!(r["data"]["skuCreate"]["userErrors"], json!([]), "{r}");
    assert_eq!(r["data"]["skuCreate"]["sku"]["price"]["amount"], "109.00");
    let r = app.gql(Some(t), PRODUCT, json!({"id": p["id"]})).await;
    assert_eq!(r["data"]["product"]["skus"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_taken_sku_code_is_a_conflict_on_code_and_nothing_is_written() {
    let app = spawn_app().await;
    let t = &app.a.token;
    let first = create_ok(&app, t, tshirt("A", &["DUP-1"])).await;
    // Taken by another product: the whole create is refused.
    let p = create(&app, t, tshirt("B", &["NEW-1", "DUP-1"])).await;
    assert_eq!(
        errors(&p),
        json!([{"field": "code", "code": "CONFLICT"}]),
        "{p}"
    );
    assert_eq!(p["product"], Value::Null);
    let r = app.gql(Some(t), LIST, json!({})).await;
    assert_eq!(
        r["data"]["products"]["edges"].as_array().unwrap().len(),
        1,
        "{r}"
    );
    // Given twice in one input.
    let p = create(&app, t, tshirt("C", &["X-1", "X-1"])).await;
    assert_eq!(errors(&p), json!([{"field": "code", "code": "CONFLICT"}]));
    // skuCreate and skuUpdate to a taken code.
    let r = app
        .gql(Some(t), SKU_CREATE, json!({"i": {"productId": first["id"], "code": "DUP-1", "name": "again", "weightGrams": 1, "price": yuan("1")}}))
        .await;
    assert_eq!(
        errors(&r["data"]["skuCreate"]),
        json!([{"field": "code", "code": "CONFLICT"}])
    );
    let other = create_ok(&app, t, tshirt("D", &["OTHER-1"])).await;
    let r = app
        .gql(
            Some(t),
            SKU_UPDATE,
            json!({"i": {"id": other["skus"][0]["id"], "code": "DUP-1"}}),
        )
        .await;
    assert_eq!(
        errors(&r["data"]["skuUpdate"]),
        json!([{"field": "code", "code": "CONFLICT"}]),
        "{r}"
    );
    // The same code in another tenant is fine: codes are unique per tenant.
    create_ok(&app, &app.b.token, tshirt("B's", &["DUP-1"])).await;
}

#[tokio::test]
async fn malformed_money_is_a_validation_error_on_the_price_field() {
    let app = spawn_app().await;
    let t = &app.a.token;
    for (amount, currency) in [
        ("1e5", "CNY"),
        ("-1", "CNY"),
        ("", "CNY"),
        ("1.234", "CNY"),
        ("1 000", "CNY"),
        (" 1", "CNY"),
        ("10000000000.01", "CNY"),
        ("12.30", "USD"),
        ("12.30", "cny"),
    ] {
        let mut input = tshirt("Bad price", &["BAD-1"]);
        input["skus"][0]["price"] = json!({"amount": amount, "currency": currency});
        let p = create(&app, t, input).await;
        assert_eq!(
            errors(&p),
            json!([{"field": "price", "code": "VALIDATION"}]),
            "{amount:?} {currency}: {p}"
        );
    }
    // Decimals are normalised to two places; the largest amount passes.
    let mut input = tshirt("Good price", &["OK-1"]);
    input["skus"][0]["price"] = yuan("10000000000");
    let p = create_ok(&app, t, input).await;
    assert_eq!(p["skus"][0]["price"]["amount"], "10000000000.00");
    let r = app
        .gql(
            Some(t),
            SKU_UPDATE,
            json!({"i": {"id": p["skus"][0]["id"], "price": yuan("12.3")}}),
        )
        .await;
    assert_eq!(
        r["data"]["skuUpdate"]["sku"]["price"]["amount"], "12.30",
        "{r}"
    );
    let r = app
        .gql(
            Some(t),
            SKU_UPDATE,
            json!({"i": {"id": p["skus"][0]["id"], "price": yuan("0.001")}}),
        )
        .await;
    assert_eq!(
        errors(&r["data"]["skuUpdate"]),
        json!([{"field": "price", "code": "VALIDATION"}])
    );
    // Nothing of the refused creates was written.
    let r = app.gql(Some(t), LIST, json!({})).await;
    assert_eq!(r["data"]["products"]["edges"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn each_product_kind_requires_its_own_fields() {
    let app = spawn_app().await;
    let t = &app.a.token;
    let virtual_sku = json!({"code": "V-1", "name": "一年", "price": yuan("199")});
    // PHYSICAL SKUs need a weight.
    let mut input = tshirt("No weight", &["W-1"]);
    input["skus"][0]["weightGrams"] = Value::Null;
    assert_eq!(
        errors(&create(&app, t, input).await),
        json!([{"field": "weightGrams", "code": "VALIDATION"}])
    );
    let mut input = tshirt("Negative weight", &["W-1"]);
    input["skus"][0]["weightGrams"] = json!(-5);
    assert_eq!(
        errors(&create(&app, t, input).await),
        json!([{"field": "weightGrams", "code": "VALIDATION"}])
    );
    // COURSE needs the course it grants, and its SKUs weigh nothing.
    let p = create(
        &app,
        t,
        json!({"title": "Rust 入门", "kind": "COURSE", "skus": [virtual_sku]}),
    )
    .await;
    assert_eq!(
        errors(&p),
        json!([{"field": "courseId", "code": "VALIDATION"}])
    );
    let mut heavy = virtual_sku.clone();
    heavy["weightGrams"] = json!(10);
    let p = create(
        &app,
        t,
        json!({"title": "Rust 入门", "kind": "COURSE", "courseId": "c-1", "skus": [heavy]}),
    )
    .await;
    assert_eq!(
        errors(&p),
        json!([{"field": "weightGrams", "code": "VALIDATION"}])
    );
    let course = create_ok(
        &app,
        t,
        json!({"title": "Rust 入门", "kind": "COURSE", "courseId": "c-1", "skus": [virtual_sku]}),
    )
    .await;
    assert_eq!(course["courseId"], "c-1");
    assert_eq!(course["skus"][0]["weightGrams"], Value::Null);
    // Only COURSE grants a course.
    let p = create(
        &app,
        t,
        json!({"title": "x", "kind": "ACTIVATION_CODE", "courseId": "c-1"}),
    )
    .await;
    assert_eq!(
        errors(&p),
        json!([{"field": "courseId", "code": "VALIDATION"}])
    );
    // MEMBERSHIP needs an existing plan of this tenant.
    let p = create(&app, t, json!({"title": "年卡", "kind": "MEMBERSHIP"})).await;
    assert_eq!(
        errors(&p),
        json!([{"field": "membershipPlanId", "code": "VALIDATION"}])
    );
    let unknown = create(&app, t, json!({"title": "年卡", "kind": "MEMBERSHIP", "membershipPlanId": random_id("MembershipPlan")})).await;
    assert_eq!(
        errors(&unknown),
        json!([{"field": "membershipPlanId", "code": "VALIDATION"}])
    );
    let plan_q = "mutation($i: MembershipPlanCreateInput!) { membershipPlanCreate(input: $i) { membershipPlan { id name durationDays } userErrors { field code } } }";
    let r = app
        .gql(
            Some(t),
            plan_q,
            json!({"i": {"name": "年卡会员", "durationDays": 365}}),
        )
        .await;
    let plan = r["data"]["membershipPlanCreate"]["membershipPlan"]["id"].clone();
    assert!(plan.is_string(), "{r}");
    let r = app
        .gql(
            Some(t),
            plan_q,
            json!({"i": {"name": "零天", "durationDays": 0}}),
        )
        .await;
    assert_eq!(
        errors(&r["data"]["membershipPlanCreate"]),
        json!([{"field": "durationDays", "code": "VALIDATION"}])
    );
    let m = create_ok(&app, t, json!({"title": "年卡", "kind": "MEMBERSHIP", "membershipPlanId": plan, "skus": [{"code": "VIP-Y", "name": "年卡", "price": yuan("365")}]})).await;
    assert_eq!(m["membershipPlanId"], plan);
    let r = app
        .gql(
            Some(t),
            "{ membershipPlans { id name durationDays } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r["data"]["membershipPlans"],
        json!([{"id": plan, "name": "年卡会员", "durationDays": 365}])
    );
    // Tenant B cannot use A's plan: it answers exactly like an unknown one.
    let from_b = create(
        &app,
        &app.b.token,
        json!({"title": "年卡", "kind": "MEMBERSHIP", "membershipPlanId": plan}),
    )
    .await;
    assert_eq!(from_b["userErrors"], unknown["userErrors"]);
    // ACTIVATION_CODE SKUs weigh nothing either.
    let a = create_ok(&app, t, json!({"title": "激活码", "kind": "ACTIVATION_CODE", "skus": [{"code": "KEY-1", "name": "key", "price": yuan("30")}]})).await;
    let r = app
        .gql(
            Some(t),
            SKU_UPDATE,
            json!({"i": {"id": a["skus"][0]["id"], "weightGrams": 5}}),
        )
        .await;
    assert_eq!(
        errors(&r["data"]["skuUpdate"]),
        json!([{"field": "weightGrams", "code": "VALIDATION"}])
    );
}

#[tokio::test]
async fn products_are_searched_filtered_and_paged_newest_first() {
    let app = spawn_app().await;
    let t = &app.a.token;
    let mut ids = vec![];
    for i in 0..5 {
        let p = create_ok(&app, t, json!({"title": format!("Tee {i}"), "kind": "PHYSICAL", "tags": [if i % 2 == 0 { "even" } else { "odd" }]})).await;
        ids.push(p["id"].clone());
    }
    let pct = create_ok(
        &app,
        t,
        json!({"title": "50% off 夏季T恤", "kind": "PHYSICAL", "status": "ACTIVE"}),
    )
    .await;
    let course = create_ok(
        &app,
        t,
        json!({"title": "Tee course_x", "kind": "COURSE", "courseId": "c"}),
    )
    .await;
    let names = |r: &Value| -> Vec<String> {
        r["data"]["products"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .map(|e| e["node"]["title"].as_str().unwrap().to_string())
            .collect()
    };
    // Pages of 3, newest first, following the cursor to the end.
    let r = app.gql(Some(t), LIST, json!({"first": 3})).await;
    assert_eq!(names(&r), ["Tee course_x", "50% off 夏季T恤", "Tee 4"]);
    assert_eq!(r["data"]["products"]["pageInfo"]["hasNextPage"], true);
    let after = r["data"]["products"]["pageInfo"]["endCursor"].clone();
    let r = app
        .gql(Some(t), LIST, json!({"first": 3, "after": after}))
        .await;
    assert_eq!(names(&r), ["Tee 3", "Tee 2", "Tee 1"]);
    let after = r["data"]["products"]["pageInfo"]["endCursor"].clone();
    let r = app
        .gql(Some(t), LIST, json!({"first": 3, "after": after}))
        .await;
    assert_eq!(names(&r), ["Tee 0"]);
    assert_eq!(r["data"]["products"]["pageInfo"]["hasNextPage"], false);
    // Page sizes are capped; cursors are checked.
    let r = app.gql(Some(t), LIST, json!({"first": 101})).await;
    assert_eq!(code(&r), "VALIDATION", "{r}");
    let r = app.gql(Some(t), LIST, json!({"after": "!!"})).await;
    assert_eq!(code(&r), "VALIDATION", "{r}");
    // Search is case-insensitive, and % and _ match only themselves.
    let r = app
        .gql(Some(t), LIST, json!({"f": {"search": "tee 3"}}))
        .await;
    assert_eq!(names(&r), ["Tee 3"]);
    let r = app
        .gql(Some(t), LIST, json!({"f": {"search": "50%"}}))
        .await;
    assert_eq!(names(&r), ["50% off 夏季T恤"]);
    let r = app.gql(Some(t), LIST, json!({"f": {"search": "%"}})).await;
    assert_eq!(names(&r), ["50% off 夏季T恤"]);
    let r = app
        .gql(Some(t), LIST, json!({"f": {"search": "e_c"}}))
        .await;
    assert!(names(&r).is_empty(), "{r}");
    let r = app
        .gql(Some(t), LIST, json!({"f": {"search": "e c"}}))
        .await;
    assert_eq!(names(&r), ["Tee course_x"]);
    let r = app
        .gql(Some(t), LIST, json!({"f": {"search": "夏季"}}))
        .await;
    assert_eq!(names(&r), ["50% off 夏季T恤"]);
    let r = app
        .gql(
            Some(t),
            LIST,
            json!({"f": {"search": "'; DROP TABLE products; --"}}),
        )
        .await;
    assert!(names(&r).is_empty());
    // Status, kind and tag filters, alone and together.
    let r = app
        .gql(Some(t), LIST, json!({"f": {"status": "ACTIVE"}}))
        .await;
    assert_eq!(names(&r), ["50% off 夏季T恤"]);
    let r = app
        .gql(Some(t), LIST, json!({"f": {"kind": "COURSE"}}))
        .await;
    assert_eq!(names(&r), ["Tee course_x"]);
    let r = app.gql(Some(t), LIST, json!({"f": {"tag": "odd"}})).await;
    assert_eq!(names(&r), ["Tee 3", "Tee 1"]);
    let r = app
        .gql(
            Some(t),
            LIST,
            json!({"f": {"tag": "even", "search": "4", "kind": "PHYSICAL", "status": "DRAFT"}}),
        )
        .await;
    assert_eq!(names(&r), ["Tee 4"]);
    let _ = (pct, course, ids);
}

#[tokio::test]
async fn a_sku_sells_at_its_channel_price_only_while_listed_there() {
    let app = spawn_app().await;
    let t = &app.a.token;
    let p = create_ok(&app, t, tshirt("T", &["CH-1"])).await;
    let sku = p["skus"][0]["id"].clone();
    let wx = channel(&app, t, "WECHAT_MINI", "wx-app-1").await;
    assert_eq!(wx["userErrors"], json!([]), "{wx}");
    let wx = wx["salesChannel"]["id"].clone();
    let dy = channel(&app, t, "DOUYIN", "dy-shop-1").await["salesChannel"]["id"].clone();
    // The same type and shop again is a conflict; the same shop on another type is not.
    let again = channel(&app, t, "WECHAT_MINI", "wx-app-1").await;
    assert_eq!(
        errors(&again),
        json!([{"field": "shopId", "code": "CONFLICT"}])
    );
    let other = channel(&app, t, "H5", "wx-app-1").await;
    assert_eq!(other["userErrors"], json!([]));
    let r = app
        .gql(Some(t), "{ salesChannels { type shopId } }", json!({}))
        .await;
    assert_eq!(
        r["data"]["salesChannels"],
        json!([{"type": "WECHAT_MINI", "shopId": "wx-app-1"}, {"type": "DOUYIN", "shopId": "dy-shop-1"}, {"type": "H5", "shopId": "wx-app-1"}])
    );

    let r = app
        .gql(Some(t), LISTING, json!({"i": {"skuId": sku, "channelId": wx, "price": yuan("79.90"), "compareAtPrice": yuan("99.90"), "platformItemId": "wx-item-9"}}))
        .await;
    let l = &r["data"]["listingUpsert"];
    assert_eq!(l["userErrors"], json!([]), "{r}");
    assert_eq!(
        l["listing"]["channel"],
        json!({"id": wx, "type": "WECHAT_MINI"})
    );
    assert_eq!(l["listing"]["compareAtPrice"]["amount"], "99.90");
    assert_eq!(l["listing"]["listed"], true);
    // A compare-at price below the price, or bad money, is refused.
    let r = app
        .gql(Some(t), LISTING, json!({"i": {"skuId": sku, "channelId": wx, "price": yuan("79.90"), "compareAtPrice": yuan("50")}}))
        .await;
    assert_eq!(
        errors(&r["data"]["listingUpsert"]),
        json!([{"field": "compareAtPrice", "code": "VALIDATION"}])
    );
    let r = app
        .gql(
            Some(t),
            LISTING,
            json!({"i": {"skuId": sku, "channelId": wx, "price": yuan("7.999")}}),
        )
        .await;
    assert_eq!(
        errors(&r["data"]["listingUpsert"]),
        json!([{"field": "price", "code": "VALIDATION"}])
    );

    let price = |c: Value| {
        let app = &app;
        let sku = sku.clone();
        async move {
            let r = app
                .gql(Some(&app.a.token), SKU, json!({"id": sku, "c": c}))
                .await;
            r["data"]["sku"]["channelPrice"]["amount"]
                .as_str()
                .unwrap_or_else(|| panic!("{r}"))
                .to_string()
        }
    };
    assert_eq!(price(wx.clone()).await, "79.90");
    assert_eq!(price(dy.clone()).await, "99.90", "no listing: base price");
    assert_eq!(price(Value::Null).await, "99.90", "no channel: base price");
    assert_eq!(price(json!(random_id("SalesChannel"))).await, "99.90");
    // Unlisted: back to the base price. The upsert replaced the listing in place.
    let r = app
        .gql(
            Some(t),
            LISTING,
            json!({"i": {"skuId": sku, "channelId": wx, "price": yuan("59"), "listed": false}}),
        )
        .await;
    assert_eq!(
        r["data"]["listingUpsert"]["listing"]["compareAtPrice"],
        Value::Null,
        "{r}"
    );
    assert_eq!(price(wx.clone()).await, "99.90");
    let r = app.gql(Some(t), SKU, json!({"id": sku})).await;
    assert_eq!(
        r["data"]["sku"]["listings"],
        json!([{"channel": {"id": wx}, "price": {"amount": "59.00"}, "listed": false}])
    );
    // The products list resolves the same prices (through the batched loaders).
    let q = "query($c: ID) { products { edges { node { skus { code price(channel: $c) { amount } } } } } }";
    app.gql(
        Some(t),
        LISTING,
        json!({"i": {"skuId": sku, "channelId": dy, "price": yuan("88")}}),
    )
    .await;
    let r = app.gql(Some(t), q, json!({"c": dy})).await;
    assert_eq!(
        r["data"]["products"]["edges"][0]["node"]["skus"][0]["price"]["amount"], "88.00",
        "{r}"
    );
}

#[tokio::test]
async fn products_update_and_archive_along_the_status_rules() {
    let app = spawn_app().await;
    let t = &app.a.token;
    let p = create_ok(&app, t, tshirt("Old title", &["U-1"])).await;
    let id = p["id"].clone();
    let r = app
        .gql(Some(t), UPDATE, json!({"i": {"id": id, "title": "  New title ", "tags": ["a", "a", "b"], "status": "ACTIVE"}}))
        .await;
    assert_eq!(
        r["data"]["productUpdate"]["product"],
        json!({"id": id, "title": "New title", "status": "ACTIVE", "tags": ["a", "b"]}),
        "{r}"
    );
    let r = app
        .gql(Some(t), UPDATE, json!({"i": {"id": id, "title": " "}}))
        .await;
    assert_eq!(
        errors(&r["data"]["productUpdate"]),
        json!([{"field": "title", "code": "VALIDATION"}])
    );
    let r = app.gql(Some(t), ARCHIVE, json!({"i": {"id": id}})).await;
    assert_eq!(
        r["data"]["productArchive"]["product"]["status"], "ARCHIVED",
        "{r}"
    );
    let r = app.gql(Some(t), ARCHIVE, json!({"i": {"id": id}})).await;
    assert_eq!(
        r["data"]["productArchive"]["userErrors"],
        json!([]),
        "archiving is idempotent"
    );
    // Archived products leave the default list but stay readable and filterable.
    let r = app.gql(Some(t), LIST, json!({})).await;
    assert_eq!(r["data"]["products"]["edges"], json!([]));
    let r = app
        .gql(Some(t), LIST, json!({"f": {"status": "ARCHIVED"}}))
        .await;
    assert_eq!(r["data"]["products"]["edges"][0]["node"]["id"], id);
    let r = app.gql(Some(t), PRODUCT, json!({"id": id})).await;
    assert_eq!(r["data"]["product"]["title"], "New title");
    // Straight back to ACTIVE is refused; through DRAFT it works.
    let r = app
        .gql(
            Some(t),
            UPDATE,
            json!({"i": {"id": id, "status": "ACTIVE"}}),
        )
        .await;
    assert_eq!(
        errors(&r["data"]["productUpdate"]),
        json!([{"field": "status", "code": "CONFLICT"}])
    );
    let r = app
        .gql(Some(t), UPDATE, json!({"i": {"id": id, "status": "DRAFT"}}))
        .await;
    assert_eq!(r["data"]["productUpdate"]["product"]["status"], "DRAFT");
    // Unknown and malformed IDs are NOT_FOUND.
    for bad in [
        json!(random_id("Product")),
        json!("garbage"),
        p["skus"][0]["id"].clone(),
    ] {
        let r = app
            .gql(Some(t), UPDATE, json!({"i": {"id": bad, "title": "x"}}))
            .await;
        assert_eq!(
            errors(&r["data"]["productUpdate"]),
            json!([{"field": null, "code": "NOT_FOUND"}]),
            "{r}"
        );
    }
}

#[tokio::test]
async fn another_tenant_can_neither_see_nor_change_the_catalog() {
    let app = spawn_app().await;
    let (a, b) = (&app.a.token, &app.b.token);
    let p = create_ok(&app, a, tshirt("A's tee", &["A-1"])).await;
    let (pid, sid) = (p["id"].clone(), p["skus"][0]["id"].clone());
    let ch = channel(&app, a, "TAOBAO", "tb-1").await["salesChannel"]["id"].clone();
    app.gql(
        Some(a),
        LISTING,
        json!({"i": {"skuId": sid, "channelId": ch, "price": yuan("1")}}),
    )
    .await;
    let b_prod = create_ok(&app, b, tshirt("B's tee", &["B-1"])).await;
    let b_sku = b_prod["skus"][0]["id"].clone();
    let b_ch = channel(&app, b, "TAOBAO", "tb-1").await["salesChannel"]["id"].clone();

    // Reads: A's IDs answer exactly like random ones.
    let pr = |id: Value| {
        let app = &app;
        async move { without_cost(app.gql(Some(b), PRODUCT, json!({"id": id})).await) }
    };
    assert_eq!(pr(pid.clone()).await, pr(json!(random_id("Product"))).await);
    assert_eq!(pr(pid.clone()).await["data"]["product"], Value::Null);
    let sk = |id: Value| {
        let app = &app;
        async move { without_cost(app.gql(Some(b), SKU, json!({"id": id})).await) }
    };
    assert_eq!(sk(sid.clone()).await, sk(json!(random_id("Sku"))).await);
    assert_eq!(sk(sid.clone()).await["data"]["sku"], Value::Null);
    let r = app
        .gql(Some(b), LIST, json!({"f": {"search": "A's"}}))
        .await;
    assert_eq!(r["data"]["products"]["edges"], json!([]));
    let r = app
        .gql(
            Some(b),
            "{ salesChannels { id } membershipPlans { id } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["salesChannels"], json!([{"id": b_ch}]));
    // A's channel means nothing to B's SKU price.
    let r = app.gql(Some(b), SKU, json!({"id": b_sku, "c": ch})).await;
    assert_eq!(r["data"]["sku"]["channelPrice"]["amount"], "99.90");

    // Writes: each answers like a random ID, and A's data is unchanged.
    let same = |q: &'static str, name: &'static str, with_a: Value, with_random: Value| {
        let app = &app;
        async move {
            let x = without_cost(app.gql(Some(b), q, json!({"i": with_a})).await);
            let y = without_cost(app.gql(Some(b), q, json!({"i": with_random})).await);
            assert_eq!(x, y, "{name}");
            assert!(
                !x["data"][name]["userErrors"].as_array().unwrap().is_empty(),
                "{name}: {x}"
            );
            x
        }
    };
    let r = same(
        UPDATE,
        "productUpdate",
        json!({"id": pid, "title": "pwned"}),
        json!({"id": random_id("Product"), "title": "pwned"}),
    )
    .await;
    assert_eq!(
        errors(&r["data"]["productUpdate"]),
        json!([{"field": null, "code": "NOT_FOUND"}])
    );
    same(
        ARCHIVE,
        "productArchive",
        json!({"id": pid}),
        json!({"id": random_id("Product")}),
    )
    .await;
    let r = same(
        SKU_CREATE,
        "skuCreate",
        json!({"productId": pid, "code": "B-2", "name": "x", "weightGrams": 1, "price": yuan("1")}),
        json!({"productId": random_id("Product"), "code": "B-2", "name": "x", "weightGrams": 1, "price": yuan("1")}),
    )
    .await;
    assert_eq!(
        errors(&r["data"]["skuCreate"]),
        json!([{"field": "productId", "code": "VALIDATION"}])
    );
    same(
        SKU_UPDATE,
        "skuUpdate",
        json!({"id": sid, "price": yuan("0")}),
        json!({"id": random_id("Sku"), "price": yuan("0")}),
    )
    .await;
    let r = same(
        LISTING,
        "listingUpsert",
        json!({"skuId": sid, "channelId": b_ch, "price": yuan("0")}),
        json!({"skuId": random_id("Sku"), "channelId": b_ch, "price": yuan("0")}),
    )
    .await;
    assert_eq!(
        errors(&r["data"]["listingUpsert"]),
        json!([{"field": "skuId", "code": "VALIDATION"}])
    );
    let r = same(
        LISTING,
        "listingUpsert",
        json!({"skuId": b_sku, "channelId": ch, "price": yuan("0")}),
        json!({"skuId": b_sku, "channelId": random_id("SalesChannel"), "price": yuan("0")}),
    )
    .await;
    assert_eq!(
        errors(&r["data"]["listingUpsert"]),
        json!([{"field": "channelId", "code": "VALIDATION"}])
    );

    let r = app.gql(Some(a), PRODUCT, json!({"id": pid})).await;
    assert_eq!(r["data"]["product"]["title"], "A's tee");
    assert_eq!(r["data"]["product"]["status"], "DRAFT");
    assert_eq!(r["data"]["product"]["skus"].as_array().unwrap().len(), 1);
    assert_eq!(r["data"]["product"]["skus"][0]["price"]["amount"], "99.90");
    let r = app.gql(Some(a), SKU, json!({"id": sid, "c": ch})).await;
    assert_eq!(r["data"]["sku"]["channelPrice"]["amount"], "1.00", "{r}");
}

#[tokio::test]
async fn a_read_only_api_key_reads_the_catalog_but_cannot_change_it() {
    let app = spawn_app().await;
    let a = &app.a.token;
    let p = create_ok(&app, a, tshirt("Tee", &["RO-1"])).await;
    let r = app
        .gql(Some(a), "mutation($i: ApiKeyCreateInput!) { apiKeyCreate(input: $i) { secret userErrors { code } } }", json!({"i": {"name": "storefront", "scopes": ["CATALOG_READ"]}}))
        .await;
    let key = r["data"]["apiKeyCreate"]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let r = app.gql(Some(&key), LIST, json!({})).await;
    assert_eq!(
        r["data"]["products"]["edges"][0]["node"]["id"], p["id"],
        "{r}"
    );
    let r = app.gql(Some(&key), PRODUCT, json!({"id": p["id"]})).await;
    assert_eq!(r["data"]["product"]["skus"][0]["code"], "RO-1");
    // Without INVENTORY_READ the stock fields are refused, the rest still answers.
    let r = app
        .gql(
            Some(&key),
            "query($id: ID!) { sku(id: $id) { code inventory { available } } }",
            json!({"id": p["skus"][0]["id"]}),
        )
        .await;
    assert_eq!(code(&r), "FORBIDDEN", "{r}");
    assert_eq!(r["data"]["sku"]["code"], "RO-1");
    // The same on a products page (resolved in place): the error names the field's path.
    let r = app
        .gql(
            Some(&key),
            "{ products(first: 5) { edges { node { title skus { code inventory { available } } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&r), "FORBIDDEN", "{r}");
    assert_eq!(
        r["errors"][0]["path"],
        json!(["products", "edges", 0, "node", "skus", 0, "inventory"]),
        "{r}"
    );
    let sku = &r["data"]["products"]["edges"][0]["node"]["skus"][0];
    assert_eq!(sku["code"], "RO-1", "{r}");
    for (q, input) in [
        (CREATE, tshirt("Nope", &["RO-2"])),
        (UPDATE, json!({"id": p["id"], "title": "Nope"})),
        (ARCHIVE, json!({"id": p["id"]})),
        (
            SKU_UPDATE,
            json!({"id": p["skus"][0]["id"], "name": "Nope"}),
        ),
        (CHANNEL, json!({"type": "H5", "shopId": "h5", "name": "H5"})),
    ] {
        let r = app.gql(Some(&key), q, json!({"i": input})).await;
        assert_eq!(code(&r), "FORBIDDEN", "{r}");
    }
    let r = app.gql(Some(a), PRODUCT, json!({"id": p["id"]})).await;
    assert_eq!(r["data"]["product"]["title"], "Tee");
    assert_eq!(r["data"]["product"]["status"], "DRAFT");
}

#[tokio::test]
async fn sku_inventory_sums_levels_over_warehouses() {
    let app = spawn_app().await;
    let t = &app.a.token;
    let p = create_ok(&app, t, tshirt("Stocked", &["INV-1"])).await;
    let sku = p["skus"][0]["id"].clone();
    let mut warehouses = vec![];
    for (code_, qty) in [("SH", 7), ("GZ", 5)] {
        warehouses.push(stock_in(&app, t, sku.as_str().unwrap(), code_, qty).await);
    }
    let q =
        "query($id: ID!) { product(id: $id) { skus { inventory { onHand reserved held available }
             inventoryLevels { warehouse { id } onHand available } } } }";
    let r = app.gql(Some(t), q, json!({"id": p["id"]})).await;
    let s = &r["data"]["product"]["skus"][0];
    assert_eq!(
        s["inventory"],
        json!({"onHand": 12, "reserved": 0, "held": 0, "available": 12}),
        "{r}"
    );
    let mut levels: Vec<(String, i64)> = s["inventoryLevels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["warehouse"]["id"].as_str().unwrap().to_string(),
                l["onHand"].as_i64().unwrap(),
            )
        })
        .collect();
    levels.sort_by_key(|l| l.1);
    assert_eq!(
        levels,
        [(warehouses[1].clone(), 5), (warehouses[0].clone(), 7)]
    );
    // A SKU never stocked has zero everywhere.
    let other = create_ok(&app, t, tshirt("Empty", &["INV-2"])).await;
    let r = app.gql(Some(t), q, json!({"id": other["id"]})).await;
    assert_eq!(r["data"]["product"]["skus"][0]["inventory"]["available"], 0);
    assert_eq!(
        r["data"]["product"]["skus"][0]["inventoryLevels"],
        json!([])
    );
}

const PAGE: &str = "query($c: ID) { products(first: 10) { edges { node { title
    skus { code price(channel: $c) { amount } } } } } }";

/// (title, [(code, price on the channel)]) of each product on the page, newest first.
async fn page_at(
    app: &TestApp,
    addr: &str,
    token: &str,
    channel: &Value,
) -> Vec<(String, Vec<(String, String)>)> {
    let r = app.gql_at(addr, token, PAGE, json!({"c": channel})).await;
    let edges = r["data"]["products"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{r}"));
    edges
        .iter()
        .map(|e| {
            let n = &e["node"];
            let skus = n["skus"].as_array().unwrap().iter().map(|s| {
                (
                    s["code"].as_str().unwrap().to_string(),
                    s["price"]["amount"].as_str().unwrap().to_string(),
                )
            });
            (n["title"].as_str().unwrap().to_string(), skus.collect())
        })
        .collect()
}

fn row(title: &str, skus: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    (
        title.into(),
        skus.iter()
            .map(|(c, p)| (c.to_string(), p.to_string()))
            .collect(),
    )
}

/// Products pages with SKUs are cached per gateway process by catalog version. A second
/// gateway caches a page; every kind of catalog write made through the first gateway shows on
/// the second's next read, another store's writes leave this store's cached page in use, and
/// another store never gets this store's page.
#[tokio::test]
async fn a_cached_products_page_follows_every_catalog_write_made_through_any_gateway() {
    let app = spawn_app().await;
    let t = &app.a.token;
    let g2 = app.second_gateway().await;
    let (hits, misses) = (
        "uphub_catalog_cache_hits_total",
        "uphub_catalog_cache_misses_total",
    );
    let wx = channel(&app, t, "WECHAT_MINI", "wx-cache").await["salesChannel"]["id"].clone();
    let tee = create_ok(&app, t, tshirt("Tee", &["C-1", "C-2"])).await;
    let c1 = tee["skus"][0]["id"].clone();

    let expected = vec![row("Tee", &[("C-1", "99.90"), ("C-2", "99.90")])];
    assert_eq!(page_at(&app, &g2, t, &wx).await, expected);
    let (h0, m0) = (
        app.metric_at(&g2, hits).await,
        app.metric_at(&g2, misses).await,
    );
    assert_eq!(page_at(&app, &g2, t, &wx).await, expected);
    assert_eq!(
        app.metric_at(&g2, hits).await,
        h0 + 1.0,
        "the repeat read is served from the cache"
    );
    assert_eq!(app.metric_at(&g2, misses).await, m0);

    // A listing, a SKU, a product: each write is on the other gateway's next page.
    let r = app
        .gql(
            Some(t),
            LISTING,
            json!({"i": {"skuId": c1, "channelId": wx, "price": yuan("79.90")}}),
        )
        .await;
    assert_eq!(r["data"]["listingUpsert"]["userErrors"], json!([]), "{r}");
    assert_eq!(
        page_at(&app, &g2, t, &wx).await,
        vec![row("Tee", &[("C-1", "79.90"), ("C-2", "99.90")])]
    );
    assert_eq!(app.metric_at(&g2, misses).await, m0 + 1.0);
    let r = app
        .gql(
            Some(t),
            SKU_UPDATE,
            json!({"i": {"id": tee["skus"][1]["id"], "code": "C-2b", "price": yuan("90")}}),
        )
        .await;
    assert_eq!(r["data"]["skuUpdate"]["userErrors"], json!([]), "{r}");
    let r = app
        .gql(
            Some(t),
            UPDATE,
            json!({"i": {"id": tee["id"], "title": "Tee v2"}}),
        )
        .await;
    assert_eq!(r["data"]["productUpdate"]["userErrors"], json!([]), "{r}");
    assert_eq!(
        page_at(&app, &g2, t, &wx).await,
        vec![row("Tee v2", &[("C-1", "79.90"), ("C-2b", "90.00")])]
    );
    let r = app
        .gql(
            Some(t),
            LISTING,
            json!({"i": {"skuId": c1, "channelId": wx, "price": yuan("79.90"), "listed": false}}),
        )
        .await;
    assert_eq!(r["data"]["listingUpsert"]["userErrors"], json!([]), "{r}");
    create_ok(&app, t, tshirt("Hat", &["H-1"])).await;
    assert_eq!(
        page_at(&app, &g2, t, &wx).await,
        vec![
            row("Hat", &[("H-1", "99.90")]),
            row("Tee v2", &[("C-1", "99.90"), ("C-2b", "90.00")])
        ]
    );
    let r = app
        .gql(Some(t), ARCHIVE, json!({"i": {"id": tee["id"]}}))
        .await;
    assert_eq!(r["data"]["productArchive"]["userErrors"], json!([]), "{r}");
    let current = vec![row("Hat", &[("H-1", "99.90")])];
    assert_eq!(page_at(&app, &g2, t, &wx).await, current);

    // The other store: its writes do not move this store's version; it never gets this page.
    let b = &app.b.token;
    assert_eq!(page_at(&app, &g2, b, &wx).await, vec![]);
    create_ok(&app, b, tshirt("B only", &["B-1"])).await;
    let h1 = app.metric_at(&g2, hits).await;
    assert_eq!(page_at(&app, &g2, t, &wx).await, current);
    assert_eq!(
        app.metric_at(&g2, hits).await,
        h1 + 1.0,
        "another store's write keeps this page cached"
    );
    assert_eq!(
        page_at(&app, &g2, b, &wx).await,
        vec![row("B only", &[("B-1", "99.90")])]
    );
}

/// Every scalar field of `Product` (a products page answers them in place).
const PRODUCT_FIELDS: &str = "id title description kind status tags courseId membershipPlanId
    createdAt updatedAt";
/// Every field of `Sku` a products page answers in place, with a channel price and stock.
const SKU_FIELDS: &str = "id code name weightGrams productId createdAt updatedAt
    price { amount currency } onChannel: price(channel: $c) { amount currency }
    inventory { onHand reserved held available }";

/// The products page resolves `Product`, `Sku`, `Money` and `InventoryTotals` in place
/// (resolvers/src/inline.rs); `product(id)` and `sku(id)` go through the generated resolvers,
/// and a SKU asked for `inventoryLevels` falls back to them inside a page as well. All three must
/// answer every field identically, for every kind of product.
#[tokio::test]
async fn every_catalog_field_answers_the_same_in_place_and_through_the_generated_resolvers() {
    let app = spawn_app().await;
    let t = &app.a.token;
    let mut tee = tshirt("Tee", &["IP-1", "IP-2"]);
    tee["description"] = json!("纯棉 \"经典\" 款");
    let tee = create_ok(&app, t, tee).await;
    create_ok(
        &app,
        t,
        json!({"title": "Rust 入门", "kind": "COURSE", "courseId": "c-9",
        "skus": [{"code": "IP-C", "name": "终身", "price": yuan("199")}]}),
    )
    .await;
    let r = app
        .gql(Some(t), "mutation($i: MembershipPlanCreateInput!) { membershipPlanCreate(input: $i) { membershipPlan { id } } }", json!({"i": {"name": "年卡", "durationDays": 365}}))
        .await;
    let plan = r["data"]["membershipPlanCreate"]["membershipPlan"]["id"].clone();
    create_ok(
        &app,
        t,
        json!({"title": "年卡", "kind": "MEMBERSHIP", "membershipPlanId": plan,
        "skus": [{"code": "IP-M", "name": "年卡", "price": yuan("365")}]}),
    )
    .await;
    // One SKU listed on a channel at its own price and stocked in a warehouse.
    let wx = channel(&app, t, "WECHAT_MINI", "wx-ip").await["salesChannel"]["id"].clone();
    let sku = tee["skus"][0]["id"].clone();
    let r = app
        .gql(
            Some(t),
            LISTING,
            json!({"i": {"skuId": sku, "channelId": wx, "price": yuan("79.90")}}),
        )
        .await;
    assert_eq!(r["data"]["listingUpsert"]["userErrors"], json!([]), "{r}");
    stock_in(&app, t, sku.as_str().unwrap(), "SH", 6).await;

    let vars = json!({"c": wx});
    let page = app
        .gql(
            Some(t),
            &format!("query($c: ID) {{ products(first: 10) {{ edges {{ node {{ {PRODUCT_FIELDS} skus {{ {SKU_FIELDS} }} }} }} }} }}"),
            vars.clone(),
        )
        .await;
    assert!(page.get("errors").is_none(), "{page}");
    let nodes: Vec<Value> = page["data"]["products"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    assert_eq!(nodes.len(), 3, "{page}");
    // What the page says is what was written.
    let node = |title: &str| nodes.iter().find(|n| n["title"] == title).unwrap().clone();
    let tee_node = node("Tee");
    assert_eq!(tee_node["description"], "纯棉 \"经典\" 款");
    assert_eq!(
        (&tee_node["kind"], &tee_node["status"], &tee_node["tags"]),
        (
            &json!("PHYSICAL"),
            &json!("DRAFT"),
            &json!(["新品", "夏季"])
        )
    );
    let stocked = &tee_node["skus"][0];
    assert_eq!(
        (stocked["weightGrams"].clone(), stocked["productId"].clone()),
        (json!(250), tee["id"].clone())
    );
    assert_eq!(stocked["onChannel"], yuan("79.90"), "{stocked}");
    assert_eq!(
        stocked["inventory"],
        json!({"onHand": 6, "reserved": 0, "held": 0, "available": 6})
    );
    assert_eq!(tee_node["skus"][1]["onChannel"], yuan("99.90"));
    assert_eq!(node("Rust 入门")["courseId"], "c-9");
    assert_eq!(node("年卡")["membershipPlanId"], plan);
    assert_eq!(node("年卡")["skus"][0]["weightGrams"], Value::Null);

    for n in &nodes {
        // The generated Product resolvers.
        let r = app
            .gql(
                Some(t),
                &format!("query($id: ID!, $c: ID) {{ product(id: $id) {{ {PRODUCT_FIELDS} skus {{ {SKU_FIELDS} }} }} }}"),
                json!({"id": n["id"], "c": wx}),
            )
            .await;
        assert_eq!(
            r["data"]["product"], *n,
            "product(id) differs from the page"
        );
        // A SKU that must load its levels goes through the generated Sku resolvers, in a page.
        let r = app
            .gql(
                Some(t),
                &format!("query($id: ID!, $c: ID) {{ product(id: $id) {{ skus {{ {SKU_FIELDS} inventoryLevels {{ onHand }} }} }} }}"),
                json!({"id": n["id"], "c": wx}),
            )
            .await;
        for (i, s) in n["skus"].as_array().unwrap().iter().enumerate() {
            let mut fallback = r["data"]["product"]["skus"][i].clone();
            fallback.as_object_mut().unwrap().remove("inventoryLevels");
            assert_eq!(fallback, *s, "a SKU with inventoryLevels differs: {r}");
            let one = app
                .gql(
                    Some(t),
                    &format!("query($id: ID!, $c: ID) {{ sku(id: $id) {{ {SKU_FIELDS} }} }}"),
                    json!({"id": s["id"], "c": wx}),
                )
                .await;
            assert_eq!(one["data"]["sku"], *s, "sku(id) differs from the page");
        }
    }
    // The other tenant's page shows none of it.
    let r = app
        .gql(
            Some(&app.b.token),
            "{ products(first: 10) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["products"]["edges"], json!([]), "{r}");
}
