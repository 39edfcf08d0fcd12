//! Manual stock reservations: stock set aside for an order UpHub does not hold (a wholesale or
//! offline deal, an ERP's order waiting for its shipment) by staff or by an integration's API
//! key. Each is one reservation of the engine under owner kind MANUAL, named by the caller's
//! reference (unique per tenant): it draws from the same pool as every channel, expires by
//! itself, and ends released (stock back) or confirmed (stock shipped, on-hand drops).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uphub_domain::identity::{InvalidInput, Permission};
use uphub_domain::inventory::{parse_reservation_reference, parse_reservation_ttl};
use uphub_tenants::{RequestCtx, TenantTx};
use uuid::Uuid;

use crate::audit::require;
use crate::reservation::{self, Line, ReserveRequest};
use crate::{Core, ServiceError, ServiceResult, stock_cache};

const OWNER_KIND: &str = "MANUAL";

#[derive(Debug, Clone)]
pub struct StockReservation {
    pub id: Uuid,
    pub reference: String,
    /// ACTIVE, CONFIRMED, RELEASED or EXPIRED.
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub lines: Vec<Line>,
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Reserves every line or none. A reference used before → CONFLICT; a line the pool cannot
/// serve → SOLD_OUT; a SKU or warehouse this tenant does not have → VALIDATION, like an unknown
/// one (looked up only after a refusal, so the hot path stays one engine call).
pub async fn create(
    core: &Core,
    ctx: &RequestCtx,
    reference: &str,
    lines: Vec<Line>,
    ttl_secs: Option<i64>,
) -> ServiceResult<StockReservation> {
    require(ctx, Permission::InventoryWrite)?;
    let reference = parse_reservation_reference(reference)?;
    let ttl = parse_reservation_ttl(ttl_secs)?;
    let req = ReserveRequest {
        owner_kind: OWNER_KIND.into(),
        owner_id: reference.clone(),
        campaign: None,
        lines: lines.clone(),
        ttl,
    };
    match reservation::reserve(core, ctx, req).await {
        Ok(r) => Ok(StockReservation {
            id: r.id,
            reference,
            status: "ACTIVE".into(),
            expires_at: r.expires_at,
            lines: r.lines.into_iter().map(|(l, _)| l).collect(),
        }),
        Err(ServiceError::SoldOut { sku }) => {
            unknown_line(core, ctx, &lines).await?;
            Err(ServiceError::SoldOut { sku })
        }
        Err(ServiceError::Conflict { .. }) => Err(ServiceError::conflict(
            "reference",
            format!("a stock reservation named '{reference}' exists already"),
        )),
        Err(e) => Err(e),
    }
}

/// VALIDATION naming the first line whose SKU or warehouse the tenant does not have. Levels the
/// stock cache knows need no lookup, so a sold-out answer stays off Postgres.
async fn unknown_line(core: &Core, ctx: &RequestCtx, lines: &[Line]) -> ServiceResult<()> {
    let mut all_known = true;
    for l in lines {
        if !matches!(
            stock_cache::knows_level(core, ctx.tenant, l.sku, l.warehouse).await,
            Ok(true)
        ) {
            all_known = false;
            break;
        }
    }
    if all_known {
        return Ok(());
    }
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let skus: Vec<Uuid> = lines.iter().map(|l| l.sku).collect();
    let whs: Vec<Uuid> = lines.iter().map(|l| l.warehouse).collect();
    let row = tx
        .query_one_raw(stmt(
            "SELECT
               (SELECT count(DISTINCT s) FROM unnest($2::uuid[]) s
                 WHERE NOT EXISTS (SELECT 1 FROM skus k WHERE k.tenant_id = $1 AND k.id = s)) AS bad_skus,
               (SELECT count(DISTINCT w) FROM unnest($3::uuid[]) w
                 WHERE NOT EXISTS (SELECT 1 FROM warehouses h WHERE h.tenant_id = $1 AND h.id = w)) AS bad_whs",
            vec![ctx.tenant.0.into(), skus.into(), whs.into()],
        ))
        .await?;
    tx.commit().await?;
    let (bad_skus, bad_whs): (i64, i64) = match row {
        Some(r) => (r.try_get("", "bad_skus")?, r.try_get("", "bad_whs")?),
        None => (0, 0),
    };
    let field = if bad_skus > 0 {
        "skuId"
    } else if bad_whs > 0 {
        "warehouseId"
    } else {
        return Ok(());
    };
    Err(InvalidInput {
        field,
        message: "no such object".into(),
    }
    .into())
}

/// One manual reservation; another tenant's id or an order's reservation answers NOT_FOUND.
pub async fn get(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<StockReservation> {
    require(ctx, Permission::InventoryRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let r = load(&tx, id).await;
    tx.commit().await?;
    r
}

async fn load(tx: &TenantTx, id: Uuid) -> ServiceResult<StockReservation> {
    let rows = tx
        .query_all_raw(stmt(
            "SELECT r.owner_id, r.status, r.expires_at, l.sku_id, l.warehouse_id, l.quantity
             FROM reservations r
             LEFT JOIN reservation_lines l ON l.tenant_id = r.tenant_id AND l.reservation_id = r.id
             WHERE r.tenant_id = $1 AND r.id = $2 AND r.owner_kind = $3
             ORDER BY l.line_no",
            vec![tx.tenant().0.into(), id.into(), OWNER_KIND.into()],
        ))
        .await?;
    let first = rows.first().ok_or(ServiceError::NotFound)?;
    let mut out = StockReservation {
        id,
        reference: first.try_get("", "owner_id")?,
        status: first.try_get("", "status")?,
        expires_at: first
            .try_get::<DateTime<chrono::FixedOffset>>("", "expires_at")?
            .to_utc(),
        lines: Vec::with_capacity(rows.len()),
    };
    for r in &rows {
        if let Some(sku) = r.try_get::<Option<Uuid>>("", "sku_id")? {
            out.lines.push(Line {
                sku,
                warehouse: r.try_get("", "warehouse_id")?,
                quantity: r.try_get("", "quantity")?,
            });
        }
    }
    Ok(out)
}

/// The stock goes back to the pool now. Only an ACTIVE reservation; otherwise CONFLICT.
pub async fn release(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<StockReservation> {
    require(ctx, Permission::InventoryWrite)?;
    get(core, ctx, id).await?;
    reservation::release(core, ctx, id, false).await?;
    get(core, ctx, id).await
}

/// The stock left with the deal: reserved becomes sold and on-hand drops. Only an ACTIVE
/// reservation; otherwise CONFLICT.
pub async fn confirm(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<StockReservation> {
    require(ctx, Permission::InventoryWrite)?;
    get(core, ctx, id).await?;
    reservation::confirm(core, ctx, id).await?;
    get(core, ctx, id).await
}
