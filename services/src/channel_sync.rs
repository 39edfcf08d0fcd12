//! Marketplace connections and the ingestion that loses nothing: a worker leases a connection,
//! pulls orders modified in an overlapping window after its persisted cursor (plus TMC hints),
//! seals receivers it had to decrypt, and writes them to the outbox in the same transaction that
//! advances the cursor. The bus delivers them to the ingest consumer (retries, dead letters);
//! the upsert there is idempotent, so re-fetched overlap and redeliveries change nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use uphub_channels::{ChannelError, Credentials, Marketplace, Window};
use uphub_domain::catalog::ChannelType;
use uphub_domain::identity::{InvalidInput, Permission};
use uphub_domain::order::OrderStatus;
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

use crate::audit::require;
use crate::catalog::SalesChannel;
use crate::orders::{FETCHED_TOPIC, FetchedBatch, FetchedOrder, seal_receiver};
use crate::{Core, ServiceError, ServiceResult};

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Each window starts this far before the cursor: orders stamped late within the same second,
/// or written out of order by the platform, are fetched again (and deduplicated on upsert).
pub const OVERLAP: Duration = Duration::from_secs(15);
/// The newest seconds are left for the next round: the platform may still be writing them.
pub const SETTLE_LAG: Duration = Duration::from_secs(2);
/// At most this much modified time per window (a connection's window shrinks while windows
/// fail — a busy window behind a flaky platform still makes progress — and grows back after).
pub const MAX_WINDOW_SECS: i32 = 30 * 60;
/// A sync round is abandoned after this long (its lease is 60 s; what it committed is kept).
pub const SYNC_DEADLINE: Duration = Duration::from_secs(55);
/// Orders sealed and committed together inside one window.
const SEAL_PIECE: usize = 400;
/// Orders per outbox message (one batch upsert each).
pub const CHUNK: usize = 200;

/// Platform order id → (modified time, platform status) of the version sent to the bus.
pub(crate) type SentVersions = std::collections::HashMap<String, (DateTime<Utc>, String)>;

