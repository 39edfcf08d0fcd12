//! Products, SKUs, membership plans, sales channels and listings, with the per-request
//! dataloaders that keep `products { skus { price(channel) inventory } }` at three statements.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_graphql::connection::Connection;
use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::resolver_utils::enum_value;
use async_graphql::{Context, Enum, ID, InputObject, Object, ScalarType, SimpleObject, Value};
use uphub_domain::catalog as rules;
use uphub_domain::identity::Permission;
use uphub_domain::money;
use uphub_services::audit::require;
use uphub_services::catalog::{self as svc, PriceInput, ProductPatch, SkuPatch};
use uphub_services::inventory::{self, LevelView};
use uphub_services::{Core, ServiceError};
use uphub_tenants::RequestCtx;
use uuid::Uuid;

use crate::caller::{
    UserError, authed, decode_id, encode_id, field, gql_error, page_args, request_id, user_errors,
};
use crate::inline::{Errors, FieldsNow, Inlined, Now, Pending, list_now, object_now, reported};
use crate::inventory::InventoryLevel;
use crate::staff::connection;

/// The UUID a global ID names, or nil: an ID that does not decode is then looked up like any
/// other unknown one, so a malformed, mistyped or foreign ID all answer the same.
fn uuid_or_nil(kind: &str, id: &ID) -> Uuid {
    decode_id(kind, id).unwrap_or(Uuid::nil())
}

// ------------------------------------------------------------- dataloaders ---

/// Clonable view of a loader failure (dataloader errors are shared by every waiting field).
type LoadError = Arc<ServiceError>;

fn load_error(ctx: &Context<'_>, e: LoadError) -> async_graphql::Error {
    let owned = match &*e {
        ServiceError::Invalid(i) => ServiceError::Invalid(i.clone()),
        ServiceError::NotFound => ServiceError::NotFound,
        ServiceError::Forbidden(m) => ServiceError::Forbidden(m.clone()),
        ServiceError::Unauthenticated(m) => ServiceError::Unauthenticated(m.clone()),
        ServiceError::Internal(inner) => ServiceError::Internal(anyhow::anyhow!("{inner:#}")),
        other => ServiceError::Internal(anyhow::anyhow!("loader: {other}")),
    };
    gql_error(owned, &request_id(ctx))
}

/// SKUs (each with its listings) of products, in one statement per batch.
pub struct SkusByProductLoader {
    core: Core,
    ctx: RequestCtx,
}

impl Loader<Uuid> for SkusByProductLoader {
    type Value = Vec<svc::Sku>;
    type Error = LoadError;
    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        svc::skus_for_products(&self.core, &self.ctx, keys)
            .await
            .map_err(Arc::new)
    }
}

/// Listings of SKUs that were loaded without theirs (`sku(id)`, mutation payloads).
pub struct ListingsBySkuLoader {
    core: Core,
    ctx: RequestCtx,
}

impl Loader<Uuid> for ListingsBySkuLoader {
    type Value = Vec<svc::Listing>;
    type Error = LoadError;
    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        svc::listings_for_skus(&self.core, &self.ctx, keys)
            .await
            .map_err(Arc::new)
    }
}

/// Inventory levels of SKUs over all warehouses.
pub struct InventoryBySkuLoader {
    core: Core,
    ctx: RequestCtx,
}

impl Loader<Uuid> for InventoryBySkuLoader {
    type Value = Vec<LevelView>;
    type Error = LoadError;
    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        inventory::levels_for_skus(&self.core, &self.ctx, keys)
            .await
            .map_err(Arc::new)
    }
}

/// The catalog's loaders of one request, bound to its caller (and so to its tenant).
pub struct CatalogLoaders {
    pub skus_by_product: DataLoader<SkusByProductLoader>,
    pub listings_by_sku: DataLoader<ListingsBySkuLoader>,
    pub inventory_by_sku: DataLoader<InventoryBySkuLoader>,
}

impl CatalogLoaders {
    fn new(core: &Core, ctx: &RequestCtx) -> Self {
        let (c, x) = (core.clone(), ctx.clone());
        CatalogLoaders {
            skus_by_product: DataLoader::new(SkusByProductLoader { core: c, ctx: x }, tokio::spawn),
            listings_by_sku: DataLoader::new(
                ListingsBySkuLoader {
                    core: core.clone(),
                    ctx: ctx.clone(),
                },
                tokio::spawn,
            ),
            inventory_by_sku: DataLoader::new(
                InventoryBySkuLoader {
                    core: core.clone(),
                    ctx: ctx.clone(),
                },
                tokio::spawn,
            ),
        }
    }
}

