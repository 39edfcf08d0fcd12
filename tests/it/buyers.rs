//! Buyer identity on the creator's own channels, through GraphQL, against the identity mocks
//! (WeChat and Alipay mini-program login, SMS provider) running in-process on a loopback port.

use std::net::{IpAddr, Ipv4Addr};

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use uphub_domain::identity::Role;
use uphub_payments::PrivateKey;
use uphub_payments::PublicKey;
use uphub_payments::identity_mock::{
    IdentityFaults, IdentityMock, IdentityMockConfig, MiniApp, SmsAccount,
};
use uphub_payments::mock::AlipayApp;
use uphub_tenants::{TenantId, UserId};

use crate::helpers::{TestApp, code, spawn_app};

const ALI_APP_KEY: &str = include_str!("../../channels/payments/tests/fixtures/alipay_app.key.pem");
const ALI_APP_PUB: &str = include_str!("../../channels/payments/tests/fixtures/alipay_app.pub.pem");
const ALI_PLATFORM_KEY: &str =
    include_str!("../../channels/payments/tests/fixtures/alipay_platform.key.pem");
const ALI_PLATFORM_PUB: &str =
    include_str!("../../channels/payments/tests/fixtures/alipay_platform.pub.pem");

const SESSION: &str = "accessToken accessTokenExpiresAt refreshToken buyerId newBuyer userErrors { field code message }";
const ME: &str = "{ buyerMe { id phoneMasked hasWechat hasAlipay addresses { id receiverName } } }";
const ADDRESSES: &str =
    "{ buyerAddresses { id receiverName receiverPhone province city district detail isDefault } }";

struct Store {
    slug: String,
    staff: String,
    wx_appid: String,
    wx_secret: String,
    ali_app_id: String,
    sms_key: String,
    sms_secret: String,
}

struct Env {
    app: TestApp,
    mock: IdentityMock,
    base: String,
    a: Store,
    b: Store,
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// A test app, the identity mock knowing one mini-program, Alipay app and SMS account per
/// tenant, and both tenants' login settings pointing at the mock.
async fn setup() -> Env {
    let app = spawn_app().await;
    let s = suffix();
    let mut cfg = IdentityMockConfig::new(PrivateKey::from_pem(ALI_PLATFORM_KEY).unwrap());
    for t in ["a", "b"] {
        cfg.wechat_apps.push(MiniApp {
            appid: format!("wx{t}{s}"),
            secret: format!("wx-secret-{t}-{s}"),
        });
        cfg.alipay_apps.push(AlipayApp {
            app_id: format!("2021{t}{s}"),
            public_key: PublicKey::from_pem(ALI_APP_PUB).unwrap(),
        });
        cfg.sms_accounts.push(SmsAccount {
            access_key_id: format!("ak-{t}-{s}"),
            access_key_secret: format!("sk-{t}-{s}"),
        });
    }
    let mock = IdentityMock::new(cfg);
    let addr = mock.spawn().await.unwrap();
    let base = format!("http://{addr}");
    let store = |t: &str, slug: &str, staff: &str| Store {
        slug: slug.to_string(),
        staff: staff.to_string(),
        wx_appid: format!("wx{t}{s}"),
        wx_secret: format!("wx-secret-{t}-{s}"),
        ali_app_id: format!("2021{t}{s}"),
        sms_key: format!("ak-{t}-{s}"),
        sms_secret: format!("sk-{t}-{s}"),
    };
    let env = Env {
        a: store("a", &app.a.slug, &app.a.token),
        b: store("b", &app.b.slug, &app.b.token),
        app,
        mock,
        base,
    };
    for store in [&env.a, &env.b] {
        let r = env
            .settings_set(&store.staff, env.full_settings(store))
            .await;
        let p = &r["data"]["storefrontLoginSettingsSet"];
        assert_eq!(p["userErrors"], json!([]), "{r}");
        assert_eq!(p["settings"]["wechatConfigured"], true, "{r}");
    }
    env
}

impl Env {
    fn full_settings(&self, store: &Store) -> Value {
        json!({
            "wechat": {"appId": store.wx_appid, "appSecret": store.wx_secret, "baseUrl": self.base},
            "alipay": {"appId": store.ali_app_id, "appPrivateKey": ALI_APP_KEY, "alipayPublicKey": ALI_PLATFORM_PUB, "gatewayUrl": format!("{}/gateway.do", self.base)},
            "sms": {"baseUrl": self.base, "accessKeyId": store.sms_key, "accessKeySecret": store.sms_secret, "signName": "测试小店"},
        })
    }

