//! Flash sales: campaigns for staff; buying, polling and the ticket subscription for buyers. The
//! buyer half is also the whole GraphQL schema of the `uphub seckill` edge (which serves a lean
//! JSON path besides it).

use async_graphql::connection::Connection;
use async_graphql::{
    Context, Enum, ErrorExtensions, ID, InputObject, Object, SimpleObject, Subscription,
};
use futures_util::Stream;
use uphub_domain::identity::{InvalidInput, Permission};
use uphub_services::ServiceError;
use uphub_services::audit::require;
use uphub_services::seckill::{
    self as svc, CampaignInput, SeckillConfig, SeckillError, TicketRef, TicketStatus,
};

use crate::caller::{
    UserError, authed, decode_id, encode_id, field, gql_error, page_args, request_id, user_errors,
};
use crate::catalog::{Money, MoneyInput};
use crate::staff::connection;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "SeckillTicketStatus")]
pub enum SeckillTicketStatus {
    /// Admitted; an order writer decides it shortly.
    Queued,
    /// An order holds the units: pay before `paymentDueAt`.
    Won,
    /// No units left.
    SoldOut,
    /// The buyer already holds the campaign's per-buyer limit.
    LimitExceeded,
    /// Won, but the order was not paid in time: its units went back on sale.
    Cancelled,
}

impl From<TicketStatus> for SeckillTicketStatus {
    fn from(s: TicketStatus) -> Self {
        match s {
            TicketStatus::Queued => SeckillTicketStatus::Queued,
            TicketStatus::Won => SeckillTicketStatus::Won,
            TicketStatus::SoldOut => SeckillTicketStatus::SoldOut,
            TicketStatus::LimitExceeded => SeckillTicketStatus::LimitExceeded,
            TicketStatus::Cancelled => SeckillTicketStatus::Cancelled,
        }
    }
}

/// A buyer's claim in a flash sale.
pub struct SeckillTicket(pub svc::Ticket);

#[Object]
impl SeckillTicket {
    /// Null when the buy was decided at once (SOLD_OUT, LIMIT_EXCEEDED): nothing was queued,
    /// so there is nothing to poll.
    async fn id(&self) -> Option<ID> {
        self.0.id.map(|r| ID(r.encode()))
    }
    async fn campaign_id(&self) -> ID {
        encode_id("SeckillCampaign", self.0.campaign_id)
    }
    async fn status(&self) -> SeckillTicketStatus {
        self.0.status.into()
    }
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    async fn request_id(&self) -> &str {
        &self.0.request_id
    }
    /// The order created for a WON ticket.
    async fn order_id(&self) -> Option<ID> {
        self.0.order_id.map(|o| encode_id("Order", o))
    }
    /// A WON ticket's order is cancelled when unpaid by then.
    async fn payment_due_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.payment_due_at
    }
    /// True when the request id had been used: this is the first request's ticket.
    async fn replayed(&self) -> bool {
        self.0.replayed
    }
}

/// Live numbers of a campaign.
#[derive(SimpleObject)]
pub struct SeckillCampaignStats {
    /// Units Redis may still admit; null while the campaign is not warm.
    pub remaining: Option<i64>,
    /// Tickets admitted and not decided yet.
    pub queued: i64,
    pub tickets_won: i64,
    pub units_won: i64,
    /// Tickets admitted in Redis for units Postgres no longer had.
    pub tickets_sold_out: i64,
}

pub struct SeckillCampaign(pub svc::Campaign);

#[Object]
impl SeckillCampaign {
    async fn id(&self) -> ID {
        encode_id("SeckillCampaign", self.0.id)
    }
    async fn sku_id(&self) -> ID {
        encode_id("Sku", self.0.sku_id)
    }
    async fn warehouse_id(&self) -> ID {
        encode_id("Warehouse", self.0.warehouse_id)
    }
    async fn channel_id(&self) -> ID {
        encode_id("SalesChannel", self.0.channel_id)
    }
    async fn quota(&self) -> i32 {
        self.0.quota
    }
    async fn price(&self) -> Money {
        self.0.price.into()
    }
    async fn starts_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.starts_at
    }
    async fn ends_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.ends_at
    }
    async fn per_buyer_limit(&self) -> i32 {
        self.0.per_buyer_limit
    }
    async fn payment_minutes(&self) -> i32 {
        self.0.payment_minutes
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at
    }
    /// When Redis was last (re)loaded for the campaign; null if it never was.
    async fn warmed_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.warmed_at
    }
    async fn stats(&self, ctx: &Context<'_>) -> async_graphql::Result<SeckillCampaignStats> {
        let (core, rctx) = authed(ctx)?;
        let s = field(ctx, svc::campaign_stats(core, rctx, self.0.id).await)?;
        Ok(SeckillCampaignStats {
            remaining: s.remaining,
            queued: s.queued,
            tickets_won: s.tickets_won,
            units_won: s.units_won,
            tickets_sold_out: s.tickets_sold_out,
        })
    }
}

