use axum::http::{HeaderMap, HeaderValue};
use serde_json::json;
use uphub_payments::PayError;
use uphub_payments::mock::Faults;
use uphub_payments::wechatpay::{
    ApiV3Key, EncryptedResource, JsapiPrepayRequest, NotifyEnvelope, NotifyPayload, RefundRequest,
    RefundStatus, SignedHeaders, TradeState, WechatPayClient, parse_notification, verify_signed,
};

use crate::common::*;

const NOW: i64 = 1_700_000_000;

fn prepay(out_trade_no: &str, notify_url: &str, total: i64) -> JsapiPrepayRequest {
    JsapiPrepayRequest {
        description: "UpHub 测试商品".into(),
        out_trade_no: out_trade_no.into(),
        notify_url: notify_url.into(),
        amount_total_fen: total,
        payer_openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        attach: Some("tenant-a".into()),
        time_expire: None,
        profit_sharing: false,
    }
}

fn signed(body: &[u8], timestamp: i64) -> SignedHeaders {
    SignedHeaders::sign(
        &key(WX_PLATFORM_KEY),
        PLATFORM_SERIAL,
        timestamp,
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        body,
    )
    .unwrap()
}

fn transaction_json() -> serde_json::Value {
    json!({
        "appid": APPID, "mchid": MCHID, "out_trade_no": "1217752501201407033233368018",
        "transaction_id": "4200000000201407033233368018", "trade_type": "JSAPI", "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功", "bank_type": "CMC", "attach": "", "success_time": "2018-06-08T10:34:56+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 1230, "payer_total": 1230, "currency": "CNY", "payer_currency": "CNY"}
    })
}

/// A callback as WeChat Pay builds one, from our own primitives.
fn callback(event_type: &str, aad: &str, plaintext: &[u8]) -> Vec<u8> {
    let nonce = "fdasflkja484";
    let envelope = NotifyEnvelope {
        id: "EV-2018022511223320873".into(),
        create_time: "2015-05-20T13:29:35+08:00".into(),
        event_type: event_type.into(),
        resource_type: "encrypt-resource".into(),
        summary: "支付成功".into(),
        resource: EncryptedResource {
            algorithm: "AEAD_AES_256_GCM".into(),
            ciphertext: apiv3_key().encrypt(nonce, aad, plaintext).unwrap(),
            associated_data: aad.into(),
            nonce: nonce.into(),
            original_type: aad.into(),
        },
    };
    serde_json::to_vec(&envelope).unwrap()
}

#[test]
fn response_signed_with_the_platform_key_verifies() {
    let body = br#"{"prepay_id":"wx26112221580621e9b071c00d9e093b0000"}"#;
    verify_signed(&platform_keys(), &signed(body, NOW), body, NOW).unwrap();
    // An empty body (204) is signed too: `timestamp\nnonce\n\n`.
    verify_signed(&platform_keys(), &signed(b"", NOW), b"", NOW).unwrap();
}

#[test]
fn timestamp_four_fifty_nine_away_is_accepted_and_five_minutes_is_rejected() {
    let body = b"{}";
    for offset in [299, -299] {
        verify_signed(&platform_keys(), &signed(body, NOW + offset), body, NOW).unwrap();
    }
    for offset in [300, -300, 86_400] {
        let err =
            verify_signed(&platform_keys(), &signed(body, NOW + offset), body, NOW).unwrap_err();
        assert!(
            matches!(err, PayError::TimestampSkew { .. }),
            "{offset}: {err:?}"
        );
    }
}

#[test]
fn forged_signature_is_rejected() {
    let body = b"{}";
    let forged = SignedHeaders::sign(&key(INTRUDER_KEY), PLATFORM_SERIAL, NOW, "n", body).unwrap();
    assert!(matches!(
        verify_signed(&platform_keys(), &forged, body, NOW),
        Err(PayError::SignatureInvalid)
    ));
    let garbage = SignedHeaders {
        signature: "bm90IGEgc2lnbmF0dXJl".into(),
        ..signed(body, NOW)
    };
    assert!(matches!(
        verify_signed(&platform_keys(), &garbage, body, NOW),
        Err(PayError::SignatureInvalid)
    ));
    // The WeChat Pay "signature probe" sends a deliberately wrong signature: it must fail.
    let probe = SignedHeaders {
        signature: "WECHATPAY/SIGNTEST/abcdef".into(),
        ..signed(body, NOW)
    };
    assert!(verify_signed(&platform_keys(), &probe, body, NOW).is_err());
}

