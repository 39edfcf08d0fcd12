//! The Redis side of the stock pool: one hash per tenant+SKU (one hash tag, so a SKU's script
//! runs on one cluster slot) with a field per warehouse (`w:<warehouse>` = units anyone may take)
//! and per active campaign hold (`h:<campaign>:<warehouse>` = units only that campaign may take).
//! Redis admits; Postgres decides. A stale hash can only over-admit (Postgres' guarded UPDATE
//! refuses the excess) or under-admit for a moment (the reconciler repairs it).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, Ordering};

use redis::Script;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use uphub_tenants::{TenantId, TenantTx};
use uuid::Uuid;

use crate::inventory::LevelView;
use crate::{Core, ServiceResult};

/// Sum of |Redis − Postgres| seen by the last reconciliation (exported as a metric).
pub static LAST_DRIFT: AtomicI64 = AtomicI64::new(0);

pub const LIVE_TOPIC: &str = "inventory";

pub fn key(core: &Core, tenant: TenantId, sku: Uuid) -> String {
    core.key(&format!("{tenant}:{sku}"), "stock")
}

pub fn general_field(warehouse: Uuid) -> String {
    format!("w:{warehouse}")
}

pub fn hold_field(campaign: &str, warehouse: Uuid) -> String {
    format!("h:{campaign}:{warehouse}")
}

/// Admission: returns 1 when taken from the hold field, 0 from general, -1 sold out, -2 cold
/// (hash absent: load it from Postgres and retry).
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
local q = tonumber(ARGV[1])
if ARGV[3] ~= '' then
  local h = tonumber(redis.call('HGET', KEYS[1], ARGV[3]) or '0')
  if h >= q then
    redis.call('HINCRBY', KEYS[1], ARGV[3], -q)
    return 1
  end
end
local g = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
if g >= q then
  redis.call('HINCRBY', KEYS[1], ARGV[2], -q)
  return 0
end
return -1
"#,
    )
});

/// Adds signed amounts to fields, only when the hash is loaded (a cold hash is rebuilt from
/// Postgres, which already has the change). ARGV: field, delta, field, delta, …
static BUMP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1]))
end
return 1
"#,
    )
});

/// Replaces the hash with Postgres' values. ARGV[1] = 1 to load only when absent (warm-up),
/// 0 to overwrite (reconcile). Returns the summed absolute drift it corrected.
static LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local only_if_absent = ARGV[1] == '1'
if only_if_absent and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local old = redis.call('HGETALL', KEYS[1])
local before = {}
for i = 1, #old, 2 do before[old[i]] = tonumber(old[i + 1]) end
local drift = 0
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_', '1')
for i = 2, #ARGV, 2 do
  local v = tonumber(ARGV[i + 1])
  redis.call('HSET', KEYS[1], ARGV[i], v)
  drift = drift + math.abs((before[ARGV[i]] or 0) - v)
  before[ARGV[i]] = nil
end
for f, v in pairs(before) do
  if f ~= '_' then drift = drift + math.abs(v) end
end
return drift
"#,
    )
});

/// The admission script (benchmarks run it raw with redis-benchmark).
pub fn admit_script() -> &'static Script {
    &ADMIT
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    FromHold,
    General,
    SoldOut,
    Cold,
}

pub async fn admit(
    core: &Core,
    tenant: TenantId,
    sku: Uuid,
    warehouse: Uuid,
    qty: i32,
    campaign: Option<&str>,
) -> redis::RedisResult<Admit> {
    let mut conn = core.redis.clone();
    let hold = campaign
        .map(|c| hold_field(c, warehouse))
        .unwrap_or_default();
    let r: i64 = ADMIT
        .key(key(core, tenant, sku))
        .arg(qty)
        .arg(general_field(warehouse))
        .arg(hold)
        .invoke_async(&mut conn)
        .await?;
    Ok(match r {
        1 => Admit::FromHold,
        0 => Admit::General,
        -1 => Admit::SoldOut,
        _ => Admit::Cold,
    })
}

/// Whether the cache knows a level of `sku` in `warehouse` (whatever its quantity): a sold-out
/// answer for a known level needs no further lookup.
pub async fn knows_level(
    core: &Core,
    tenant: TenantId,
    sku: Uuid,
    warehouse: Uuid,
) -> redis::RedisResult<bool> {
    let mut conn = core.redis.clone();
    redis::cmd("HEXISTS")
        .arg(key(core, tenant, sku))
        .arg(general_field(warehouse))
        .query_async(&mut conn)
        .await
}