/// Maps a flash-sale error: what a buyer can act on goes to `userErrors`, the rest (rate limit,
/// permission, internal) to a top-level error with `extensions.code`.
fn seckill_user_errors<T>(
    ctx: &Context<'_>,
    r: Result<T, SeckillError>,
) -> async_graphql::Result<(Option<T>, Vec<UserError>)> {
    match r {
        Ok(v) => Ok((Some(v), vec![])),
        Err(e) if e.is_user_error() => Ok((
            None,
            vec![UserError {
                field: e.field().map(str::to_string),
                code: e.code().as_str().to_string(),
                message: e.to_string(),
            }],
        )),
        Err(SeckillError::Service(e)) => Err(gql_error(e, &request_id(ctx))),
        Err(e) => {
            let code = e.code();
            Err(async_graphql::Error::new(e.to_string())
                .extend_with(|_, ext| ext.set("code", code.as_str())))
        }
    }
}

fn ticket_ref(id: &ID) -> Result<TicketRef, ServiceError> {
    TicketRef::decode(id.as_str()).ok_or(ServiceError::NotFound)
}

fn config<'a>(ctx: &Context<'a>) -> &'a SeckillConfig {
    ctx.data_opt::<SeckillConfig>()
        .unwrap_or_else(|| SeckillConfig::global())
}

// ------------------------------------------------------------------ staff ---

#[derive(Default)]
pub struct SeckillStaffQuery;

#[Object]
impl SeckillStaffQuery {
    /// Flash-sale campaigns, newest first. INVENTORY_READ.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn seckill_campaigns(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, SeckillCampaign>> {
        let (core, rctx) = authed(ctx)?;
        let page = field(ctx, page_args(first, after))?;
        let page = field(ctx, svc::campaigns(core, rctx, page).await)?;
        Ok(connection(page, |c| c.id, SeckillCampaign))
    }

    /// One campaign; another tenant's id answers like an unknown one. INVENTORY_READ.
    async fn seckill_campaign(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<SeckillCampaign>> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("SeckillCampaign", &id) {
            Ok(id) => svc::campaign(core, rctx, id).await,
            Err(e) => require(rctx, Permission::InventoryRead).and(Err(e)),
        };
        match r {
            Ok(c) => Ok(Some(SeckillCampaign(c))),
            Err(ServiceError::NotFound) => Ok(None),
            Err(e) => field(ctx, Err(e)),
        }
    }
}

#[derive(InputObject)]
pub struct SeckillCampaignCreateInput {
    pub sku_id: ID,
    /// The warehouse whose general stock the sale draws from.
    pub warehouse_id: ID,
    /// One of the tenant's own channels (WECHAT_MINI, ALIPAY_MINI, H5): the orders' channel.
    pub channel_id: ID,
    /// Units on sale; at most what is available now.
    pub quota: i32,
    pub price: MoneyInput,
    pub starts_at: chrono::DateTime<chrono::Utc>,
    pub ends_at: chrono::DateTime<chrono::Utc>,
    pub per_buyer_limit: i32,
    /// Minutes a WON ticket's order may stay unpaid (1-1440).
    pub payment_minutes: i32,
}

