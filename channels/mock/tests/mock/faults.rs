use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use uphub_channels::sign::TopSignMethod;
use uphub_channels_mock::{Faults, Platform};

use crate::helpers::*;

async fn fullinfo(mock: &Mock) -> (u16, String) {
    let form = top_signed(
        top_params(
            "taobao.trade.fullinfo.get",
            TopSignMethod::Md5,
            &[("fields", "tid"), ("tid", "1")],
        ),
        TopSignMethod::Md5,
    );
    let r = top_post(mock, &form).await;
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn throttle_answers_have_each_platforms_shape_and_the_top_ban_is_enforced() {
    let mock = spawn().await;
    let throttle = Faults {
        throttle_rate: 1.0,
        ban_seconds: 1,
        ..Faults::default()
    };
    mock.m.set_faults(None, throttle);

    let (status, body) = fullinfo(&mock).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let e = &v["error_response"];
    assert_eq!(e["code"], 7, "{v}");
    assert_eq!(e["sub_code"], "accesscontrol.limited-by-api-access-count");
    assert_eq!(e["sub_msg"], "This ban will last for 1 more seconds");

    let now = Utc::now().timestamp();
    let v = dd(
        &mock,
        "order.searchList",
        json!({"page": 0, "size": 10, "update_time_start": now - 60, "update_time_end": now}),
    )
    .await;
    assert_eq!(v["code"], 60000, "{v}");
    let v = xhs(
        &mock,
        "order.getOrderList",
        json!({"timeType": 2, "startTime": now - 60, "endTime": now}),
    )
    .await;
    assert_eq!(
        (v["success"].clone(), v["error_code"].clone()),
        (json!(false), json!(-9013)),
        "{v}"
    );
    assert_eq!(v["error_msg"], "触发Method维度的限流");

    // Faults off: the ban still holds until it runs out, then calls pass.
    mock.m.set_faults(None, Faults::default());
    let (_, body) = fullinfo(&mock).await;
    assert!(body.contains("\"code\":7"), "still banned: {body}");
    assert_eq!(mock.m.fault_stats().taobao.refused_banned, 1);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (_, body) = fullinfo(&mock).await;
    assert!(!body.contains("\"code\":7"), "ban over: {body}");
}

#[tokio::test]
async fn fault_rates_are_roughly_honoured_and_repeat_with_the_seed() {
    let mock = spawn().await;
    let f = Faults {
        error_5xx_rate: 0.2,
        throttle_rate: 0.1,
        ban_seconds: 0,
        ..Faults::default()
    };
    mock.m.set_faults(Some(Platform::Taobao), f);
    let mut outcomes = Vec::new();
    for _ in 0..400 {
        let (status, body) = fullinfo(&mock).await;
        outcomes.push(match status {
            502 => "5xx",
            200 if body.contains("\"code\":7") => "throttle",
            200 => "ok",
            _ => "other",
        });
    }
    let count = |k: &str| outcomes.iter().filter(|o| **o == k).count();
    assert!((50..=110).contains(&count("5xx")), "5xx {}", count("5xx"));
    assert!(
        (20..=65).contains(&count("throttle")),
        "throttle {}",
        count("throttle")
    );
    assert_eq!(count("other"), 0);

    // Setting the faults again restarts the seeded RNG: the same calls meet the same faults.
    mock.m.set_faults(Some(Platform::Taobao), f);
    let mut again = Vec::new();
    for _ in 0..50 {
        let (status, body) = fullinfo(&mock).await;
        again.push(match status {
            502 => "5xx",
            200 if body.contains("\"code\":7") => "throttle",
            _ => "ok",
        });
    }
    assert_eq!(again, outcomes[..50]);
}

#[tokio::test]
async fn injected_5xx_is_plain_text_and_a_timeout_outlasts_a_short_client() {
    let mock = spawn().await;
    mock.m.set_faults(
        Some(Platform::Douyin),
        Faults {
            error_5xx_rate: 1.0,
            ..Faults::default()
        },
    );
    let r = dd_raw(&mock, "order.searchList", "{}", None, Some("dy-at")).await;
    assert!(r.status() == 502 || r.status() == 503);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );

    mock.m.set_faults(
        Some(Platform::Xiaohongshu),
        Faults {
            timeout_rate: 1.0,
            timeout_ms: 1_500,
            ..Faults::default()
        },
    );
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let body = xhs_body(
        "order.getOrderList",
        Some("xhs-at"),
        json!({}),
        "xhs-secret",
    );
    let err = short
        .post(format!("{}/ark/open_api/v3/common_controller", mock.base))
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(mock.m.fault_stats().xiaohongshu.timeouts, 1);
}

#[tokio::test]
async fn faults_never_touch_the_admin_endpoints() {
    let mock = spawn().await;
    mock.m.set_faults(
        None,
        Faults {
            error_5xx_rate: 1.0,
            ..Faults::default()
        },
    );
    for path in [
        "/_mock/truth",
        "/_mock/stock",
        "/_mock/scenario",
        "/_mock/stats",
        "/_mock/faults",
    ] {
        let r = mock
            .http
            .get(format!("{}{path}", mock.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}
