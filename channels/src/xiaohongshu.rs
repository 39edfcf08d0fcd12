//! Xiaohongshu (Ark): one JSON gateway, list-then-detail order pulls paged from the last page
//! backwards, `openAddressId` decryption and token refresh on error 1004.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{StreamExt, stream};
use serde_json::{Map, Value, json};
use uphub_domain::catalog::ChannelType;
use uphub_domain::order::{
    ChannelOrder, ChannelOrderLine, ChannelTypeCode, Receiver, SealedReceiver, from_xhs,
    from_xhs_after_sales,
};

use crate::http::{
    Http, HttpConfig, array, dedupe_newest, fen, field, int, missing, non_empty, parse_json,
    quantity, req_int, req_text, split_window, text, whole_seconds,
};
use crate::sign::xhs_sign;

use crate::{ChannelError, Credentials, Marketplace, Window};

/// Order details fetched per window pull at most (see `fetch_window`).
const DETAILS_PER_PULL: usize = 200;
/// List pages requested at once.
const LIST_CONCURRENCY: usize = 4;

const VERSION: &str = "2.0";
const GATEWAY: &str = "/ark/open_api/v3/common_controller";
const PAGE_SIZE: i64 = 100;
/// `timeType=2` (updated) windows are at most 30 minutes.
const MAX_WINDOW_MINUTES: i64 = 30;
const DECRYPT_BATCH: usize = 20;
const THROTTLED: i64 = -9013;
const TOKEN_EXPIRED: i64 = 1004;
const BAD_SIGNATURE: i64 = 1003;
/// Detail calls in flight at once while pulling a window.
pub const DEFAULT_DETAIL_CONCURRENCY: usize = 16;

#[derive(Debug)]
pub(crate) enum Answer {
    Data(Value),
    TokenExpired(String),
}

/// Maps a gateway answer (`{success, error_code, error_msg, data}`).
pub(crate) fn parse_answer(
    status: reqwest::StatusCode,
    body: &str,
) -> Result<Answer, ChannelError> {
    let v = parse_json(status, body)?;
    let success = field(&v, "success")
        .and_then(Value::as_bool)
        .ok_or_else(|| missing("Xiaohongshu answer", "success"))?;
    let code = int(&v, "error_code").unwrap_or(0);
    if success && code == 0 {
        let data = match v {
            Value::Object(mut m) => m.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        };
        return Ok(Answer::Data(data));
    }
    let msg = text(&v, "error_msg").unwrap_or_default();
    Err(match code {
        TOKEN_EXPIRED => return Ok(Answer::TokenExpired(msg)),
        THROTTLED => ChannelError::RateLimited {
            retry_after: std::time::Duration::ZERO,
        },
        BAD_SIGNATURE => ChannelError::Auth(format!("Xiaohongshu {code}: {msg}")),
        _ => ChannelError::Rejected {
            code: code.to_string(),
            message: msg,
        },
    })
}

fn from_millis(ms: i64, what: &str) -> Result<DateTime<Utc>, ChannelError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| ChannelError::Protocol(format!("{what}: time {ms} out of range")))
}

fn line_from_sku(s: &Value, order_id: &str) -> Result<ChannelOrderLine, ChannelError> {
    let what = format!("order {order_id} sku");
    let sku_id = req_text(s, "skuId", &what)?;
    let what = format!("order {order_id} sku {sku_id}");
    let quantity = quantity(s, "skuQuantity", &what)?;
    let paid = fen(s, "totalPaidAmount", &what)?;
    Ok(ChannelOrderLine {
        platform_line_id: sku_id.clone(),
        platform_item_id: non_empty(s, "itemId").unwrap_or_default(),
        platform_sku_id: sku_id,
        outer_sku_code: non_empty(s, "erpcode"),
        title: text(s, "skuName").unwrap_or_default(),
        quantity,
        // The detail gives only the line's paid total.
        unit_price_fen: paid / i64::from(quantity),
        paid_fen: paid,
        after_sales: from_xhs_after_sales(int(s, "skuAfterSaleStatus").unwrap_or(1)),
    })
}

