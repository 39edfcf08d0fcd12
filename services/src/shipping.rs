//! Shipping a fulfilment: the operator hands the parcel to a carrier, the orders in it move to
//! SHIPPED (or PARTIALLY_SHIPPED), their reserved units leave the shelf (the stock settle
//! confirms them), and every marketplace order is reported shipped to its platform.
//!
//! The platform call is not made in the operator's request: the request records one `ship_backs`
//! row per marketplace order in the transaction that ships the parcel, and [`run_due`] claims
//! due rows (`next_at` doubles as the lease), calls the platform and backs off on throttling and
//! outages, like the payment close sweeper. A platform that refuses for good leaves the row
//! FAILED and the order flagged SHIP_BACK_FAILED; [`retry`] puts it back in line.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use uphub_channels::ChannelError;
use uphub_domain::catalog::ChannelType;
use uphub_domain::identity::Permission;
use uphub_domain::order::{OrderStatus, StockState, check_transition};
use uphub_domain::shipping::{
    Carrier, ShipLine, check_shippable, status_after_shipping, tracking_number,
};
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

use crate::audit::require;
use crate::fulfillment::{FulfillmentView, fulfillments};
use crate::orders::{LiveOrderEvent, actor, insert_events, publish_live};
use crate::{Core, ServiceError, ServiceResult};

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Attempts before a ship-back that keeps failing transiently is given up (FAILED).
const MAX_ATTEMPTS: i32 = 20;
/// A claimed ship-back belongs to its claimer this long: one that died mid-call is taken again.
const LEASE_SECS: f64 = 120.0;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONCURRENCY: usize = 8;

/// Seconds before attempt `attempts + 1`: 2 s doubling, at most 10 minutes. A platform ban
/// that announces its length pushes the next attempt past it.
fn backoff_secs(attempts: i32, ban: Option<Duration>) -> f64 {
    let exp = (attempts - 1).clamp(0, 9) as u32;
    let base = (2.0 * f64::from(2u32.pow(exp))).min(600.0);
    ban.map_or(base, |b| base.max(b.as_secs_f64() + 0.5))
}

