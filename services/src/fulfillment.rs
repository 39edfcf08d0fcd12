//! Fulfilments: what leaves one warehouse in one parcel. A paid order's lines are split by
//! warehouse, by virtual vs physical goods and by pre-sale date; unshipped orders of the same
//! receiver (blind index of name + phone + address, or the platform buyer id) shipping from the
//! same warehouse merge into one fulfilment — automatically or as a suggestion, per tenant.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use uphub_domain::identity::{InvalidInput, Permission};
use uphub_domain::order::{OrderStatus, split_groups};
use uphub_tenants::{RequestCtx, TenantTx};
use uuid::Uuid;

use crate::audit::require;
use crate::orders::{actor, insert_events};
use crate::{Core, ServiceError, ServiceResult};

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMode {
    Off,
    Suggest,
    Auto,
}

impl MergeMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            MergeMode::Off => "OFF",
            MergeMode::Suggest => "SUGGEST",
            MergeMode::Auto => "AUTO",
        }
    }

    pub fn parse(s: &str) -> Option<MergeMode> {
        [MergeMode::Off, MergeMode::Suggest, MergeMode::Auto]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// Open fulfilments that could merge share this: (receiver key, warehouse, ships on).
type MergeKey = (Vec<u8>, Option<Uuid>, Option<NaiveDate>);

pub async fn merge_mode(tx: &TenantTx) -> ServiceResult<MergeMode> {
    Ok(tx
        .query_one_raw(stmt(
            "SELECT merge_mode FROM tenant_settings WHERE tenant_id = $1",
            vec![tx.tenant().0.into()],
        ))
        .await?
        .map(|r| r.try_get::<String>("", "merge_mode"))
        .transpose()?
        .and_then(|m| MergeMode::parse(&m))
        .unwrap_or(MergeMode::Suggest))
}

pub async fn set_merge_mode(core: &Core, ctx: &RequestCtx, mode: MergeMode) -> ServiceResult<()> {
    require(ctx, Permission::ChannelManage)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    tx.execute_raw(stmt(
        "INSERT INTO tenant_settings (tenant_id, merge_mode) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET merge_mode = EXCLUDED.merge_mode, updated_at = now()",
        vec![ctx.tenant.0.into(), mode.as_str().into()],
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Brings an order's fulfilments in line with its status (inside the caller's transaction).
pub async fn sync_order(
    core: &Core,
    tx: &TenantTx,
    order: Uuid,
    status: OrderStatus,
) -> ServiceResult<()> {
    let t = tx.tenant().0;
    if status == OrderStatus::Cancelled {
        tx.execute_raw(stmt(
            "WITH freed AS (
               UPDATE order_lines SET fulfillment_id = NULL
               WHERE tenant_id = $1 AND order_id = $2 AND fulfillment_id IS NOT NULL
               RETURNING fulfillment_id)
             UPDATE fulfillments f SET status = 'CANCELLED', updated_at = now()
             WHERE f.tenant_id = $1 AND f.id IN (SELECT fulfillment_id FROM freed) AND f.status = 'OPEN'
               AND NOT EXISTS (SELECT 1 FROM order_lines l WHERE l.tenant_id = $1
                               AND l.fulfillment_id = f.id AND l.order_id <> $2)",
            vec![t.into(), order.into()],
        ))
        .await?;
        return Ok(());
    }
    if status.shipped() {
        tx.execute_raw(stmt(
            "UPDATE fulfillments f SET status = 'SHIPPED', updated_at = now()
             WHERE f.tenant_id = $1 AND f.status = 'OPEN'
               AND f.id IN (SELECT fulfillment_id FROM order_lines WHERE tenant_id = $1 AND order_id = $2)
               AND NOT EXISTS (SELECT 1 FROM order_lines l JOIN orders o
                                 ON o.tenant_id = l.tenant_id AND o.id = l.order_id
                               WHERE l.tenant_id = $1 AND l.fulfillment_id = f.id
                                 AND o.status IN ('PAID', 'PROCESSING'))",
            vec![t.into(), order.into()],
        ))
        .await?;
        return Ok(());
    }
    if !status.unshipped() {
        return Ok(());
    }
    let rows = tx
        .query_all_raw(stmt(
            "SELECT l.id, l.warehouse_id, p.kind <> 'PHYSICAL' AS virtual_goods, s.presale_ships_on
             FROM order_lines l
             JOIN skus s ON s.tenant_id = l.tenant_id AND s.id = l.sku_id
             JOIN products p ON p.tenant_id = s.tenant_id AND p.id = s.product_id
             WHERE l.tenant_id = $1 AND l.order_id = $2 AND l.fulfillment_id IS NULL
               AND l.warehouse_id IS NOT NULL AND l.after_sales <> 'REFUNDED'
             ORDER BY l.line_no",
            vec![t.into(), order.into()],
        ))
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let lines = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid>("", "id")?,
                r.try_get::<Uuid>("", "warehouse_id")?,
                r.try_get::<bool>("", "virtual_goods")?,
                r.try_get::<Option<NaiveDate>>("", "presale_ships_on")?,
            ))
        })
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()?;
    let key = receiver_key(core, tx, order).await?;
    let mode = merge_mode(tx).await?;
    if mode == MergeMode::Auto {
        // Orders settle side by side: one receiver's orders must find each other's fulfilment.
        tx.execute_raw(stmt(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 11))",
            vec![format!("fulfil:{t}").into()],
        ))
        .await?;
    }
    let mut events = Vec::new();
    for ((wh, virtual_goods, ships_on), ids) in split_groups(&lines) {
        let kind = if virtual_goods { "VIRTUAL" } else { "PHYSICAL" };
        let existing = if mode == MergeMode::Auto && !virtual_goods && key.is_some() {
            tx.query_one_raw(stmt(
                "SELECT id FROM fulfillments WHERE tenant_id = $1 AND status = 'OPEN' AND kind = 'PHYSICAL'
                   AND receiver_key = $2 AND warehouse_id = $3 AND ships_on IS NOT DISTINCT FROM $4
                 ORDER BY created_at LIMIT 1 FOR UPDATE",
                vec![t.into(), key.clone().into(), wh.into(), ships_on.into()],
            ))
            .await?
            .map(|r| r.try_get::<Uuid>("", "id"))
            .transpose()?
        } else {
            None
        };
        let fid = match existing {
            Some(f) => {
                tx.execute_raw(stmt(
                    "UPDATE fulfillments SET merged = true, updated_at = now() WHERE tenant_id = $1 AND id = $2",
                    vec![t.into(), f.into()],
                ))
                .await?;
                events.push(
                    json!({"id": Uuid::now_v7(), "order_id": order, "kind": "MERGED",
                                   "detail": {"fulfillment": f, "automatic": true}}),
                );
                f
            }
            None => {
                let f = Uuid::now_v7();
                tx.execute_raw(stmt(
                    "INSERT INTO fulfillments (tenant_id, id, warehouse_id, receiver_key, kind, ships_on)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    vec![
                        t.into(),
                        f.into(),
                        wh.into(),
                        key.clone().into(),
                        kind.into(),
                        ships_on.into(),
                    ],
                ))
                .await?;
                f
            }
        };
        tx.execute_raw(stmt(
            "UPDATE order_lines SET fulfillment_id = $3 WHERE tenant_id = $1 AND id = ANY($2)",
            vec![t.into(), ids.into(), fid.into()],
        ))
        .await?;
    }
    insert_events(tx, events).await
}

