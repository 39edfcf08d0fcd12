//! Warehouses, inventory levels and their ledger: reads, compare-and-set, adjustments, and
//! activation-code pools. Every change writes ledger rows, marks the SKU dirty for the debounced
//! `inventory.available_changed` event, and (after commit) tells Redis and live subscribers.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde::Serialize;
use serde_json::json;
use uphub_domain::identity::{InvalidInput, Permission, parse_display_name};
use uphub_domain::inventory::Movement;
use uphub_tenants::{RequestCtx, TenantTx};
use uuid::Uuid;

use crate::audit::require;
use crate::{Core, ServiceError, ServiceResult, stock_cache};

#[derive(Debug, Clone, Serialize)]
pub struct Warehouse {
    pub id: Uuid,
    pub code: String,
    pub name: String,
}

/// A level as clients see it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LevelView {
    pub sku_id: Uuid,
    pub warehouse_id: Uuid,
    pub on_hand: i32,
    pub reserved: i32,
    pub held: i32,
    pub available: i32,
}

impl LevelView {
    /// A level as stored; `available` follows from the three counts.
    pub fn new(sku_id: Uuid, warehouse_id: Uuid, on_hand: i32, reserved: i32, held: i32) -> Self {
        LevelView {
            sku_id,
            warehouse_id,
            on_hand,
            reserved,
            held,
            available: on_hand - reserved - held,
        }
    }
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

pub async fn warehouse_create(
    core: &Core,
    ctx: &RequestCtx,
    code: &str,
    name: &str,
) -> ServiceResult<Warehouse> {
    require(ctx, Permission::InventoryWrite)?;
    let code = code.trim().to_ascii_uppercase();
    if code.is_empty()
        || code.len() > 32
        || !code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(InvalidInput {
            field: "code",
            message: "must be 1-32 of A-Z, 0-9, '-' or '_'".into(),
        }
        .into());
    }
    let name = parse_display_name("name", name)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let id = Uuid::now_v7();
    let n = tx
        .execute_raw(stmt(
            "INSERT INTO warehouses (tenant_id, id, code, name) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, code) DO NOTHING",
            vec![ctx.tenant.0.into(), id.into(), code.clone().into(), name.clone().into()],
        ))
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ServiceError::conflict(
            "code",
            "a warehouse with this code exists",
        ));
    }
    tx.commit().await?;
    Ok(Warehouse { id, code, name })
}

pub async fn warehouses(core: &Core, ctx: &RequestCtx) -> ServiceResult<Vec<Warehouse>> {
    require(ctx, Permission::InventoryRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            "SELECT id, code, name FROM warehouses WHERE tenant_id = $1 ORDER BY code LIMIT 500",
            vec![ctx.tenant.0.into()],
        ))
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Warehouse {
                id: r.try_get("", "id")?,
                code: r.try_get("", "code")?,
                name: r.try_get("", "name")?,
            })
        })
        .collect()
}

pub async fn warehouse_exists(tx: &TenantTx, id: Uuid) -> ServiceResult<bool> {
    Ok(tx
        .query_one_raw(stmt(
            "SELECT 1 AS x FROM warehouses WHERE tenant_id = $1 AND id = $2",
            vec![tx.tenant().0.into(), id.into()],
        ))
        .await?
        .is_some())
}

pub async fn sku_kind(tx: &TenantTx, sku: Uuid) -> ServiceResult<Option<String>> {
    let row = tx
        .query_one_raw(stmt(
            "SELECT p.kind FROM skus s JOIN products p ON p.tenant_id = s.tenant_id AND p.id = s.product_id
             WHERE s.tenant_id = $1 AND s.id = $2",
            vec![tx.tenant().0.into(), sku.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get("", "kind")?),
        None => None,
    })
}

/// A level from a row with sku_id, warehouse_id, on_hand, reserved, held.
pub fn level_from(r: &sea_orm::QueryResult) -> Result<LevelView, sea_orm::DbErr> {
    Ok(LevelView::new(
        r.try_get("", "sku_id")?,
        r.try_get("", "warehouse_id")?,
        r.try_get("", "on_hand")?,
        r.try_get("", "reserved")?,
        r.try_get("", "held")?,
    ))
}

