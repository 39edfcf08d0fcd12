//! Warehouses, stock levels, holds, activation-code pools and live stock.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject, Subscription};
use futures_util::{Stream, StreamExt};
use uphub_domain::identity::Permission;
use uphub_services::inventory::{self, LevelView};
use uphub_services::reservation::Line;
use uphub_services::stock_reservations as manual;
use uphub_services::{holds, stock_cache};

use crate::caller::{UserError, authed, decode_id, encode_id, field, user_errors};

pub struct Warehouse(pub inventory::Warehouse);

#[Object]
impl Warehouse {
    async fn id(&self) -> ID {
        encode_id("Warehouse", self.0.id)
    }
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
}

/// A reference to a warehouse by id (levels name their warehouse without loading it).
#[derive(SimpleObject)]
pub struct WarehouseRef {
    pub id: ID,
}

/// Stock of one SKU in one warehouse. available = onHand − reserved − held.
pub struct InventoryLevel(pub LevelView);

#[Object]
impl InventoryLevel {
    async fn sku_id(&self) -> ID {
        encode_id("Sku", self.0.sku_id)
    }
    async fn warehouse(&self) -> WarehouseRef {
        WarehouseRef {
            id: encode_id("Warehouse", self.0.warehouse_id),
        }
    }
    async fn on_hand(&self) -> i32 {
        self.0.on_hand
    }
    async fn reserved(&self) -> i32 {
        self.0.reserved
    }
    async fn held(&self) -> i32 {
        self.0.held
    }
    async fn available(&self) -> i32 {
        self.0.available
    }
}

pub struct StockHold(pub holds::Hold);

#[Object]
impl StockHold {
    async fn id(&self) -> ID {
        encode_id("StockHold", self.0.id)
    }
    async fn sku_id(&self) -> ID {
        encode_id("Sku", self.0.sku_id)
    }
    async fn warehouse(&self) -> WarehouseRef {
        WarehouseRef {
            id: encode_id("Warehouse", self.0.warehouse_id),
        }
    }
    async fn campaign(&self) -> &str {
        &self.0.campaign
    }
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    async fn remaining(&self) -> i32 {
        self.0.remaining
    }
    /// ACTIVE, RELEASED or EXPIRED.
    async fn status(&self) -> &str {
        &self.0.status
    }
    async fn expires_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.expires_at
    }
}

#[derive(Default)]
pub struct InventoryQuery;

