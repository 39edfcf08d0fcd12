//! Live-stream holds: stock set aside for one campaign until it expires or is released. Only
//! reservations tagged with that campaign draw from it; the rest returns to general stock.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use uphub_domain::identity::{InvalidInput, Permission};
use uphub_domain::inventory::{Movement, parse_quantity};
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

use crate::audit::require;
use crate::inventory::{ledger, level_from};
use crate::{Core, ServiceError, ServiceResult, stock_cache};

#[derive(Debug, Clone)]
pub struct Hold {
    pub id: Uuid,
    pub sku_id: Uuid,
    pub warehouse_id: Uuid,
    pub campaign: String,
    pub quantity: i32,
    pub remaining: i32,
    pub status: String,
    pub expires_at: DateTime<Utc>,
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn hold_from(r: &sea_orm::QueryResult) -> Result<Hold, sea_orm::DbErr> {
    Ok(Hold {
        id: r.try_get("", "id")?,
        sku_id: r.try_get("", "sku_id")?,
        warehouse_id: r.try_get("", "warehouse_id")?,
        campaign: r.try_get("", "campaign")?,
        quantity: r.try_get("", "quantity")?,
        remaining: r.try_get("", "remaining")?,
        status: r.try_get("", "status")?,
        expires_at: r
            .try_get::<DateTime<chrono::FixedOffset>>("", "expires_at")?
            .to_utc(),
    })
}

/// A campaign name: 1-64 of letters, digits, '-', '_' (it is part of a Redis field name).
pub fn parse_campaign(s: &str) -> Result<String, InvalidInput> {
    let s = s.trim();
    if s.is_empty()
        || s.chars().count() > 64
        || !s
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    {
        return Err(InvalidInput {
            field: "campaign",
            message: "must be 1-64 letters, digits, '-' or '_'".into(),
        });
    }
    Ok(s.to_string())
}

pub async fn create(
    core: &Core,
    ctx: &RequestCtx,
    sku: Uuid,
    warehouse: Uuid,
    quantity: i64,
    campaign: &str,
    expires_at: DateTime<Utc>,
) -> ServiceResult<Hold> {
    require(ctx, Permission::InventoryWrite)?;
    let quantity = parse_quantity("quantity", quantity)?;
    let campaign = parse_campaign(campaign)?;
    if expires_at <= core.now() {
        return Err(InvalidInput {
            field: "expiresAt",
            message: "must be in the future".into(),
        }
        .into());
    }
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let level = tx
        .query_one_raw(stmt(
            "UPDATE inventory_levels SET held = held + $4, updated_at = now()
             WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3 AND on_hand - reserved - held >= $4
             RETURNING sku_id, warehouse_id, on_hand, reserved, held",
            vec![ctx.tenant.0.into(), sku.into(), warehouse.into(), quantity.into()],
        ))
        .await?;
    let Some(level) = level else {
        // Distinguish "no such SKU/level" from "not enough": both leave nothing written.
        let exists = tx
            .query_one_raw(stmt(
                "SELECT on_hand - reserved - held AS a FROM inventory_levels WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3",
                vec![ctx.tenant.0.into(), sku.into(), warehouse.into()],
            ))
            .await?;
        return Err(match exists {
            None => ServiceError::Invalid(InvalidInput {
                field: "skuId",
                message: "no stock level for this SKU in this warehouse".into(),
            }),
            Some(r) => ServiceError::Invalid(InvalidInput {
                field: "quantity",
                message: format!("only {} available to hold", r.try_get::<i32>("", "a")?),
            }),
        });
    };
    let id = Uuid::now_v7();
    let row = tx
        .query_one_raw(stmt(
            "INSERT INTO stock_holds (tenant_id, id, sku_id, warehouse_id, campaign, quantity, remaining, status, expires_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $6, 'ACTIVE', $7, $8)
             RETURNING id, sku_id, warehouse_id, campaign, quantity, remaining, status, expires_at",
            vec![ctx.tenant.0.into(), id.into(), sku.into(), warehouse.into(), campaign.clone().into(), quantity.into(), expires_at.into(), ctx.principal.actor_id().into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    ledger(
        &tx,
        ctx,
        sku,
        warehouse,
        Movement::Hold(quantity),
        Some(&campaign),
        Some(("HOLD", &id.to_string())),
    )
    .await?;
    crate::audit::record(
        core,
        &tx,
        ctx,
        "stock_hold.created",
        Some(id.to_string()),
        json!({"campaign": campaign, "quantity": quantity}),
    )
    .await?;
    tx.commit().await?;
    let view = level_from(&level)?;
    move_in_cache(core, ctx.tenant, sku, warehouse, &campaign, quantity).await;
    stock_cache::publish_levels(core, ctx.tenant, &[view]).await;
    Ok(hold_from(&row)?)
}

/// Moves `q` units from general to the campaign's field (negative `q` moves them back).
async fn move_in_cache(
    core: &Core,
    tenant: TenantId,
    sku: Uuid,
    warehouse: Uuid,
    campaign: &str,
    q: i32,
) {
    let changes = [
        (stock_cache::general_field(warehouse), -q),
        (stock_cache::hold_field(campaign, warehouse), q),
    ];
    if let Err(e) = stock_cache::bump(core, tenant, sku, &changes).await {
        tracing::warn!(error = %e, "stock cache hold update failed; reconciler will repair");
    }
}

/// Ends a hold (released by staff, or expired): its remainder returns to general stock.
pub async fn end(core: &Core, ctx: &RequestCtx, id: Uuid, expired: bool) -> ServiceResult<Hold> {
    if !expired {
        require(ctx, Permission::InventoryWrite)?;
    }
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            "SELECT id, sku_id, warehouse_id, campaign, quantity, remaining, status, expires_at FROM stock_holds
             WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            vec![ctx.tenant.0.into(), id.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    let hold = hold_from(&row)?;
    if hold.status != "ACTIVE" {
        return Err(ServiceError::conflict(
            "id",
            format!("the hold is already {}", hold.status),
        ));
    }
    let status = if expired { "EXPIRED" } else { "RELEASED" };
    let row = tx
        .query_one_raw(stmt(
            "UPDATE stock_holds SET status = $3, remaining = 0 WHERE tenant_id = $1 AND id = $2
             RETURNING id, sku_id, warehouse_id, campaign, quantity, remaining, status, expires_at",
            vec![ctx.tenant.0.into(), id.into(), status.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    let level = tx
        .query_one_raw(stmt(
            "UPDATE inventory_levels SET held = held - $4, updated_at = now()
             WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3
             RETURNING sku_id, warehouse_id, on_hand, reserved, held",
            vec![
                ctx.tenant.0.into(),
                hold.sku_id.into(),
                hold.warehouse_id.into(),
                hold.remaining.into(),
            ],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    if hold.remaining > 0 {
        ledger(
            &tx,
            ctx,
            hold.sku_id,
            hold.warehouse_id,
            Movement::HoldRelease(hold.remaining),
            Some(status),
            Some(("HOLD", &id.to_string())),
        )
        .await?;
    }
    tx.commit().await?;
    move_in_cache(
        core,
        ctx.tenant,
        hold.sku_id,
        hold.warehouse_id,
        &hold.campaign,
        -hold.remaining,
    )
    .await;
    stock_cache::publish_levels(core, ctx.tenant, &[level_from(&level)?]).await;
    Ok(hold_from(&row)?)
}

pub async fn list_for_skus(
    core: &Core,
    ctx: &RequestCtx,
    skus: &[Uuid],
) -> ServiceResult<Vec<Hold>> {
    require(ctx, Permission::InventoryRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            "SELECT id, sku_id, warehouse_id, campaign, quantity, remaining, status, expires_at FROM stock_holds
             WHERE tenant_id = $1 AND sku_id = ANY($2) AND status = 'ACTIVE' ORDER BY expires_at LIMIT 500",
            vec![ctx.tenant.0.into(), skus.to_vec().into()],
        ))
        .await?;
    tx.commit().await?;
    rows.iter().map(|r| Ok(hold_from(r)?)).collect()
}

/// Expires overdue holds of every tenant; returns how many.
pub async fn sweep_expired(core: &Core, batch: u64) -> ServiceResult<usize> {
    let rows = core
        .db
        .query_all_raw(stmt(
            "SELECT tenant_id, id FROM stock_holds WHERE status = 'ACTIVE' AND expires_at < now() ORDER BY expires_at LIMIT $1",
            vec![(batch as i64).into()],
        ))
        .await?;
    let mut n = 0;
    for r in rows {
        let tenant: Uuid = r.try_get("", "tenant_id")?;
        let id: Uuid = r.try_get("", "id")?;
        let ctx = RequestCtx::system(TenantId(tenant), "hold-sweeper");
        match end(core, &ctx, id, true).await {
            Ok(_) => n += 1,
            Err(ServiceError::Conflict { .. }) | Err(ServiceError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Drains SKUs marked dirty for at least `debounce`: one `inventory.available_changed` outbox
/// event per SKU with its current availability, written in the same transaction as the drain.
pub async fn drain_dirty(core: &Core, debounce: std::time::Duration) -> ServiceResult<usize> {
    let rows = core
        .db
        .query_all_raw(stmt(
            "SELECT DISTINCT tenant_id FROM inventory_dirty WHERE since < now() - make_interval(secs => $1)",
            vec![debounce.as_secs_f64().into()],
        ))
        .await?;
    let mut n = 0;
    for r in rows {
        let tenant = TenantId(r.try_get("", "tenant_id")?);
        let tx = TenantTx::begin(&core.db, tenant).await?;
        let skus = tx
            .query_all_raw(stmt(
                "DELETE FROM inventory_dirty WHERE tenant_id = $1 AND since < now() - make_interval(secs => $2)
                 RETURNING sku_id",
                vec![tenant.0.into(), debounce.as_secs_f64().into()],
            ))
            .await?;
        let ids: Vec<Uuid> = skus
            .iter()
            .map(|r| r.try_get("", "sku_id"))
            .collect::<Result<_, _>>()?;
        let levels = crate::inventory::levels_in(&tx, &ids).await?;
        for sku in &ids {
            let per = levels.get(sku).cloned().unwrap_or_default();
            let available: i32 = per.iter().map(|l| l.available).sum();
            crate::outbox::enqueue(
                core,
                &tx,
                "inventory.available_changed",
                json!({"skuId": sku, "available": available, "levels": per}),
            )
            .await?;
            n += 1;
        }
        tx.commit().await?;
    }
    Ok(n)
}
