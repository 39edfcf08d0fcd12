//! Compatibility with the public PyPI SDKs `wechatpayv3` and `python-alipay-sdk`, run through
//! tests/sdk/sdk_tool.py in a venv that tests/sdk/setup.sh installs (pinned versions, idempotent).
//! If the SDKs cannot be installed these tests fail, naming the SDK; they never pass silently.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use uphub_payments::alipay::{TradeCreateRequest, parse_notify, sign_params};
use uphub_payments::wechatpay::{
    AuthorizationHeader, MerchantCredentials, NotifyPayload, SignedHeaders, TradeState,
    request_message,
};
use uphub_payments::{PayError, PublicKey};

use crate::common::*;

const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk");

fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(install_sdks) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn install_sdks() -> Result<PathBuf, String> {
    let script = format!("{SDK_DIR}/setup.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("payment SDK tests: cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "payment SDK tests need the PyPI SDKs wechatpayv3 and python-alipay-sdk, and {script} could not \
             install them:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    for (module, sdk) in [
        ("wechatpayv3", "wechatpayv3"),
        ("alipay", "python-alipay-sdk"),
    ] {
        let ok = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "payment SDK tests: the SDK {sdk} (module {module}) is missing from {}",
                python.display()
            ));
        }
    }
    Ok(python)
}

/// Runs one sdk_tool.py command with JSON in and out.
fn sdk(command: &str, input: Value) -> Value {
    let mut child = Command::new(python())
        .arg(format!("{SDK_DIR}/sdk_tool.py"))
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sdk_tool.py {command} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn header_map(headers: &Value) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers.as_object().unwrap() {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v.as_str().unwrap()).unwrap(),
        );
    }
    map
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sdk_callback(apiv3_key: &str) -> Value {
    sdk(
        "wx_callback",
        json!({
            "platform_key_pem": WX_PLATFORM_KEY,
            "serial": PLATFORM_SERIAL,
            "apiv3_key": apiv3_key,
            "event_type": "TRANSACTION.SUCCESS",
            "associated_data": "transaction",
            "resource_nonce": "Rg8mE1yV2kQz",
            "header_nonce": "593BEC0C930BF1AFEB40B4A08C8FB242",
            "timestamp": now(),
            "resource": {
                "appid": APPID, "mchid": MCHID, "out_trade_no": "SDK-ORDER-1", "transaction_id": "4200001234202405011234567890",
                "trade_type": "JSAPI", "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
                "attach": "", "success_time": "2024-05-01T12:00:00+08:00", "payer": {"openid": "oSDK-openid"},
                "amount": {"total": 4567, "payer_total": 4567, "currency": "CNY", "payer_currency": "CNY"}
            }
        }),
    )
}

// --- (a) WeChat Pay callbacks ----------------------------------------------------------------

#[tokio::test]
async fn wechatpayv3_built_callback_is_accepted_and_decrypts_to_the_transaction() {
    let client =
        uphub_payments::wechatpay::WechatPayClient::new(wechat_config("http://unused")).unwrap();
    let cb = sdk_callback(APIV3_KEY);
    let body = cb["body"].as_str().unwrap();
    let n = client
        .parse_notification(&header_map(&cb["headers"]), body.as_bytes())
        .unwrap();
    assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
    let NotifyPayload::Transaction(t) = n.payload else {
        panic!("not a transaction")
    };
    assert_eq!(
        (t.out_trade_no.as_str(), t.amount_total_fen),
        ("SDK-ORDER-1", 4567)
    );
    assert_eq!(
        t.transaction_id.as_deref(),
        Some("4200001234202405011234567890")
    );
    assert_eq!(
        (t.trade_state, t.payer_openid.as_deref()),
        (TradeState::Success, Some("oSDK-openid"))
    );
}

