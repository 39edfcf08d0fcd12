use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use uphub_services::ServiceError;
use uphub_services::outbox::RelayFaults;
use uphub_services::reservation::{self, Line, ReserveRequest};
use uphub_services::stock_cache;
use uphub_tenants::{RequestCtx, TenantId};
use uuid::Uuid;

use crate::helpers::{TestApp, code, spawn_app};

/// A product with one SKU of `kind`, created as the owner (the catalog API is tested elsewhere).
async fn seed_sku(app: &TestApp, slug: &str, kind: &str) -> Uuid {
    let tenant = uphub_services::identity::tenant_by_slug(&app.core, slug)
        .await
        .unwrap()
        .unwrap()
        .id;
    let product = Uuid::now_v7();
    let sku = Uuid::now_v7();
    app.core
        .db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO products (tenant_id, id, title, kind, status) VALUES ($1, $2, 'T-shirt', $3, 'ACTIVE');",
            [tenant.into(), product.into(), kind.into()],
        ))
        .await
        .unwrap();
    app.core
        .db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO skus (tenant_id, id, product_id, code, name, price_fen) VALUES ($1, $2, $3, $4, 'M', 9900)",
            [tenant.into(), sku.into(), product.into(), format!("SKU-{}", &sku.simple().to_string()[20..]).into()],
        ))
        .await
        .unwrap();
    sku
}

fn gid(kind: &str, id: Uuid) -> String {
    uphub_domain::gid::encode(kind, id)
}

async fn warehouse(app: &TestApp, token: &str, code_: &str) -> Uuid {
    let r = app
        .gql(Some(token), "mutation($i: WarehouseCreateInput!) { warehouseCreate(input: $i) { warehouse { id } userErrors { code } } }", json!({"i": {"code": code_, "name": "Main"}}))
        .await;
    let id = r["data"]["warehouseCreate"]["warehouse"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"));
    Uuid::try_parse(&uphub_domain::gid::decode("Warehouse", id).unwrap()).unwrap()
}

async fn set_stock(
    app: &TestApp,
    token: &str,
    sku: Uuid,
    wh: Uuid,
    qty: i32,
    from: i32,
) -> serde_json::Value {
    app.gql(
        Some(token),
        "mutation($i: InventorySetInput!) { inventorySet(input: $i) { inventoryLevel { onHand reserved held available } userErrors { code field message } } }",
        json!({"i": {"skuId": gid("Sku", sku), "warehouseId": gid("Warehouse", wh), "quantity": qty, "changeFrom": from}}),
    )
    .await
}

async fn tenant_ctx(app: &TestApp, slug: &str) -> RequestCtx {
    let t = uphub_services::identity::tenant_by_slug(&app.core, slug)
        .await
        .unwrap()
        .unwrap()
        .id;
    RequestCtx::system(TenantId(t), "test")
}

fn order(owner: String, lines: Vec<Line>, campaign: Option<&str>) -> ReserveRequest {
    ReserveRequest {
        owner_kind: "ORDER".into(),
        owner_id: owner,
        campaign: campaign.map(str::to_string),
        lines,
        ttl: Duration::from_secs(900),
    }
}

async fn level(app: &TestApp, ctx: &RequestCtx, sku: Uuid) -> (i32, i32, i32) {
    let tx = uphub_tenants::TenantTx::begin(&app.core.db, ctx.tenant)
        .await
        .unwrap();
    let r = tx
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT on_hand, reserved, held FROM inventory_levels WHERE tenant_id = $1 AND sku_id = $2",
            [ctx.tenant.0.into(), sku.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    (
        r.try_get("", "on_hand").unwrap(),
        r.try_get("", "reserved").unwrap(),
        r.try_get("", "held").unwrap(),
    )
}

async fn ledger_reserved(app: &TestApp, ctx: &RequestCtx, sku: Uuid) -> i64 {
    let tx = uphub_tenants::TenantTx::begin(&app.core.db, ctx.tenant)
        .await
        .unwrap();
    tx.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT coalesce(sum(delta_reserved), 0)::bigint AS n FROM inventory_ledger WHERE tenant_id = $1 AND sku_id = $2",
        [ctx.tenant.0.into(), sku.into()],
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "n")
    .unwrap()
}

async fn redis_field(app: &TestApp, ctx: &RequestCtx, sku: Uuid, field: &str) -> Option<i64> {
    let mut conn = app.core.redis.clone();
    redis::cmd("HGET")
        .arg(stock_cache::key(&app.core, ctx.tenant, sku))
        .arg(field)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Tenant A's context and one warehouse holding a hot SKU (100 units) and another (5,000).
async fn storm_stock(app: &TestApp) -> (RequestCtx, Uuid, Uuid, Uuid) {
    let ctx = tenant_ctx(app, &app.a.slug).await;
    let (hot, other) = (
        seed_sku(app, &app.a.slug, "PHYSICAL").await,
        seed_sku(app, &app.a.slug, "PHYSICAL").await,
    );
    let wh = warehouse(app, &app.a.token, "SH").await;
    set_stock(app, &app.a.token, hot, wh, 100, 0).await;
    set_stock(app, &app.a.token, other, wh, 5000, 0).await;
    (ctx, hot, other, wh)
}

/// Two thousand buyers, half single-line, half multi-line, race for 100 units.
async fn storm(
    app: &TestApp,
    ctx: &RequestCtx,
    hot: Uuid,
    other: Uuid,
    wh: Uuid,
    chaos: bool,
) -> (usize, usize) {
    let core = app.core.clone();
    let ctx = Arc::new(ctx.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let core = core.clone();
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let mut lines = vec![Line {
                sku: hot,
                warehouse: wh,
                quantity: 1,
            }];
            if i % 2 == 0 {
                lines.push(Line {
                    sku: other,
                    warehouse: wh,
                    quantity: 1,
                });
            }
            let multi = lines.len() > 1;
            (
                multi,
                reservation::reserve(&core, &ctx, order(format!("o-{i}"), lines, None)).await,
            )
        });
    }
    if chaos {
        // Redis loses the stock cache (flush of this instance's keys) twice mid-storm.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let mut conn = app.core.redis.clone();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("uphub:{}:*stock*", app.core.cfg.namespace))
                .query_async(&mut conn)
                .await
                .unwrap();
            for k in keys {
                let _: i64 = redis::cmd("DEL")
                    .arg(k)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
    let (mut ok, mut multi_ok) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            (multi, Ok(_)) => {
                ok += 1;
                multi_ok += usize::from(multi);
            }
            (_, Err(ServiceError::SoldOut { .. })) => {}
            (_, Err(e)) => panic!("unexpected error: {e:?}"),
        }
    }
    (ok, multi_ok)
}