/// Levels of many SKUs in one statement (the dataloader behind `sku.inventory`).
pub async fn levels_for_skus(
    core: &Core,
    ctx: &RequestCtx,
    skus: &[Uuid],
) -> ServiceResult<HashMap<Uuid, Vec<LevelView>>> {
    use sea_orm::sqlx::Row;
    require(ctx, Permission::InventoryRead)?;
    // One round trip (scope and query in one message): this is behind every catalog page.
    let sql = format!(
        "SELECT sku_id, warehouse_id, on_hand, reserved, held FROM inventory_levels
         WHERE tenant_id = {} AND sku_id = ANY({}) ORDER BY sku_id, warehouse_id",
        crate::catalog::lit_uuid(ctx.tenant.0),
        crate::catalog::lit_uuids(skus)
    );
    let rows = uphub_tenants::tenant_read(&core.db, ctx.tenant, &sql).await?;
    let mut map: HashMap<Uuid, Vec<LevelView>> = HashMap::new();
    for r in &rows {
        let read = || -> Result<LevelView, sea_orm::sqlx::Error> {
            Ok(LevelView::new(
                r.try_get("sku_id")?,
                r.try_get("warehouse_id")?,
                r.try_get("on_hand")?,
                r.try_get("reserved")?,
                r.try_get("held")?,
            ))
        };
        let l = read()
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!("inventory level row: {e}")))?;
        map.entry(l.sku_id).or_default().push(l);
    }
    Ok(map)
}

pub async fn levels_in(
    tx: &TenantTx,
    skus: &[Uuid],
) -> ServiceResult<HashMap<Uuid, Vec<LevelView>>> {
    let rows = tx
        .query_all_raw(stmt(
            "SELECT sku_id, warehouse_id, on_hand, reserved, held FROM inventory_levels
             WHERE tenant_id = $1 AND sku_id = ANY($2) ORDER BY sku_id, warehouse_id",
            vec![tx.tenant().0.into(), skus.to_vec().into()],
        ))
        .await?;
    let mut map: HashMap<Uuid, Vec<LevelView>> = HashMap::new();
    for r in &rows {
        let l = level_from(r)?;
        map.entry(l.sku_id).or_default().push(l);
    }
    Ok(map)
}

/// Appends one ledger row for `m` and marks the SKU dirty (debounced channel push).
pub async fn ledger(
    tx: &TenantTx,
    ctx: &RequestCtx,
    sku: Uuid,
    warehouse: Uuid,
    m: Movement,
    reason: Option<&str>,
    owner: Option<(&str, &str)>,
) -> ServiceResult<()> {
    ledger_row(tx, ctx, sku, warehouse, m, reason, owner).await?;
    if m.deltas() != (0, 0, 0) && !matches!(m, Movement::Confirm(_)) {
        mark_dirty(tx, sku).await?;
    }
    Ok(())
}

/// Appends one ledger row only (callers that order their statements mark dirty themselves).
pub async fn ledger_row(
    tx: &TenantTx,
    ctx: &RequestCtx,
    sku: Uuid,
    warehouse: Uuid,
    m: Movement,
    reason: Option<&str>,
    owner: Option<(&str, &str)>,
) -> ServiceResult<()> {
    let (d_on_hand, d_reserved, d_held) = m.deltas();
    tx.execute_raw(stmt(
        "INSERT INTO inventory_ledger (tenant_id, id, sku_id, warehouse_id, kind, delta_on_hand, delta_reserved,
                                       delta_held, reason, owner_kind, owner_id, actor_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        vec![
            tx.tenant().0.into(),
            Uuid::now_v7().into(),
            sku.into(),
            warehouse.into(),
            m.name().into(),
            d_on_hand.into(),
            d_reserved.into(),
            d_held.into(),
            reason.map(str::to_string).into(),
            owner.map(|o| o.0.to_string()).into(),
            owner.map(|o| o.1.to_string()).into(),
            ctx.principal.actor_id().into(),
        ],
    ))
    .await?;
    Ok(())
}

pub async fn mark_dirty(tx: &TenantTx, sku: Uuid) -> ServiceResult<()> {
    tx.execute_raw(stmt(
        "INSERT INTO inventory_dirty (tenant_id, sku_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        vec![tx.tenant().0.into(), sku.into()],
    ))
    .await?;
    Ok(())
}

/// Creates the (empty) level of a SKU in a warehouse if it does not exist yet.
async fn ensure_level(tx: &TenantTx, sku: Uuid, warehouse: Uuid) -> ServiceResult<()> {
    tx.execute_raw(stmt(
        "INSERT INTO inventory_levels (tenant_id, sku_id, warehouse_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        vec![tx.tenant().0.into(), sku.into(), warehouse.into()],
    ))
    .await?;
    Ok(())
}