    async fn settings_set(&self, token: &str, input: Value) -> Value {
        self.app
            .gql(
                Some(token),
                "mutation($i: StorefrontLoginSettingsSetInput!) { storefrontLoginSettingsSet(input: $i) {
                   settings { wechatConfigured wechatAppId wechatBaseUrl alipayConfigured alipayAppId smsConfigured smsAccessKeyId smsSignName updatedAt }
                   userErrors { field code message } } }",
                json!({"i": input}),
            )
            .await
    }

    async fn login_wechat(&self, slug: &str, code: &str) -> Value {
        let r = self
            .app
            .gql(
                None,
                &format!("mutation($i: BuyerLoginWechatInput!) {{ buyerLoginWechat(input: $i) {{ {SESSION} }} }}"),
                json!({"i": {"tenantSlug": slug, "code": code}}),
            )
            .await;
        // The payload, or the whole response when a top-level error nulled it.
        if r["data"]["buyerLoginWechat"].is_object() {
            r["data"]["buyerLoginWechat"].clone()
        } else {
            r
        }
    }

    /// Signs a fresh WeChat user into `slug`; returns (token, buyer id).
    async fn wechat_buyer(&self, slug: &str, openid: &str) -> (String, String) {
        let p = self
            .login_wechat(slug, &self.mock.issue_wechat_code(openid, None))
            .await;
        assert_eq!(p["userErrors"], json!([]), "{p}");
        (
            p["accessToken"].as_str().unwrap().to_string(),
            p["buyerId"].as_str().unwrap().to_string(),
        )
    }

    async fn login_alipay(&self, slug: &str, code: &str) -> Value {
        let r = self
            .app
            .gql(
                None,
                &format!("mutation($i: BuyerLoginAlipayInput!) {{ buyerLoginAlipay(input: $i) {{ {SESSION} }} }}"),
                json!({"i": {"tenantSlug": slug, "code": code}}),
            )
            .await;
        r["data"]["buyerLoginAlipay"].clone()
    }

    async fn sms_send_from(&self, http: &reqwest::Client, slug: &str, phone: &str) -> Value {
        let body = json!({
            "query": "mutation($i: BuyerSmsCodeSendInput!) { buyerSmsCodeSend(input: $i) { sent resendAfterSeconds expiresInSeconds userErrors { field code message } } }",
            "variables": {"i": {"tenantSlug": slug, "phone": phone}},
        });
        http.post(format!("{}/graphql", self.app.addr))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn sms_send(&self, slug: &str, phone: &str) -> Value {
        self.sms_send_from(&self.app.http, slug, phone).await
    }

    async fn login_sms(&self, slug: &str, phone: &str, code: &str) -> Value {
        let r = self
            .app
            .gql(
                None,
                &format!("mutation($i: BuyerLoginSmsInput!) {{ buyerLoginSms(input: $i) {{ {SESSION} }} }}"),
                json!({"i": {"tenantSlug": slug, "phone": phone, "code": code}}),
            )
            .await;
        r["data"]["buyerLoginSms"].clone()
    }

    async fn phone_bind(&self, token: &str, code: &str) -> Value {
        self.app
            .gql(
                Some(token),
                "mutation($i: BuyerPhoneBindInput!) { buyerPhoneBind(input: $i) { buyer { id phoneMasked } userErrors { field code message } } }",
                json!({"i": {"code": code}}),
            )
            .await
    }

    async fn address_create(&self, token: &str, name: &str, is_default: bool) -> Value {
        self.app
            .gql(
                Some(token),
                "mutation($i: BuyerAddressCreateInput!) { buyerAddressCreate(input: $i) { address { id receiverName receiverPhone isDefault } userErrors { field code message } } }",
                json!({"i": {"receiverName": name, "receiverPhone": "139-0013-9000", "province": "浙江省",
                             "city": "杭州市", "district": "西湖区", "detail": "文三路 100 号 2 幢 301", "isDefault": is_default}}),
            )
            .await
    }

    async fn address_delete(&self, token: &str, id: &str) -> Value {
        self.app
            .gql(
                Some(token),
                "mutation($i: BuyerAddressDeleteInput!) { buyerAddressDelete(input: $i) { deletedId userErrors { field code message } } }",
                json!({"i": {"id": id}}),
            )
            .await
    }

    async fn addresses(&self, token: &str) -> Vec<Value> {
        let r = self.app.gql(Some(token), ADDRESSES, json!({})).await;
        r["data"]["buyerAddresses"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .clone()
    }

    async fn sql_one(&self, sql: &str, values: Vec<sea_orm::Value>) -> sea_orm::QueryResult {
        self.app
            .core
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await
            .unwrap()
            .unwrap()
    }

    async fn tenant_id(&self, slug: &str) -> uuid::Uuid {
        self.sql_one("SELECT id FROM tenants WHERE slug = $1", vec![slug.into()])
            .await
            .try_get("", "id")
            .unwrap()
    }
}

fn user_error(p: &Value) -> (String, String) {
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
}

fn client_from(last_octet: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .build()
        .unwrap()
}

#[tokio::test]
async fn wechat_login_creates_the_buyer_once_and_a_second_code_signs_into_the_same_buyer() {
    let env = setup().await;
    let first = env
        .login_wechat(
            &env.a.slug,
            &env.mock.issue_wechat_code("o-fan-1", Some("u-fan-1")),
        )
        .await;
    assert_eq!(first["userErrors"], json!([]), "{first}");
    assert_eq!(first["newBuyer"], true);
    assert!(first["accessTokenExpiresAt"].as_i64().unwrap() > 0);
    let second = env
        .login_wechat(&env.a.slug, &env.mock.issue_wechat_code("o-fan-1", None))
        .await;
    assert_eq!(second["newBuyer"], false, "{second}");
    assert_eq!(second["buyerId"], first["buyerId"]);
    let me = env
        .app
        .gql(second["accessToken"].as_str(), ME, json!({}))
        .await;
    assert_eq!(me["data"]["buyerMe"]["id"], first["buyerId"], "{me}");
    assert_eq!(me["data"]["buyerMe"]["hasWechat"], true);
    assert_eq!(me["data"]["buyerMe"]["phoneMasked"], json!(null));
    assert_eq!(me["data"]["buyerMe"]["addresses"], json!([]));
    // The unionid of the first login is kept when a later one has none.
    let row = env
        .sql_one(
            "SELECT count(*) AS n, max(wechat_unionid) AS u FROM buyers WHERE wechat_openid = 'o-fan-1'",
            vec![],
        )
        .await;
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1);
    assert_eq!(row.try_get::<String>("", "u").unwrap(), "u-fan-1");
}