#[derive(SimpleObject, Default)]
pub struct SeckillCampaignCreatePayload {
    pub campaign: Option<SeckillCampaign>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct SeckillCampaignWarmInput {
    pub id: ID,
}

#[derive(SimpleObject, Default)]
pub struct SeckillCampaignWarmPayload {
    pub campaign: Option<SeckillCampaign>,
    pub user_errors: Vec<UserError>,
}

#[derive(Default)]
pub struct SeckillStaffMutation;

#[Object]
impl SeckillStaffMutation {
    /// Creates a flash sale and warms it into Redis. The quota must be available now (CONFLICT
    /// otherwise); every unit is still decided by Postgres when orders are written.
    /// INVENTORY_WRITE.
    async fn seckill_campaign_create(
        &self,
        ctx: &Context<'_>,
        input: SeckillCampaignCreateInput,
    ) -> async_graphql::Result<SeckillCampaignCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let bad = |f: &'static str| {
            ServiceError::Invalid(InvalidInput {
                field: f,
                message: "no such object".into(),
            })
        };
        let ids = decode_id("Sku", &input.sku_id)
            .map_err(|_| bad("skuId"))
            .and_then(|s| {
                Ok((
                    s,
                    decode_id("Warehouse", &input.warehouse_id).map_err(|_| bad("warehouseId"))?,
                ))
            })
            .and_then(|(s, w)| {
                Ok((
                    s,
                    w,
                    decode_id("SalesChannel", &input.channel_id).map_err(|_| bad("channelId"))?,
                ))
            });
        let r = match ids {
            Ok((sku_id, warehouse_id, channel_id)) => {
                svc::campaign_create(
                    core,
                    rctx,
                    CampaignInput {
                        sku_id,
                        warehouse_id,
                        channel_id,
                        quota: input.quota.into(),
                        price_amount: input.price.amount,
                        price_currency: input.price.currency,
                        starts_at: input.starts_at,
                        ends_at: input.ends_at,
                        per_buyer_limit: input.per_buyer_limit.into(),
                        payment_minutes: input.payment_minutes.into(),
                    },
                )
                .await
            }
            Err(e) => require(rctx, Permission::InventoryWrite).and(Err(e)),
        };
        let (c, user_errors) = user_errors(ctx, r)?;
        Ok(SeckillCampaignCreatePayload {
            campaign: c.map(SeckillCampaign),
            user_errors,
        })
    }

    /// Loads the campaign into Redis again when it is missing there (rebuilt from the tickets
    /// Postgres decided); a warm campaign is left as it is. INVENTORY_WRITE.
    async fn seckill_campaign_warm(
        &self,
        ctx: &Context<'_>,
        input: SeckillCampaignWarmInput,
    ) -> async_graphql::Result<SeckillCampaignWarmPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("SeckillCampaign", &input.id) {
            Ok(id) => svc::campaign_warm(core, rctx, id).await,
            Err(e) => require(rctx, Permission::InventoryWrite).and(Err(e)),
        };
        let (c, user_errors) = user_errors(ctx, r)?;
        Ok(SeckillCampaignWarmPayload {
            campaign: c.map(SeckillCampaign),
            user_errors,
        })
    }
}

// ------------------------------------------------------------------ buyer ---

#[derive(Default)]
pub struct SeckillBuyerQuery;

#[Object]
impl SeckillBuyerQuery {
    /// A ticket as it stands (answered from Redis). Buyers see their own tickets; staff with
    /// ORDER_READ see the tenant's; anything else is null.
    async fn seckill_ticket(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<SeckillTicket>> {
        let (core, rctx) = authed(ctx)?;
        let r = match ticket_ref(&id) {
            Ok(r) => svc::ticket(core, rctx, r).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(t) => Ok(Some(SeckillTicket(t))),
            Err(ServiceError::NotFound) => Ok(None),
            Err(e) => field(ctx, Err(e)),
        }
    }
}

#[derive(InputObject)]
pub struct SeckillBuyInput {
    pub campaign_id: ID,
    /// 1 up to the campaign's per-buyer limit.
    pub quantity: i32,
    /// The client's idempotency key (1-64 of A-Z a-z 0-9 - _): a retry with the same key gets
    /// the first ticket back.
    pub request_id: String,
}

#[derive(SimpleObject, Default)]
pub struct SeckillBuyPayload {
    pub ticket: Option<SeckillTicket>,
    pub user_errors: Vec<UserError>,
}

#[derive(Default)]
pub struct SeckillBuyerMutation;

#[Object]
impl SeckillBuyerMutation {
    /// Buyers only. Answered from Redis: QUEUED (poll `seckillTicket` or subscribe to
    /// `seckillTicketChanged`), or at once SOLD_OUT / LIMIT_EXCEEDED. CAMPAIGN_NOT_STARTED,
    /// CAMPAIGN_ENDED, VALIDATION, NOT_FOUND and CONFLICT (request id reused for another
    /// quantity) come as `userErrors`; RATE_LIMITED (per IP and per buyer) as a top-level error.
    async fn seckill_buy(
        &self,
        ctx: &Context<'_>,
        input: SeckillBuyInput,
    ) -> async_graphql::Result<SeckillBuyPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("SeckillCampaign", &input.campaign_id) {
            Ok(c) => {
                svc::buy(
                    core,
                    rctx,
                    config(ctx),
                    c,
                    input.quantity.into(),
                    &input.request_id,
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
        let (t, user_errors) = seckill_user_errors(ctx, r)?;
        Ok(SeckillBuyPayload {
            ticket: t.map(SeckillTicket),
            user_errors,
        })
    }
}

#[derive(Default)]
pub struct SeckillSubscription;

#[Subscription]
impl SeckillSubscription {
    /// The ticket now, then each change until it is decided (then the stream ends).
    async fn seckill_ticket_changed(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = SeckillTicket> + use<>> {
        use futures_util::StreamExt;
        let (core, rctx) = authed(ctx)?;
        let r = field(ctx, ticket_ref(&id))?;
        let stream = field(ctx, svc::ticket_changes(core, rctx, r).await)?;
        Ok(stream.map(SeckillTicket))
    }
}
