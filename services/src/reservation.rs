//! The reservation engine: several lines at once, all or nothing, for an owner (order, hold,
//! flash-sale ticket) with a TTL. Redis admits each line atomically (one script per tenant+SKU);
//! the winners commit in Postgres with guarded UPDATEs plus ledger rows in one short
//! transaction; a refused or failed commit gives the Redis units back. If Redis is unreachable
//! the same Postgres transaction runs alone: slower, never oversold.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uphub_domain::identity::InvalidInput;
use uphub_domain::inventory::{Movement, normalize_lines};
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

use crate::inventory::{LevelView, ledger, ledger_row, level_from};
use crate::stock_cache::{self, Admit};
use crate::{Core, ServiceError, ServiceResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub sku: Uuid,
    pub warehouse: Uuid,
    pub quantity: i32,
}

#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// ORDER, HOLD or TICKET; with `owner_id` unique per tenant (a retry finds the first result).
    pub owner_kind: String,
    pub owner_id: String,
    /// Orders of a live-stream campaign draw from that campaign's holds first.
    pub campaign: Option<String>,
    pub lines: Vec<Line>,
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub lines: Vec<(Line, Option<Uuid>)>,
    pub levels: Vec<LevelView>,
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// How long an admission may wait for Redis before the request is decided in Postgres alone.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(1);

/// A line admitted in Redis, remembered so it can be given back.
struct Admitted {
    line: Line,
    field: String,
    from_hold: bool,
}

/// Reserves all lines or none.
pub async fn reserve(
    core: &Core,
    ctx: &RequestCtx,
    req: ReserveRequest,
) -> ServiceResult<Reservation> {
    let raw: Vec<(Uuid, Uuid, i32)> = req
        .lines
        .iter()
        .map(|l| (l.sku, l.warehouse, l.quantity))
        .collect();
    let lines: Vec<Line> = normalize_lines(&raw)?
        .into_iter()
        .map(|(sku, warehouse, quantity)| Line {
            sku,
            warehouse,
            quantity,
        })
        .collect();
    if req.owner_id.is_empty() || req.owner_id.len() > 128 {
        return Err(InvalidInput {
            field: "ownerId",
            message: "must be 1-128 characters".into(),
        }
        .into());
    }
    let campaign = req
        .campaign
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());

    // 1. Admission in Redis, line by line in a global order; the first refusal gives back the rest.
    let mut admitted: Vec<Admitted> = Vec::with_capacity(lines.len());
    let mut redis_ok = true;
    for line in &lines {
        match admit_line(core, ctx.tenant, line, campaign).await {
            Ok(Some(a)) => admitted.push(a),
            Ok(None) => {
                compensate(core, ctx.tenant, &admitted).await;
                return Err(ServiceError::SoldOut { sku: line.sku });
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis admission unavailable; deciding in Postgres alone");
                compensate(core, ctx.tenant, &admitted).await;
                admitted.clear();
                redis_ok = false;
                break;
            }
        }
    }

    // 2. Postgres decides.
    let plan: Vec<(Line, bool)> = if redis_ok {
        admitted.iter().map(|a| (a.line, a.from_hold)).collect()
    } else {
        lines.iter().map(|l| (*l, campaign.is_some())).collect()
    };
    if redis_ok && campaign.is_none() {
        // Group commit: this request shares one Postgres transaction with the other admitted
        // requests of the tenant in flight now. A refused batch answers None; then it commits
        // alone below, with the units Redis already admitted.
        let item = BatchItem {
            owner_kind: req.owner_kind.clone(),
            owner_id: req.owner_id.clone(),
            ttl: req.ttl,
            actor: ctx.principal.actor_id(),
            lines: admitted.iter().map(|a| a.line).collect(),
        };
        if let Some(r) = core.reserve_batcher.submit(core, ctx.tenant, item).await {
            return Ok(r);
        }
    }
    match commit(core, ctx, &req, campaign, &plan, !redis_ok).await {
        Ok(r) if !redis_ok => {
            // Decided without Redis: tell the cache afterwards (in the background, so a Redis
            // outage costs nothing here; if it fails the reconciler repairs the drift).
            let changes: Vec<(Uuid, String, i32)> = r
                .lines
                .iter()
                .map(|(l, hold)| {
                    let field = match (hold, campaign) {
                        (Some(_), Some(c)) => stock_cache::hold_field(c, l.warehouse),
                        _ => stock_cache::general_field(l.warehouse),
                    };
                    (l.sku, field, -l.quantity)
                })
                .collect();
            let (bg, tenant) = (core.clone(), ctx.tenant);
            tokio::spawn(async move {
                for (sku, field, d) in changes {
                    let _ = stock_cache::bump(&bg, tenant, sku, &[(field, d)]).await;
                }
            });
            stock_cache::publish_levels(core, ctx.tenant, &r.levels).await;
            Ok(r)
        }
        Ok(r) => {
            stock_cache::publish_levels(core, ctx.tenant, &r.levels).await;
            Ok(r)
        }
        Err(e) => {
            if redis_ok {
                compensate(core, ctx.tenant, &admitted).await;
            }
            Err(e)
        }
    }
}

