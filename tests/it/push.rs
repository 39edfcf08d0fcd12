//! Doudian push messages: a signed push makes its connection due, so an order shows up long
//! before the next scheduled pull; a forged or misdirected push is refused alike and changes
//! nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uphub_channels::sign::doudian_event_sign;
use uphub_channels_mock::{OrderSpec, Platform, ShopSpec};
use uphub_services::outbox::RelayFaults;
use uuid::Uuid;

use crate::helpers::{Options, TestApp, spawn_app_with};
use crate::orders::{Market, buyer, connect, line, shop, start_mock, wait_orders};

/// Scheduled pulls once an hour: anything sooner is the push's doing.
fn hourly_sync() -> Options {
    Options {
        tweak: |c| c.channel_sync_every_ms = 3_600_000,
        ..Options::default()
    }
}

pub async fn tenant_id(app: &TestApp, slug: &str) -> Uuid {
    uphub_services::identity::tenant_by_slug(&app.core, slug)
        .await
        .unwrap()
        .unwrap()
        .id
}

pub fn raw_id(kind: &str, gid: &str) -> Uuid {
    Uuid::parse_str(&uphub_domain::gid::decode(kind, gid).unwrap()).unwrap()
}

pub async fn sql_rows(app: &TestApp, sql: &str) -> Vec<sea_orm::QueryResult> {
    use sea_orm::ConnectionTrait;
    app.core
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql,
        ))
        .await
        .unwrap()
}

/// Every connection, as the scheduler sees it (owner role, all tenants).
pub async fn connection_rows(app: &TestApp) -> Vec<String> {
    sql_rows(
        app,
        "SELECT concat_ws('|', tenant_id, channel_id, sync_requested, lease_owner, lease_until,
            last_sync_at, sync_cursor, status, updated_at) AS r
         FROM channel_connections ORDER BY tenant_id, channel_id",
    )
    .await
    .iter()
    .map(|r| r.try_get::<String>("", "r").unwrap())
    .collect()
}

/// Waits until every connection has finished its first round and holds no lease.
pub async fn wait_first_rounds(app: &TestApp, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = sql_rows(
            app,
            "SELECT count(*) AS n FROM channel_connections
             WHERE last_success_at IS NOT NULL AND lease_owner IS NULL AND NOT sync_requested",
        )
        .await;
        if r[0].try_get::<i64>("", "n").unwrap() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            connection_rows(app).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn push_url(app: &TestApp, tenant: impl std::fmt::Display, conn: impl std::fmt::Display) -> String {
    format!("{}/push/doudian/{tenant}/{conn}", app.addr)
}

/// A Doudian message list naming `order` of `shop_id`, as the platform sends it.
fn message(shop_id: &str, order: &str) -> String {
    let data = json!({"p_id": order, "s_ids": [format!("{order}1")], "shop_id": shop_id,
                      "order_status": 105, "update_time": chrono::Utc::now().timestamp()});
    json!([{"tag": "101", "msg_id": format!("7000000000001:101-{order}"), "data": data.to_string()}])
        .to_string()
}

/// POSTs `body` signed as `signer`'s app (unsigned with `None`); returns status and body.
async fn post_push(
    app: &TestApp,
    url: &str,
    signer: Option<&ShopSpec>,
    body: &str,
) -> (u16, Value) {
    let mut req = app
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = signer {
        req = req
            .header(
                "event-sign",
                doudian_event_sign(&s.app_key, &s.app_secret, body.as_bytes()),
            )
            .header("app-id", &s.app_key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({"raw": text})),
    )
}

fn place(m: &Market, shop_id: &str, buyer_id: &str) -> String {
    m.mock
        .place_order(OrderSpec {
            platform: Platform::Douyin,
            shop_id: shop_id.into(),
            buyer_id: buyer_id.into(),
            receiver: buyer("张三"),
            lines: vec![line("PUSH-1", 1)],
            post_fee_fen: 0,
            paid: true,
        })
        .unwrap()
}

fn has(list: &[Value], pid: &str) -> bool {
    list.iter().any(|o| o["platformOrderId"] == pid)
}

#[tokio::test]
async fn a_doudian_push_brings_an_order_in_long_before_the_next_scheduled_pull() {
    let mut app = spawn_app_with(hourly_sync()).await;
    app.start_worker(RelayFaults::default()).await;
    let m = start_mock(41).await;
    let token = app.a.token.clone();
    let pushed_conn = connect(&app, &token, &m, Platform::Douyin, "dy-pushed").await;
    // A second shop without a webhook: its order waits for the hourly pull.
    connect(&app, &token, &m, Platform::Douyin, "dy-quiet").await;
    wait_first_rounds(&app, 2).await;
    let tenant = tenant_id(&app, &app.a.slug).await;
    // The connection tells the operator what to enter as the shop's webhook address.
    let r = app
        .gql(
            Some(&token),
            "{ channelConnections { channel { id } pushUrl } }",
            json!({}),
        )
        .await;
    let announced = r["data"]["channelConnections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"]["id"] == pushed_conn.as_str())
        .and_then(|c| c["pushUrl"].as_str())
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let path = format!(
        "/push/doudian/{tenant}/{}",
        raw_id("SalesChannel", &pushed_conn)
    );
    assert!(announced.ends_with(&path), "{announced}");
    let url = push_url(&app, tenant, raw_id("SalesChannel", &pushed_conn));
    assert!(url.ends_with(&path));
    m.mock.add_shop(ShopSpec {
        webhook_url: Some(url.clone()),
        ..shop(Platform::Douyin, "dy-pushed")
    });

    let started = Instant::now();
    let pushed = place(&m, "dy-pushed", "b1");
    let quiet = place(&m, "dy-quiet", "b2");
    let list = wait_orders(&app, &token, 20, |l| has(l, &pushed)).await;
    eprintln!("pushed order visible after {:?}", started.elapsed());
    assert!(!has(&list, &quiet), "{list:?}");
    assert!(
        m.mock.push_stats().delivered >= 1,
        "{:?}",
        m.mock.push_stats()
    );
    assert_eq!(m.mock.push_stats().abandoned, 0);

    // A duplicated push (and a replay of it) is acknowledged and changes nothing: the pull
    // is the source of truth, and it holds the order once.
    let spec = shop(Platform::Douyin, "dy-pushed");
    let body = message("dy-pushed", &pushed);
    for _ in 0..2 {
        let (status, answer) = post_push(&app, &url, Some(&spec), &body).await;
        assert_eq!(
            (status, answer),
            (200, json!({"code": 0, "msg": "success"}))
        );
    }
    wait_first_rounds(&app, 2).await;
    let list = wait_orders(&app, &token, 5, |l| has(l, &pushed)).await;
    assert_eq!(
        list.iter()
            .filter(|o| o["platformOrderId"] == pushed)
            .count(),
        1,
        "{list:?}"
    );
    assert!(!has(&list, &quiet), "{list:?}");
}