#[tokio::test]
async fn wechatpayv3_built_callback_that_was_tampered_with_is_rejected() {
    let client =
        uphub_payments::wechatpay::WechatPayClient::new(wechat_config("http://unused")).unwrap();
    let cb = sdk_callback(APIV3_KEY);
    let body = cb["body"]
        .as_str()
        .unwrap()
        .replace("EV-2018022511223320873", "EV-2018022511223320874");
    let err = client
        .parse_notification(&header_map(&cb["headers"]), body.as_bytes())
        .unwrap_err();
    assert!(matches!(err, PayError::SignatureInvalid), "{err:?}");

    let mut headers = header_map(&cb["headers"]);
    headers.insert(
        "Wechatpay-Timestamp",
        HeaderValue::from_str(&(now() - 400).to_string()).unwrap(),
    );
    assert!(
        client
            .parse_notification(&headers, cb["body"].as_str().unwrap().as_bytes())
            .is_err()
    );

    // Correctly signed, but encrypted under another APIv3 key: the AEAD tag fails.
    let other = sdk_callback("00000000000000000000000000000000");
    let err = client
        .parse_notification(
            &header_map(&other["headers"]),
            other["body"].as_str().unwrap().as_bytes(),
        )
        .unwrap_err();
    assert!(matches!(err, PayError::DecryptFailed), "{err:?}");
}

#[tokio::test]
async fn mock_callback_passes_the_wechatpayv3_sdk_decrypt_callback() {
    let env = Env::start().await;
    let notify = format!("{}/wx/notify", env.notify_base);
    let req = uphub_payments::wechatpay::JsapiPrepayRequest {
        description: "SDK 对照".into(),
        out_trade_no: "SDKMOCK001".into(),
        notify_url: notify,
        amount_total_fen: 888,
        payer_openid: "oMOCK".into(),
        attach: None,
        time_expire: None,
        profit_sharing: false,
    };
    env.wechat().jsapi_prepay(&req).await.unwrap();
    env.mock.pay("SDKMOCK001").await.unwrap();
    let (headers, body) = env.receiver.raw_wx.lock().unwrap()[0].clone();
    let headers: serde_json::Map<String, Value> = headers
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    let out = sdk(
        "wx_decrypt_callback",
        json!({
            "mchid": MCHID, "merchant_key_pem": WX_MERCHANT_KEY, "apiv3_key": APIV3_KEY,
            "platform_public_pem": WX_PLATFORM_PUB, "serial": PLATFORM_SERIAL,
            "headers": headers, "body": body,
        }),
    );
    let resource: Value =
        serde_json::from_str(out["resource"].as_str().expect("the SDK decrypted it")).unwrap();
    assert_eq!(resource["out_trade_no"], "SDKMOCK001");
    assert_eq!(resource["amount"]["total"], 888);
    assert_eq!(resource["trade_state"], "SUCCESS");
}

// --- (b) WeChat Pay request signatures -------------------------------------------------------

#[test]
fn our_wechat_signature_equals_the_sdk_signature_for_the_same_message() {
    let body = r#"{"appid":"wxd678efh567hg6787","description":"Image形象店-深圳腾大-QQ公仔"}"#;
    let message = request_message(
        "POST",
        "/v3/pay/transactions/jsapi",
        1_554_208_460,
        "593BEC0C930BF1AFEB40B4A08C8FB242",
        body,
    );
    let ours = key(WX_MERCHANT_KEY)
        .sign_sha256_base64(message.as_bytes())
        .unwrap();
    let theirs = sdk(
        "wx_sign",
        json!({"key_pem": WX_MERCHANT_KEY, "message": message}),
    );
    assert_eq!(theirs["signature"], ours.as_str());
}

#[test]
fn our_authorization_header_verifies_with_the_sdk_rsa_verify() {
    let cred = MerchantCredentials {
        mchid: MCHID.into(),
        serial_no: MERCHANT_SERIAL.into(),
        private_key: key(WX_MERCHANT_KEY),
    };
    let path = "/v3/refund/domestic/refunds";
    let body = r#"{"out_refund_no":"R1","amount":{"refund":1,"total":1,"currency":"CNY"}}"#;
    let auth = AuthorizationHeader::parse(
        &cred
            .authorization("POST", path, now(), "NONCE123", body)
            .unwrap(),
    )
    .unwrap();
    let check = |body: &str| {
        sdk(
            "wx_verify_request",
            json!({"public_key_pem": WX_MERCHANT_PUB, "method": "POST", "path": path, "timestamp": auth.timestamp.to_string(),
                   "nonce": auth.nonce_str, "body": body, "signature": auth.signature}),
        )["ok"]
            .as_bool()
            .unwrap()
    };
    assert!(check(body));
    assert!(!check(&body.replace("\"refund\":1", "\"refund\":2")));
}