/// One marketplace order's report of a parcel, as the operator sees it.
#[derive(Debug, Clone)]
pub struct ShipBackView {
    pub id: Uuid,
    pub order_id: Uuid,
    pub channel_type: String,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Ships fulfilment `id` with `carrier` under `tracking`. Shipping it again with the same
/// carrier and tracking number answers as the first time; anything else on a shipped or
/// cancelled fulfilment is a CONFLICT.
pub async fn ship(
    core: &Core,
    ctx: &RequestCtx,
    id: Uuid,
    carrier: Carrier,
    tracking: &str,
) -> ServiceResult<FulfillmentView> {
    require(ctx, Permission::FulfillmentWrite)?;
    let tracking = tracking_number(tracking)?;
    let t = ctx.tenant.0;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let f = tx
        .query_one_raw(stmt(
            "SELECT status, carrier, tracking_no FROM fulfillments
             WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            vec![t.into(), id.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    let status: String = f.try_get("", "status")?;
    match status.as_str() {
        "OPEN" => {}
        "SHIPPED" => {
            let same = f.try_get::<Option<String>>("", "carrier")?.as_deref()
                == Some(carrier.as_str())
                && f.try_get::<Option<String>>("", "tracking_no")?.as_deref()
                    == Some(tracking.as_str());
            tx.commit().await?;
            if same {
                return one(core, ctx, id).await;
            }
            return Err(ServiceError::conflict(
                "fulfillmentId",
                "the fulfilment has already shipped with another carrier or tracking number",
            ));
        }
        other => {
            return Err(ServiceError::conflict(
                "fulfillmentId",
                format!("the fulfilment is {other}; only open fulfilments ship"),
            ));
        }
    }

    // The orders in the parcel, locked, and every line of them (a parcel may carry only some).
    let orders = tx
        .query_all_raw(stmt(
            "SELECT id, status, stock_state, channel_id, channel_type, platform_order_id FROM orders
             WHERE tenant_id = $1 AND id IN (SELECT order_id FROM order_lines
                                              WHERE tenant_id = $1 AND fulfillment_id = $2)
             ORDER BY id FOR UPDATE",
            vec![t.into(), id.into()],
        ))
        .await?;
    if orders.is_empty() {
        return Err(ServiceError::conflict(
            "fulfillmentId",
            "the fulfilment holds no order lines",
        ));
    }
    struct Parcel {
        id: Uuid,
        status: OrderStatus,
        channel: Uuid,
        channel_type: String,
        platform_order_id: String,
    }
    let mut parcel = Vec::with_capacity(orders.len());
    for r in &orders {
        let oid: Uuid = r.try_get("", "id")?;
        let s: String = r.try_get("", "status")?;
        let status = OrderStatus::parse(&s).unwrap_or(OrderStatus::PendingPayment);
        let stock = StockState::parse(&r.try_get::<String>("", "stock_state")?);
        check_shippable(status, stock.unwrap_or(StockState::None))
            .map_err(|why| ServiceError::conflict("fulfillmentId", format!("order {oid} {why}")))?;
        parcel.push(Parcel {
            id: oid,
            status,
            channel: r.try_get("", "channel_id")?,
            channel_type: r.try_get("", "channel_type")?,
            platform_order_id: r.try_get("", "platform_order_id")?,
        });
    }
    let order_ids: Vec<Uuid> = parcel.iter().map(|p| p.id).collect();
    tx.execute_raw(stmt(
        "UPDATE fulfillments SET status = 'SHIPPED', carrier = $3, tracking_no = $4,
            shipped_at = now(), updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        vec![
            t.into(),
            id.into(),
            carrier.as_str().into(),
            tracking.clone().into(),
        ],
    ))
    .await?;
    let lines = tx
        .query_all_raw(stmt(
            "SELECT l.order_id, l.platform_line_id, l.after_sales = 'REFUNDED' AS refunded,
                    l.fulfillment_id = $3 AS in_parcel, COALESCE(f.status = 'SHIPPED', false) AS shipped
             FROM order_lines l
             LEFT JOIN fulfillments f ON f.tenant_id = l.tenant_id AND f.id = l.fulfillment_id
             WHERE l.tenant_id = $1 AND l.order_id = ANY($2)
             ORDER BY l.order_id, l.line_no",
            vec![t.into(), order_ids.clone().into(), id.into()],
        ))
        .await?;
    // Per order: its lines as shipping sees them, and the platform ids of those in the parcel.
    let mut by_order: HashMap<Uuid, (Vec<ShipLine>, Vec<String>, bool)> = HashMap::new();
    for l in &lines {
        let e = by_order
            .entry(l.try_get("", "order_id")?)
            .or_insert_with(|| (Vec::new(), Vec::new(), true));
        let refunded: bool = l.try_get("", "refunded")?;
        let in_parcel: Option<bool> = l.try_get("", "in_parcel")?;
        let in_parcel = in_parcel.unwrap_or(false);
        e.0.push(ShipLine {
            refunded,
            shipped: l.try_get("", "shipped")?,
        });
        if in_parcel && !refunded {
            e.1.push(l.try_get("", "platform_line_id")?);
        } else if !refunded {
            // A line of the order travels apart (another parcel, or not placed at all).
            e.2 = false;
        }
    }
    let who = actor(ctx);
    let mut events = Vec::new();
    let mut live = Vec::new();
    let mut moves: Vec<(Uuid, String)> = Vec::new();
    for p in &parcel {
        let (ship_lines, platform_lines, whole) =
            by_order
                .get(&p.id)
                .cloned()
                .unwrap_or((Vec::new(), Vec::new(), true));
        events.push(
            json!({"id": Uuid::now_v7(), "order_id": p.id, "kind": "SHIPPED",
            "detail": {"fulfillment": id, "carrier": carrier.as_str(), "trackingNumber": tracking},
            "actor": who}),
        );
        if let Some(to) = status_after_shipping(&ship_lines).filter(|to| *to != p.status) {
            check_transition(p.status, to).map_err(|e| {
                ServiceError::conflict("fulfillmentId", format!("order {}: {e}", p.id))
            })?;
            moves.push((p.id, to.as_str().to_string()));
            events.push(
                json!({"id": Uuid::now_v7(), "order_id": p.id, "kind": "STATUS_CHANGED",
                "from_status": p.status.as_str(), "to_status": to.as_str(),
                "detail": {"fulfillment": id}, "actor": who}),
            );
            live.push(LiveOrderEvent {
                order_id: p.id,
                kind: "STATUS_CHANGED".into(),
                status: to.as_str().into(),
            });
        }
        let marketplace = ChannelType::parse(&p.channel_type)
            .and_then(|c| carrier.platform_code(c))
            .is_some();
        if marketplace && !platform_lines.is_empty() {
            let only: Vec<String> = if whole { Vec::new() } else { platform_lines };
            tx.execute_raw(stmt(
                "INSERT INTO ship_backs (tenant_id, id, fulfillment_id, order_id, channel_id,
                    platform_order_id, platform_line_ids, carrier, tracking_no, next_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
                 ON CONFLICT (tenant_id, fulfillment_id, order_id) DO NOTHING",
                vec![
                    t.into(),
                    Uuid::now_v7().into(),
                    id.into(),
                    p.id.into(),
                    p.channel.into(),
                    p.platform_order_id.clone().into(),
                    only.into(),
                    carrier.as_str().into(),
                    tracking.clone().into(),
                ],
            ))
            .await?;
        }
    }
    if !moves.is_empty() {
        let (ids, statuses): (Vec<Uuid>, Vec<String>) = moves.into_iter().unzip();
        // The stock settle sees the new status and confirms the reserved units.
        tx.execute_raw(stmt(
            "UPDATE orders o SET status = x.s, stock_dirty = true, version = o.version + 1,
                updated_at = now()
             FROM unnest($2::uuid[], $3::text[]) AS x(id, s)
             WHERE o.tenant_id = $1 AND o.id = x.id",
            vec![t.into(), ids.into(), statuses.into()],
        ))
        .await?;
    }
    insert_events(&tx, events).await?;
    tx.commit().await?;
    publish_live(core, ctx.tenant, &live).await;
    one(core, ctx, id).await
}

async fn one(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<FulfillmentView> {
    fulfillments(core, ctx, &[id])
        .await?
        .into_iter()
        .next()
        .ok_or(ServiceError::NotFound)
}

/// Puts the FAILED ship-backs of a fulfilment back in line (after the operator fixed the cause,
/// e.g. reconnected the shop). Returns how many.
pub async fn retry(core: &Core, ctx: &RequestCtx, fulfillment: Uuid) -> ServiceResult<u64> {
    require(ctx, Permission::FulfillmentWrite)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let exists = tx
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM fulfillments WHERE tenant_id = $1 AND id = $2",
            vec![ctx.tenant.0.into(), fulfillment.into()],
        ))
        .await?
        .is_some();
    if !exists {
        return Err(ServiceError::NotFound);
    }
    let n = tx
        .execute_raw(stmt(
            "UPDATE ship_backs SET state = 'PENDING', attempts = 0, next_at = now(), updated_at = now()
             WHERE tenant_id = $1 AND fulfillment_id = $2 AND state = 'FAILED'",
            vec![ctx.tenant.0.into(), fulfillment.into()],
        ))
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// The ship-backs of `fulfillments`, oldest first.
pub async fn ship_backs(
    core: &Core,
    ctx: &RequestCtx,
    fulfillments: &[Uuid],
) -> ServiceResult<Vec<ShipBackView>> {
    require(ctx, Permission::OrderRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            "SELECT b.id, b.order_id, o.channel_type, b.state, b.attempts,
                    b.last_error, b.updated_at
             FROM ship_backs b JOIN orders o ON o.tenant_id = b.tenant_id AND o.id = b.order_id
             WHERE b.tenant_id = $1 AND b.fulfillment_id = ANY($2)
             ORDER BY b.created_at, b.id",
            vec![ctx.tenant.0.into(), fulfillments.to_vec().into()],
        ))
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(ShipBackView {
                id: r.try_get("", "id")?,
                order_id: r.try_get("", "order_id")?,
                channel_type: r.try_get("", "channel_type")?,
                state: r.try_get("", "state")?,
                attempts: r.try_get("", "attempts")?,
                last_error: r.try_get("", "last_error")?,
                updated_at: r.try_get("", "updated_at")?,
            })
        })
        .collect::<Result<_, sea_orm::DbErr>>()
        .map_err(Into::into)
}

// ---------------------------------------------------------------- sweeper ---

struct Job {
    tenant: TenantId,
    id: Uuid,
    order: Uuid,
    channel: Uuid,
    platform_order_id: String,
    lines: Vec<String>,
    carrier: String,
    tracking: String,
    attempts: i32,
}

enum Outcome {
    Done {
        note: &'static str,
    },
    Retry {
        error: String,
        ban: Option<Duration>,
    },
    Failed(String),
}

/// Reports due parcels to their platforms (every tenant), a few at a time; returns how many the
/// platforms now have. Safe to run from several workers: rows are claimed with SKIP LOCKED and
/// leased by pushing `next_at` ahead.
pub async fn run_due(core: &Core, batch: u64) -> ServiceResult<usize> {
    use futures_util::StreamExt;
    let rows = core
        .db
        .query_all_raw(stmt(
            "UPDATE ship_backs b SET next_at = now() + make_interval(secs => $2),
                attempts = b.attempts + 1, updated_at = now()
             FROM (SELECT tenant_id, id FROM ship_backs
                   WHERE state = 'PENDING' AND next_at <= now()
                   ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
             WHERE b.tenant_id = due.tenant_id AND b.id = due.id
             RETURNING b.tenant_id, b.id, b.order_id, b.channel_id, b.platform_order_id,
                b.platform_line_ids, b.carrier, b.tracking_no, b.attempts",
            vec![(batch as i64).into(), LEASE_SECS.into()],
        ))
        .await?;
    let mut jobs = Vec::with_capacity(rows.len());
    for r in rows {
        jobs.push(Job {
            tenant: TenantId(r.try_get("", "tenant_id")?),
            id: r.try_get("", "id")?,
            order: r.try_get("", "order_id")?,
            channel: r.try_get("", "channel_id")?,
            platform_order_id: r.try_get("", "platform_order_id")?,
            lines: r.try_get("", "platform_line_ids")?,
            carrier: r.try_get("", "carrier")?,
            tracking: r.try_get("", "tracking_no")?,
            attempts: r.try_get("", "attempts")?,
        });
    }
    let results: Vec<ServiceResult<bool>> = futures_util::stream::iter(jobs)
        .map(|job| ship_one(core, job))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut done = 0;
    for r in results {
        match r {
            Ok(true) => done += 1,
            Ok(false) => {}
            // The lease runs out and the row is taken again.
            Err(e) => tracing::warn!(error = %e, "recording a ship-back failed"),
        }
    }
    Ok(done)
}

async fn call_platform(core: &Core, job: &Job) -> ServiceResult<Outcome> {
    let tx = TenantTx::begin(&core.db, job.tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            "SELECT c.credentials_ct, s.type FROM channel_connections c
             JOIN sales_channels s ON s.tenant_id = c.tenant_id AND s.id = c.channel_id
             WHERE c.tenant_id = $1 AND c.channel_id = $2",
            vec![job.tenant.0.into(), job.channel.into()],
        ))
        .await?;
    let Some(row) = row else {
        tx.commit().await?;
        return Ok(Outcome::Failed("the shop is no longer connected".into()));
    };
    let dek = crate::pii::data_key(core, &tx).await?;
    tx.commit().await?;
    let ct: Vec<u8> = row.try_get("", "credentials_ct")?;
    let creds = crate::channel_sync::open_credentials(&dek, job.tenant, job.channel, &ct)?;
    let channel = ChannelType::parse(&row.try_get::<String>("", "type")?);
    let code = Carrier::parse(&job.carrier)
        .zip(channel)
        .and_then(|(c, ch)| c.platform_code(ch));
    let (Some(channel), Some(code)) = (channel, code) else {
        return Ok(Outcome::Failed(format!(
            "carrier {} has no code on this channel",
            job.carrier
        )));
    };
    let adapter = match crate::channel_sync::adapter_for(core, channel, creds) {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(Outcome::Failed("not a marketplace channel".into())),
        Err(e) => {
            return Ok(Outcome::Retry {
                error: e.to_string(),
                ban: None,
            });
        }
    };
    let call = adapter.ship(&job.platform_order_id, &job.lines, code, &job.tracking);
    Ok(match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => Outcome::Retry {
            error: "the platform did not answer in time".into(),
            ban: None,
        },
        Ok(Ok(())) => Outcome::Done { note: "shipped" },
        Ok(Err(ChannelError::RateLimited { retry_after })) => Outcome::Retry {
            error: format!("rate limited for {retry_after:?}"),
            ban: Some(retry_after),
        },
        Ok(Err(e)) if e.is_transient() => Outcome::Retry {
            error: e.to_string(),
            ban: None,
        },
        // A refusal after an earlier attempt whose answer was lost: the platform may already
        // show the parcel. Read the order back before calling it a failure.
        Ok(Err(e @ ChannelError::Rejected { .. })) => {
            match tokio::time::timeout(CALL_TIMEOUT, adapter.order(&job.platform_order_id)).await {
                Ok(Ok(o)) if o.status.shipped() => Outcome::Done {
                    note: "already shipped on the platform",
                },
                Ok(Ok(_)) => Outcome::Failed(e.to_string()),
                Ok(Err(read)) if read.is_transient() => Outcome::Retry {
                    error: format!("{e}; reading the order back: {read}"),
                    ban: None,
                },
                Ok(Err(_)) => Outcome::Failed(e.to_string()),
                Err(_) => Outcome::Retry {
                    error: format!("{e}; reading the order back timed out"),
                    ban: None,
                },
            }
        }
        Ok(Err(e)) => Outcome::Retry {
            error: e.to_string(),
            ban: None,
        },
    })
}

