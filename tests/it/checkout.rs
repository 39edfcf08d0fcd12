//! Own-channel checkout and payments end to end: a buyer places an order, pays through the WeChat
//! Pay / Alipay mock (in-process, signed callbacks to our endpoints), the deadline sweeper and
//! the settle loop move the stock — and the other tenant sees none of it.

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use uphub_payments::mock::{AlipayApp, DevKeys, PayMock, PayMockConfig, WechatMerchant};
use uphub_payments::wechatpay::{ApiV3Key, EncryptedResource, NotifyEnvelope, SignedHeaders};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};
use crate::orders::stocked_sku;

const APIV3: &str = "0123456789abcdef0123456789abcdef";
const PLATFORM_SERIAL: &str = "PLATFORM_SERIAL_1";
const MCH_A: &str = "1900000001";
const MCH_B: &str = "1900000002";
const ALI_APP: &str = "2021000000000001";

struct Env {
    app: TestApp,
    mock: PayMock,
    mock_url: String,
    tenant_a: Uuid,
    tenant_b: Uuid,
    /// Buyer token, address id and buyer id of tenant A.
    buyer: (String, String, Uuid),
    sku: String,
}

async fn sql(app: &TestApp, q: &str, values: Vec<sea_orm::Value>) -> Vec<sea_orm::QueryResult> {
    app.core
        .db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            q,
            values,
        ))
        .await
        .unwrap()
}

async fn tenant_id(app: &TestApp, slug: &str) -> Uuid {
    uphub_services::identity::tenant_by_slug(&app.core, slug)
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn channel(app: &TestApp, token: &str, kind: &str) {
    let r = app
        .gql(
            Some(token),
            "mutation($i: SalesChannelCreateInput!) { salesChannelCreate(input: $i) { salesChannel { id } userErrors { code } } }",
            json!({"i": {"type": kind, "shopId": format!("own-{}", Uuid::now_v7().simple()), "name": "小程序"}}),
        )
        .await;
    assert!(
        r["data"]["salesChannelCreate"]["salesChannel"]["id"].is_string(),
        "{r}"
    );
}

/// A buyer row with a WeChat openid (and an Alipay user id), its token and one address.
async fn buyer(app: &TestApp, tenant: Uuid) -> (String, String, Uuid) {
    let id = Uuid::now_v7();
    sql(
        app,
        "INSERT INTO buyers (tenant_id, id, wechat_openid, alipay_user_id) VALUES ($1, $2, $3, $4)",
        vec![
            tenant.into(),
            id.into(),
            format!("o-{}", id.simple()).into(),
            format!("2088{}", &id.simple().to_string()[20..]).into(),
        ],
    )
    .await;
    let (token, _) =
        uphub_services::auth::issue_buyer_token(&app.core, uphub_tenants::TenantId(tenant), id)
            .unwrap();
    let r = app
        .gql(
            Some(&token),
            "mutation($i: BuyerAddressCreateInput!) { buyerAddressCreate(input: $i) { address { id } userErrors { code message } } }",
            json!({"i": {"receiverName": "张三", "receiverPhone": "13800138000", "province": "浙江省",
                         "city": "杭州市", "district": "西湖区", "detail": "文三路 100 号", "isDefault": true}}),
        )
        .await;
    let address = r["data"]["buyerAddressCreate"]["address"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    (token, address, id)
}

async fn pay_settings(app: &TestApp, token: &str, mock_url: &str, mchid: &str) {
    let keys = DevKeys::shared().unwrap();
    let r = app
        .gql(
            Some(token),
            "mutation($i: PaymentSettingsSetInput!) { paymentSettingsSet(input: $i) { settings { wechatMchid alipayAppId } userErrors { field code message } } }",
            json!({"i": {
                "notifyBaseUrl": app.addr,
                "wechat": {"mchid": mchid, "appid": "wx-mini-app", "merchantSerialNo": "MERCHANT_SERIAL",
                           "merchantPrivateKeyPem": keys.wechat_merchant.to_pkcs8_pem().unwrap(),
                           "apiV3Key": APIV3, "platformSerial": PLATFORM_SERIAL,
                           "platformPublicKeyPem": keys.wechat_platform.public_key().to_pem().unwrap(),
                           "baseUrl": mock_url},
                "alipay": {"appId": ALI_APP, "appPrivateKeyPem": keys.alipay_app.to_pkcs8_pem().unwrap(),
                           "alipayPublicKeyPem": keys.alipay_platform.public_key().to_pem().unwrap(),
                           "gatewayUrl": format!("{mock_url}/gateway.do")}}}),
        )
        .await;
    let p = &r["data"]["paymentSettingsSet"];
    assert_eq!(p["userErrors"], json!([]), "{r}");
    assert_eq!(p["settings"]["wechatMchid"], mchid, "{r}");
    assert!(
        !r.to_string().contains("PRIVATE KEY"),
        "secrets never come back: {r}"
    );
}

async fn setup() -> Env {
    let app = spawn_app().await;
    let keys = DevKeys::shared().unwrap();
    let mut cfg = PayMockConfig::new(
        keys.wechat_platform.clone(),
        PLATFORM_SERIAL,
        keys.alipay_platform.clone(),
    );
    for mchid in [MCH_A, MCH_B] {
        cfg.wechat_merchants.push(WechatMerchant {
            mchid: mchid.into(),
            serial_no: "MERCHANT_SERIAL".into(),
            public_key: keys.wechat_merchant.public_key(),
            apiv3_key: ApiV3Key::new(APIV3).unwrap(),
        });
    }
    cfg.alipay_apps.push(AlipayApp {
        app_id: ALI_APP.into(),
        public_key: keys.alipay_app.public_key(),
    });
    let mock = PayMock::new(cfg);
    let addr = mock.spawn().await.unwrap();
    let mock_url = format!("http://{addr}");
    let tenant_a = tenant_id(&app, &app.a.slug).await;
    let tenant_b = tenant_id(&app, &app.b.slug).await;
    for (t, mchid) in [(&app.a.token, MCH_A), (&app.b.token, MCH_B)] {
        channel(&app, t, "WECHAT_MINI").await;
        pay_settings(&app, t, &mock_url, mchid).await;
    }
    let (sku, _) = stocked_sku(&app, &app.a.token, "TEE-CK", 5).await;
    let buyer = buyer(&app, tenant_a).await;
    Env {
        app,
        mock,
        mock_url,
        tenant_a,
        tenant_b,
        buyer,
        sku,
    }
}

const PLACE: &str = "mutation($i: OrderPlaceInput!) { orderPlace(input: $i) {
    order { id number status total { amount currency } paymentDueAt lines { quantity unitPrice { amount } } }
    userErrors { field code message } } }";

