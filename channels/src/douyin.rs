//! Douyin Doudian (抖店): signed query string, `param_json` body, 0-based paging, batch decryption
//! of the receiver's cipher texts, and access-token refresh on `isv.access-token-expired`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::Utc;
use serde_json::{Value, json};
use uphub_domain::catalog::ChannelType;
use uphub_domain::order::{
    ChannelOrder, ChannelOrderLine, ChannelTypeCode, Receiver, SealedReceiver, from_doudian,
    from_doudian_after_sale,
};

use crate::http::{
    Http, HttpConfig, array, dedupe_newest, fen, field, from_unix, int, missing, non_empty,
    parse_json, quantity, req_int, req_text, text, whole_seconds,
};
use crate::sign::{doudian_param_json, doudian_sign};
use crate::{ChannelError, Credentials, Marketplace, Window};

const SUCCESS: i64 = 10000;
const PAGE_SIZE: i64 = 100;
/// A runaway `total` must not page forever.
const MAX_PAGES: i64 = 10_000;
/// `order.batchDecrypt` takes at most 50 cipher texts; each order has three.
const DECRYPT_ORDERS_PER_CALL: usize = 16;
const TOKEN_EXPIRED: &str = "isv.access-token-expired";

/// What one call came back with, before the token refresh decides what to do.
#[derive(Debug)]
pub(crate) enum Answer {
    Data(Value),
    TokenExpired(String),
}

/// Maps a Doudian answer (`{code, msg, sub_code, sub_msg, data}`).
pub(crate) fn parse_answer(
    status: reqwest::StatusCode,
    body: &str,
) -> Result<Answer, ChannelError> {
    let v = parse_json(status, body)?;
    let code = req_int(&v, "code", "Doudian answer")?;
    if code == SUCCESS {
        let data = match v {
            Value::Object(mut m) => m.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        };
        return Ok(Answer::Data(data));
    }
    let sub_code = non_empty(&v, "sub_code").unwrap_or_default();
    let detail = [non_empty(&v, "msg"), non_empty(&v, "sub_msg")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    let auth_param = sub_code.contains("signature") || sub_code.contains("access-token");
    Err(match code {
        40003 if sub_code == TOKEN_EXPIRED => return Ok(Answer::TokenExpired(detail)),
        60000 => ChannelError::RateLimited {
            retry_after: std::time::Duration::ZERO,
        },
        20000 | 20001 | 50001 => {
            ChannelError::Unavailable(format!("Doudian {code} {sub_code}: {detail}"))
        }
        30001 => ChannelError::Auth(format!("Doudian {code} {sub_code}: {detail}")),
        40001 | 40003 if auth_param => {
            ChannelError::Auth(format!("Doudian {code} {sub_code}: {detail}"))
        }
        _ => ChannelError::Rejected {
            code: if sub_code.is_empty() {
                code.to_string()
            } else {
                format!("{code}:{sub_code}")
            },
            message: detail,
        },
    })
}

/// The three cipher texts of a receiver, as kept in `SealedReceiver::decrypt_ref`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Ciphers {
    pub name: String,
    pub tel: String,
    pub detail: String,
}

fn line_from_sku_order(s: &Value, parent: &str) -> Result<ChannelOrderLine, ChannelError> {
    let what = format!("order {parent} sku order");
    let id = req_text(s, "order_id", &what)?;
    let what = format!("order {parent} sku order {id}");
    let quantity = quantity(s, "item_num", &what)?;
    let after_sale = field(s, "after_sale_info")
        .and_then(|a| int(a, "after_sale_status"))
        .unwrap_or(0);
    Ok(ChannelOrderLine {
        platform_item_id: req_text(s, "product_id", &what)?,
        platform_sku_id: non_empty(s, "sku_id").unwrap_or_default(),
        outer_sku_code: non_empty(s, "out_sku_id").or_else(|| non_empty(s, "code")),
        title: text(s, "product_name").unwrap_or_default(),
        unit_price_fen: fen(s, "origin_amount", &what)? / i64::from(quantity),
        paid_fen: fen(s, "pay_amount", &what)?,
        quantity,
        after_sales: from_doudian_after_sale(after_sale),
        platform_line_id: id,
    })
}