#[Object]
impl InventoryQuery {
    /// The tenant's warehouses. INVENTORY_READ.
    async fn warehouses(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Warehouse>> {
        let (core, rctx) = authed(ctx)?;
        Ok(field(ctx, inventory::warehouses(core, rctx).await)?
            .into_iter()
            .map(Warehouse)
            .collect())
    }

    /// One manual stock reservation; another store's id answers like an unknown one. INVENTORY_READ.
    async fn stock_reservation(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<StockReservation>> {
        let (core, rctx) = authed(ctx)?;
        let id = decode_id("StockReservation", &id).unwrap_or(uuid::Uuid::nil());
        match manual::get(core, rctx, id).await {
            Err(uphub_services::ServiceError::NotFound) => Ok(None),
            r => field(ctx, r).map(|r| Some(StockReservation(r))),
        }
    }

    /// Active live-stream holds on these SKUs. INVENTORY_READ.
    async fn stock_holds(
        &self,
        ctx: &Context<'_>,
        sku_ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<StockHold>> {
        let (core, rctx) = authed(ctx)?;
        if sku_ids.len() > 100 {
            return field(
                ctx,
                Err(uphub_services::ServiceError::Invalid(
                    uphub_domain::identity::InvalidInput {
                        field: "skuIds",
                        message: "at most 100".into(),
                    },
                )),
            );
        }
        let ids: Vec<uuid::Uuid> = sku_ids
            .iter()
            .filter_map(|i| decode_id("Sku", i).ok())
            .collect();
        Ok(field(ctx, holds::list_for_skus(core, rctx, &ids).await)?
            .into_iter()
            .map(StockHold)
            .collect())
    }
}

#[derive(InputObject)]
pub struct WarehouseCreateInput {
    pub code: String,
    pub name: String,
}

#[derive(SimpleObject, Default)]
pub struct WarehouseCreatePayload {
    pub warehouse: Option<Warehouse>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct InventorySetInput {
    pub sku_id: ID,
    pub warehouse_id: ID,
    /// The new on-hand quantity.
    pub quantity: i32,
    /// The on-hand quantity you last saw; a level never set counts as 0.
    pub change_from: i32,
}

#[derive(SimpleObject, Default)]
pub struct InventorySetPayload {
    pub inventory_level: Option<InventoryLevel>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct InventoryAdjustInput {
    pub sku_id: ID,
    pub warehouse_id: ID,
    pub delta: i32,
    pub reason: String,
}

#[derive(SimpleObject, Default)]
pub struct InventoryAdjustPayload {
    pub inventory_level: Option<InventoryLevel>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct StockHoldCreateInput {
    pub sku_id: ID,
    pub warehouse_id: ID,
    pub quantity: i32,
    /// Orders tagged with this campaign draw from the hold.
    pub campaign: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(SimpleObject, Default)]
pub struct StockHoldCreatePayload {
    pub hold: Option<StockHold>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct StockHoldReleaseInput {
    pub id: ID,
}

#[derive(SimpleObject, Default)]
pub struct StockHoldReleasePayload {
    pub hold: Option<StockHold>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct ActivationCodesImportInput {
    pub sku_id: ID,
    pub codes: Vec<String>,
}

#[derive(SimpleObject, Default)]
pub struct ActivationCodesImportPayload {
    pub imported: i32,
    pub inventory_level: Option<InventoryLevel>,
    pub user_errors: Vec<UserError>,
}

#[derive(SimpleObject, Default)]
pub struct InventoryReconcilePayload {
    /// Units by which Redis differed from Postgres before the rebuild.
    pub drift: i64,
    pub user_errors: Vec<UserError>,
}

/// Stock set aside for an order UpHub does not hold (a wholesale or offline deal, an ERP's order),
/// by staff or an integration. It draws from the same pool as every channel and expires by itself
/// unless confirmed (the stock left) or released (it went back).
pub struct StockReservation(pub manual::StockReservation);

#[Object]
impl StockReservation {
    async fn id(&self) -> ID {
        encode_id("StockReservation", self.0.id)
    }
    /// The caller's name for it, unique per store (an order number, a PO).
    async fn reference(&self) -> &str {
        &self.0.reference
    }
    /// ACTIVE, CONFIRMED, RELEASED or EXPIRED.
    async fn status(&self) -> &str {
        &self.0.status
    }
    async fn expires_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.expires_at
    }
    async fn lines(&self) -> Vec<StockReservationLine> {
        self.0
            .lines
            .iter()
            .map(|l| StockReservationLine {
                sku_id: encode_id("Sku", l.sku),
                warehouse: WarehouseRef {
                    id: encode_id("Warehouse", l.warehouse),
                },
                quantity: l.quantity,
            })
            .collect()
    }
}

#[derive(SimpleObject)]
pub struct StockReservationLine {
    pub sku_id: ID,
    pub warehouse: WarehouseRef,
    pub quantity: i32,
}

#[derive(InputObject)]
pub struct StockLineInput {
    pub sku_id: ID,
    pub warehouse_id: ID,
    pub quantity: i32,
}

#[derive(InputObject)]
pub struct StockReservationCreateInput {
    /// Unique per store; a second reservation under the same reference → CONFLICT.
    pub reference: String,
    /// All reserved or none; 1-100 lines.
    pub lines: Vec<StockLineInput>,
    /// 60 s to 30 days; an hour when absent.
    pub ttl_seconds: Option<i32>,
}

#[derive(SimpleObject, Default)]
pub struct StockReservationCreatePayload {
    pub stock_reservation: Option<StockReservation>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct StockReservationEndInput {
    pub id: ID,
}

#[derive(SimpleObject, Default)]
pub struct StockReservationEndPayload {
    pub stock_reservation: Option<StockReservation>,
    pub user_errors: Vec<UserError>,
}

/// The lines as the engine takes them; their count and quantities are checked there
/// (`domain::inventory::normalize_lines`).
fn stock_lines(lines: &[StockLineInput]) -> Result<Vec<Line>, uphub_services::ServiceError> {
    lines
        .iter()
        .map(|l| {
            let (sku, warehouse) = ids(&l.sku_id, &l.warehouse_id)?;
            Ok(Line {
                sku,
                warehouse,
                quantity: l.quantity,
            })
        })
        .collect()
}

/// How a manual reservation ends.
#[derive(Clone, Copy)]
enum Ending {
    Release,
    Confirm,
}

async fn end_reservation(
    ctx: &Context<'_>,
    input: StockReservationEndInput,
    ending: Ending,
) -> async_graphql::Result<StockReservationEndPayload> {
    let (core, rctx) = authed(ctx)?;
    let id = decode_id("StockReservation", &input.id).unwrap_or(uuid::Uuid::nil());
    let r = match ending {
        Ending::Release => manual::release(core, rctx, id).await,
        Ending::Confirm => manual::confirm(core, rctx, id).await,
    };
    let (r, user_errors) = user_errors(ctx, r)?;
    Ok(StockReservationEndPayload {
        stock_reservation: r.map(StockReservation),
        user_errors,
    })
}

fn ids(sku: &ID, warehouse: &ID) -> Result<(uuid::Uuid, uuid::Uuid), uphub_services::ServiceError> {
    let bad = |f: &'static str| {
        uphub_services::ServiceError::Invalid(uphub_domain::identity::InvalidInput {
            field: f,
            message: "no such object".into(),
        })
    };
    Ok((
        decode_id("Sku", sku).map_err(|_| bad("skuId"))?,
        decode_id("Warehouse", warehouse).map_err(|_| bad("warehouseId"))?,
    ))
}

#[derive(Default)]
pub struct InventoryMutation;

#[Object]
impl InventoryMutation {
    /// INVENTORY_WRITE.
    async fn warehouse_create(
        &self,
        ctx: &Context<'_>,
        input: WarehouseCreateInput,
    ) -> async_graphql::Result<WarehouseCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let (w, user_errors) = user_errors(
            ctx,
            inventory::warehouse_create(core, rctx, &input.code, &input.name).await,
        )?;
        Ok(WarehouseCreatePayload {
            warehouse: w.map(Warehouse),
            user_errors,
        })
    }

    /// Compare-and-set of on-hand. A stale `changeFrom` → CONFLICT naming the current value. INVENTORY_WRITE.
    async fn inventory_set(
        &self,
        ctx: &Context<'_>,
        input: InventorySetInput,
    ) -> async_graphql::Result<InventorySetPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match ids(&input.sku_id, &input.warehouse_id) {
            Ok((s, w)) => {
                inventory::inventory_set(core, rctx, s, w, input.quantity, input.change_from).await
            }
            Err(e) => uphub_services::audit::require(rctx, Permission::InventoryWrite).and(Err(e)),
        };
        let (l, user_errors) = user_errors(ctx, r)?;
        Ok(InventorySetPayload {
            inventory_level: l.map(InventoryLevel),
            user_errors,
        })
    }

    /// Moves on-hand by a signed delta with a reason; never below what is reserved or held. INVENTORY_WRITE.
    async fn inventory_adjust(
        &self,
        ctx: &Context<'_>,
        input: InventoryAdjustInput,
    ) -> async_graphql::Result<InventoryAdjustPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match ids(&input.sku_id, &input.warehouse_id) {
            Ok((s, w)) => {
                inventory::inventory_adjust(core, rctx, s, w, input.delta, &input.reason).await
            }
            Err(e) => uphub_services::audit::require(rctx, Permission::InventoryWrite).and(Err(e)),
        };
        let (l, user_errors) = user_errors(ctx, r)?;
        Ok(InventoryAdjustPayload {
            inventory_level: l.map(InventoryLevel),
            user_errors,
        })
    }

    /// Reserves stock for an order UpHub does not hold: every line or none. SOLD_OUT when the
    /// pool cannot serve a line; CONFLICT for a reference used before. INVENTORY_WRITE.
    async fn stock_reservation_create(
        &self,
        ctx: &Context<'_>,
        input: StockReservationCreateInput,
    ) -> async_graphql::Result<StockReservationCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match stock_lines(&input.lines) {
            Ok(lines) => {
                manual::create(
                    core,
                    rctx,
                    &input.reference,
                    lines,
                    input.ttl_seconds.map(i64::from),
                )
                .await
            }
            Err(e) => uphub_services::audit::require(rctx, Permission::InventoryWrite).and(Err(e)),
        };
        let (r, user_errors) = user_errors(ctx, r)?;
        Ok(StockReservationCreatePayload {
            stock_reservation: r.map(StockReservation),
            user_errors,
        })
    }

    /// The reserved stock goes back to the pool. INVENTORY_WRITE.
    async fn stock_reservation_release(
        &self,
        ctx: &Context<'_>,
        input: StockReservationEndInput,
    ) -> async_graphql::Result<StockReservationEndPayload> {
        end_reservation(ctx, input, Ending::Release).await
    }

    /// The reserved stock left with the deal: reserved becomes sold, on-hand drops. INVENTORY_WRITE.
    async fn stock_reservation_confirm(
        &self,
        ctx: &Context<'_>,
        input: StockReservationEndInput,
    ) -> async_graphql::Result<StockReservationEndPayload> {
        end_reservation(ctx, input, Ending::Confirm).await
    }

    /// Sets stock aside for a live stream until `expiresAt`. INVENTORY_WRITE.
    async fn stock_hold_create(
        &self,
        ctx: &Context<'_>,
        input: StockHoldCreateInput,
    ) -> async_graphql::Result<StockHoldCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match ids(&input.sku_id, &input.warehouse_id) {
            Ok((s, w)) => {
                holds::create(
                    core,
                    rctx,
                    s,
                    w,
                    input.quantity as i64,
                    &input.campaign,
                    input.expires_at,
                )
                .await
            }
            Err(e) => uphub_services::audit::require(rctx, Permission::InventoryWrite).and(Err(e)),
        };
        let (h, user_errors) = user_errors(ctx, r)?;
        Ok(StockHoldCreatePayload {
            hold: h.map(StockHold),
            user_errors,
        })
    }

    /// Ends a hold now; its remainder returns to general stock. INVENTORY_WRITE.
    async fn stock_hold_release(
        &self,
        ctx: &Context<'_>,
        input: StockHoldReleaseInput,
    ) -> async_graphql::Result<StockHoldReleasePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("StockHold", &input.id) {
            Ok(id) => holds::end(core, rctx, id, false).await,
            Err(e) => uphub_services::audit::require(rctx, Permission::InventoryWrite).and(Err(e)),
        };
        let (h, user_errors) = user_errors(ctx, r)?;
        Ok(StockHoldReleasePayload {
            hold: h.map(StockHold),
            user_errors,
        })
    }

    /// Adds codes to an ACTIVATION_CODE SKU's pool, all or nothing. CATALOG_WRITE.
    async fn activation_codes_import(
        &self,
        ctx: &Context<'_>,
        input: ActivationCodesImportInput,
    ) -> async_graphql::Result<ActivationCodesImportPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("Sku", &input.sku_id) {
            Ok(id) => inventory::activation_codes_import(core, rctx, id, &input.codes).await,
            Err(_) => uphub_services::audit::require(rctx, Permission::CatalogWrite).and(Err(
                uphub_services::ServiceError::Invalid(uphub_domain::identity::InvalidInput {
                    field: "skuId",
                    message: "no such SKU".into(),
                }),
            )),
        };
        let (r, user_errors) = user_errors(ctx, r)?;
        Ok(match r {
            Some((n, level)) => ActivationCodesImportPayload {
                imported: n as i32,
                inventory_level: Some(InventoryLevel(level)),
                user_errors,
            },
            None => ActivationCodesImportPayload {
                user_errors,
                ..Default::default()
            },
        })
    }