/// Adds `delta` to fields of a loaded hash (compensation, releases, adjustments).
pub async fn bump(
    core: &Core,
    tenant: TenantId,
    sku: Uuid,
    changes: &[(String, i32)],
) -> redis::RedisResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut conn = core.redis.clone();
    let mut inv = BUMP.key(key(core, tenant, sku));
    for (f, d) in changes {
        inv.arg(f).arg(*d);
    }
    let _: i64 = inv.invoke_async(&mut conn).await?;
    Ok(())
}

/// Postgres' view of a SKU's hash: general availability per warehouse and hold remainders.
async fn snapshot(tx: &TenantTx, sku: Uuid) -> ServiceResult<Vec<(String, i64)>> {
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 'w:' || warehouse_id::text AS f, (on_hand - reserved - held)::bigint AS v
               FROM inventory_levels WHERE tenant_id = $1 AND sku_id = $2
             UNION ALL
             SELECT 'h:' || campaign || ':' || warehouse_id::text, sum(remaining)::bigint
               FROM stock_holds WHERE tenant_id = $1 AND sku_id = $2 AND status = 'ACTIVE' AND expires_at > now()
               GROUP BY campaign, warehouse_id",
            [tx.tenant().0.into(), sku.into()],
        ))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push((r.try_get("", "f")?, r.try_get("", "v")?));
    }
    Ok(out)
}

/// Loads (warm = only if absent) or overwrites (reconcile) one SKU's hash from Postgres.
pub async fn load_sku(
    core: &Core,
    tenant: TenantId,
    sku: Uuid,
    only_if_absent: bool,
) -> ServiceResult<i64> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let fields = snapshot(&tx, sku).await?;
    tx.commit().await?;
    let mut conn = core.redis.clone();
    let mut inv = LOAD.key(key(core, tenant, sku));
    inv.arg(if only_if_absent { 1 } else { 0 });
    for (f, v) in &fields {
        inv.arg(f).arg(*v);
    }
    Ok(inv.invoke_async(&mut conn).await?)
}

/// Rebuilds every SKU's hash of every tenant from Postgres; returns the drift corrected.
/// Runs at worker start, periodically, and on demand.
pub async fn reconcile_all(core: &Core) -> ServiceResult<i64> {
    // Which SKUs have stock state is a cross-tenant question: asked as the owner role.
    let rows = core
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT DISTINCT tenant_id, sku_id FROM inventory_levels",
        ))
        .await?;
    let mut drift = 0;
    for r in rows {
        let tenant: Uuid = r.try_get("", "tenant_id")?;
        let sku: Uuid = r.try_get("", "sku_id")?;
        drift += load_sku(core, TenantId(tenant), sku, false).await?;
    }
    LAST_DRIFT.store(drift, Ordering::Relaxed);
    Ok(drift)
}

/// After a committed change: apply `changes` (sku, warehouse, field kind, delta) to Redis and
/// push the new levels to live subscribers. Best effort: a failure leaves drift the reconciler
/// repairs, never an oversell.
pub async fn after_change(
    core: &Core,
    tenant: TenantId,
    changes: &[(Uuid, Uuid, &str, i32)],
    levels: &[LevelView],
) {
    for (sku, warehouse, kind, delta) in changes {
        let field = if *kind == "w" {
            general_field(*warehouse)
        } else {
            kind.to_string()
        };
        if let Err(e) = bump(core, tenant, *sku, &[(field, *delta)]).await {
            tracing::warn!(error = %e, %sku, "stock cache update failed; reconciler will repair");
        }
    }
    publish_levels(core, tenant, levels).await;
}

pub async fn publish_levels(core: &Core, tenant: TenantId, levels: &[LevelView]) {
    for l in levels {
        let payload = json!(l).to_string();
        if let Err(e) = crate::pubsub::publish(core, tenant, LIVE_TOPIC, &payload).await {
            tracing::warn!(error = %e, "live inventory publish failed");
        }
    }
}

/// On-demand rebuild of one tenant's hashes (the `inventoryReconcile` mutation).
pub async fn reconcile_tenant(core: &Core, ctx: &uphub_tenants::RequestCtx) -> ServiceResult<i64> {
    crate::audit::require(ctx, uphub_domain::identity::Permission::InventoryWrite)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT DISTINCT sku_id FROM inventory_levels WHERE tenant_id = $1",
            [ctx.tenant.0.into()],
        ))
        .await?;
    tx.commit().await?;
    let mut drift = 0;
    for r in rows {
        drift += load_sku(core, ctx.tenant, r.try_get("", "sku_id")?, false).await?;
    }
    Ok(drift)
}
