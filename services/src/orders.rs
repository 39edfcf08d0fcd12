//! One order model for every channel. Marketplace snapshots arrive in batches from the bus and
//! are upserted idempotently by (tenant, channel, platform order id), never letting older data
//! overwrite newer; unmapped lines are kept and flagged. Stock follows the status through the
//! reservation engine (a settle step, retried until it sticks); the timeline records every move.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uphub_domain::identity::{InvalidInput, Permission};
use uphub_domain::order::{
    ChannelOrder, OrderStatus, SnapshotDecision, StockState, StockStep, decide_snapshot, stock_step,
};
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

use crate::audit::{self, require};
use crate::page::{Page, PageArgs};
use crate::reservation::{self, Line, ReserveRequest};
use crate::{Core, ServiceError, ServiceResult};

pub const FETCHED_TOPIC: &str = "channel.orders_fetched";
pub const LIVE_TOPIC: &str = "orders";
/// Orders settled at once by one worker.
const SETTLE_CONCURRENCY: usize = 8;
/// Marketplace reservations last until the order ships or is cancelled.
const MARKETPLACE_HOLD: Duration = Duration::from_secs(365 * 24 * 3600);

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// An order as fetched, with its receiver already sealed under the tenant's key where it was
/// decrypted (the bus never carries clear PII).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchedOrder {
    #[serde(flatten)]
    pub order: ChannelOrder,
    /// base64 AES-GCM ciphertext of the decrypted receiver JSON.
    #[serde(default)]
    pub receiver_ct: Option<String>,
    /// hex blind index of the normalized receiver (merge key).
    #[serde(default)]
    pub receiver_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchedBatch {
    pub channel_id: Uuid,
    pub orders: Vec<FetchedOrder>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub inserted: usize,
    pub updated: usize,
    pub stale: usize,
    pub unmapped_lines: usize,
}

/// A change worth telling live subscribers about (published after the commit).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveOrderEvent {
    pub order_id: Uuid,
    pub kind: String,
    pub status: String,
}

struct Held {
    id: Uuid,
    status: OrderStatus,
    modified: DateTime<Utc>,
}