    /// Rebuilds the Redis stock cache of the caller's tenant from Postgres. INVENTORY_WRITE.
    async fn inventory_reconcile(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<InventoryReconcilePayload> {
        let (core, rctx) = authed(ctx)?;
        let (d, user_errors) = user_errors(ctx, stock_cache::reconcile_tenant(core, rctx).await)?;
        Ok(InventoryReconcilePayload {
            drift: d.unwrap_or(0),
            user_errors,
        })
    }
}

#[derive(Default)]
pub struct InventorySubscription;

#[Subscription]
impl InventorySubscription {
    /// Available quantities of these SKUs, pushed on every change (all gateway processes, this
    /// tenant only). INVENTORY_READ.
    async fn inventory_changed(
        &self,
        ctx: &Context<'_>,
        sku_ids: Vec<ID>,
    ) -> async_graphql::Result<impl Stream<Item = InventoryLevel> + use<>> {
        let (core, rctx) = authed(ctx)?;
        field(
            ctx,
            uphub_services::audit::require(rctx, Permission::InventoryRead),
        )?;
        let wanted: std::collections::HashSet<uuid::Uuid> = sku_ids
            .iter()
            .take(200)
            .filter_map(|i| decode_id("Sku", i).ok())
            .collect();
        let channel = core.live_channel(rctx.tenant, stock_cache::LIVE_TOPIC);
        Ok(core.hub.subscribe(channel).filter_map(move |payload| {
            let level = serde_json::from_str::<serde_json::Value>(&payload)
                .ok()
                .and_then(|v| {
                    Some(LevelView {
                        sku_id: uuid::Uuid::try_parse(v["skuId"].as_str()?).ok()?,
                        warehouse_id: uuid::Uuid::try_parse(v["warehouseId"].as_str()?).ok()?,
                        on_hand: v["onHand"].as_i64()? as i32,
                        reserved: v["reserved"].as_i64()? as i32,
                        held: v["held"].as_i64()? as i32,
                        available: v["available"].as_i64()? as i32,
                    })
                });
            let keep = level
                .filter(|l| wanted.contains(&l.sku_id))
                .map(InventoryLevel);
            async move { keep }
        }))
    }
}