#[tokio::test]
async fn two_thousand_concurrent_reservations_take_exactly_the_hundred_available_units() {
    let app = spawn_app().await;
    let (ctx, hot, other, wh) = storm_stock(&app).await;
    let (ok, multi_ok) = storm(&app, &ctx, hot, other, wh, false).await;
    assert_eq!(ok, 100);
    assert_eq!(level(&app, &ctx, hot).await, (100, 100, 0));
    assert_eq!(level(&app, &ctx, other).await, (5000, multi_ok as i32, 0));
    assert_eq!(ledger_reserved(&app, &ctx, hot).await, 100);
    assert_eq!(ledger_reserved(&app, &ctx, other).await, multi_ok as i64);
    assert_eq!(
        redis_field(&app, &ctx, hot, &format!("w:{wh}")).await,
        Some(0)
    );
    assert_eq!(
        redis_field(&app, &ctx, other, &format!("w:{wh}")).await,
        Some(5000 - multi_ok as i64)
    );
    // The other tenant sees none of it.
    let b = app
        .gql(Some(&app.b.token), "{ warehouses { id } }", json!({}))
        .await;
    assert_eq!(b["data"]["warehouses"], json!([]));
}

#[tokio::test]
async fn losing_the_redis_cache_mid_storm_never_oversells_and_the_reconciler_restores_it() {
    let app = spawn_app().await;
    let (ctx, hot, other, wh) = storm_stock(&app).await;
    let (ok, _) = storm(&app, &ctx, hot, other, wh, true).await;
    let (on_hand, reserved, _) = level(&app, &ctx, hot).await;
    assert!(
        ok <= 100 && reserved as usize == ok && on_hand == 100,
        "ok={ok} reserved={reserved}"
    );
    assert_eq!(ledger_reserved(&app, &ctx, hot).await, ok as i64);
    stock_cache::reconcile_all(&app.core).await.unwrap();
    assert_eq!(
        redis_field(&app, &ctx, hot, &format!("w:{wh}")).await,
        Some(100 - ok as i64)
    );
}

