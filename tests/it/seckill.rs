//! Flash sales end to end: the `uphub seckill` edge (JSON and GraphQL), Redis admission, the
//! ticket queue, the batch order writers in the worker, Postgres, the marketplace path racing
//! the same SKU, and the other tenant seeing none of it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use uphub_api::seckill::Edge;
use uphub_channels_mock::{OrderSpec, Platform};
use uphub_services::outbox::RelayFaults;
use uphub_services::seckill::{self, SeckillConfig};
use uphub_tenants::TenantId;
use uuid::Uuid;

use crate::helpers::{TestApp, http_client, spawn_app, spawn_app_with};
use crate::orders::{buyer, connect, fast_sync, line, start_mock, stocked_sku};

/// Limits that never get in the way (one test host is every buyer's IP).
fn open_limits() -> SeckillConfig {
    SeckillConfig {
        ip_rate_per_sec: 1e6,
        ip_burst: 1e6,
        buyer_rate_per_sec: 1e6,
        buyer_burst: 1e6,
        ..SeckillConfig::default()
    }
}

/// Starts a flash-sale edge on the app's Core; returns its base URL.
async fn start_edge(app: &TestApp, cfg: SeckillConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(uphub_api::seckill::serve(
        Edge::new(app.core.clone(), cfg),
        listener,
        std::future::pending(),
    ));
    for _ in 0..100 {
        if reqwest::get(format!("{url}/healthz")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    url
}

async fn tenant_id(app: &TestApp, slug: &str) -> TenantId {
    TenantId(
        uphub_services::identity::tenant_by_slug(&app.core, slug)
            .await
            .unwrap()
            .unwrap()
            .id,
    )
}

/// The worker's relay, stock jobs, channel sync and consumers, without the flash-sale writer.
/// Dropping the sender stops them.
async fn worker_without_writer(app: &TestApp) -> tokio::sync::watch::Sender<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let core = app.core.clone();
    let handlers = uphub_api::handlers(&core).unwrap();
    uphub_api::declare_topology(&core, &handlers).await.unwrap();
    tokio::spawn(uphub_services::outbox::run_relay(
        core.clone(),
        RelayFaults::default(),
        rx.clone(),
    ));
    tokio::spawn(uphub_api::run_stock_jobs(core.clone(), rx.clone()));
    tokio::spawn(uphub_api::run_channel_sync(core.clone(), rx.clone()));
    for h in handlers {
        tokio::spawn(uphub_services::consumer::run(core.clone(), h, rx.clone()));
    }
    tx
}

/// `n` buyers of the tenant (rows inserted as the owner) with their tokens.
async fn buyers(app: &TestApp, tenant: TenantId, n: usize) -> Vec<(Uuid, String)> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    app.core
        .db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO buyers (tenant_id, id, nickname) SELECT $1, b, 'fan' FROM unnest($2::uuid[]) AS b",
            [tenant.0.into(), ids.clone().into()],
        ))
        .await
        .unwrap();
    ids.into_iter()
        .map(|b| {
            let (t, _) = uphub_services::auth::issue_buyer_token(&app.core, tenant, b).unwrap();
            (b, t)
        })
        .collect()
}

async fn own_channel(app: &TestApp, token: &str) -> String {
    let r = app
        .gql(
            Some(token),
            "mutation($i: SalesChannelCreateInput!) { salesChannelCreate(input: $i) { salesChannel { id } userErrors { code } } }",
            json!({"i": {"type": "WECHAT_MINI", "shopId": format!("mini-{}", Uuid::now_v7().simple()), "name": "小程序"}}),
        )
        .await;
    r["data"]["salesChannelCreate"]["salesChannel"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string()
}

const CREATE: &str = "mutation($i: SeckillCampaignCreateInput!) { seckillCampaignCreate(input: $i) {
    campaign { id quota perBuyerLimit price { amount currency } warmedAt stats { remaining queued ticketsWon unitsWon } }
    userErrors { field code message } } }";

#[allow(clippy::too_many_arguments)]
fn campaign_input(
    sku: &str,
    wh: &str,
    channel: &str,
    quota: i64,
    limit: i64,
    starts_in: chrono::Duration,
    lasts: chrono::Duration,
) -> Value {
    let starts = chrono::Utc::now() + starts_in;
    json!({"i": {"skuId": sku, "warehouseId": wh, "channelId": channel, "quota": quota,
                 "price": {"amount": "9.90", "currency": "CNY"},
                 "startsAt": starts.to_rfc3339(), "endsAt": (starts + lasts).to_rfc3339(),
                 "perBuyerLimit": limit, "paymentMinutes": 15}})
}

/// A SKU with `units` on hand, the store's mini-program channel and a running campaign selling
/// all of them, `limit` per buyer: (sku, warehouse, channel, campaign).
async fn stocked_sale(
    app: &TestApp,
    token: &str,
    code: &str,
    units: i32,
    limit: i64,
) -> (String, String, String, String) {
    let (sku, wh) = stocked_sku(app, token, code, units).await;
    let channel = own_channel(app, token).await;
    let campaign =
        running_campaign(app, token, (&sku, &wh, &channel), i64::from(units), limit).await;
    (sku, wh, channel, campaign)
}