/// What [`reserve_many`] decided for one request.
#[derive(Debug)]
pub enum Verdict {
    Reserved(Reservation),
    SoldOut {
        sku: Uuid,
    },
    /// Not decided here (a campaign request, Redis unavailable, a conflict or a drifted level
    /// in the batch): the caller reserves it alone through [`reserve`].
    Alone,
}

/// Reserves for many owners at once, all or nothing per owner: Redis admits each request's lines
/// as [`reserve`] does; then ONE Postgres transaction commits every admitted request, with ONE
/// guarded UPDATE per level for the sum of its requests (a hot SKU takes one row update per
/// batch, not one per order). If any part of that transaction refuses (a drifted level, an owner
/// that already holds a reservation), nothing of it stays, every admitted unit goes back to Redis
/// and each of those requests is answered `Alone`. Campaign (hold) requests are `Alone` too.
pub async fn reserve_many(
    core: &Core,
    ctx: &RequestCtx,
    reqs: &[ReserveRequest],
) -> ServiceResult<Vec<Verdict>> {
    use futures_util::StreamExt;
    let mut verdicts: Vec<Verdict> = reqs.iter().map(|_| Verdict::Alone).collect();
    let mut plans: Vec<Option<Vec<Line>>> = Vec::with_capacity(reqs.len());
    for r in reqs {
        let raw: Vec<(Uuid, Uuid, i32)> = r
            .lines
            .iter()
            .map(|l| (l.sku, l.warehouse, l.quantity))
            .collect();
        let ok = r.campaign.as_deref().is_none_or(|c| c.trim().is_empty())
            && !r.owner_id.is_empty()
            && r.owner_id.len() <= 128;
        plans.push(match normalize_lines(&raw) {
            Ok(lines) if ok => Some(
                lines
                    .into_iter()
                    .map(|(sku, warehouse, quantity)| Line {
                        sku,
                        warehouse,
                        quantity,
                    })
                    .collect(),
            ),
            _ => None,
        });
    }
    // 1. Redis admission, request by request (a few in flight), each all or nothing.
    // Futures collected first: a closure inside the stream trips the `Send` check of callers'
    // futures (higher-ranked lifetimes).
    let tenant = ctx.tenant;
    let calls: Vec<_> = plans
        .iter()
        .enumerate()
        .filter_map(|(n, p)| {
            p.as_ref().map(|lines| async move {
                let mut admitted = Vec::with_capacity(lines.len());
                for line in lines {
                    match admit_line(core, tenant, line, None).await {
                        Ok(Some(a)) => admitted.push(a),
                        Ok(None) => {
                            compensate(core, tenant, &admitted).await;
                            return (n, Err(Some(line.sku)));
                        }
                        Err(_) => {
                            compensate(core, tenant, &admitted).await;
                            return (n, Err(None));
                        }
                    }
                }
                (n, Ok(admitted))
            })
        })
        .collect();
    // Per request: its admitted lines, or the SKU that was sold out (None: Redis unavailable).
    type Admission = (usize, Result<Vec<Admitted>, Option<Uuid>>);
    let admissions: Vec<Admission> = futures_util::stream::iter(calls)
        .buffer_unordered(16)
        .collect()
        .await;
    let mut admitted: Vec<(usize, Vec<Admitted>)> = Vec::new();
    for (n, a) in admissions {
        match a {
            Ok(lines) => admitted.push((n, lines)),
            Err(Some(sku)) => verdicts[n] = Verdict::SoldOut { sku },
            Err(None) => {}
        }
    }
    if admitted.is_empty() {
        return Ok(verdicts);
    }
    admitted.sort_by_key(|(n, _)| *n);
    // 2. Postgres decides the admitted requests together.
    let items: Vec<BatchItem> = admitted
        .iter()
        .map(|(n, lines)| BatchItem {
            owner_kind: reqs[*n].owner_kind.clone(),
            owner_id: reqs[*n].owner_id.clone(),
            ttl: reqs[*n].ttl,
            actor: ctx.principal.actor_id(),
            lines: lines.iter().map(|a| a.line).collect(),
        })
        .collect();
    match commit_many(core, ctx.tenant, &items).await {
        Ok((reservations, levels)) => {
            for ((n, a), r) in admitted.iter().zip(reservations) {
                match r {
                    Some(r) => verdicts[*n] = Verdict::Reserved(r),
                    // Its owner holds a reservation already: it is decided alone.
                    None => compensate(core, ctx.tenant, a).await,
                }
            }
            stock_cache::publish_levels(core, ctx.tenant, &levels).await;
        }
        Err(e) => {
            tracing::info!(error = %e, n = admitted.len(), "batch reservation refused; reserving alone");
            for (_, a) in &admitted {
                compensate(core, ctx.tenant, a).await;
            }
        }
    }
    Ok(verdicts)
}

/// Phase 1 of a commit: reservations, the lines and RESERVE ledger rows of general-stock lines,
/// and the dirty marks, in ONE statement that takes no hot lock. Column-wise; lines name their
/// reservation. A campaign of "" is none.
#[derive(Default)]
struct PhaseOne {
    ids: Vec<Uuid>,
    kinds: Vec<String>,
    owners: Vec<String>,
    campaigns: Vec<String>,
    expiries: Vec<DateTime<Utc>>,
    line_res: Vec<Uuid>,
    line_no: Vec<i32>,
    line_sku: Vec<Uuid>,
    line_wh: Vec<Uuid>,
    line_qty: Vec<i32>,
    /// Who reserved, per line (the nil UUID for none: a batch mixes principals).
    line_actor: Vec<Uuid>,
    dirty: Vec<Uuid>,
}