#[tokio::test]
async fn wechat_login_with_an_invalid_used_or_unconfigured_code_is_a_typed_user_error() {
    let env = setup().await;
    let p = env.login_wechat(&env.a.slug, "never-issued-code").await;
    assert_eq!(user_error(&p), ("VALIDATION".into(), "code".into()), "{p}");
    assert!(
        p["userErrors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("invalid")
    );
    assert_eq!(p["accessToken"], json!(null));

    let code = env.mock.issue_wechat_code("o-used", None);
    assert_eq!(
        env.login_wechat(&env.a.slug, &code).await["userErrors"],
        json!([])
    );
    let p = env.login_wechat(&env.a.slug, &code).await;
    assert_eq!(user_error(&p), ("VALIDATION".into(), "code".into()), "{p}");
    assert!(
        p["userErrors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already used")
    );

    let p = env
        .login_wechat("no-such-store", &env.mock.issue_wechat_code("o", None))
        .await;
    assert_eq!(
        user_error(&p),
        ("VALIDATION".into(), "tenantSlug".into()),
        "{p}"
    );
    let p = env.login_wechat(&env.a.slug, "bad code with spaces").await;
    assert_eq!(user_error(&p), ("VALIDATION".into(), "code".into()), "{p}");

    // A store without mini-program settings says so.
    let c = env.app.signup("gamma").await;
    let p = env
        .login_wechat(&c.slug, &env.mock.issue_wechat_code("o", None))
        .await;
    assert_eq!(
        user_error(&p),
        ("VALIDATION".into(), "tenantSlug".into()),
        "{p}"
    );
    assert!(
        p["userErrors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not set up")
    );
}

#[tokio::test]
async fn wechat_frequency_limit_45011_is_rate_limited_and_system_busy_is_internal() {
    let env = setup().await;
    env.mock.set_wechat_calls_per_minute(2);
    for _ in 0..2 {
        env.wechat_buyer(&env.a.slug, "o-eager").await;
    }
    let p = env
        .login_wechat(&env.a.slug, &env.mock.issue_wechat_code("o-eager", None))
        .await;
    assert_eq!(code(&p), "RATE_LIMITED", "{p}");
    assert_eq!(p["errors"][0]["extensions"]["retryAfterMs"], 60_000);

    env.mock.set_faults(IdentityFaults {
        wechat_busy_next: 1,
        ..IdentityFaults::default()
    });
    let c = env.mock.issue_wechat_code("o-patient", None);
    let p = env.login_wechat(&env.a.slug, &c).await;
    assert_eq!(code(&p), "INTERNAL", "{p}");
    assert!(p["errors"][0]["extensions"]["requestId"].is_string());
    // The platform did not consume the code: the retry signs in.
    assert_eq!(env.login_wechat(&env.a.slug, &c).await["newBuyer"], true);
}

#[tokio::test]
async fn phone_bind_stores_the_phone_encrypted_and_another_buyer_with_it_conflicts() {
    let env = setup().await;
    let (token, buyer) = env.wechat_buyer(&env.a.slug, "o-phone-1").await;
    let r = env
        .phone_bind(&token, &env.mock.issue_phone_code("13800138000"))
        .await;
    let p = &r["data"]["buyerPhoneBind"];
    assert_eq!(p["userErrors"], json!([]), "{r}");
    assert_eq!(p["buyer"]["phoneMasked"], "138****8000");
    assert_eq!(p["buyer"]["id"].as_str(), Some(buyer.as_str()));
    let row = env
        .sql_one(
            "SELECT phone_ct, phone_index, phone_masked FROM buyers WHERE wechat_openid = 'o-phone-1'",
            vec![],
        )
        .await;
    let ct: Vec<u8> = row.try_get("", "phone_ct").unwrap();
    let index: Vec<u8> = row.try_get("", "phone_index").unwrap();
    assert!(!ct.windows(11).any(|w| w == b"13800138000"));
    assert_eq!(index.len(), 32);

    // A used phone code is refused like a login code (its first use replaced the phone).
    let used = env.mock.issue_phone_code("13800138001");
    env.phone_bind(&token, &used).await;
    let r = env.phone_bind(&token, &used).await;
    assert_eq!(
        user_error(&r["data"]["buyerPhoneBind"]),
        ("VALIDATION".into(), "code".into()),
        "{r}"
    );

    // Rebinding the original phone to the same buyer is fine; another buyer cannot take it.
    let r = env
        .phone_bind(&token, &env.mock.issue_phone_code("13800138000"))
        .await;
    assert_eq!(r["data"]["buyerPhoneBind"]["userErrors"], json!([]), "{r}");
    let (other, _) = env.wechat_buyer(&env.a.slug, "o-phone-2").await;
    let r = env
        .phone_bind(&other, &env.mock.issue_phone_code("138 0013 8000"))
        .await;
    assert_eq!(
        user_error(&r["data"]["buyerPhoneBind"]),
        ("CONFLICT".into(), "code".into()),
        "{r}"
    );
    // The same phone in tenant B is another store's business.
    let (b_token, _) = env.wechat_buyer(&env.b.slug, "o-phone-2").await;
    let r = env
        .phone_bind(&b_token, &env.mock.issue_phone_code("13800138000"))
        .await;
    assert_eq!(r["data"]["buyerPhoneBind"]["userErrors"], json!([]), "{r}");

    // An SMS login with the bound phone reaches the same buyer.
    env.sms_send(&env.a.slug, "13800138000").await;
    let code = env.mock.last_sms_code("13800138000").unwrap();
    let p = env.login_sms(&env.a.slug, "13800138000", &code).await;
    assert_eq!(p["buyerId"].as_str(), Some(buyer.as_str()), "{p}");
    assert_eq!(p["newBuyer"], false);
}

#[tokio::test]
async fn sms_login_creates_the_buyer_with_the_code_read_from_the_sms_mock() {
    let env = setup().await;
    let r = env.sms_send(&env.a.slug, "+86 139 0013 9000").await;
    let p = &r["data"]["buyerSmsCodeSend"];
    assert_eq!(p["userErrors"], json!([]), "{r}");
    assert_eq!(p["sent"], true);
    assert_eq!(p["expiresInSeconds"], 300);
    let sms = env.mock.sms_sent();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].phone, "13900139000");
    assert_eq!(sms[0].access_key_id, env.a.sms_key);
    assert_eq!(sms[0].sign_name, "测试小店");
    let code = sms[0].params["code"].clone();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
    // The code is not in Redis in clear.
    let mut redis = env.app.core.redis.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("uphub:{}:*sms:code:*", env.app.core.cfg.namespace))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let stored: Vec<String> = redis::cmd("HVALS")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!stored.iter().any(|v| v.contains(&code)), "{stored:?}");

    let p = env.login_sms(&env.a.slug, "13900139000", &code).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    assert_eq!(p["newBuyer"], true);
    let me = env.app.gql(p["accessToken"].as_str(), ME, json!({})).await;
    assert_eq!(me["data"]["buyerMe"]["phoneMasked"], "139****9000", "{me}");
    assert_eq!(me["data"]["buyerMe"]["hasWechat"], false);
    // Single use.
    let again = env.login_sms(&env.a.slug, "13900139000", &code).await;
    assert_eq!(
        user_error(&again),
        ("VALIDATION".into(), "code".into()),
        "{again}"
    );
    // Malformed input is a field error, not a wrong attempt.
    let bad = env.login_sms(&env.a.slug, "12345", "123456").await;
    assert_eq!(
        user_error(&bad),
        ("VALIDATION".into(), "phone".into()),
        "{bad}"
    );
    let r = env.sms_send(&env.a.slug, "not a phone").await;
    assert_eq!(
        user_error(&r["data"]["buyerSmsCodeSend"]),
        ("VALIDATION".into(), "phone".into())
    );
}