/// A running campaign (started a second ago, ten minutes left); returns its id.
async fn running_campaign(
    app: &TestApp,
    token: &str,
    (sku, wh, channel): (&str, &str, &str),
    quota: i64,
    limit: i64,
) -> String {
    let r = app
        .gql(
            Some(token),
            CREATE,
            campaign_input(
                sku,
                wh,
                channel,
                quota,
                limit,
                chrono::Duration::seconds(-1),
                chrono::Duration::minutes(10),
            ),
        )
        .await;
    let p = &r["data"]["seckillCampaignCreate"];
    assert_eq!(p["userErrors"], json!([]), "{r}");
    assert!(p["campaign"]["warmedAt"].is_string(), "{r}");
    p["campaign"]["id"].as_str().unwrap().to_string()
}

async fn post_buy(
    http: &reqwest::Client,
    edge: &str,
    token: &str,
    campaign: &str,
    qty: i64,
    req: &str,
) -> (u16, Value) {
    let resp = http
        .post(format!("{edge}/seckill/buy"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(json!({"campaignId": campaign, "quantity": qty, "requestId": req}).to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Long-polls the ticket until it is decided.
async fn decided(http: &reqwest::Client, edge: &str, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: Value = http
            .get(format!("{edge}/seckill/tickets/{id}/wait?timeoutMs=5000"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["ticket"]["status"] != "QUEUED" {
            return r["ticket"].clone();
        }
        assert!(Instant::now() < deadline, "ticket {id} never decided: {r}");
    }
}

async fn next_json<S, E>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<tokio_tungstenite::tungstenite::Message, E>> + Unpin,
    E: std::fmt::Debug,
{
    use futures_util::StreamExt;
    let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    serde_json::from_str::<Value>(msg.to_text().unwrap()).unwrap()
}

fn err_code(v: &Value) -> &str {
    v["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

async fn scalar(app: &TestApp, sql: &str, values: Vec<sea_orm::Value>) -> i64 {
    app.core
        .db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
}

fn uuid_of(kind: &str, gid: &str) -> Uuid {
    Uuid::try_parse(&uphub_domain::gid::decode(kind, gid).unwrap()).unwrap()
}

async fn redis_hget(app: &TestApp, key: &str, field: &str) -> Option<i64> {
    let mut conn = app.core.redis.clone();
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn campaign_key(app: &TestApp, tenant: TenantId, campaign: Uuid, rest: &str) -> String {
    app.core.key(&format!("{tenant}:sk:{campaign}"), rest)
}

#[tokio::test]
async fn a_thousand_buyers_race_for_fifty_units_while_taobao_sells_ten_and_nothing_oversells() {
    let app = spawn_app_with(fast_sync()).await;
    let stop = worker_without_writer(&app).await;
    let token = app.a.token.clone();
    let tenant = tenant_id(&app, &app.a.slug).await;
    let m = start_mock(11).await;
    connect(&app, &token, &m, Platform::Taobao, "tb-flash").await;
    let (sku, wh, _, campaign) = stocked_sale(&app, &token, "FLASH-1", 50, 2).await;
    let edge = start_edge(&app, open_limits()).await;
    let people = buyers(&app, tenant, 1000).await;
    let http = http_client();

    // Taobao sells ten single units of the same SKU while the crowd races.
    let market = {
        let mock = m.mock.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                mock.place_order(OrderSpec {
                    platform: Platform::Taobao,
                    shop_id: "tb-flash".into(),
                    buyer_id: format!("tb-fan-{i}"),
                    receiver: buyer("王五"),
                    lines: vec![line("FLASH-1", 1)],
                    post_fee_fen: 0,
                    paid: true,
                })
                .unwrap();
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    // Each buyer asks for one or two units, then (whatever happened) tries once more for one.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (b, t)) in people.iter().cloned().enumerate() {
        let (http, edge, campaign) = (http.clone(), edge.clone(), campaign.clone());
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for (n, qty) in [(0, 1 + (i % 2) as i64), (1, 1)] {
                let (status, r) =
                    post_buy(&http, &edge, &t, &campaign, qty, &format!("r{i}-{n}")).await;
                assert_eq!(status, 200, "{r}");
                let mut ticket = r["ticket"].clone();
                if ticket["status"] == "QUEUED" {
                    ticket = decided(&http, &edge, &t, ticket["id"].as_str().unwrap()).await;
                }
                seen.push(ticket);
            }
            (b, seen)
        });
    }
    // The crowd is admitted by Redis and queued while Taobao's orders are ingested; once the
    // first of them holds its unit, the flash-sale writers start deciding — the rest of
    // Taobao's orders settle while they do, on the same row.
    let deadline = Instant::now() + Duration::from_secs(60);
    while scalar(
        &app,
        "SELECT count(*) FROM orders WHERE channel_type = 'TAOBAO' AND stock_state = 'RESERVED'",
        vec![],
    )
    .await
        == 0
    {
        assert!(Instant::now() < deadline, "no Taobao order settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::spawn(seckill::run_order_writer(
        app.core.clone(),
        stop.subscribe(),
    ));
    let mut won_units: HashMap<Uuid, i64> = HashMap::new();
    let mut won_tickets = Vec::new();
    let mut statuses: HashMap<String, usize> = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (b, seen) = r.unwrap();
        for t in seen {
            *statuses
                .entry(t["status"].as_str().unwrap().to_string())
                .or_default() += 1;
            if t["status"] == "WON" {
                *won_units.entry(b).or_default() += t["quantity"].as_i64().unwrap();
                assert!(
                    t["orderId"].is_string() && t["paymentDueAt"].is_string(),
                    "{t}"
                );
                won_tickets.push(t);
            }
        }
    }
    market.await.unwrap();
    eprintln!("ticket outcomes seen by buyers: {statuses:?}");

    // The ten marketplace orders are ingested and settled (reserved or short).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let settled = scalar(
            &app,
            "SELECT count(*) FROM orders WHERE channel_type = 'TAOBAO' AND stock_state IN ('RESERVED', 'SHORT')",
            vec![],
        )
        .await;
        if settled == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "marketplace orders settled: {settled}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sku_id = uuid_of("Sku", &sku);
    let marketplace: i64 = scalar(
        &app,
        "SELECT coalesce(sum(l.quantity), 0)::bigint FROM orders o JOIN order_lines l ON l.tenant_id = o.tenant_id AND l.order_id = o.id
         WHERE o.channel_type = 'TAOBAO' AND o.stock_state = 'RESERVED'",
        vec![],
    )
    .await;
    let flash: i64 = won_units.values().sum();
    let db_flash = scalar(
        &app,
        "SELECT coalesce(sum(quantity), 0)::bigint FROM seckill_tickets WHERE status = 'WON'",
        vec![],
    )
    .await;
    let reserved = scalar(
        &app,
        "SELECT reserved::bigint FROM inventory_levels WHERE sku_id = $1",
        vec![sku_id.into()],
    )
    .await;
    eprintln!("flash sale {flash} units, Taobao {marketplace} units, reserved {reserved}");
    // At most the fifty on hand are sold across both channels — and here all of them.
    assert!(marketplace >= 1, "Taobao sold in the race");
    assert_eq!(flash + marketplace, 50);
    assert_eq!(reserved, 50);
    assert_eq!(db_flash, flash, "buyers saw what Postgres decided");
    // Per-buyer limits held.
    assert!(won_units.values().all(|u| *u <= 2), "{won_units:?}");
    // The writers decided in batches: one transaction (one hot-row update) for many tickets.
    let tickets = scalar(&app, "SELECT count(*) FROM seckill_tickets", vec![]).await;
    let batches = scalar(
        &app,
        "SELECT count(DISTINCT decided_at) FROM seckill_tickets",
        vec![],
    )
    .await;
    eprintln!("{tickets} tickets decided in {batches} transactions");
    assert!(
        batches * 5 <= tickets,
        "{tickets} tickets, {batches} batches"
    );
    // Every WON ticket has exactly one order, and every flash-sale order one WON ticket.
    for t in &won_tickets {
        let order = uuid_of("Order", t["orderId"].as_str().unwrap());
        let r = seckill::TicketRef::decode(t["id"].as_str().unwrap()).unwrap();
        assert_eq!(
            scalar(
                &app,
                "SELECT count(*) FROM orders o JOIN reservations r ON r.tenant_id = o.tenant_id AND r.id = o.reservation_id
                 WHERE o.platform_order_id = $1 AND o.id = $2 AND o.status = 'PENDING_PAYMENT'
                   AND o.stock_state = 'RESERVED' AND o.payment_due_at > now() AND o.buyer_id IS NOT NULL
                   AND r.status = 'ACTIVE' AND r.owner_kind = 'ORDER' AND r.owner_id = o.id::text",
                vec![format!("SK-{}", r.ticket).into(), order.into()],
            )
            .await,
            1,
            "{t}"
        );
    }
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM orders WHERE channel_type = 'WECHAT_MINI'",
            vec![]
        )
        .await,
        won_tickets.len() as i64
    );
    // The ledger agrees with the level.
    assert_eq!(
        scalar(
            &app,
            "SELECT sum(delta_reserved)::bigint FROM inventory_ledger WHERE sku_id = $1",
            vec![sku_id.into()]
        )
        .await,
        50
    );
    // Redis: the quota of tickets that lost in Postgres came back; nothing is left in flight.
    let c = uuid_of("SeckillCampaign", &campaign);
    assert_eq!(
        redis_hget(&app, &campaign_key(&app, tenant, c, "c"), "q").await,
        Some(50 - flash)
    );
    let mut conn = app.core.redis.clone();
    let pending: i64 = redis::cmd("ZCARD")
        .arg(campaign_key(&app, tenant, c, "pq"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending, 1, "only the placeholder is left");
    // The general stock hash was told (or is repaired by the reconciler): nothing left to sell.
    uphub_services::stock_cache::reconcile_all(&app.core)
        .await
        .unwrap();
    assert_eq!(
        redis_hget(
            &app,
            &uphub_services::stock_cache::key(&app.core, tenant, sku_id),
            &format!("w:{}", uuid_of("Warehouse", &wh))
        )
        .await,
        Some(0)
    );
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_writes_nothing() {
    let mut app = spawn_app().await;
    app.start_worker(RelayFaults::default()).await;
    let token = app.a.token.clone();
    let tenant = tenant_id(&app, &app.a.slug).await;
    let (sku, wh) = stocked_sku(&app, &token, "BAD-1", 10).await;
    let channel = own_channel(&app, &token).await;
    let edge = start_edge(&app, open_limits()).await;
    let http = http_client();
    let people = buyers(&app, tenant, 2).await;
    let (b1, t1) = people[0].clone();

    // Staff side: unknown SKU, quota above what is available, limit above quota, a marketplace
    // channel, an inverted window — each a typed user error, and no campaign written.
    let taobao = app
        .gql(
            Some(&token),
            "mutation($i: SalesChannelCreateInput!) { salesChannelCreate(input: $i) { salesChannel { id } } }",
            json!({"i": {"type": "TAOBAO", "shopId": "tb-x", "name": "tb"}}),
        )
        .await["data"]["salesChannelCreate"]["salesChannel"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let min = chrono::Duration::minutes(1);
    let h = chrono::Duration::hours(1);
    let unknown_sku = uphub_domain::gid::encode("Sku", Uuid::now_v7());
    for (input, field, code) in [
        (
            campaign_input(&unknown_sku, &wh, &channel, 5, 1, min, h),
            "skuId",
            "VALIDATION",
        ),
        (
            campaign_input(&sku, &wh, &channel, 11, 1, min, h),
            "quota",
            "CONFLICT",
        ),
        (
            campaign_input(&sku, &wh, &channel, 5, 6, min, h),
            "perBuyerLimit",
            "VALIDATION",
        ),
        (
            campaign_input(&sku, &wh, &taobao, 5, 1, min, h),
            "channelId",
            "VALIDATION",
        ),
        (
            campaign_input(&sku, &wh, &channel, 5, 1, min, -min),
            "endsAt",
            "VALIDATION",
        ),
    ] {
        let r = app.gql(Some(&token), CREATE, input).await;
        let e = &r["data"]["seckillCampaignCreate"]["userErrors"][0];
        assert_eq!(
            (e["field"].as_str(), e["code"].as_str()),
            (Some(field), Some(code)),
            "{r}"
        );
    }
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM seckill_campaigns", vec![]).await,
        0
    );
    // A buyer token is no staff token.
    let r = app
        .gql(
            Some(&t1),
            CREATE,
            campaign_input(&sku, &wh, &channel, 5, 1, min, h),
        )
        .await;
    assert_eq!(err_code(&r), "FORBIDDEN", "{r}");

    let campaign = running_campaign(&app, &token, (&sku, &wh, &channel), 5, 2).await;
    let later = app
        .gql(
            Some(&token),
            CREATE,
            campaign_input(&sku, &wh, &channel, 2, 1, h, h),
        )
        .await["data"]["seckillCampaignCreate"]["campaign"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let short = app
        .gql(
            Some(&token),
            CREATE,
            campaign_input(
                &sku,
                &wh,
                &channel,
                2,
                1,
                chrono::Duration::seconds(-1),
                chrono::Duration::seconds(2),
            ),
        )
        .await["data"]["seckillCampaignCreate"]["campaign"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Buyer side at the edge.
    let unknown = uphub_domain::gid::encode("SeckillCampaign", Uuid::now_v7());
    for (c, qty, req, status, code, field) in [
        (&unknown, 1, "a", 404, "NOT_FOUND", None),
        (&"garbage".to_string(), 1, "a", 404, "NOT_FOUND", None),
        (&campaign, 0, "a", 400, "VALIDATION", Some("quantity")),
        (&campaign, 3, "a", 400, "VALIDATION", Some("quantity")),
        (
            &campaign,
            1,
            "no|pipes",
            400,
            "VALIDATION",
            Some("requestId"),
        ),
        (
            &later,
            1,
            "a",
            409,
            "CAMPAIGN_NOT_STARTED",
            Some("campaignId"),
        ),
    ] {
        let (s, r) = post_buy(&http, &edge, &t1, c, qty, req).await;
        assert_eq!((s, err_code(&r)), (status, code), "{r}");
        assert_eq!(r["errors"][0]["extensions"]["field"].as_str(), field, "{r}");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, r) = post_buy(&http, &edge, &t1, &short, 1, "late").await;
    assert_eq!((s, err_code(&r)), (409, "CAMPAIGN_ENDED"), "{r}");
    // Transport: no token, a staff token, an API key, no JSON, a malformed body.
    let raw = |auth: Option<String>, ctype: &str, body: &str| {
        let mut req = http
            .post(format!("{edge}/seckill/buy"))
            .header("content-type", ctype)
            .body(body.to_string());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let good = json!({"campaignId": campaign, "quantity": 1, "requestId": "x"}).to_string();
    assert_eq!(
        raw(None, "application/json", &good).await.unwrap().status(),
        401
    );
    assert_eq!(
        raw(Some(format!("Bearer {token}")), "application/json", &good)
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        raw(Some("Bearer uhk_x_y".into()), "application/json", &good)
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        raw(Some(format!("Bearer {t1}")), "text/plain", &good)
            .await
            .unwrap()
            .status(),
        415
    );
    assert_eq!(
        raw(
            Some(format!("Bearer {t1}")),
            "application/json",
            "{\"campaignId\": 1}"
        )
        .await
        .unwrap()
        .status(),
        400
    );
    // None of that queued a ticket or wrote a row.
    let c = uuid_of("SeckillCampaign", &campaign);
    assert_eq!(
        redis_hget(&app, &campaign_key(&app, tenant, c, "c"), "q").await,
        Some(5)
    );

    // A replayed request gets its first ticket back; another quantity under it is a CONFLICT.
    let (_, first) = post_buy(&http, &edge, &t1, &campaign, 2, "once").await;
    assert_eq!(first["ticket"]["status"], "QUEUED", "{first}");
    let (_, again) = post_buy(&http, &edge, &t1, &campaign, 2, "once").await;
    assert_eq!(again["ticket"]["id"], first["ticket"]["id"], "{again}");
    assert_eq!(again["ticket"]["replayed"], true);
    let (s, other) = post_buy(&http, &edge, &t1, &campaign, 1, "once").await;
    assert_eq!((s, err_code(&other)), (409, "CONFLICT"), "{other}");
    let id = first["ticket"]["id"].as_str().unwrap().to_string();
    let won = decided(&http, &edge, &t1, &id).await;
    assert_eq!(won["status"], "WON", "{won}");
    // The limit is 2: the buyer's next request is LIMIT_EXCEEDED at once (nothing queued).
    let (_, more) = post_buy(&http, &edge, &t1, &campaign, 1, "more").await;
    assert_eq!(more["ticket"]["status"], "LIMIT_EXCEEDED", "{more}");
    assert_eq!(more["ticket"]["id"], Value::Null);

    // A replayed ticket (redelivery, or the upkeep re-publishing it) changes nothing.
    let r = seckill::TicketRef::decode(&id).unwrap();
    let msg = seckill::TicketMsg {
        campaign_id: c,
        ticket_id: r.ticket,
        buyer_id: b1,
        request_id: "once".into(),
        quantity: 2,
        admitted_ms: 1,
    };
    for _ in 0..2 {
        let tx = uphub_tenants::TenantTx::begin(&app.core.db, tenant)
            .await
            .unwrap();
        let out = seckill::write_batch(&app.core, &tx, &[msg.clone(), msg.clone()])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(out.decided.len(), 1);
        assert_eq!(out.decided[0].status, seckill::TicketStatus::Won);
        assert!(out.orders.is_empty() && out.reserved.is_empty());
        seckill::after_batch(&app.core, tenant, &out).await;
    }
    // Malformed messages on the queue are parked; the writer keeps deciding.
    let ch = app.core.amqp.create_channel().await.unwrap();
    for body in [
        &b"not json"[..],
        &br#"{"id":"00000000-0000-0000-0000-000000000000"}"#[..],
    ] {
        ch.basic_publish(
            "".into(),
            app.core.queue(seckill::TICKET_QUEUE).as_str().into(),
            Default::default(),
            body,
            Default::default(),
        )
        .await
        .unwrap();
    }
    let (_, second) = post_buy(&http, &edge, &people[1].1, &campaign, 1, "after").await;
    let t = decided(
        &http,
        &edge,
        &people[1].1,
        second["ticket"]["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(t["status"], "WON", "{t}");

    assert_eq!(
        scalar(&app, "SELECT count(*) FROM orders", vec![]).await,
        2,
        "one order per WON ticket, none for anything refused"
    );
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM seckill_tickets", vec![]).await,
        2
    );
    assert_eq!(
        scalar(
            &app,
            "SELECT reserved::bigint FROM inventory_levels WHERE sku_id = $1",
            vec![uuid_of("Sku", &sku).into()]
        )
        .await,
        3
    );
    assert_eq!(
        redis_hget(&app, &campaign_key(&app, tenant, c, "c"), "q").await,
        Some(2)
    );
}

#[tokio::test]
async fn token_buckets_refuse_a_flooding_buyer_and_a_flooding_ip_at_the_edge() {
    let app = spawn_app().await;
    let token = app.a.token.clone();
    let tenant = tenant_id(&app, &app.a.slug).await;
    let (_, _, _, campaign) = stocked_sale(&app, &token, "RATE-1", 100, 100).await;
    let edge = start_edge(
        &app,
        SeckillConfig {
            ip_rate_per_sec: 0.5,
            ip_burst: 4.0,
            buyer_rate_per_sec: 0.5,
            buyer_burst: 2.0,
            trust_forwarded_for: true,
            ..SeckillConfig::default()
        },
    )
    .await;
    let people = buyers(&app, tenant, 4).await;
    let http = http_client();
    let buy_from = |ip: &'static str, token: String, req: String| {
        http.post(format!("{edge}/seckill/buy"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
            .body(json!({"campaignId": campaign, "quantity": 1, "requestId": req}).to_string())
            .send()
    };
    // One buyer: a burst of two, then 429 with Retry-After.
    let mut codes = Vec::new();
    for i in 0..3 {
        let r = buy_from("10.0.0.1", people[0].1.clone(), format!("b{i}"))
            .await
            .unwrap();
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
            let v: Value = r.json().await.unwrap();
            assert_eq!(err_code(&v), "RATE_LIMITED");
            assert!(
                v["errors"][0]["extensions"]["retryAfterMs"]
                    .as_u64()
                    .unwrap()
                    > 0
            );
        }
    }
    assert_eq!(codes, vec![200, 200, 429]);
    // One IP (the balancer's last X-Forwarded-For entry): four requests, then 429 — for any buyer.
    let mut codes = Vec::new();
    for (i, (_, t)) in people[1..].iter().chain(people[1..].iter()).enumerate() {
        let r = buy_from("10.0.0.2", t.clone(), format!("ip{i}"))
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(codes, vec![200, 200, 200, 200, 429, 429]);
    // Another IP is unaffected.
    let r = buy_from("10.0.0.3", people[3].1.clone(), "fresh".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A refused request charged nothing and queued nothing: 2 + 4 + 1 admitted.
    let c = uuid_of("SeckillCampaign", &campaign);
    assert_eq!(
        redis_hget(&app, &campaign_key(&app, tenant, c, "c"), "q").await,
        Some(93)
    );
}

#[tokio::test]
async fn the_other_tenant_can_neither_see_nor_buy_nor_warm_a_campaign() {
    let mut app = spawn_app().await;
    app.start_worker(RelayFaults::default()).await;
    let token = app.a.token.clone();
    let tenant_a = tenant_id(&app, &app.a.slug).await;
    let tenant_b = tenant_id(&app, &app.b.slug).await;
    let (_, _, _, campaign) = stocked_sale(&app, &token, "ISO-1", 10, 1).await;
    let edge = start_edge(&app, open_limits()).await;
    let http = http_client();
    let a = buyers(&app, tenant_a, 2).await;
    let b = buyers(&app, tenant_b, 1).await;
    let (_, mine) = post_buy(&http, &edge, &a[0].1, &campaign, 1, "mine").await;
    let id = mine["ticket"]["id"].as_str().unwrap().to_string();
    assert_eq!(decided(&http, &edge, &a[0].1, &id).await["status"], "WON");

    // B's buyer: A's campaign does not exist, at the edge and on the gateway.
    let (s, r) = post_buy(&http, &edge, &b[0].1, &campaign, 1, "theirs").await;
    assert_eq!((s, err_code(&r)), (404, "NOT_FOUND"), "{r}");
    let buy = "mutation($i: SeckillBuyInput!) { seckillBuy(input: $i) { ticket { id status } userErrors { field code } } }";
    let r = app
        .gql(
            Some(&b[0].1),
            buy,
            json!({"i": {"campaignId": campaign, "quantity": 1, "requestId": "gw"}}),
        )
        .await;
    assert_eq!(
        r["data"]["seckillBuy"]["userErrors"][0]["code"], "NOT_FOUND",
        "{r}"
    );
    // Neither B's buyer nor another buyer of A can read the ticket.
    for t in [&b[0].1, &a[1].1] {
        let resp = http
            .get(format!("{edge}/seckill/tickets/{id}"))
            .header("authorization", format!("Bearer {t}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        let r = app
            .gql(
                Some(t),
                "query($id: ID!) { seckillTicket(id: $id) { status } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(r["data"]["seckillTicket"], Value::Null, "{r}");
    }
    // B's staff: no campaign, no ticket, nothing to warm.
    let r = app
        .gql(
            Some(&app.b.token),
            "query($id: ID!, $t: ID!) { seckillCampaigns { edges { node { id } } } seckillCampaign(id: $id) { id } seckillTicket(id: $t) { status } }",
            json!({"id": campaign, "t": id}),
        )
        .await;
    assert_eq!(r["data"]["seckillCampaigns"]["edges"], json!([]), "{r}");
    assert_eq!(r["data"]["seckillCampaign"], Value::Null);
    assert_eq!(r["data"]["seckillTicket"], Value::Null);
    let r = app
        .gql(
            Some(&app.b.token),
            "mutation($i: SeckillCampaignWarmInput!) { seckillCampaignWarm(input: $i) { campaign { id } userErrors { code } } }",
            json!({"i": {"id": campaign}}),
        )
        .await;
    assert_eq!(
        r["data"]["seckillCampaignWarm"]["userErrors"][0]["code"], "NOT_FOUND",
        "{r}"
    );
    // …and A's staff sees both, with the order the ticket won.
    let r = app
        .gql(
            Some(&token),
            "query($id: ID!, $t: ID!) { seckillCampaign(id: $id) { stats { ticketsWon unitsWon remaining } } seckillTicket(id: $t) { status orderId } }",
            json!({"id": campaign, "t": id}),
        )
        .await;
    assert_eq!(
        r["data"]["seckillCampaign"]["stats"],
        json!({"ticketsWon": 1, "unitsWon": 1, "remaining": 9}),
        "{r}"
    );
    assert_eq!(r["data"]["seckillTicket"]["status"], "WON");
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM orders WHERE tenant_id = $1",
            vec![tenant_b.0.into()]
        )
        .await,
        0
    );
}

#[tokio::test]
async fn the_gateway_graphql_buys_and_the_subscription_reports_the_ticket_until_it_is_won() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut app = spawn_app().await;
    let token = app.a.token.clone();
    let tenant = tenant_id(&app, &app.a.slug).await;
    let (_, _, _, campaign) = stocked_sale(&app, &token, "GQL-1", 5, 1).await;
    let edge = start_edge(&app, open_limits()).await;
    let people = buyers(&app, tenant, 2).await;
    let buy = "mutation($i: SeckillBuyInput!) { seckillBuy(input: $i) { ticket { id status quantity } userErrors { field code } } }";
    // No worker yet: the ticket stays QUEUED.
    let r = app
        .gql(
            Some(&people[0].1),
            buy,
            json!({"i": {"campaignId": campaign, "quantity": 1, "requestId": "gw-1"}}),
        )
        .await;
    let ticket = r["data"]["seckillBuy"]["ticket"].clone();
    assert_eq!(ticket["status"], "QUEUED", "{r}");
    let id = ticket["id"].as_str().unwrap().to_string();
    // The edge's own GraphQL serves the same buyer fields.
    let r: Value = http_client()
        .post(format!("{edge}/graphql"))
        .header("authorization", format!("Bearer {}", people[1].1))
        .header("content-type", "application/json")
        .body(json!({"query": buy, "variables": {"i": {"campaignId": campaign, "quantity": 2, "requestId": "e-1"}}}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["data"]["seckillBuy"]["userErrors"][0]["field"], "quantity",
        "{r}"
    );

    let url = format!("{}/graphql/ws", app.addr.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", people[0].1)}}).to_string())).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.send(Message::text(json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription($id: ID!) { seckillTicketChanged(id: $id) { status orderId } }", "variables": {"id": id}}}).to_string())).await.unwrap();
    let first = next_json(&mut ws).await;
    assert_eq!(
        first["payload"]["data"]["seckillTicketChanged"]["status"], "QUEUED",
        "{first}"
    );
    app.start_worker(RelayFaults::default()).await;
    let won = next_json(&mut ws).await;
    let won = &won["payload"]["data"]["seckillTicketChanged"];
    assert_eq!(won["status"], "WON", "{won}");
    assert_eq!(next_json(&mut ws).await["type"], "complete");
    // The staff see the order like any other, on the tenant's own channel.
    let order = won["orderId"].as_str().unwrap();
    let r = app
        .gql(
            Some(&token),
            "query($id: ID!) { order(id: $id) { status channelType stockState total { amount } lines { quantity } } }",
            json!({"id": order}),
        )
        .await;
    assert_eq!(
        r["data"]["order"],
        json!({"status": "PENDING_PAYMENT", "channelType": "WECHAT_MINI", "stockState": "RESERVED",
               "total": {"amount": "9.90"}, "lines": [{"quantity": 1}]}),
        "{r}"
    );
}

#[tokio::test]
async fn a_flushed_campaign_is_rewarmed_from_postgres_and_a_lost_ticket_is_published_again() {
    let mut app = spawn_app().await;
    let token = app.a.token.clone();
    let tenant = tenant_id(&app, &app.a.slug).await;
    let (_, _, _, campaign) = stocked_sale(&app, &token, "LOST-1", 10, 3).await;
    let edge = start_edge(&app, open_limits()).await;
    let http = http_client();
    let people = buyers(&app, tenant, 1).await;
    let t = &people[0].1;
    // Admitted while no writer runs; then the broker loses the message.
    let (_, lost) = post_buy(&http, &edge, t, &campaign, 2, "lost").await;
    assert_eq!(lost["ticket"]["status"], "QUEUED", "{lost}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ch = app.core.amqp.create_channel().await.unwrap();
    let purged = ch
        .queue_purge(
            app.core.queue(seckill::TICKET_QUEUE).as_str().into(),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(purged, 1);
    app.start_worker(RelayFaults::default()).await;
    let id = lost["ticket"]["id"].as_str().unwrap().to_string();
    let won = decided(&http, &edge, t, &id).await;
    assert_eq!(won["status"], "WON", "re-published from Redis: {won}");

    // Redis forgets the campaign: the worker rebuilds it from Postgres (2 of 10 units won, the
    // buyer holds 2 of 3), and the first request id still answers with its ticket.
    let c = uuid_of("SeckillCampaign", &campaign);
    let mut conn = app.core.redis.clone();
    for k in ["c", "bought", "req", "tk", "pq"] {
        let _: i64 = redis::cmd("DEL")
            .arg(campaign_key(&app, tenant, c, k))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let (s, gone) = post_buy(&http, &edge, t, &campaign, 1, "meanwhile").await;
    assert_eq!((s, err_code(&gone)), (404, "NOT_FOUND"), "{gone}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_hget(&app, &campaign_key(&app, tenant, c, "c"), "q")
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "never re-warmed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        redis_hget(&app, &campaign_key(&app, tenant, c, "c"), "q").await,
        Some(8)
    );
    let (_, replay) = post_buy(&http, &edge, t, &campaign, 2, "lost").await;
    assert_eq!(replay["ticket"]["id"], json!(id), "{replay}");
    assert_eq!(replay["ticket"]["status"], "WON");
    let (_, over) = post_buy(&http, &edge, t, &campaign, 2, "over").await;
    assert_eq!(over["ticket"]["status"], "LIMIT_EXCEEDED", "{over}");
    let (_, ok) = post_buy(&http, &edge, t, &campaign, 1, "last").await;
    assert_eq!(ok["ticket"]["status"], "QUEUED", "{ok}");
    // Staff can also warm by hand; a warm campaign is left as it is.
    let r = app
        .gql(
            Some(&token),
            "mutation($i: SeckillCampaignWarmInput!) { seckillCampaignWarm(input: $i) { campaign { stats { remaining } } userErrors { code } } }",
            json!({"i": {"id": campaign}}),
        )
        .await;
    assert_eq!(
        r["data"]["seckillCampaignWarm"]["campaign"]["stats"]["remaining"], 7,
        "{r}"
    );
}

#[tokio::test]
async fn an_unpaid_order_is_cancelled_at_its_deadline_and_its_unit_goes_back_on_sale() {
    let mut app = spawn_app().await;
    app.start_worker(RelayFaults::default()).await;
    let token = app.a.token.clone();
    let tenant = tenant_id(&app, &app.a.slug).await;
    let (sku, _, _, campaign) = stocked_sale(&app, &token, "UNPAID-1", 1, 1).await;
    let edge = start_edge(&app, open_limits()).await;
    let http = http_client();
    let people = buyers(&app, tenant, 2).await;
    let (_, first) = post_buy(&http, &edge, &people[0].1, &campaign, 1, "a").await;
    let id = first["ticket"]["id"].as_str().unwrap().to_string();
    let won = decided(&http, &edge, &people[0].1, &id).await;
    assert_eq!(won["status"], "WON", "{won}");
    let (_, late) = post_buy(&http, &edge, &people[1].1, &campaign, 1, "b").await;
    assert_eq!(late["ticket"]["status"], "SOLD_OUT", "{late}");
    // The buyer does not pay: the deadline passes.
    let order = uuid_of("Order", won["orderId"].as_str().unwrap());
    app.core
        .db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE orders SET payment_due_at = now() - interval '1 second' WHERE id = $1",
            [order.into()],
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r: Value = http
            .get(format!("{edge}/seckill/tickets/{id}"))
            .header("authorization", format!("Bearer {}", people[0].1))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["ticket"]["status"] == "CANCELLED" {
            break;
        }
        assert!(Instant::now() < deadline, "never cancelled: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM orders o JOIN reservations r ON r.tenant_id = o.tenant_id AND r.id = o.reservation_id
             WHERE o.id = $1 AND o.status = 'CANCELLED' AND o.stock_state = 'RELEASED' AND r.status = 'RELEASED'",
            vec![order.into()]
        )
        .await,
        1
    );
    // The unit is on sale again, for anyone — the first buyer included.
    let (_, again) = post_buy(&http, &edge, &people[1].1, &campaign, 1, "b2").await;
    let t = decided(
        &http,
        &edge,
        &people[1].1,
        again["ticket"]["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(t["status"], "WON", "{t}");
    assert_eq!(
        scalar(
            &app,
            "SELECT reserved::bigint FROM inventory_levels WHERE sku_id = $1",
            vec![uuid_of("Sku", &sku).into()]
        )
        .await,
        1
    );
    let c = uuid_of("SeckillCampaign", &campaign);
    assert_eq!(
        redis_hget(&app, &campaign_key(&app, tenant, c, "c"), "q").await,
        Some(0)
    );
}