/// [`sync_order`] for many unshipped orders in one transaction. Without automatic merging (the
/// default) no order looks for another's fulfilment, so the whole batch takes three statements:
/// read the lines and merge keys, insert the fulfilments, point the lines at them.
pub async fn sync_unshipped_orders(
    core: &Core,
    tx: &TenantTx,
    orders: &[(Uuid, OrderStatus)],
) -> ServiceResult<()> {
    if orders.is_empty() {
        return Ok(());
    }
    if orders.iter().any(|(_, s)| !s.unshipped()) || merge_mode(tx).await? == MergeMode::Auto {
        for (order, status) in orders {
            sync_order(core, tx, *order, *status).await?;
        }
        return Ok(());
    }
    let t = tx.tenant().0;
    let ids: Vec<Uuid> = orders.iter().map(|(o, _)| *o).collect();
    let rows = tx
        .query_all_raw(stmt(
            "SELECT l.order_id, l.id, l.warehouse_id, p.kind <> 'PHYSICAL' AS virtual_goods,
                    s.presale_ships_on, o.receiver_key, o.buyer_open_id
             FROM order_lines l
             JOIN orders o ON o.tenant_id = l.tenant_id AND o.id = l.order_id
             JOIN skus s ON s.tenant_id = l.tenant_id AND s.id = l.sku_id
             JOIN products p ON p.tenant_id = s.tenant_id AND p.id = s.product_id
             WHERE l.tenant_id = $1 AND l.order_id = ANY($2) AND l.fulfillment_id IS NULL
               AND l.warehouse_id IS NOT NULL AND l.after_sales <> 'REFUNDED'
             ORDER BY l.order_id, l.line_no",
            vec![t.into(), ids.into()],
        ))
        .await?;
    type Lines = Vec<(Uuid, Uuid, bool, Option<NaiveDate>)>;
    let mut by_order: BTreeMap<Uuid, (Option<Vec<u8>>, Lines)> = BTreeMap::new();
    let mut dek = None;
    for r in &rows {
        let order: Uuid = r.try_get("", "order_id")?;
        let entry = match by_order.entry(order) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let key = match (
                    r.try_get::<Option<Vec<u8>>>("", "receiver_key")?,
                    r.try_get::<Option<String>>("", "buyer_open_id")?,
                ) {
                    (Some(k), _) => Some(k),
                    (None, Some(b)) => {
                        if dek.is_none() {
                            dek = Some(crate::pii::data_key(core, tx).await?);
                        }
                        dek.as_ref().map(|d| d.blind_index("buyer", &b))
                    }
                    (None, None) => None,
                };
                e.insert((key, Vec::new()))
            }
        };
        entry.1.push((
            r.try_get("", "id")?,
            r.try_get("", "warehouse_id")?,
            r.try_get("", "virtual_goods")?,
            r.try_get("", "presale_ships_on")?,
        ));
    }
    let mut fulfilments = Vec::new();
    let (mut line_ids, mut line_fids) = (Vec::new(), Vec::new());
    for (key, lines) in by_order.values() {
        for ((wh, virtual_goods, ships_on), group) in split_groups(lines) {
            let f = Uuid::now_v7();
            fulfilments.push(json!({
                "id": f, "wh": wh, "key": key.as_ref().map(hex::encode),
                "kind": if virtual_goods { "VIRTUAL" } else { "PHYSICAL" }, "ships_on": ships_on,
            }));
            for l in group {
                line_ids.push(l);
                line_fids.push(f);
            }
        }
    }
    if fulfilments.is_empty() {
        return Ok(());
    }
    tx.execute_raw(stmt(
        "WITH f AS (
           INSERT INTO fulfillments (tenant_id, id, warehouse_id, receiver_key, kind, ships_on)
           SELECT $1, x.id, x.wh, decode(x.key, 'hex'), x.kind, x.ships_on
           FROM jsonb_to_recordset($2::jsonb) AS x(id uuid, wh uuid, key text, kind text, ships_on date)
           RETURNING id)
         UPDATE order_lines l SET fulfillment_id = x.f
         FROM unnest($3::uuid[], $4::uuid[]) AS x(id, f)
         WHERE l.tenant_id = $1 AND l.id = x.id AND x.f IN (SELECT id FROM f)",
        vec![
            t.into(),
            serde_json::Value::Array(fulfilments).into(),
            line_ids.into(),
            line_fids.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The order's merge key: the receiver's blind index, else one over the platform buyer id.
async fn receiver_key(core: &Core, tx: &TenantTx, order: Uuid) -> ServiceResult<Option<Vec<u8>>> {
    let row = tx
        .query_one_raw(stmt(
            "SELECT receiver_key, buyer_open_id FROM orders WHERE tenant_id = $1 AND id = $2",
            vec![tx.tenant().0.into(), order.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    if let Some(k) = row.try_get::<Option<Vec<u8>>>("", "receiver_key")? {
        return Ok(Some(k));
    }
    match row.try_get::<Option<String>>("", "buyer_open_id")? {
        Some(b) => {
            let dek = crate::pii::data_key(core, tx).await?;
            Ok(Some(dek.blind_index("buyer", &b)))
        }
        None => Ok(None),
    }
}

#[derive(Debug, Clone)]
pub struct FulfillmentView {
    pub id: Uuid,
    pub warehouse_id: Option<Uuid>,
    pub kind: String,
    pub ships_on: Option<NaiveDate>,
    pub status: String,
    pub merged: bool,
    pub order_ids: Vec<Uuid>,
    pub carrier: Option<String>,
    pub tracking_no: Option<String>,
    pub shipped_at: Option<chrono::DateTime<chrono::Utc>>,
}

const FULFILLMENT_SQL: &str = "SELECT f.id, f.warehouse_id, f.kind, f.ships_on, f.status, f.merged,
      f.carrier, f.tracking_no, f.shipped_at,
      ARRAY(SELECT DISTINCT l.order_id FROM order_lines l
            WHERE l.tenant_id = f.tenant_id AND l.fulfillment_id = f.id) AS order_ids
    FROM fulfillments f WHERE f.tenant_id = $1";

fn view_from(r: &sea_orm::QueryResult) -> Result<FulfillmentView, sea_orm::DbErr> {
    Ok(FulfillmentView {
        id: r.try_get("", "id")?,
        warehouse_id: r.try_get("", "warehouse_id")?,
        kind: r.try_get("", "kind")?,
        ships_on: r.try_get("", "ships_on")?,
        status: r.try_get("", "status")?,
        merged: r.try_get("", "merged")?,
        order_ids: r.try_get("", "order_ids")?,
        carrier: r.try_get("", "carrier")?,
        tracking_no: r.try_get("", "tracking_no")?,
        shipped_at: r.try_get("", "shipped_at")?,
    })
}

pub async fn fulfillments(
    core: &Core,
    ctx: &RequestCtx,
    ids: &[Uuid],
) -> ServiceResult<Vec<FulfillmentView>> {
    require(ctx, Permission::OrderRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            &format!("{FULFILLMENT_SQL} AND f.id = ANY($2) ORDER BY f.id"),
            vec![ctx.tenant.0.into(), ids.to_vec().into()],
        ))
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(view_from).collect::<Result<_, _>>()?)
}

/// Open physical fulfilments of the same receiver and warehouse (and pre-sale date) that could
/// ship as one parcel.
pub async fn suggestions(
    core: &Core,
    ctx: &RequestCtx,
) -> ServiceResult<Vec<Vec<FulfillmentView>>> {
    require(ctx, Permission::OrderRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            &format!(
                "{FULFILLMENT_SQL} AND f.status = 'OPEN' AND f.kind = 'PHYSICAL' AND f.receiver_key IS NOT NULL
                 AND EXISTS (SELECT 1 FROM fulfillments g WHERE g.tenant_id = f.tenant_id AND g.id <> f.id
                   AND g.status = 'OPEN' AND g.kind = 'PHYSICAL' AND g.receiver_key = f.receiver_key
                   AND g.warehouse_id = f.warehouse_id AND g.ships_on IS NOT DISTINCT FROM f.ships_on)
                 ORDER BY f.receiver_key, f.warehouse_id, f.ships_on, f.id LIMIT 500"
            ),
            vec![ctx.tenant.0.into()],
        ))
        .await?;
    let keys = tx
        .query_all_raw(stmt(
            "SELECT id, receiver_key, warehouse_id, ships_on FROM fulfillments
             WHERE tenant_id = $1 AND id = ANY($2)",
            vec![
                ctx.tenant.0.into(),
                rows.iter()
                    .map(|r| r.try_get::<Uuid>("", "id"))
                    .collect::<Result<Vec<_>, _>>()?
                    .into(),
            ],
        ))
        .await?;
    tx.commit().await?;
    let mut key_of = std::collections::HashMap::new();
    for k in &keys {
        key_of.insert(
            k.try_get::<Uuid>("", "id")?,
            (
                k.try_get::<Vec<u8>>("", "receiver_key")?,
                k.try_get::<Option<Uuid>>("", "warehouse_id")?,
                k.try_get::<Option<NaiveDate>>("", "ships_on")?,
            ),
        );
    }
    let mut groups: BTreeMap<MergeKey, Vec<FulfillmentView>> = BTreeMap::new();
    for r in &rows {
        let v = view_from(r)?;
        if let Some(k) = key_of.get(&v.id) {
            groups.entry(k.clone()).or_default().push(v);
        }
    }
    Ok(groups.into_values().filter(|g| g.len() > 1).collect())
}

/// Merges the open fulfilments of `orders` into one. All must share receiver, warehouse, kind
/// and pre-sale date, and none may have shipped.
pub async fn orders_merge(
    core: &Core,
    ctx: &RequestCtx,
    orders: &[Uuid],
) -> ServiceResult<FulfillmentView> {
    require(ctx, Permission::FulfillmentWrite)?;
    if orders.len() < 2 || orders.len() > 50 {
        return Err(InvalidInput {
            field: "orderIds",
            message: "give 2-50 orders".into(),
        }
        .into());
    }
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let t = ctx.tenant.0;
    let found = tx
        .query_all_raw(stmt(
            "SELECT id, status FROM orders WHERE tenant_id = $1 AND id = ANY($2) FOR UPDATE",
            vec![t.into(), orders.to_vec().into()],
        ))
        .await?;
    if found.len()
        != orders
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    {
        return Err(ServiceError::NotFound);
    }
    for r in &found {
        let s: String = r.try_get("", "status")?;
        if !OrderStatus::parse(&s).is_some_and(OrderStatus::unshipped) {
            return Err(ServiceError::conflict(
                "orderIds",
                format!(
                    "order {} is {s}; only paid, unshipped orders merge",
                    r.try_get::<Uuid>("", "id")?
                ),
            ));
        }
    }
    let fs = tx
        .query_all_raw(stmt(
            "SELECT DISTINCT f.id, f.receiver_key, f.warehouse_id, f.ships_on, f.created_at
             FROM fulfillments f JOIN order_lines l ON l.tenant_id = f.tenant_id AND l.fulfillment_id = f.id
             WHERE f.tenant_id = $1 AND l.order_id = ANY($2) AND f.status = 'OPEN' AND f.kind = 'PHYSICAL'
             ORDER BY f.created_at, f.id",
            vec![t.into(), orders.to_vec().into()],
        ))
        .await?;
    if fs.len() < 2 {
        return Err(ServiceError::conflict(
            "orderIds",
            "these orders have nothing to merge (fewer than two open physical fulfilments)",
        ));
    }
    let first_key: Option<Vec<u8>> = fs[0].try_get("", "receiver_key")?;
    let first_wh: Option<Uuid> = fs[0].try_get("", "warehouse_id")?;
    let first_day: Option<NaiveDate> = fs[0].try_get("", "ships_on")?;
    for f in &fs {
        let k: Option<Vec<u8>> = f.try_get("", "receiver_key")?;
        if k.is_none() || k != first_key {
            return Err(ServiceError::conflict(
                "orderIds",
                "the orders go to different receivers",
            ));
        }
        if f.try_get::<Option<Uuid>>("", "warehouse_id")? != first_wh {
            return Err(ServiceError::conflict(
                "orderIds",
                "the orders ship from different warehouses",
            ));
        }
        if f.try_get::<Option<NaiveDate>>("", "ships_on")? != first_day {
            return Err(ServiceError::conflict(
                "orderIds",
                "the orders ship on different pre-sale dates",
            ));
        }
    }
    let target: Uuid = fs[0].try_get("", "id")?;
    let others: Vec<Uuid> = fs[1..]
        .iter()
        .map(|f| f.try_get::<Uuid>("", "id"))
        .collect::<Result<_, _>>()?;
    tx.execute_raw(stmt(
        "UPDATE order_lines SET fulfillment_id = $2 WHERE tenant_id = $1 AND fulfillment_id = ANY($3)",
        vec![t.into(), target.into(), others.clone().into()],
    ))
    .await?;
    tx.execute_raw(stmt(
        "UPDATE fulfillments SET status = 'CANCELLED', updated_at = now() WHERE tenant_id = $1 AND id = ANY($2)",
        vec![t.into(), others.into()],
    ))
    .await?;
    tx.execute_raw(stmt(
        "UPDATE fulfillments SET merged = true, updated_at = now() WHERE tenant_id = $1 AND id = $2",
        vec![t.into(), target.into()],
    ))
    .await?;
    let actor = actor(ctx);
    insert_events(
        &tx,
        orders
            .iter()
            .map(|o| {
                json!({"id": Uuid::now_v7(), "order_id": o, "kind": "MERGED",
                            "detail": {"fulfillment": target, "automatic": false}, "actor": actor})
            })
            .collect(),
    )
    .await?;
    tx.commit().await?;
    fulfillments(core, ctx, &[target])
        .await?
        .into_iter()
        .next()
        .ok_or(ServiceError::NotFound)
}

/// Moves `lines` of an unshipped order into a fulfilment of their own.
pub async fn order_split(
    core: &Core,
    ctx: &RequestCtx,
    order: Uuid,
    lines: &[Uuid],
) -> ServiceResult<FulfillmentView> {
    require(ctx, Permission::FulfillmentWrite)?;
    if lines.is_empty() || lines.len() > 200 {
        return Err(InvalidInput {
            field: "lineIds",
            message: "give 1-200 lines".into(),
        }
        .into());
    }
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let t = ctx.tenant.0;
    let status: String = tx
        .query_one_raw(stmt(
            "SELECT status FROM orders WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            vec![t.into(), order.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?
        .try_get("", "status")?;
    if !OrderStatus::parse(&status).is_some_and(OrderStatus::unshipped) {
        return Err(ServiceError::conflict(
            "orderId",
            format!("the order is {status}; only paid, unshipped orders split"),
        ));
    }
    let rows = tx
        .query_all_raw(stmt(
            "SELECT l.fulfillment_id, f.warehouse_id, f.receiver_key, f.kind, f.ships_on,
                    (SELECT count(*) FROM order_lines x WHERE x.tenant_id = l.tenant_id AND x.fulfillment_id = l.fulfillment_id) AS in_fulfillment
             FROM order_lines l JOIN fulfillments f ON f.tenant_id = l.tenant_id AND f.id = l.fulfillment_id
             WHERE l.tenant_id = $1 AND l.order_id = $2 AND l.id = ANY($3) AND f.status = 'OPEN'",
            vec![t.into(), order.into(), lines.to_vec().into()],
        ))
        .await?;
    let distinct: std::collections::HashSet<&Uuid> = lines.iter().collect();
    if rows.len() != distinct.len() {
        return Err(ServiceError::conflict(
            "lineIds",
            "every line must belong to this order and sit in an open fulfilment",
        ));
    }
    let from: Uuid = rows[0].try_get("", "fulfillment_id")?;
    for r in &rows {
        if r.try_get::<Uuid>("", "fulfillment_id")? != from {
            return Err(ServiceError::conflict(
                "lineIds",
                "the lines sit in different fulfilments",
            ));
        }
    }
    if rows[0].try_get::<i64>("", "in_fulfillment")? as usize <= distinct.len() {
        return Err(ServiceError::conflict(
            "lineIds",
            "leave at least one line in the original fulfilment",
        ));
    }
    let id = Uuid::now_v7();
    tx.execute_raw(stmt(
        "INSERT INTO fulfillments (tenant_id, id, warehouse_id, receiver_key, kind, ships_on)
         SELECT tenant_id, $3, warehouse_id, receiver_key, kind, ships_on FROM fulfillments
         WHERE tenant_id = $1 AND id = $2",
        vec![t.into(), from.into(), id.into()],
    ))
    .await?;
    tx.execute_raw(stmt(
        "UPDATE order_lines SET fulfillment_id = $2 WHERE tenant_id = $1 AND id = ANY($3)",
        vec![t.into(), id.into(), lines.to_vec().into()],
    ))
    .await?;
    let actor = actor(ctx);
    insert_events(
        &tx,
        vec![
            json!({"id": Uuid::now_v7(), "order_id": order, "kind": "SPLIT",
                    "detail": {"from": from, "to": id, "lines": lines}, "actor": actor}),
        ],
    )
    .await?;
    tx.commit().await?;
    fulfillments(core, ctx, &[id])
        .await?
        .into_iter()
        .next()
        .ok_or(ServiceError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_modes_round_trip() {
        for m in [MergeMode::Off, MergeMode::Suggest, MergeMode::Auto] {
            assert_eq!(MergeMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(MergeMode::parse("auto"), None);
    }
}