impl PhaseOne {
    /// Inserts it all; returns the reservations that were new. An owner that already holds one
    /// (or appears twice) is skipped with its lines and ledger rows; the caller refuses it.
    async fn insert(self, tx: &TenantTx) -> ServiceResult<Vec<Uuid>> {
        let ledger_ids: Vec<Uuid> = self.line_res.iter().map(|_| Uuid::now_v7()).collect();
        let rows = tx
            .query_all_raw(stmt(
                "WITH r AS (
                   INSERT INTO reservations (tenant_id, id, owner_kind, owner_id, campaign, status, expires_at)
                   SELECT $1, x.i, x.k, x.o, NULLIF(x.c, ''), 'ACTIVE', x.e
                   FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) AS x(i, k, o, c, e)
                   ON CONFLICT (tenant_id, owner_kind, owner_id) DO NOTHING RETURNING id),
                 l AS (
                   INSERT INTO reservation_lines (tenant_id, reservation_id, line_no, sku_id, warehouse_id, quantity)
                   SELECT $1, x.r, x.n, x.s, x.w, x.q
                   FROM unnest($7::uuid[], $8::int[], $9::uuid[], $10::uuid[], $11::int[]) AS x(r, n, s, w, q)
                   WHERE x.r IN (SELECT id FROM r)),
                 g AS (
                   INSERT INTO inventory_ledger (tenant_id, id, sku_id, warehouse_id, kind, delta_reserved, owner_kind, owner_id, actor_id)
                   SELECT $1, x.i, x.s, x.w, 'RESERVE', x.q, 'RESERVATION', x.r::text,
                          NULLIF(x.a, '00000000-0000-0000-0000-000000000000'::uuid)
                   FROM unnest($12::uuid[], $9::uuid[], $10::uuid[], $11::int[], $7::uuid[], $13::uuid[]) AS x(i, s, w, q, r, a)
                   WHERE x.r IN (SELECT id FROM r)),
                 d AS (
                   INSERT INTO inventory_dirty (tenant_id, sku_id)
                   SELECT $1, s FROM (SELECT DISTINCT s FROM unnest($14::uuid[]) AS s ORDER BY s) AS y
                   ON CONFLICT DO NOTHING)
                 SELECT id FROM r",
                vec![
                    tx.tenant().0.into(),
                    self.ids.into(),
                    self.kinds.into(),
                    self.owners.into(),
                    self.campaigns.into(),
                    self.expiries.into(),
                    self.line_res.into(),
                    self.line_no.into(),
                    self.line_sku.into(),
                    self.line_wh.into(),
                    self.line_qty.into(),
                    ledger_ids.into(),
                    self.line_actor.into(),
                    self.dirty.into(),
                ],
            ))
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("", "id"))
            .collect::<Result<_, _>>()?)
    }
}

/// One request of a batch commit, its lines already admitted by Redis (general stock only).
pub(crate) struct BatchItem {
    owner_kind: String,
    owner_id: String,
    ttl: Duration,
    actor: Option<Uuid>,
    lines: Vec<Line>,
}