#[tokio::test]
async fn a_forged_or_misdirected_doudian_push_is_refused_alike_and_changes_nothing() {
    let mut app = spawn_app_with(hourly_sync()).await;
    app.start_worker(RelayFaults::default()).await;
    let m = start_mock(43).await;
    let conn_a = connect(&app, &app.a.token, &m, Platform::Douyin, "dy-alpha").await;
    let conn_b = connect(&app, &app.b.token, &m, Platform::Douyin, "dy-beta").await;
    wait_first_rounds(&app, 2).await;
    let (ta, tb) = (
        tenant_id(&app, &app.a.slug).await,
        tenant_id(&app, &app.b.slug).await,
    );
    let (ca, cb) = (
        raw_id("SalesChannel", &conn_a),
        raw_id("SalesChannel", &conn_b),
    );
    let spec_a = shop(Platform::Douyin, "dy-alpha");
    let forged = ShopSpec {
        app_secret: "not-the-secret".into(),
        ..spec_a.clone()
    };
    let body = message("dy-alpha", "6920000000000000001");
    let before = connection_rows(&app).await;

    let refused = [
        ("forged signature", push_url(&app, ta, ca), Some(&forged)),
        ("unsigned", push_url(&app, ta, ca), None),
        (
            "the other tenant's connection under this tenant",
            push_url(&app, ta, cb),
            Some(&spec_a),
        ),
        (
            "the other tenant's connection under its own tenant",
            push_url(&app, tb, cb),
            Some(&spec_a),
        ),
        (
            "this connection under the other tenant",
            push_url(&app, tb, ca),
            Some(&spec_a),
        ),
        (
            "an unknown connection",
            push_url(&app, ta, Uuid::now_v7()),
            Some(&spec_a),
        ),
        (
            "a malformed id",
            push_url(&app, ta, "not-a-uuid"),
            Some(&spec_a),
        ),
    ];
    let mut answers = Vec::new();
    for (what, url, signer) in &refused {
        let (status, answer) = post_push(&app, url, *signer, &body).await;
        assert_eq!(status, 401, "{what}: {answer}");
        answers.push((what, answer));
    }
    for (what, answer) in &answers {
        assert_eq!(
            answer, &answers[0].1,
            "{what} answers like a forged signature"
        );
    }
    assert_eq!(answers[0].1["code"], 40003);
    assert_eq!(answers[0].1["error"], "UNAUTHENTICATED");

    // Correctly signed but not a message list: a typed refusal, no panic, no change.
    for bad in ["not json", "{}", "[{\"tag\":\"101\",\"data\":\"{oops\"}]"] {
        let (status, answer) = post_push(&app, &push_url(&app, ta, ca), Some(&spec_a), bad).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["code"], 40004, "{answer}");
        assert_eq!(answer["error"], "BAD_REQUEST", "{answer}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(connection_rows(&app).await, before, "nothing changed");

    // The very same request, signed by the connection's app, is accepted and makes only that
    // connection due.
    let (status, answer) = post_push(&app, &push_url(&app, ta, ca), Some(&spec_a), &body).await;
    assert_eq!(
        (status, answer),
        (200, json!({"code": 0, "msg": "success"}))
    );
    let after = connection_rows(&app).await;
    let changed: Vec<_> = after.iter().filter(|r| !before.contains(r)).collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].contains(&ca.to_string()), "{changed:?}");
}
