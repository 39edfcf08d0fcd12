//! Orders of every channel, marketplace connections, fulfilments (merge and split).

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use uphub_domain::catalog::ChannelType;
use uphub_domain::identity::Permission;
use uphub_domain::money::{self, Currency};
use uphub_domain::order as dom;
use uphub_domain::shipping::Carrier as DomCarrier;
use uphub_services::audit::require;
use uphub_services::channel_sync::{self, ConnectInput, ConnectionView};
use uphub_services::fulfillment::{self, FulfillmentView, MergeMode as SvcMergeMode};
use uphub_services::orders::{self as svc, OrderEventView, OrderFilter, OrderLineView, OrderView};
use uphub_services::shipping::{self, ShipBackView};

use crate::caller::{UserError, authed, decode_id, encode_id, field, page_args, user_errors};
use crate::catalog::{Money, SalesChannel, SalesChannelType};
use crate::staff::connection;

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Processing,
    PartiallyShipped,
    Shipped,
    Completed,
    Cancelled,
}

impl From<dom::OrderStatus> for OrderStatus {
    fn from(s: dom::OrderStatus) -> Self {
        use dom::OrderStatus as D;
        match s {
            D::PendingPayment => OrderStatus::PendingPayment,
            D::Paid => OrderStatus::Paid,
            D::Processing => OrderStatus::Processing,
            D::PartiallyShipped => OrderStatus::PartiallyShipped,
            D::Shipped => OrderStatus::Shipped,
            D::Completed => OrderStatus::Completed,
            D::Cancelled => OrderStatus::Cancelled,
        }
    }
}