async fn ship_one(core: &Core, job: Job) -> ServiceResult<bool> {
    let outcome = call_platform(core, &job).await?;
    let (state, error, next) = match &outcome {
        Outcome::Done { .. } => ("DONE", None, 0.0),
        Outcome::Retry { error, ban } if job.attempts < MAX_ATTEMPTS => (
            "PENDING",
            Some(error.clone()),
            backoff_secs(job.attempts, *ban),
        ),
        Outcome::Retry { error, .. } | Outcome::Failed(error) => {
            ("FAILED", Some(error.clone()), 0.0)
        }
    };
    if let Outcome::Retry { error, .. } = &outcome {
        tracing::warn!(ship_back = %job.id, attempts = job.attempts, %error, "ship-back deferred");
    }
    let tx = TenantTx::begin(&core.db, job.tenant).await?;
    tx.execute_raw(stmt(
        "UPDATE ship_backs SET state = $3, last_error = $4,
            next_at = CASE WHEN $3 = 'PENDING' THEN now() + make_interval(secs => $5) END,
            updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        vec![
            job.tenant.0.into(),
            job.id.into(),
            state.into(),
            error.clone().into(),
            next.into(),
        ],
    ))
    .await?;
    let flag = match state {
        "DONE" => Some(("SHIP_BACK_DONE", false)),
        "FAILED" => Some(("SHIP_BACK_FAILED", true)),
        _ => None,
    };
    if let Some((kind, failed)) = flag {
        tx.execute_raw(stmt(
            "UPDATE orders SET needs_attention = CASE WHEN $3
                    THEN ARRAY(SELECT DISTINCT a FROM unnest(needs_attention || '{SHIP_BACK_FAILED}'::text[]) a)
                    ELSE array_remove(needs_attention, 'SHIP_BACK_FAILED') END,
                updated_at = now()
             WHERE tenant_id = $1 AND id = $2",
            vec![job.tenant.0.into(), job.order.into(), failed.into()],
        ))
        .await?;
        let note = match &outcome {
            Outcome::Done { note } => json!(note),
            _ => json!(error),
        };
        insert_events(
            &tx,
            vec![
                json!({"id": Uuid::now_v7(), "order_id": job.order, "kind": kind,
                "detail": {"shipBack": job.id, "trackingNumber": job.tracking, "note": note,
                           "attempts": job.attempts}}),
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(state == "DONE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_waits_out_an_announced_ban() {
        assert_eq!(backoff_secs(1, None), 2.0);
        assert_eq!(backoff_secs(2, None), 4.0);
        assert_eq!(backoff_secs(30, None), 600.0);
        assert_eq!(backoff_secs(1, Some(Duration::from_secs(10))), 10.5);
        assert_eq!(backoff_secs(10, Some(Duration::from_secs(1))), 600.0);
    }
}