#[tokio::test]
async fn a_crash_between_redis_admission_and_postgres_commit_loses_no_unit() {
    let app = spawn_app().await;
    let ctx = tenant_ctx(&app, &app.a.slug).await;
    let sku = seed_sku(&app, &app.a.slug, "PHYSICAL").await;
    let wh = warehouse(&app, &app.a.token, "SH").await;
    set_stock(&app, &app.a.token, sku, wh, 10, 0).await;
    // Warm the cache, then a "process" admits 3 units and dies before its transaction.
    reservation::reserve(
        &app.core,
        &ctx,
        order(
            "warm".into(),
            vec![Line {
                sku,
                warehouse: wh,
                quantity: 1,
            }],
            None,
        ),
    )
    .await
    .unwrap();
    let admitted = reservation::admit_only(
        &app.core,
        ctx.tenant,
        &[Line {
            sku,
            warehouse: wh,
            quantity: 3,
        }],
    )
    .await
    .unwrap();
    assert_eq!(admitted, 1);
    assert_eq!(
        redis_field(&app, &ctx, sku, &format!("w:{wh}")).await,
        Some(6)
    );
    let drift = stock_cache::reconcile_all(&app.core).await.unwrap();
    assert_eq!(drift, 3);
    assert_eq!(
        redis_field(&app, &ctx, sku, &format!("w:{wh}")).await,
        Some(9)
    );
    // All nine remaining units can be sold, and not one more.
    for i in 0..9 {
        reservation::reserve(
            &app.core,
            &ctx,
            order(
                format!("o{i}"),
                vec![Line {
                    sku,
                    warehouse: wh,
                    quantity: 1,
                }],
                None,
            ),
        )
        .await
        .unwrap();
    }
    let more = reservation::reserve(
        &app.core,
        &ctx,
        order(
            "o-x".into(),
            vec![Line {
                sku,
                warehouse: wh,
                quantity: 1,
            }],
            None,
        ),
    )
    .await;
    assert!(matches!(more, Err(ServiceError::SoldOut { .. })));
    assert_eq!(level(&app, &ctx, sku).await, (10, 10, 0));
}

#[tokio::test]
async fn five_hundred_buyers_of_a_hundred_activation_codes_get_distinct_codes_or_sold_out() {
    let app = spawn_app().await;
    let ctx = tenant_ctx(&app, &app.a.slug).await;
    let sku = seed_sku(&app, &app.a.slug, "ACTIVATION_CODE").await;
    let codes: Vec<String> = (0..100).map(|i| format!("KEY-{i:04}")).collect();
    let q = "mutation($i: ActivationCodesImportInput!) { activationCodesImport(input: $i) { imported inventoryLevel { onHand available warehouse { id } } userErrors { code field message } } }";
    // Duplicates inside an import: nothing written.
    let dup = app
        .gql(
            Some(&app.a.token),
            q,
            json!({"i": {"skuId": gid("Sku", sku), "codes": ["A", "B", "A"]}}),
        )
        .await;
    assert_eq!(
        dup["data"]["activationCodesImport"]["userErrors"][0]["code"], "VALIDATION",
        "{dup}"
    );
    let r = app
        .gql(
            Some(&app.a.token),
            q,
            json!({"i": {"skuId": gid("Sku", sku), "codes": codes}}),
        )
        .await;
    assert_eq!(r["data"]["activationCodesImport"]["imported"], 100, "{r}");
    assert_eq!(
        r["data"]["activationCodesImport"]["inventoryLevel"]["available"],
        100
    );
    // Duplicates against the pool: nothing written either.
    let again = app
        .gql(
            Some(&app.a.token),
            q,
            json!({"i": {"skuId": gid("Sku", sku), "codes": ["KEY-0001", "NEW-1"]}}),
        )
        .await;
    assert_eq!(
        again["data"]["activationCodesImport"]["userErrors"][0]["code"], "CONFLICT",
        "{again}"
    );
    // Tenant B cannot import into A's SKU.
    let from_b = app
        .gql(
            Some(&app.b.token),
            q,
            json!({"i": {"skuId": gid("Sku", sku), "codes": ["X-1"]}}),
        )
        .await;
    assert_eq!(
        from_b["data"]["activationCodesImport"]["userErrors"][0]["code"], "VALIDATION",
        "{from_b}"
    );
    let wh = Uuid::try_parse(
        &uphub_domain::gid::decode(
            "Warehouse",
            r["data"]["activationCodesImport"]["inventoryLevel"]["warehouse"]["id"]
                .as_str()
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500 {
        let core = app.core.clone();
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let r = reservation::reserve(
                &core,
                &ctx,
                order(
                    format!("buyer-{i}"),
                    vec![Line {
                        sku,
                        warehouse: wh,
                        quantity: 1,
                    }],
                    None,
                ),
            )
            .await?;
            reservation::confirm(&core, &ctx, r.id).await
        });
    }
    let mut issued = Vec::new();
    let mut sold_out = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(codes) => issued.extend(codes.into_iter().flat_map(|(_, c)| c)),
            Err(ServiceError::SoldOut { .. }) => sold_out += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(issued.len(), 100);
    assert_eq!(issued.iter().collect::<HashSet<_>>().len(), 100);
    assert_eq!(sold_out, 400);
    assert_eq!(level(&app, &ctx, sku).await, (0, 0, 0));
}