impl From<OrderStatus> for dom::OrderStatus {
    fn from(s: OrderStatus) -> Self {
        use dom::OrderStatus as D;
        match s {
            OrderStatus::PendingPayment => D::PendingPayment,
            OrderStatus::Paid => D::Paid,
            OrderStatus::Processing => D::Processing,
            OrderStatus::PartiallyShipped => D::PartiallyShipped,
            OrderStatus::Shipped => D::Shipped,
            OrderStatus::Completed => D::Completed,
            OrderStatus::Cancelled => D::Cancelled,
        }
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum MergeMode {
    /// Never merge.
    Off,
    /// Offer merges in `fulfillmentSuggestions`; an operator confirms with `ordersMerge`.
    Suggest,
    /// Merge paid orders of the same receiver and warehouse as they arrive.
    Auto,
}

impl From<MergeMode> for SvcMergeMode {
    fn from(m: MergeMode) -> Self {
        match m {
            MergeMode::Off => SvcMergeMode::Off,
            MergeMode::Suggest => SvcMergeMode::Suggest,
            MergeMode::Auto => SvcMergeMode::Auto,
        }
    }
}

/// Orders are kept in CNY (the only currency the platforms here settle in).
fn money_of(fen: i64) -> Money {
    money::Money {
        fen,
        currency: Currency::Cny,
    }
    .into()
}

pub struct Order {
    view: OrderView,
    lines: Option<Vec<OrderLineView>>,
}

#[Object]
impl Order {
    async fn id(&self) -> ID {
        encode_id("Order", self.view.id)
    }
    async fn channel_type(&self) -> Option<SalesChannelType> {
        ChannelType::parse(&self.view.channel_type).map(Into::into)
    }
    async fn channel_id(&self) -> ID {
        encode_id("SalesChannel", self.view.channel_id)
    }
    /// The order's id on its platform.
    async fn platform_order_id(&self) -> &str {
        &self.view.platform_order_id
    }
    async fn status(&self) -> OrderStatus {
        self.view.status.into()
    }
    /// The platform's own status value, as last reported.
    async fn platform_status(&self) -> &str {
        &self.view.platform_status
    }
    /// What the stock pool holds for it: NONE, RESERVED, CONFIRMED, RELEASED or SHORT.
    async fn stock_state(&self) -> &str {
        &self.view.stock_state
    }
    /// Why an operator should look: UNMAPPED_SKU, STOCK_SHORT.
    async fn needs_attention(&self) -> &[String] {
        &self.view.needs_attention
    }
    async fn total(&self) -> Money {
        money_of(self.view.total_fen)
    }
    async fn post_fee(&self) -> Money {
        money_of(self.view.post_fee_fen)
    }
    async fn placed_at(&self) -> DateTime<Utc> {
        self.view.placed_at
    }
    async fn paid_at(&self) -> Option<DateTime<Utc>> {
        self.view.paid_at
    }
    /// The platform's last modification time we hold.
    async fn modified_at(&self) -> DateTime<Utc> {
        self.view.modified_at
    }
    async fn lines(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OrderLine>> {
        if let Some(l) = &self.lines {
            return Ok(l.iter().cloned().map(OrderLine).collect());
        }
        let (core, rctx) = authed(ctx)?;
        Ok(field(
            ctx,
            svc::lines_for_orders(core, rctx, &[self.view.id]).await,
        )?
        .into_iter()
        .map(OrderLine)
        .collect())
    }
    /// Masked unless the caller holds PII_READ (then clear, and the read is audited).
    #[graphql(complexity = 5)]
    async fn receiver(&self, ctx: &Context<'_>) -> async_graphql::Result<Receiver> {
        let (core, rctx) = authed(ctx)?;
        let (v, clear) = field(ctx, svc::receiver(core, rctx, &self.view).await)?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Ok(Receiver {
            name: s("name"),
            phone: s("phone"),
            province: s("province"),
            city: s("city"),
            district: s("district"),
            address: s("address"),
            masked: !clear,
        })
    }
    /// Everything that happened to the order, oldest first.
    #[graphql(complexity = 10)]
    async fn timeline(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OrderEvent>> {
        let (core, rctx) = authed(ctx)?;
        Ok(field(ctx, svc::timeline(core, rctx, self.view.id).await)?
            .into_iter()
            .map(OrderEvent)
            .collect())
    }
}

#[derive(SimpleObject)]
pub struct Receiver {
    pub name: String,
    pub phone: String,
    pub province: String,
    pub city: String,
    pub district: String,
    pub address: String,
    /// True when name, phone and address are masked.
    pub masked: bool,
}

pub struct OrderLine(OrderLineView);

#[Object]
impl OrderLine {
    async fn id(&self) -> ID {
        encode_id("OrderLine", self.0.id)
    }
    /// Our SKU, or null when the platform SKU is not mapped yet (flagged UNMAPPED_SKU).
    async fn sku_id(&self) -> Option<ID> {
        self.0.sku_id.map(|s| encode_id("Sku", s))
    }
    async fn platform_sku_id(&self) -> &str {
        &self.0.platform_sku_id
    }
    async fn outer_sku_code(&self) -> Option<&str> {
        self.0.outer_sku_code.as_deref()
    }
    async fn warehouse_id(&self) -> Option<ID> {
        self.0.warehouse_id.map(|s| encode_id("Warehouse", s))
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    async fn unit_price(&self) -> Money {
        money_of(self.0.unit_price_fen)
    }
    async fn paid(&self) -> Money {
        money_of(self.0.paid_fen)
    }
    /// NONE, REFUND_REQUESTED, RETURNING or REFUNDED.
    async fn after_sales(&self) -> &str {
        &self.0.after_sales
    }
    async fn fulfillment_id(&self) -> Option<ID> {
        self.0.fulfillment_id.map(|s| encode_id("Fulfillment", s))
    }
}

pub struct OrderEvent(OrderEventView);

#[Object]
impl OrderEvent {
    async fn id(&self) -> ID {
        encode_id("OrderEvent", self.0.id)
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// CREATED, STATUS_CHANGED, STATUS_REFUSED, UPDATED, STOCK, MERGED, SPLIT.
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    async fn from_status(&self) -> Option<&str> {
        self.0.from_status.as_deref()
    }
    async fn to_status(&self) -> Option<&str> {
        self.0.to_status.as_deref()
    }
    async fn detail(&self) -> async_graphql::Json<serde_json::Value> {
        async_graphql::Json(self.0.detail.clone())
    }
    async fn actor(&self) -> &str {
        &self.0.actor
    }
}

pub struct Fulfillment(FulfillmentView);

#[Object]
impl Fulfillment {
    async fn id(&self) -> ID {
        encode_id("Fulfillment", self.0.id)
    }
    async fn warehouse_id(&self) -> Option<ID> {
        self.0.warehouse_id.map(|s| encode_id("Warehouse", s))
    }
    /// PHYSICAL or VIRTUAL.
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    /// Pre-sale ship date, when the lines are pre-sale.
    async fn ships_on(&self) -> Option<chrono::NaiveDate> {
        self.0.ships_on
    }
    /// OPEN, SHIPPED or CANCELLED.
    async fn status(&self) -> &str {
        &self.0.status
    }
    async fn merged(&self) -> bool {
        self.0.merged
    }
    async fn order_ids(&self) -> Vec<ID> {
        self.0
            .order_ids
            .iter()
            .map(|o| encode_id("Order", *o))
            .collect()
    }
    /// The carrier the parcel went with, once shipped.
    async fn carrier(&self) -> Option<Carrier> {
        self.0
            .carrier
            .as_deref()
            .and_then(DomCarrier::parse)
            .map(Into::into)
    }
    async fn tracking_number(&self) -> Option<&str> {
        self.0.tracking_no.as_deref()
    }
    async fn shipped_at(&self) -> Option<DateTime<Utc>> {
        self.0.shipped_at
    }
    /// How each marketplace order in the parcel was reported shipped to its platform.
    async fn ship_backs(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ShipBack>> {
        if self.0.status != "SHIPPED" {
            return Ok(Vec::new());
        }
        let (core, rctx) = authed(ctx)?;
        let list = shipping::ship_backs(core, rctx, &[self.0.id]).await?;
        Ok(list.into_iter().map(ShipBack).collect())
    }
}

/// Express carriers a parcel can be handed to.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Sf,
    Zto,
    Yto,
    Sto,
    Yunda,
    Ems,
    Jd,
    Jt,
    Deppon,
    ChinaPost,
}

impl From<Carrier> for DomCarrier {
    fn from(c: Carrier) -> Self {
        match c {
            Carrier::Sf => DomCarrier::Sf,
            Carrier::Zto => DomCarrier::Zto,
            Carrier::Yto => DomCarrier::Yto,
            Carrier::Sto => DomCarrier::Sto,
            Carrier::Yunda => DomCarrier::Yunda,
            Carrier::Ems => DomCarrier::Ems,
            Carrier::Jd => DomCarrier::Jd,
            Carrier::Jt => DomCarrier::Jt,
            Carrier::Deppon => DomCarrier::Deppon,
            Carrier::ChinaPost => DomCarrier::ChinaPost,
        }
    }
}

impl From<DomCarrier> for Carrier {
    fn from(c: DomCarrier) -> Self {
        match c {
            DomCarrier::Sf => Carrier::Sf,
            DomCarrier::Zto => Carrier::Zto,
            DomCarrier::Yto => Carrier::Yto,
            DomCarrier::Sto => Carrier::Sto,
            DomCarrier::Yunda => Carrier::Yunda,
            DomCarrier::Ems => Carrier::Ems,
            DomCarrier::Jd => Carrier::Jd,
            DomCarrier::Jt => Carrier::Jt,
            DomCarrier::Deppon => Carrier::Deppon,
            DomCarrier::ChinaPost => Carrier::ChinaPost,
        }
    }
}

/// The report of a parcel to one marketplace order's platform.
pub struct ShipBack(ShipBackView);

#[Object]
impl ShipBack {
    async fn id(&self) -> ID {
        encode_id("ShipBack", self.0.id)
    }
    async fn order_id(&self) -> ID {
        encode_id("Order", self.0.order_id)
    }
    async fn channel_type(&self) -> Option<SalesChannelType> {
        ChannelType::parse(&self.0.channel_type).map(Into::into)
    }
    /// PENDING (being reported, retried with back-off), DONE or FAILED (refused for good:
    /// `fulfillmentShipBackRetry` tries again).
    async fn state(&self) -> &str {
        &self.0.state
    }
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

#[derive(SimpleObject)]
pub struct FulfillmentSuggestion {
    /// Open fulfilments of one receiver from one warehouse that could ship as one parcel.
    pub fulfillments: Vec<Fulfillment>,
}

pub struct ChannelConnection(ConnectionView);

#[Object]
impl ChannelConnection {
    async fn channel(&self) -> SalesChannel {
        SalesChannel(self.0.channel.clone())
    }
    /// ACTIVE, PAUSED, FAILING or AUTH_FAILED.
    async fn status(&self) -> &str {
        &self.0.status
    }
    /// Orders modified before this time have been fetched.
    async fn sync_cursor(&self) -> DateTime<Utc> {
        self.0.sync_cursor
    }
    /// Seconds between now and the cursor.
    async fn lag_seconds(&self) -> i64 {
        (Utc::now() - self.0.sync_cursor).num_seconds().max(0)
    }
    async fn last_sync_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_sync_at
    }
    async fn last_success_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_success_at
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    async fn last_error_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_error_at
    }
    async fn orders_fetched(&self) -> i64 {
        self.0.orders_fetched
    }
    /// The URL to enter as the shop's message-push (webhook) address on the platform, for
    /// platforms that push order changes (Douyin); null where we only pull. Pushes bring an order
    /// in seconds after it changes; the scheduled pull still catches anything a push misses.
    async fn push_url(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let (core, rctx) = authed(ctx)?;
        Ok(
            (self.0.channel.channel_type == ChannelType::Douyin).then(|| {
                format!(
                    "{}/push/doudian/{}/{}",
                    core.cfg.public_url.trim_end_matches('/'),
                    rctx.tenant.0,
                    self.0.channel.id
                )
            }),
        )
    }
}

#[derive(InputObject, Default)]
pub struct OrderFilterInput {
    pub channel: Option<SalesChannelType>,
    pub status: Option<OrderStatus>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    /// A platform order id.
    pub search: Option<String>,
    pub needs_attention: Option<bool>,
}

#[derive(Default)]
pub struct OrdersQuery;

#[Object]
impl OrdersQuery {
    /// Orders of every channel, newest first. ORDER_READ.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        filter: Option<OrderFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Order>> {
        let (core, rctx) = authed(ctx)?;
        let page = field(ctx, page_args(first, after))?;
        let f = filter.unwrap_or_default();
        let filter = OrderFilter {
            channel: f.channel.map(|c| ChannelType::from(c).as_str().to_string()),
            status: f.status.map(Into::into),
            created_from: f.created_from,
            created_to: f.created_to,
            search: f.search,
            needs_attention: f.needs_attention,
        };
        let page = field(ctx, svc::orders(core, rctx, &filter, page).await)?;
        // Lines of the whole page in one statement when they are asked for.
        let wants_lines = ctx
            .look_ahead()
            .field("edges")
            .field("node")
            .field("lines")
            .exists();
        let mut lines: std::collections::HashMap<uuid::Uuid, Vec<OrderLineView>> =
            std::collections::HashMap::new();
        if wants_lines {
            let ids: Vec<uuid::Uuid> = page.items.iter().map(|o| o.id).collect();
            for l in field(ctx, svc::lines_for_orders(core, rctx, &ids).await)? {
                lines.entry(l.order_id).or_default().push(l);
            }
        }
        Ok(connection(
            page,
            |o| o.id,
            |view| Order {
                lines: wants_lines.then(|| lines.get(&view.id).cloned().unwrap_or_default()),
                view,
            },
        ))
    }

    /// One order; another tenant's id answers like an unknown one. ORDER_READ.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Order>> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("Order", &id) {
            Ok(id) => svc::order(core, rctx, id).await,
            Err(e) => require(rctx, Permission::OrderRead).and(Err(e)),
        };
        match r {
            Ok(view) => Ok(Some(Order { view, lines: None })),
            Err(uphub_services::ServiceError::NotFound) => Ok(None),
            Err(e) => field(ctx, Err(e)),
        }
    }

    /// Marketplace connections with their sync state. ORDER_READ.
    async fn channel_connections(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<ChannelConnection>> {
        let (core, rctx) = authed(ctx)?;
        Ok(field(ctx, channel_sync::connections(core, rctx).await)?
            .into_iter()
            .map(ChannelConnection)
            .collect())
    }

    /// Open fulfilments that could merge (same receiver, warehouse and pre-sale date). ORDER_READ.
    async fn fulfillment_suggestions(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<FulfillmentSuggestion>> {
        let (core, rctx) = authed(ctx)?;
        Ok(field(ctx, fulfillment::suggestions(core, rctx).await)?
            .into_iter()
            .map(|g| FulfillmentSuggestion {
                fulfillments: g.into_iter().map(Fulfillment).collect(),
            })
            .collect())
    }

    /// Fulfilments by id. ORDER_READ.
    async fn fulfillments(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<Fulfillment>> {
        let (core, rctx) = authed(ctx)?;
        let ids: Vec<uuid::Uuid> = ids
            .iter()
            .take(100)
            .filter_map(|i| decode_id("Fulfillment", i).ok())
            .collect();
        Ok(
            field(ctx, fulfillment::fulfillments(core, rctx, &ids).await)?
                .into_iter()
                .map(Fulfillment)
                .collect(),
        )
    }
}

#[derive(InputObject)]
pub struct ChannelConnectInput {
    #[graphql(name = "type")]
    pub channel_type: SalesChannelType,
    pub shop_id: String,
    pub name: Option<String>,
    pub app_key: String,
    pub app_secret: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// The platform's API host; defaults to the platform's production host.
    pub base_url: Option<String>,
    /// Fetch orders modified since this time (default: one day back).
    pub sync_from: Option<DateTime<Utc>>,
}

#[derive(SimpleObject, Default)]
pub struct ChannelConnectPayload {
    pub connection: Option<ChannelConnection>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct ChannelSyncNowInput {
    pub channel_id: ID,
}

#[derive(SimpleObject, Default)]
pub struct ChannelSyncNowPayload {
    pub connection: Option<ChannelConnection>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct OrdersMergeInput {
    pub order_ids: Vec<ID>,
}

#[derive(SimpleObject, Default)]
pub struct OrdersMergePayload {
    pub fulfillment: Option<Fulfillment>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct OrderSplitInput {
    pub order_id: ID,
    /// Lines that move to a fulfilment of their own.
    pub line_ids: Vec<ID>,
}

#[derive(SimpleObject, Default)]
pub struct OrderSplitPayload {
    pub fulfillment: Option<Fulfillment>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct FulfillmentShipInput {
    pub fulfillment_id: ID,
    pub carrier: Carrier,
    /// As printed on the label: 6-40 letters, digits or dashes.
    pub tracking_number: String,
}

#[derive(SimpleObject, Default)]
pub struct FulfillmentShipPayload {
    pub fulfillment: Option<Fulfillment>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct FulfillmentShipBackRetryInput {
    pub fulfillment_id: ID,
}

#[derive(SimpleObject, Default)]
pub struct FulfillmentShipBackRetryPayload {
    /// How many failed ship-backs went back in line.
    pub requeued: Option<i32>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct OrderMergeModeSetInput {
    pub mode: MergeMode,
}

#[derive(SimpleObject, Default)]
pub struct OrderMergeModeSetPayload {
    pub mode: Option<MergeMode>,
    pub user_errors: Vec<UserError>,
}

fn default_base_url(t: ChannelType) -> &'static str {
    match t {
        ChannelType::Taobao => "https://eco.taobao.com",
        ChannelType::Douyin => "https://openapi-fxg.jinritemai.com",
        ChannelType::Xiaohongshu => "https://ark.xiaohongshu.com",
        _ => "",
    }
}

#[derive(Default)]
pub struct OrdersMutation;

#[Object]
impl OrdersMutation {
    /// Connects a marketplace shop; credentials are stored encrypted. CHANNEL_MANAGE.
    async fn channel_connect(
        &self,
        ctx: &Context<'_>,
        input: ChannelConnectInput,
    ) -> async_graphql::Result<ChannelConnectPayload> {
        let (core, rctx) = authed(ctx)?;
        let channel_type: ChannelType = input.channel_type.into();
        let r = channel_sync::connect(
            core,
            rctx,
            ConnectInput {
                channel_type,
                shop_id: input.shop_id.clone(),
                name: input.name,
                credentials: uphub_channels::Credentials {
                    base_url: input
                        .base_url
                        .unwrap_or_else(|| default_base_url(channel_type).to_string()),
                    app_key: input.app_key,
                    app_secret: input.app_secret,
                    access_token: input.access_token,
                    refresh_token: input.refresh_token,
                    shop_id: input.shop_id,
                },
                sync_from: input.sync_from,
            },
        )
        .await;
        let (c, user_errors) = user_errors(ctx, r)?;
        Ok(ChannelConnectPayload {
            connection: c.map(ChannelConnection),
            user_errors,
        })
    }

    /// Asks the workers to sync a connection now. ORDER_WRITE.
    async fn channel_sync_now(
        &self,
        ctx: &Context<'_>,
        input: ChannelSyncNowInput,
    ) -> async_graphql::Result<ChannelSyncNowPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("SalesChannel", &input.channel_id) {
            Ok(id) => channel_sync::sync_now(core, rctx, id).await,
            Err(e) => require(rctx, Permission::OrderWrite).and(Err(e)),
        };
        let (c, user_errors) = user_errors(ctx, r)?;
        Ok(ChannelSyncNowPayload {
            connection: c.map(ChannelConnection),
            user_errors,
        })
    }

    /// Merges the open fulfilments of these orders into one parcel. FULFILLMENT_WRITE.
    async fn orders_merge(
        &self,
        ctx: &Context<'_>,
        input: OrdersMergeInput,
    ) -> async_graphql::Result<OrdersMergePayload> {
        let (core, rctx) = authed(ctx)?;
        let ids: Result<Vec<uuid::Uuid>, _> = input
            .order_ids
            .iter()
            .map(|i| decode_id("Order", i))
            .collect();
        let r = match ids {
            Ok(ids) => fulfillment::orders_merge(core, rctx, &ids).await,
            Err(e) => require(rctx, Permission::FulfillmentWrite).and(Err(e)),
        };
        let (f, user_errors) = user_errors(ctx, r)?;
        Ok(OrdersMergePayload {
            fulfillment: f.map(Fulfillment),
            user_errors,
        })
    }

    /// Moves lines of an unshipped order into a fulfilment of their own. FULFILLMENT_WRITE.
    async fn order_split(
        &self,
        ctx: &Context<'_>,
        input: OrderSplitInput,
    ) -> async_graphql::Result<OrderSplitPayload> {
        let (core, rctx) = authed(ctx)?;
        let lines: Result<Vec<uuid::Uuid>, _> = input
            .line_ids
            .iter()
            .map(|i| decode_id("OrderLine", i))
            .collect();
        let r = match (decode_id("Order", &input.order_id), lines) {
            (Ok(o), Ok(l)) => fulfillment::order_split(core, rctx, o, &l).await,
            (Err(e), _) | (_, Err(e)) => require(rctx, Permission::FulfillmentWrite).and(Err(e)),
        };
        let (f, user_errors) = user_errors(ctx, r)?;
        Ok(OrderSplitPayload {
            fulfillment: f.map(Fulfillment),
            user_errors,
        })
    }

    /// Hands an open fulfilment to a carrier: its orders move to SHIPPED (PARTIALLY_SHIPPED
    /// when some of their lines travel apart), their reserved units leave the shelf, and each
    /// marketplace order is reported shipped to its platform in the background (see
    /// `Fulfillment.shipBacks`). Repeating the same call answers the same. FULFILLMENT_WRITE.
    async fn fulfillment_ship(
        &self,
        ctx: &Context<'_>,
        input: FulfillmentShipInput,
    ) -> async_graphql::Result<FulfillmentShipPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("Fulfillment", &input.fulfillment_id) {
            Ok(id) => {
                shipping::ship(core, rctx, id, input.carrier.into(), &input.tracking_number).await
            }
            Err(e) => require(rctx, Permission::FulfillmentWrite).and(Err(e)),
        };
        let (f, user_errors) = user_errors(ctx, r)?;
        Ok(FulfillmentShipPayload {
            fulfillment: f.map(Fulfillment),
            user_errors,
        })
    }

    /// Puts a shipped fulfilment's FAILED platform reports back in line. FULFILLMENT_WRITE.
    async fn fulfillment_ship_back_retry(
        &self,
        ctx: &Context<'_>,
        input: FulfillmentShipBackRetryInput,
    ) -> async_graphql::Result<FulfillmentShipBackRetryPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("Fulfillment", &input.fulfillment_id) {
            Ok(id) => shipping::retry(core, rctx, id).await,
            Err(e) => require(rctx, Permission::FulfillmentWrite).and(Err(e)),
        };
        let (n, user_errors) = user_errors(ctx, r)?;
        Ok(FulfillmentShipBackRetryPayload {
            requeued: n.map(|n| n.min(i32::MAX as u64) as i32),
            user_errors,
        })
    }

    /// Whether orders of one receiver merge automatically, as suggestions, or not. CHANNEL_MANAGE.
    async fn order_merge_mode_set(
        &self,
        ctx: &Context<'_>,
        input: OrderMergeModeSetInput,
    ) -> async_graphql::Result<OrderMergeModeSetPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = fulfillment::set_merge_mode(core, rctx, input.mode.into()).await;
        let (ok, user_errors) = user_errors(ctx, r)?;
        Ok(OrderMergeModeSetPayload {
            mode: ok.map(|_| input.mode),
            user_errors,
        })
    }
}

#[derive(SimpleObject, Clone)]
pub struct OrderEventNotice {
    pub order_id: ID,
    /// CREATED, STATUS_CHANGED or STOCK.
    pub kind: String,
    pub status: String,
}

#[derive(Default)]
pub struct OrdersSubscription;

#[Subscription]
impl OrdersSubscription {
    /// Orders of the caller's tenant as they arrive and change. ORDER_READ.
    async fn order_events(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = OrderEventNotice> + use<>> {
        let (core, rctx) = authed(ctx)?;
        field(ctx, require(rctx, Permission::OrderRead))?;
        let channel = core.live_channel(rctx.tenant, svc::LIVE_TOPIC);
        Ok(core
            .hub
            .subscribe(channel)
            .filter_map(|payload| async move {
                let v: serde_json::Value = serde_json::from_str(&payload).ok()?;
                Some(OrderEventNotice {
                    order_id: encode_id(
                        "Order",
                        uuid::Uuid::try_parse(v["orderId"].as_str()?).ok()?,
                    ),
                    kind: v["kind"].as_str()?.to_string(),
                    status: v["status"].as_str()?.to_string(),
                })
            }))
    }
}
