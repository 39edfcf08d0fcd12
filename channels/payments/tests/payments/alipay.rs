use uphub_payments::PayError;
use uphub_payments::alipay::{
    AlipayClient, TradeCreateRequest, TradeRefundRequest, TradeStatus, parse_notify, sign_params,
    verify_response,
};
use uphub_payments::mock::Faults;

use crate::common::*;

fn create(out_trade_no: &str, notify_url: Option<String>, fen: i64) -> TradeCreateRequest {
    TradeCreateRequest {
        out_trade_no: out_trade_no.into(),
        total_amount_fen: fen,
        subject: "UpHub 测试商品".into(),
        buyer_id: Some("2088102177846880".into()),
        notify_url,
        timeout_express: Some("30m".into()),
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// An Alipay-signed notify body: sign over everything but sign_type, then both appended.
fn signed_notify(pairs: &[(&str, &str)]) -> Vec<u8> {
    let sign = sign_params(&key(ALI_PLATFORM_KEY), pairs.iter().copied()).unwrap();
    let mut all = pairs.to_vec();
    all.push(("sign_type", "RSA2"));
    all.push(("sign", &sign));
    form(&all).into_bytes()
}

const NOTIFY: &[(&str, &str)] = &[
    ("notify_time", "2024-05-01 12:00:05"),
    ("notify_type", "trade_status_sync"),
    ("notify_id", "ac05099524730693a8b330c5ecf72da9786"),
    ("app_id", ALI_APP_ID),
    ("charset", "utf-8"),
    ("version", "1.0"),
    ("trade_no", "2024050122001480000000000001"),
    ("out_trade_no", "ALI-0001"),
    ("buyer_id", "2088102177846880"),
    ("trade_status", "TRADE_SUCCESS"),
    ("total_amount", "12.30"),
    ("receipt_amount", "12.3"),
    ("refund_fee", "0.29"),
    ("subject", "测试 & 商品=1"),
    ("gmt_create", "2024-05-01 11:59:00"),
    ("gmt_payment", "2024-05-01 12:00:00"),
    ("gmt_refund", "2024-05-01 12:30:00.320"),
];

#[test]
fn notify_signed_by_alipay_verifies_and_types_amounts_in_fen() {
    let n = parse_notify(&public(ALI_PLATFORM_PUB), &signed_notify(NOTIFY)).unwrap();
    assert_eq!(
        (n.app_id.as_str(), n.out_trade_no.as_str()),
        (ALI_APP_ID, "ALI-0001")
    );
    assert_eq!(n.trade_status, TradeStatus::TradeSuccess);
    assert_eq!(n.total_amount_fen, 1230);
    assert_eq!(n.receipt_amount_fen, Some(1230));
    assert_eq!(n.refund_fee_fen, Some(29));
    assert_eq!(
        n.gmt_payment.unwrap().to_rfc3339(),
        "2024-05-01T12:00:00+08:00"
    );
    assert_eq!(n.gmt_refund.unwrap().timestamp_subsec_millis(), 320);
}

#[test]
fn tampered_or_foreign_notify_is_rejected() {
    let pub_key = public(ALI_PLATFORM_PUB);
    let body = String::from_utf8(signed_notify(NOTIFY)).unwrap();
    let tampered = body.replace("total_amount=12.30", "total_amount=0.01");
    assert!(matches!(
        parse_notify(&pub_key, tampered.as_bytes()),
        Err(PayError::SignatureInvalid)
    ));
    // Signed by someone else's key.
    let sign = sign_params(&key(INTRUDER_KEY), NOTIFY.iter().copied()).unwrap();
    let mut pairs = NOTIFY.to_vec();
    pairs.push(("sign", &sign));
    assert!(matches!(
        parse_notify(&pub_key, form(&pairs).as_bytes()),
        Err(PayError::SignatureInvalid)
    ));
    // An extra field that the signature does not cover.
    let extended = format!("{body}&refund_fee2=1");
    assert!(parse_notify(&pub_key, extended.as_bytes()).is_err());
    for junk in ["", "sign=", "a=1&a=2", "%zz=1", "sign_type=RSA&sign=x"] {
        assert!(parse_notify(&pub_key, junk.as_bytes()).is_err(), "{junk}");
    }
}

#[test]
fn signed_notify_with_a_bad_amount_is_a_typed_error() {
    let mut pairs = NOTIFY.to_vec();
    pairs.retain(|(k, _)| *k != "total_amount");
    pairs.push(("total_amount", "12.345"));
    let err = parse_notify(&public(ALI_PLATFORM_PUB), &signed_notify(&pairs)).unwrap_err();
    assert!(matches!(err, PayError::InvalidAmount(_)), "{err:?}");
}

#[test]
fn response_signature_covers_the_raw_response_text_not_a_reserialisation() {
    // Alipay's key order, spacing and escapes; a re-serialisation would change all three.
    let content = r#"{"code":"10000","msg":"Success","trade_no":"2013112011001004330000121536","out_trade_no":"6823789339978248","subject":"a}b{\"c\u5f20 三","total_amount":"88.88"}"#;
    let sign = key(ALI_PLATFORM_KEY)
        .sign_sha256_base64(content.as_bytes())
        .unwrap();
    let body = format!(r#"{{"alipay_trade_query_response":{content},"sign":"{sign}"}}"#);
    let raw = verify_response(&public(ALI_PLATFORM_PUB), &body, "alipay.trade.query").unwrap();
    assert_eq!(raw, content);

    let value: serde_json::Value = serde_json::from_str(content).unwrap();
    let reserialised = value.to_string();
    assert_ne!(reserialised, content);
    assert!(
        public(ALI_PLATFORM_PUB)
            .verify_sha256_base64(reserialised.as_bytes(), &sign)
            .is_err()
    );

    let tampered = body.replace("88.88", "88.89");
    assert!(matches!(
        verify_response(&public(ALI_PLATFORM_PUB), &tampered, "alipay.trade.query"),
        Err(PayError::SignatureInvalid)
    ));
    let unsigned = format!(r#"{{"alipay_trade_query_response":{content}}}"#);
    assert!(matches!(
        verify_response(&public(ALI_PLATFORM_PUB), &unsigned, "alipay.trade.query"),
        Err(PayError::SignatureInvalid)
    ));
}

// ---------------------------------------------------------------------------------------------
// Against the mock

#[tokio::test]
async fn mock_pays_and_the_verified_notify_reaches_the_merchant() {
    let env = Env::start().await;
    let notify = Some(format!("{}/ali/notify", env.notify_base));
    let created = env
        .alipay()
        .trade_create(&create("ALIE2E0001", notify, 1230))
        .await
        .unwrap();
    assert_eq!(created.out_trade_no, "ALIE2E0001");
    assert_eq!(created.trade_no.len(), 28);
    let before = env.alipay().trade_query("ALIE2E0001").await.unwrap();
    assert_eq!(
        (before.trade_status, before.total_amount_fen),
        (TradeStatus::WaitBuyerPay, 1230)
    );

    let report = env.mock.pay("ALIE2E0001").await.unwrap();
    assert!(report.delivered && report.attempts == 1, "{report:?}");
    let events = env.ali_events();
    assert_eq!(events.len(), 1);
    let n = &events[0];
    assert_eq!(
        (n.out_trade_no.as_str(), n.trade_no.as_str()),
        ("ALIE2E0001", created.trade_no.as_str())
    );
    assert_eq!(
        (n.trade_status.clone(), n.total_amount_fen),
        (TradeStatus::TradeSuccess, 1230)
    );
    assert!(n.gmt_payment.is_some());

    let after = env.alipay().trade_query("ALIE2E0001").await.unwrap();
    assert_eq!(
        (after.trade_status, after.buyer_pay_amount_fen),
        (TradeStatus::TradeSuccess, Some(1230))
    );
    assert!(after.send_pay_date.is_some());
}

#[tokio::test]
async fn notify_is_retried_until_the_merchant_answers_success() {
    let env = Env::start().await;
    env.receiver
        .fail_first
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let notify = Some(format!("{}/ali/notify", env.notify_base));
    env.alipay()
        .trade_create(&create("ALIRETRY01", notify, 1))
        .await
        .unwrap();
    let report = env.mock.pay("ALIRETRY01").await.unwrap();
    assert_eq!((report.delivered, report.attempts), (true, 2));
    assert_eq!(env.ali_events().len(), 1);
}

#[tokio::test]
async fn refund_is_idempotent_by_out_request_no_and_its_notice_is_delivered() {
    let env = Env::start().await;
    let notify = Some(format!("{}/ali/notify", env.notify_base));
    env.alipay()
        .trade_create(&create("ALIREFUND1", notify, 1000))
        .await
        .unwrap();
    env.mock.pay("ALIREFUND1").await.unwrap();

    let req = TradeRefundRequest {
        out_trade_no: "ALIREFUND1".into(),
        out_request_no: "RQ-1".into(),
        refund_amount_fen: 250,
        refund_reason: Some("正常退款".into()),
    };
    let first = env.alipay().trade_refund(&req).await.unwrap();
    assert_eq!((first.fund_change, first.refund_fee_fen), (true, 250));
    let again = env.alipay().trade_refund(&req).await.unwrap();
    assert_eq!(
        (again.fund_change, again.refund_fee_fen),
        (false, 250),
        "a retry moves no money"
    );
    let txn = env
        .mock
        .transactions()
        .into_iter()
        .find(|t| t.out_trade_no == "ALIREFUND1")
        .unwrap();
    assert_eq!(txn.refunded_fen, 250);

    let over = TradeRefundRequest {
        out_request_no: "RQ-2".into(),
        refund_amount_fen: 751,
        ..req.clone()
    };
    match env.alipay().trade_refund(&over).await {
        Err(PayError::Rejected { code, sub_code, .. }) => {
            assert_eq!(
                (code.as_str(), sub_code.as_deref()),
                ("40004", Some("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"))
            );
        }
        other => panic!("{other:?}"),
    }
    let rest = TradeRefundRequest {
        out_request_no: "RQ-2".into(),
        refund_amount_fen: 750,
        ..req.clone()
    };
    assert_eq!(
        env.alipay()
            .trade_refund(&rest)
            .await
            .unwrap()
            .refund_fee_fen,
        1000
    );
    assert_eq!(
        env.alipay()
            .trade_query("ALIREFUND1")
            .await
            .unwrap()
            .trade_status,
        TradeStatus::TradeClosed
    );

    let report = env.mock.refund_notice("RQ-1").await.unwrap();
    assert!(report.delivered);
    let n = env.ali_events().pop().unwrap();
    assert_eq!(n.out_biz_no.as_deref(), Some("RQ-1"));
    assert_eq!(n.refund_fee_fen, Some(1000));
    assert!(n.gmt_refund.is_some());
}

#[tokio::test]
async fn gateway_errors_map_to_typed_errors() {
    let env = Env::start().await;
    match env.alipay().trade_query("ALINOSUCH1").await {
        Err(PayError::Rejected { code, sub_code, .. }) => {
            assert_eq!(
                (code.as_str(), sub_code.as_deref()),
                ("40004", Some("ACQ.TRADE_NOT_EXIST"))
            );
        }
        other => panic!("{other:?}"),
    }
    env.mock.set_faults(Faults {
        server_error_rate: 1.0,
        rate_limit_rate: 0.0,
        ..Faults::default()
    });
    let err = env.alipay().trade_query("ALINOSUCH1").await.unwrap_err();
    assert!(
        matches!(&err, PayError::Unavailable { code, .. } if code == "20000"),
        "{err:?}"
    );
    env.mock.set_faults(Faults {
        server_error_rate: 0.0,
        rate_limit_rate: 1.0,
        ..Faults::default()
    });
    let err = env.alipay().trade_query("ALINOSUCH1").await.unwrap_err();
    assert!(
        matches!(&err, PayError::RateLimited { code, .. } if code == "40005"),
        "{err:?}"
    );
    env.mock.set_faults(Faults::default());

    let mut cfg = alipay_config(&format!("{}/gateway.do", env.base_url));
    cfg.app_private_key = key(INTRUDER_KEY);
    let wrong_key = AlipayClient::new(cfg).unwrap();
    assert!(matches!(
        wrong_key.trade_query("ALINOSUCH1").await,
        Err(PayError::Auth { .. })
    ));

    let mut cfg = alipay_config(&format!("{}/gateway.do", env.base_url));
    cfg.app_id = "2021009999999999".into();
    let unknown_app = AlipayClient::new(cfg).unwrap();
    assert!(matches!(
        unknown_app.trade_query("ALINOSUCH1").await,
        Err(PayError::Auth { .. })
    ));

    let mut cfg = alipay_config(&format!("{}/gateway.do", env.base_url));
    cfg.alipay_public_key = public(INTRUDER_PUB);
    let distrustful = AlipayClient::new(cfg).unwrap();
    assert!(matches!(
        distrustful.trade_query("ALINOSUCH1").await,
        Err(PayError::SignatureInvalid)
    ));
}

#[tokio::test]
async fn closed_trade_cannot_be_paid() {
    let env = Env::start().await;
    let notify = Some(format!("{}/ali/notify", env.notify_base));
    env.alipay()
        .trade_create(&create("ALICLOSE01", notify, 5))
        .await
        .unwrap();
    env.alipay().trade_close("ALICLOSE01").await.unwrap();
    assert_eq!(
        env.alipay()
            .trade_query("ALICLOSE01")
            .await
            .unwrap()
            .trade_status,
        TradeStatus::TradeClosed
    );
    assert!(env.mock.pay("ALICLOSE01").await.is_err());
    assert!(env.ali_events().is_empty());
}

#[tokio::test]
async fn notify_for_another_app_is_refused() {
    let env = Env::start().await;
    let mut pairs = NOTIFY.to_vec();
    pairs.retain(|(k, _)| *k != "app_id");
    pairs.push(("app_id", "2021000000000999"));
    assert!(matches!(
        env.alipay().parse_notify(&signed_notify(&pairs)),
        Err(PayError::MerchantMismatch { .. })
    ));
}