async fn level_for_update(
    tx: &TenantTx,
    sku: Uuid,
    warehouse: Uuid,
) -> ServiceResult<Option<LevelView>> {
    let row = tx
        .query_one_raw(stmt(
            "SELECT sku_id, warehouse_id, on_hand, reserved, held FROM inventory_levels
             WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3 FOR UPDATE",
            vec![tx.tenant().0.into(), sku.into(), warehouse.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => Some(level_from(&r)?),
        None => None,
    })
}

async fn check_sku_and_warehouse(tx: &TenantTx, sku: Uuid, warehouse: Uuid) -> ServiceResult<()> {
    if sku_kind(tx, sku).await?.is_none() {
        return Err(ServiceError::Invalid(InvalidInput {
            field: "skuId",
            message: "no such SKU".into(),
        }));
    }
    if !warehouse_exists(tx, warehouse).await? {
        return Err(ServiceError::Invalid(InvalidInput {
            field: "warehouseId",
            message: "no such warehouse".into(),
        }));
    }
    Ok(())
}

/// Compare-and-set of on-hand: applies only when the current value is `change_from` (a level
/// never set counts as 0); otherwise CONFLICT naming the current value.
pub async fn inventory_set(
    core: &Core,
    ctx: &RequestCtx,
    sku: Uuid,
    warehouse: Uuid,
    quantity: i32,
    change_from: i32,
) -> ServiceResult<LevelView> {
    require(ctx, Permission::InventoryWrite)?;
    if !(0..=10_000_000).contains(&quantity) {
        return Err(InvalidInput {
            field: "quantity",
            message: "must be between 0 and 10000000".into(),
        }
        .into());
    }
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    check_sku_and_warehouse(&tx, sku, warehouse).await?;
    ensure_level(&tx, sku, warehouse).await?;
    let current = level_for_update(&tx, sku, warehouse)
        .await?
        .ok_or(ServiceError::NotFound)?;
    if current.on_hand != change_from {
        return Err(ServiceError::conflict(
            "changeFrom",
            format!("on hand is {} now, not {change_from}", current.on_hand),
        ));
    }
    let delta = quantity - current.on_hand;
    let level = uphub_domain::inventory::Level {
        on_hand: current.on_hand,
        reserved: current.reserved,
        held: current.held,
    };
    if level.apply(Movement::Adjust(delta)).is_err() {
        return Err(ServiceError::conflict(
            "quantity",
            format!(
                "{} units are reserved or held",
                current.reserved + current.held
            ),
        ));
    }
    let view = apply_adjust(&tx, ctx, sku, warehouse, delta, "SET").await?;
    tx.commit().await?;
    stock_cache::after_change(core, ctx.tenant, &[(sku, warehouse, "w", delta)], &[view]).await;
    Ok(view)
}

async fn apply_adjust(
    tx: &TenantTx,
    ctx: &RequestCtx,
    sku: Uuid,
    warehouse: Uuid,
    delta: i32,
    reason: &str,
) -> ServiceResult<LevelView> {
    let row = tx
        .query_one_raw(stmt(
            "UPDATE inventory_levels SET on_hand = on_hand + $4, updated_at = now()
             WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3 AND on_hand + $4 - reserved - held >= 0
             RETURNING sku_id, warehouse_id, on_hand, reserved, held",
            vec![tx.tenant().0.into(), sku.into(), warehouse.into(), delta.into()],
        ))
        .await?
        .ok_or_else(|| ServiceError::conflict("delta", "the change would take stock below what is reserved or held"))?;
    ledger(
        tx,
        ctx,
        sku,
        warehouse,
        Movement::Adjust(delta),
        Some(reason),
        None,
    )
    .await?;
    Ok(level_from(&row)?)
}

/// Moves on-hand by a signed delta with a reason (receiving, counting, damage).
pub async fn inventory_adjust(
    core: &Core,
    ctx: &RequestCtx,
    sku: Uuid,
    warehouse: Uuid,
    delta: i32,
    reason: &str,
) -> ServiceResult<LevelView> {
    require(ctx, Permission::InventoryWrite)?;
    if delta == 0 || delta.abs() > 10_000_000 {
        return Err(InvalidInput {
            field: "delta",
            message: "must be non-zero and at most 10000000 in size".into(),
        }
        .into());
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(InvalidInput {
            field: "reason",
            message: "must be 1-200 characters".into(),
        }
        .into());
    }
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    check_sku_and_warehouse(&tx, sku, warehouse).await?;
    ensure_level(&tx, sku, warehouse).await?;
    let view = apply_adjust(&tx, ctx, sku, warehouse, delta, reason).await?;
    tx.commit().await?;
    stock_cache::after_change(core, ctx.tenant, &[(sku, warehouse, "w", delta)], &[view]).await;
    Ok(view)
}

/// The warehouse virtual goods are counted in, created on first use.
async fn virtual_warehouse(tx: &TenantTx) -> ServiceResult<Uuid> {
    tx.execute_raw(stmt(
        "INSERT INTO warehouses (tenant_id, id, code, name) VALUES ($1, $2, 'VIRTUAL', 'Virtual goods')
         ON CONFLICT (tenant_id, code) DO NOTHING",
        vec![tx.tenant().0.into(), Uuid::now_v7().into()],
    ))
    .await?;
    let row = tx
        .query_one_raw(stmt(
            "SELECT id FROM warehouses WHERE tenant_id = $1 AND code = 'VIRTUAL'",
            vec![tx.tenant().0.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    Ok(row.try_get("", "id")?)
}

/// Imports codes into an ACTIVATION_CODE SKU's pool: all or nothing. Duplicates inside the
/// import or against the pool are refused with the offending codes named.
pub async fn activation_codes_import(
    core: &Core,
    ctx: &RequestCtx,
    sku: Uuid,
    codes: &[String],
) -> ServiceResult<(usize, LevelView)> {
    require(ctx, Permission::CatalogWrite)?;
    let parsed = uphub_domain::inventory::parse_activation_codes(codes)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    match sku_kind(&tx, sku).await?.as_deref() {
        None => {
            return Err(ServiceError::Invalid(InvalidInput {
                field: "skuId",
                message: "no such SKU".into(),
            }));
        }
        Some("ACTIVATION_CODE") => {}
        Some(_) => {
            return Err(ServiceError::Invalid(InvalidInput {
                field: "skuId",
                message: "the SKU's product is not of kind ACTIVATION_CODE".into(),
            }));
        }
    }
    let existing = tx
        .query_all_raw(stmt(
            "SELECT code FROM activation_codes WHERE tenant_id = $1 AND sku_id = $2 AND code = ANY($3) LIMIT 20",
            vec![ctx.tenant.0.into(), sku.into(), parsed.clone().into()],
        ))
        .await?;
    if !existing.is_empty() {
        let dup: Vec<String> = existing
            .iter()
            .filter_map(|r| r.try_get::<String>("", "code").ok())
            .collect();
        return Err(ServiceError::conflict(
            "codes",
            format!("already in the pool: {}", dup.join(", ")),
        ));
    }
    let ids: Vec<Uuid> = parsed.iter().map(|_| Uuid::now_v7()).collect();
    tx.execute_raw(stmt(
        "INSERT INTO activation_codes (tenant_id, id, sku_id, code) SELECT $1, i, $2, c FROM unnest($3::uuid[], $4::text[]) AS x(i, c)",
        vec![ctx.tenant.0.into(), sku.into(), ids.into(), parsed.clone().into()],
    ))
    .await?;
    let warehouse = virtual_warehouse(&tx).await?;
    ensure_level(&tx, sku, warehouse).await?;
    let n = parsed.len() as i32;
    let view = apply_adjust(&tx, ctx, sku, warehouse, n, "ACTIVATION_CODES_IMPORTED").await?;
    crate::audit::record(
        core,
        &tx,
        ctx,
        "activation_codes.imported",
        Some(sku.to_string()),
        json!({"count": n}),
    )
    .await?;
    tx.commit().await?;
    stock_cache::after_change(core, ctx.tenant, &[(sku, warehouse, "w", n)], &[view]).await;
    Ok((parsed.len(), view))
}

/// The tenant's inventory for one SKU summed over warehouses.
pub fn total(levels: &[LevelView]) -> (i32, i32, i32, i32) {
    levels.iter().fold((0, 0, 0, 0), |(a, b, c, d), l| {
        (a + l.on_hand, b + l.reserved, c + l.held, d + l.available)
    })
}
