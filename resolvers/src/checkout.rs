//! Own-channel checkout and payments: the buyer's orders, cart and payments; the staff-side
//! payment settings and refunds.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uphub_domain::money::{Currency, Money as DomainMoney};
use uphub_services::ServiceError;
use uphub_services::checkout::{self as svc, BuyerOrder as OrderRow, CartLine as CartRow};
use uphub_services::payments::{
    self as pay, PaymentSettingsView, PaymentStart as StartRow, Provider, RefundView,
};

use crate::caller::{UserError, authed, decode_id, encode_id, field, page_args, user_errors};
use crate::catalog::{Money, MoneyInput, SalesChannelType};
use crate::orders::OrderStatus;
use crate::staff::connection;

fn money(fen: i64) -> Money {
    DomainMoney {
        fen,
        currency: Currency::Cny,
    }
    .into()
}

/// An order of the store's own channels, as its buyer sees it.
pub struct BuyerOrder(OrderRow);

#[Object]
impl BuyerOrder {
    async fn id(&self) -> ID {
        encode_id("Order", self.0.id)
    }
    /// The order number shown to the buyer.
    async fn number(&self) -> &str {
        &self.0.number
    }
    async fn channel(&self) -> &str {
        &self.0.channel_type
    }
    async fn status(&self) -> OrderStatus {
        self.0.status.into()
    }
    async fn total(&self) -> Money {
        money(self.0.total_fen)
    }
    async fn placed_at(&self) -> DateTime<Utc> {
        self.0.placed_at
    }
    async fn paid_at(&self) -> Option<DateTime<Utc>> {
        self.0.paid_at
    }
    /// Unpaid by then, the order is cancelled and its stock released.
    async fn payment_due_at(&self) -> Option<DateTime<Utc>> {
        self.0.payment_due_at
    }
    /// Masked receiver: name, phone, province, city, district, address.
    async fn receiver(&self) -> async_graphql::Json<serde_json::Value> {
        async_graphql::Json(self.0.receiver_masked.clone())
    }
    async fn lines(&self) -> Vec<BuyerOrderLine> {
        self.0.lines.iter().cloned().map(BuyerOrderLine).collect()
    }
    /// Activation codes delivered by this order (empty until it is fulfilled).
    async fn activation_codes(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<String>> {
        let (core, rctx) = authed(ctx)?;
        field(ctx, svc::buyer_order_codes(core, rctx, &self.0).await)
    }
}

pub struct BuyerOrderLine(svc::BuyerOrderLine);

#[Object]
impl BuyerOrderLine {
    async fn sku_id(&self) -> Option<ID> {
        self.0.sku_id.map(|s| encode_id("Sku", s))
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    async fn unit_price(&self) -> Money {
        money(self.0.unit_price_fen)
    }
}

pub struct CartLine(CartRow);

#[Object]
impl CartLine {
    async fn sku_id(&self) -> ID {
        encode_id("Sku", self.0.sku_id)
    }
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum PaymentProvider {
    WechatPay,
    Alipay,
}

impl From<PaymentProvider> for Provider {
    fn from(p: PaymentProvider) -> Self {
        match p {
            PaymentProvider::WechatPay => Provider::WechatPay,
            PaymentProvider::Alipay => Provider::Alipay,
        }
    }
}

impl From<Provider> for PaymentProvider {
    fn from(p: Provider) -> Self {
        match p {
            Provider::WechatPay => PaymentProvider::WechatPay,
            Provider::Alipay => PaymentProvider::Alipay,
        }
    }
}

/// The parameters of `wx.requestPayment`.
#[derive(SimpleObject)]
pub struct WechatPayParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: String,
    pub pay_sign: String,
}

/// A started payment: what the mini-program needs to open the provider's pay sheet.
pub struct Payment(StartRow);

#[Object]
impl Payment {
    async fn id(&self) -> ID {
        encode_id("Payment", self.0.payment_id)
    }
    async fn order_id(&self) -> ID {
        encode_id("Order", self.0.order_id)
    }
    async fn provider(&self) -> PaymentProvider {
        self.0.provider.into()
    }
    async fn out_trade_no(&self) -> &str {
        &self.0.out_trade_no
    }
    async fn amount(&self) -> Money {
        money(self.0.amount_fen)
    }
    /// WECHAT_PAY only.
    async fn wechat(&self) -> Option<WechatPayParams> {
        self.0.wechat.as_ref().map(|w| WechatPayParams {
            app_id: w.app_id.clone(),
            time_stamp: w.time_stamp.clone(),
            nonce_str: w.nonce_str.clone(),
            package: w.package.clone(),
            sign_type: w.sign_type.clone(),
            pay_sign: w.pay_sign.clone(),
        })
    }
    /// ALIPAY only: the `tradeNO` of `my.tradePay`.
    async fn alipay_trade_no(&self) -> Option<&str> {
        self.0.alipay_trade_no.as_deref()
    }
}

/// Payment settings as staff see them: no secret ever comes back.
pub struct PaymentSettings(PaymentSettingsView);

#[Object]
impl PaymentSettings {
    async fn notify_base_url(&self) -> Option<&str> {
        self.0.notify_base_url.as_deref()
    }
    async fn wechat_mchid(&self) -> Option<&str> {
        self.0.wechat_mchid.as_deref()
    }
    async fn wechat_appid(&self) -> Option<&str> {
        self.0.wechat_appid.as_deref()
    }
    async fn alipay_app_id(&self) -> Option<&str> {
        self.0.alipay_app_id.as_deref()
    }
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.0.updated_at
    }
}

pub struct Refund(RefundView);

#[Object]
impl Refund {
    async fn id(&self) -> ID {
        encode_id("Refund", self.0.id)
    }
    async fn order_id(&self) -> ID {
        encode_id("Order", self.0.order_id)
    }
    async fn out_refund_no(&self) -> &str {
        &self.0.out_refund_no
    }
    async fn amount(&self) -> Money {
        money(self.0.amount_fen)
    }
    /// PENDING, PROCESSING, SUCCEEDED or FAILED.
    async fn status(&self) -> &str {
        &self.0.status
    }
    /// Issued by the system for a payment the order could not take.
    async fn automatic(&self) -> bool {
        self.0.auto
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

// ------------------------------------------------------------------ inputs ---

#[derive(InputObject)]
pub struct OrderPlaceLineInput {
    pub sku_id: ID,
    pub quantity: i32,
}

#[derive(InputObject)]
pub struct OrderPlaceInput {
    pub channel: SalesChannelType,
    pub lines: Vec<OrderPlaceLineInput>,
    pub address_id: ID,
    /// Same key + same input replays the first answer; another input under it is a CONFLICT.
    pub idempotency_key: String,
    /// A live-stream campaign whose held stock the order may draw from.
    pub campaign: Option<String>,
}

#[derive(SimpleObject, Default)]
pub struct OrderPlacePayload {
    pub order: Option<BuyerOrder>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct CartLineSetInput {
    pub sku_id: ID,
    /// 0 removes the line.
    pub quantity: i32,
}

#[derive(SimpleObject, Default)]
pub struct CartLineSetPayload {
    pub cart: Option<Vec<CartLine>>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct PaymentCreateInput {
    pub order_id: ID,
    pub provider: PaymentProvider,
    pub idempotency_key: String,
}

#[derive(SimpleObject, Default)]
pub struct PaymentCreatePayload {
    pub payment: Option<Payment>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct WechatPaySettingsInput {
    pub mchid: String,
    pub appid: String,
    pub merchant_serial_no: String,
    pub merchant_private_key_pem: String,
    #[graphql(name = "apiV3Key")]
    pub api_v3_key: String,
    pub platform_serial: String,
    pub platform_public_key_pem: String,
    /// Outside production only: where the WeChat Pay API is (a mock).
    pub base_url: Option<String>,
}

#[derive(InputObject)]
pub struct AlipayPaySettingsInput {
    pub app_id: String,
    pub app_private_key_pem: String,
    pub alipay_public_key_pem: String,
    /// Outside production only: the gateway to call (a mock).
    pub gateway_url: Option<String>,
}

#[derive(InputObject)]
pub struct PaymentSettingsSetInput {
    /// Outside production only: the base URL the providers call back (default: the public URL).
    pub notify_base_url: Option<String>,
    pub wechat: Option<WechatPaySettingsInput>,
    pub alipay: Option<AlipayPaySettingsInput>,
}

#[derive(SimpleObject, Default)]
pub struct PaymentSettingsSetPayload {
    pub settings: Option<PaymentSettings>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct OrderRefundInput {
    pub order_id: ID,
    /// Absent: everything not refunded yet.
    pub amount: Option<MoneyInput>,
    pub idempotency_key: String,
}

#[derive(SimpleObject, Default)]
pub struct OrderRefundPayload {
    pub refund: Option<Refund>,
    pub user_errors: Vec<UserError>,
}

// --------------------------------------------------------------- resolvers ---

#[derive(Default)]
pub struct CheckoutQuery;

#[Object]
impl CheckoutQuery {
    /// The calling buyer's orders, newest first. Buyer session.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn buyer_orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, BuyerOrder>> {
        let (core, rctx) = authed(ctx)?;
        let page = field(ctx, page_args(first, after))?;
        let page = field(ctx, svc::buyer_orders(core, rctx, page).await)?;
        Ok(connection(page, |o| o.id, BuyerOrder))
    }

    /// One of the calling buyer's orders; anyone else's id answers NOT_FOUND.
    async fn buyer_order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<BuyerOrder> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("Order", &id) {
            Ok(id) => svc::buyer_order(core, rctx, id).await,
            Err(e) => Err(e),
        };
        field(ctx, r).map(BuyerOrder)
    }

    /// The calling buyer's cart.
    async fn cart(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<CartLine>> {
        let (core, rctx) = authed(ctx)?;
        Ok(field(ctx, svc::cart(core, rctx).await)?
            .into_iter()
            .map(CartLine)
            .collect())
    }

    /// The store's payment settings, secrets left out. CHANNEL_MANAGE.
    async fn payment_settings(&self, ctx: &Context<'_>) -> async_graphql::Result<PaymentSettings> {
        let (core, rctx) = authed(ctx)?;
        field(ctx, pay::payment_settings(core, rctx).await).map(PaymentSettings)
    }
}

#[derive(Default)]
pub struct CheckoutMutation;

fn not_found_as(field: &'static str) -> impl Fn(ServiceError) -> ServiceError {
    move |_| {
        ServiceError::Invalid(uphub_domain::identity::InvalidInput {
            field,
            message: "no such id".into(),
        })
    }
}

#[Object]
impl CheckoutMutation {
    /// Places an order on one of the store's own channels: channel prices, stock reserved until
    /// the payment deadline. Buyer session. SOLD_OUT writes nothing.
    async fn order_place(
        &self,
        ctx: &Context<'_>,
        input: OrderPlaceInput,
    ) -> async_graphql::Result<OrderPlacePayload> {
        let (core, rctx) = authed(ctx)?;
        let parsed = (|| {
            let lines = input
                .lines
                .iter()
                .map(|l| {
                    Ok(svc::PlaceLine {
                        sku: decode_id("Sku", &l.sku_id).map_err(not_found_as("skuId"))?,
                        quantity: l.quantity,
                    })
                })
                .collect::<Result<Vec<_>, ServiceError>>()?;
            Ok::<_, ServiceError>(svc::PlaceInput {
                channel: input.channel.into(),
                lines,
                address_id: decode_id("BuyerAddress", &input.address_id)
                    .map_err(not_found_as("addressId"))?,
                idempotency_key: input.idempotency_key.clone(),
                campaign: input.campaign.clone(),
            })
        })();
        let r = match parsed {
            Ok(p) => svc::order_place(core, rctx, p).await,
            Err(e) => Err(e),
        };
        let (order, user_errors) = user_errors(ctx, r)?;
        Ok(OrderPlacePayload {
            order: order.map(BuyerOrder),
            user_errors,
        })
    }

    /// Sets one SKU's quantity in the caller's cart (0 removes it). Buyer session.
    async fn cart_line_set(
        &self,
        ctx: &Context<'_>,
        input: CartLineSetInput,
    ) -> async_graphql::Result<CartLineSetPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("Sku", &input.sku_id).map_err(not_found_as("skuId")) {
            Ok(sku) => svc::cart_line_set(core, rctx, sku, input.quantity).await,
            Err(e) => Err(e),
        };
        let (cart, user_errors) = user_errors(ctx, r)?;
        Ok(CartLineSetPayload {
            cart: cart.map(|c| c.into_iter().map(CartLine).collect()),
            user_errors,
        })
    }

    /// Starts paying the caller's own order awaiting payment. Buyer session; idempotent by key.
    async fn payment_create(
        &self,
        ctx: &Context<'_>,
        input: PaymentCreateInput,
    ) -> async_graphql::Result<PaymentCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("Order", &input.order_id) {
            Ok(order_id) => {
                pay::payment_create(
                    core,
                    rctx,
                    pay::PaymentCreateInput {
                        order_id,
                        provider: input.provider.into(),
                        idempotency_key: input.idempotency_key,
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        let (payment, user_errors) = user_errors(ctx, r)?;
        Ok(PaymentCreatePayload {
            payment: payment.map(Payment),
            user_errors,
        })
    }

    /// Stores the merchant credentials of WeChat Pay and/or Alipay. CHANNEL_MANAGE.
    async fn payment_settings_set(
        &self,
        ctx: &Context<'_>,
        input: PaymentSettingsSetInput,
    ) -> async_graphql::Result<PaymentSettingsSetPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = pay::payment_settings_set(
            core,
            rctx,
            pay::PaymentSettingsInput {
                notify_base_url: input.notify_base_url,
                wechat: input.wechat.map(|w| pay::WechatPayInput {
                    mchid: w.mchid,
                    appid: w.appid,
                    merchant_serial_no: w.merchant_serial_no,
                    merchant_private_key_pem: w.merchant_private_key_pem,
                    apiv3_key: w.api_v3_key,
                    platform_serial: w.platform_serial,
                    platform_public_key_pem: w.platform_public_key_pem,
                    base_url: w.base_url,
                }),
                alipay: input.alipay.map(|a| pay::AlipayPayInput {
                    app_id: a.app_id,
                    app_private_key_pem: a.app_private_key_pem,
                    alipay_public_key_pem: a.alipay_public_key_pem,
                    gateway_url: a.gateway_url,
                }),
            },
        )
        .await;
        let (settings, user_errors) = user_errors(ctx, r)?;
        Ok(PaymentSettingsSetPayload {
            settings: settings.map(PaymentSettings),
            user_errors,
        })
    }

    /// Refunds a paid own-channel order, in full (no amount) or in part. ORDER_WRITE;
    /// idempotent by key. A full refund of an unshipped order cancels it.
    async fn order_refund(
        &self,
        ctx: &Context<'_>,
        input: OrderRefundInput,
    ) -> async_graphql::Result<OrderRefundPayload> {
        let (core, rctx) = authed(ctx)?;
        let parsed = (|| {
            let amount_fen = match &input.amount {
                Some(m) => Some(DomainMoney::parse("amount", &m.amount, &m.currency)?.fen),
                None => None,
            };
            Ok::<_, ServiceError>(pay::RefundInput {
                order_id: decode_id("Order", &input.order_id)?,
                amount_fen,
                idempotency_key: input.idempotency_key.clone(),
            })
        })();
        let r = match parsed {
            Ok(p) => pay::order_refund(core, rctx, p).await,
            Err(e) => Err(e),
        };
        let (refund, user_errors) = user_errors(ctx, r)?;
        Ok(OrderRefundPayload {
            refund: refund.map(Refund),
            user_errors,
        })
    }
}
