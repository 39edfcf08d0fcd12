//! The mock's public vocabulary: what a test (or the admin HTTP API) hands in and reads back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One of the three mocked marketplaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    #[serde(alias = "TAOBAO", alias = "top")]
    Taobao,
    #[serde(alias = "DOUYIN", alias = "doudian")]
    Douyin,
    #[serde(alias = "XIAOHONGSHU", alias = "xhs")]
    Xiaohongshu,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Taobao, Platform::Douyin, Platform::Xiaohongshu];

    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Taobao => "taobao",
            Platform::Douyin => "douyin",
            Platform::Xiaohongshu => "xiaohongshu",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        match s.to_ascii_lowercase().as_str() {
            "taobao" | "top" => Some(Platform::Taobao),
            "douyin" | "doudian" => Some(Platform::Douyin),
            "xiaohongshu" | "xhs" => Some(Platform::Xiaohongshu),
            _ => None,
        }
    }

    pub(crate) const fn idx(self) -> usize {
        match self {
            Platform::Taobao => 0,
            Platform::Douyin => 1,
            Platform::Xiaohongshu => 2,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per platform (JSON keys `taobao`, `douyin`, `xiaohongshu`; `xhs` accepted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerPlatform<T> {
    pub taobao: T,
    #[serde(alias = "doudian")]
    pub douyin: T,
    #[serde(alias = "xhs")]
    pub xiaohongshu: T,
}

impl<T> PerPlatform<T> {
    pub fn get(&self, p: Platform) -> &T {
        match p {
            Platform::Taobao => &self.taobao,
            Platform::Douyin => &self.douyin,
            Platform::Xiaohongshu => &self.xiaohongshu,
        }
    }
}

/// Process-wide knobs of the mock.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Seeds the fault RNGs and the tokens the mock issues.
    pub seed: u64,
    /// TOP sends a one-element double-wrapped list as an object (`"trade":{…}`), which WIRE.md
    /// tells adapters to expect; off → always arrays.
    pub top_single_as_object: bool,
    /// Unconfirmed TMC messages come back after this long (30 s, WIRE.md).
    pub tmc_redeliver_after: Duration,
    /// First Doudian push retry delay; doubles per attempt, capped at 30 s.
    pub push_retry_base: Duration,
    /// Attempts per push message before it is given up.
    pub push_max_attempts: u32,
    /// Allowed distance of a request timestamp from the mock's clock (TOP: 10 min).
    pub timestamp_tolerance: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            seed: 0,
            top_single_as_object: true,
            tmc_redeliver_after: Duration::from_secs(30),
            push_retry_base: Duration::from_secs(1),
            push_max_attempts: 12,
            timestamp_tolerance: Duration::from_secs(600),
        }
    }
}

/// A shop authorised on its platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopSpec {
    pub platform: Platform,
    pub shop_id: String,
    pub app_key: String,
    pub app_secret: String,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: String,
    /// Doudian only: where order messages are pushed.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// Fault injection of one platform's API (never the `/_mock` admin endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of calls answered with HTTP 502/503 and a plain body.
    pub error_5xx_rate: f64,
    /// Share of calls answered with the platform's throttling error.
    pub throttle_rate: f64,
    /// After a throttle answer the app is refused this long (0 = just that one call).
    pub ban_seconds: u32,
    /// Share of calls that sleep `timeout_ms` before being answered.
    pub timeout_rate: f64,
    pub timeout_ms: u64,
}

/// Counters of what the fault injector did, per platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultStats {
    /// Platform API calls seen.
    pub calls: u64,
    pub error_5xx: u64,
    pub throttled: u64,
    /// Calls refused because the app was serving a ban.
    pub refused_banned: u64,
    pub timeouts: u64,
}

/// A receiver in the clear (the platforms hand it out masked; the decrypt calls reveal it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Receiver {
    pub name: String,
    pub phone: String,
    pub province: String,
    pub city: String,
    pub district: String,
    pub address: String,
}

/// One line of an order to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineSpec {
    pub item_id: String,
    pub sku_id: String,
    #[serde(default)]
    pub outer_sku_code: String,
    #[serde(default)]
    pub title: String,
    #[serde(default = "one")]
    pub quantity: i64,
    pub price_fen: i64,
}

fn one() -> i64 {
    1
}

/// An order a buyer places on a shop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSpec {
    pub platform: Platform,
    pub shop_id: String,
    /// The buyer's id on that platform (buyer_open_uid, doudian_open_id, userId).
    pub buyer_id: String,
    pub receiver: Receiver,
    pub lines: Vec<LineSpec>,
    #[serde(default)]
    pub post_fee_fen: i64,
    /// Placed already paid (created and paid in the same instant).
    #[serde(default)]
    pub paid: bool,
}