/// The Postgres half of [`reserve_many`] and of the group commit: one statement inserts every
/// reservation, line, ledger row and dirty mark (no hot lock yet); then one guarded UPDATE takes
/// the summed units of every level. An item whose owner already holds a reservation is left out
/// (None) and the rest commit; a guarded UPDATE that refuses rolls all of it back.
async fn commit_many(
    core: &Core,
    tenant: TenantId,
    items: &[BatchItem],
) -> ServiceResult<(Vec<Option<Reservation>>, Vec<LevelView>)> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let now = core.now();
    let mut out = Vec::with_capacity(items.len());
    let mut p = PhaseOne::default();
    for item in items {
        let id = Uuid::now_v7();
        let expires_at = now
            + chrono::Duration::from_std(item.ttl)
                .unwrap_or_else(|_| chrono::Duration::minutes(15));
        p.ids.push(id);
        p.kinds.push(item.owner_kind.clone());
        p.owners.push(item.owner_id.clone());
        p.campaigns.push(String::new());
        p.expiries.push(expires_at);
        for (k, line) in item.lines.iter().enumerate() {
            p.line_res.push(id);
            p.line_no.push(k as i32);
            p.line_sku.push(line.sku);
            p.line_wh.push(line.warehouse);
            p.line_qty.push(line.quantity);
            p.line_actor.push(item.actor.unwrap_or_default());
        }
        out.push(Reservation {
            id,
            expires_at,
            lines: item.lines.iter().map(|l| (*l, None)).collect(),
            levels: Vec::new(),
        });
    }
    p.dirty = p.line_sku.clone();
    let inserted: std::collections::HashSet<Uuid> = p.insert(&tx).await?.into_iter().collect();
    if inserted.is_empty() {
        return Ok((out.into_iter().map(|_| None).collect(), Vec::new()));
    }
    let mut takes: std::collections::BTreeMap<(Uuid, Uuid), i32> = Default::default();
    for r in out.iter().filter(|r| inserted.contains(&r.id)) {
        for (line, _) in &r.lines {
            *takes.entry((line.sku, line.warehouse)).or_default() += line.quantity;
        }
    }
    // Levels in one global order, so two batches over the same SKUs cannot deadlock.
    let (t_sku, t_wh, t_qty): (Vec<Uuid>, Vec<Uuid>, Vec<i32>) =
        takes.iter().map(|((s, w), q)| (*s, *w, *q)).fold(
            (vec![], vec![], vec![]),
            |(mut a, mut b, mut c), (s, w, q)| {
                a.push(s);
                b.push(w);
                c.push(q);
                (a, b, c)
            },
        );
    let rows = tx
        .query_all_raw(stmt(
            "UPDATE inventory_levels l SET reserved = l.reserved + x.q, updated_at = now()
             FROM (SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::int[]) AS u(s, w, q) ORDER BY s, w) AS x
             WHERE l.tenant_id = $1 AND l.sku_id = x.s AND l.warehouse_id = x.w
               AND l.on_hand - l.reserved - l.held >= x.q
             RETURNING l.sku_id, l.warehouse_id, l.on_hand, l.reserved, l.held",
            vec![tenant.0.into(), t_sku.into(), t_wh.into(), t_qty.into()],
        ))
        .await?;
    if rows.len() != takes.len() {
        return Err(ServiceError::conflict(
            "lines",
            format!(
                "guarded stock update matched {} of {} levels",
                rows.len(),
                takes.len()
            ),
        ));
    }
    let levels = rows
        .iter()
        .map(level_from)
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()?;
    tx.commit().await?;
    let mut out: Vec<Option<Reservation>> = out
        .into_iter()
        .map(|r| inserted.contains(&r.id).then_some(r))
        .collect();
    for r in out.iter_mut().flatten() {
        r.levels = levels
            .iter()
            .filter(|l| {
                r.lines
                    .iter()
                    .any(|(x, _)| x.sku == l.sku_id && x.warehouse == l.warehouse_id)
            })
            .cloned()
            .collect();
    }
    Ok((out, levels))
}

async fn admit_line(
    core: &Core,
    tenant: TenantId,
    line: &Line,
    campaign: Option<&str>,
) -> redis::RedisResult<Option<Admitted>> {
    let breaker = &core.stock_breaker;
    let now_ms = core.now().timestamp_millis();
    if breaker.load(std::sync::atomic::Ordering::Relaxed) > now_ms {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "stock cache circuit open",
        )));
    }
    let trip = |e: redis::RedisError| {
        // Skip Redis for two seconds: callers pay one timeout per outage, not one per request.
        breaker.store(now_ms + 2000, std::sync::atomic::Ordering::Relaxed);
        e
    };
    for attempt in 0..2 {
        let verdict = tokio::time::timeout(
            ADMIT_TIMEOUT,
            stock_cache::admit(
                core,
                tenant,
                line.sku,
                line.warehouse,
                line.quantity,
                campaign,
            ),
        )
        .await
        .map_err(|_| {
            // The script may still run. Give its units back now: if it did not run, the hash is
            // too high, which only over-admits until the reconciler — never an oversell.
            let (core, sku, field, q) = (
                core.clone(),
                line.sku,
                stock_cache::general_field(line.warehouse),
                line.quantity,
            );
            tokio::spawn(async move {
                let _ = stock_cache::bump(&core, tenant, sku, &[(field, q)]).await;
            });
            redis::RedisError::from((redis::ErrorKind::Io, "stock cache admission timed out"))
        })
        .and_then(|r| r)
        .map_err(trip)?;
        match verdict {
            Admit::FromHold => {
                return Ok(Some(Admitted {
                    line: *line,
                    field: stock_cache::hold_field(campaign.unwrap_or_default(), line.warehouse),
                    from_hold: true,
                }));
            }
            Admit::General => {
                return Ok(Some(Admitted {
                    line: *line,
                    field: stock_cache::general_field(line.warehouse),
                    from_hold: false,
                }));
            }
            Admit::SoldOut => return Ok(None),
            Admit::Cold if attempt == 0 => {
                if let Err(e) = stock_cache::load_sku(core, tenant, line.sku, true).await {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "warming stock cache failed",
                        e.to_string(),
                    )));
                }
            }
            Admit::Cold => return Ok(None),
        }
    }
    Ok(None)
}

/// Gives admitted units back to Redis (best effort; the reconciler covers a failure here).
async fn compensate(core: &Core, tenant: TenantId, admitted: &[Admitted]) {
    for a in admitted {
        if let Err(e) = stock_cache::bump(
            core,
            tenant,
            a.line.sku,
            &[(a.field.clone(), a.line.quantity)],
        )
        .await
        {
            tracing::warn!(error = %e, sku = %a.line.sku, "compensation failed; reconciler will repair");
        }
    }
}