#[derive(Debug, Clone)]
pub struct ConnectInput {
    pub channel_type: ChannelType,
    pub shop_id: String,
    pub name: Option<String>,
    pub credentials: Credentials,
    pub sync_from: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct ConnectionView {
    pub channel: SalesChannel,
    pub status: String,
    pub sync_cursor: DateTime<Utc>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub orders_fetched: i64,
}

fn aad(tenant: TenantId) -> Vec<u8> {
    crate::pii::aad(tenant, "channel_connections.credentials")
}

pub async fn connect(
    core: &Core,
    ctx: &RequestCtx,
    input: ConnectInput,
) -> ServiceResult<ConnectionView> {
    require(ctx, Permission::ChannelManage)?;
    if !matches!(
        input.channel_type,
        ChannelType::Taobao | ChannelType::Douyin | ChannelType::Xiaohongshu
    ) {
        return Err(InvalidInput {
            field: "type",
            message: "only TAOBAO, DOUYIN and XIAOHONGSHU connect to a marketplace".into(),
        }
        .into());
    }
    let c = &input.credentials;
    for (field, v) in [
        ("appKey", &c.app_key),
        ("appSecret", &c.app_secret),
        ("accessToken", &c.access_token),
    ] {
        if v.trim().is_empty() || v.len() > 512 {
            return Err(InvalidInput {
                field,
                message: "must be 1-512 characters".into(),
            }
            .into());
        }
    }
    if !(c.base_url.starts_with("http://") || c.base_url.starts_with("https://"))
        || c.base_url.len() > 256
    {
        return Err(InvalidInput {
            field: "baseUrl",
            message: "must be an http(s) URL".into(),
        }
        .into());
    }
    let shop_id = uphub_domain::catalog::parse_shop_id(&input.shop_id)?;
    let name = input
        .name
        .clone()
        .unwrap_or_else(|| format!("{} {}", input.channel_type.as_str(), shop_id));
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let existing = tx
        .query_one_raw(stmt(
            "SELECT id FROM sales_channels WHERE tenant_id = $1 AND type = $2 AND shop_id = $3",
            vec![
                ctx.tenant.0.into(),
                input.channel_type.as_str().into(),
                shop_id.clone().into(),
            ],
        ))
        .await?
        .map(|r| r.try_get::<Uuid>("", "id"))
        .transpose()?;
    let channel_id = match existing {
        Some(id) => id,
        None => {
            let id = Uuid::now_v7();
            tx.execute_raw(stmt(
                "INSERT INTO sales_channels (tenant_id, id, type, shop_id, name) VALUES ($1, $2, $3, $4, $5)",
                vec![
                    ctx.tenant.0.into(),
                    id.into(),
                    input.channel_type.as_str().into(),
                    shop_id.clone().into(),
                    name.chars().take(100).collect::<String>().into(),
                ],
            ))
            .await?;
            id
        }
    };
    let mut creds = input.credentials.clone();
    creds.shop_id = shop_id;
    let dek = crate::pii::data_key(core, &tx).await?;
    let plain = serde_json::to_string(&creds).map_err(anyhow::Error::from)?;
    let ct = dek.encrypt(&plain, &aad(ctx.tenant));
    let cursor = input
        .sync_from
        .unwrap_or_else(|| core.now() - chrono::Duration::days(1));
    tx.execute_raw(stmt(
        "INSERT INTO channel_connections (tenant_id, channel_id, credentials_ct, sync_cursor)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, channel_id) DO UPDATE SET credentials_ct = EXCLUDED.credentials_ct,
            status = 'ACTIVE', last_error = NULL, sync_requested = true, updated_at = now()",
        vec![
            ctx.tenant.0.into(),
            channel_id.into(),
            ct.into(),
            cursor.into(),
        ],
    ))
    .await?;
    let ev = crate::audit::record(
        core,
        &tx,
        ctx,
        "channel.connected",
        Some(channel_id.to_string()),
        json!({"type": input.channel_type.as_str()}),
    )
    .await?;
    tx.commit().await?;
    crate::audit::publish(core, &[ev]).await;
    connection(core, ctx, channel_id).await
}

const CONNECTION_SQL: &str = "SELECT s.id, s.type, s.shop_id, s.name, s.created_at, c.status,
    c.sync_cursor, c.last_sync_at, c.last_success_at, c.last_error, c.last_error_at, c.orders_fetched
    FROM channel_connections c JOIN sales_channels s ON s.tenant_id = c.tenant_id AND s.id = c.channel_id
    WHERE c.tenant_id = $1";

fn view_from(r: &sea_orm::QueryResult) -> Result<ConnectionView, sea_orm::DbErr> {
    let t: String = r.try_get("", "type")?;
    Ok(ConnectionView {
        channel: SalesChannel {
            id: r.try_get("", "id")?,
            channel_type: ChannelType::parse(&t)
                .ok_or_else(|| sea_orm::DbErr::Custom(format!("bad channel type {t}")))?,
            shop_id: r.try_get("", "shop_id")?,
            name: r.try_get("", "name")?,
            created_at: r.try_get("", "created_at")?,
        },
        status: r.try_get("", "status")?,
        sync_cursor: r.try_get("", "sync_cursor")?,
        last_sync_at: r.try_get("", "last_sync_at")?,
        last_success_at: r.try_get("", "last_success_at")?,
        last_error: r.try_get("", "last_error")?,
        last_error_at: r.try_get("", "last_error_at")?,
        orders_fetched: r.try_get("", "orders_fetched")?,
    })
}

pub async fn connections(core: &Core, ctx: &RequestCtx) -> ServiceResult<Vec<ConnectionView>> {
    require(ctx, Permission::OrderRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            &format!("{CONNECTION_SQL} ORDER BY s.created_at"),
            vec![ctx.tenant.0.into()],
        ))
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(view_from).collect::<Result<_, _>>()?)
}