fn name_of(addr: Option<&Value>, part: &str) -> Option<String> {
    addr.and_then(|a| field(a, part))
        .and_then(|p| non_empty(p, "name"))
}

/// One Doudian shop order as our order.
pub(crate) fn shop_order_to_order(shop_id: &str, o: &Value) -> Result<ChannelOrder, ChannelError> {
    let id = req_text(o, "order_id", "shop order")?;
    let what = format!("order {id}");
    let raw_status = req_int(o, "order_status", &what)?;
    let status =
        from_doudian(raw_status).map_err(|e| ChannelError::Protocol(format!("{what}: {e}")))?;
    let pay_time = int(o, "pay_time").unwrap_or(0);
    let addr = field(o, "post_addr");
    let masked = field(o, "mask_post_addr");
    let part = |p: &str| {
        name_of(addr, p)
            .or_else(|| name_of(masked, p))
            .unwrap_or_default()
    };
    let ciphers = Ciphers {
        name: text(o, "encrypt_post_receiver").unwrap_or_default(),
        tel: text(o, "encrypt_post_tel").unwrap_or_default(),
        detail: addr
            .and_then(|a| text(a, "encrypt_detail"))
            .unwrap_or_default(),
    };
    let decrypt_ref = serde_json::to_string(&ciphers)
        .map_err(|e| ChannelError::Protocol(format!("{what}: {e}")))?;
    let lines = array(o, "sku_order_list")
        .iter()
        .map(|s| line_from_sku_order(s, &id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChannelOrder {
        channel: ChannelTypeCode(ChannelType::Douyin),
        shop_id: shop_id.to_owned(),
        status,
        platform_status: raw_status.to_string(),
        created_at: from_unix(req_int(o, "create_time", &what)?, &what)?,
        modified_at: from_unix(req_int(o, "update_time", &what)?, &what)?,
        paid_at: if pay_time > 0 {
            Some(from_unix(pay_time, &what)?)
        } else {
            None
        },
        buyer_open_id: non_empty(o, "doudian_open_id"),
        receiver: SealedReceiver {
            masked_name: text(o, "mask_post_receiver").unwrap_or_default(),
            masked_phone: text(o, "mask_post_tel").unwrap_or_default(),
            province: part("province"),
            city: part("city"),
            district: part("town"),
            masked_address: masked.and_then(|m| text(m, "detail")).unwrap_or_default(),
            decrypt_ref,
        },
        total_fen: fen(o, "pay_amount", &what)?,
        post_fee_fen: if field(o, "post_amount").is_some() {
            fen(o, "post_amount", &what)?
        } else {
            0
        },
        lines,
        platform_order_id: id,
    })
}

/// A Doudian shop.
pub struct DouyinShop {
    http: Http,
    creds: Mutex<Credentials>,
    /// One refresh at a time: a second caller that saw the same expired token waits and reuses it.
    refreshing: tokio::sync::Mutex<()>,
}

impl DouyinShop {
    pub fn new(creds: Credentials, config: HttpConfig) -> Result<Self, ChannelError> {
        Ok(Self {
            http: Http::new(config)?,
            creds: Mutex::new(creds),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self) -> Credentials {
        self.creds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One business call; an expired token is refreshed once and the call made again.
    async fn call(&self, method: &str, params: &Value) -> Result<Value, ChannelError> {
        let param_json = doudian_param_json(params);
        let token = self.current().access_token;
        match self
            .call_retrying(method, &param_json, Some(&token))
            .await?
        {
            Answer::Data(d) => Ok(d),
            Answer::TokenExpired(_) => {
                self.refresh(&token).await?;
                let token = self.current().access_token;
                match self
                    .call_retrying(method, &param_json, Some(&token))
                    .await?
                {
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
        param_json: &str,
        token: Option<&str>,
    ) -> Result<Answer, ChannelError> {
        self.http
            .retrying(method, || self.call_once(method, param_json, token))
            .await
    }

    async fn call_once(
        &self,
        method: &str,
        param_json: &str,
        token: Option<&str>,
    ) -> Result<Answer, ChannelError> {
        let c = self.current();
        let timestamp = Utc::now().timestamp().to_string();
        let sign = doudian_sign(&c.app_key, &c.app_secret, method, param_json, &timestamp);
        let mut query: Vec<(&str, &str)> = vec![("app_key", &c.app_key), ("method", method)];
        if let Some(t) = token {
            query.push(("access_token", t));
        }
        query.extend([
            ("timestamp", timestamp.as_str()),
            ("v", "2"),
            ("sign_method", "hmac-sha256"),
            ("sign", sign.as_str()),
        ]);
        let url = format!(
            "{}/{}",
            c.base_url.trim_end_matches('/'),
            method.replace('.', "/")
        );
        let request = self
            .http
            .client
            .post(url)
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-open-no-old-err-code", "1")
            .body(param_json.to_owned());
        let (status, body) = self.http.send(request).await?;
        parse_answer(status, &body)
    }

    /// Swaps in new tokens, unless another call already did since `stale` was read.
    async fn refresh(&self, stale: &str) -> Result<(), ChannelError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let c = self.current();
        if c.access_token != stale {
            return Ok(());
        }
        let refresh_token = c.refresh_token.filter(|t| !t.is_empty()).ok_or_else(|| {
            ChannelError::Auth("access token expired and there is no refresh token".into())
        })?;
        let params = json!({"grant_type": "refresh_token", "refresh_token": refresh_token});
        let answer = self
            .call_retrying("token.refresh", &doudian_param_json(&params), None)
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
        let access = req_text(&data, "access_token", "token.refresh")?;
        let refresh = non_empty(&data, "refresh_token");
        let mut held = self.creds.lock().unwrap_or_else(PoisonError::into_inner);
        held.access_token = access;
        if refresh.is_some() {
            held.refresh_token = refresh;
        }
        tracing::info!(shop = %held.shop_id, "Doudian access token refreshed");
        Ok(())
    }
}

#[async_trait::async_trait]
impl Marketplace for DouyinShop {
    fn channel(&self) -> ChannelType {
        ChannelType::Douyin
    }

    async fn orders_modified(&self, window: Window) -> Result<Vec<ChannelOrder>, ChannelError> {
        if window.start >= window.end {
            return Ok(Vec::new());
        }
        let (start, end) = whole_seconds(window);
        let shop_id = self.current().shop_id;
        let mut orders = Vec::new();
        let mut page = 0;
        loop {
            let data = self
                .call(
                    "order.searchList",
                    &json!({
                        "update_time_start": start,
                        "update_time_end": end,
                        "page": page,
                        "size": PAGE_SIZE,
                        "order_by": "update_time",
                        "order_asc": false,
                    }),
                )
                .await?;
            let total = req_int(&data, "total", "order.searchList")?;
            let list = array(&data, "shop_order_list");
            for o in list {
                orders.push(shop_order_to_order(&shop_id, o)?);
            }
            page += 1;
            if page * PAGE_SIZE >= total || list.is_empty() {
                break;
            }
            if page >= MAX_PAGES {
                return Err(ChannelError::Protocol(format!(
                    "order.searchList: total {total} needs more than {MAX_PAGES} pages"
                )));
            }
        }
        Ok(dedupe_newest(orders))
    }

    async fn order(&self, platform_order_id: &str) -> Result<ChannelOrder, ChannelError> {
        let data = self
            .call(
                "order.orderDetail",
                &json!({"shop_order_id": platform_order_id}),
            )
            .await?;
        let detail = field(&data, "shop_order_detail")
            .ok_or_else(|| missing("order.orderDetail", "shop_order_detail"))?;
        shop_order_to_order(&self.current().shop_id, detail)
    }

    async fn decrypt_receivers(
        &self,
        sealed: &[(String, SealedReceiver)],
    ) -> Result<Vec<Option<Receiver>>, ChannelError> {
        let mut out = Vec::with_capacity(sealed.len());
        for batch in sealed.chunks(DECRYPT_ORDERS_PER_CALL) {
            let ciphers: Vec<Option<Ciphers>> = batch
                .iter()
                .map(|(id, s)| {
                    let c = serde_json::from_str::<Ciphers>(&s.decrypt_ref).ok();
                    if c.is_none() {
                        tracing::warn!(order = %id, "Doudian decrypt_ref is not our cipher JSON");
                    }
                    c
                })
                .collect();
            let infos: Vec<Value> = batch
                .iter()
                .zip(&ciphers)
                .filter_map(|((id, _), c)| c.as_ref().map(|c| (id, c)))
                .flat_map(|(id, c)| {
                    [&c.name, &c.tel, &c.detail]
                        .into_iter()
                        .filter(|t| !t.is_empty())
                        .map(move |t| json!({"auth_id": id, "cipher_text": t}))
                })
                .collect();
            let mut plain: HashMap<(String, String), String> = HashMap::new();
            if !infos.is_empty() {
                let data = self
                    .call("order.batchDecrypt", &json!({"cipher_infos": infos}))
                    .await?;
                for d in array(&data, "decrypt_infos") {
                    if int(d, "err_no").unwrap_or(0) != 0 {
                        continue;
                    }
                    if let (Some(id), Some(cipher), Some(text)) = (
                        text(d, "auth_id"),
                        text(d, "cipher_text"),
                        text(d, "decrypt_text"),
                    ) {
                        plain.insert((id, cipher), text);
                    }
                }
            }
            for ((id, s), c) in batch.iter().zip(ciphers) {
                let get = |cipher: &str| plain.get(&(id.clone(), cipher.to_owned())).cloned();
                out.push(c.and_then(|c| {
                    Some(Receiver {
                        name: get(&c.name)?,
                        phone: get(&c.tel)?,
                        province: s.province.clone(),
                        city: s.city.clone(),
                        district: s.district.clone(),
                        address: get(&c.detail)?,
                    })
                }));
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
        // order.logisticsAdd ships the whole shop order; shipping some lines needs the multi-pack
        // API, which the wire contract does not have. Refuse rather than ship everything.
        if !line_ids.is_empty() {
            return Err(ChannelError::Rejected {
                code: "partial-shipment-unsupported".into(),
                message: format!(
                    "Doudian order {platform_order_id}: shipping single lines is not supported"
                ),
            });
        }
        self.call(
            "order.logisticsAdd",
            &json!({
                "order_id": platform_order_id,
                "company_code": carrier_code,
                "logistics_code": tracking_no,
            }),
        )
        .await
        .map(|_| ())
    }

    async fn push_stock(
        &self,
        platform_item_id: &str,
        platform_sku_id: &str,
        quantity: i64,
    ) -> Result<(), ChannelError> {
        self.call(
            "sku.syncStock",
            &json!({
                "product_id": platform_item_id,
                "sku_id": platform_sku_id,
                "stock_num": quantity,
                "incremental": false,
            }),
        )
        .await
        .map(|_| ())
    }

    fn credentials(&self) -> Credentials {
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uphub_domain::order::{AfterSales, OrderStatus};

    pub(crate) fn shop_order() -> Value {
        json!({
            "order_id": "6920000000000000001",
            "order_status": 105,
            "create_time": 1_709_258_400,
            "update_time": 1_709_258_730,
            "pay_time": 1_709_258_460,
            "pay_amount": 20007,
            "post_amount": 1000,
            "doudian_open_id": "1@#AbCd",
            "encrypt_post_receiver": "#name#cipher",
            "encrypt_post_tel": "$tel$cipher",
            "mask_post_receiver": "张*",
            "mask_post_tel": "138****5678",
            "post_addr": {
                "province": {"name": "浙江省"}, "city": {"name": "杭州市"}, "town": {"name": "西湖区"},
                "street": {"name": "文新街道"}, "encrypt_detail": "#detail#cipher"
            },
            "mask_post_addr": {
                "province": {"name": "浙江省"}, "city": {"name": "杭州市"}, "town": {"name": "西湖区"},
                "street": {"name": "文新街道"}, "detail": "文**路***号"
            },
            "sku_order_list": [
                {"order_id": "6920000000000000002", "parent_order_id": "6920000000000000001",
                 "product_id": "3600000001", "sku_id": "1700000001", "out_sku_id": "", "code": "TEE-BLK-M",
                 "product_name": "T 恤", "item_num": 2, "origin_amount": 19008, "pay_amount": 19007,
                 "order_status": 105, "after_sale_info": {"after_sale_status": 6}}
            ]
        })
    }

    #[test]
    fn a_shop_order_maps_with_fen_utc_times_and_the_three_ciphers() {
        let o = shop_order_to_order("shop-9", &shop_order()).unwrap();
        assert_eq!(o.channel, ChannelTypeCode(ChannelType::Douyin));
        assert_eq!(o.platform_order_id, "6920000000000000001");
        assert_eq!(o.status, OrderStatus::Paid);
        assert_eq!(o.platform_status, "105");
        assert_eq!(o.created_at.to_rfc3339(), "2024-03-01T02:00:00+00:00");
        assert_eq!(o.modified_at.timestamp(), 1_709_258_730);
        assert_eq!(o.paid_at.map(|t| t.timestamp()), Some(1_709_258_460));
        assert_eq!(o.buyer_open_id.as_deref(), Some("1@#AbCd"));
        assert_eq!((o.total_fen, o.post_fee_fen), (20007, 1000));
        assert_eq!(o.receiver.masked_name, "张*");
        assert_eq!(o.receiver.masked_phone, "138****5678");
        assert_eq!(
            (
                o.receiver.province.as_str(),
                o.receiver.city.as_str(),
                o.receiver.district.as_str()
            ),
            ("浙江省", "杭州市", "西湖区")
        );
        assert_eq!(o.receiver.masked_address, "文**路***号");
        assert_eq!(
            o.receiver.decrypt_ref,
            r##"{"name":"#name#cipher","tel":"$tel$cipher","detail":"#detail#cipher"}"##
        );
        let l = &o.lines[0];
        assert_eq!(l.platform_line_id, "6920000000000000002");
        assert_eq!(l.platform_item_id, "3600000001");
        assert_eq!(l.platform_sku_id, "1700000001");
        assert_eq!(l.outer_sku_code.as_deref(), Some("TEE-BLK-M"));
        assert_eq!((l.quantity, l.unit_price_fen, l.paid_fen), (2, 9504, 19007));
        assert_eq!(l.after_sales, AfterSales::RefundRequested);
    }

    #[test]
    fn an_unpaid_order_has_no_pay_time_and_unknown_statuses_are_protocol_errors() {
        let mut v = shop_order();
        v["order_status"] = json!(1);
        v["pay_time"] = json!(0);
        let o = shop_order_to_order("s", &v).unwrap();
        assert_eq!((o.status, o.paid_at), (OrderStatus::PendingPayment, None));
        v["order_status"] = json!(999);
        assert!(
            matches!(shop_order_to_order("s", &v), Err(ChannelError::Protocol(m)) if m.contains("999"))
        );
        let mut v = shop_order();
        v["sku_order_list"][0]["item_num"] = json!(0);
        assert!(matches!(
            shop_order_to_order("s", &v),
            Err(ChannelError::Protocol(_))
        ));
        let mut v = shop_order();
        v["pay_amount"] = json!("12.5");
        assert!(matches!(
            shop_order_to_order("s", &v),
            Err(ChannelError::Protocol(_))
        ));
    }

    #[test]
    fn doudian_errors_map_to_throttle_outage_auth_expiry_or_rejection() {
        let parse = |v: Value| parse_answer(reqwest::StatusCode::OK, &v.to_string());
        assert!(matches!(
            parse(json!({"code": 10000, "msg": "success", "data": {"total": 0}})),
            Ok(Answer::Data(d)) if d["total"] == 0
        ));
        assert_eq!(
            parse(json!({"code": 60000, "msg": "limited"})).unwrap_err(),
            ChannelError::RateLimited {
                retry_after: std::time::Duration::ZERO
            }
        );
        for code in [20000, 20001, 50001] {
            assert!(matches!(
                parse(json!({"code": code})),
                Err(ChannelError::Unavailable(_))
            ));
        }
        assert!(matches!(
            parse(json!({"code": 40003, "sub_code": "isv.signature-invalid"})),
            Err(ChannelError::Auth(_))
        ));
        assert!(matches!(
            parse(json!({"code": 30001})),
            Err(ChannelError::Auth(_))
        ));
        assert!(matches!(
            parse(json!({"code": 40003, "sub_code": "isv.access-token-expired"})),
            Ok(Answer::TokenExpired(_))
        ));
        assert_eq!(
            parse(json!({"code": 50002, "msg": "业务处理失败", "sub_code": "isv.business-failed:1", "sub_msg": "no"}))
                .unwrap_err(),
            ChannelError::Rejected { code: "50002:isv.business-failed:1".into(), message: "业务处理失败: no".into() }
        );
        assert!(matches!(
            parse(json!({"msg": "x"})),
            Err(ChannelError::Protocol(_))
        ));
    }
}