/// The Postgres half: guarded UPDATEs (the fence), the reservation, its lines and ledger rows.
/// With `try_hold_then_general` (no Redis verdict) a campaign line takes a hold when one has
/// room, else general stock.
async fn commit(
    core: &Core,
    ctx: &RequestCtx,
    req: &ReserveRequest,
    campaign: Option<&str>,
    plan: &[(Line, bool)],
    try_hold_then_general: bool,
) -> ServiceResult<Reservation> {
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let id = Uuid::now_v7();
    let expires_at = core.now()
        + chrono::Duration::from_std(req.ttl).unwrap_or_else(|_| chrono::Duration::minutes(15));
    let owner_id_text = id.to_string();
    let owner = Some(("RESERVATION", owner_id_text.as_str()));
    // Phase 1 takes no hot lock and is ONE statement: the reservation, the lines and ledger rows
    // of general-stock lines, and the dirty marks. If a guarded UPDATE below refuses, the
    // rollback removes all of it.
    let general: Vec<(usize, &Line)> = plan
        .iter()
        .enumerate()
        .filter(|(_, (_, from_hold))| !*from_hold || campaign.is_none())
        .map(|(n, (l, _))| (n, l))
        .collect();
    let inserted = PhaseOne {
        ids: vec![id],
        kinds: vec![req.owner_kind.clone()],
        owners: vec![req.owner_id.clone()],
        campaigns: vec![campaign.unwrap_or_default().to_string()],
        expiries: vec![expires_at],
        line_res: general.iter().map(|_| id).collect(),
        line_no: general.iter().map(|(n, _)| *n as i32).collect(),
        line_sku: general.iter().map(|(_, l)| l.sku).collect(),
        line_wh: general.iter().map(|(_, l)| l.warehouse).collect(),
        line_qty: general.iter().map(|(_, l)| l.quantity).collect(),
        line_actor: general
            .iter()
            .map(|_| ctx.principal.actor_id().unwrap_or_default())
            .collect(),
        dirty: plan.iter().map(|(l, _)| l.sku).collect(),
    }
    .insert(&tx)
    .await?;
    if inserted.is_empty() {
        return Err(ServiceError::conflict(
            "ownerId",
            "this owner already holds a reservation",
        ));
    }
    // Phase 2 holds the hot rows only from the guarded UPDATEs to COMMIT.
    let mut out_lines = Vec::with_capacity(plan.len());
    let mut levels = Vec::with_capacity(plan.len());
    for (n, (line, from_hold)) in plan.iter().enumerate() {
        let wants_hold = *from_hold && campaign.is_some();
        let hold_id = match campaign.filter(|_| wants_hold) {
            Some(c) => draw_hold(&tx, line, c).await?,
            None => None,
        };
        if wants_hold && hold_id.is_none() && !try_hold_then_general {
            return Err(ServiceError::SoldOut { sku: line.sku });
        }
        let row = if hold_id.is_some() {
            tx.query_one_raw(stmt(
                "UPDATE inventory_levels SET held = held - $4, reserved = reserved + $4, updated_at = now()
                 WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3 AND held >= $4
                 RETURNING sku_id, warehouse_id, on_hand, reserved, held",
                vec![ctx.tenant.0.into(), line.sku.into(), line.warehouse.into(), line.quantity.into()],
            ))
            .await?
        } else {
            tx.query_one_raw(stmt(
                "UPDATE inventory_levels SET reserved = reserved + $4, updated_at = now()
                 WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3 AND on_hand - reserved - held >= $4
                 RETURNING sku_id, warehouse_id, on_hand, reserved, held",
                vec![ctx.tenant.0.into(), line.sku.into(), line.warehouse.into(), line.quantity.into()],
            ))
            .await?
        };
        let Some(row) = row else {
            return Err(ServiceError::SoldOut { sku: line.sku });
        };
        levels.push(level_from(&row)?);
        if wants_hold {
            // Decided only now: from the hold, or (Postgres-only path) from general stock.
            insert_line(&tx, id, n, line, hold_id).await?;
            let m = if hold_id.is_some() {
                Movement::ReserveFromHold(line.quantity)
            } else {
                Movement::Reserve(line.quantity)
            };
            ledger_row(&tx, ctx, line.sku, line.warehouse, m, None, owner).await?;
        }
        out_lines.push((*line, hold_id));
    }
    tx.commit().await?;
    Ok(Reservation {
        id,
        expires_at,
        lines: out_lines,
        levels,
    })
}

async fn insert_line(
    tx: &TenantTx,
    id: Uuid,
    n: usize,
    line: &Line,
    hold_id: Option<Uuid>,
) -> ServiceResult<()> {
    tx.execute_raw(stmt(
        "INSERT INTO reservation_lines (tenant_id, reservation_id, line_no, sku_id, warehouse_id, quantity, hold_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![tx.tenant().0.into(), id.into(), (n as i32).into(), line.sku.into(), line.warehouse.into(), line.quantity.into(), hold_id.into()],
    ))
    .await?;
    Ok(())
}