/// Put into each request's data next to the `Caller` (empty); the loaders are built on first
/// use from the authenticated caller, so an unauthenticated request never has any.
#[derive(Clone, Default)]
pub struct Loaders(Arc<OnceLock<CatalogLoaders>>);

fn loaders<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a CatalogLoaders> {
    let (core, rctx) = authed(ctx)?;
    let cell = ctx.data::<Loaders>().map_err(|_| {
        gql_error(
            ServiceError::Internal(anyhow::anyhow!("catalog loaders missing from request data")),
            &request_id(ctx),
        )
    })?;
    Ok(cell.0.get_or_init(|| CatalogLoaders::new(core, rctx)))
}

// ------------------------------------------------------------------- enums ---

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ProductKind {
    Physical,
    Course,
    ActivationCode,
    Membership,
}

impl From<ProductKind> for rules::ProductKind {
    fn from(k: ProductKind) -> Self {
        match k {
            ProductKind::Physical => rules::ProductKind::Physical,
            ProductKind::Course => rules::ProductKind::Course,
            ProductKind::ActivationCode => rules::ProductKind::ActivationCode,
            ProductKind::Membership => rules::ProductKind::Membership,
        }
    }
}

impl From<rules::ProductKind> for ProductKind {
    fn from(k: rules::ProductKind) -> Self {
        match k {
            rules::ProductKind::Physical => ProductKind::Physical,
            rules::ProductKind::Course => ProductKind::Course,
            rules::ProductKind::ActivationCode => ProductKind::ActivationCode,
            rules::ProductKind::Membership => ProductKind::Membership,
        }
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ProductStatus {
    Draft,
    Active,
    Archived,
}

impl From<ProductStatus> for rules::ProductStatus {
    fn from(s: ProductStatus) -> Self {
        match s {
            ProductStatus::Draft => rules::ProductStatus::Draft,
            ProductStatus::Active => rules::ProductStatus::Active,
            ProductStatus::Archived => rules::ProductStatus::Archived,
        }
    }
}

impl From<rules::ProductStatus> for ProductStatus {
    fn from(s: rules::ProductStatus) -> Self {
        match s {
            rules::ProductStatus::Draft => ProductStatus::Draft,
            rules::ProductStatus::Active => ProductStatus::Active,
            rules::ProductStatus::Archived => ProductStatus::Archived,
        }
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum SalesChannelType {
    WechatMini,
    AlipayMini,
    H5,
    Taobao,
    Douyin,
    Xiaohongshu,
}

impl From<SalesChannelType> for rules::ChannelType {
    fn from(t: SalesChannelType) -> Self {
        match t {
            SalesChannelType::WechatMini => rules::ChannelType::WechatMini,
            SalesChannelType::AlipayMini => rules::ChannelType::AlipayMini,
            SalesChannelType::H5 => rules::ChannelType::H5,
            SalesChannelType::Taobao => rules::ChannelType::Taobao,
            SalesChannelType::Douyin => rules::ChannelType::Douyin,
            SalesChannelType::Xiaohongshu => rules::ChannelType::Xiaohongshu,
        }
    }
}

impl From<rules::ChannelType> for SalesChannelType {
    fn from(t: rules::ChannelType) -> Self {
        match t {
            rules::ChannelType::WechatMini => SalesChannelType::WechatMini,
            rules::ChannelType::AlipayMini => SalesChannelType::AlipayMini,
            rules::ChannelType::H5 => SalesChannelType::H5,
            rules::ChannelType::Taobao => SalesChannelType::Taobao,
            rules::ChannelType::Douyin => SalesChannelType::Douyin,
            rules::ChannelType::Xiaohongshu => SalesChannelType::Xiaohongshu,
        }
    }
}

// ----------------------------------------------------------------- objects ---

/// An amount of money. `amount` is a decimal string in major units ("12.30" yuan).
#[derive(SimpleObject)]
pub struct Money {
    pub amount: String,
    /// ISO 4217 code, e.g. CNY.
    pub currency: String,
}

impl From<money::Money> for Money {
    fn from(m: money::Money) -> Self {
        Money {
            amount: m.to_decimal_string(),
            currency: m.currency.as_str().to_string(),
        }
    }
}

#[derive(InputObject)]
pub struct MoneyInput {
    /// A decimal string in major units with at most 2 decimals, e.g. "12.30".
    pub amount: String,
    /// ISO 4217 code; only CNY is accepted for now.
    pub currency: String,
}

impl From<MoneyInput> for PriceInput {
    fn from(m: MoneyInput) -> Self {
        PriceInput {
            amount: m.amount,
            currency: m.currency,
        }
    }
}

/// One option value of a SKU, such as 颜色 = 红色.
#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "SkuOptionInput")]
pub struct SkuOption {
    pub name: String,
    pub value: String,
}

pub struct MembershipPlan(pub svc::MembershipPlan);

#[Object]
impl MembershipPlan {
    async fn id(&self) -> ID {
        encode_id("MembershipPlan", self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn duration_days(&self) -> i32 {
        self.0.duration_days
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at
    }
}

/// A product, with the stock of its SKUs when that was fetched for a whole page at once.
pub struct Product(pub Arc<svc::Product>, pub Option<Levels>);

impl Product {
    fn new(p: svc::Product) -> Self {
        Product(Arc::new(p), None)
    }
}

/// Inventory levels by SKU, fetched in one batch for every SKU on a page.
pub type Levels = Arc<HashMap<Uuid, Vec<LevelView>>>;

/// Loads, in one batch per kind, what the selection under `skus` needs for all `products`:
/// their SKUs (with listings) and, when `inventory`/`inventoryLevels` is asked for and allowed,
/// the stock of all those SKUs. Fields then read what was fetched, so the statement count does
/// not depend on how the executor happens to interleave the fields of a page.
async fn with_skus(
    ctx: &Context<'_>,
    mut products: Vec<Arc<svc::Product>>,
    skus: async_graphql::Lookahead<'_>,
) -> async_graphql::Result<Vec<Product>> {
    if !skus.exists() || products.is_empty() {
        return Ok(products.into_iter().map(|p| Product(p, None)).collect());
    }
    let missing: Vec<Uuid> = products
        .iter()
        .filter(|p| p.skus.is_none())
        .map(|p| p.id)
        .collect();
    if !missing.is_empty() {
        let mut loaded = loaders(ctx)?
            .skus_by_product
            .load_many(missing)
            .await
            .map_err(|e| load_error(ctx, e))?;
        for p in products.iter_mut().filter(|p| p.skus.is_none()) {
            let skus = loaded.remove(&p.id).unwrap_or_default();
            Arc::make_mut(p).skus = Some(skus);
        }
    }
    let ids: Vec<Uuid> = products
        .iter()
        .flat_map(|p| p.skus.iter().flatten().map(|s| s.id))
        .collect();
    let levels = stock_for(ctx, skus, ids).await?;
    Ok(products
        .into_iter()
        .map(|p| Product(p, levels.clone()))
        .collect())
}

/// The stock of `skus` in one batch when the selection asks for it and the caller may see it
/// (otherwise the fields themselves answer, FORBIDDEN included).
async fn stock_for(
    ctx: &Context<'_>,
    selection: async_graphql::Lookahead<'_>,
    ids: Vec<Uuid>,
) -> async_graphql::Result<Option<Levels>> {
    let (_, rctx) = authed(ctx)?;
    let wanted =
        selection.field("inventory").exists() || selection.field("inventoryLevels").exists();
    if !wanted || !rctx.can(Permission::InventoryRead) {
        return Ok(None);
    }
    if ids.is_empty() {
        return Ok(Some(Levels::default()));
    }
    let levels = loaders(ctx)?
        .inventory_by_sku
        .load_many(ids)
        .await
        .map_err(|e| load_error(ctx, e))?;
    Ok(Some(Arc::new(levels)))
}

#[Object]
impl Product {
    async fn id(&self) -> ID {
        encode_id("Product", self.0.id)
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn kind(&self) -> ProductKind {
        self.0.kind.into()
    }
    async fn status(&self) -> ProductStatus {
        self.0.status.into()
    }
    async fn tags(&self) -> &[String] {
        &self.0.tags
    }
    /// The course a COURSE product grants.
    async fn course_id(&self) -> Option<&str> {
        self.0.course_id.as_deref()
    }
    /// The plan a MEMBERSHIP product grants.
    async fn membership_plan_id(&self) -> Option<ID> {
        self.0
            .membership_plan_id
            .map(|id| encode_id("MembershipPlan", id))
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.updated_at
    }
    /// At most 100, oldest first.
    async fn skus(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Inlined<Sku>>> {
        let skus = match &self.0.skus {
            Some(skus) => skus.clone(),
            None => loaders(ctx)?
                .skus_by_product
                .load_one(self.0.id)
                .await
                .map_err(|e| load_error(ctx, e))?
                .unwrap_or_default(),
        };
        let levels = match &self.1 {
            Some(l) => Some(l.clone()),
            None => {
                let ids: Vec<Uuid> = skus.iter().map(|s| s.id).collect();
                stock_for(ctx, ctx.look_ahead(), ids).await?
            }
        };
        Ok(skus
            .into_iter()
            .map(|s| {
                let l = levels
                    .as_ref()
                    .map(|m| m.get(&s.id).cloned().unwrap_or_default());
                Inlined(Sku(s, l))
            })
            .collect())
    }
}

/// Stock of a SKU summed over warehouses. available = onHand − reserved − held.
#[derive(SimpleObject)]
pub struct InventoryTotals {
    pub on_hand: i32,
    pub reserved: i32,
    pub held: i32,
    pub available: i32,
}

impl InventoryTotals {
    /// The totals over a SKU's levels, one per warehouse.
    fn over(levels: &[LevelView]) -> Self {
        let (on_hand, reserved, held, available) = inventory::total(levels);
        InventoryTotals {
            on_hand,
            reserved,
            held,
            available,
        }
    }
}

/// A SKU, with its stock when that was fetched for the whole page.
pub struct Sku(pub svc::Sku, pub Option<Vec<LevelView>>);

impl Sku {
    async fn listings_of(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<svc::Listing>> {
        if let Some(l) = &self.0.listings {
            return Ok(l.clone());
        }
        Ok(loaders(ctx)?
            .listings_by_sku
            .load_one(self.0.id)
            .await
            .map_err(|e| load_error(ctx, e))?
            .unwrap_or_default())
    }

    async fn levels(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<LevelView>> {
        may_read_stock(ctx)?;
        if let Some(l) = &self.1 {
            return Ok(l.clone());
        }
        Ok(loaders(ctx)?
            .inventory_by_sku
            .load_one(self.0.id)
            .await
            .map_err(|e| load_error(ctx, e))?
            .unwrap_or_default())
    }
}

#[Object]
impl Sku {
    async fn id(&self) -> ID {
        encode_id("Sku", self.0.id)
    }
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn options(&self) -> Vec<SkuOption> {
        self.0
            .options
            .iter()
            .map(|o| SkuOption {
                name: o.name.clone(),
                value: o.value.clone(),
            })
            .collect()
    }
    /// Physical SKUs only.
    async fn weight_grams(&self) -> Option<i32> {
        self.0.weight_grams
    }
    async fn product_id(&self) -> ID {
        encode_id("Product", self.0.product_id)
    }
    /// The price on `channel` when the SKU is listed there, otherwise (and without a channel)
    /// the base price. An unknown channel is treated as one without a listing.
    async fn price(&self, ctx: &Context<'_>, channel: Option<ID>) -> async_graphql::Result<Money> {
        let Some(channel) = channel else {
            return Ok(self.0.price.into());
        };
        let channel = uuid_or_nil("SalesChannel", &channel);
        // Listings loaded with the SKU are read in place (a page asks this of every SKU).
        Ok(match &self.0.listings {
            Some(ls) => price_on(&self.0, ls, channel),
            None => price_on(&self.0, &self.listings_of(ctx).await?, channel),
        }
        .into())
    }
    /// One per channel the SKU has a listing on.
    async fn listings(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Listing>> {
        Ok(self
            .listings_of(ctx)
            .await?
            .into_iter()
            .map(Listing)
            .collect())
    }
    /// Totals over all warehouses. INVENTORY_READ.
    async fn inventory(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<InventoryTotals>> {
        Ok(Some(InventoryTotals::over(&self.levels(ctx).await?)))
    }
    /// One level per warehouse the SKU has stock records in. INVENTORY_READ.
    async fn inventory_levels(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<Vec<InventoryLevel>>> {
        Ok(Some(
            self.levels(ctx)
                .await?
                .into_iter()
                .map(InventoryLevel)
                .collect(),
        ))
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.updated_at
    }
}

pub struct SalesChannel(pub svc::SalesChannel);

#[Object]
impl SalesChannel {
    async fn id(&self) -> ID {
        encode_id("SalesChannel", self.0.id)
    }
    #[graphql(name = "type")]
    async fn channel_type(&self) -> SalesChannelType {
        self.0.channel_type.into()
    }
    /// The shop's identity on its platform (mini-program app id, shop id).
    async fn shop_id(&self) -> &str {
        &self.0.shop_id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at
    }
}

/// A SKU as sold on one channel.
pub struct Listing(pub svc::Listing);

#[Object]
impl Listing {
    async fn sku_id(&self) -> ID {
        encode_id("Sku", self.0.sku_id)
    }
    async fn channel(&self) -> SalesChannel {
        SalesChannel(self.0.channel.clone())
    }
    async fn price(&self) -> Money {
        self.0.price.into()
    }
    /// The "was" price shown struck through; always above `price`.
    async fn compare_at_price(&self) -> Option<Money> {
        self.0.compare_at.map(Money::from)
    }
    /// Whether the SKU is on sale on the channel; unlisted SKUs sell at nothing there.
    async fn listed(&self) -> bool {
        self.0.listed
    }
    async fn platform_item_id(&self) -> Option<&str> {
        self.0.platform_item_id.as_deref()
    }
    async fn platform_sku_id(&self) -> Option<&str> {
        self.0.platform_sku_id.as_deref()
    }
    async fn updated_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.updated_at
    }
}

// ----------------------------------------------------------------- queries ---

#[derive(InputObject, Default)]
pub struct ProductFilter {
    /// Part of the title, case-insensitive; % and _ match themselves.
    pub search: Option<String>,
    /// Without a status, DRAFT and ACTIVE products are listed (not ARCHIVED).
    pub status: Option<ProductStatus>,
    pub kind: Option<ProductKind>,
    pub tag: Option<String>,
}

/// Stock fields (`inventory`, `inventoryLevels`) need INVENTORY_READ; both resolution paths
/// ask here.
fn may_read_stock(ctx: &Context<'_>) -> async_graphql::Result<()> {
    let (_, rctx) = authed(ctx)?;
    field(ctx, require(rctx, Permission::InventoryRead))
}

/// The price of `sku` on `channel` given its listings: the listing's price when listed there,
/// otherwise the base price.
fn price_on(sku: &svc::Sku, listings: &[svc::Listing], channel: Uuid) -> money::Money {
    let listing = listings
        .iter()
        .find(|l| l.channel.id == channel)
        .map(|l| (l.price, l.listed));
    rules::channel_price(sku.price, listing)
}

// --------------------------------------------------------- fields in place ---
// The products page resolves Product, Sku, Money and InventoryTotals in place (crate::inline);
// each answers exactly what its #[Object] resolver above answers, and Pending where that
// resolver would load something.

impl FieldsNow for Money {
    fn graphql_type(&self) -> &'static str {
        "Money"
    }
    fn field_now(&self, ctx: &Context<'_>, _: &mut Errors) -> Now {
        Ok(Ok(match ctx.item.node.name.node.as_str() {
            "amount" => Value::String(self.amount.clone()),
            "currency" => Value::String(self.currency.clone()),
            _ => return Err(Pending),
        }))
    }
}

impl FieldsNow for InventoryTotals {
    fn graphql_type(&self) -> &'static str {
        "InventoryTotals"
    }
    fn field_now(&self, ctx: &Context<'_>, _: &mut Errors) -> Now {
        Ok(Ok(Value::from(match ctx.item.node.name.node.as_str() {
            "onHand" => self.on_hand,
            "reserved" => self.reserved,
            "held" => self.held,
            "available" => self.available,
            _ => return Err(Pending),
        })))
    }
}

/// A SKU as the page holds it: borrowed, with its stock when that was fetched for the page.
struct SkuNow<'a> {
    sku: &'a svc::Sku,
    levels: Option<&'a [LevelView]>,
}

impl SkuNow<'_> {
    fn price(&self, ctx: &Context<'_>, errors: &mut Errors) -> Now {
        let channel = match ctx.param_value::<Option<ID>>("channel", None) {
            Ok((_, channel)) => channel,
            Err(e) => return Ok(Err(ctx.set_error_path(e))),
        };
        let price = match channel {
            None => self.sku.price,
            Some(channel) => {
                let listings = self.sku.listings.as_deref().ok_or(Pending)?;
                price_on(self.sku, listings, uuid_or_nil("SalesChannel", &channel))
            }
        };
        object_now(ctx, &Money::from(price), errors)
    }

    fn inventory(&self, ctx: &Context<'_>, errors: &mut Errors) -> Now {
        if let Err(e) = may_read_stock(ctx) {
            return reported(ctx, Err::<(), _>(e), |_| Value::Null);
        }
        let totals = InventoryTotals::over(self.levels.ok_or(Pending)?);
        object_now(ctx, &totals, errors)
    }
}

impl FieldsNow for SkuNow<'_> {
    fn graphql_type(&self) -> &'static str {
        "Sku"
    }
    fn field_now(&self, ctx: &Context<'_>, errors: &mut Errors) -> Now {
        let s = self.sku;
        Ok(Ok(match ctx.item.node.name.node.as_str() {
            "id" => Value::String(encode_id("Sku", s.id).0),
            "code" => Value::String(s.code.clone()),
            "name" => Value::String(s.name.clone()),
            "weightGrams" => s.weight_grams.map_or(Value::Null, Value::from),
            "productId" => Value::String(encode_id("Product", s.product_id).0),
            "createdAt" => s.created_at.to_value(),
            "updatedAt" => s.updated_at.to_value(),
            "price" => return self.price(ctx, errors),
            "inventory" => return self.inventory(ctx, errors),
            _ => return Err(Pending),
        }))
    }
}

impl FieldsNow for Sku {
    fn graphql_type(&self) -> &'static str {
        "Sku"
    }
    fn field_now(&self, ctx: &Context<'_>, errors: &mut Errors) -> Now {
        let now = SkuNow {
            sku: &self.0,
            levels: self.1.as_deref(),
        };
        now.field_now(ctx, errors)
    }
}

impl FieldsNow for Product {
    fn graphql_type(&self) -> &'static str {
        "Product"
    }
    fn field_now(&self, ctx: &Context<'_>, errors: &mut Errors) -> Now {
        let p = &self.0;
        let id = |kind, id| Value::String(encode_id(kind, id).0);
        Ok(Ok(match ctx.item.node.name.node.as_str() {
            "id" => id("Product", p.id),
            "title" => Value::String(p.title.clone()),
            "description" => Value::String(p.description.clone()),
            "kind" => enum_value(ProductKind::from(p.kind)),
            "status" => enum_value(ProductStatus::from(p.status)),
            "tags" => Value::List(p.tags.iter().cloned().map(Value::String).collect()),
            "courseId" => p.course_id.clone().map_or(Value::Null, Value::String),
            "membershipPlanId" => p
                .membership_plan_id
                .map_or(Value::Null, |m| id("MembershipPlan", m)),
            "createdAt" => p.created_at.to_value(),
            "updatedAt" => p.updated_at.to_value(),
            "skus" => {
                let skus = p.skus.as_deref().ok_or(Pending)?;
                let levels = self.1.as_deref();
                let items = skus.iter().map(|sku| SkuNow {
                    sku,
                    levels: levels.map(|m| m.get(&sku.id).map_or(&[][..], Vec::as_slice)),
                });
                return list_now(ctx, items, errors);
            }
            _ => return Err(Pending),
        }))
    }
}

#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    /// Products, newest first. CATALOG_READ.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        filter: Option<ProductFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Inlined<Product>>> {
        let (core, rctx) = authed(ctx)?;
        let page = field(ctx, page_args(first, after))?;
        let f = filter.unwrap_or_default();
        let filter = svc::ProductFilter {
            search: f.search,
            status: f.status.map(Into::into),
            kind: f.kind.map(Into::into),
            tag: f.tag,
        };
        let skus = ctx.look_ahead().field("edges").field("node").field("skus");
        let page = if skus.exists() {
            field(ctx, svc::products_with_skus(core, rctx, filter, page).await)?
        } else {
            field(ctx, svc::products(core, rctx, filter, page).await)?.map(Arc::new)
        };
        let page = uphub_services::page::Page {
            items: with_skus(ctx, page.items, skus).await?,
            has_next: page.has_next,
        };
        Ok(connection(page, |p| p.0.id, Inlined))
    }

    /// One product; another tenant's ID answers exactly like an unknown one. CATALOG_READ.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Product>> {
        let (core, rctx) = authed(ctx)?;
        match svc::product(core, rctx, uuid_or_nil("Product", &id)).await {
            Err(ServiceError::NotFound) => Ok(None),
            r => field(ctx, r).map(|p| Some(Product::new(p))),
        }
    }

    /// One SKU; another tenant's ID answers exactly like an unknown one. CATALOG_READ.
    async fn sku(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Sku>> {
        let (core, rctx) = authed(ctx)?;
        match svc::sku(core, rctx, uuid_or_nil("Sku", &id)).await {
            Err(ServiceError::NotFound) => Ok(None),
            r => field(ctx, r).map(|s| Some(Sku(s, None))),
        }
    }

    /// At most 200, oldest first. CATALOG_READ.
    async fn membership_plans(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<MembershipPlan>> {
        let (core, rctx) = authed(ctx)?;
        Ok(field(ctx, svc::membership_plans(core, rctx).await)?
            .into_iter()
            .map(MembershipPlan)
            .collect())
    }

    /// At most 50, oldest first. CATALOG_READ.
    async fn sales_channels(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SalesChannel>> {
        let (core, rctx) = authed(ctx)?;
        Ok(field(ctx, svc::sales_channels(core, rctx).await)?
            .into_iter()
            .map(SalesChannel)
            .collect())
    }
}

// --------------------------------------------------------------- mutations ---

#[derive(InputObject)]
pub struct SkuInput {
    /// Unique within the tenant: 1-64 of A-Z, a-z, 0-9, '-', '_', '.'.
    pub code: String,
    pub name: String,
    #[graphql(default)]
    pub options: Vec<SkuOption>,
    /// Required for PHYSICAL products, refused for the others.
    pub weight_grams: Option<i32>,
    pub price: MoneyInput,
}

impl From<SkuInput> for svc::SkuInput {
    fn from(s: SkuInput) -> Self {
        svc::SkuInput {
            code: s.code,
            name: s.name,
            options: s.options.into_iter().map(|o| (o.name, o.value)).collect(),
            weight_grams: s.weight_grams,
            price: s.price.into(),
        }
    }
}

#[derive(InputObject)]
pub struct ProductCreateInput {
    pub title: String,
    pub kind: ProductKind,
    /// DRAFT unless given.
    pub status: Option<ProductStatus>,
    pub description: Option<String>,
    #[graphql(default)]
    pub tags: Vec<String>,
    /// Required for COURSE products.
    pub course_id: Option<String>,
    /// Required for MEMBERSHIP products.
    pub membership_plan_id: Option<ID>,
    /// At most 100.
    #[graphql(default)]
    pub skus: Vec<SkuInput>,
}

#[derive(SimpleObject, Default)]
pub struct ProductCreatePayload {
    pub product: Option<Product>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct ProductUpdateInput {
    pub id: ID,
    pub title: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    /// ARCHIVED products come back as DRAFT before they can be ACTIVE again.
    pub status: Option<ProductStatus>,
}

#[derive(SimpleObject, Default)]
pub struct ProductUpdatePayload {
    pub product: Option<Product>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct ProductArchiveInput {
    pub id: ID,
}

#[derive(SimpleObject, Default)]
pub struct ProductArchivePayload {
    pub product: Option<Product>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct SkuCreateInput {
    pub product_id: ID,
    pub code: String,
    pub name: String,
    #[graphql(default)]
    pub options: Vec<SkuOption>,
    pub weight_grams: Option<i32>,
    pub price: MoneyInput,
}

#[derive(SimpleObject, Default)]
pub struct SkuCreatePayload {
    pub sku: Option<Sku>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct SkuUpdateInput {
    pub id: ID,
    pub code: Option<String>,
    pub name: Option<String>,
    pub options: Option<Vec<SkuOption>>,
    pub weight_grams: Option<i32>,
    pub price: Option<MoneyInput>,
}

#[derive(SimpleObject, Default)]
pub struct SkuUpdatePayload {
    pub sku: Option<Sku>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct MembershipPlanCreateInput {
    pub name: String,
    pub duration_days: i32,
}

#[derive(SimpleObject, Default)]
pub struct MembershipPlanCreatePayload {
    pub membership_plan: Option<MembershipPlan>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct SalesChannelCreateInput {
    #[graphql(name = "type")]
    pub channel_type: SalesChannelType,
    /// The shop's identity on its platform; unique per tenant and type.
    pub shop_id: String,
    pub name: String,
}

#[derive(SimpleObject, Default)]
pub struct SalesChannelCreatePayload {
    pub sales_channel: Option<SalesChannel>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct ListingUpsertInput {
    pub sku_id: ID,
    pub channel_id: ID,
    pub price: MoneyInput,
    /// Must be above `price`; null removes it.
    pub compare_at_price: Option<MoneyInput>,
    #[graphql(default = true)]
    pub listed: bool,
    pub platform_item_id: Option<String>,
    pub platform_sku_id: Option<String>,
}

#[derive(SimpleObject, Default)]
pub struct ListingUpsertPayload {
    pub listing: Option<Listing>,
    pub user_errors: Vec<UserError>,
}

#[derive(Default)]
pub struct CatalogMutation;

#[Object]
impl CatalogMutation {
    /// Creates a product with its SKUs, all or nothing. CATALOG_WRITE.
    async fn product_create(
        &self,
        ctx: &Context<'_>,
        input: ProductCreateInput,
    ) -> async_graphql::Result<ProductCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let input = svc::ProductCreateInput {
            title: input.title,
            kind: input.kind.into(),
            status: input.status.map(Into::into),
            description: input.description,
            tags: input.tags,
            course_id: input.course_id,
            membership_plan_id: input
                .membership_plan_id
                .map(|id| uuid_or_nil("MembershipPlan", &id)),
            skus: input.skus.into_iter().map(Into::into).collect(),
        };
        let (p, user_errors) = user_errors(ctx, svc::product_create(core, rctx, input).await)?;
        Ok(ProductCreatePayload {
            product: p.map(Product::new),
            user_errors,
        })
    }

    /// Changes title, description, tags or status. CATALOG_WRITE.
    async fn product_update(
        &self,
        ctx: &Context<'_>,
        input: ProductUpdateInput,
    ) -> async_graphql::Result<ProductUpdatePayload> {
        let (core, rctx) = authed(ctx)?;
        let patch = ProductPatch {
            title: input.title,
            description: input.description,
            tags: input.tags,
            status: input.status.map(Into::into),
        };
        let id = uuid_or_nil("Product", &input.id);
        let (p, user_errors) = user_errors(ctx, svc::product_update(core, rctx, id, patch).await)?;
        Ok(ProductUpdatePayload {
            product: p.map(Product::new),
            user_errors,
        })
    }

    /// Archives a product (idempotent). CATALOG_WRITE.
    async fn product_archive(
        &self,
        ctx: &Context<'_>,
        input: ProductArchiveInput,
    ) -> async_graphql::Result<ProductArchivePayload> {
        let (core, rctx) = authed(ctx)?;
        let id = uuid_or_nil("Product", &input.id);
        let (p, user_errors) = user_errors(ctx, svc::product_archive(core, rctx, id).await)?;
        Ok(ProductArchivePayload {
            product: p.map(Product::new),
            user_errors,
        })
    }

    /// Adds a SKU to a product. CATALOG_WRITE.
    async fn sku_create(
        &self,
        ctx: &Context<'_>,
        input: SkuCreateInput,
    ) -> async_graphql::Result<SkuCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let product = uuid_or_nil("Product", &input.product_id);
        let sku = SkuInput {
            code: input.code,
            name: input.name,
            options: input.options,
            weight_grams: input.weight_grams,
            price: input.price,
        };
        let (s, user_errors) =
            user_errors(ctx, svc::sku_create(core, rctx, product, sku.into()).await)?;
        Ok(SkuCreatePayload {
            sku: s.map(|s| Sku(s, None)),
            user_errors,
        })
    }

    /// Changes a SKU's code, name, options, weight or base price. CATALOG_WRITE.
    async fn sku_update(
        &self,
        ctx: &Context<'_>,
        input: SkuUpdateInput,
    ) -> async_graphql::Result<SkuUpdatePayload> {
        let (core, rctx) = authed(ctx)?;
        let id = uuid_or_nil("Sku", &input.id);
        let patch = SkuPatch {
            code: input.code,
            name: input.name,
            options: input
                .options
                .map(|o| o.into_iter().map(|o| (o.name, o.value)).collect()),
            weight_grams: input.weight_grams,
            price: input.price.map(Into::into),
        };
        let (s, user_errors) = user_errors(ctx, svc::sku_update(core, rctx, id, patch).await)?;
        Ok(SkuUpdatePayload {
            sku: s.map(|s| Sku(s, None)),
            user_errors,
        })
    }

    /// A plan MEMBERSHIP products grant. CATALOG_WRITE.
    async fn membership_plan_create(
        &self,
        ctx: &Context<'_>,
        input: MembershipPlanCreateInput,
    ) -> async_graphql::Result<MembershipPlanCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = svc::membership_plan_create(core, rctx, &input.name, input.duration_days).await;
        let (p, user_errors) = user_errors(ctx, r)?;
        Ok(MembershipPlanCreatePayload {
            membership_plan: p.map(MembershipPlan),
            user_errors,
        })
    }

    /// Registers a shop the tenant sells through. CATALOG_WRITE.
    async fn sales_channel_create(
        &self,
        ctx: &Context<'_>,
        input: SalesChannelCreateInput,
    ) -> async_graphql::Result<SalesChannelCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = svc::sales_channel_create(
            core,
            rctx,
            input.channel_type.into(),
            &input.shop_id,
            &input.name,
        )
        .await;
        let (c, user_errors) = user_errors(ctx, r)?;
        Ok(SalesChannelCreatePayload {
            sales_channel: c.map(SalesChannel),
            user_errors,
        })
    }

    /// Creates or replaces a SKU's listing on a channel. CATALOG_WRITE.
    async fn listing_upsert(
        &self,
        ctx: &Context<'_>,
        input: ListingUpsertInput,
    ) -> async_graphql::Result<ListingUpsertPayload> {
        let (core, rctx) = authed(ctx)?;
        let input = svc::ListingInput {
            sku_id: uuid_or_nil("Sku", &input.sku_id),
            channel_id: uuid_or_nil("SalesChannel", &input.channel_id),
            price: input.price.into(),
            compare_at_price: input.compare_at_price.map(Into::into),
            listed: input.listed,
            platform_item_id: input.platform_item_id,
            platform_sku_id: input.platform_sku_id,
        };
        let (l, user_errors) = user_errors(ctx, svc::listing_upsert(core, rctx, input).await)?;
        Ok(ListingUpsertPayload {
            listing: l.map(Listing),
            user_errors,
        })
    }
}