/// One `order.getOrderDetail` answer as our order.
pub(crate) fn detail_to_order(shop_id: &str, d: &Value) -> Result<ChannelOrder, ChannelError> {
    let id = req_text(d, "orderId", "order detail")?;
    let what = format!("order {id}");
    let raw_status = req_int(d, "orderStatus", &what)?;
    let status =
        from_xhs(raw_status).map_err(|e| ChannelError::Protocol(format!("{what}: {e}")))?;
    let paid = int(d, "paidTime").unwrap_or(0);
    let lines = array(d, "skuList")
        .iter()
        .map(|s| line_from_sku(s, &id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChannelOrder {
        channel: ChannelTypeCode(ChannelType::Xiaohongshu),
        shop_id: shop_id.to_owned(),
        status,
        platform_status: raw_status.to_string(),
        created_at: from_millis(req_int(d, "createdTime", &what)?, &what)?,
        modified_at: from_millis(req_int(d, "updateTime", &what)?, &what)?,
        paid_at: if paid > 0 {
            Some(from_millis(paid, &what)?)
        } else {
            None
        },
        buyer_open_id: non_empty(d, "userId"),
        receiver: SealedReceiver {
            masked_name: text(d, "receiverName").unwrap_or_default(),
            masked_phone: text(d, "receiverPhone").unwrap_or_default(),
            province: text(d, "receiverProvinceName").unwrap_or_default(),
            city: text(d, "receiverCityName").unwrap_or_default(),
            district: text(d, "receiverDistrictName").unwrap_or_default(),
            masked_address: text(d, "receiverAddress").unwrap_or_default(),
            decrypt_ref: text(d, "openAddressId").unwrap_or_default(),
        },
        total_fen: fen(d, "totalPayAmount", &what)?,
        post_fee_fen: if field(d, "totalShippingFree").is_some() {
            fen(d, "totalShippingFree", &what)?
        } else {
            0
        },
        lines,
        platform_order_id: id,
    })
}

/// The last page of a list answer: `maxPageNo`, else derived from `total`.
fn last_page(data: &Value) -> i64 {
    int(data, "maxPageNo").unwrap_or_else(|| {
        let total = int(data, "total").unwrap_or(0).max(0);
        (total + PAGE_SIZE - 1) / PAGE_SIZE
    })
}

/// A Xiaohongshu shop.
pub struct XiaohongshuShop {
    http: Http,
    creds: Mutex<Credentials>,
    refreshing: tokio::sync::Mutex<()>,
    detail_concurrency: usize,
    /// The last window listed and what it listed. A busy window is worked off in several pulls
    /// of one adapter (one sync round); they list it once, not once per piece. An order changed
    /// after the listing carries a newer modified time, which falls in a later window.
    listing: Mutex<Option<(Window, Vec<Listed>)>>,
}

/// An order id from `order.getOrderList` with its update time.
type Listed = (String, Option<DateTime<Utc>>);

impl XiaohongshuShop {
    pub fn new(creds: Credentials, config: HttpConfig) -> Result<Self, ChannelError> {
        Ok(Self {
            http: Http::new(config)?,
            creds: Mutex::new(creds),
            refreshing: tokio::sync::Mutex::new(()),
            detail_concurrency: DEFAULT_DETAIL_CONCURRENCY,
            listing: Mutex::new(None),
        })
    }

    /// How many `order.getOrderDetail` calls run at once (at least one).
    pub fn with_detail_concurrency(mut self, n: usize) -> Self {
        self.detail_concurrency = n.max(1);
        self
    }

    fn current(&self) -> Credentials {
        self.creds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, ChannelError> {
        let token = self.current().access_token;
        match self.call_retrying(method, &params, Some(&token)).await? {
            Answer::Data(d) => Ok(d),
            Answer::TokenExpired(_) => {
                self.refresh(&token).await?;
                let token = self.current().access_token;
                match self.call_retrying(method, &params, Some(&token)).await? {
                    Answer::Data(d) => Ok(d),
                    Answer::TokenExpired(m) => Err(ChannelError::Auth(format!(
                        "access token still expired after a refresh: {m}"
                    ))),
                }
            }
        }
    }

    async fn call_retrying(
        &self,
        method: &str,
        params: &Value,
        token: Option<&str>,
    ) -> Result<Answer, ChannelError> {
        self.http
            .retrying(method, || self.call_once(method, params, token))
            .await
    }

    async fn call_once(
        &self,
        method: &str,
        params: &Value,
        token: Option<&str>,
    ) -> Result<Answer, ChannelError> {
        let c = self.current();
        let timestamp = Utc::now().timestamp().to_string();
        let sign = xhs_sign(method, &c.app_key, &timestamp, VERSION, &c.app_secret);
        let mut body = match params {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        body.insert("method".into(), method.into());
        body.insert("appId".into(), c.app_key.clone().into());
        body.insert("timestamp".into(), timestamp.into());
        body.insert("version".into(), VERSION.into());
        body.insert("sign".into(), sign.into());
        if let Some(t) = token {
            body.insert("accessToken".into(), t.into());
        }
        let url = format!("{}{GATEWAY}", c.base_url.trim_end_matches('/'));
        let request = self.http.client.post(url).json(&Value::Object(body));
        let (status, body) = self.http.send(request).await?;
        parse_answer(status, &body)
    }

    async fn refresh(&self, stale: &str) -> Result<(), ChannelError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let c = self.current();
        if c.access_token != stale {
            return Ok(());
        }
        let refresh_token = c.refresh_token.filter(|t| !t.is_empty()).ok_or_else(|| {
            ChannelError::Auth("access token expired and there is no refresh token".into())
        })?;
        let answer = self
            .call_retrying(
                "oauth.refreshToken",
                &json!({"refreshToken": refresh_token}),
                None,
            )
            .await
            .map_err(|e| match e {
                ChannelError::Rejected { code, message } => {
                    ChannelError::Auth(format!("token refresh refused: {code}: {message}"))
                }
                other => other,
            })?;
        let data = match answer {
            Answer::Data(d) => d,
            Answer::TokenExpired(m) => {
                return Err(ChannelError::Auth(format!("token refresh refused: {m}")));
            }
        };
        let access = req_text(&data, "accessToken", "oauth.refreshToken")?;
        let refresh = non_empty(&data, "refreshToken");
        let mut held = self.creds.lock().unwrap_or_else(PoisonError::into_inner);
        held.access_token = access;
        if refresh.is_some() {
            held.refresh_token = refresh;
        }
        tracing::info!(shop = %held.shop_id, "Xiaohongshu access token refreshed");
        Ok(())
    }

    async fn list_page(&self, w: Window, page: i64) -> Result<Value, ChannelError> {
        let (start, end) = whole_seconds(w);
        self.call(
            "order.getOrderList",
            json!({
                "timeType": 2,
                "startTime": start,
                "endTime": end,
                "pageNo": page,
                "pageSize": PAGE_SIZE,
            }),
        )
        .await
    }
}

#[async_trait::async_trait]
impl Marketplace for XiaohongshuShop {
    fn channel(&self) -> ChannelType {
        ChannelType::Xiaohongshu
    }

    async fn orders_modified(&self, window: Window) -> Result<Vec<ChannelOrder>, ChannelError> {
        let fetched = self.pull(window, &HashMap::new(), usize::MAX).await?;
        match fetched.error {
            Some(e) => Err(e),
            None => Ok(fetched.orders),
        }
    }

    async fn fetch_window(
        &self,
        window: Window,
        known: &HashMap<String, DateTime<Utc>>,
    ) -> Result<crate::WindowFetch, ChannelError> {
        self.pull(window, known, DETAILS_PER_PULL).await
    }

    async fn order(&self, platform_order_id: &str) -> Result<ChannelOrder, ChannelError> {
        let data = self
            .call(
                "order.getOrderDetail",
                json!({"orderId": platform_order_id}),
            )
            .await?;
        detail_to_order(&self.current().shop_id, &data)
    }

    async fn decrypt_receivers(
        &self,
        sealed: &[(String, SealedReceiver)],
    ) -> Result<Vec<Option<Receiver>>, ChannelError> {
        let mut out = Vec::with_capacity(sealed.len());
        for batch in sealed.chunks(DECRYPT_BATCH) {
            let queries: Vec<Value> = batch
                .iter()
                .filter(|(_, s)| !s.decrypt_ref.is_empty())
                .map(|(id, s)| json!({"orderId": id, "openAddressId": s.decrypt_ref}))
                .collect();
            let mut found: HashMap<String, Receiver> = HashMap::new();
            if !queries.is_empty() {
                let data = self
                    .call(
                        "order.getOrderReceiverInfo",
                        json!({"receiverQueries": queries, "isReturn": false}),
                    )
                    .await?;
                for r in array(&data, "receiverInfos") {
                    if field(r, "matched").and_then(Value::as_bool) == Some(false) {
                        continue;
                    }
                    let Some(id) = non_empty(r, "orderId") else {
                        continue;
                    };
                    found.insert(
                        id,
                        Receiver {
                            name: text(r, "receiverName").unwrap_or_default(),
                            phone: text(r, "receiverPhone").unwrap_or_default(),
                            province: text(r, "receiverProvinceName").unwrap_or_default(),
                            city: text(r, "receiverCityName").unwrap_or_default(),
                            district: text(r, "receiverDistrictName").unwrap_or_default(),
                            address: text(r, "receiverAddress").unwrap_or_default(),
                        },
                    );
                }
            }
            for (id, s) in batch {
                out.push(if s.decrypt_ref.is_empty() {
                    None
                } else {
                    found.remove(id)
                });
            }
        }
        Ok(out)
    }

    async fn ship(
        &self,
        platform_order_id: &str,
        line_ids: &[String],
        carrier_code: &str,
        tracking_no: &str,
    ) -> Result<(), ChannelError> {
        let mut params = json!({
            "orderId": platform_order_id,
            "expressNo": tracking_no,
            "expressCompanyCode": carrier_code,
        });
        if !line_ids.is_empty() {
            params["skuIdList"] = json!(line_ids);
        }
        self.call("order.orderDeliver", params).await.map(|_| ())
    }

    async fn push_stock(
        &self,
        _platform_item_id: &str,
        platform_sku_id: &str,
        quantity: i64,
    ) -> Result<(), ChannelError> {
        self.call(
            "inventory.syncSkuStock",
            json!({"skuId": platform_sku_id, "qty": quantity}),
        )
        .await
        .map(|_| ())
    }

    fn credentials(&self) -> Credentials {
        self.current()
    }
}

impl XiaohongshuShop {
    /// Every order id of the window with its update time, each once.
    async fn list_window(&self, window: Window) -> Result<Vec<Listed>, ChannelError> {
        let mut listed: Vec<Listed> = Vec::new();
        for w in split_window(window, TimeDelta::minutes(MAX_WINDOW_MINUTES)) {
            let first = self.list_page(w, 1).await?;
            let last = last_page(&first);
            let mut pages = vec![first];
            if last > 1 {
                // From the last page back to the first (the platform's advice for updated-time
                // pulls, so orders updated while we page are not skipped), a few in flight.
                let calls: Vec<_> = (1..=last).rev().map(|p| self.list_page(w, p)).collect();
                pages = stream::iter(calls)
                    .buffered(LIST_CONCURRENCY)
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<Result<_, _>>()?;
            }
            for data in &pages {
                for o in array(data, "orderList") {
                    let updated = int(o, "updateTime").and_then(DateTime::from_timestamp_millis);
                    listed.push((req_text(o, "orderId", "order.getOrderList")?, updated));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        listed.retain(|(id, _)| seen.insert(id.clone()));
        Ok(listed)
    }

    /// Lists the window (once per window per adapter) and fetches at most `max_details` order details not already `known`.
    async fn pull(
        &self,
        window: Window,
        known: &HashMap<String, DateTime<Utc>>,
        max_details: usize,
    ) -> Result<crate::WindowFetch, ChannelError> {
        let cached = self
            .listing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(w, _)| *w == window)
            .map(|(_, l)| l.clone());
        let listed = match cached {
            Some(l) => l,
            None => {
                let l = self.list_window(window).await?;
                *self.listing.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((window, l.clone()));
                l
            }
        };
        // The list says when each order last changed: a detail we already hold is not fetched again.
        let ids: Vec<String> = listed
            .into_iter()
            .filter(|(id, updated)| match (known.get(id), updated) {
                (Some(held), Some(u)) => u > held,
                _ => true,
            })
            .map(|(id, _)| id)
            .collect();
        // A bounded number of details per pull: a busy window behind a flaky platform is worked
        // off in pieces the caller can commit, instead of all or nothing.
        let more = ids.len() > max_details;
        let ids: Vec<String> = ids.into_iter().take(max_details).collect();
        // Boxed futures collected first: a closure inside the stream trips the `Send` check of
        // the async-trait future (higher-ranked lifetimes). Unordered: one call stuck in a
        // timeout or back-off must not hold the others (the caller dedupes by newest anyway).
        let details: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| async move { (n, self.order(id).await) })
            .collect();
        let mut results: Vec<(usize, Result<ChannelOrder, ChannelError>)> = stream::iter(details)
            .buffer_unordered(self.detail_concurrency)
            .collect()
            .await;
        // Back in listing order (last page first).
        results.sort_by_key(|(n, _)| *n);
        let results = results.into_iter().map(|(_, r)| r);
        let mut orders = Vec::with_capacity(results.len());
        let mut error = None;
        for r in results {
            match r {
                Ok(o) => orders.push(o),
                // A platform answer we cannot read is not worth a retry; it fails the window.
                Err(e @ ChannelError::Protocol(_)) => return Err(e),
                Err(e) => error = Some(e),
            }
        }
        Ok(crate::WindowFetch {
            orders: dedupe_newest(orders),
            complete: error.is_none() && !more,
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uphub_domain::order::{AfterSales, OrderStatus};

    fn detail() -> Value {
        json!({
            "orderId": "P739000000000000001",
            "orderStatus": 4,
            "orderAfterSalesStatus": 1,
            "createdTime": 1_709_258_400_000_i64,
            "paidTime": 1_709_258_460_123_i64,
            "updateTime": 1_709_258_730_000_i64,
            "userId": "5f0000000000000000000001",
            "totalPayAmount": 20007,
            "totalShippingFree": 1000,
            "openAddressId": "oa-7f3e9c",
            "receiverName": "张*",
            "receiverPhone": "138****5678",
            "receiverAddress": "文**路***号",
            "receiverProvinceName": "浙江省",
            "receiverCityName": "杭州市",
            "receiverDistrictName": "西湖区",
            "skuList": [
                {"skuId": "65f000000000000000000001", "itemId": "65e000000000000000000001", "skuName": "T 恤 黑 M",
                 "erpcode": "TEE-BLK-M", "skuQuantity": 2, "totalPaidAmount": 19007, "skuAfterSaleStatus": 3}
            ]
        })
    }

    #[test]
    fn an_order_detail_maps_with_millisecond_times_fen_and_the_open_address_id() {
        let o = detail_to_order("shop-x", &detail()).unwrap();
        assert_eq!(o.channel, ChannelTypeCode(ChannelType::Xiaohongshu));
        assert_eq!(o.platform_order_id, "P739000000000000001");
        assert_eq!(o.status, OrderStatus::Paid);
        assert_eq!(o.platform_status, "4");
        assert_eq!(o.created_at.to_rfc3339(), "2024-03-01T02:00:00+00:00");
        assert_eq!(
            o.paid_at.map(|t| t.timestamp_millis()),
            Some(1_709_258_460_123)
        );
        assert_eq!(o.modified_at.timestamp(), 1_709_258_730);
        assert_eq!(o.buyer_open_id.as_deref(), Some("5f0000000000000000000001"));
        assert_eq!((o.total_fen, o.post_fee_fen), (20007, 1000));
        assert_eq!(o.receiver.decrypt_ref, "oa-7f3e9c");
        assert_eq!(o.receiver.masked_name, "张*");
        assert_eq!(o.receiver.city, "杭州市");
        let l = &o.lines[0];
        assert_eq!(l.platform_line_id, "65f000000000000000000001");
        assert_eq!(l.platform_sku_id, "65f000000000000000000001");
        assert_eq!(l.platform_item_id, "65e000000000000000000001");
        assert_eq!(l.outer_sku_code.as_deref(), Some("TEE-BLK-M"));
        assert_eq!((l.quantity, l.unit_price_fen, l.paid_fen), (2, 9503, 19007));
        assert_eq!(l.after_sales, AfterSales::Returning);
    }

    #[test]
    fn bad_details_are_protocol_errors() {
        let mut d = detail();
        d["orderStatus"] = json!(0);
        assert!(
            matches!(detail_to_order("s", &d), Err(ChannelError::Protocol(m)) if m.contains('0'))
        );
        let mut d = detail();
        d["totalPayAmount"] = json!(-5);
        assert!(matches!(
            detail_to_order("s", &d),
            Err(ChannelError::Protocol(_))
        ));
        let mut d = detail();
        d["updateTime"] = json!("yesterday");
        assert!(matches!(
            detail_to_order("s", &d),
            Err(ChannelError::Protocol(_))
        ));
    }

    #[test]
    fn xhs_errors_map_to_throttle_auth_expiry_or_rejection() {
        let parse = |v: Value| parse_answer(reqwest::StatusCode::OK, &v.to_string());
        assert!(
            matches!(parse(json!({"success": true, "error_code": 0, "data": {"a": 1}})), Ok(Answer::Data(d)) if d["a"] == 1)
        );
        assert_eq!(
            parse(
                json!({"success": false, "error_code": -9013, "error_msg": "触发Method维度的限流"})
            )
            .unwrap_err(),
            ChannelError::RateLimited {
                retry_after: std::time::Duration::ZERO
            }
        );
        assert!(matches!(
            parse(json!({"success": false, "error_code": 1003})),
            Err(ChannelError::Auth(_))
        ));
        assert!(matches!(
            parse(
                json!({"success": false, "error_code": 1004, "error_msg": "accessToken expired"})
            ),
            Ok(Answer::TokenExpired(_))
        ));
        assert_eq!(
            parse(json!({"success": false, "error_code": 2001, "error_msg": "订单不存在"}))
                .unwrap_err(),
            ChannelError::Rejected {
                code: "2001".into(),
                message: "订单不存在".into()
            }
        );
        assert!(matches!(
            parse(json!({"error_code": 0})),
            Err(ChannelError::Protocol(_))
        ));
    }

    #[test]
    fn the_last_page_comes_from_max_page_no_or_the_total() {
        assert_eq!(last_page(&json!({"maxPageNo": 3, "total": 1})), 3);
        assert_eq!(last_page(&json!({"total": 201})), 3);
        assert_eq!(last_page(&json!({})), 0);
    }
}