async fn draw_hold(tx: &TenantTx, line: &Line, campaign: &str) -> ServiceResult<Option<Uuid>> {
    let row = tx
        .query_one_raw(stmt(
            "UPDATE stock_holds SET remaining = remaining - $5
             WHERE (tenant_id, id) = (
               SELECT tenant_id, id FROM stock_holds
               WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3 AND campaign = $4
                 AND status = 'ACTIVE' AND expires_at > now() AND remaining >= $5
               ORDER BY expires_at LIMIT 1 FOR UPDATE)
             RETURNING id",
            vec![
                tx.tenant().0.into(),
                line.sku.into(),
                line.warehouse.into(),
                campaign.into(),
                line.quantity.into(),
            ],
        ))
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get("", "id")?),
        None => None,
    })
}

struct StoredLine {
    line_no: i32,
    sku: Uuid,
    warehouse: Uuid,
    quantity: i32,
    hold_id: Option<Uuid>,
}

async fn lock_active(tx: &TenantTx, id: Uuid) -> ServiceResult<Vec<StoredLine>> {
    let status = tx
        .query_one_raw(stmt(
            "SELECT status FROM reservations WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            vec![tx.tenant().0.into(), id.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    let status: String = status.try_get("", "status")?;
    if status != "ACTIVE" {
        return Err(ServiceError::conflict(
            "id",
            format!("the reservation is {status}, not ACTIVE"),
        ));
    }
    let rows = tx
        .query_all_raw(stmt(
            "SELECT line_no, sku_id, warehouse_id, quantity, hold_id FROM reservation_lines
             WHERE tenant_id = $1 AND reservation_id = $2 ORDER BY sku_id, warehouse_id, line_no",
            vec![tx.tenant().0.into(), id.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredLine {
                line_no: r.try_get("", "line_no")?,
                sku: r.try_get("", "sku_id")?,
                warehouse: r.try_get("", "warehouse_id")?,
                quantity: r.try_get("", "quantity")?,
                hold_id: r.try_get("", "hold_id")?,
            })
        })
        .collect()
}

/// Gives `quantity` units of a reserved line back: to its hold when the hold is still active,
/// else to general stock. Returns the level after the move and the cache field to bump.
async fn give_back(
    tx: &TenantTx,
    ctx: &RequestCtx,
    l: &StoredLine,
    quantity: i32,
    reason: &str,
    owner: &str,
) -> ServiceResult<(LevelView, String)> {
    let campaign = match l.hold_id {
        Some(h) => tx
            .query_one_raw(stmt(
                "UPDATE stock_holds SET remaining = remaining + $3
                 WHERE tenant_id = $1 AND id = $2 AND status = 'ACTIVE' AND expires_at > now()
                 RETURNING campaign",
                vec![ctx.tenant.0.into(), h.into(), quantity.into()],
            ))
            .await?
            .map(|r| r.try_get::<String>("", "campaign"))
            .transpose()?,
        None => None,
    };
    let (sql, m, field) = match &campaign {
        Some(c) => (
            "UPDATE inventory_levels SET reserved = reserved - $4, held = held + $4, updated_at = now()
             WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3 RETURNING sku_id, warehouse_id, on_hand, reserved, held",
            Movement::ReleaseToHold(quantity),
            stock_cache::hold_field(c, l.warehouse),
        ),
        None => (
            "UPDATE inventory_levels SET reserved = reserved - $4, updated_at = now()
             WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3 RETURNING sku_id, warehouse_id, on_hand, reserved, held",
            Movement::Release(quantity),
            stock_cache::general_field(l.warehouse),
        ),
    };
    let row = tx
        .query_one_raw(stmt(
            sql,
            vec![
                ctx.tenant.0.into(),
                l.sku.into(),
                l.warehouse.into(),
                quantity.into(),
            ],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    let level = level_from(&row)?;
    ledger(
        tx,
        ctx,
        l.sku,
        l.warehouse,
        m,
        Some(reason),
        Some(("RESERVATION", owner)),
    )
    .await?;
    Ok((level, field))
}

/// After the commit: the Redis counters and the live-stock subscribers learn of the moves.
async fn after_give_back(
    core: &Core,
    ctx: &RequestCtx,
    cache_changes: Vec<(Uuid, String, i32)>,
    levels: &[LevelView],
) {
    for (sku, field, q) in cache_changes {
        if let Err(e) = stock_cache::bump(core, ctx.tenant, sku, &[(field, q)]).await {
            tracing::warn!(error = %e, "stock cache release failed; reconciler will repair");
        }
    }
    stock_cache::publish_levels(core, ctx.tenant, levels).await;
}

/// Ends an unpaid reservation (cancel or timeout): units return to their hold when it is still
/// active, else to general stock.
pub async fn release(core: &Core, ctx: &RequestCtx, id: Uuid, expired: bool) -> ServiceResult<()> {
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let lines = lock_active(&tx, id).await?;
    let owner = id.to_string();
    let reason = if expired { "EXPIRED" } else { "RELEASED" };
    let mut cache_changes: Vec<(Uuid, String, i32)> = Vec::new();
    let mut levels = Vec::new();
    for l in &lines {
        let (level, field) = give_back(&tx, ctx, l, l.quantity, reason, &owner).await?;
        levels.push(level);
        cache_changes.push((l.sku, field, l.quantity));
    }
    tx.execute_raw(stmt(
        "UPDATE reservations SET status = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2",
        vec![ctx.tenant.0.into(), id.into(), reason.into()],
    ))
    .await?;
    tx.commit().await?;
    after_give_back(core, ctx, cache_changes, &levels).await;
    Ok(())
}

/// Gives back one part of an active reservation (an order line refunded before shipping):
/// `quantity` units of `sku` from `warehouse`, the rest stays reserved. Idempotent per `part`
/// (the order line id): a part given back once is not given back again. A reservation left
/// with nothing ends RELEASED. Returns whether units moved.
pub async fn release_part(
    core: &Core,
    ctx: &RequestCtx,
    id: Uuid,
    part: Uuid,
    sku: Uuid,
    warehouse: Uuid,
    quantity: i32,
) -> ServiceResult<bool> {
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let lines = lock_active(&tx, id).await?;
    let done = tx
        .query_one_raw(stmt(
            "SELECT $3 = ANY(released_parts) AS done FROM reservations WHERE tenant_id = $1 AND id = $2",
            vec![ctx.tenant.0.into(), id.into(), part.into()],
        ))
        .await?
        .map(|r| r.try_get::<bool>("", "done"))
        .transpose()?
        .unwrap_or(false);
    if done {
        tx.commit().await?;
        return Ok(false);
    }
    let owner = id.to_string();
    let mut left = quantity.max(0);
    let mut cache_changes: Vec<(Uuid, String, i32)> = Vec::new();
    let mut levels = Vec::new();
    for l in lines
        .iter()
        .filter(|l| l.sku == sku && l.warehouse == warehouse)
    {
        if left == 0 {
            break;
        }
        let take = left.min(l.quantity);
        let (level, field) = give_back(&tx, ctx, l, take, "REFUNDED", &owner).await?;
        levels.push(level);
        cache_changes.push((l.sku, field, take));
        // Rows keep a positive quantity: a line given back whole goes.
        let sql = if take == l.quantity {
            "DELETE FROM reservation_lines
             WHERE tenant_id = $1 AND reservation_id = $2 AND line_no = $3 AND $4 > 0"
        } else {
            "UPDATE reservation_lines SET quantity = quantity - $4
             WHERE tenant_id = $1 AND reservation_id = $2 AND line_no = $3"
        };
        tx.execute_raw(stmt(
            sql,
            vec![
                ctx.tenant.0.into(),
                id.into(),
                l.line_no.into(),
                take.into(),
            ],
        ))
        .await?;
        left -= take;
    }
    if left > 0 {
        tracing::warn!(reservation = %id, %part, left, "the reservation held less of the part than asked");
    }
    let gone = lines.iter().map(|l| l.quantity).sum::<i32>() <= quantity.max(0) - left;
    tx.execute_raw(stmt(
        "UPDATE reservations SET released_parts = array_append(released_parts, $3),
            status = CASE WHEN $4 THEN 'RELEASED' ELSE status END, updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        vec![ctx.tenant.0.into(), id.into(), part.into(), gone.into()],
    ))
    .await?;
    tx.commit().await?;
    let moved = !cache_changes.is_empty();
    after_give_back(core, ctx, cache_changes, &levels).await;
    Ok(moved)
}

/// Paid: reserved units leave the shelf. Activation-code lines are issued their codes here,
/// each code once (SKIP LOCKED keeps concurrent confirmations apart).
pub async fn confirm(
    core: &Core,
    ctx: &RequestCtx,
    id: Uuid,
) -> ServiceResult<Vec<(Uuid, Vec<String>)>> {
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let lines = lock_active(&tx, id).await?;
    let owner = id.to_string();
    let mut issued = Vec::new();
    for l in &lines {
        tx.execute_raw(stmt(
            "UPDATE inventory_levels SET reserved = reserved - $4, on_hand = on_hand - $4, updated_at = now()
             WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3",
            vec![ctx.tenant.0.into(), l.sku.into(), l.warehouse.into(), l.quantity.into()],
        ))
        .await?;
        ledger(
            &tx,
            ctx,
            l.sku,
            l.warehouse,
            Movement::Confirm(l.quantity),
            None,
            Some(("RESERVATION", &owner)),
        )
        .await?;
        if crate::inventory::sku_kind(&tx, l.sku).await?.as_deref() == Some("ACTIVATION_CODE") {
            let rows = tx
                .query_all_raw(stmt(
                    "UPDATE activation_codes SET status = 'ISSUED', reservation_id = $3, issued_at = now()
                     WHERE (tenant_id, id) IN (
                       SELECT tenant_id, id FROM activation_codes
                       WHERE tenant_id = $1 AND sku_id = $2 AND status = 'AVAILABLE'
                       ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
                     RETURNING code",
                    vec![ctx.tenant.0.into(), l.sku.into(), id.into(), (l.quantity as i64).into()],
                ))
                .await?;
            if rows.len() != l.quantity as usize {
                return Err(ServiceError::Internal(anyhow::anyhow!(
                    "activation pool of {} is short: {} of {} codes",
                    l.sku,
                    rows.len(),
                    l.quantity
                )));
            }
            let codes = rows
                .iter()
                .map(|r| r.try_get::<String>("", "code"))
                .collect::<Result<Vec<_>, _>>()?;
            issued.push((l.sku, codes));
        }
    }
    tx.execute_raw(stmt(
        "UPDATE reservations SET status = 'CONFIRMED', updated_at = now() WHERE tenant_id = $1 AND id = $2",
        vec![ctx.tenant.0.into(), id.into()],
    ))
    .await?;
    tx.commit().await?;
    Ok(issued)
}

/// Expires overdue reservations of every tenant. Returns how many it released.
pub async fn sweep_expired(core: &Core, batch: u64) -> ServiceResult<usize> {
    let rows = core
        .db
        .query_all_raw(stmt(
            "SELECT tenant_id, id FROM reservations WHERE status = 'ACTIVE' AND expires_at < now()
             ORDER BY expires_at LIMIT $1",
            vec![(batch as i64).into()],
        ))
        .await?;
    let mut n = 0;
    for r in rows {
        let tenant: Uuid = r.try_get("", "tenant_id")?;
        let id: Uuid = r.try_get("", "id")?;
        let ctx = RequestCtx::system(TenantId(tenant), "reservation-sweeper");
        match release(core, &ctx, id, true).await {
            Ok(()) => n += 1,
            // Confirmed or released meanwhile by someone else: nothing to do.
            Err(ServiceError::Conflict { .. }) | Err(ServiceError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Test and drill hook: performs only the Redis admission of `lines`, as a process that died
/// right after it would have. The reconciler must give the units back.
pub async fn admit_only(
    core: &Core,
    tenant: TenantId,
    lines: &[Line],
) -> redis::RedisResult<usize> {
    let mut n = 0;
    for l in lines {
        if admit_line(core, tenant, l, None).await?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// Group commit of single reservations. Concurrent [`reserve`] calls of one tenant whose lines
/// Redis admitted queue here; at most [`GROUP_LEADERS`] leader tasks per tenant drain the queue
/// and commit what they find as one [`commit_many`] transaction (one guarded UPDATE per level for
/// the whole batch). Nothing waits for a batch to fill: a leader takes whatever queued while the
/// previous transaction ran, so a lone request commits at once and a crowd shares commits.
#[derive(Default)]
pub struct Batcher {
    lanes: std::sync::Mutex<std::collections::HashMap<TenantId, Lane>>,
}

#[derive(Default)]
struct Lane {
    queue: Vec<Pending>,
    leaders: usize,
}

struct Pending {
    item: BatchItem,
    reply: tokio::sync::oneshot::Sender<Option<Reservation>>,
}

/// Leaders per tenant: two, so one batch builds its rows while the other holds the level locks.
const GROUP_LEADERS: usize = 2;
/// Requests per transaction at most.
const GROUP_MAX: usize = 128;

impl Batcher {
    fn lanes(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<TenantId, Lane>> {
        // A panic elsewhere never leaves the map half-changed: every change is one push or drain.
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one admitted request; answers its reservation, or None when its batch was refused
    /// (the caller then commits it alone).
    pub(crate) async fn submit(
        &self,
        core: &Core,
        tenant: TenantId,
        item: BatchItem,
    ) -> Option<Reservation> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lead = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(tenant).or_default();
            lane.queue.push(Pending { item, reply });
            let lead = lane.leaders < GROUP_LEADERS;
            if lead {
                lane.leaders += 1;
            }
            lead
        };
        if lead {
            // Its own task: a caller that goes away (timeout, disconnect) never strands the
            // others' answers.
            tokio::spawn(lead_lane(core.clone(), tenant));
        }
        answer.await.ok().flatten()
    }
}

/// Counts a leader out when its task ends, however it ends; if work queued meanwhile (or the
/// leader failed), another leader takes over.
struct LeaderGuard {
    core: Core,
    tenant: TenantId,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        let relead = {
            let mut lanes = self.core.reserve_batcher.lanes();
            match lanes.get_mut(&self.tenant) {
                Some(lane) if !lane.queue.is_empty() => true,
                Some(lane) => {
                    lane.leaders -= 1;
                    if lane.leaders == 0 {
                        lanes.remove(&self.tenant);
                    }
                    false
                }
                None => false,
            }
        };
        if relead && let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(lead_lane(self.core.clone(), self.tenant));
        }
    }
}

async fn lead_lane(core: Core, tenant: TenantId) {
    let _guard = LeaderGuard {
        core: core.clone(),
        tenant,
    };
    loop {
        let batch: Vec<Pending> = {
            let mut lanes = core.reserve_batcher.lanes();
            let Some(lane) = lanes.get_mut(&tenant) else {
                return;
            };
            if lane.queue.is_empty() {
                return;
            }
            let n = lane.queue.len().min(GROUP_MAX);
            lane.queue.drain(..n).collect()
        };
        let (items, replies): (Vec<BatchItem>, Vec<_>) =
            batch.into_iter().map(|p| (p.item, p.reply)).unzip();
        match commit_many(&core, tenant, &items).await {
            Ok((reservations, levels)) => {
                for (reply, r) in replies.into_iter().zip(reservations) {
                    let _ = reply.send(r);
                }
                stock_cache::publish_levels(&core, tenant, &levels).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, n = items.len(), "group commit refused; each commits alone");
                for reply in replies {
                    let _ = reply.send(None);
                }
            }
        }
    }
}