pub async fn connection(
    core: &Core,
    ctx: &RequestCtx,
    channel: Uuid,
) -> ServiceResult<ConnectionView> {
    require(ctx, Permission::OrderRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            &format!("{CONNECTION_SQL} AND c.channel_id = $2"),
            vec![ctx.tenant.0.into(), channel.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    tx.commit().await?;
    Ok(view_from(&row)?)
}

/// Asks the workers to sync this connection now.
pub async fn sync_now(
    core: &Core,
    ctx: &RequestCtx,
    channel: Uuid,
) -> ServiceResult<ConnectionView> {
    require(ctx, Permission::OrderWrite)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let n = tx
        .execute_raw(stmt(
            "UPDATE channel_connections SET sync_requested = true, status = CASE WHEN status = 'AUTH_FAILED' THEN 'ACTIVE' ELSE status END
             WHERE tenant_id = $1 AND channel_id = $2",
            vec![ctx.tenant.0.into(), channel.into()],
        ))
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ServiceError::NotFound);
    }
    tx.commit().await?;
    connection(core, ctx, channel).await
}

struct Leased {
    tenant: TenantId,
    channel: Uuid,
    channel_type: ChannelType,
    credentials_ct: Vec<u8>,
    cursor: DateTime<Utc>,
    window_secs: i32,
}