/// Upserts a batch inside the caller's transaction (the consumer's, which also records the event
/// as processed). Batches of one channel are serialized by an advisory lock.
pub async fn ingest(
    tx: &TenantTx,
    batch: &FetchedBatch,
) -> ServiceResult<(IngestStats, Vec<LiveOrderEvent>)> {
    let tenant = tx.tenant();
    let channel = batch.channel_id;
    tx.execute_raw(stmt(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7))",
        vec![channel.to_string().into()],
    ))
    .await?;
    let channel_type: Option<String> = tx
        .query_one_raw(stmt(
            "SELECT type FROM sales_channels WHERE tenant_id = $1 AND id = $2",
            vec![tenant.0.into(), channel.into()],
        ))
        .await?
        .map(|r| r.try_get("", "type"))
        .transpose()?;
    let Some(channel_type) = channel_type else {
        return Err(ServiceError::NotFound);
    };

    // The newest snapshot of each order in the batch.
    let mut latest: HashMap<&str, &FetchedOrder> = HashMap::new();
    for f in &batch.orders {
        let e = latest
            .entry(f.order.platform_order_id.as_str())
            .or_insert(f);
        if f.order.modified_at > e.order.modified_at {
            *e = f;
        }
    }
    let ids: Vec<String> = latest.keys().map(|s| s.to_string()).collect();
    let held: HashMap<String, Held> = tx
        .query_all_raw(stmt(
            "SELECT id, platform_order_id, status, platform_modified_at FROM orders
             WHERE tenant_id = $1 AND channel_id = $2 AND platform_order_id = ANY($3)",
            vec![tenant.0.into(), channel.into(), ids.into()],
        ))
        .await?
        .into_iter()
        .map(|r| {
            let status: String = r.try_get("", "status")?;
            Ok((
                r.try_get::<String>("", "platform_order_id")?,
                Held {
                    id: r.try_get("", "id")?,
                    status: OrderStatus::parse(&status).unwrap_or(OrderStatus::PendingPayment),
                    modified: r.try_get("", "platform_modified_at")?,
                },
            ))
        })
        .collect::<Result<_, sea_orm::DbErr>>()?;

    let sku_map = map_skus(tx, channel, latest.values().copied()).await?;

    let mut stats = IngestStats::default();
    let mut order_rows = Vec::new();
    let mut line_rows = Vec::new();
    let mut event_rows = Vec::new();
    let mut live = Vec::new();
    for (pid, f) in latest {
        let o = &f.order;
        let prev = held.get(pid);
        let decision = decide_snapshot(
            prev.map(|h| (h.status, h.modified)),
            o.status,
            o.modified_at,
        );
        let (id, status, inserted) = match decision {
            SnapshotDecision::Stale => {
                stats.stale += 1;
                continue;
            }
            SnapshotDecision::Insert => {
                stats.inserted += 1;
                (Uuid::now_v7(), o.status, true)
            }
            SnapshotDecision::Apply { status, refused } => {
                stats.updated += 1;
                let h = prev.ok_or(ServiceError::NotFound)?;
                if let Some(e) = refused {
                    event_rows.push(event_row(
                        h.id,
                        "STATUS_REFUSED",
                        Some(e.from.as_str()),
                        Some(e.to.as_str()),
                        json!({"platformStatus": o.platform_status, "message": e.to_string()}),
                    ));
                }
                (h.id, status, false)
            }
        };
        let previous_status = prev.map(|h| h.status);
        let mut attention: Vec<&str> = Vec::new();
        for (n, l) in o.lines.iter().enumerate() {
            let sku = sku_map
                .get(&(l.platform_sku_id.clone(), l.outer_sku_code.clone()))
                .copied();
            if sku.is_none() {
                stats.unmapped_lines += 1;
                if !attention.contains(&"UNMAPPED_SKU") {
                    attention.push("UNMAPPED_SKU");
                }
            }
            line_rows.push(json!({
                "order_id": id, "id": Uuid::now_v7(), "line_no": n as i32 + 1,
                "platform_line_id": l.platform_line_id, "platform_item_id": l.platform_item_id,
                "platform_sku_id": l.platform_sku_id, "outer_sku_code": l.outer_sku_code,
                "sku_id": sku, "title": l.title.chars().take(200).collect::<String>(),
                "quantity": l.quantity.max(1), "unit_price_fen": l.unit_price_fen,
                "paid_fen": l.paid_fen, "after_sales": l.after_sales.as_str(),
            }));
        }
        let changed = previous_status != Some(status);
        if inserted {
            event_rows.push(event_row(
                id,
                "CREATED",
                None,
                Some(status.as_str()),
                json!({"channel": channel_type, "platformStatus": o.platform_status}),
            ));
        } else if changed {
            event_rows.push(event_row(
                id,
                "STATUS_CHANGED",
                previous_status.map(|s| s.as_str()),
                Some(status.as_str()),
                json!({"platformStatus": o.platform_status}),
            ));
        } else {
            event_rows.push(event_row(
                id,
                "UPDATED",
                None,
                None,
                json!({"platformStatus": o.platform_status}),
            ));
        }
        if inserted || changed {
            live.push(LiveOrderEvent {
                order_id: id,
                kind: if inserted {
                    "CREATED"
                } else {
                    "STATUS_CHANGED"
                }
                .into(),
                status: status.as_str().into(),
            });
        }
        let masked = json!({
            "name": o.receiver.masked_name, "phone": o.receiver.masked_phone,
            "province": o.receiver.province, "city": o.receiver.city,
            "district": o.receiver.district, "address": o.receiver.masked_address,
        });
        let buyer_key = o
            .buyer_open_id
            .as_ref()
            .map(|b| format!("{channel_type}:{b}"));
        order_rows.push(json!({
            "id": id, "status": status.as_str(), "platform_order_id": o.platform_order_id,
            "platform_status": o.platform_status, "platform_modified_at": o.modified_at,
            "buyer_open_id": buyer_key, "receiver_masked": masked,
            "receiver_ref": o.receiver.decrypt_ref, "receiver_ct": f.receiver_ct,
            "receiver_key": f.receiver_key, "total_fen": o.total_fen,
            "post_fee_fen": o.post_fee_fen, "placed_at": o.created_at, "paid_at": o.paid_at,
            "needs_attention": attention,
            "stock_dirty": inserted || changed || (status.unshipped()
                && o.lines.iter().any(|l| l.after_sales.as_str() == "REFUNDED")),
        }));
    }

    if !order_rows.is_empty() {
        tx.execute_raw(stmt(
            "INSERT INTO orders AS o (tenant_id, id, channel_id, channel_type, platform_order_id, status,
                platform_status, platform_modified_at, buyer_open_id, receiver_masked, receiver_ref,
                receiver_ct, receiver_key, total_fen, post_fee_fen, placed_at, paid_at,
                needs_attention, stock_dirty)
             SELECT $1, x.id, $2, $3, x.platform_order_id, x.status, x.platform_status,
                x.platform_modified_at, x.buyer_open_id, x.receiver_masked, x.receiver_ref,
                decode(x.receiver_ct, 'base64'), decode(x.receiver_key, 'hex'), x.total_fen,
                x.post_fee_fen, x.placed_at, x.paid_at,
                ARRAY(SELECT jsonb_array_elements_text(x.needs_attention)), x.stock_dirty
             FROM jsonb_to_recordset($4::jsonb) AS x(id uuid, platform_order_id text, status text,
                platform_status text, platform_modified_at timestamptz, buyer_open_id text,
                receiver_masked jsonb, receiver_ref text, receiver_ct text, receiver_key text,
                total_fen bigint, post_fee_fen bigint, placed_at timestamptz, paid_at timestamptz,
                needs_attention jsonb, stock_dirty boolean)
             ON CONFLICT (tenant_id, channel_id, platform_order_id) DO UPDATE SET
                status = EXCLUDED.status, platform_status = EXCLUDED.platform_status,
                platform_modified_at = EXCLUDED.platform_modified_at,
                buyer_open_id = COALESCE(EXCLUDED.buyer_open_id, o.buyer_open_id),
                receiver_masked = EXCLUDED.receiver_masked,
                receiver_ref = EXCLUDED.receiver_ref,
                receiver_ct = COALESCE(EXCLUDED.receiver_ct, o.receiver_ct),
                receiver_key = COALESCE(EXCLUDED.receiver_key, o.receiver_key),
                total_fen = EXCLUDED.total_fen, post_fee_fen = EXCLUDED.post_fee_fen,
                paid_at = COALESCE(EXCLUDED.paid_at, o.paid_at),
                needs_attention = ARRAY(SELECT DISTINCT a FROM unnest(
                    array_remove(o.needs_attention, 'UNMAPPED_SKU') || EXCLUDED.needs_attention) a),
                stock_dirty = o.stock_dirty OR EXCLUDED.stock_dirty,
                version = o.version + 1, updated_at = now()",
            vec![
                tenant.0.into(),
                channel.into(),
                channel_type.clone().into(),
                Value::Array(order_rows).into(),
            ],
        ))
        .await?;
        tx.execute_raw(stmt(
            "INSERT INTO order_lines AS l (tenant_id, order_id, id, line_no, platform_line_id,
                platform_item_id, platform_sku_id, outer_sku_code, sku_id, title, quantity,
                unit_price_fen, paid_fen, after_sales)
             SELECT $1, x.order_id, x.id, x.line_no, x.platform_line_id, x.platform_item_id,
                x.platform_sku_id, x.outer_sku_code, x.sku_id, x.title, x.quantity,
                x.unit_price_fen, x.paid_fen, x.after_sales
             FROM jsonb_to_recordset($2::jsonb) AS x(order_id uuid, id uuid, line_no int,
                platform_line_id text, platform_item_id text, platform_sku_id text,
                outer_sku_code text, sku_id uuid, title text, quantity int, unit_price_fen bigint,
                paid_fen bigint, after_sales text)
             ON CONFLICT (tenant_id, order_id, platform_line_id) DO UPDATE SET
                after_sales = EXCLUDED.after_sales, paid_fen = EXCLUDED.paid_fen,
                sku_id = COALESCE(l.sku_id, EXCLUDED.sku_id)",
            vec![tenant.0.into(), Value::Array(line_rows).into()],
        ))
        .await?;
    }
    insert_events(tx, event_rows).await?;
    Ok((stats, live))
}