#[tokio::test]
async fn a_live_stream_hold_serves_only_its_campaign_and_returns_its_rest_on_expiry() {
    let mut app = spawn_app().await;
    let ctx = tenant_ctx(&app, &app.a.slug).await;
    let sku = seed_sku(&app, &app.a.slug, "PHYSICAL").await;
    let wh = warehouse(&app, &app.a.token, "SH").await;
    set_stock(&app, &app.a.token, sku, wh, 10, 0).await;
    let q = "mutation($i: StockHoldCreateInput!) { stockHoldCreate(input: $i) { hold { id remaining status } userErrors { code field message } } }";
    let too_big = app
        .gql(Some(&app.a.token), q, json!({"i": {"skuId": gid("Sku", sku), "warehouseId": gid("Warehouse", wh), "quantity": 11, "campaign": "live-1", "expiresAt": (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339()}}))
        .await;
    assert_eq!(
        too_big["data"]["stockHoldCreate"]["userErrors"][0]["field"], "quantity",
        "{too_big}"
    );
    let hold = app
        .gql(Some(&app.a.token), q, json!({"i": {"skuId": gid("Sku", sku), "warehouseId": gid("Warehouse", wh), "quantity": 6, "campaign": "live-1", "expiresAt": (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339()}}))
        .await;
    assert_eq!(
        hold["data"]["stockHoldCreate"]["hold"]["remaining"], 6,
        "{hold}"
    );
    let hold_id = hold["data"]["stockHoldCreate"]["hold"]["id"].clone();
    // Tenant B can neither see nor release it.
    let rel = "mutation($id: ID!) { stockHoldRelease(input: {id: $id}) { hold { status } userErrors { code } } }";
    let from_b = app
        .gql(Some(&app.b.token), rel, json!({"id": hold_id}))
        .await;
    assert_eq!(
        from_b["data"]["stockHoldRelease"]["userErrors"],
        json!([{"code": "NOT_FOUND"}])
    );
    let line = |q| {
        vec![Line {
            sku,
            warehouse: wh,
            quantity: q,
        }]
    };
    // A non-campaign order cannot take held stock: only 4 are general.
    let r = reservation::reserve(&app.core, &ctx, order("plain".into(), line(5), None)).await;
    assert!(matches!(r, Err(ServiceError::SoldOut { .. })), "{r:?}");
    let r = reservation::reserve(
        &app.core,
        &ctx,
        order("live".into(), line(5), Some("live-1")),
    )
    .await
    .unwrap();
    assert!(r.lines[0].1.is_some(), "drawn from the hold");
    assert_eq!(level(&app, &ctx, sku).await, (10, 5, 1));
    // The hold expires: its remaining unit returns to general stock by itself.
    app.start_worker(RelayFaults::default()).await;
    for _ in 0..60 {
        if level(&app, &ctx, sku).await.2 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(level(&app, &ctx, sku).await, (10, 5, 0));
    reservation::reserve(&app.core, &ctx, order("plain-2".into(), line(5), None))
        .await
        .unwrap();
    let r = reservation::reserve(&app.core, &ctx, order("plain-3".into(), line(1), None)).await;
    assert!(matches!(r, Err(ServiceError::SoldOut { .. })));
}

#[tokio::test]
async fn unpaid_reservations_expire_and_release_their_stock() {
    let mut app = spawn_app().await;
    let ctx = tenant_ctx(&app, &app.a.slug).await;
    let sku = seed_sku(&app, &app.a.slug, "PHYSICAL").await;
    let wh = warehouse(&app, &app.a.token, "SH").await;
    set_stock(&app, &app.a.token, sku, wh, 3, 0).await;
    let mut req = order(
        "short".into(),
        vec![Line {
            sku,
            warehouse: wh,
            quantity: 3,
        }],
        None,
    );
    req.ttl = Duration::from_millis(300);
    reservation::reserve(&app.core, &ctx, req).await.unwrap();
    assert_eq!(level(&app, &ctx, sku).await, (3, 3, 0));
    app.start_worker(RelayFaults::default()).await;
    for _ in 0..60 {
        if level(&app, &ctx, sku).await.1 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(level(&app, &ctx, sku).await, (3, 0, 0));
    assert_eq!(
        redis_field(&app, &ctx, sku, &format!("w:{wh}")).await,
        Some(3)
    );
    // Availability changes reached the outbox, debounced: fewer events than changes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let n: i64 = app
        .core
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM outbox WHERE topic = 'inventory.available_changed'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap();
    assert!((1..=3).contains(&n), "{n} events");
}

#[tokio::test]
async fn inventory_set_is_compare_and_set_and_rejects_bad_input_without_writing() {
    let app = spawn_app().await;
    let sku = seed_sku(&app, &app.a.slug, "PHYSICAL").await;
    let wh = warehouse(&app, &app.a.token, "SH").await;
    let r = set_stock(&app, &app.a.token, sku, wh, 10, 0).await;
    assert_eq!(
        r["data"]["inventorySet"]["inventoryLevel"]["available"], 10,
        "{r}"
    );
    let stale = set_stock(&app, &app.a.token, sku, wh, 20, 0).await;
    let e = &stale["data"]["inventorySet"]["userErrors"][0];
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("CONFLICT"), Some("changeFrom"))
    );
    assert!(e["message"].as_str().unwrap().contains("10"), "{stale}");
    let neg = set_stock(&app, &app.a.token, sku, wh, -1, 10).await;
    assert_eq!(
        neg["data"]["inventorySet"]["userErrors"][0]["code"],
        "VALIDATION"
    );
    let adj = "mutation($i: InventoryAdjustInput!) { inventoryAdjust(input: $i) { inventoryLevel { onHand } userErrors { code field } } }";
    let zero = app.gql(Some(&app.a.token), adj, json!({"i": {"skuId": gid("Sku", sku), "warehouseId": gid("Warehouse", wh), "delta": 0, "reason": "count"}})).await;
    assert_eq!(
        zero["data"]["inventoryAdjust"]["userErrors"][0]["field"],
        "delta"
    );
    let below = app.gql(Some(&app.a.token), adj, json!({"i": {"skuId": gid("Sku", sku), "warehouseId": gid("Warehouse", wh), "delta": -11, "reason": "damage"}})).await;
    assert_eq!(
        below["data"]["inventoryAdjust"]["userErrors"][0]["code"], "CONFLICT",
        "{below}"
    );
    let ok = app.gql(Some(&app.a.token), adj, json!({"i": {"skuId": gid("Sku", sku), "warehouseId": gid("Warehouse", wh), "delta": 5, "reason": "received"}})).await;
    assert_eq!(
        ok["data"]["inventoryAdjust"]["inventoryLevel"]["onHand"], 15,
        "{ok}"
    );
    // Tenant B: A's SKU answers like an unknown SKU, and nothing changes.
    let b_wh = warehouse(&app, &app.b.token, "BJ").await;
    let from_b = set_stock(&app, &app.b.token, sku, b_wh, 99, 15).await;
    let random = set_stock(&app, &app.b.token, Uuid::now_v7(), b_wh, 99, 15).await;
    assert_eq!(from_b["data"], random["data"]);
    let ctx = tenant_ctx(&app, &app.a.slug).await;
    assert_eq!(level(&app, &ctx, sku).await, (15, 0, 0));
    // A role without INVENTORY_WRITE is refused.
    let key = app
        .gql(Some(&app.a.token), "mutation { apiKeyCreate(input: {name: \"ro\", scopes: [\"INVENTORY_READ\"]}) { secret } }", json!({}))
        .await["data"]["apiKeyCreate"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        code(&set_stock(&app, &key, sku, wh, 1, 15).await),
        "FORBIDDEN"
    );
}

#[tokio::test]
async fn inventory_changes_are_pushed_live_to_the_same_tenant_only() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app().await;
    let sku = seed_sku(&app, &app.a.slug, "PHYSICAL").await;
    let wh = warehouse(&app, &app.a.token, "SH").await;
    let sub = |token: String| {
        let url = format!("{}/graphql/ws", app.addr.replace("http://", "ws://"));
        async move {
            let mut req = url.into_client_request().unwrap();
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                "graphql-transport-ws".parse().unwrap(),
            );
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            ws.send(Message::text(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}).to_string())).await.unwrap();
            ws.next().await.unwrap().unwrap();
            ws.send(Message::text(json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription($s: [ID!]!) { inventoryChanged(skuIds: $s) { skuId available } }", "variables": {"s": [gid("Sku", sku)]}}}).to_string())).await.unwrap();
            ws
        }
    };
    let mut ws_a = sub(app.a.token.clone()).await;
    let mut ws_b = sub(app.b.token.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    set_stock(&app, &app.a.token, sku, wh, 42, 0).await;
    let msg = tokio::time::timeout(Duration::from_secs(5), ws_a.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eprintln!("live stock push after {:?}", started.elapsed());
    let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(
        v["payload"]["data"]["inventoryChanged"]["available"], 42,
        "{v}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), ws_b.next())
            .await
            .is_err()
    );
}

/// A TCP proxy to Redis that can be cut, to take Redis away from one process.
async fn redis_proxy() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            conns.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:6379").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, handle)
}

#[tokio::test]
async fn with_redis_down_reservations_are_decided_by_postgres_alone_and_never_oversell() {
    let app = spawn_app().await;
    let ctx = tenant_ctx(&app, &app.a.slug).await;
    let sku = seed_sku(&app, &app.a.slug, "PHYSICAL").await;
    let wh = warehouse(&app, &app.a.token, "SH").await;
    set_stock(&app, &app.a.token, sku, wh, 5, 0).await;
    let (port, proxy) = redis_proxy().await;
    let mut cfg = (*app.core.cfg).clone();
    cfg.redis_url = format!("redis://127.0.0.1:{port}/0");
    let cut_off = uphub_services::Core::connect(cfg).await.unwrap();
    proxy.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ok = 0;
    for i in 0..7 {
        match reservation::reserve(
            &cut_off,
            &ctx,
            order(
                format!("pg-{i}"),
                vec![Line {
                    sku,
                    warehouse: wh,
                    quantity: 1,
                }],
                None,
            ),
        )
        .await
        {
            Ok(_) => ok += 1,
            Err(ServiceError::SoldOut { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(level(&app, &ctx, sku).await, (5, 5, 0));
    assert_eq!(ledger_reserved(&app, &ctx, sku).await, 5);
}

#[tokio::test]
async fn another_tenant_sees_no_holds_of_a_sku_and_its_reconcile_leaves_the_cache_alone() {
    let app = spawn_app().await;
    let sku = seed_sku(&app, &app.a.slug, "PHYSICAL").await;
    let wh = warehouse(&app, &app.a.token, "HB").await;
    set_stock(&app, &app.a.token, sku, wh, 10, 0).await;
    let q = "mutation($i: StockHoldCreateInput!) { stockHoldCreate(input: $i) { hold { id } userErrors { code } } }";
    let hold = app
        .gql(Some(&app.a.token), q, json!({"i": {"skuId": gid("Sku", sku), "warehouseId": gid("Warehouse", wh), "quantity": 4, "campaign": "live-b", "expiresAt": (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339()}}))
        .await;
    assert!(
        hold["data"]["stockHoldCreate"]["hold"]["id"].is_string(),
        "{hold}"
    );
    let holds = "query($ids: [ID!]!) { stockHolds(skuIds: $ids) { id remaining } }";
    let a = app
        .gql(Some(&app.a.token), holds, json!({"ids": [gid("Sku", sku)]}))
        .await;
    assert_eq!(
        a["data"]["stockHolds"].as_array().map(Vec::len),
        Some(1),
        "{a}"
    );
    let b = app
        .gql(Some(&app.b.token), holds, json!({"ids": [gid("Sku", sku)]}))
        .await;
    assert_eq!(b["data"]["stockHolds"], json!([]), "{b}");

    // Tenant B's reconcile finds no drift of its own and does not touch A's cache.
    let ctx = tenant_ctx(&app, &app.a.slug).await;
    let key = stock_cache::key(&app.core, ctx.tenant, sku);
    let mut conn = app.core.redis.clone();
    // A's own reconcile loads A's cache; B's must leave it exactly as it is.
    app.gql(
        Some(&app.a.token),
        "mutation { inventoryReconcile { drift } }",
        json!({}),
    )
    .await;
    let before: std::collections::HashMap<String, i64> =
        redis::AsyncCommands::hgetall(&mut conn, &key)
            .await
            .unwrap();
    assert!(!before.is_empty(), "A's stock hash is loaded");
    let r = app
        .gql(
            Some(&app.b.token),
            "mutation { inventoryReconcile { drift userErrors { code } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["inventoryReconcile"]["drift"], 0, "{r}");
    let after: std::collections::HashMap<String, i64> =
        redis::AsyncCommands::hgetall(&mut conn, &key)
            .await
            .unwrap();
    assert_eq!(before, after);
}

const RESERVE: &str = "mutation($i: StockReservationCreateInput!) { stockReservationCreate(input: $i) { stockReservation { id reference status lines { skuId warehouse { id } quantity } } userErrors { code field message } } }";

async fn manual_reserve(
    app: &TestApp,
    token: &str,
    reference: &str,
    lines: serde_json::Value,
    ttl: Option<i32>,
) -> serde_json::Value {
    let r = app
        .gql(
            Some(token),
            RESERVE,
            json!({"i": {"reference": reference, "lines": lines, "ttlSeconds": ttl}}),
        )
        .await;
    r["data"]["stockReservationCreate"].clone()
}

async fn end_reservation(app: &TestApp, token: &str, verb: &str, id: &str) -> serde_json::Value {
    let q = format!(
        "mutation($i: StockReservationEndInput!) {{ stockReservation{verb}(input: $i) {{ stockReservation {{ id status }} userErrors {{ code field }} }} }}"
    );
    let r = app.gql(Some(token), &q, json!({"i": {"id": id}})).await;
    r["data"][format!("stockReservation{verb}")].clone()
}

#[tokio::test]
async fn manual_stock_reservations_draw_from_the_pool_and_end_confirmed_or_released() {
    let app = spawn_app().await;
    let ctx = tenant_ctx(&app, &app.a.slug).await;
    let sku = seed_sku(&app, &app.a.slug, "PHYSICAL").await;
    let foreign = seed_sku(&app, &app.b.slug, "PHYSICAL").await;
    let wh = warehouse(&app, &app.a.token, "SH").await;
    set_stock(&app, &app.a.token, sku, wh, 10, 0).await;
    let line = |s: Uuid, q: i32| json!([{"skuId": gid("Sku", s), "warehouseId": gid("Warehouse", wh), "quantity": q}]);

    // Four units for a wholesale order: reserved, all or nothing, under the caller's reference.
    let p = manual_reserve(&app, &app.a.token, " PO-1 ", line(sku, 4), None).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let r = &p["stockReservation"];
    assert_eq!(r["reference"], "PO-1");
    assert_eq!(r["status"], "ACTIVE");
    assert_eq!(r["lines"][0]["quantity"], 4);
    assert_eq!(r["lines"][0]["skuId"], gid("Sku", sku));
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(level(&app, &ctx, sku).await, (10, 4, 0));

    // Bad input: typed errors, nothing written.
    let codes = |p: &serde_json::Value| {
        (
            p["userErrors"][0]["code"]
                .as_str()
                .unwrap_or("<none>")
                .to_string(),
            p["userErrors"][0]["field"]
                .as_str()
                .unwrap_or("<none>")
                .to_string(),
        )
    };
    let again = manual_reserve(&app, &app.a.token, "PO-1", line(sku, 1), None).await;
    assert_eq!(
        codes(&again),
        ("CONFLICT".into(), "reference".into()),
        "{again}"
    );
    let too_many = manual_reserve(&app, &app.a.token, "PO-2", line(sku, 7), None).await;
    assert_eq!(codes(&too_many).0, "SOLD_OUT", "{too_many}");
    let theirs = manual_reserve(&app, &app.a.token, "PO-3", line(foreign, 1), None).await;
    assert_eq!(
        codes(&theirs),
        ("VALIDATION".into(), "skuId".into()),
        "{theirs}"
    );
    let zero = manual_reserve(&app, &app.a.token, "PO-4", line(sku, 0), None).await;
    assert_eq!(codes(&zero).0, "VALIDATION", "{zero}");
    let short = manual_reserve(&app, &app.a.token, "PO-5", line(sku, 1), Some(5)).await;
    assert_eq!(
        codes(&short),
        ("VALIDATION".into(), "ttlSeconds".into()),
        "{short}"
    );
    let blank = manual_reserve(&app, &app.a.token, "  ", line(sku, 1), None).await;
    assert_eq!(
        codes(&blank),
        ("VALIDATION".into(), "reference".into()),
        "{blank}"
    );
    assert_eq!(level(&app, &ctx, sku).await, (10, 4, 0));
    assert_eq!(ledger_reserved(&app, &ctx, sku).await, 4);

    // The other store sees nothing and can end nothing.
    let q = "query($id: ID!) { stockReservation(id: $id) { id status } }";
    let seen = app.gql(Some(&app.b.token), q, json!({"id": id})).await;
    assert_eq!(seen["data"]["stockReservation"], json!(null), "{seen}");
    for verb in ["Release", "Confirm"] {
        let p = end_reservation(&app, &app.b.token, verb, &id).await;
        assert_eq!(codes(&p).0, "NOT_FOUND", "{p}");
    }
    assert_eq!(level(&app, &ctx, sku).await, (10, 4, 0));
    // An order's reservation is not a manual one: this API cannot end it.
    let order_res = reservation::reserve(
        &app.core,
        &ctx,
        order(
            "order-1".into(),
            vec![Line {
                sku,
                warehouse: wh,
                quantity: 1,
            }],
            None,
        ),
    )
    .await
    .unwrap();
    let p = end_reservation(
        &app,
        &app.a.token,
        "Release",
        &gid("StockReservation", order_res.id),
    )
    .await;
    assert_eq!(codes(&p).0, "NOT_FOUND", "{p}");
    assert_eq!(level(&app, &ctx, sku).await, (10, 5, 0));

    // Confirmed: the stock left with the deal, once.
    let mine = app.gql(Some(&app.a.token), q, json!({"id": id})).await;
    assert_eq!(mine["data"]["stockReservation"]["status"], "ACTIVE");
    let p = end_reservation(&app, &app.a.token, "Confirm", &id).await;
    assert_eq!(p["stockReservation"]["status"], "CONFIRMED", "{p}");
    assert_eq!(level(&app, &ctx, sku).await, (6, 1, 0));
    let p = end_reservation(&app, &app.a.token, "Confirm", &id).await;
    assert_eq!(codes(&p).0, "CONFLICT", "{p}");
    assert_eq!(level(&app, &ctx, sku).await, (6, 1, 0));

    // Released: the stock goes back, and Redis agrees.
    let p = manual_reserve(&app, &app.a.token, "PO-6", line(sku, 5), Some(600)).await;
    let id6 = p["stockReservation"]["id"].as_str().unwrap().to_string();
    assert_eq!(level(&app, &ctx, sku).await, (6, 6, 0));
    let p = end_reservation(&app, &app.a.token, "Release", &id6).await;
    assert_eq!(p["stockReservation"]["status"], "RELEASED", "{p}");
    assert_eq!(level(&app, &ctx, sku).await, (6, 1, 0));
    assert_eq!(
        redis_field(&app, &ctx, sku, &format!("w:{wh}")).await,
        Some(5)
    );
}

#[tokio::test]
async fn concurrent_reservations_of_different_people_share_commits_but_keep_who_reserved_and_a_duplicate_fails_alone()
 {
    let app = spawn_app().await;
    let tenant = tenant_ctx(&app, &app.a.slug).await.tenant;
    let sku = seed_sku(&app, &app.a.slug, "PHYSICAL").await;
    let wh = warehouse(&app, &app.a.token, "SH").await;
    set_stock(&app, &app.a.token, sku, wh, 1000, 0).await;
    let people: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200usize {
        let person = people[i % people.len()];
        let core = app.core.clone();
        tasks.spawn(async move {
            let ctx = RequestCtx::staff(
                tenant,
                uphub_tenants::UserId(person),
                vec![uphub_domain::identity::Role::Operator],
                Uuid::now_v7(),
                0,
            );
            // 50 owners are asked for twice: the second of each pair must fail alone.
            let owner = format!("o-{}", i % 150);
            let line = Line {
                sku,
                warehouse: wh,
                quantity: 1,
            };
            let r = reservation::reserve(&core, &ctx, order(owner, vec![line], None)).await;
            (person, r)
        });
    }
    let (mut ok, mut conflicts) = (Vec::new(), 0);
    while let Some(t) = tasks.join_next().await {
        match t.unwrap() {
            (person, Ok(r)) => ok.push((person, r.id)),
            (_, Err(ServiceError::Conflict { .. })) => conflicts += 1,
            (_, Err(e)) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((ok.len(), conflicts), (150, 50));
    let ctx = tenant_ctx(&app, &app.a.slug).await;
    assert_eq!(level(&app, &ctx, sku).await, (1000, 150, 0));
    assert_eq!(ledger_reserved(&app, &ctx, sku).await, 150);
    // Redis gave the refused duplicates' units back.
    assert_eq!(
        redis_field(&app, &ctx, sku, &format!("w:{wh}")).await,
        Some(850)
    );
    // Each ledger row names the person whose reservation it is, whichever batch carried it.
    let tx = uphub_tenants::TenantTx::begin(&app.core.db, ctx.tenant)
        .await
        .unwrap();
    // And the crowd did share transactions (the group commit), far fewer than one each.
    let txs: i64 = tx
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(DISTINCT xmin::text) AS n FROM reservations WHERE tenant_id = $1 AND owner_kind = 'ORDER'",
            [ctx.tenant.0.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap();
    assert!(txs < 100, "{txs} transactions for 150 reservations");
    for (person, id) in ok {
        let row = tx
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT actor_id FROM inventory_ledger WHERE tenant_id = $1 AND owner_kind = 'RESERVATION' AND owner_id = $2",
                [ctx.tenant.0.into(), id.to_string().into()],
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.try_get::<Option<Uuid>>("", "actor_id").unwrap(),
            Some(person)
        );
    }
}