#[test]
fn sdk_authorization_header_is_accepted_by_the_mock_verifier() {
    let path = format!("/v3/pay/transactions/out-trade-no/SDK1?mchid={MCHID}");
    let out = sdk(
        "wx_build_authorization",
        json!({"path": path, "method": "GET", "mchid": MCHID, "serial_no": MERCHANT_SERIAL,
               "key_pem": WX_MERCHANT_KEY, "body": "", "nonce": "SDKNONCE"}),
    );
    let auth = AuthorizationHeader::parse(out["authorization"].as_str().unwrap()).unwrap();
    assert_eq!(
        (auth.mchid.as_str(), auth.serial_no.as_str()),
        (MCHID, MERCHANT_SERIAL)
    );
    auth.verify(&public(WX_MERCHANT_PUB), "GET", &path, "", now())
        .unwrap();
    assert!(
        auth.verify(&public(WX_MERCHANT_PUB), "POST", &path, "", now())
            .is_err()
    );
}

#[tokio::test]
async fn mock_response_signature_verifies_with_the_sdk() {
    let env = Env::start().await;
    let cred = MerchantCredentials {
        mchid: MCHID.into(),
        serial_no: MERCHANT_SERIAL.into(),
        private_key: key(WX_MERCHANT_KEY),
    };
    let path = format!("/v3/pay/transactions/out-trade-no/NOSUCH0001?mchid={MCHID}");
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", env.base_url))
        .header(
            "Authorization",
            cred.authorization("GET", &path, now(), "N", "").unwrap(),
        )
        .send()
        .await
        .unwrap();
    let headers: serde_json::Map<String, Value> = resp
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("wechatpay-"))
        .map(|(k, v)| (k.as_str().to_owned(), Value::from(v.to_str().unwrap())))
        .collect();
    let body = resp.text().await.unwrap();
    let input = |body: &str| {
        json!({"mchid": MCHID, "merchant_key_pem": WX_MERCHANT_KEY, "apiv3_key": APIV3_KEY,
               "platform_public_pem": WX_PLATFORM_PUB, "serial": PLATFORM_SERIAL, "headers": headers, "body": body})
    };
    assert_eq!(sdk("wx_verify_response", input(&body))["ok"], true);
    assert_eq!(
        sdk("wx_verify_response", input(&body.replace("ORDER", "ORDRE")))["ok"],
        false
    );
    // And ours agrees on the same bytes.
    let signed = SignedHeaders {
        timestamp: headers["wechatpay-timestamp"].as_str().unwrap().into(),
        nonce: headers["wechatpay-nonce"].as_str().unwrap().into(),
        signature: headers["wechatpay-signature"].as_str().unwrap().into(),
        serial: headers["wechatpay-serial"].as_str().unwrap().into(),
    };
    uphub_payments::wechatpay::verify_signed(&platform_keys(), &signed, body.as_bytes(), now())
        .unwrap();
}

// --- (c) Alipay ------------------------------------------------------------------------------