/// Platform SKU → our SKU: the listing's platform SKU id first, then the merchant's outer code.
async fn map_skus<'a>(
    tx: &TenantTx,
    channel: Uuid,
    orders: impl Iterator<Item = &'a FetchedOrder>,
) -> ServiceResult<HashMap<(String, Option<String>), Uuid>> {
    let mut pairs: HashSet<(String, Option<String>)> = HashSet::new();
    for f in orders {
        for l in &f.order.lines {
            pairs.insert((l.platform_sku_id.clone(), l.outer_sku_code.clone()));
        }
    }
    let platform_ids: Vec<String> = pairs.iter().map(|p| p.0.clone()).collect();
    let codes: Vec<String> = pairs.iter().filter_map(|p| p.1.clone()).collect();
    let rows = tx
        .query_all_raw(stmt(
            "SELECT 'P' AS k, platform_sku_id AS key, sku_id FROM listings
               WHERE tenant_id = $1 AND channel_id = $2 AND platform_sku_id = ANY($3)
             UNION ALL
             SELECT 'C', code, id FROM skus WHERE tenant_id = $1 AND code = ANY($4)",
            vec![
                tx.tenant().0.into(),
                channel.into(),
                platform_ids.into(),
                codes.into(),
            ],
        ))
        .await?;
    let mut by_platform = HashMap::new();
    let mut by_code = HashMap::new();
    for r in rows {
        let k: String = r.try_get("", "k")?;
        let key: String = r.try_get("", "key")?;
        let sku: Uuid = r.try_get("", "sku_id")?;
        if k == "P" {
            by_platform.insert(key, sku);
        } else {
            by_code.insert(key, sku);
        }
    }
    Ok(pairs
        .into_iter()
        .filter_map(|p| {
            let sku = by_platform
                .get(&p.0)
                .or_else(|| p.1.as_ref().and_then(|c| by_code.get(c)))
                .copied()?;
            Some((p, sku))
        })
        .collect())
}

fn event_row(
    order: Uuid,
    kind: &str,
    from: Option<&str>,
    to: Option<&str>,
    detail: Value,
) -> Value {
    json!({"id": Uuid::now_v7(), "order_id": order, "kind": kind, "from_status": from,
           "to_status": to, "detail": detail})
}

/// Who a timeline row names: the staff member or key acting, else `system`.
pub(crate) fn actor(ctx: &RequestCtx) -> String {
    ctx.principal
        .actor_id()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "system".into())
}

/// Appends timeline rows (`event_row` or any object with those keys) in one statement.
pub(crate) async fn insert_events(tx: &TenantTx, rows: Vec<Value>) -> ServiceResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    tx.execute_raw(stmt(
        "INSERT INTO order_events (tenant_id, id, order_id, kind, from_status, to_status, detail, actor)
         SELECT $1, x.id, x.order_id, x.kind, x.from_status, x.to_status, COALESCE(x.detail, '{}'), COALESCE(x.actor, 'system')
         FROM jsonb_to_recordset($2::jsonb) AS x(id uuid, order_id uuid, kind text,
            from_status text, to_status text, detail jsonb, actor text)",
        vec![tx.tenant().0.into(), Value::Array(rows).into()],
    ))
    .await?;
    Ok(())
}

/// Publishes committed changes to the tenant's `orderEvents` subscribers (best effort).
pub async fn publish_live(core: &Core, tenant: TenantId, events: &[LiveOrderEvent]) {
    for ev in events {
        if let Ok(payload) = serde_json::to_string(ev)
            && let Err(e) = crate::pubsub::publish(core, tenant, LIVE_TOPIC, &payload).await
        {
            tracing::warn!(error = %e, "order live publish failed");
        }
    }
}

// ------------------------------------------------------------------ stock ---

struct StockLine {
    order: Uuid,
    id: Uuid,
    sku: Uuid,
    warehouse: Option<Uuid>,
    quantity: i32,
    refunded: bool,
    /// A refunded line whose units went back (or were never taken).
    released: bool,
}

/// Settles the stock of orders whose status changed, across tenants. Each order is settled in
/// its own steps, each idempotent (the reservation is keyed by the order id); the dirty flag is
/// cleared only when the order has not changed meanwhile, so a crash or a race just settles again.
pub async fn settle_dirty(core: &Core, batch: u64) -> ServiceResult<usize> {
    let rows = core
        .db
        .query_all_raw(stmt(
            "SELECT tenant_id, id FROM orders WHERE stock_dirty ORDER BY updated_at LIMIT $1",
            vec![(batch as i64).into()],
        ))
        .await?;
    let mut todo = Vec::with_capacity(rows.len());
    for r in rows {
        todo.push((
            TenantId(r.try_get("", "tenant_id")?),
            r.try_get::<Uuid>("", "id")?,
        ));
    }
    // The common case (a paid order, nothing held yet) is settled in one batch per tenant;
    // the rest, and whatever the batch leaves, order by order.
    let mut by_tenant: HashMap<TenantId, Vec<Uuid>> = HashMap::new();
    for (t, id) in todo {
        by_tenant.entry(t).or_default().push(id);
    }
    let mut done = 0usize;
    let mut todo = Vec::new();
    for (tenant, ids) in by_tenant {
        match settle_many(core, tenant, &ids).await {
            Ok((n, rest)) => {
                done += n;
                todo.extend(rest.into_iter().map(|id| (tenant, id)));
            }
            Err(e) => {
                tracing::warn!(error = %e, %tenant, "batch stock settle failed; settling alone");
                todo.extend(ids.into_iter().map(|id| (tenant, id)));
            }
        }
    }
    // Distinct orders settle side by side: each one's steps are short transactions of its own.
    use futures_util::StreamExt;
    let done = done
        + futures_util::stream::iter(todo)
            .map(|(tenant, id)| async move {
                match settle(core, tenant, id).await {
                    Ok(()) => 1,
                    Err(e) => {
                        tracing::warn!(error = %e, order = %id, "stock settle failed; will retry");
                        0
                    }
                }
            })
            .buffer_unordered(SETTLE_CONCURRENCY)
            .fold(0usize, |n, x| async move { n + x })
            .await;
    Ok(done)
}