const PAY: &str = "mutation($i: PaymentCreateInput!) { paymentCreate(input: $i) {
    payment { id outTradeNo amount { amount } wechat { appId package paySign } alipayTradeNo }
    userErrors { field code message } } }";

const ORDER: &str = "query($id: ID!) { buyerOrder(id: $id) { id status paidAt activationCodes } }";

impl Env {
    async fn place(&self, sku: &str, qty: i32, key: &str) -> Value {
        let (token, address, _) = &self.buyer;
        self.app
            .gql(
                Some(token),
                PLACE,
                json!({"i": {"channel": "WECHAT_MINI", "lines": [{"skuId": sku, "quantity": qty}],
                             "addressId": address, "idempotencyKey": key}}),
            )
            .await
    }

    async fn place_ok(&self, sku: &str, qty: i32) -> String {
        let r = self.place(sku, qty, &Uuid::now_v7().to_string()).await;
        r["data"]["orderPlace"]["order"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string()
    }

    async fn pay_create(&self, token: &str, order: &str, provider: &str) -> Value {
        self.app
            .gql(
                Some(token),
                PAY,
                json!({"i": {"orderId": order, "provider": provider, "idempotencyKey": Uuid::now_v7().to_string()}}),
            )
            .await
    }

    /// Starts a WeChat Pay payment of the buyer's order; returns its out_trade_no.
    async fn wechat_start(&self, order: &str) -> String {
        let r = self.pay_create(&self.buyer.0, order, "WECHAT_PAY").await;
        let p = &r["data"]["paymentCreate"]["payment"];
        assert!(
            p["wechat"]["paySign"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{r}"
        );
        p["outTradeNo"].as_str().unwrap().to_string()
    }

    async fn status(&self, order: &str) -> String {
        let r = self
            .app
            .gql(Some(&self.buyer.0), ORDER, json!({"id": order}))
            .await;
        r["data"]["buyerOrder"]["status"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string()
    }

    async fn count(&self, q: &str, values: Vec<sea_orm::Value>) -> i64 {
        sql(&self.app, q, values).await[0].try_get("", "n").unwrap()
    }

    async fn reserved(&self) -> i32 {
        let sku = uuid_of(&self.sku);
        sql(
            &self.app,
            "SELECT sum(reserved)::int AS r FROM inventory_levels WHERE sku_id = $1",
            vec![sku.into()],
        )
        .await[0]
            .try_get("", "r")
            .unwrap()
    }

    /// Posts a WeChat Pay payment callback of our own making (signed with `signer` at `timestamp`).
    async fn wechat_callback(
        &self,
        tenant: Uuid,
        notification_id: &str,
        transaction: Value,
        signer: &uphub_payments::keys::PrivateKey,
        timestamp: i64,
    ) -> (u16, String) {
        self.wechat_event(
            tenant,
            notification_id,
            ("TRANSACTION.SUCCESS", "transaction"),
            transaction,
            signer,
            timestamp,
        )
        .await
    }

    async fn wechat_event(
        &self,
        tenant: Uuid,
        notification_id: &str,
        (event_type, original_type): (&str, &str),
        plaintext: Value,
        signer: &uphub_payments::keys::PrivateKey,
        timestamp: i64,
    ) -> (u16, String) {
        let key = ApiV3Key::new(APIV3).unwrap();
        let nonce = "abcdefghijkl";
        let envelope = NotifyEnvelope {
            id: notification_id.into(),
            create_time: "2026-01-01T00:00:00+08:00".into(),
            event_type: event_type.into(),
            resource_type: "encrypt-resource".into(),
            summary: "支付成功".into(),
            resource: EncryptedResource {
                algorithm: "AEAD_AES_256_GCM".into(),
                ciphertext: key
                    .encrypt(nonce, original_type, plaintext.to_string().as_bytes())
                    .unwrap(),
                associated_data: original_type.into(),
                nonce: nonce.into(),
                original_type: original_type.into(),
            },
        };
        let body = serde_json::to_string(&envelope).unwrap();
        let signed =
            SignedHeaders::sign(signer, PLATFORM_SERIAL, timestamp, "n0nce", body.as_bytes())
                .unwrap();
        let mut req = self
            .app
            .http
            .post(format!("{}/pay/wechat/{tenant}", self.app.addr))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in signed.pairs() {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

fn uuid_of(gid: &str) -> Uuid {
    Uuid::parse_str(&uphub_domain::gid::decode("Sku", gid).unwrap()).unwrap()
}

fn order_uuid(gid: &str) -> Uuid {
    Uuid::parse_str(&uphub_domain::gid::decode("Order", gid).unwrap()).unwrap()
}

fn transaction(mchid: &str, out_trade_no: &str, total: i64) -> Value {
    json!({"appid": "wx-mini-app", "mchid": mchid, "out_trade_no": out_trade_no,
           "transaction_id": "4200000000000000000001", "trade_type": "JSAPI", "trade_state": "SUCCESS",
           "trade_state_desc": "支付成功", "bank_type": "OTHERS", "success_time": "2026-01-01T00:00:00+08:00",
           "payer": {"openid": "o-x"}, "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"}})
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn wechat_payment_marks_the_order_paid_exactly_once_even_when_the_callback_repeats() {
    let env = setup().await;
    let order = env.place_ok(&env.sku, 2).await;
    assert_eq!(env.reserved().await, 2);
    let out_trade_no = env.wechat_start(&order).await;

    let report = env.mock.pay(&out_trade_no).await.unwrap();
    assert!(report.delivered, "{report:?}");
    assert_eq!(env.status(&order).await, "PAID");

    // The same trade reported again (a new notification id) and a byte-identical redelivery.
    let keys = DevKeys::shared().unwrap();
    let txn = transaction(MCH_A, &out_trade_no, 2 * 9900);
    for id in ["again-1", "again-1"] {
        let (s, body) = env
            .wechat_callback(
                env.tenant_a,
                id,
                txn.clone(),
                &keys.wechat_platform,
                now_unix(),
            )
            .await;
        assert_eq!(s, 204, "{body}");
    }
    let oid = order_uuid(&order);
    let paid_events = env
        .count(
            "SELECT count(*) AS n FROM order_events WHERE order_id = $1 AND to_status = 'PAID'",
            vec![oid.into()],
        )
        .await;
    assert_eq!(paid_events, 1);
    // The stock now waits for shipping; the settle loop keeps the reservation.
    uphub_services::orders::settle_dirty(&env.app.core, 100)
        .await
        .unwrap();
    let rows = sql(
        &env.app,
        "SELECT o.stock_state, r.status, r.expires_at > now() + interval '300 days' AS long
         FROM orders o JOIN reservations r ON r.owner_kind = 'ORDER' AND r.owner_id = o.id::text WHERE o.id = $1",
        vec![oid.into()],
    )
    .await;
    assert_eq!(
        rows[0].try_get::<String>("", "stock_state").unwrap(),
        "RESERVED"
    );
    assert_eq!(rows[0].try_get::<String>("", "status").unwrap(), "ACTIVE");
    assert!(rows[0].try_get::<bool>("", "long").unwrap());
    assert_eq!(env.reserved().await, 2);
}

#[tokio::test]
async fn forged_stale_and_unknown_wechat_callbacks_are_rejected_and_change_nothing() {
    let env = setup().await;
    let order = env.place_ok(&env.sku, 1).await;
    let out_trade_no = env.wechat_start(&order).await;
    let keys = DevKeys::shared().unwrap();
    let txn = transaction(MCH_A, &out_trade_no, 9900);

    // Signed with a key that is not the platform's.
    let (s, body) = env
        .wechat_callback(
            env.tenant_a,
            "forged",
            txn.clone(),
            &keys.wechat_merchant,
            now_unix(),
        )
        .await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("\"FAIL\""), "{body}");
    // Properly signed, but ten minutes old.
    let (s, body) = env
        .wechat_callback(
            env.tenant_a,
            "stale",
            txn.clone(),
            &keys.wechat_platform,
            now_unix() - 600,
        )
        .await;
    assert_eq!(s, 401, "{body}");
    // Properly signed, for a trade nobody created.
    let unknown = transaction(MCH_A, "NOSUCHTRADE000001", 9900);
    let (s, body) = env
        .wechat_callback(
            env.tenant_a,
            "unknown",
            unknown,
            &keys.wechat_platform,
            now_unix(),
        )
        .await;
    assert_eq!(s, 404, "{body}");
    // Sent to the other tenant's endpoint: its merchant is another mchid.
    let (s, _) = env
        .wechat_callback(
            env.tenant_b,
            "cross",
            txn.clone(),
            &keys.wechat_platform,
            now_unix(),
        )
        .await;
    assert!(s >= 400, "{s}");

    assert_eq!(env.status(&order).await, "PENDING_PAYMENT");
    let n = env
        .count("SELECT count(*) AS n FROM payment_notifications", vec![])
        .await;
    assert_eq!(n, 0);
    let paid = env
        .count(
            "SELECT count(*) AS n FROM payments WHERE status = 'PAID'",
            vec![],
        )
        .await;
    assert_eq!(paid, 0);
}

#[tokio::test]
async fn an_unpaid_order_is_cancelled_at_its_deadline_and_its_stock_released() {
    let env = setup().await;
    let order = env.place_ok(&env.sku, 3).await;
    assert_eq!(env.reserved().await, 3);
    // Not due yet: the sweeper leaves it alone.
    uphub_services::checkout::cancel_overdue(&env.app.core, 100)
        .await
        .unwrap();
    assert_eq!(env.status(&order).await, "PENDING_PAYMENT");

    sql(
        &env.app,
        "UPDATE orders SET payment_due_at = now() - interval '1 second' WHERE id = $1",
        vec![order_uuid(&order).into()],
    )
    .await;
    let n = uphub_services::checkout::cancel_overdue(&env.app.core, 100)
        .await
        .unwrap();
    assert_eq!(n, 1);
    uphub_services::orders::settle_dirty(&env.app.core, 100)
        .await
        .unwrap();
    assert_eq!(env.status(&order).await, "CANCELLED");
    assert_eq!(env.reserved().await, 0);
    let state: String = sql(
        &env.app,
        "SELECT stock_state FROM orders WHERE id = $1",
        vec![order_uuid(&order).into()],
    )
    .await[0]
        .try_get("", "stock_state")
        .unwrap();
    assert_eq!(state, "RELEASED");
    // Paying a cancelled order is refused up front.
    let r = env.pay_create(&env.buyer.0, &order, "WECHAT_PAY").await;
    assert_eq!(
        r["data"]["paymentCreate"]["userErrors"][0]["code"], "CONFLICT",
        "{r}"
    );
}

#[tokio::test]
async fn a_payment_that_lands_after_the_deadline_is_refunded_automatically() {
    let env = setup().await;
    let order = env.place_ok(&env.sku, 1).await;
    let out_trade_no = env.wechat_start(&order).await;
    sql(
        &env.app,
        "UPDATE orders SET payment_due_at = now() - interval '1 second' WHERE id = $1",
        vec![order_uuid(&order).into()],
    )
    .await;
    uphub_services::checkout::cancel_overdue(&env.app.core, 100)
        .await
        .unwrap();
    uphub_services::orders::settle_dirty(&env.app.core, 100)
        .await
        .unwrap();

    let report = env.mock.pay(&out_trade_no).await.unwrap();
    assert!(report.delivered, "{report:?}");
    assert_eq!(env.status(&order).await, "CANCELLED");
    let refunds = sql(
        &env.app,
        "SELECT amount_fen, auto, status FROM refunds WHERE order_id = $1",
        vec![order_uuid(&order).into()],
    )
    .await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].try_get::<i64>("", "amount_fen").unwrap(), 9900);
    assert!(refunds[0].try_get::<bool>("", "auto").unwrap());
    assert_ne!(
        refunds[0].try_get::<String>("", "status").unwrap(),
        "PENDING"
    );
    let at_provider: Vec<_> = env
        .mock
        .refunds()
        .into_iter()
        .filter(|r| r.out_trade_no == out_trade_no)
        .collect();
    assert_eq!(at_provider.len(), 1, "{at_provider:?}");
    assert_eq!(at_provider[0].refund_fen, 9900);
    assert_eq!(env.reserved().await, 0);
}

#[tokio::test]
async fn order_place_replays_a_key_refuses_it_for_other_input_and_sold_out_writes_nothing() {
    let env = setup().await;
    let first = env.place(&env.sku, 1, "key-1").await;
    let again = env.place(&env.sku, 1, "key-1").await;
    let id = first["data"]["orderPlace"]["order"]["id"].clone();
    assert!(id.is_string(), "{first}");
    assert_eq!(again["data"]["orderPlace"]["order"]["id"], id, "{again}");
    assert_eq!(
        first["data"]["orderPlace"]["order"]["total"],
        json!({"amount": "99.00", "currency": "CNY"})
    );
    let other = env.place(&env.sku, 2, "key-1").await;
    assert_eq!(
        other["data"]["orderPlace"]["userErrors"][0]["code"], "CONFLICT",
        "{other}"
    );
    let orders = env.count("SELECT count(*) AS n FROM orders", vec![]).await;
    assert_eq!(orders, 1);
    assert_eq!(env.reserved().await, 1);

    // 4 left; 5 is too many: SOLD_OUT, and neither an order nor a reservation appears.
    let sold_out = env.place(&env.sku, 5, "key-2").await;
    assert_eq!(
        sold_out["data"]["orderPlace"]["userErrors"][0]["code"], "SOLD_OUT",
        "{sold_out}"
    );
    assert_eq!(
        env.count("SELECT count(*) AS n FROM orders", vec![]).await,
        1
    );
    assert_eq!(env.reserved().await, 1);
    // The key of a failed request is free again.
    let retry = env.place(&env.sku, 4, "key-2").await;
    assert!(
        retry["data"]["orderPlace"]["order"]["id"].is_string(),
        "{retry}"
    );
}

#[tokio::test]
async fn an_activation_code_order_completes_on_payment_and_issues_its_code_once() {
    let env = setup().await;
    let app = &env.app;
    let r = app
        .gql(
            Some(&app.a.token),
            "mutation($i: ProductCreateInput!) { productCreate(input: $i) { product { skus { id } } userErrors { code message } } }",
            json!({"i": {"title": "激活码", "kind": "ACTIVATION_CODE",
                         "skus": [{"code": "KEY-CK", "name": "key", "price": {"amount": "30.00", "currency": "CNY"}}]}}),
        )
        .await;
    let sku = r["data"]["productCreate"]["product"]["skus"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let r = app
        .gql(
            Some(&app.a.token),
            "mutation($i: ActivationCodesImportInput!) { activationCodesImport(input: $i) { imported userErrors { code message } } }",
            json!({"i": {"skuId": sku, "codes": ["CODE-A", "CODE-B", "CODE-C"]}}),
        )
        .await;
    assert_eq!(r["data"]["activationCodesImport"]["imported"], 3, "{r}");

    let order = env.place_ok(&sku, 1).await;
    let out_trade_no = env.wechat_start(&order).await;
    assert!(env.mock.pay(&out_trade_no).await.unwrap().delivered);
    assert_eq!(env.status(&order).await, "COMPLETED");
    for _ in 0..2 {
        uphub_services::orders::settle_dirty(&app.core, 100)
            .await
            .unwrap();
    }
    let issued = env
        .count(
            "SELECT count(*) AS n FROM activation_codes WHERE status = 'ISSUED'",
            vec![],
        )
        .await;
    assert_eq!(issued, 1);
    let r = app
        .gql(Some(&env.buyer.0), ORDER, json!({"id": order}))
        .await;
    let codes = r["data"]["buyerOrder"]["activationCodes"]
        .as_array()
        .unwrap();
    assert_eq!(codes.len(), 1, "{r}");
    let events = env
        .count(
            "SELECT count(*) AS n FROM order_events WHERE order_id = $1 AND to_status = 'COMPLETED'",
            vec![order_uuid(&order).into()],
        )
        .await;
    assert_eq!(events, 1);
}

#[tokio::test]
async fn another_tenants_buyer_can_neither_see_nor_pay_these_orders() {
    let env = setup().await;
    let order = env.place_ok(&env.sku, 1).await;
    let (b_token, _, _) = buyer(&env.app, env.tenant_b).await;
    let r = env
        .app
        .gql(Some(&b_token), ORDER, json!({"id": order}))
        .await;
    assert_eq!(crate::helpers::code(&r), "NOT_FOUND", "{r}");
    let r = env
        .app
        .gql(
            Some(&b_token),
            "{ buyerOrders { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["buyerOrders"]["edges"], json!([]), "{r}");
    let r = env.pay_create(&b_token, &order, "WECHAT_PAY").await;
    assert_eq!(
        r["data"]["paymentCreate"]["userErrors"][0]["code"], "NOT_FOUND",
        "{r}"
    );
    // Another buyer of the same tenant fares no better.
    let (a2, _, _) = buyer(&env.app, env.tenant_a).await;
    let r = env.app.gql(Some(&a2), ORDER, json!({"id": order})).await;
    assert_eq!(crate::helpers::code(&r), "NOT_FOUND", "{r}");
    let r = env.pay_create(&a2, &order, "WECHAT_PAY").await;
    assert_eq!(
        r["data"]["paymentCreate"]["userErrors"][0]["code"], "NOT_FOUND",
        "{r}"
    );
    // The owner sees it in their list.
    let r = env
        .app
        .gql(
            Some(&env.buyer.0),
            "{ buyerOrders { edges { node { id status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r["data"]["buyerOrders"]["edges"][0]["node"]["id"],
        order.as_str(),
        "{r}"
    );
    assert_eq!(
        env.count("SELECT count(*) AS n FROM payments", vec![])
            .await,
        0
    );
}

#[tokio::test]
async fn alipay_notify_marks_the_order_paid_once_and_staff_refunds_are_idempotent() {
    let env = setup().await;
    let order = env.place_ok(&env.sku, 1).await;
    let r = env.pay_create(&env.buyer.0, &order, "ALIPAY").await;
    let p = &r["data"]["paymentCreate"]["payment"];
    assert!(p["alipayTradeNo"].is_string(), "{r}");
    let out_trade_no = p["outTradeNo"].as_str().unwrap().to_string();
    let report = env.mock.pay(&out_trade_no).await.unwrap();
    assert!(report.delivered, "{report:?}");
    assert_eq!(env.status(&order).await, "PAID");

    const REFUND: &str = "mutation($i: OrderRefundInput!) { orderRefund(input: $i) {
        refund { id status amount { amount } } userErrors { field code message } } }";
    let partial = json!({"i": {"orderId": order, "amount": {"amount": "10.00", "currency": "CNY"}, "idempotencyKey": "r-1"}});
    let a = env
        .app
        .gql(Some(&env.app.a.token), REFUND, partial.clone())
        .await;
    let b = env.app.gql(Some(&env.app.a.token), REFUND, partial).await;
    let id = a["data"]["orderRefund"]["refund"]["id"].clone();
    assert!(id.is_string(), "{a}");
    assert_eq!(b["data"]["orderRefund"]["refund"]["id"], id, "{b}");
    assert_eq!(
        a["data"]["orderRefund"]["refund"]["status"], "SUCCEEDED",
        "{a}"
    );
    // The other tenant's staff cannot refund it.
    let r = env
        .app
        .gql(
            Some(&env.app.b.token),
            REFUND,
            json!({"i": {"orderId": order, "idempotencyKey": "r-x"}}),
        )
        .await;
    assert_eq!(
        r["data"]["orderRefund"]["userErrors"][0]["code"], "NOT_FOUND",
        "{r}"
    );
    // The rest, in full: the unshipped order is cancelled and its stock released.
    let r = env
        .app
        .gql(
            Some(&env.app.a.token),
            REFUND,
            json!({"i": {"orderId": order, "idempotencyKey": "r-2"}}),
        )
        .await;
    assert_eq!(
        r["data"]["orderRefund"]["refund"]["amount"]["amount"], "89.00",
        "{r}"
    );
    assert_eq!(env.status(&order).await, "CANCELLED");
    uphub_services::orders::settle_dirty(&env.app.core, 100)
        .await
        .unwrap();
    assert_eq!(env.reserved().await, 0);
    assert_eq!(env.refunded_at_provider(&out_trade_no), 9900);
}

#[tokio::test]
async fn a_course_order_without_a_stock_pool_completes_on_payment_and_grants_access_once() {
    let env = setup().await;
    let app = &env.app;
    let r = app
        .gql(
            Some(&app.a.token),
            "mutation($i: ProductCreateInput!) { productCreate(input: $i) { product { skus { id } } userErrors { code message } } }",
            json!({"i": {"title": "Rust 入门", "kind": "COURSE", "courseId": "rust-101",
                         "skus": [{"code": "COURSE-CK", "name": "lifetime", "price": {"amount": "199.00", "currency": "CNY"}}]}}),
        )
        .await;
    let sku = r["data"]["productCreate"]["product"]["skus"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let order = env.place_ok(&sku, 1).await;
    let out_trade_no = env.wechat_start(&order).await;
    assert!(env.mock.pay(&out_trade_no).await.unwrap().delivered);
    assert_eq!(env.status(&order).await, "COMPLETED");
    // A second report of the same trade grants nothing more.
    let keys = DevKeys::shared().unwrap();
    let (s, body) = env
        .wechat_callback(
            env.tenant_a,
            "course-again",
            transaction(MCH_A, &out_trade_no, 19900),
            &keys.wechat_platform,
            now_unix(),
        )
        .await;
    assert_eq!(s, 204, "{body}");
    uphub_services::orders::settle_dirty(&app.core, 100)
        .await
        .unwrap();
    let oid = order_uuid(&order);
    let rows = sql(
        app,
        "SELECT kind, course_id, buyer_id FROM entitlements WHERE order_id = $1",
        vec![oid.into()],
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].try_get::<String>("", "course_id").unwrap(),
        "rust-101"
    );
    assert_eq!(
        rows[0].try_get::<Uuid>("", "buyer_id").unwrap(),
        env.buyer.2
    );
    let o = &sql(
        app,
        "SELECT stock_state, needs_attention FROM orders WHERE id = $1",
        vec![oid.into()],
    )
    .await[0];
    assert_eq!(o.try_get::<String>("", "stock_state").unwrap(), "CONFIRMED");
    assert!(
        o.try_get::<Vec<String>>("", "needs_attention")
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_wechat_refund_settles_on_its_notice_and_an_unknown_refund_notice_is_retried() {
    let env = setup().await;
    let order = env.place_ok(&env.sku, 1).await;
    let out_trade_no = env.wechat_start(&order).await;
    assert!(env.mock.pay(&out_trade_no).await.unwrap().delivered);

    // A refund notice for a refund we do not know: refused, so the provider delivers it again.
    let keys = DevKeys::shared().unwrap();
    let notice = |out_refund_no: &str| {
        json!({"mchid": MCH_A, "out_trade_no": out_trade_no, "transaction_id": "4200000000000000000001",
               "out_refund_no": out_refund_no, "refund_id": "50300000000000000001", "refund_status": "SUCCESS",
               "success_time": "2026-01-01T00:00:00+08:00", "user_received_account": "零钱",
               "amount": {"total": 9900, "refund": 100, "payer_total": 9900, "payer_refund": 100}})
    };
    let (s, body) = env
        .wechat_event(
            env.tenant_a,
            "early-refund",
            ("REFUND.SUCCESS", "refund"),
            notice("NOSUCHREFUND0001"),
            &keys.wechat_platform,
            now_unix(),
        )
        .await;
    assert!(s >= 500, "{s} {body}");

    let r = env
        .app
        .gql(
            Some(&env.app.a.token),
            "mutation($i: OrderRefundInput!) { orderRefund(input: $i) { refund { outRefundNo status } userErrors { code message } } }",
            json!({"i": {"orderId": order, "amount": {"amount": "1.00", "currency": "CNY"}, "idempotencyKey": "wx-r-1"}}),
        )
        .await;
    let refund = &r["data"]["orderRefund"]["refund"];
    assert_eq!(refund["status"], "PROCESSING", "{r}");
    let out_refund_no = refund["outRefundNo"].as_str().unwrap().to_string();
    assert!(
        env.mock
            .refund_notice(&out_refund_no)
            .await
            .unwrap()
            .delivered
    );
    let status: String = sql(
        &env.app,
        "SELECT status FROM refunds WHERE out_refund_no = $1",
        vec![out_refund_no.clone().into()],
    )
    .await[0]
        .try_get("", "status")
        .unwrap();
    assert_eq!(status, "SUCCEEDED");
    // A partial refund leaves the order paid.
    assert_eq!(env.status(&order).await, "PAID");
}

#[tokio::test]
async fn the_cart_keeps_one_line_per_sku_and_zero_removes_it() {
    let env = setup().await;
    const SET: &str = "mutation($i: CartLineSetInput!) { cartLineSet(input: $i) { cart { skuId quantity } userErrors { field code } } }";
    let token = &env.buyer.0;
    let r = env
        .app
        .gql(
            Some(token),
            SET,
            json!({"i": {"skuId": env.sku, "quantity": 2}}),
        )
        .await;
    assert_eq!(
        r["data"]["cartLineSet"]["cart"],
        json!([{"skuId": env.sku, "quantity": 2}]),
        "{r}"
    );
    let r = env
        .app
        .gql(
            Some(token),
            SET,
            json!({"i": {"skuId": env.sku, "quantity": 3}}),
        )
        .await;
    assert_eq!(
        r["data"]["cartLineSet"]["cart"],
        json!([{"skuId": env.sku, "quantity": 3}]),
        "{r}"
    );
    // Another tenant's buyer cannot put tenant A's SKU in a cart.
    let (b_token, _, _) = buyer(&env.app, env.tenant_b).await;
    let r = env
        .app
        .gql(
            Some(&b_token),
            SET,
            json!({"i": {"skuId": env.sku, "quantity": 1}}),
        )
        .await;
    assert_eq!(
        r["data"]["cartLineSet"]["userErrors"][0]["code"], "VALIDATION",
        "{r}"
    );
    let r = env
        .app
        .gql(Some(&b_token), "{ cart { skuId } }", json!({}))
        .await;
    assert_eq!(r["data"]["cart"], json!([]), "{r}");
    let r = env
        .app
        .gql(
            Some(token),
            SET,
            json!({"i": {"skuId": env.sku, "quantity": 0}}),
        )
        .await;
    assert_eq!(r["data"]["cartLineSet"]["cart"], json!([]), "{r}");
    // Staff tokens are not buyers.
    let r = env
        .app
        .gql(Some(&env.app.a.token), "{ cart { skuId } }", json!({}))
        .await;
    assert_eq!(crate::helpers::code(&r), "FORBIDDEN", "{r}");
}

#[tokio::test]
async fn payment_settings_need_channel_manage_never_return_secrets_and_stay_per_tenant() {
    let env = setup().await;
    const Q: &str = "{ paymentSettings { wechatMchid alipayAppId notifyBaseUrl } }";
    let a = env.app.gql(Some(&env.app.a.token), Q, json!({})).await;
    assert_eq!(a["data"]["paymentSettings"]["wechatMchid"], MCH_A, "{a}");
    let b = env.app.gql(Some(&env.app.b.token), Q, json!({})).await;
    assert_eq!(b["data"]["paymentSettings"]["wechatMchid"], MCH_B, "{b}");
    // A buyer holds no staff permission.
    let r = env.app.gql(Some(&env.buyer.0), Q, json!({})).await;
    assert_eq!(crate::helpers::code(&r), "FORBIDDEN", "{r}");
    let r = env
        .app
        .gql(
            Some(&env.buyer.0),
            "mutation($i: PaymentSettingsSetInput!) { paymentSettingsSet(input: $i) { userErrors { code } } }",
            json!({"i": {"notifyBaseUrl": "http://evil.test"}}),
        )
        .await;
    assert_eq!(crate::helpers::code(&r), "FORBIDDEN", "{r}");
    // Secrets are stored sealed.
    let row = &sql(
        &env.app,
        "SELECT wechat_private_key_ct, wechat_apiv3_key_ct FROM payment_settings WHERE tenant_id = $1",
        vec![env.tenant_a.into()],
    )
    .await[0];
    let ct: Vec<u8> = row.try_get("", "wechat_apiv3_key_ct").unwrap();
    assert!(!String::from_utf8_lossy(&ct).contains(APIV3));
    let pk: Vec<u8> = row.try_get("", "wechat_private_key_ct").unwrap();
    assert!(!String::from_utf8_lossy(&pk).contains("PRIVATE KEY"));
    // A bad key is a typed user error, and nothing changes.
    let r = env
        .app
        .gql(
            Some(&env.app.a.token),
            "mutation($i: PaymentSettingsSetInput!) { paymentSettingsSet(input: $i) { userErrors { field code } } }",
            json!({"i": {"wechat": {"mchid": "1", "appid": "wx", "merchantSerialNo": "S", "merchantPrivateKeyPem": "nope",
                                    "apiV3Key": APIV3, "platformSerial": "P", "platformPublicKeyPem": "nope"}}}),
        )
        .await;
    assert_eq!(
        r["data"]["paymentSettingsSet"]["userErrors"][0],
        json!({"field": "wechat.merchantPrivateKeyPem", "code": "VALIDATION"}),
        "{r}"
    );
    let a = env.app.gql(Some(&env.app.a.token), Q, json!({})).await;
    assert_eq!(a["data"]["paymentSettings"]["wechatMchid"], MCH_A, "{a}");
}

#[tokio::test]
async fn a_settings_change_reaches_the_next_payment_and_a_refused_placement_frees_its_key() {
    let env = setup().await;
    // The first payment builds tenant A's merchant, which the server keeps.
    let first = env.place_ok(&env.sku, 1).await;
    let first_no = env.wechat_start(&first).await;
    // Staff switch to another merchant account: the next payment goes out under it at once.
    pay_settings(&env.app, &env.app.a.token, &env.mock_url, MCH_B).await;
    let second = env.place_ok(&env.sku, 1).await;
    let second_no = env.wechat_start(&second).await;
    let merchant_of = |no: &str| {
        env.mock
            .transactions()
            .into_iter()
            .find(|t| t.out_trade_no == no)
            .map(|t| t.merchant)
            .unwrap()
    };
    assert_eq!(merchant_of(&first_no), MCH_A);
    assert_eq!(merchant_of(&second_no), MCH_B);
    // Its notification is verified and applied with the new settings.
    assert!(env.mock.pay(&second_no).await.unwrap().delivered);
    assert_eq!(env.status(&second).await, "PAID");

    // A placement refused before any stock moved (an unknown address) leaves its key unused:
    // the same key with the buyer's address places the order.
    let (token, address, _) = &env.buyer;
    let place = |address: String| {
        env.app.gql(
            Some(token),
            PLACE,
            json!({"i": {"channel": "WECHAT_MINI", "lines": [{"skuId": env.sku, "quantity": 1}],
                         "addressId": address, "idempotencyKey": "refused-first"}}),
        )
    };
    let r = place(uphub_domain::gid::encode("BuyerAddress", Uuid::now_v7())).await;
    assert_eq!(
        r["data"]["orderPlace"]["userErrors"][0]["field"], "addressId",
        "{r}"
    );
    let r = place(address.clone()).await;
    assert_eq!(
        r["data"]["orderPlace"]["order"]["status"], "PENDING_PAYMENT",
        "{r}"
    );
    assert_eq!(env.reserved().await, 3);
}

// ------------------------------------------------- provider trades, outages ---

use uphub_payments::mock::Faults;

const OUTAGE: Faults = Faults {
    server_error_rate: 0.0,
    rate_limit_rate: 0.0,
    outage: true,
    fail_next: 0,
};

impl Env {
    /// Fen the WeChat Pay mock refunded for one trade, over all its refunds.
    fn refunded_at_provider(&self, out_trade_no: &str) -> i64 {
        self.mock
            .refunds()
            .into_iter()
            .filter(|r| r.out_trade_no == out_trade_no)
            .map(|r| r.refund_fen)
            .sum()
    }

    async fn pay_with_key(&self, token: &str, order: &str, provider: &str, key: &str) -> Value {
        self.app
            .gql(
                Some(token),
                PAY,
                json!({"i": {"orderId": order, "provider": provider, "idempotencyKey": key}}),
            )
            .await
    }

    /// (status, close_state, close_attempts, close_error) of the payment with `out_trade_no`.
    async fn payment_row(
        &self,
        out_trade_no: &str,
    ) -> (String, Option<String>, i32, Option<String>) {
        let r = &sql(
            &self.app,
            "SELECT status, close_state, close_attempts, close_error FROM payments WHERE out_trade_no = $1",
            vec![out_trade_no.into()],
        )
        .await[0];
        (
            r.try_get("", "status").unwrap(),
            r.try_get("", "close_state").unwrap(),
            r.try_get("", "close_attempts").unwrap(),
            r.try_get("", "close_error").unwrap(),
        )
    }

    fn trade_state(&self, out_trade_no: &str) -> String {
        self.mock
            .transactions()
            .into_iter()
            .find(|t| t.out_trade_no == out_trade_no)
            .map(|t| t.state)
            .unwrap_or_else(|| "<none>".into())
    }

    /// Moves the order past its payment deadline and runs the deadline sweep.
    async fn time_out(&self, order: &str) {
        sql(
            &self.app,
            "UPDATE orders SET payment_due_at = now() - interval '1 second' WHERE id = $1",
            vec![order_uuid(order).into()],
        )
        .await;
        uphub_services::checkout::cancel_overdue(&self.app.core, 100)
            .await
            .unwrap();
        assert_eq!(self.status(order).await, "CANCELLED");
    }

    async fn auto_refunds(&self, order: &str) -> Vec<String> {
        sql(
            &self.app,
            "SELECT status FROM refunds WHERE order_id = $1 AND auto",
            vec![order_uuid(order).into()],
        )
        .await
        .iter()
        .map(|r| r.try_get::<String>("", "status").unwrap())
        .collect()
    }

    /// Makes every pending close due now (as if its back-off had passed).
    async fn closes_due_now(&self) {
        sql(
            &self.app,
            "UPDATE payments SET close_next_at = now() WHERE close_state = 'PENDING'",
            vec![],
        )
        .await;
    }

    /// Tenant B: a stocked SKU, a buyer and an order awaiting payment with a WeChat Pay trade.
    async fn tenant_b_trade(&self) -> String {
        let (sku, _) = stocked_sku(&self.app, &self.app.b.token, "TEE-B", 5).await;
        let (token, address, _) = buyer(&self.app, self.tenant_b).await;
        let r = self
            .app
            .gql(
                Some(&token),
                PLACE,
                json!({"i": {"channel": "WECHAT_MINI", "lines": [{"skuId": sku, "quantity": 1}],
                             "addressId": address, "idempotencyKey": "b-order"}}),
            )
            .await;
        let order = r["data"]["orderPlace"]["order"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string();
        let r = self.pay_create(&token, &order, "WECHAT_PAY").await;
        r["data"]["paymentCreate"]["payment"]["outTradeNo"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string()
    }
}

#[tokio::test]
async fn a_timed_out_orders_provider_trades_are_closed_after_an_outage_and_cannot_be_paid() {
    let env = setup().await;
    let b_trade = env.tenant_b_trade().await;
    let order = env.place_ok(&env.sku, 1).await;
    let wx = env.wechat_start(&order).await;
    let r = env.pay_create(&env.buyer.0, &order, "ALIPAY").await;
    let ali = r["data"]["paymentCreate"]["payment"]["outTradeNo"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    assert_eq!(env.trade_state(&wx), "NOTPAY");
    assert_eq!(env.trade_state(&ali), "WAIT_BUYER_PAY");

    // The providers are down when the order times out: the cancel does not wait for them, the
    // close stays pending with its error and backs off.
    env.mock.set_faults(OUTAGE);
    env.time_out(&order).await;
    let closed = uphub_services::payments::close_due_trades(&env.app.core, 100)
        .await
        .unwrap();
    assert_eq!(closed, 0);
    for no in [&wx, &ali] {
        let (status, state, attempts, error) = env.payment_row(no).await;
        assert_eq!(
            (status.as_str(), state.as_deref(), attempts),
            ("CREATED", Some("PENDING"), 1)
        );
        assert!(error.is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM payments WHERE close_state = 'PENDING' AND close_next_at > now() + interval '10 seconds'",
            vec![]
        )
        .await,
        2,
        "backed off"
    );
    // Not due yet: a second sweep calls nobody.
    uphub_services::payments::close_due_trades(&env.app.core, 100)
        .await
        .unwrap();
    assert_eq!(env.payment_row(&wx).await.2, 1);

    // Back up, back-off elapsed: the upkeep's background sweep closes both at the providers.
    env.mock.set_faults(Faults::default());
    env.closes_due_now().await;
    uphub_services::checkout::upkeep(&env.app.core)
        .await
        .unwrap();
    for _ in 0..100 {
        if env
            .count(
                "SELECT count(*) AS n FROM payments WHERE close_state = 'DONE'",
                vec![],
            )
            .await
            == 2
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for no in [&wx, &ali] {
        let (status, state, attempts, error) = env.payment_row(no).await;
        assert_eq!(
            (status.as_str(), state.as_deref(), attempts, error),
            ("CLOSED", Some("DONE"), 2, None)
        );
    }
    assert_eq!(env.trade_state(&wx), "CLOSED");
    assert_eq!(env.trade_state(&ali), "TRADE_CLOSED");
    assert!(
        env.mock.pay(&wx).await.is_err(),
        "a closed trade cannot be paid"
    );
    assert!(
        env.mock.pay(&ali).await.is_err(),
        "a closed trade cannot be paid"
    );
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM order_events WHERE order_id = $1 AND kind = 'PAYMENT_CLOSED'",
            vec![order_uuid(&order).into()]
        )
        .await,
        2
    );
    // A closed trade is not closed again, and a paymentCreate on the cancelled order is refused.
    assert_eq!(
        uphub_services::payments::close_due_trades(&env.app.core, 100)
            .await
            .unwrap(),
        0
    );
    let r = env.pay_create(&env.buyer.0, &order, "WECHAT_PAY").await;
    assert_eq!(
        r["data"]["paymentCreate"]["userErrors"][0]["code"], "CONFLICT",
        "{r}"
    );
    // The other tenant's open trade was neither marked nor closed.
    assert_eq!(env.trade_state(&b_trade), "NOTPAY");
    let (status, state, attempts, _) = env.payment_row(&b_trade).await;
    assert_eq!((status.as_str(), state, attempts), ("CREATED", None, 0));
}

#[tokio::test]
async fn a_payment_that_lands_while_the_close_waits_for_the_provider_is_refunded() {
    let env = setup().await;
    let order = env.place_ok(&env.sku, 1).await;
    let wx = env.wechat_start(&order).await;
    env.mock.set_faults(OUTAGE);
    env.time_out(&order).await;
    uphub_services::payments::close_due_trades(&env.app.core, 100)
        .await
        .unwrap();
    assert_eq!(env.payment_row(&wx).await.1.as_deref(), Some("PENDING"));

    // The buyer pays at the provider before the close gets through: the notice takes the
    // refund path (the refund itself waits for the provider too).
    let report = env.mock.pay(&wx).await.unwrap();
    assert!(report.delivered, "{report:?}");
    assert_eq!(env.status(&order).await, "CANCELLED");
    assert_eq!(env.auto_refunds(&order).await, ["PENDING"]);

    // Back up: the close is refused for good (the trade is paid), the refund goes through.
    env.mock.set_faults(Faults::default());
    env.closes_due_now().await;
    sql(
        &env.app,
        "UPDATE refunds SET updated_at = now() - interval '1 minute', next_at = now() - interval '1 minute'",
        vec![],
    )
    .await;
    assert_eq!(
        uphub_services::payments::close_due_trades(&env.app.core, 100)
            .await
            .unwrap(),
        0
    );
    let (_, state, _, error) = env.payment_row(&wx).await;
    assert_eq!(state.as_deref(), Some("FAILED"));
    assert!(error.is_some_and(|e| e.contains("INVALID_REQUEST")));
    uphub_services::payments::retry_pending_refunds(&env.app.core, 10)
        .await
        .unwrap();
    assert_eq!(env.auto_refunds(&order).await, ["PROCESSING"]);
    assert_eq!(env.refunded_at_provider(&wx), 9900);
}

#[tokio::test]
async fn payment_create_in_a_provider_outage_is_upstream_unavailable_and_the_same_key_resumes() {
    let env = setup().await;
    let order = env.place_ok(&env.sku, 1).await;
    let token = env.buyer.0.clone();

    env.mock.set_faults(OUTAGE);
    for _ in 0..2 {
        let r = env
            .pay_with_key(&token, &order, "WECHAT_PAY", "pay-1")
            .await;
        assert_eq!(crate::helpers::code(&r), "UPSTREAM_UNAVAILABLE", "{r}");
        assert_eq!(r["errors"][0]["extensions"]["retryable"], true, "{r}");
        assert_eq!(
            r["errors"][0]["extensions"]["provider"], "WECHAT_PAY",
            "{r}"
        );
        assert!(r["data"]["paymentCreate"].is_null(), "{r}");
    }
    // One payment row, kept open for the retry; nothing at the provider.
    let rows = sql(
        &env.app,
        "SELECT out_trade_no, status FROM payments WHERE order_id = $1",
        vec![order_uuid(&order).into()],
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].try_get::<String>("", "status").unwrap(), "CREATED");
    let kept: String = rows[0].try_get("", "out_trade_no").unwrap();
    assert_eq!(env.trade_state(&kept), "<none>");

    // The other tenant's buyer cannot use the order, key or not.
    let (b_token, _, _) = buyer(&env.app, env.tenant_b).await;
    let r = env
        .pay_with_key(&b_token, &order, "WECHAT_PAY", "pay-1")
        .await;
    assert_eq!(
        r["data"]["paymentCreate"]["userErrors"][0]["code"], "NOT_FOUND",
        "{r}"
    );
    // Another input under the same key is still a conflict.
    let r = env.pay_with_key(&token, &order, "ALIPAY", "pay-1").await;
    assert_eq!(
        r["data"]["paymentCreate"]["userErrors"][0]["code"], "CONFLICT",
        "{r}"
    );

    // Back up: the same key resumes the same payment, and replays it afterwards.
    env.mock.set_faults(Faults::default());
    let r = env
        .pay_with_key(&token, &order, "WECHAT_PAY", "pay-1")
        .await;
    let p = &r["data"]["paymentCreate"]["payment"];
    assert_eq!(p["outTradeNo"], kept.as_str(), "{r}");
    assert!(p["wechat"]["paySign"].is_string(), "{r}");
    let again = env
        .pay_with_key(&token, &order, "WECHAT_PAY", "pay-1")
        .await;
    assert_eq!(
        again["data"]["paymentCreate"]["payment"]["id"], p["id"],
        "{again}"
    );
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM payments WHERE order_id = $1",
            vec![order_uuid(&order).into()]
        )
        .await,
        1
    );
    assert!(env.mock.pay(&kept).await.unwrap().delivered);
    assert_eq!(env.status(&order).await, "PAID");

    // Alipay: one failed call, then the retry with the same key opens the same trade.
    let order2 = env.place_ok(&env.sku, 1).await;
    env.mock.set_faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    let r = env.pay_with_key(&token, &order2, "ALIPAY", "pay-2").await;
    assert_eq!(crate::helpers::code(&r), "UPSTREAM_UNAVAILABLE", "{r}");
    let r = env.pay_with_key(&token, &order2, "ALIPAY", "pay-2").await;
    let p = &r["data"]["paymentCreate"]["payment"];
    assert!(p["alipayTradeNo"].is_string(), "{r}");
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM payments WHERE order_id = $1",
            vec![order_uuid(&order2).into()]
        )
        .await,
        1
    );

    // A staff refund in an outage is recorded PENDING (not an error) and retried later.
    env.mock.set_faults(OUTAGE);
    let r = env
        .app
        .gql(
            Some(&env.app.a.token),
            "mutation($i: OrderRefundInput!) { orderRefund(input: $i) { refund { status } userErrors { code message } } }",
            json!({"i": {"orderId": order, "idempotencyKey": "refund-1"}}),
        )
        .await;
    assert_eq!(
        r["data"]["orderRefund"]["refund"]["status"], "PENDING",
        "{r}"
    );
    // Still down when the retry comes: the refund waits, backing off; it is not due again at once.
    let due = "UPDATE refunds SET updated_at = now() - interval '1 minute', next_at = now() - interval '1 minute'";
    sql(&env.app, due, vec![]).await;
    assert_eq!(
        uphub_services::payments::retry_pending_refunds(&env.app.core, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM refunds WHERE order_id = $1 AND status = 'PENDING'
               AND attempts = 1 AND next_at > now() + interval '5 seconds' AND last_error IS NOT NULL",
            vec![order_uuid(&order).into()]
        )
        .await,
        1
    );
    assert_eq!(
        uphub_services::payments::retry_pending_refunds(&env.app.core, 10)
            .await
            .unwrap(),
        0
    );
    env.mock.set_faults(Faults::default());
    sql(&env.app, due, vec![]).await;
    uphub_services::payments::retry_pending_refunds(&env.app.core, 10)
        .await
        .unwrap();
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM refunds WHERE order_id = $1 AND status = 'PROCESSING'",
            vec![order_uuid(&order).into()]
        )
        .await,
        1
    );
}
