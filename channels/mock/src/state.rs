//! The platforms' in-memory books: shops and their tokens, orders and their lifecycle, the TMC
//! queue, cipher texts and received stock pushes. Everything here is synchronous and runs under
//! one mutex; callers never hold it across an await.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::types::{
    LineSpec, MockError, OrderEvent, OrderSpec, Platform, Receiver, ShopSpec, StockPush, TruthLine,
    TruthOrder,
};
use crate::wire::{id_value, token_hex};

pub(crate) type ShopKey = (Platform, String);

/// Where an order is in its life; each platform spells it its own way (`raw_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Unpaid,
    Paid,
    PartShipped,
    Shipped,
    Completed,
    Cancelled,
    Refunded,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Unpaid => "unpaid",
            Stage::Paid => "paid",
            Stage::PartShipped => "partly shipped",
            Stage::Shipped => "shipped",
            Stage::Completed => "completed",
            Stage::Cancelled => "cancelled",
            Stage::Refunded => "refunded",
        }
    }

    pub fn taobao(self) -> &'static str {
        match self {
            Stage::Unpaid => "WAIT_BUYER_PAY",
            Stage::Paid => "WAIT_SELLER_SEND_GOODS",
            Stage::PartShipped => "SELLER_CONSIGNED_PART",
            Stage::Shipped => "WAIT_BUYER_CONFIRM_GOODS",
            Stage::Completed => "TRADE_FINISHED",
            Stage::Cancelled => "TRADE_CLOSED_BY_TAOBAO",
            Stage::Refunded => "TRADE_CLOSED",
        }
    }

    pub fn doudian(self) -> i64 {
        match self {
            Stage::Unpaid => 1,
            Stage::Paid => 105,
            Stage::PartShipped => 101,
            Stage::Shipped => 3,
            Stage::Completed => 5,
            Stage::Cancelled | Stage::Refunded => 4,
        }
    }

    pub fn doudian_desc(self) -> &'static str {
        match self {
            Stage::Unpaid => "待支付",
            Stage::Paid => "已支付",
            Stage::PartShipped => "部分发货",
            Stage::Shipped => "已发货",
            Stage::Completed => "已完成",
            Stage::Cancelled | Stage::Refunded => "已取消",
        }
    }

    pub fn xhs(self) -> i64 {
        match self {
            Stage::Unpaid => 1,
            Stage::Paid => 4,
            Stage::PartShipped => 5,
            Stage::Shipped => 6,
            Stage::Completed => 7,
            Stage::Refunded => 8,
            Stage::Cancelled => 9,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub line_id: String,
    pub item_id: String,
    pub sku_id: String,
    pub outer_sku_code: String,
    pub title: String,
    pub qty: i64,
    pub price_fen: i64,
    pub refunded: bool,
    pub shipped: bool,
}

impl Line {
    pub fn amount_fen(&self) -> i64 {
        self.price_fen.saturating_mul(self.qty)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Shipment {
    pub company_code: String,
    pub tracking_no: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub platform: Platform,
    pub shop_id: String,
    pub id: String,
    pub buyer_id: String,
    pub receiver: Receiver,
    /// Bumped on every address change; part of the Xiaohongshu openAddressId.
    pub addr_version: u32,
    pub lines: Vec<Line>,
    pub post_fee_fen: i64,
    pub stage: Stage,
    pub created_ms: i64,
    pub paid_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub modified_ms: i64,
    pub shipments: Vec<Shipment>,
}

impl Order {
    pub fn goods_fen(&self) -> i64 {
        self.lines
            .iter()
            .map(Line::amount_fen)
            .fold(0, i64::saturating_add)
    }

    pub fn total_fen(&self) -> i64 {
        self.goods_fen().saturating_add(self.post_fee_fen)
    }

    pub fn raw_status(&self) -> String {
        match self.platform {
            Platform::Taobao => self.stage.taobao().to_string(),
            Platform::Douyin => self.stage.doudian().to_string(),
            Platform::Xiaohongshu => self.stage.xhs().to_string(),
        }
    }

    pub fn refunded(&self) -> bool {
        self.stage == Stage::Refunded
    }

    /// Taobao oaid: one per (shop, buyer, receiver), so repeat orders to one address share it.
    pub fn oaid(&self) -> String {
        let r = &self.receiver;
        format!(
            "1{}",
            token_hex(&[
                "oaid",
                &self.shop_id,
                &self.buyer_id,
                &r.name,
                &r.phone,
                &r.province,
                &r.city,
                &r.district,
                &r.address,
            ])
        )
    }

    /// Xiaohongshu openAddressId: per order and address version.
    pub fn open_address_id(&self) -> String {
        token_hex(&["openAddressId", &self.id, &self.addr_version.to_string()])
    }

    pub fn truth(&self) -> TruthOrder {
        let ms = |t: i64| DateTime::<Utc>::from_timestamp_millis(t).unwrap_or_default();
        let (after_sale, line_after_sale): (String, fn(&Line) -> String) = match self.platform {
            Platform::Taobao => (String::new(), |l| {
                if l.refunded { "SUCCESS" } else { "NO_REFUND" }.to_string()
            }),
            Platform::Douyin => (String::new(), |l| {
                if l.refunded { "12" } else { "0" }.to_string()
            }),
            Platform::Xiaohongshu => (if self.refunded() { "4" } else { "1" }.to_string(), |l| {
                if l.refunded { "4" } else { "1" }.to_string()
            }),
        };
        TruthOrder {
            platform: self.platform,
            shop_id: self.shop_id.clone(),
            platform_order_id: self.id.clone(),
            status: self.raw_status(),
            after_sale,
            created: ms(self.created_ms),
            paid: self.paid_ms.map(ms),
            modified: ms(self.modified_ms),
            buyer_id: self.buyer_id.clone(),
            receiver: self.receiver.clone(),
            post_fee_fen: self.post_fee_fen,
            total_fen: self.total_fen(),
            shipments: self
                .shipments
                .iter()
                .map(|x| (x.company_code.clone(), x.tracking_no.clone()))
                .collect(),
            lines: self
                .lines
                .iter()
                .map(|l| TruthLine {
                    line_id: l.line_id.clone(),
                    item_id: l.item_id.clone(),
                    sku_id: l.sku_id.clone(),
                    outer_sku_code: l.outer_sku_code.clone(),
                    quantity: l.qty,
                    price_fen: l.price_fen,
                    after_sale: line_after_sale(l),
                    shipped: l.shipped,
                })
                .collect(),
        }
    }
}

pub(crate) struct Shop {
    pub spec: ShopSpec,
    /// The refresh token replaced by the last refresh; presenting it again returns the current
    /// tokens (so a refresh whose answer was lost can be repeated).
    pub prev_refresh: Option<String>,
    pub generation: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct TokenEntry {
    pub shop_id: String,
    pub expired: bool,
}

/// Why a token did not authorise a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Missing,
    Expired,
    Unknown,
}

#[derive(Debug, Clone)]
pub(crate) struct TmcMessage {
    pub id: u64,
    pub app_key: String,
    pub shop_id: String,
    pub topic: String,
    pub pub_ms: i64,
    pub content: String,
    pub delivered_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(crate) struct CatalogSku {
    pub item_id: String,
    pub outer_sku_code: String,
    pub title: String,
    pub price_fen: i64,
}

/// A Doudian message waiting to be POSTed to a shop's webhook.
#[derive(Debug, Clone)]
pub(crate) struct PushJob {
    pub url: String,
    pub app_key: String,
    pub app_secret: String,
    pub body: String,
}

/// What just happened to an order (drives TMC topics and Doudian push tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Created,
    Paid,
    AddressChanged,
    Shipped { partly: bool },
    Completed,
    Cancelled,
    Refunded,
    LineRefunded,
}

impl Change {
    fn taobao_topic(self) -> &'static str {
        match self {
            Change::Created => "taobao_trade_TradeCreate",
            Change::Paid => "taobao_trade_TradeBuyerPay",
            Change::AddressChanged => "taobao_trade_TradeLogisticsAddressChanged",
            Change::Shipped { partly: true } => "taobao_trade_TradePartlySellerShip",
            Change::Shipped { partly: false } => "taobao_trade_TradeSellerShip",
            Change::Completed => "taobao_trade_TradeSuccess",
            Change::Cancelled | Change::Refunded => "taobao_trade_TradeClose",
            Change::LineRefunded => "taobao_refund_RefundSuccess",
        }
    }

    fn doudian_tag(self) -> &'static str {
        match self {
            Change::Created => "100",
            Change::Paid => "101",
            Change::Shipped { .. } => "102",
            Change::Completed => "103",
            Change::AddressChanged => "105",
            Change::Cancelled | Change::Refunded => "106",
            // 退款成功
            Change::LineRefunded => "206",
        }
    }
}

pub(crate) struct State {
    pub seed: u64,
    pub shops: HashMap<ShopKey, Shop>,
    pub apps: HashMap<(Platform, String), String>,
    pub tokens: HashMap<(Platform, String), TokenEntry>,
    /// Per platform (by `Platform::idx`): order id → order.
    pub orders: [HashMap<String, Order>; 3],
    /// Per shop: (modified ms, order id), for window queries in modified order.
    pub by_shop: HashMap<ShopKey, BTreeSet<(i64, String)>>,
    next_id: [u64; 3],
    /// Doudian cipher text → clear text (cipher texts stay decryptable, as on the platform).
    pub ciphers: HashMap<String, (String, String)>,
    pub tmc: BTreeMap<u64, TmcMessage>,
    next_tmc: u64,
    pub stock: Vec<StockPush>,
    pub catalog: HashMap<(Platform, String, String), CatalogSku>,
    next_push: u64,
    next_request: u64,
}

impl State {
    pub fn new(seed: u64) -> Self {
        State {
            seed,
            shops: HashMap::new(),
            apps: HashMap::new(),
            tokens: HashMap::new(),
            orders: Default::default(),
            by_shop: HashMap::new(),
            next_id: [0; 3],
            ciphers: HashMap::new(),
            tmc: BTreeMap::new(),
            next_tmc: 0,
            stock: Vec::new(),
            catalog: HashMap::new(),
            next_push: 0,
            next_request: 0,
        }
    }

    /// A request id / log id for an answer.
    pub fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("{:013x}", 0x1a2b_0000_0000u64 + self.next_request)
    }

    // ---- shops and tokens ------------------------------------------------------------------

    pub fn add_shop(&mut self, spec: ShopSpec) {
        let key = (spec.platform, spec.shop_id.clone());
        if let Some(old) = self.shops.remove(&key) {
            self.tokens
                .retain(|(p, _), e| !(*p == old.spec.platform && e.shop_id == old.spec.shop_id));
        }
        self.apps.insert(
            (spec.platform, spec.app_key.clone()),
            spec.app_secret.clone(),
        );
        self.tokens.insert(
            (spec.platform, spec.access_token.clone()),
            TokenEntry {
                shop_id: spec.shop_id.clone(),
                expired: false,
            },
        );
        self.by_shop.entry(key.clone()).or_default();
        self.shops.insert(
            key,
            Shop {
                spec,
                prev_refresh: None,
                generation: 0,
            },
        );
    }

    pub fn app_secret(&self, platform: Platform, app_key: &str) -> Option<String> {
        self.apps.get(&(platform, app_key.to_string())).cloned()
    }

    /// The shop a token authorises for `app_key`.
    pub fn shop_by_token(
        &self,
        platform: Platform,
        app_key: &str,
        token: Option<&str>,
    ) -> Result<&Shop, TokenProblem> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(TokenProblem::Missing);
        };
        let entry = self
            .tokens
            .get(&(platform, token.to_string()))
            .ok_or(TokenProblem::Unknown)?;
        let shop = self
            .shops
            .get(&(platform, entry.shop_id.clone()))
            .filter(|s| s.spec.app_key == app_key)
            .ok_or(TokenProblem::Unknown)?;
        if entry.expired {
            return Err(TokenProblem::Expired);
        }
        Ok(shop)
    }

    pub fn expire_token(&mut self, platform: Platform, shop_id: &str) -> Result<(), MockError> {
        let shop = self
            .shops
            .get(&(platform, shop_id.to_string()))
            .ok_or_else(|| unknown_shop(platform, shop_id))?;
        let token = shop.spec.access_token.clone();
        if let Some(e) = self.tokens.get_mut(&(platform, token)) {
            e.expired = true;
        }
        Ok(())
    }

    /// Issues new tokens for the shop whose refresh token this is; the old access token
    /// expires. The previous refresh token, presented again, just returns the current pair.
    pub fn refresh_tokens(
        &mut self,
        platform: Platform,
        app_key: &str,
        refresh_token: &str,
    ) -> Option<ShopSpec> {
        let key = self
            .shops
            .iter()
            .find(|(_, s)| {
                s.spec.platform == platform
                    && s.spec.app_key == app_key
                    && (s.spec.refresh_token == refresh_token
                        || s.prev_refresh.as_deref() == Some(refresh_token))
                    && !refresh_token.is_empty()
            })
            .map(|(k, _)| k.clone())?;
        let seed = self.seed.to_string();
        let shop = self.shops.get_mut(&key)?;
        if shop.prev_refresh.as_deref() == Some(refresh_token) {
            return Some(shop.spec.clone());
        }
        shop.generation += 1;
        let generation = shop.generation.to_string();
        let old_access = shop.spec.access_token.clone();
        let access = token_hex(&["at", &seed, platform.as_str(), &key.1, &generation]);
        let refresh = token_hex(&["rt", &seed, platform.as_str(), &key.1, &generation]);
        shop.prev_refresh = Some(std::mem::replace(&mut shop.spec.refresh_token, refresh));
        shop.spec.access_token = access.clone();
        let spec = shop.spec.clone();
        if let Some(e) = self.tokens.get_mut(&(platform, old_access)) {
            e.expired = true;
        }
        self.tokens.insert(
            (platform, access),
            TokenEntry {
                shop_id: key.1,
                expired: false,
            },
        );
        Some(spec)
    }

    // ---- orders ----------------------------------------------------------------------------

    fn next_id(&mut self, platform: Platform) -> u64 {
        let n = &mut self.next_id[platform.idx()];
        *n += 1;
        *n
    }

    fn new_id(&mut self, platform: Platform) -> String {
        let n = self.next_id(platform);
        match platform {
            Platform::Taobao => (4_100_000_000_000_000_000u64 + n).to_string(),
            Platform::Douyin => (6_920_000_000_000_000_000u64 + n).to_string(),
            Platform::Xiaohongshu => format!("P{}", 700_000_000_000_000u64 + n),
        }
    }

    pub fn order(&self, platform: Platform, id: &str) -> Option<&Order> {
        self.orders[platform.idx()].get(id)
    }

    /// The order if it belongs to the shop.
    pub fn shop_order(&self, platform: Platform, shop_id: &str, id: &str) -> Option<&Order> {
        self.order(platform, id).filter(|o| o.shop_id == shop_id)
    }

    pub fn place(
        &mut self,
        spec: &OrderSpec,
        now_ms: i64,
    ) -> Result<(String, Vec<PushJob>), MockError> {
        if !self
            .shops
            .contains_key(&(spec.platform, spec.shop_id.clone()))
        {
            return Err(unknown_shop(spec.platform, &spec.shop_id));
        }
        if spec.lines.is_empty() {
            return Err(MockError::Invalid(
                "an order needs at least one line".into(),
            ));
        }
        if let Some(bad) = spec
            .lines
            .iter()
            .find(|l| l.quantity <= 0 || l.price_fen < 0 || l.sku_id.is_empty())
        {
            return Err(MockError::Invalid(format!(
                "line {} needs a sku id, a positive quantity and a price ≥ 0",
                bad.sku_id
            )));
        }
        if spec.post_fee_fen < 0 {
            return Err(MockError::Invalid("post fee < 0".into()));
        }
        let platform = spec.platform;
        let id = self.new_id(platform);
        let mut lines = Vec::with_capacity(spec.lines.len());
        for l in &spec.lines {
            let line_id = match platform {
                Platform::Xiaohongshu => l.sku_id.clone(),
                _ => self.new_id(platform),
            };
            self.remember_sku(platform, &spec.shop_id, l);
            lines.push(Line {
                line_id,
                item_id: l.item_id.clone(),
                sku_id: l.sku_id.clone(),
                outer_sku_code: l.outer_sku_code.clone(),
                title: if l.title.is_empty() {
                    format!("商品 {}", l.sku_id)
                } else {
                    l.title.clone()
                },
                qty: l.quantity,
                price_fen: l.price_fen,
                refunded: false,
                shipped: false,
            });
        }
        let at = first_modified(platform, now_ms);
        let order = Order {
            platform,
            shop_id: spec.shop_id.clone(),
            id: id.clone(),
            buyer_id: spec.buyer_id.clone(),
            receiver: spec.receiver.clone(),
            addr_version: 0,
            lines,
            post_fee_fen: spec.post_fee_fen,
            stage: if spec.paid {
                Stage::Paid
            } else {
                Stage::Unpaid
            },
            created_ms: at,
            paid_ms: spec.paid.then_some(at),
            finished_ms: None,
            modified_ms: at,
            shipments: Vec::new(),
        };
        self.seal(&order);
        self.by_shop
            .entry((platform, order.shop_id.clone()))
            .or_default()
            .insert((at, id.clone()));
        self.orders[platform.idx()].insert(id.clone(), order);
        let mut jobs = self.emit(platform, &id, Change::Created);
        if spec.paid {
            jobs.extend(self.emit(platform, &id, Change::Paid));
        }
        Ok((id, jobs))
    }

    fn remember_sku(&mut self, platform: Platform, shop_id: &str, l: &LineSpec) {
        self.catalog
            .entry((platform, shop_id.to_string(), l.sku_id.clone()))
            .or_insert_with(|| CatalogSku {
                item_id: l.item_id.clone(),
                outer_sku_code: l.outer_sku_code.clone(),
                title: l.title.clone(),
                price_fen: l.price_fen,
            });
    }

    /// Registers the Doudian cipher texts of the order's current receiver.
    fn seal(&mut self, o: &Order) {
        if o.platform != Platform::Douyin {
            return;
        }
        for (field, clear) in [
            ("name", &o.receiver.name),
            ("tel", &o.receiver.phone),
            ("detail", &o.receiver.address),
        ] {
            let c = doudian_cipher(&o.shop_id, field, clear);
            self.ciphers.insert(c, (o.shop_id.clone(), clear.clone()));
        }
    }

    /// Applies an event to an order; returns the push deliveries it caused.
    pub fn apply(
        &mut self,
        platform: Platform,
        id: &str,
        event: &OrderEvent,
        now_ms: i64,
    ) -> Result<Vec<PushJob>, MockError> {
        let o = self.orders[platform.idx()]
            .get_mut(id)
            .ok_or_else(|| MockError::UnknownOrder {
                platform,
                order_id: id.to_string(),
            })?;
        let illegal = |o: &Order| MockError::IllegalTransition {
            order_id: o.id.clone(),
            from: o.stage.name(),
            event: event.name(),
        };
        let at = next_modified(platform, o.modified_ms, now_ms);
        let change = match (o.stage, event) {
            (Stage::Unpaid, OrderEvent::Pay) => {
                o.stage = Stage::Paid;
                o.paid_ms = Some(at);
                Change::Paid
            }
            (Stage::Unpaid, OrderEvent::Cancel) => {
                o.stage = Stage::Cancelled;
                o.finished_ms = Some(at);
                Change::Cancelled
            }
            (Stage::Paid, OrderEvent::Refund) => {
                o.stage = Stage::Refunded;
                o.finished_ms = Some(at);
                for l in &mut o.lines {
                    l.refunded = true;
                }
                Change::Refunded
            }
            (Stage::Paid, OrderEvent::RefundLine { line_id }) => {
                let Some(l) = o
                    .lines
                    .iter_mut()
                    .find(|l| &l.line_id == line_id && !l.refunded)
                else {
                    return Err(MockError::Invalid(format!(
                        "order {id} has no open line {line_id}"
                    )));
                };
                l.refunded = true;
                if o.lines.iter().all(|l| l.refunded) {
                    o.stage = Stage::Refunded;
                    o.finished_ms = Some(at);
                    Change::Refunded
                } else {
                    Change::LineRefunded
                }
            }
            (Stage::Unpaid | Stage::Paid, OrderEvent::ChangeAddress { receiver }) => {
                o.receiver = receiver.clone();
                o.addr_version += 1;
                Change::AddressChanged
            }
            (
                Stage::Paid | Stage::PartShipped,
                OrderEvent::Ship {
                    company_code,
                    tracking_no,
                    line_ids,
                },
            ) => {
                if let Some(bad) = line_ids
                    .iter()
                    .find(|l| !o.lines.iter().any(|x| &x.line_id == *l))
                {
                    return Err(MockError::Invalid(format!("order {id} has no line {bad}")));
                }
                let mut shipped_any = false;
                for l in &mut o.lines {
                    if !l.shipped
                        && !l.refunded
                        && (line_ids.is_empty() || line_ids.contains(&l.line_id))
                    {
                        l.shipped = true;
                        shipped_any = true;
                    }
                }
                if !shipped_any {
                    return Err(illegal(o));
                }
                o.shipments.push(Shipment {
                    company_code: company_code.clone(),
                    tracking_no: tracking_no.clone(),
                    at_ms: at,
                });
                let partly = o.lines.iter().any(|l| !l.shipped && !l.refunded);
                o.stage = if partly {
                    Stage::PartShipped
                } else {
                    Stage::Shipped
                };
                Change::Shipped { partly }
            }
            (Stage::Shipped, OrderEvent::Complete) => {
                o.stage = Stage::Completed;
                o.finished_ms = Some(at);
                Change::Completed
            }
            _ => return Err(illegal(o)),
        };
        let old = o.modified_ms;
        o.modified_ms = at;
        let shop_key = (platform, o.shop_id.clone());
        let sealed = (change == Change::AddressChanged).then(|| o.clone());
        if let Some(ix) = self.by_shop.get_mut(&shop_key) {
            ix.remove(&(old, id.to_string()));
            ix.insert((at, id.to_string()));
        }
        if let Some(o) = sealed {
            self.seal(&o);
        }
        Ok(self.emit(platform, id, change))
    }

    /// Publishes a change: a TMC message for Taobao, a push for Doudian shops with a webhook.
    fn emit(&mut self, platform: Platform, id: &str, change: Change) -> Vec<PushJob> {
        let Some(o) = self.orders[platform.idx()].get(id) else {
            return Vec::new();
        };
        let Some(shop) = self.shops.get(&(platform, o.shop_id.clone())) else {
            return Vec::new();
        };
        match platform {
            Platform::Taobao => {
                self.next_tmc += 1;
                let msg = TmcMessage {
                    id: 9_000_000_000 + self.next_tmc,
                    app_key: shop.spec.app_key.clone(),
                    shop_id: o.shop_id.clone(),
                    topic: change.taobao_topic().to_string(),
                    pub_ms: o.modified_ms,
                    content: json!({"tid": id_value(&o.id), "status": o.stage.taobao()})
                        .to_string(),
                    delivered_at: None,
                };
                self.tmc.insert(msg.id, msg);
                Vec::new()
            }
            Platform::Douyin => {
                let Some(url) = shop.spec.webhook_url.clone().filter(|u| !u.is_empty()) else {
                    return Vec::new();
                };
                let data = json!({
                    "p_id": id_value(&o.id),
                    "s_ids": o.lines.iter().map(|l| id_value(&l.line_id)).collect::<Vec<_>>(),
                    "shop_id": id_value(&o.shop_id),
                    "order_status": o.stage.doudian(),
                    "update_time": o.modified_ms / 1000,
                });
                let job_app = (shop.spec.app_key.clone(), shop.spec.app_secret.clone());
                self.next_push += 1;
                let msg_id = format!(
                    "{}:{}",
                    7_000_000_000_000u64 + self.next_push,
                    change.doudian_tag()
                );
                let body = json!([{ "tag": change.doudian_tag(), "msg_id": msg_id, "data": data.to_string() }]);
                vec![PushJob {
                    url,
                    app_key: job_app.0,
                    app_secret: job_app.1,
                    body: body.to_string(),
                }]
            }
            Platform::Xiaohongshu => Vec::new(),
        }
    }

    /// Orders of a shop with `start ≤ modified < end` (ms), newest first (ties: larger id first).
    pub fn window_desc(
        &self,
        platform: Platform,
        shop_id: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<&Order> {
        let Some(ix) = self.by_shop.get(&(platform, shop_id.to_string())) else {
            return Vec::new();
        };
        if end_ms <= start_ms {
            return Vec::new();
        }
        ix.range((start_ms, String::new())..(end_ms, String::new()))
            .rev()
            .filter_map(|(_, id)| self.order(platform, id))
            .collect()
    }

    /// One page of `window_desc` plus the window's total, without touching the other orders.
    pub fn window_page(
        &self,
        platform: Platform,
        shop_id: &str,
        (start_ms, end_ms): (i64, i64),
        skip: usize,
        take: usize,
    ) -> (usize, Vec<&Order>) {
        let Some(ix) = self.by_shop.get(&(platform, shop_id.to_string())) else {
            return (0, Vec::new());
        };
        if end_ms <= start_ms {
            return (0, Vec::new());
        }
        let range = || ix.range((start_ms, String::new())..(end_ms, String::new()));
        let page = range()
            .rev()
            .skip(skip)
            .take(take)
            .filter_map(|(_, id)| self.order(platform, id))
            .collect();
        (range().count(), page)
    }

    pub fn shop_orders(&self, platform: Platform, shop_id: &str) -> Vec<&Order> {
        self.by_shop
            .get(&(platform, shop_id.to_string()))
            .map(|ix| {
                ix.iter()
                    .filter_map(|(_, id)| self.order(platform, id))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn truth(&self) -> Vec<TruthOrder> {
        let mut all: Vec<&Order> = self.orders.iter().flat_map(HashMap::values).collect();
        all.sort_by(|a, b| {
            (a.platform, &a.shop_id, a.created_ms, &a.id).cmp(&(
                b.platform,
                &b.shop_id,
                b.created_ms,
                &b.id,
            ))
        });
        all.into_iter().map(Order::truth).collect()
    }

    // ---- TMC -------------------------------------------------------------------------------

    /// Up to `quantity` messages of the app (of one shop when known) that were never delivered
    /// or were delivered more than `redeliver` ago without a confirm.
    pub fn tmc_consume(
        &mut self,
        app_key: &str,
        shop_id: Option<&str>,
        quantity: usize,
        now: Instant,
        redeliver: Duration,
    ) -> Vec<TmcMessage> {
        let mut out = Vec::new();
        for m in self.tmc.values_mut() {
            if out.len() >= quantity {
                break;
            }
            if m.app_key != app_key || shop_id.is_some_and(|s| s != m.shop_id) {
                continue;
            }
            let due = m
                .delivered_at
                .is_none_or(|t| now.saturating_duration_since(t) >= redeliver);
            if due {
                m.delivered_at = Some(now);
                out.push(m.clone());
            }
        }
        out
    }

    pub fn tmc_confirm(&mut self, app_key: &str, ids: &[u64]) {
        for id in ids {
            if self.tmc.get(id).is_some_and(|m| m.app_key == app_key) {
                self.tmc.remove(id);
            }
        }
    }

    // ---- stock -----------------------------------------------------------------------------

    pub fn record_stock(
        &mut self,
        platform: Platform,
        shop_id: &str,
        item_id: &str,
        sku_id: &str,
        quantity: i64,
        now_ms: i64,
    ) {
        self.stock.push(StockPush {
            platform,
            shop_id: shop_id.to_string(),
            item_id: item_id.to_string(),
            sku_id: sku_id.to_string(),
            quantity,
            at: DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or_default(),
        });
    }

    /// The last quantity pushed for a SKU (for incremental updates).
    pub fn last_stock(
        &self,
        platform: Platform,
        shop_id: &str,
        item_id: &str,
        sku_id: &str,
    ) -> i64 {
        self.stock
            .iter()
            .rev()
            .find(|s| {
                s.platform == platform
                    && s.shop_id == shop_id
                    && s.item_id == item_id
                    && s.sku_id == sku_id
            })
            .map(|s| s.quantity)
            .unwrap_or(0)
    }
}

pub(crate) fn unknown_shop(platform: Platform, shop_id: &str) -> MockError {
    MockError::UnknownShop {
        platform,
        shop_id: shop_id.to_string(),
    }
}

/// Taobao and Doudian show seconds, Xiaohongshu milliseconds.
fn first_modified(platform: Platform, now_ms: i64) -> i64 {
    match platform {
        Platform::Xiaohongshu => now_ms,
        _ => now_ms - now_ms.rem_euclid(1000),
    }
}

/// Strictly later than `prev` at the platform's resolution, and not before now.
fn next_modified(platform: Platform, prev: i64, now_ms: i64) -> i64 {
    match platform {
        Platform::Xiaohongshu => now_ms.max(prev + 1),
        _ => first_modified(platform, now_ms).max(prev + 1000),
    }
}

/// A Doudian-looking cipher text (`#<index>#<body>#<ver>##`), stable for a shop and value.
pub(crate) fn doudian_cipher(shop_id: &str, field: &str, clear: &str) -> String {
    let index = token_hex(&["idx", field, clear]);
    let body = token_hex(&["cipher", shop_id, field, clear]);
    format!("#{}#{}{}==#1##", &index[..8], body, &index[8..])
}