/// An order a batch settles: (id, status, stock state, version).
type Pending = (Uuid, OrderStatus, StockState, i32);

/// Settles, in a few statements for all of them, the orders of `ids` that are paid and hold
/// nothing yet (the bulk of what marketplace ingestion brings: lines placed, ONE engine call,
/// [`reservation::reserve_many`]) and the unshipped ones whose stock needs no step (a paid
/// own-channel order already holds its units), with one transaction recording the results. Returns how many it
/// settled and the orders left to [`settle`] (any other step, a campaign, a short or unmapped
/// line, or anything the engine did not decide in the batch).
async fn settle_many(
    core: &Core,
    tenant: TenantId,
    ids: &[Uuid],
) -> ServiceResult<(usize, Vec<Uuid>)> {
    let ctx = RequestCtx::system(tenant, "order-stock");
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            "SELECT id, status, stock_state, version, campaign FROM orders
             WHERE tenant_id = $1 AND id = ANY($2)",
            vec![tenant.0.into(), ids.to_vec().into()],
        ))
        .await?;
    // Orders the engine already holds something for (found by owner, with the owner ids as
    // constants: a join on `o.id::text` lets a planner with a young table's statistics scan
    // every reservation of the tenant once per order).
    let held: HashSet<String> = tx
        .query_all_raw(stmt(
            "SELECT owner_id FROM reservations
             WHERE tenant_id = $1 AND owner_kind = 'ORDER' AND owner_id = ANY($2)",
            vec![
                tenant.0.into(),
                ids.iter().map(Uuid::to_string).collect::<Vec<_>>().into(),
            ],
        ))
        .await?
        .iter()
        .map(|r| r.try_get::<String>("", "owner_id"))
        .collect::<Result<_, _>>()?;
    let mut batch: Vec<Pending> = Vec::new();
    let mut idle: Vec<Pending> = Vec::new();
    for r in &rows {
        let status = OrderStatus::parse(&r.try_get::<String>("", "status")?);
        let state = StockState::parse(&r.try_get::<String>("", "stock_state")?);
        let (Some(status), Some(state)) = (status, state) else {
            continue;
        };
        let id: Uuid = r.try_get("", "id")?;
        let plain = r.try_get::<Option<String>>("", "campaign")?.is_none()
            && !held.contains(&id.to_string());
        let pending = (id, status, state, r.try_get("", "version")?);
        match stock_step(state, status) {
            StockStep::Reserve if plain => batch.push(pending),
            // Paid own-channel orders already hold their units: only the record is left.
            StockStep::Nothing if status.unshipped() => idle.push(pending),
            _ => {}
        }
    }
    // A line refunded before shipping gives its units back order by order (`settle`).
    if !idle.is_empty() {
        let refunding: HashSet<Uuid> = tx
            .query_all_raw(stmt(
                "SELECT DISTINCT order_id FROM order_lines
                 WHERE tenant_id = $1 AND order_id = ANY($2) AND after_sales = 'REFUNDED'
                   AND NOT stock_released",
                vec![
                    tenant.0.into(),
                    idle.iter().map(|b| b.0).collect::<Vec<_>>().into(),
                ],
            ))
            .await?
            .iter()
            .map(|r| r.try_get::<Uuid>("", "order_id"))
            .collect::<Result<_, _>>()?;
        idle.retain(|b| !refunding.contains(&b.0));
    }
    if batch.is_empty() && idle.is_empty() {
        tx.commit().await?;
        return Ok((0, ids.to_vec()));
    }
    let order_ids: Vec<Uuid> = batch.iter().map(|b| b.0).collect();
    let mut lines = stock_lines(&tx, &order_ids).await?;
    place_lines(&tx, &mut lines).await?;
    tx.commit().await?;

    // One request per order whose every open line has a warehouse.
    let mut by_order: HashMap<Uuid, Vec<Line>> = HashMap::new();
    let mut unplaced: HashSet<Uuid> = HashSet::new();
    for l in lines.iter().filter(|l| !l.refunded) {
        match l.warehouse {
            Some(w) => by_order.entry(l.order).or_default().push(Line {
                sku: l.sku,
                warehouse: w,
                quantity: l.quantity,
            }),
            None => {
                unplaced.insert(l.order);
            }
        }
    }
    let asks: Vec<&Pending> = batch
        .iter()
        .filter(|b| by_order.contains_key(&b.0) && !unplaced.contains(&b.0))
        .collect();
    let reqs: Vec<ReserveRequest> = asks
        .iter()
        .map(|b| ReserveRequest {
            owner_kind: "ORDER".into(),
            owner_id: b.0.to_string(),
            campaign: None,
            lines: by_order.remove(&b.0).unwrap_or_default(),
            ttl: MARKETPLACE_HOLD,
        })
        .collect();
    let verdicts = if reqs.is_empty() {
        Vec::new()
    } else {
        reservation::reserve_many(core, &ctx, &reqs).await?
    };
    // What to record: reserved now (with the reservation), or unchanged.
    let reserved: Vec<(&Pending, Option<Uuid>)> = asks
        .iter()
        .zip(&verdicts)
        .filter_map(|(b, v)| match v {
            reservation::Verdict::Reserved(r) => Some((*b, Some(r.id))),
            _ => None,
        })
        .chain(idle.iter().map(|b| (b, None)))
        .collect();
    let settled: HashSet<Uuid> = reserved.iter().map(|(b, _)| b.0).collect();
    let rest: Vec<Uuid> = ids
        .iter()
        .filter(|id| !settled.contains(id))
        .copied()
        .collect();
    if reserved.is_empty() {
        return Ok((0, rest));
    }

    // The results, in one transaction (the reservations stand on their own: a crash here leaves
    // the orders dirty, and `settle` finds their reservations and records them).
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let to = |b: &Pending, rid: &Option<Uuid>| match rid {
        Some(_) => StockState::Reserved,
        None => b.2,
    };
    let changed = tx
        .query_all_raw(stmt(
            "UPDATE orders o SET stock_state = x.s,
                stock_dirty = o.stock_dirty AND o.version <> x.v,
                needs_attention = array_remove(o.needs_attention, 'STOCK_SHORT'),
                updated_at = now()
             FROM unnest($2::uuid[], $3::int[], $4::text[]) AS x(id, v, s)
             WHERE o.tenant_id = $1 AND o.id = x.id
             RETURNING o.id",
            vec![
                tenant.0.into(),
                reserved.iter().map(|(b, _)| b.0).collect::<Vec<_>>().into(),
                reserved.iter().map(|(b, _)| b.3).collect::<Vec<_>>().into(),
                reserved
                    .iter()
                    .map(|(b, rid)| to(b, rid).as_str().to_string())
                    .collect::<Vec<_>>()
                    .into(),
            ],
        ))
        .await?;
    let changed: HashSet<Uuid> = changed
        .iter()
        .map(|r| r.try_get::<Uuid>("", "id"))
        .collect::<Result<_, _>>()?;
    // Lines already refunded when the order was reserved were never taken.
    let untaken: Vec<Uuid> = lines
        .iter()
        .filter(|l| l.refunded && !l.released && settled.contains(&l.order))
        .map(|l| l.id)
        .collect();
    mark_released(&tx, &untaken).await?;
    let mut events = Vec::with_capacity(reserved.len());
    let mut live = Vec::with_capacity(reserved.len());
    for (b, rid) in reserved.iter().filter(|(b, _)| changed.contains(&b.0)) {
        let (order, status, state, _) = b;
        let Some(rid) = rid else {
            continue;
        };
        events.push(event_row(
            *order,
            "STOCK",
            Some(state.as_str()),
            Some(StockState::Reserved.as_str()),
            json!({"reservation": rid}),
        ));
        live.push(LiveOrderEvent {
            order_id: *order,
            kind: "STOCK".into(),
            status: status.as_str().into(),
        });
    }
    let placed: Vec<(Uuid, OrderStatus)> = reserved
        .iter()
        .filter(|(b, _)| changed.contains(&b.0))
        .map(|(b, _)| (b.0, b.1))
        .collect();
    crate::fulfillment::sync_unshipped_orders(core, &tx, &placed).await?;
    insert_events(&tx, events).await?;
    tx.commit().await?;
    publish_live(core, tenant, &live).await;
    Ok((changed.len(), rest))
}