#[tokio::test]
async fn five_wrong_sms_codes_burn_the_code() {
    let env = setup().await;
    env.sms_send(&env.a.slug, "13700137000").await;
    let code = env.mock.last_sms_code("13700137000").unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for attempt in 1..=4 {
        let p = env.login_sms(&env.a.slug, "13700137000", wrong).await;
        assert_eq!(
            user_error(&p).0,
            "INVALID_CREDENTIALS",
            "attempt {attempt}: {p}"
        );
    }
    let p = env.login_sms(&env.a.slug, "13700137000", wrong).await;
    assert_eq!(user_error(&p), ("VALIDATION".into(), "code".into()), "{p}");
    assert!(
        p["userErrors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too many")
    );
    // Even the right code is useless now.
    let p = env.login_sms(&env.a.slug, "13700137000", &code).await;
    assert_eq!(user_error(&p), ("VALIDATION".into(), "code".into()), "{p}");
    assert_eq!(p["accessToken"], json!(null));
}

#[tokio::test]
async fn sms_sends_are_limited_per_phone_and_per_ip() {
    let env = setup().await;
    let ok = |r: &Value| r["data"]["buyerSmsCodeSend"]["sent"] == true;
    assert!(ok(&env.sms_send(&env.a.slug, "13600136000").await));
    let r = env.sms_send(&env.a.slug, "13600136000").await;
    assert_eq!(code(&r), "RATE_LIMITED", "{r}");
    let wait = r["errors"][0]["extensions"]["retryAfterMs"]
        .as_u64()
        .unwrap();
    assert!((1000..=60_000).contains(&wait), "{wait}");
    assert_eq!(env.mock.sms_sent().len(), 1);
    // Another phone, and the same phone at another store, are not affected.
    assert!(ok(&env.sms_send(&env.a.slug, "13600136001").await));
    assert!(ok(&env.sms_send(&env.b.slug, "13600136000").await));
    let last = env.mock.sms_sent().pop().unwrap();
    assert_eq!(
        last.access_key_id, env.b.sms_key,
        "B's store sends with B's account"
    );

    // Ten numbers a minute from one address, then no more; another address still sends.
    let pump = client_from(23);
    for i in 0..10 {
        let r = env
            .sms_send_from(&pump, &env.a.slug, &format!("1350013{i:04}"))
            .await;
        assert!(ok(&r), "send {i}: {r}");
    }
    let r = env.sms_send_from(&pump, &env.a.slug, "13500139999").await;
    assert_eq!(code(&r), "RATE_LIMITED", "{r}");
    assert!(ok(&env
        .sms_send_from(&client_from(24), &env.a.slug, "13500139999")
        .await));
}