fn ali_keys(private_pem: &str, public_pem: &str) -> Value {
    json!({"app_id": ALI_APP_ID, "private_key_pem": private_pem, "public_key_pem": public_pem})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[test]
fn our_rsa2_signature_equals_the_sdk_signature_for_the_same_params() {
    let params = [
        ("app_id", ALI_APP_ID),
        ("method", "alipay.trade.create"),
        ("format", "JSON"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("timestamp", "2024-05-01 12:00:00"),
        ("version", "1.0"),
        ("notify_url", "https://example.com/ali/notify?a=1&b=2"),
        (
            "biz_content",
            r#"{"out_trade_no":"A1","total_amount":"12.30","subject":"测试 商品+1"}"#,
        ),
    ];
    let ours = sign_params(&key(ALI_APP_KEY), params.iter().copied()).unwrap();
    let map: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    let theirs = sdk(
        "ali_sign",
        with(
            ali_keys(ALI_APP_KEY, ALI_PLATFORM_PUB),
            json!({"params": map}),
        ),
    );
    assert_eq!(theirs["sign"], ours.as_str());
}

#[test]
fn alipay_notify_signed_by_the_sdk_verifies_with_our_code() {
    let params = json!({
        "notify_time": "2024-05-01 12:00:05", "notify_type": "trade_status_sync", "notify_id": "ac0509952473",
        "app_id": ALI_APP_ID, "charset": "utf-8", "version": "1.0", "trade_no": "2024050122001480000000000001",
        "out_trade_no": "SDK-ALI-1", "buyer_id": "2088102177846880", "trade_status": "TRADE_SUCCESS",
        "total_amount": "45.67", "receipt_amount": "45.67", "subject": "测试&商品 = 1",
        "gmt_create": "2024-05-01 11:59:00", "gmt_payment": "2024-05-01 12:00:00"
    });
    // The SDK stands in for Alipay: it signs with the Alipay platform key.
    let out = sdk(
        "ali_notify",
        with(
            ali_keys(ALI_PLATFORM_KEY, ALI_PLATFORM_PUB),
            json!({"params": params}),
        ),
    );
    let form = out["form"].as_str().unwrap();
    let n = parse_notify(&public(ALI_PLATFORM_PUB), form.as_bytes()).unwrap();
    assert_eq!(
        (n.out_trade_no.as_str(), n.total_amount_fen),
        ("SDK-ALI-1", 4567)
    );
    assert_eq!(
        n.gmt_payment.unwrap().to_rfc3339(),
        "2024-05-01T12:00:00+08:00"
    );

    let tampered = form.replace("45.67", "0.01");
    assert!(matches!(
        parse_notify(&public(ALI_PLATFORM_PUB), tampered.as_bytes()),
        Err(PayError::SignatureInvalid)
    ));
    let stranger: PublicKey = public(INTRUDER_PUB);
    assert!(parse_notify(&stranger, form.as_bytes()).is_err());
}

#[tokio::test]
async fn mock_alipay_notify_and_response_verify_with_the_sdk() {
    let env = Env::start().await;
    let req = TradeCreateRequest {
        out_trade_no: "SDKALI0001".into(),
        total_amount_fen: 1999,
        subject: "对照 {商品}".into(),
        buyer_id: Some("2088102177846880".into()),
        notify_url: Some(format!("{}/ali/notify", env.notify_base)),
        timeout_express: None,
    };
    env.alipay().trade_create(&req).await.unwrap();
    env.mock.pay("SDKALI0001").await.unwrap();
    let form = env.receiver.raw_ali.lock().unwrap()[0].clone();
    let keys = ali_keys(ALI_APP_KEY, ALI_PLATFORM_PUB);
    assert_eq!(
        sdk(
            "ali_verify_notify",
            with(keys.clone(), json!({"form": form}))
        )["ok"],
        true
    );

    // A raw gateway answer, verified by the SDK's own substring-and-verify routine.
    let params = env
        .alipay()
        .signed_params(
            "alipay.trade.query",
            &json!({"out_trade_no": "SDKALI0001"}),
            None,
        )
        .unwrap();
    let body = reqwest::Client::new()
        .post(format!("{}/gateway.do", env.base_url))
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded;charset=utf-8",
        )
        .body(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter())
                .finish(),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let out = sdk(
        "ali_verify_response",
        with(
            keys,
            json!({"body": body, "response_type": "alipay_trade_query_response"}),
        ),
    );
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["content"]["out_trade_no"], "SDKALI0001");
    assert_eq!(out["content"]["total_amount"], "19.99");
}
