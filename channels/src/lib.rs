//! Marketplace adapters: each speaks one platform's protocol (signing, paging, errors, back-off,
//! token refresh) and hands back our domain types, never the platform's field names.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uphub_domain::catalog::ChannelType;
use uphub_domain::order::{ChannelOrder, Receiver, SealedReceiver};

pub mod doudian_push;
pub mod douyin;
mod http;
pub mod sign;
pub mod taobao;
pub mod xiaohongshu;

pub use douyin::DouyinShop;
pub use http::HttpConfig;
pub use taobao::TaobaoShop;
pub use xiaohongshu::XiaohongshuShop;

/// What a platform call can come back with, after the adapter's own retries are spent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The platform's throttling answer (TOP code 7, Doudian 60000, Xiaohongshu -9013) with the
    /// ban time it announced, if any.
    #[error("rate limited by the platform; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// 5xx, timeouts, connection failures, the platform's "service unavailable": worth retrying.
    #[error("platform unavailable: {0}")]
    Unavailable(String),
    /// Credentials refused (bad signature, expired or revoked token that refresh did not fix).
    #[error("platform refused the credentials: {0}")]
    Auth(String),
    /// A business error; retrying the same call will not help.
    #[error("platform rejected the call: {code}: {message}")]
    Rejected { code: String, message: String },
    /// The answer did not parse as the protocol says it should.
    #[error("unexpected platform answer: {0}")]
    Protocol(String),
}

impl ChannelError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ChannelError::RateLimited { .. } | ChannelError::Unavailable(_)
        )
    }
}

/// A shop's credentials on its platform, plus where the platform lives (its real host, or a mock).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub base_url: String,
    pub app_key: String,
    pub app_secret: String,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub shop_id: String,
}

/// A half-open modified-time window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// What a window pull brought back. `complete` is false when some orders of the window could not
/// be fetched (after the adapter's retries): what did arrive is still good, but the window must be
/// pulled again before the cursor may pass it.
#[derive(Debug, Clone, Default)]
pub struct WindowFetch {
    pub orders: Vec<ChannelOrder>,
    pub complete: bool,
    /// The last error behind an incomplete pull.
    pub error: Option<ChannelError>,
}

/// A platform message (TMC / push) that names an order to refetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderHint {
    pub message_id: String,
    pub platform_order_id: String,
}

/// One marketplace shop.
#[async_trait::async_trait]
pub trait Marketplace: Send + Sync {
    fn channel(&self) -> ChannelType;

    /// Every order modified in `window`, all pages, in the platform's documented paging order.
    async fn orders_modified(&self, window: Window) -> Result<Vec<ChannelOrder>, ChannelError>;

    /// Like [`Marketplace::orders_modified`], but orders listed with a modified time no newer than
    /// `known` (what we already hold) may be skipped, and orders that could not be fetched do not
    /// fail the whole window. Platforms whose list already carries full orders keep the default.
    async fn fetch_window(
        &self,
        window: Window,
        known: &std::collections::HashMap<String, DateTime<Utc>>,
    ) -> Result<WindowFetch, ChannelError> {
        let _ = known;
        Ok(WindowFetch {
            orders: self.orders_modified(window).await?,
            complete: true,
            error: None,
        })
    }

    /// One order in full.
    async fn order(&self, platform_order_id: &str) -> Result<ChannelOrder, ChannelError>;

    /// Decrypts receivers (batched to the platform's limit); `None` where the platform would not.
    async fn decrypt_receivers(
        &self,
        sealed: &[(String, SealedReceiver)],
    ) -> Result<Vec<Option<Receiver>>, ChannelError>;

    /// Marks lines (all when `line_ids` is empty) shipped with a carrier and tracking number.
    async fn ship(
        &self,
        platform_order_id: &str,
        line_ids: &[String],
        carrier_code: &str,
        tracking_no: &str,
    ) -> Result<(), ChannelError>;

    /// Sets the sellable quantity of one platform SKU (full overwrite, not a delta).
    async fn push_stock(
        &self,
        platform_item_id: &str,
        platform_sku_id: &str,
        quantity: i64,
    ) -> Result<(), ChannelError>;

    /// Pull-style messages (Taobao TMC); platforms that push instead return nothing.
    async fn poll_hints(&self) -> Result<Vec<OrderHint>, ChannelError> {
        Ok(Vec::new())
    }

    async fn confirm_hints(&self, _message_ids: &[String]) -> Result<(), ChannelError> {
        Ok(())
    }

    /// The credentials now in use (a token refresh may have replaced them).
    fn credentials(&self) -> Credentials;
}

/// The adapter of a marketplace shop with the default timeouts and retries; `None` for channels
/// that are not marketplaces (mini-programs, H5), and (logged) when no HTTP client can be built.
pub fn connect(channel: ChannelType, creds: Credentials) -> Option<Box<dyn Marketplace>> {
    match connect_with(channel, creds, HttpConfig::default()) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(channel = channel.as_str(), error = %e, "cannot create the marketplace adapter");
            None
        }
    }
}

/// [`connect`] with explicit timeouts and retries; `Ok(None)` for non-marketplace channels.
pub fn connect_with(
    channel: ChannelType,
    creds: Credentials,
    config: HttpConfig,
) -> Result<Option<Box<dyn Marketplace>>, ChannelError> {
    Ok(match channel {
        ChannelType::Taobao => Some(Box::new(TaobaoShop::new(creds, config)?)),
        ChannelType::Douyin => Some(Box::new(DouyinShop::new(creds, config)?)),
        ChannelType::Xiaohongshu => Some(Box::new(XiaohongshuShop::new(creds, config)?)),
        ChannelType::WechatMini | ChannelType::AlipayMini | ChannelType::H5 => None,
    })
}