pub async fn settle(core: &Core, tenant: TenantId, order: Uuid) -> ServiceResult<()> {
    let ctx = RequestCtx::system(tenant, "order-stock");
    // One short transaction reads the order, its lines and what the engine already holds for
    // it, and picks (and remembers) the warehouse of lines about to be reserved.
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let Some(row) = tx
        .query_one_raw(stmt(
            "SELECT o.status, o.stock_state, o.version, o.campaign, r.id AS rid, r.status AS rstatus
             FROM orders o
             LEFT JOIN reservations r ON r.tenant_id = $1 AND r.owner_kind = 'ORDER' AND r.owner_id = $3
             WHERE o.tenant_id = $1 AND o.id = $2",
            vec![tenant.0.into(), order.into(), order.to_string().into()],
        ))
        .await?
    else {
        return Ok(());
    };
    let status = OrderStatus::parse(&row.try_get::<String>("", "status")?)
        .unwrap_or(OrderStatus::PendingPayment);
    let state =
        StockState::parse(&row.try_get::<String>("", "stock_state")?).unwrap_or(StockState::None);
    let version: i32 = row.try_get("", "version")?;
    let campaign: Option<String> = row.try_get("", "campaign")?;
    // What the engine already holds for the order: a settle that died after the engine call and
    // before recording its result finds it here and does not ask twice.
    let held: Option<(Uuid, String)> = match row.try_get::<Option<Uuid>>("", "rid")? {
        Some(id) => Some((id, row.try_get("", "rstatus")?)),
        None => None,
    };
    let mut lines = stock_lines(&tx, &[order]).await?;
    let step = stock_step(state, status);
    let reserving = matches!(
        step,
        StockStep::Reserve | StockStep::ReserveThenConfirm | StockStep::Confirm
    ) && held.is_none();
    if reserving {
        place_lines(&tx, &mut lines).await?;
    }
    tx.commit().await?;

    let active = held
        .as_ref()
        .filter(|(_, s)| s == "ACTIVE")
        .map(|(id, _)| *id);
    let confirmed = held.as_ref().is_some_and(|(_, s)| s == "CONFIRMED");
    // Lines refunded before shipping give their units back before anything else (a shipment
    // must not confirm them); a cancel gives everything back below anyway.
    let mut released_now: Vec<Uuid> = Vec::new();
    if status != OrderStatus::Cancelled {
        let refunded_open = lines.iter().filter(|l| l.refunded && !l.released);
        for l in refunded_open {
            if let (Some(rid), Some(wh)) = (active, l.warehouse) {
                match reservation::release_part(core, &ctx, rid, l.id, l.sku, wh, l.quantity).await
                {
                    Ok(_) | Err(ServiceError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            // Without an active reservation the line's units were never taken (reserved after
            // the refund, or not at all). Confirmed units have left the shelf: a restock is a
            // stock adjustment, not a release.
            if !confirmed {
                released_now.push(l.id);
            }
        }
    }
    let (new_state, detail) = match step {
        StockStep::Nothing => (state, None),
        StockStep::MarkReleased => (StockState::Released, None),
        StockStep::Reserve | StockStep::ReserveThenConfirm | StockStep::Confirm => {
            let reserved = match (held.as_ref(), active) {
                (_, Some(rid)) => Ok(rid),
                (Some((rid, _)), None) => Ok(*rid),
                (None, None) => reserve_for(core, &ctx, order, campaign, &lines).await?,
            };
            match reserved {
                Ok(rid) if step == StockStep::Reserve => {
                    if confirmed {
                        (StockState::Confirmed, Some(json!({"reservation": rid})))
                    } else if active.is_some() || held.is_none() {
                        (StockState::Reserved, Some(json!({"reservation": rid})))
                    } else {
                        // Released or expired earlier: the order holds nothing.
                        (
                            StockState::Short,
                            Some(json!({"reservation": rid, "ended": true})),
                        )
                    }
                }
                Ok(rid) => {
                    if !confirmed && (active.is_some() || held.is_none()) {
                        confirm_for(core, &ctx, rid).await?;
                    }
                    (StockState::Confirmed, Some(json!({"reservation": rid})))
                }
                Err(sku) => (StockState::Short, Some(json!({"shortSku": sku}))),
            }
        }
        StockStep::Release => {
            if let Some(rid) = active {
                match reservation::release(core, &ctx, rid, false).await {
                    Ok(()) | Err(ServiceError::Conflict { .. }) | Err(ServiceError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            (StockState::Released, None)
        }
    };

    let tx = TenantTx::begin(&core.db, tenant).await?;
    mark_released(&tx, &released_now).await?;
    if !released_now.is_empty() && held.is_some() {
        insert_events(
            &tx,
            vec![event_row(
                order,
                "STOCK_LINES_RELEASED",
                None,
                None,
                json!({"lines": released_now}),
            )],
        )
        .await?;
    }
    let mut attention_add: Vec<&str> = Vec::new();
    let mut attention_del: Vec<&str> = Vec::new();
    if new_state == StockState::Short {
        attention_add.push("STOCK_SHORT");
    } else {
        attention_del.push("STOCK_SHORT");
    }
    let updated = tx
        .execute_raw(stmt(
            "UPDATE orders SET stock_state = $3,
                stock_dirty = stock_dirty AND version <> $4,
                needs_attention = ARRAY(SELECT DISTINCT a FROM unnest(needs_attention || $5::text[]) a
                                        WHERE a <> ALL($6::text[])),
                updated_at = now()
             WHERE tenant_id = $1 AND id = $2",
            vec![
                tenant.0.into(),
                order.into(),
                new_state.as_str().into(),
                version.into(),
                attention_add
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .into(),
                attention_del
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .into(),
            ],
        ))
        .await?
        .rows_affected();
    if updated > 0 && new_state != state {
        insert_events(
            &tx,
            vec![event_row(
                order,
                "STOCK",
                Some(state.as_str()),
                Some(new_state.as_str()),
                detail.unwrap_or_else(|| json!({})),
            )],
        )
        .await?;
    }
    if new_state != StockState::Short || !status.unshipped() {
        crate::fulfillment::sync_order(core, &tx, order, status).await?;
    }
    tx.commit().await?;
    if updated > 0 && new_state != state {
        publish_live(
            core,
            tenant,
            &[LiveOrderEvent {
                order_id: order,
                kind: "STOCK".into(),
                status: status.as_str().into(),
            }],
        )
        .await;
    }
    Ok(())
}

/// Records refunded lines whose units are back in the pool (or were never taken): they leave
/// their fulfilment, and a fulfilment left with nothing to ship is cancelled.
async fn mark_released(tx: &TenantTx, lines: &[Uuid]) -> ServiceResult<()> {
    if !lines.is_empty() {
        tx.execute_raw(stmt(
            "WITH freed AS (
               UPDATE order_lines SET stock_released = true, fulfillment_id = NULL
               WHERE tenant_id = $1 AND id = ANY($2)
               RETURNING fulfillment_id)
             UPDATE fulfillments f SET status = 'CANCELLED', updated_at = now()
             WHERE f.tenant_id = $1 AND f.status = 'OPEN'
               AND f.id IN (SELECT fulfillment_id FROM freed)
               AND NOT EXISTS (SELECT 1 FROM order_lines l WHERE l.tenant_id = $1
                               AND l.fulfillment_id = f.id AND l.id <> ALL($2))",
            vec![tx.tenant().0.into(), lines.to_vec().into()],
        ))
        .await?;
    }
    Ok(())
}

/// The mapped lines of `orders`, grouped by order in line order.
async fn stock_lines(tx: &TenantTx, orders: &[Uuid]) -> ServiceResult<Vec<StockLine>> {
    let rows = tx
        .query_all_raw(stmt(
            "SELECT order_id, id, sku_id, warehouse_id, quantity, after_sales, stock_released FROM order_lines
             WHERE tenant_id = $1 AND order_id = ANY($2) AND sku_id IS NOT NULL
             ORDER BY order_id, line_no",
            vec![tx.tenant().0.into(), orders.to_vec().into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StockLine {
                order: r.try_get("", "order_id")?,
                id: r.try_get("", "id")?,
                sku: r.try_get("", "sku_id")?,
                warehouse: r.try_get("", "warehouse_id")?,
                quantity: r.try_get("", "quantity")?,
                refunded: r.try_get::<String>("", "after_sales")? == "REFUNDED",
                released: r.try_get("", "stock_released")?,
            })
        })
        .collect::<Result<_, sea_orm::DbErr>>()
        .map_err(Into::into)
}

/// Picks the warehouse with the most available units for each line that has none yet (one
/// query for all of them) and remembers it on the line; a line whose SKU has no stock level
/// anywhere keeps none.
async fn place_lines(tx: &TenantTx, lines: &mut [StockLine]) -> ServiceResult<()> {
    let open: Vec<Uuid> = lines
        .iter()
        .filter(|l| l.warehouse.is_none() && !l.refunded)
        .map(|l| l.sku)
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    let mut best: HashMap<Uuid, Uuid> = HashMap::new();
    for r in tx
        .query_all_raw(stmt(
            "SELECT DISTINCT ON (sku_id) sku_id, warehouse_id FROM inventory_levels
             WHERE tenant_id = $1 AND sku_id = ANY($2)
             ORDER BY sku_id, on_hand - reserved - held DESC, warehouse_id",
            vec![tx.tenant().0.into(), open.into()],
        ))
        .await?
    {
        best.insert(r.try_get("", "sku_id")?, r.try_get("", "warehouse_id")?);
    }
    let mut ids = Vec::new();
    let mut whs = Vec::new();
    for l in lines
        .iter_mut()
        .filter(|l| l.warehouse.is_none() && !l.refunded)
    {
        if let Some(w) = best.get(&l.sku) {
            l.warehouse = Some(*w);
            ids.push(l.id);
            whs.push(*w);
        }
    }
    if !ids.is_empty() {
        tx.execute_raw(stmt(
            "UPDATE order_lines l SET warehouse_id = x.w
             FROM unnest($2::uuid[], $3::uuid[]) AS x(id, w)
             WHERE l.tenant_id = $1 AND l.id = x.id",
            vec![tx.tenant().0.into(), ids.into(), whs.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Reserves the order's mapped lines from the warehouses `place_lines` chose. `Err(sku)` when
/// the pool cannot cover a line (or the SKU has no stock level at all).
async fn reserve_for(
    core: &Core,
    ctx: &RequestCtx,
    order: Uuid,
    campaign: Option<String>,
    lines: &[StockLine],
) -> ServiceResult<Result<Uuid, Uuid>> {
    let mut plan = Vec::with_capacity(lines.len());
    for l in lines.iter().filter(|l| !l.refunded) {
        let Some(wh) = l.warehouse else {
            return Ok(Err(l.sku));
        };
        plan.push(Line {
            sku: l.sku,
            warehouse: wh,
            quantity: l.quantity,
        });
    }
    if plan.is_empty() {
        // Nothing mapped (or everything refunded): an empty reservation is not needed.
        return Ok(Ok(Uuid::nil()));
    }
    match reservation::reserve(
        core,
        ctx,
        ReserveRequest {
            owner_kind: "ORDER".into(),
            owner_id: order.to_string(),
            campaign,
            lines: plan,
            ttl: MARKETPLACE_HOLD,
        },
    )
    .await
    {
        Ok(r) => Ok(Ok(r.id)),
        Err(ServiceError::SoldOut { sku }) => Ok(Err(sku)),
        // Another settle of the same order got there first: it will record the result.
        Err(ServiceError::Conflict { .. }) => Err(ServiceError::conflict(
            "order",
            "the order's stock is being settled by another worker",
        )),
        Err(e) => Err(e),
    }
}

async fn confirm_for(core: &Core, ctx: &RequestCtx, rid: Uuid) -> ServiceResult<()> {
    if rid.is_nil() {
        return Ok(());
    }
    match reservation::confirm(core, ctx, rid).await {
        // Already confirmed by an earlier attempt.
        Ok(_) | Err(ServiceError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- queries ---

#[derive(Debug, Clone)]
pub struct OrderView {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub channel_type: String,
    pub platform_order_id: String,
    pub status: OrderStatus,
    pub platform_status: String,
    pub stock_state: String,
    pub needs_attention: Vec<String>,
    pub total_fen: i64,
    pub post_fee_fen: i64,
    pub currency: String,
    pub placed_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub modified_at: DateTime<Utc>,
    pub receiver_masked: Value,
    pub has_receiver: bool,
}

#[derive(Debug, Clone)]
pub struct OrderLineView {
    pub id: Uuid,
    pub order_id: Uuid,
    pub platform_sku_id: String,
    pub outer_sku_code: Option<String>,
    pub sku_id: Option<Uuid>,
    pub warehouse_id: Option<Uuid>,
    pub title: String,
    pub quantity: i32,
    pub unit_price_fen: i64,
    pub paid_fen: i64,
    pub after_sales: String,
    pub fulfillment_id: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub struct OrderEventView {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub detail: Value,
    pub actor: String,
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub channel: Option<String>,
    pub status: Option<OrderStatus>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub search: Option<String>,
    pub needs_attention: Option<bool>,
}

const ORDER_COLS: &str = "id, channel_id, channel_type, platform_order_id, status, platform_status,
    stock_state, needs_attention, total_fen, post_fee_fen, currency, placed_at, paid_at,
    platform_modified_at, receiver_masked, receiver_ct IS NOT NULL AS has_receiver";

fn order_from(r: &sea_orm::QueryResult) -> Result<OrderView, sea_orm::DbErr> {
    let status: String = r.try_get("", "status")?;
    Ok(OrderView {
        id: r.try_get("", "id")?,
        channel_id: r.try_get("", "channel_id")?,
        channel_type: r.try_get("", "channel_type")?,
        platform_order_id: r.try_get("", "platform_order_id")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| sea_orm::DbErr::Custom(format!("bad order status {status}")))?,
        platform_status: r.try_get("", "platform_status")?,
        stock_state: r.try_get("", "stock_state")?,
        needs_attention: r.try_get("", "needs_attention")?,
        total_fen: r.try_get("", "total_fen")?,
        post_fee_fen: r.try_get("", "post_fee_fen")?,
        currency: r.try_get("", "currency")?,
        placed_at: r.try_get("", "placed_at")?,
        paid_at: r.try_get("", "paid_at")?,
        modified_at: r.try_get("", "platform_modified_at")?,
        receiver_masked: r.try_get("", "receiver_masked")?,
        has_receiver: r.try_get("", "has_receiver")?,
    })
}

pub async fn orders(
    core: &Core,
    ctx: &RequestCtx,
    filter: &OrderFilter,
    page: PageArgs,
) -> ServiceResult<Page<OrderView>> {
    require(ctx, Permission::OrderRead)?;
    let mut sql = format!("SELECT {ORDER_COLS} FROM orders WHERE tenant_id = $1");
    let mut vals: Vec<sea_orm::Value> = vec![ctx.tenant.0.into()];
    let mut arg = |sql: &mut String, cond: &str, v: sea_orm::Value| {
        vals.push(v);
        sql.push_str(&cond.replace('?', &format!("${}", vals.len())));
    };
    if let Some(c) = &filter.channel {
        arg(&mut sql, " AND channel_type = ?", c.clone().into());
    }
    if let Some(s) = filter.status {
        arg(&mut sql, " AND status = ?", s.as_str().into());
    }
    if let Some(t) = filter.created_from {
        arg(&mut sql, " AND placed_at >= ?", t.into());
    }
    if let Some(t) = filter.created_to {
        arg(&mut sql, " AND placed_at < ?", t.into());
    }
    if let Some(q) = &filter.search {
        let q = q.trim();
        if q.is_empty() || q.chars().count() > 64 {
            return Err(InvalidInput {
                field: "search",
                message: "must be 1-64 characters".into(),
            }
            .into());
        }
        arg(&mut sql, " AND platform_order_id = ?", q.to_string().into());
    }
    if let Some(a) = filter.needs_attention {
        sql.push_str(if a {
            " AND cardinality(needs_attention) > 0"
        } else {
            " AND cardinality(needs_attention) = 0"
        });
    }
    if let Some(after) = page.after {
        arg(&mut sql, " AND id < ?", after.into());
    }
    vals.push(((page.first + 1) as i64).into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", vals.len()));
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx.query_all_raw(stmt(&sql, vals)).await?;
    tx.commit().await?;
    let list = rows.iter().map(order_from).collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_overfetch(list, page.first))
}

pub async fn order(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<OrderView> {
    require(ctx, Permission::OrderRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            &format!("SELECT {ORDER_COLS} FROM orders WHERE tenant_id = $1 AND id = $2"),
            vec![ctx.tenant.0.into(), id.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    tx.commit().await?;
    Ok(order_from(&row)?)
}

/// Lines of many orders in one statement.
pub async fn lines_for_orders(
    core: &Core,
    ctx: &RequestCtx,
    ids: &[Uuid],
) -> ServiceResult<Vec<OrderLineView>> {
    require(ctx, Permission::OrderRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            "SELECT id, order_id, platform_sku_id, outer_sku_code, sku_id, warehouse_id, title,
                    quantity, unit_price_fen, paid_fen, after_sales, fulfillment_id
             FROM order_lines WHERE tenant_id = $1 AND order_id = ANY($2) ORDER BY order_id, line_no",
            vec![ctx.tenant.0.into(), ids.to_vec().into()],
        ))
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(OrderLineView {
                id: r.try_get("", "id")?,
                order_id: r.try_get("", "order_id")?,
                platform_sku_id: r.try_get("", "platform_sku_id")?,
                outer_sku_code: r.try_get("", "outer_sku_code")?,
                sku_id: r.try_get("", "sku_id")?,
                warehouse_id: r.try_get("", "warehouse_id")?,
                title: r.try_get("", "title")?,
                quantity: r.try_get("", "quantity")?,
                unit_price_fen: r.try_get("", "unit_price_fen")?,
                paid_fen: r.try_get("", "paid_fen")?,
                after_sales: r.try_get("", "after_sales")?,
                fulfillment_id: r.try_get("", "fulfillment_id")?,
            })
        })
        .collect::<Result<_, sea_orm::DbErr>>()
        .map_err(Into::into)
}

pub async fn timeline(
    core: &Core,
    ctx: &RequestCtx,
    order: Uuid,
) -> ServiceResult<Vec<OrderEventView>> {
    require(ctx, Permission::OrderRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            "SELECT id, at, kind, from_status, to_status, detail, actor FROM order_events
             WHERE tenant_id = $1 AND order_id = $2 ORDER BY id LIMIT 500",
            vec![ctx.tenant.0.into(), order.into()],
        ))
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(OrderEventView {
                id: r.try_get("", "id")?,
                at: r.try_get("", "at")?,
                kind: r.try_get("", "kind")?,
                from_status: r.try_get("", "from_status")?,
                to_status: r.try_get("", "to_status")?,
                detail: r.try_get("", "detail")?,
                actor: r.try_get("", "actor")?,
            })
        })
        .collect::<Result<_, sea_orm::DbErr>>()
        .map_err(Into::into)
}

/// The receiver: masked unless the caller holds PII_READ; unmasking is audited.
pub async fn receiver(
    core: &Core,
    ctx: &RequestCtx,
    order: &OrderView,
) -> ServiceResult<(Value, bool)> {
    if !ctx.can(Permission::PiiRead) || !order.has_receiver {
        return Ok((order.receiver_masked.clone(), false));
    }
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let ct: Option<Vec<u8>> = tx
        .query_one_raw(stmt(
            "SELECT receiver_ct FROM orders WHERE tenant_id = $1 AND id = $2",
            vec![ctx.tenant.0.into(), order.id.into()],
        ))
        .await?
        .map(|r| r.try_get("", "receiver_ct"))
        .transpose()?
        .flatten();
    let Some(ct) = ct else {
        return Ok((order.receiver_masked.clone(), false));
    };
    let dek = crate::pii::data_key(core, &tx).await?;
    let plain = dek
        .decrypt(&ct, &crate::pii::aad(ctx.tenant, "orders.receiver"))
        .map_err(|e| anyhow::anyhow!("receiver of {}: {e}", order.id))?;
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "pii.unmasked",
        Some(order.id.to_string()),
        json!({"entity": "Order", "fields": ["receiver"]}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    let v: Value = serde_json::from_str(&plain).map_err(anyhow::Error::from)?;
    Ok((v, true))
}

/// Seals a decrypted receiver under the tenant's key: (base64 ciphertext, hex merge key).
pub fn seal_receiver(
    dek: &uphub_domain::pii::DataKey,
    tenant: TenantId,
    r: &uphub_domain::order::Receiver,
) -> ServiceResult<(String, String)> {
    let plain = serde_json::to_string(r).map_err(anyhow::Error::from)?;
    let ct = dek.encrypt(&plain, &crate::pii::aad(tenant, "orders.receiver"));
    let key = dek.blind_index("receiver", &r.merge_key_material());
    Ok((B64.encode(ct), hex::encode(key)))
}