/// A change to an existing order, as the buyer, the seller or the platform would make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderEvent {
    Pay,
    /// Closed before payment.
    Cancel,
    /// Refunded after payment, before shipping: the order closes, every line refunded.
    Refund,
    /// One line refunded after payment, before shipping; the order goes on with the rest (and
    /// closes when no line is left).
    RefundLine {
        line_id: String,
    },
    ChangeAddress {
        receiver: Receiver,
    },
    /// Ships the given lines (all when empty).
    Ship {
        #[serde(default)]
        company_code: String,
        #[serde(default)]
        tracking_no: String,
        #[serde(default)]
        line_ids: Vec<String>,
    },
    /// The buyer confirms receipt.
    Complete,
}

impl OrderEvent {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            OrderEvent::Pay => "pay",
            OrderEvent::Cancel => "cancel",
            OrderEvent::Refund => "refund",
            OrderEvent::RefundLine { .. } => "refund_line",
            OrderEvent::ChangeAddress { .. } => "change_address",
            OrderEvent::Ship { .. } => "ship",
            OrderEvent::Complete => "complete",
        }
    }
}

/// An order as the platform holds it now: what a correct sync must end up with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthOrder {
    pub platform: Platform,
    pub shop_id: String,
    pub platform_order_id: String,
    /// The platform's raw status ("TRADE_CLOSED", "105", "8").
    pub status: String,
    /// Order-level after-sales as the platform reports it (Taobao: per line only, "").
    pub after_sale: String,
    pub created: DateTime<Utc>,
    pub paid: Option<DateTime<Utc>>,
    /// At the platform's resolution (seconds for Taobao and Doudian, ms for Xiaohongshu).
    pub modified: DateTime<Utc>,
    pub buyer_id: String,
    pub receiver: Receiver,
    pub post_fee_fen: i64,
    pub total_fen: i64,
    /// Parcels reported by the seller: (carrier code as sent, tracking number).
    pub shipments: Vec<(String, String)>,
    pub lines: Vec<TruthLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthLine {
    /// Taobao oid, Doudian sku order id, Xiaohongshu skuId.
    pub line_id: String,
    pub item_id: String,
    pub sku_id: String,
    pub outer_sku_code: String,
    pub quantity: i64,
    pub price_fen: i64,
    /// Raw line after-sales value ("NO_REFUND"/"SUCCESS", "0"/"12", "1"/"4").
    pub after_sale: String,
    pub shipped: bool,
}

/// One stock push the platform received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockPush {
    pub platform: Platform,
    pub shop_id: String,
    pub item_id: String,
    pub sku_id: String,
    pub quantity: i64,
    pub at: DateTime<Utc>,
}

/// Doudian webhook delivery counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PushStats {
    pub attempts: u64,
    pub delivered: u64,
    pub abandoned: u64,
}

/// One SKU a scenario sells. JSON: an object or `[item_id, sku_id, outer_sku_code, price_fen]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SkuRepr")]
pub struct ScenarioSku {
    pub item_id: String,
    pub sku_id: String,
    pub outer_sku_code: String,
    pub price_fen: i64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SkuRepr {
    Tuple(String, String, String, i64),
    Object {
        item_id: String,
        sku_id: String,
        #[serde(default)]
        outer_sku_code: String,
        price_fen: i64,
    },
}

impl From<SkuRepr> for ScenarioSku {
    fn from(r: SkuRepr) -> Self {
        match r {
            SkuRepr::Tuple(item_id, sku_id, outer_sku_code, price_fen)
            | SkuRepr::Object {
                item_id,
                sku_id,
                outer_sku_code,
                price_fen,
            } => ScenarioSku {
                item_id,
                sku_id,
                outer_sku_code,
                price_fen,
            },
        }
    }
}

/// A seeded stream of buyers placing and changing orders over `duration_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Scenario {
    pub seed: u64,
    pub orders_per_platform: PerPlatform<u32>,
    /// Distinct people buying.
    pub buyers: u32,
    pub duration_ms: u64,
    /// Per platform; empty → five generated SKUs.
    pub skus: PerPlatform<Vec<ScenarioSku>>,
    /// Share of the buyers who order on every platform with the same receiver.
    pub shared_buyer_fraction: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 1,
            orders_per_platform: PerPlatform {
                taobao: 100,
                douyin: 100,
                xiaohongshu: 100,
            },
            buyers: 150,
            duration_ms: 60_000,
            skus: PerPlatform::default(),
            shared_buyer_fraction: 0.2,
        }
    }
}

/// How far the running (or last) scenario got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioProgress {
    pub running: bool,
    pub seed: u64,
    pub planned_orders: u64,
    pub planned_changes: u64,
    /// Orders created so far.
    pub placed: u64,
    /// Later changes applied so far (pay, cancel, refund, address, ship, complete).
    pub changed: u64,
    /// Changes that no longer applied (the order had moved on, e.g. shipped through the API).
    pub skipped: u64,
    pub done: bool,
}

/// What a control call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MockError {
    #[error("no {platform} shop {shop_id}")]
    UnknownShop { platform: Platform, shop_id: String },
    #[error("no {platform} order {order_id}")]
    UnknownOrder {
        platform: Platform,
        order_id: String,
    },
    #[error("order {order_id} is {from}; {event} does not apply")]
    IllegalTransition {
        order_id: String,
        from: &'static str,
        event: &'static str,
    },
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("a scenario is already running")]
    ScenarioRunning,
}