/// Leases due connections (any tenant) and syncs each. Returns the orders fetched.
pub async fn sync_due(core: &Core, worker: Uuid, every: Duration) -> ServiceResult<usize> {
    let rows = core
        .db
        .query_all_raw(stmt(
            "UPDATE channel_connections c SET lease_owner = $1, lease_until = now() + interval '60 seconds',
                last_sync_at = now(), sync_requested = false
             FROM sales_channels s
             WHERE s.tenant_id = c.tenant_id AND s.id = c.channel_id
               AND (c.tenant_id, c.channel_id) IN (
                 SELECT tenant_id, channel_id FROM channel_connections
                 WHERE status IN ('ACTIVE', 'FAILING') AND (lease_until IS NULL OR lease_until < now())
                   AND (sync_requested OR last_sync_at IS NULL OR last_sync_at < now() - make_interval(secs => $2))
                 ORDER BY last_sync_at NULLS FIRST LIMIT 8 FOR UPDATE SKIP LOCKED)
             RETURNING c.tenant_id, c.channel_id, s.type, c.credentials_ct, c.sync_cursor, c.window_secs",
            vec![worker.into(), every.as_secs_f64().into()],
        ))
        .await?;
    let mut leased = Vec::new();
    for r in rows {
        let t: String = r.try_get("", "type")?;
        let Some(channel_type) = ChannelType::parse(&t) else {
            continue;
        };
        leased.push(Leased {
            tenant: TenantId(r.try_get("", "tenant_id")?),
            channel: r.try_get("", "channel_id")?,
            channel_type,
            credentials_ct: r.try_get("", "credentials_ct")?,
            cursor: r.try_get("", "sync_cursor")?,
            window_secs: r.try_get("", "window_secs")?,
        });
    }
    let mut total = 0;
    let jobs = leased.into_iter().map(|l| async move {
        // Whatever a platform or the network does, one round never holds the loop for long.
        let progress = AtomicUsize::new(0);
        let r = match tokio::time::timeout(SYNC_DEADLINE, sync_one(core, worker, &l, &progress))
            .await
        {
            Ok(r) => r,
            // Cut while working off a busy window: what it committed stays, the cursor is
            // where the last finished window left it, and the next round goes on from there.
            Err(_) if progress.load(Ordering::Relaxed) > 0 => {
                Err(SyncError::CutShort(progress.load(Ordering::Relaxed)))
            }
            Err(_) => Err(SyncError::Channel(ChannelError::Unavailable(format!(
                "sync round exceeded {SYNC_DEADLINE:?}"
            )))),
        };
        (l, r)
    });
    for (l, r) in futures_util::future::join_all(jobs).await {
        match r {
            Ok(n) => total += n,
            Err(SyncError::CutShort(n)) => {
                total += n;
                core.db
                    .execute_raw(stmt(
                        "UPDATE channel_connections SET lease_owner = NULL, lease_until = NULL
                         WHERE tenant_id = $1 AND channel_id = $2 AND lease_owner = $3",
                        vec![l.tenant.0.into(), l.channel.into(), worker.into()],
                    ))
                    .await?;
            }
            Err(e) => {
                let (status, msg) = match &e {
                    SyncError::Channel(ChannelError::Auth(m)) => ("AUTH_FAILED", m.clone()),
                    SyncError::Service(ServiceError::Internal(inner)) => {
                        ("FAILING", format!("internal error: {inner:#}"))
                    }
                    other => ("FAILING", other.to_string()),
                };
                tracing::warn!(channel = %l.channel, error = %msg, "channel sync failed");
                core.db
                    .execute_raw(stmt(
                        "UPDATE channel_connections SET status = $3, last_error = $4, last_error_at = now(),
                            lease_owner = NULL, lease_until = NULL, window_secs = GREATEST(1, window_secs / 2)
                         WHERE tenant_id = $1 AND channel_id = $2 AND lease_owner = $5",
                        vec![
                            l.tenant.0.into(),
                            l.channel.into(),
                            status.into(),
                            msg.chars().take(1000).collect::<String>().into(),
                            worker.into(),
                        ],
                    ))
                    .await?;
            }
        }
    }
    Ok(total)
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{0}")]
    Channel(#[from] ChannelError),
    #[error("{0}")]
    Service(#[from] ServiceError),
    #[error("lease lost")]
    LeaseLost,
    /// The round hit its deadline after committing this many orders.
    #[error("sync round cut short after {0} orders")]
    CutShort(usize),
}

impl From<sea_orm::DbErr> for SyncError {
    fn from(e: sea_orm::DbErr) -> Self {
        SyncError::Service(e.into())
    }
}

pub(crate) fn adapter_for(
    core: &Core,
    channel: ChannelType,
    creds: Credentials,
) -> Result<Option<Box<dyn Marketplace>>, ChannelError> {
    uphub_channels::connect_with(
        channel,
        creds,
        uphub_channels::HttpConfig {
            timeout: Duration::from_millis(core.cfg.channel_timeout_ms),
            max_attempts: 8,
            ..Default::default()
        },
    )
}

/// Decrypts the stored credentials of a connection.
pub(crate) fn open_credentials(
    dek: &uphub_domain::pii::DataKey,
    tenant: TenantId,
    channel: Uuid,
    credentials_ct: &[u8],
) -> ServiceResult<Credentials> {
    let plain = dek
        .decrypt(credentials_ct, &aad(tenant))
        .map_err(|e| anyhow::anyhow!("credentials of {channel}: {e}"))?;
    Ok(serde_json::from_str(&plain).map_err(anyhow::Error::from)?)
}

async fn sync_one(
    core: &Core,
    worker: Uuid,
    l: &Leased,
    progress: &AtomicUsize,
) -> Result<usize, SyncError> {
    let tx = TenantTx::begin(&core.db, l.tenant).await?;
    let dek = crate::pii::data_key(core, &tx).await?;
    tx.commit().await?;
    let creds = open_credentials(&dek, l.tenant, l.channel, &l.credentials_ct)?;
    let Some(adapter) = adapter_for(core, l.channel_type, creds.clone())? else {
        return Err(ServiceError::Invalid(InvalidInput {
            field: "type",
            message: format!("{} has no marketplace adapter", l.channel_type.as_str()),
        })
        .into());
    };
    let mut cursor = l.cursor;
    let mut fetched = 0usize;
    let mut unfinished: Option<DateTime<Utc>> = None;
    let budget = std::time::Instant::now();
    loop {
        let horizon = core.now() - chrono::Duration::from_std(SETTLE_LAG).unwrap_or_default();
        // The overlap shrinks with the window (never below the settle lag): a narrow window behind
        // a flaky platform must not drag a wide overlap along.
        let overlap = OVERLAP
            .min(Duration::from_secs(l.window_secs.max(1) as u64))
            .max(SETTLE_LAG);
        let start = cursor - chrono::Duration::from_std(overlap).unwrap_or_default();
        // A window being worked off in pieces keeps its end, so the adapter's listing holds.
        let end = unfinished.take().unwrap_or_else(|| {
            (cursor + chrono::Duration::seconds(l.window_secs.clamp(1, MAX_WINDOW_SECS) as i64))
                .min(horizon)
        });
        if end <= cursor {
            break;
        }
        // Platforms filter windows by whole seconds: what we hold from the second `start` falls
        // in counts too, or orders of that second would look new on every pull.
        let held_since = start - chrono::Duration::seconds(1);
        let mut held = held_versions(core, l, held_since).await?;
        // What this process sent lately and the bus may not have written yet.
        if let Ok(mut sent) = core.sent_versions.lock() {
            let mine = sent.entry(l.channel).or_default();
            mine.retain(|_, (m, _)| *m >= held_since);
            for (k, v) in mine.iter() {
                held.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let known: std::collections::HashMap<String, DateTime<Utc>> =
            held.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        let mut pulled = adapter.fetch_window(Window { start, end }, &known).await?;
        // The overlap fetches again what we already hold or sent: only what changed goes on.
        pulled.orders.retain(|o| {
            !held.get(&o.platform_order_id).is_some_and(|(m, st)| {
                o.modified_at < *m || (o.modified_at == *m && o.platform_status == *st)
            })
        });

        // Hints only say "something changed": the window pull fetches those orders anyway.
        let hints = adapter.poll_hints().await?;
        // Receivers are decrypted and the orders handed to the bus in pieces, each committed at
        // once: a round cut short by its deadline keeps what it finished, and the next round
        // neither decrypts nor re-sends it.
        let mut orders = pulled.orders;
        while orders.len() > SEAL_PIECE {
            let rest = orders.split_off(SEAL_PIECE);
            let piece = seal(core, l, &dek, adapter.as_ref(), orders).await?;
            fetched += piece.len();
            commit_window(core, worker, l, &piece, cursor).await?;
            progress.fetch_add(piece.len(), Ordering::Relaxed);
            orders = rest;
        }
        let fetched_orders = seal(core, l, &dek, adapter.as_ref(), orders).await?;
        fetched += fetched_orders.len();
        if !pulled.complete {
            // Keep what arrived (idempotent downstream), but do not pass the window.
            commit_window(core, worker, l, &fetched_orders, cursor).await?;
            progress.fetch_add(fetched_orders.len(), Ordering::Relaxed);
            match pulled.error {
                Some(e) => return Err(e.into()),
                // More of the same window to fetch.
                None if budget.elapsed() < Duration::from_secs(40) => {
                    unfinished = Some(end);
                    continue;
                }
                None => break,
            }
        }
        commit_window(core, worker, l, &fetched_orders, end).await?;
        progress.fetch_add(fetched_orders.len().max(1), Ordering::Relaxed);
        if !hints.is_empty() {
            let ids: Vec<String> = hints.iter().map(|h| h.message_id.clone()).collect();
            adapter.confirm_hints(&ids).await?;
        }
        cursor = end;
        if end >= horizon || budget.elapsed() > Duration::from_secs(40) {
            break;
        }
    }
    // Tokens the adapter refreshed are kept for the next round.
    let now_creds = adapter.credentials();
    let tx = TenantTx::begin(&core.db, l.tenant).await?;
    let ct = if now_creds != creds {
        let plain =
            serde_json::to_string(&now_creds).map_err(|e| ServiceError::Internal(e.into()))?;
        Some(dek.encrypt(&plain, &aad(l.tenant)))
    } else {
        None
    };
    tx.execute_raw(stmt(
        "UPDATE channel_connections SET lease_owner = NULL, lease_until = NULL,
            credentials_ct = COALESCE($4, credentials_ct), status = 'ACTIVE', last_error = NULL,
            window_secs = LEAST($5, window_secs * 2)
         WHERE tenant_id = $1 AND channel_id = $2 AND lease_owner = $3",
        vec![
            l.tenant.0.into(),
            l.channel.into(),
            worker.into(),
            ct.into(),
            MAX_WINDOW_SECS.into(),
        ],
    ))
    .await?;
    tx.commit().await?;
    Ok(fetched)
}

/// The platform versions (modified time, platform status) we hold for orders of this channel
/// changed since `since`.
async fn held_versions(
    core: &Core,
    l: &Leased,
    since: DateTime<Utc>,
) -> Result<std::collections::HashMap<String, (DateTime<Utc>, String)>, SyncError> {
    let tx = TenantTx::begin(&core.db, l.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            "SELECT platform_order_id, platform_modified_at, platform_status FROM orders
             WHERE tenant_id = $1 AND channel_id = $2 AND platform_modified_at >= $3",
            vec![l.tenant.0.into(), l.channel.into(), since.into()],
        ))
        .await?;
    tx.commit().await?;
    let mut out = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        out.insert(
            r.try_get::<String>("", "platform_order_id")?,
            (
                r.try_get::<DateTime<Utc>>("", "platform_modified_at")?,
                r.try_get::<String>("", "platform_status")?,
            ),
        );
    }
    Ok(out)
}

/// Decrypts the receivers of unshipped orders we do not hold sealed yet, and seals them.
async fn seal(
    core: &Core,
    l: &Leased,
    dek: &uphub_domain::pii::DataKey,
    adapter: &dyn Marketplace,
    orders: Vec<uphub_domain::order::ChannelOrder>,
) -> Result<Vec<FetchedOrder>, SyncError> {
    let wanted: Vec<String> = orders
        .iter()
        .filter(|o| matches!(o.status, OrderStatus::Paid | OrderStatus::Processing))
        .map(|o| o.platform_order_id.clone())
        .collect();
    let mut known = std::collections::HashMap::new();
    if !wanted.is_empty() {
        let tx = TenantTx::begin(&core.db, l.tenant).await?;
        for r in tx
            .query_all_raw(stmt(
                "SELECT platform_order_id, receiver_ref FROM orders WHERE tenant_id = $1 AND channel_id = $2
                   AND platform_order_id = ANY($3) AND receiver_ct IS NOT NULL",
                vec![l.tenant.0.into(), l.channel.into(), wanted.clone().into()],
            ))
            .await?
        {
            known.insert(
                r.try_get::<String>("", "platform_order_id")?,
                r.try_get::<String>("", "receiver_ref")?,
            );
        }
        tx.commit().await?;
    }
    let to_decrypt: Vec<(String, uphub_domain::order::SealedReceiver)> = orders
        .iter()
        .filter(|o| wanted.contains(&o.platform_order_id))
        .filter(|o| known.get(&o.platform_order_id) != Some(&o.receiver.decrypt_ref))
        .map(|o| (o.platform_order_id.clone(), o.receiver.clone()))
        .collect();
    let mut sealed = std::collections::HashMap::new();
    // A few decrypt batches in flight at once (each is one platform call of up to 20–50 ciphers).
    let pieces: Vec<_> = to_decrypt
        .chunks(48)
        .map(|c| async move { (c, adapter.decrypt_receivers(c).await) })
        .collect();
    use futures_util::StreamExt;
    let results: Vec<_> = futures_util::stream::iter(pieces)
        .buffer_unordered(4)
        .collect()
        .await;
    for (chunk, clear) in results {
        for ((id, _), r) in chunk.iter().zip(clear?) {
            if let Some(r) = r {
                sealed.insert(id.clone(), seal_receiver(dek, l.tenant, &r)?);
            }
        }
    }
    Ok(orders
        .into_iter()
        .map(|o| {
            let s = sealed.remove(&o.platform_order_id);
            FetchedOrder {
                receiver_ct: s.as_ref().map(|s| s.0.clone()),
                receiver_key: s.map(|s| s.1),
                order: o,
            }
        })
        .collect())
}

/// The fetched orders go to the outbox in the transaction that moves the cursor: either both
/// happen or neither does, so a crash anywhere loses nothing.
async fn commit_window(
    core: &Core,
    worker: Uuid,
    l: &Leased,
    orders: &[FetchedOrder],
    end: DateTime<Utc>,
) -> Result<(), SyncError> {
    let tx = TenantTx::begin(&core.db, l.tenant).await?;
    let moved = tx
        .execute_raw(stmt(
            "UPDATE channel_connections SET sync_cursor = GREATEST(sync_cursor, $3),
                orders_fetched = orders_fetched + $4, last_success_at = now(),
                lease_until = now() + interval '60 seconds'
             WHERE tenant_id = $1 AND channel_id = $2 AND lease_owner = $5",
            vec![
                l.tenant.0.into(),
                l.channel.into(),
                end.into(),
                (orders.len() as i64).into(),
                worker.into(),
            ],
        ))
        .await?
        .rows_affected();
    if moved == 0 {
        return Err(SyncError::LeaseLost);
    }
    let sent: Vec<(String, (DateTime<Utc>, String))> = orders
        .iter()
        .map(|f| {
            (
                f.order.platform_order_id.clone(),
                (f.order.modified_at, f.order.platform_status.clone()),
            )
        })
        .collect();
    for chunk in orders.chunks(CHUNK) {
        let batch = FetchedBatch {
            channel_id: l.channel,
            orders: chunk.to_vec(),
        };
        crate::outbox::enqueue(
            core,
            &tx,
            FETCHED_TOPIC,
            serde_json::to_value(&batch).map_err(|e| ServiceError::Internal(e.into()))?,
        )
        .await?;
    }
    tx.commit().await?;
    if let Ok(mut known) = core.sent_versions.lock() {
        known.entry(l.channel).or_default().extend(sent);
    }
    Ok(())
}

/// Pushes a SKU's available quantity to every marketplace listing of it (the consumer of
/// `inventory.available_changed`). Transient platform errors fail the event so it is retried.
pub async fn push_available(
    core: &Core,
    tx: &TenantTx,
    sku: Uuid,
    available: i64,
) -> anyhow::Result<usize> {
    let rows = tx
        .query_all_raw(stmt(
            "SELECT l.platform_item_id, l.platform_sku_id, s.type, c.credentials_ct, c.channel_id
             FROM listings l
             JOIN sales_channels s ON s.tenant_id = l.tenant_id AND s.id = l.channel_id
             JOIN channel_connections c ON c.tenant_id = l.tenant_id AND c.channel_id = l.channel_id
             WHERE l.tenant_id = $1 AND l.sku_id = $2 AND l.listed AND l.platform_sku_id IS NOT NULL
               AND c.status <> 'PAUSED'",
            vec![tx.tenant().0.into(), sku.into()],
        ))
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let dek = crate::pii::data_key(core, tx).await?;
    let mut n = 0;
    for r in rows {
        let t: String = r.try_get("", "type")?;
        let Some(channel_type) = ChannelType::parse(&t) else {
            continue;
        };
        let ct: Vec<u8> = r.try_get("", "credentials_ct")?;
        let creds = open_credentials(&dek, tx.tenant(), r.try_get("", "channel_id")?, &ct)?;
        let Some(adapter) = adapter_for(core, channel_type, creds)? else {
            continue;
        };
        let item: Option<String> = r.try_get("", "platform_item_id")?;
        let psku: String = r.try_get("", "platform_sku_id")?;
        adapter
            .push_stock(item.as_deref().unwrap_or(""), &psku, available.max(0))
            .await?;
        n += 1;
    }
    Ok(n)
}