#[test]
fn tampered_body_is_rejected() {
    let h = signed(br#"{"amount":1}"#, NOW);
    assert!(matches!(
        verify_signed(&platform_keys(), &h, br#"{"amount":9}"#, NOW),
        Err(PayError::SignatureInvalid)
    ));
}

#[test]
fn unknown_serial_is_rejected() {
    let h = SignedHeaders {
        serial: "PUB_KEY_ID_SOMEONE_ELSE".into(),
        ..signed(b"{}", NOW)
    };
    match verify_signed(&platform_keys(), &h, b"{}", NOW) {
        Err(PayError::UnknownSerial(s)) => assert_eq!(s, "PUB_KEY_ID_SOMEONE_ELSE"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn callback_decrypts_to_the_typed_transaction() {
    let body = callback(
        "TRANSACTION.SUCCESS",
        "transaction",
        transaction_json().to_string().as_bytes(),
    );
    let n = parse_notification(
        &platform_keys(),
        &apiv3_key(),
        &signed(&body, NOW),
        &body,
        NOW,
    )
    .unwrap();
    assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
    let NotifyPayload::Transaction(t) = n.payload else {
        panic!("not a transaction")
    };
    assert_eq!(t.out_trade_no, "1217752501201407033233368018");
    assert_eq!(
        t.transaction_id.as_deref(),
        Some("4200000000201407033233368018")
    );
    assert_eq!(t.trade_state, TradeState::Success);
    assert_eq!(t.amount_total_fen, 1230);
    assert_eq!(t.currency, "CNY");
    assert_eq!(
        t.payer_openid.as_deref(),
        Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    );
    assert_eq!(
        t.success_time.unwrap().to_rfc3339(),
        "2018-06-08T10:34:56+08:00"
    );
}

#[test]
fn refund_callback_decrypts_to_the_typed_refund_notice() {
    let plain = json!({
        "mchid": MCHID, "out_trade_no": "T1", "transaction_id": "4200", "out_refund_no": "R1",
        "refund_id": "50000000382019052709732678859", "refund_status": "SUCCESS",
        "success_time": "2018-06-08T10:34:56+08:00", "user_received_account": "招商银行信用卡0403",
        "amount": {"total": 999, "refund": 199, "payer_total": 999, "payer_refund": 199}
    });
    let body = callback("REFUND.SUCCESS", "refund", plain.to_string().as_bytes());
    let n = parse_notification(
        &platform_keys(),
        &apiv3_key(),
        &signed(&body, NOW),
        &body,
        NOW,
    )
    .unwrap();
    let NotifyPayload::Refund(r) = n.payload else {
        panic!("not a refund")
    };
    assert_eq!(
        (r.out_refund_no.as_str(), r.refund_status),
        ("R1", RefundStatus::Success)
    );
    assert_eq!((r.amount.total_fen, r.amount.refund_fen), (999, 199));
}

#[test]
fn aead_tamper_is_rejected_even_when_the_body_signature_is_valid() {
    let body = callback(
        "TRANSACTION.SUCCESS",
        "transaction",
        transaction_json().to_string().as_bytes(),
    );
    let mut envelope: NotifyEnvelope = serde_json::from_slice(&body).unwrap();
    let original = envelope.clone();

    // Flip one ciphertext byte, change the AAD, change the nonce, use another key.
    let mut raw = base64_decode(&envelope.resource.ciphertext);
    raw[3] ^= 1;
    envelope.resource.ciphertext = base64_encode(&raw);
    let mut cases = vec![envelope];
    let mut e = original.clone();
    e.resource.associated_data = "certificate".into();
    cases.push(e);
    let mut e = original.clone();
    e.resource.nonce = "fdasflkja485".into();
    cases.push(e);
    for e in cases {
        let body = serde_json::to_vec(&e).unwrap();
        let err = parse_notification(
            &platform_keys(),
            &apiv3_key(),
            &signed(&body, NOW),
            &body,
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err, PayError::DecryptFailed), "{err:?}");
    }
    let wrong = ApiV3Key::new("ffffffffffffffffffffffffffffffff").unwrap();
    let body = serde_json::to_vec(&original).unwrap();
    let err =
        parse_notification(&platform_keys(), &wrong, &signed(&body, NOW), &body, NOW).unwrap_err();
    assert!(matches!(err, PayError::DecryptFailed));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn malformed_callbacks_are_typed_errors_not_panics() {
    let good_resource = serde_json::from_slice::<serde_json::Value>(&callback(
        "TRANSACTION.SUCCESS",
        "transaction",
        b"{}",
    ))
    .unwrap()["resource"]
        .clone();
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        b"[]".to_vec(),
        br#"{"id":"1"}"#.to_vec(),
        json!({"id":"1","create_time":"","event_type":"TRANSACTION.SUCCESS","resource_type":"plain","resource":good_resource}).to_string().into_bytes(),
        json!({"id":"1","create_time":"","event_type":"TRANSACTION.SUCCESS","resource_type":"encrypt-resource",
               "resource":{"algorithm":"AEAD_AES_128_GCM","ciphertext":"","nonce":"123456789012"}}).to_string().into_bytes(),
        json!({"id":"1","create_time":"","event_type":"TRANSACTION.SUCCESS","resource_type":"encrypt-resource",
               "resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"***","nonce":"123456789012"}}).to_string().into_bytes(),
        // Decrypts, but to something that is not a transaction.
        callback("TRANSACTION.SUCCESS", "transaction", b"{}"),
        callback("TRANSACTION.SUCCESS", "transaction", b"\xff\xfe"),
        callback("TRANSACTION.SUCCESS", "transaction", br#"{"appid":"a","mchid":"m","out_trade_no":"o","trade_state":"SUCCESS","amount":{"total":-5}}"#),
        callback("TRANSACTION.SUCCESS", "transaction", br#"{"appid":"a","mchid":"m","out_trade_no":"o","trade_state":"SUCCESS","success_time":"yesterday","amount":{"total":5}}"#),
        callback("MARKETING.COUPON", "transaction", transaction_json().to_string().as_bytes()),
    ];
    for body in bodies {
        let r = parse_notification(
            &platform_keys(),
            &apiv3_key(),
            &signed(&body, NOW),
            &body,
            NOW,
        );
        let err = r.expect_err(&String::from_utf8_lossy(&body));
        assert!(
            matches!(err, PayError::Malformed { .. } | PayError::InvalidAmount(_)),
            "{}: {err:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn signature_headers_missing_or_of_another_type_are_malformed() {
    let h = signed(b"{}", NOW);
    let mut headers = HeaderMap::new();
    for (k, v) in h.pairs() {
        headers.insert(k, HeaderValue::from_str(v).unwrap());
    }
    assert_eq!(SignedHeaders::from_headers(&headers).unwrap(), h);
    let mut sm2 = headers.clone();
    sm2.insert(
        "Wechatpay-Signature-Type",
        HeaderValue::from_static("WECHATPAY2-SM2-WITH-SM3"),
    );
    assert!(matches!(
        SignedHeaders::from_headers(&sm2),
        Err(PayError::Malformed { .. })
    ));
    let mut missing = headers.clone();
    missing.remove("Wechatpay-Serial");
    assert!(matches!(
        SignedHeaders::from_headers(&missing),
        Err(PayError::Malformed { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Against the mock

#[tokio::test]
async fn mock_pays_and_the_verified_callback_reaches_the_merchant() {
    let env = Env::start().await;
    let notify = format!("{}/wx/notify", env.notify_base);
    let prepay_id = env
        .wechat()
        .jsapi_prepay(&prepay("WXE2E0001", &notify, 1230))
        .await
        .unwrap();
    assert!(prepay_id.starts_with("wx"));

    // The mini-program's pay parameters carry a paySign the merchant key verifies.
    let params = env.wechat().jsapi_pay_params(&prepay_id).unwrap();
    assert_eq!(params.package, format!("prepay_id={prepay_id}"));
    assert_eq!(
        (params.sign_type.as_str(), params.app_id.as_str()),
        ("RSA", APPID)
    );
    let message = format!(
        "{}\n{}\n{}\n{}\n",
        params.app_id, params.time_stamp, params.nonce_str, params.package
    );
    public(WX_MERCHANT_PUB)
        .verify_sha256_base64(message.as_bytes(), &params.pay_sign)
        .unwrap();

    let before = env
        .wechat()
        .query_by_out_trade_no("WXE2E0001")
        .await
        .unwrap();
    assert_eq!(
        (before.trade_state.clone(), before.transaction_id.clone()),
        (TradeState::NotPay, None)
    );

    let report = env.mock.pay("WXE2E0001").await.unwrap();
    assert!(report.delivered, "{report:?}");
    assert_eq!(
        (report.attempts, report.event.as_str()),
        (1, "TRANSACTION.SUCCESS")
    );

    let events = env.wx_events();
    assert_eq!(events.len(), 1);
    let NotifyPayload::Transaction(t) = &events[0].payload else {
        panic!("not a transaction")
    };
    assert_eq!(
        (t.out_trade_no.as_str(), t.mchid.as_str(), t.appid.as_str()),
        ("WXE2E0001", MCHID, APPID)
    );
    assert_eq!(
        (t.trade_state.clone(), t.amount_total_fen),
        (TradeState::Success, 1230)
    );
    assert!(t.transaction_id.is_some() && t.success_time.is_some());

    let after = env
        .wechat()
        .query_by_out_trade_no("WXE2E0001")
        .await
        .unwrap();
    assert_eq!(after, *t);
    assert!(env.receiver.rejected.lock().unwrap().is_empty());
}

#[tokio::test]
async fn callback_is_retried_until_the_merchant_acknowledges() {
    let env = Env::start().await;
    env.receiver
        .fail_first
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let notify = format!("{}/wx/notify", env.notify_base);
    env.wechat()
        .jsapi_prepay(&prepay("WXRETRY01", &notify, 1))
        .await
        .unwrap();
    let report = env.mock.pay("WXRETRY01").await.unwrap();
    assert_eq!(
        (report.delivered, report.attempts, report.last_status),
        (true, 3, Some(204))
    );
    assert_eq!(env.wx_events().len(), 1);
    // Each attempt was signed afresh, all of them verified (the failures were the receiver's).
    assert_eq!(env.receiver.raw_wx.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn callback_delivery_gives_up_after_the_configured_attempts() {
    let env = Env::start().await;
    env.receiver
        .fail_first
        .store(100, std::sync::atomic::Ordering::SeqCst);
    let notify = format!("{}/wx/notify", env.notify_base);
    env.wechat()
        .jsapi_prepay(&prepay("WXGIVEUP1", &notify, 1))
        .await
        .unwrap();
    let report = env.mock.pay("WXGIVEUP1").await.unwrap();
    assert_eq!(
        (report.delivered, report.attempts, report.last_status),
        (false, 4, Some(500))
    );
    assert_eq!(env.mock.deliveries(), vec![report]);
}

#[tokio::test]
async fn refund_is_idempotent_by_out_refund_no_and_its_notice_is_delivered() {
    let env = Env::start().await;
    let notify = format!("{}/wx/notify", env.notify_base);
    env.wechat()
        .jsapi_prepay(&prepay("WXREFUND1", &notify, 1000))
        .await
        .unwrap();
    env.mock.pay("WXREFUND1").await.unwrap();

    let req = RefundRequest {
        out_trade_no: "WXREFUND1".into(),
        out_refund_no: "RF-WXREFUND1-1".into(),
        reason: Some("七天无理由".into()),
        notify_url: None,
        refund_fen: 600,
        total_fen: 1000,
    };
    let first = env.wechat().refund(&req).await.unwrap();
    let again = env.wechat().refund(&req).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.status, RefundStatus::Processing);
    assert_eq!(
        (first.amount.refund_fen, first.amount.total_fen),
        (600, 1000)
    );
    let txn = env
        .mock
        .transactions()
        .into_iter()
        .find(|t| t.out_trade_no == "WXREFUND1")
        .unwrap();
    assert_eq!(
        txn.refunded_fen, 600,
        "a repeated refund must not move money twice"
    );

    // Reusing the number for another amount is refused; so is refunding more than remains.
    let reuse = RefundRequest {
        refund_fen: 100,
        ..req.clone()
    };
    assert!(
        matches!(env.wechat().refund(&reuse).await, Err(PayError::Rejected { code, .. }) if code == "INVALID_REQUEST")
    );
    let over = RefundRequest {
        out_refund_no: "RF-WXREFUND1-2".into(),
        refund_fen: 401,
        ..req.clone()
    };
    assert!(matches!(
        env.wechat().refund(&over).await,
        Err(PayError::Rejected { .. })
    ));

    let report = env.mock.refund_notice("RF-WXREFUND1-1").await.unwrap();
    assert!(report.delivered);
    assert_eq!(report.event, "REFUND.SUCCESS");
    let events = env.wx_events();
    let NotifyPayload::Refund(r) = &events.last().unwrap().payload else {
        panic!("not a refund")
    };
    assert_eq!(
        (r.out_refund_no.as_str(), r.refund_status.clone()),
        ("RF-WXREFUND1-1", RefundStatus::Success)
    );
    assert_eq!((r.amount.refund_fen, r.amount.total_fen), (600, 1000));
    assert_eq!(r.refund_id, first.refund_id);
    let settled = env.wechat().refund_query("RF-WXREFUND1-1").await.unwrap();
    assert_eq!(settled.status, RefundStatus::Success);
    let t = env
        .wechat()
        .query_by_out_trade_no("WXREFUND1")
        .await
        .unwrap();
    assert_eq!(t.trade_state, TradeState::Refund);
}

#[tokio::test]
async fn closed_order_cannot_be_paid_and_unknown_orders_are_rejected() {
    let env = Env::start().await;
    let notify = format!("{}/wx/notify", env.notify_base);
    env.wechat()
        .jsapi_prepay(&prepay("WXCLOSE01", &notify, 5))
        .await
        .unwrap();
    env.wechat().close("WXCLOSE01").await.unwrap();
    env.wechat().close("WXCLOSE01").await.unwrap();
    assert_eq!(
        env.wechat()
            .query_by_out_trade_no("WXCLOSE01")
            .await
            .unwrap()
            .trade_state,
        TradeState::Closed
    );
    assert!(env.mock.pay("WXCLOSE01").await.is_err());
    match env.wechat().query_by_out_trade_no("WXNOSUCH01").await {
        Err(PayError::Rejected { code, .. }) => assert_eq!(code, "ORDER_NOT_EXIST"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn prepay_is_idempotent_for_the_same_order_and_refuses_a_conflicting_reuse() {
    let env = Env::start().await;
    let notify = format!("{}/wx/notify", env.notify_base);
    let a = env
        .wechat()
        .jsapi_prepay(&prepay("WXPREPAY1", &notify, 5))
        .await
        .unwrap();
    let b = env
        .wechat()
        .jsapi_prepay(&prepay("WXPREPAY1", &notify, 5))
        .await
        .unwrap();
    assert_eq!(a, b);
    let err = env
        .wechat()
        .jsapi_prepay(&prepay("WXPREPAY1", &notify, 6))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "PAY_REJECTED");
}

#[tokio::test]
async fn mock_refuses_requests_signed_with_the_wrong_merchant_key() {
    let env = Env::start().await;
    let mut cfg = wechat_config(&env.base_url);
    cfg.merchant.private_key = key(INTRUDER_KEY);
    let client = WechatPayClient::new(cfg).unwrap();
    match client.query_by_out_trade_no("WXANY0001").await {
        Err(PayError::Auth { code, .. }) => assert_eq!(code, "SIGN_ERROR"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn client_refuses_answers_it_cannot_authenticate() {
    let env = Env::start().await;
    let mut cfg = wechat_config(&env.base_url);
    cfg.platform_keys =
        uphub_payments::wechatpay::PlatformKeys::new().with(PLATFORM_SERIAL, public(INTRUDER_PUB));
    let client = WechatPayClient::new(cfg).unwrap();
    let notify = format!("{}/wx/notify", env.notify_base);
    assert!(matches!(
        client.jsapi_prepay(&prepay("WXAUTH001", &notify, 5)).await,
        Err(PayError::SignatureInvalid)
    ));

    let mut cfg = wechat_config(&env.base_url);
    cfg.platform_keys = uphub_payments::wechatpay::PlatformKeys::new()
        .with("OTHER_SERIAL", public(WX_PLATFORM_PUB));
    let client = WechatPayClient::new(cfg).unwrap();
    assert!(matches!(
        client.jsapi_prepay(&prepay("WXAUTH002", &notify, 5)).await,
        Err(PayError::UnknownSerial(_))
    ));
}

#[tokio::test]
async fn injected_faults_become_retryable_errors() {
    let env = Env::start().await;
    env.mock.set_faults(Faults {
        server_error_rate: 1.0,
        rate_limit_rate: 0.0,
        ..Faults::default()
    });
    let err = env
        .wechat()
        .query_by_out_trade_no("WXFAULT01")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PayError::Unavailable { code, .. } if code == "SYSTEM_ERROR"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    env.mock.set_faults(Faults {
        server_error_rate: 0.0,
        rate_limit_rate: 1.0,
        ..Faults::default()
    });
    let err = env
        .wechat()
        .query_by_out_trade_no("WXFAULT01")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PayError::RateLimited { code, .. } if code == "RATELIMIT_EXCEED"),
        "{err:?}"
    );
    env.mock.set_faults(Faults::default());
    assert!(matches!(
        env.wechat().query_by_out_trade_no("WXFAULT01").await,
        Err(PayError::Rejected { .. })
    ));
}

#[tokio::test]
async fn notification_for_another_merchant_is_refused() {
    let env = Env::start().await;
    let mut other = transaction_json();
    other["mchid"] = "1900000999".into();
    let body = callback(
        "TRANSACTION.SUCCESS",
        "transaction",
        other.to_string().as_bytes(),
    );
    let now = chrono::Utc::now().timestamp();
    let mut headers = HeaderMap::new();
    for (k, v) in signed(&body, now).pairs() {
        headers.insert(k, HeaderValue::from_str(v).unwrap());
    }
    assert!(matches!(
        env.wechat().parse_notification(&headers, &body),
        Err(PayError::MerchantMismatch { .. })
    ));
}