#[tokio::test]
async fn sms_code_send_answers_the_same_for_registered_and_unknown_phones() {
    let env = setup().await;
    // A buyer holds 13300133000 (bound through WeChat, so no SMS went to it yet).
    let (token, _) = env.wechat_buyer(&env.a.slug, "o-registered").await;
    let r = env
        .phone_bind(&token, &env.mock.issue_phone_code("13300133000"))
        .await;
    assert_eq!(r["data"]["buyerPhoneBind"]["userErrors"], json!([]), "{r}");
    let registered = env.sms_send(&env.a.slug, "13300133000").await;
    let unknown = env.sms_send(&env.a.slug, "13300133009").await;
    assert_eq!(
        registered["data"], unknown["data"],
        "{registered} {unknown}"
    );
    assert_eq!(registered["data"]["buyerSmsCodeSend"]["sent"], true);
    let sms = env.mock.sms_sent();
    assert_eq!(sms.len(), 2);
    assert_eq!(sms[0].template, sms[1].template);
    assert_eq!(
        sms[0].params.keys().collect::<Vec<_>>(),
        sms[1].params.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn alipay_login_creates_the_buyer_once_and_refuses_used_codes() {
    let env = setup().await;
    let code = env.mock.issue_alipay_code("2088000000000001");
    let first = env.login_alipay(&env.a.slug, &code).await;
    assert_eq!(first["userErrors"], json!([]), "{first}");
    assert_eq!(first["newBuyer"], true);
    let again = env.login_alipay(&env.a.slug, &code).await;
    assert_eq!(
        user_error(&again),
        ("VALIDATION".into(), "code".into()),
        "{again}"
    );
    let second = env
        .login_alipay(&env.a.slug, &env.mock.issue_alipay_code("2088000000000001"))
        .await;
    assert_eq!(second["buyerId"], first["buyerId"], "{second}");
    assert_eq!(second["newBuyer"], false);
    let me = env
        .app
        .gql(second["accessToken"].as_str(), ME, json!({}))
        .await;
    assert_eq!(me["data"]["buyerMe"]["hasAlipay"], true, "{me}");
}

#[tokio::test]
async fn buyer_tokens_are_forbidden_on_staff_fields_and_staff_tokens_on_buyer_fields() {
    let env = setup().await;
    let (buyer, _) = env.wechat_buyer(&env.a.slug, "o-curious").await;
    for q in [
        "{ me { id } }",
        "{ tenant { id } }",
        "{ staffMembers { edges { node { id } } } }",
        "{ storefrontLoginSettings { wechatAppId } }",
    ] {
        let r = env.app.gql(Some(&buyer), q, json!({})).await;
        assert_eq!(code(&r), "FORBIDDEN", "{q}: {r}");
    }
    let r = env
        .settings_set(
            &buyer,
            json!({"wechat": {"appId": "wxevil", "appSecret": "x"}}),
        )
        .await;
    assert_eq!(code(&r), "FORBIDDEN", "{r}");

    let staff = &env.a.staff;
    for q in [ME, ADDRESSES] {
        let r = env.app.gql(Some(staff), q, json!({})).await;
        assert_eq!(code(&r), "FORBIDDEN", "{q}: {r}");
    }
    let r = env.address_create(staff, "张三", false).await;
    assert_eq!(code(&r), "FORBIDDEN", "{r}");
    let r = env
        .phone_bind(staff, &env.mock.issue_phone_code("13800138000"))
        .await;
    assert_eq!(code(&r), "FORBIDDEN", "{r}");
    let r = env.app.gql(None, ME, json!({})).await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
}

#[tokio::test]
async fn addresses_are_per_buyer_and_a_tenant_a_token_sees_nothing_of_tenant_b() {
    let env = setup().await;
    let (a1, a1_id) = env.wechat_buyer(&env.a.slug, "o-shared").await;
    let (a2, _) = env.wechat_buyer(&env.a.slug, "o-neighbour").await;
    // The same WeChat user at store B is B's own buyer.
    let (b1, b1_id) = env.wechat_buyer(&env.b.slug, "o-shared").await;
    assert_ne!(a1_id, b1_id);

    let r = env.address_create(&a1, "张三", false).await;
    let first = &r["data"]["buyerAddressCreate"];
    assert_eq!(first["userErrors"], json!([]), "{r}");
    assert_eq!(
        first["address"]["isDefault"], true,
        "the first address is the default"
    );
    assert_eq!(first["address"]["receiverPhone"], "13900139000");
    let first_id = first["address"]["id"].as_str().unwrap().to_string();
    let r = env.address_create(&a1, "李四", true).await;
    let second_id = r["data"]["buyerAddressCreate"]["address"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let list = env.addresses(&a1).await;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"].as_str(), Some(second_id.as_str()));
    assert_eq!(list[0]["isDefault"], true);
    assert_eq!(list[1]["isDefault"], false);
    assert_eq!(list[0]["detail"], "文三路 100 号 2 幢 301");
    let r = env.address_create(&b1, "王五", false).await;
    let b_addr = r["data"]["buyerAddressCreate"]["address"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Neither the neighbour nor tenant B sees or touches A1's addresses, and A1 cannot touch B's.
    assert!(env.addresses(&a2).await.is_empty());
    let b_list = env.addresses(&b1).await;
    assert_eq!(b_list.len(), 1);
    assert_eq!(b_list[0]["receiverName"], "王五");
    for (token, id) in [(&a2, &first_id), (&b1, &first_id), (&a1, &b_addr)] {
        let r = env.address_delete(token, id).await;
        assert_eq!(
            user_error(&r["data"]["buyerAddressDelete"]),
            ("NOT_FOUND".into(), "<none>".into()),
            "{r}"
        );
    }
    let me = env.app.gql(Some(&a1), ME, json!({})).await;
    assert_eq!(me["data"]["buyerMe"]["id"].as_str(), Some(a1_id.as_str()));
    assert_eq!(
        me["data"]["buyerMe"]["addresses"].as_array().unwrap().len(),
        2
    );
    assert_eq!(env.addresses(&b1).await.len(), 1);

    // Deleting the default promotes the remaining address.
    let r = env.address_delete(&a1, &second_id).await;
    assert_eq!(
        r["data"]["buyerAddressDelete"]["deletedId"].as_str(),
        Some(second_id.as_str())
    );
    let list = env.addresses(&a1).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"].as_str(), Some(first_id.as_str()));
    assert_eq!(list[0]["isDefault"], true);

    // Stored encrypted, with masked copies for staff screens.
    let row = env
        .sql_one(
            "SELECT name_ct, detail_ct, name_masked, phone_masked, detail_masked FROM buyer_addresses WHERE tenant_id = $1",
            vec![env.tenant_id(&env.a.slug).await.into()],
        )
        .await;
    let name_ct: Vec<u8> = row.try_get("", "name_ct").unwrap();
    assert!(
        !name_ct
            .windows("张三".len())
            .any(|w| w == "张三".as_bytes())
    );
    assert_eq!(row.try_get::<String>("", "name_masked").unwrap(), "张*");
    assert_eq!(
        row.try_get::<String>("", "phone_masked").unwrap(),
        "139****9000"
    );
    assert_eq!(
        row.try_get::<String>("", "detail_masked").unwrap(),
        "浙江省杭州市西湖区****"
    );

    // Bad input is a field error.
    let r = env
        .app
        .gql(
            Some(&a1),
            "mutation($i: BuyerAddressCreateInput!) { buyerAddressCreate(input: $i) { address { id } userErrors { field code } } }",
            json!({"i": {"receiverName": "赵六", "receiverPhone": "12", "province": "浙江省", "city": "杭州市", "detail": "x"}}),
        )
        .await;
    assert_eq!(
        r["data"]["buyerAddressCreate"]["userErrors"],
        json!([{"field": "receiverPhone", "code": "VALIDATION"}])
    );
}

#[tokio::test]
async fn storefront_login_settings_need_channel_manage_and_never_return_secrets() {
    let env = setup().await;
    let r = env.settings_set(&env.a.staff, json!({})).await;
    let s = &r["data"]["storefrontLoginSettingsSet"]["settings"];
    assert_eq!(
        s["wechatAppId"].as_str(),
        Some(env.a.wx_appid.as_str()),
        "{r}"
    );
    assert_eq!(s["alipayAppId"].as_str(), Some(env.a.ali_app_id.as_str()));
    assert_eq!(s["smsConfigured"], true);
    assert!(!r.to_string().contains(&env.a.wx_secret), "{r}");
    let q = env
        .app
        .gql(
            Some(&env.a.staff),
            "{ storefrontLoginSettings { wechatAppId wechatBaseUrl smsAccessKeyId } }",
            json!({}),
        )
        .await;
    assert_eq!(
        q["data"]["storefrontLoginSettings"]["wechatBaseUrl"].as_str(),
        Some(env.base.as_str()),
        "{q}"
    );
    // B's settings are B's own.
    let q = env
        .app
        .gql(
            Some(&env.b.staff),
            "{ storefrontLoginSettings { wechatAppId smsAccessKeyId } }",
            json!({}),
        )
        .await;
    assert_eq!(
        q["data"]["storefrontLoginSettings"]["wechatAppId"].as_str(),
        Some(env.b.wx_appid.as_str()),
        "{q}"
    );
    let row = env
        .sql_one(
            "SELECT wechat_secret_ct, sms_secret_ct, alipay_private_key_ct FROM buyer_channel_settings WHERE tenant_id = $1",
            vec![env.tenant_id(&env.a.slug).await.into()],
        )
        .await;
    for col in ["wechat_secret_ct", "sms_secret_ct", "alipay_private_key_ct"] {
        let ct: Vec<u8> = row.try_get("", col).unwrap();
        assert!(
            !ct.windows(6).any(|w| w == b"secret" || w == b"PRIVAT"),
            "{col}"
        );
    }

    for (input, field) in [
        (
            json!({"wechat": {"appId": "wx1", "appSecret": "s", "baseUrl": "ftp://x"}}),
            "wechat.baseUrl",
        ),
        (
            json!({"wechat": {"appId": "wx 1", "appSecret": "s"}}),
            "wechat.appId",
        ),
        (
            json!({"alipay": {"appId": "2021", "appPrivateKey": "not a key", "alipayPublicKey": ALI_PLATFORM_PUB}}),
            "alipay.appPrivateKey",
        ),
        (
            json!({"sms": {"baseUrl": "", "accessKeyId": "k", "accessKeySecret": "s", "signName": "x"}}),
            "sms.baseUrl",
        ),
    ] {
        let r = env.settings_set(&env.a.staff, input).await;
        assert_eq!(
            r["data"]["storefrontLoginSettingsSet"]["userErrors"][0]["field"].as_str(),
            Some(field),
            "{r}"
        );
    }

    // An operator (no CHANNEL_MANAGE) may not change them.
    let tenant = TenantId(env.tenant_id(&env.a.slug).await);
    let (operator, _) = uphub_services::auth::issue_access_token(
        &env.app.core,
        tenant,
        UserId(uuid::Uuid::now_v7()),
        &[Role::Operator],
    )
    .unwrap();
    let r = env
        .settings_set(
            &operator,
            json!({"wechat": {"appId": "wxevil", "appSecret": "x"}}),
        )
        .await;
    assert_eq!(code(&r), "FORBIDDEN", "{r}");
    // Sections left out are kept; a login still works with the stored secret.
    env.wechat_buyer(&env.a.slug, "o-after-settings").await;
}

// ---------------------------------------------------------------- refresh ---

impl Env {
    /// `buyerTokenRefresh`: the payload, or the whole response when a top-level error nulled it.
    async fn buyer_refresh(&self, token: &str, slug: Option<&str>) -> Value {
        let r = self
            .app
            .gql(
                None,
                &format!("mutation($i: BuyerTokenRefreshInput!) {{ buyerTokenRefresh(input: $i) {{ {SESSION} }} }}"),
                json!({"i": {"refreshToken": token, "tenantSlug": slug}}),
            )
            .await;
        if r["data"]["buyerTokenRefresh"].is_object() {
            r["data"]["buyerTokenRefresh"].clone()
        } else {
            r
        }
    }

    /// A fresh WeChat login into `slug`: (access token, refresh token, buyer id).
    async fn wechat_session(&self, slug: &str, openid: &str) -> (String, String, String) {
        let p = self
            .login_wechat(slug, &self.mock.issue_wechat_code(openid, None))
            .await;
        assert_eq!(p["userErrors"], json!([]), "{p}");
        let s = |k: &str| p[k].as_str().unwrap_or_else(|| panic!("{p}")).to_string();
        (s("accessToken"), s("refreshToken"), s("buyerId"))
    }
}

#[tokio::test]
async fn a_buyer_refresh_token_rotates_once_and_reusing_one_revokes_its_whole_family() {
    let env = setup().await;
    let (_, r1, buyer) = env.wechat_session(&env.a.slug, "o-refresh-1").await;
    assert!(r1.starts_with("ubr_"), "{r1}");
    // A second login of the same buyer is its own family.
    let (_, other, _) = env.wechat_session(&env.a.slug, "o-refresh-1").await;

    let p = env.buyer_refresh(&r1, Some(&env.a.slug)).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    assert_eq!(p["buyerId"], buyer.as_str());
    assert_eq!(p["newBuyer"], false);
    let r2 = p["refreshToken"].as_str().unwrap().to_string();
    assert_ne!(r2, r1);
    let me = env.app.gql(p["accessToken"].as_str(), ME, json!({})).await;
    assert_eq!(me["data"]["buyerMe"]["id"], buyer.as_str(), "{me}");

    let p = env.buyer_refresh(&r2, None).await;
    let r3 = p["refreshToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{p}"))
        .to_string();

    // r1 again: reuse, the family is revoked — r3 is dead too; the other login is not.
    let r = env.buyer_refresh(&r1, None).await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    assert!(r.to_string().contains("reuse"), "{r}");
    let r = env.buyer_refresh(&r3, None).await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    let p = env.buyer_refresh(&other, None).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let tenant = env.tenant_id(&env.a.slug).await;
    let row = env
        .sql_one(
            "SELECT count(*) AS n FROM audit_events WHERE tenant_id = $1 AND action = 'buyer.refresh_reuse_detected'",
            vec![tenant.into()],
        )
        .await;
    // r1 reused, then r3 presented after the revocation: both are recorded.
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 2);
    // Only hashes are stored.
    let row = env
        .sql_one(
            "SELECT count(*) AS n FROM buyer_refresh_tokens WHERE tenant_id = $1 AND revoked_at IS NOT NULL",
            vec![tenant.into()],
        )
        .await;
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 3);
    let r = env.buyer_refresh("ubr_garbage", None).await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
}

#[tokio::test]
async fn staff_and_buyer_refresh_tokens_do_not_cross_and_another_store_cannot_use_them() {
    let env = setup().await;
    let (_, buyer_refresh, buyer) = env.wechat_session(&env.a.slug, "o-cross-1").await;

    // A staff refresh token cannot refresh a buyer, nor a buyer one a staff session.
    let r = env.buyer_refresh(&env.app.a.refresh, None).await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    let r = env
        .app
        .gql(
            None,
            "mutation($i: TokenRefreshInput!) { tokenRefresh(input: $i) { accessToken userErrors { code } } }",
            json!({"i": {"refreshToken": buyer_refresh}}),
        )
        .await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");

    // Another store's slug, or the token re-addressed to the other store, gets nothing.
    let r = env.buyer_refresh(&buyer_refresh, Some(&env.b.slug)).await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    let (ta, tb) = (
        env.tenant_id(&env.a.slug).await,
        env.tenant_id(&env.b.slug).await,
    );
    let moved = buyer_refresh.replace(&ta.simple().to_string(), &tb.simple().to_string());
    assert_ne!(moved, buyer_refresh);
    let r = env.buyer_refresh(&moved, None).await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");

    // None of that spent the token: it still rotates, for its own store's buyer.
    let p = env.buyer_refresh(&buyer_refresh, Some(&env.a.slug)).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    assert_eq!(p["buyerId"], buyer.as_str());
    // The new access token is a buyer's of store A: no staff fields, nothing of store B.
    let access = p["accessToken"].as_str().unwrap();
    let r = env.app.gql(Some(access), "{ me { id } }", json!({})).await;
    assert_ne!(code(&r), "<none>", "{r}");
    let (_, _, b_buyer) = env.wechat_session(&env.b.slug, "o-cross-1").await;
    assert_ne!(b_buyer, buyer);
    let me = env.app.gql(Some(access), ME, json!({})).await;
    assert_eq!(me["data"]["buyerMe"]["id"], buyer.as_str(), "{me}");
}

#[tokio::test]
async fn a_buyer_logout_ends_that_session_at_once_and_touches_no_other() {
    let env = setup().await;
    let (access, refresh, buyer) = env.wechat_session(&env.a.slug, "o-logout-1").await;
    // The same buyer on a second device, and another buyer.
    let (access2, refresh2, _) = env.wechat_session(&env.a.slug, "o-logout-1").await;
    let (_, other_refresh, _) = env.wechat_session(&env.a.slug, "o-logout-2").await;
    let logout = |token: String, refresh: Option<String>| {
        let app = &env.app;
        async move {
            app.gql(
                Some(&token),
                "mutation($i: BuyerLogoutInput!) { buyerLogout(input: $i) { loggedOut userErrors { code message } } }",
                json!({"i": {"refreshToken": refresh}}),
            )
            .await
        }
    };
    let me = env.app.gql(Some(&access), ME, json!({})).await;
    assert_eq!(me["data"]["buyerMe"]["id"], buyer.as_str(), "{me}");

    // Another buyer's refresh token handed in revokes nothing of theirs.
    let r = logout(access.clone(), Some(other_refresh.clone())).await;
    assert_eq!(r["data"]["buyerLogout"]["loggedOut"], true, "{r}");
    let p = env.buyer_refresh(&other_refresh, None).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");

    // The access token is refused at once; its own refresh token (revoked by a logout with
    // it, from the second device) is dead; the first device's refresh token still works.
    let me = env.app.gql(Some(&access), ME, json!({})).await;
    assert_eq!(code(&me), "UNAUTHENTICATED", "{me}");
    let r = logout(access2.clone(), Some(refresh2.clone())).await;
    assert_eq!(r["data"]["buyerLogout"]["loggedOut"], true, "{r}");
    let r = env.buyer_refresh(&refresh2, None).await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    let p = env.buyer_refresh(&refresh, None).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let fresh = p["accessToken"].as_str().unwrap();
    let me = env.app.gql(Some(fresh), ME, json!({})).await;
    assert_eq!(me["data"]["buyerMe"]["id"], buyer.as_str(), "{me}");

    // A buyer of the other store handing in this store's refresh token revokes nothing here.
    let (_, a_refresh, _) = env.wechat_session(&env.a.slug, "o-logout-3").await;
    let (b_access, _, _) = env.wechat_session(&env.b.slug, "o-logout-b").await;
    let r = logout(b_access, Some(a_refresh.clone())).await;
    assert_eq!(r["data"]["buyerLogout"]["loggedOut"], true, "{r}");
    let p = env.buyer_refresh(&a_refresh, None).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");

    // Staff sessions log out with `logout`, not here.
    let r = logout(env.app.a.token.clone(), None).await;
    assert_eq!(code(&r), "FORBIDDEN", "{r}");
}
