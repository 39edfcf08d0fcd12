//! Own-channel checkout: a buyer places an order on the creator's mini-program / H5 store. The
//! price comes from the channel listing, stock is reserved through the reservation engine (owned
//! by the order, so the settle loop takes over once the status moves), the receiver is sealed
//! from the buyer's address, and the order must be paid by `payment_due_at` or it is cancelled.
//! Placement is idempotent per buyer and key. Also the buyer's cart and order list.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uphub_domain::catalog::ChannelType;
use uphub_domain::identity::InvalidInput;
use uphub_domain::order::{OrderStatus, Receiver, check_transition};
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

use crate::orders::{LiveOrderEvent, publish_live, seal_receiver};
use crate::page::{Page, PageArgs};
use crate::reservation::{self, Line, ReserveRequest};
use crate::{Core, ServiceError, ServiceResult};

/// The reservation outlives the payment deadline by this much, so a payment that lands just
/// before the deadline still finds its stock; the deadline sweeper releases it well before.
const RESERVATION_MARGIN: Duration = Duration::from_secs(10 * 60);
pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i32 = 999;
pub const MAX_CART_LINES: i64 = 100;
/// A claimed key whose first request never finished may be taken over after this long.
const STALE_CLAIM_SECS: i64 = 120;

pub(crate) fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> ServiceError {
    InvalidInput {
        field,
        message: message.into(),
    }
    .into()
}

pub(crate) fn require_buyer(ctx: &RequestCtx) -> ServiceResult<Uuid> {
    ctx.buyer_id()
        .ok_or_else(|| ServiceError::forbidden("only a storefront buyer session can do this"))
}

// ------------------------------------------------------------- idempotency ---

pub(crate) enum Claim {
    /// First use of the key: do the work, then `idem_finish` (or `idem_abandon` on failure).
    New,
    /// The stored answer of the first request with the same input.
    Replay(Value),
}

pub(crate) fn parse_key(key: &str) -> ServiceResult<String> {
    let k = key.trim();
    if k.is_empty() || k.len() > 64 || !k.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            "idempotencyKey",
            "must be 1-64 printable ASCII characters",
        ));
    }
    Ok(k.to_string())
}

pub(crate) fn request_hash(parts: &str) -> Vec<u8> {
    Sha256::digest(parts.as_bytes()).to_vec()
}

/// Claims `key` for `actor` in `scope`: the same input replays the stored answer, other input is
/// a CONFLICT, a request still running under the key is a CONFLICT too (retry later).
pub(crate) async fn idem_claim(
    core: &Core,
    ctx: &RequestCtx,
    actor: Uuid,
    scope: &str,
    key: &str,
    hash: &[u8],
) -> ServiceResult<Claim> {
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let claim = idem_claim_in(&tx, actor, scope, key, hash).await?;
    tx.commit().await?;
    Ok(claim)
}

/// `idem_claim` inside the caller's transaction, so the checks that follow it (and the rows
/// they write) commit with the claim, and a refusal rolls the claim back with them.
pub(crate) async fn idem_claim_in(
    tx: &TenantTx,
    actor: Uuid,
    scope: &str,
    key: &str,
    hash: &[u8],
) -> ServiceResult<Claim> {
    let tenant = tx.tenant();
    let inserted = tx
        .query_one_raw(stmt(
            "INSERT INTO idempotency_keys (tenant_id, actor_id, scope, key, request_hash)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING key",
            vec![
                tenant.0.into(),
                actor.into(),
                scope.into(),
                key.into(),
                hash.to_vec().into(),
            ],
        ))
        .await?;
    if inserted.is_some() {
        return Ok(Claim::New);
    }
    let row = tx
        .query_one_raw(stmt(
            "SELECT request_hash, response,
                    created_at < now() - interval '24 hours' AS expired,
                    created_at < now() - make_interval(secs => $5) AS stale
             FROM idempotency_keys
             WHERE tenant_id = $1 AND actor_id = $2 AND scope = $3 AND key = $4 FOR UPDATE",
            vec![
                tenant.0.into(),
                actor.into(),
                scope.into(),
                key.into(),
                (STALE_CLAIM_SECS as f64).into(),
            ],
        ))
        .await?
        .ok_or_else(|| {
            ServiceError::conflict("idempotencyKey", "the key is being reused; retry")
        })?;
    let stored: Vec<u8> = row.try_get("", "request_hash")?;
    let response: Option<Value> = row.try_get("", "response")?;
    let expired: bool = row.try_get("", "expired")?;
    let stale: bool = row.try_get("", "stale")?;
    if expired || (response.is_none() && stale) {
        tx.execute_raw(stmt(
            "UPDATE idempotency_keys SET request_hash = $5, response = NULL, created_at = now()
             WHERE tenant_id = $1 AND actor_id = $2 AND scope = $3 AND key = $4",
            vec![
                tenant.0.into(),
                actor.into(),
                scope.into(),
                key.into(),
                hash.to_vec().into(),
            ],
        ))
        .await?;
        return Ok(Claim::New);
    }
    if stored != hash {
        return Err(ServiceError::conflict(
            "idempotencyKey",
            "this idempotency key was already used with different input",
        ));
    }
    match response {
        Some(v) => Ok(Claim::Replay(v)),
        None => Err(ServiceError::conflict(
            "idempotencyKey",
            "a request with this idempotency key is still running; retry shortly",
        )),
    }
}

/// Stores the answer, inside the transaction that made the result durable.
pub(crate) async fn idem_finish(
    tx: &TenantTx,
    actor: Uuid,
    scope: &str,
    key: &str,
    response: &Value,
) -> ServiceResult<()> {
    tx.execute_raw(stmt(
        "UPDATE idempotency_keys SET response = $5
         WHERE tenant_id = $1 AND actor_id = $2 AND scope = $3 AND key = $4",
        vec![
            tx.tenant().0.into(),
            actor.into(),
            scope.into(),
            key.into(),
            response.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Frees a claim whose request failed, so a retry with the same key runs again.
pub(crate) async fn idem_abandon(
    core: &Core,
    ctx: &RequestCtx,
    actor: Uuid,
    scope: &str,
    key: &str,
) {
    let r = async {
        let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
        tx.execute_raw(stmt(
            "DELETE FROM idempotency_keys
             WHERE tenant_id = $1 AND actor_id = $2 AND scope = $3 AND key = $4 AND response IS NULL",
            vec![ctx.tenant.0.into(), actor.into(), scope.into(), key.into()],
        ))
        .await?;
        tx.commit().await?;
        Ok::<(), ServiceError>(())
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "freeing an idempotency claim failed; it frees itself later");
    }
}

// ------------------------------------------------------------------ place ---

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceLine {
    pub sku: Uuid,
    pub quantity: i32,
}

#[derive(Debug, Clone)]
pub struct PlaceInput {
    pub channel: ChannelType,
    pub lines: Vec<PlaceLine>,
    pub address_id: Uuid,
    pub idempotency_key: String,
    pub campaign: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BuyerOrderLine {
    pub sku_id: Option<Uuid>,
    pub title: String,
    pub quantity: i32,
    pub unit_price_fen: i64,
}

/// An own-channel order as its buyer sees it.
#[derive(Debug, Clone)]
pub struct BuyerOrder {
    pub id: Uuid,
    pub number: String,
    pub channel_type: String,
    pub status: OrderStatus,
    pub total_fen: i64,
    pub currency: String,
    pub placed_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub payment_due_at: Option<DateTime<Utc>>,
    pub receiver_masked: Value,
    pub lines: Vec<BuyerOrderLine>,
    pub reservation_id: Option<Uuid>,
}

fn own_channel(c: ChannelType) -> ServiceResult<ChannelType> {
    match c {
        ChannelType::WechatMini | ChannelType::AlipayMini | ChannelType::H5 => Ok(c),
        _ => Err(invalid(
            "channel",
            "checkout is for the store's own channels (WECHAT_MINI, ALIPAY_MINI, H5)",
        )),
    }
}

/// Merges repeated SKUs and checks the quantities.
fn normalize(lines: &[PlaceLine]) -> ServiceResult<Vec<PlaceLine>> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(invalid("lines", format!("must have 1-{MAX_LINES} lines")));
    }
    let mut merged: BTreeMap<Uuid, i32> = BTreeMap::new();
    for l in lines {
        if !(1..=MAX_QUANTITY).contains(&l.quantity) {
            return Err(invalid(
                "quantity",
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        let q = merged.entry(l.sku).or_insert(0);
        *q += l.quantity;
        if *q > MAX_QUANTITY {
            return Err(invalid(
                "quantity",
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
    }
    Ok(merged
        .into_iter()
        .map(|(sku, quantity)| PlaceLine { sku, quantity })
        .collect())
}

struct Priced {
    sku: Uuid,
    title: String,
    code: String,
    quantity: i32,
    unit_price_fen: i64,
    /// None: a course or membership without a stock pool, sold without limit.
    warehouse: Option<Uuid>,
}

/// `orderPlace`: prices, reserves, writes the order; SOLD_OUT writes nothing.
///
/// Round trips are what a placement costs under load, so: one transaction claims the key and
/// reads everything placement needs (channel, payment window, the address, prices and
/// warehouses — one statement); the reservation engine decides; one statement writes the order,
/// its lines, its first event and the key's answer; the answer is built from what was written.
pub async fn order_place(
    core: &Core,
    ctx: &RequestCtx,
    input: PlaceInput,
) -> ServiceResult<BuyerOrder> {
    let buyer = require_buyer(ctx)?;
    let channel = own_channel(input.channel)?;
    let lines = normalize(&input.lines)?;
    let key = parse_key(&input.idempotency_key)?;
    let campaign = input
        .campaign
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    if campaign.as_ref().is_some_and(|c| c.len() > 64) {
        return Err(invalid("campaign", "must be at most 64 characters"));
    }
    let fingerprint = format!(
        "{}|{}|{}|{}",
        channel.as_str(),
        input.address_id,
        campaign.as_deref().unwrap_or(""),
        lines
            .iter()
            .map(|l| format!("{}x{}", l.sku, l.quantity))
            .collect::<Vec<_>>()
            .join(",")
    );
    let hash = request_hash(&fingerprint);
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    if let Claim::Replay(v) = idem_claim_in(&tx, buyer, "orderPlace", &key, &hash).await? {
        tx.commit().await?;
        let id = v
            .get("orderId")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::try_parse(s).ok())
            .ok_or_else(|| anyhow::anyhow!("stored orderPlace answer without orderId"))?;
        return buyer_order(core, ctx, id).await;
    }
    // A refusal here (no such address, SKU or channel) rolls the claim back with the reads.
    let read = place_read(core, &tx, buyer, channel, &lines, input.address_id).await?;
    tx.commit().await?;
    match place(core, ctx, buyer, channel, read, campaign, &key).await {
        Ok(order) => Ok(order),
        Err(e) => {
            idem_abandon(core, ctx, buyer, "orderPlace", &key).await;
            Err(e)
        }
    }
}

/// What placement reads before it reserves.
struct PlaceRead {
    channel_id: Uuid,
    payment_minutes: i32,
    address: crate::buyers::BuyerAddress,
    dek: uphub_domain::pii::DataKey,
    priced: Vec<Priced>,
}

/// The channel, the payment window, the buyer's address and every line's price and warehouse, in
/// one statement: a one-row head (LEFT JOIN, so a missing address still answers) joined with
/// the SKU rows.
async fn place_read(
    core: &Core,
    tx: &TenantTx,
    buyer: Uuid,
    channel: ChannelType,
    lines: &[PlaceLine],
    address_id: Uuid,
) -> ServiceResult<PlaceRead> {
    let tenant = tx.tenant();
    let skus: Vec<Uuid> = lines.iter().map(|l| l.sku).collect();
    let rows = tx
        .query_all_raw(stmt(
            "WITH ch AS (SELECT id FROM sales_channels WHERE tenant_id = $1 AND type = $2
                         ORDER BY created_at, id LIMIT 1)
             SELECT h.*, x.* FROM (
               SELECT (SELECT id FROM ch) AS channel_id,
                      (SELECT payment_minutes FROM tenant_settings WHERE tenant_id = $1) AS payment_minutes,
                      a.id AS address_id, a.name_ct, a.phone_ct, a.detail_ct, a.province, a.city,
                      a.district, a.is_default, a.created_at AS address_created_at
               FROM (SELECT 1) one
               LEFT JOIN buyer_addresses a ON a.tenant_id = $1 AND a.buyer_id = $3 AND a.id = $4) h
             LEFT JOIN LATERAL (
               SELECT s.id, s.code, p.title || ' ' || s.name AS title, p.status, p.kind,
                      CASE WHEN l.listed THEN l.price_fen ELSE s.price_fen END AS price_fen,
                      (SELECT warehouse_id FROM inventory_levels v WHERE v.tenant_id = s.tenant_id
                         AND v.sku_id = s.id ORDER BY on_hand - reserved - held DESC, warehouse_id LIMIT 1) AS warehouse_id
               FROM skus s JOIN products p ON p.tenant_id = s.tenant_id AND p.id = s.product_id
               LEFT JOIN listings l ON l.tenant_id = s.tenant_id AND l.sku_id = s.id AND l.channel_id = h.channel_id
               WHERE s.tenant_id = $1 AND s.id = ANY($5)) x ON true",
            vec![
                tenant.0.into(),
                channel.as_str().into(),
                buyer.into(),
                address_id.into(),
                skus.into(),
            ],
        ))
        .await?;
    let head = rows
        .first()
        .ok_or_else(|| anyhow::anyhow!("placement read returned no head row"))?;
    let channel_id: Uuid = head
        .try_get::<Option<Uuid>>("", "channel_id")?
        .ok_or_else(|| {
            invalid(
                "channel",
                format!("the store does not sell on {}", channel.as_str()),
            )
        })?;
    let payment_minutes: i32 = head
        .try_get::<Option<i32>>("", "payment_minutes")?
        .unwrap_or(15);
    if head.try_get::<Option<Uuid>>("", "address_id")?.is_none() {
        return Err(invalid("addressId", "no such address"));
    }
    let dek = crate::pii::data_key(core, tx).await?;
    let address = crate::buyers::address_from_columns(
        &dek,
        tenant,
        head,
        "address_id",
        "address_created_at",
    )?;

    let mut priced = Vec::with_capacity(lines.len());
    for l in lines {
        let Some(r) = rows
            .iter()
            .find(|r| r.try_get::<Option<Uuid>>("", "id").ok().flatten() == Some(l.sku))
        else {
            return Err(invalid("skuId", format!("no such SKU {}", l.sku)));
        };
        if r.try_get::<String>("", "status")? == "ARCHIVED" {
            return Err(invalid("skuId", format!("SKU {} is no longer sold", l.sku)));
        }
        let warehouse = r.try_get::<Option<Uuid>>("", "warehouse_id")?;
        let unlimited = matches!(
            r.try_get::<String>("", "kind")?.as_str(),
            "COURSE" | "MEMBERSHIP"
        );
        if warehouse.is_none() && !unlimited {
            return Err(ServiceError::SoldOut { sku: l.sku });
        }
        priced.push(Priced {
            sku: l.sku,
            title: r
                .try_get::<String>("", "title")?
                .chars()
                .take(200)
                .collect(),
            code: r.try_get("", "code")?,
            quantity: l.quantity,
            unit_price_fen: r.try_get("", "price_fen")?,
            warehouse,
        });
    }
    Ok(PlaceRead {
        channel_id,
        payment_minutes,
        address,
        dek,
        priced,
    })
}

async fn place(
    core: &Core,
    ctx: &RequestCtx,
    buyer: Uuid,
    channel: ChannelType,
    read: PlaceRead,
    campaign: Option<String>,
    key: &str,
) -> ServiceResult<BuyerOrder> {
    let tenant = ctx.tenant;
    let PlaceRead {
        channel_id,
        payment_minutes,
        address,
        dek,
        priced,
    } = read;
    let total_fen: i64 = priced
        .iter()
        .map(|p| p.unit_price_fen * i64::from(p.quantity))
        .sum();

    // 2. Stock: all lines or none; SOLD_OUT leaves nothing behind.
    let order_id = Uuid::now_v7();
    let now = core.now();
    let due = now + chrono::Duration::minutes(i64::from(payment_minutes));
    let ttl = Duration::from_secs(payment_minutes as u64 * 60) + RESERVATION_MARGIN;
    let tracked: Vec<Line> = priced
        .iter()
        .filter_map(|p| {
            p.warehouse.map(|warehouse| Line {
                sku: p.sku,
                warehouse,
                quantity: p.quantity,
            })
        })
        .collect();
    // Nothing to hold (only unlimited virtual goods): no reservation, and nothing for the
    // settle loop to do either way, so the stock state starts as CONFIRMED.
    let reservation_id = if tracked.is_empty() {
        None
    } else {
        let res = reservation::reserve(
            core,
            ctx,
            ReserveRequest {
                owner_kind: "ORDER".into(),
                owner_id: order_id.to_string(),
                campaign: campaign.clone(),
                lines: tracked,
                ttl,
            },
        )
        .await?;
        Some(res.id)
    };

    // 3. The order. A failure here gives the stock back.
    let written = write_order(
        core,
        ctx,
        NewOrder {
            buyer,
            order_id,
            channel,
            channel_id,
            priced: &priced,
            total_fen,
            address: &address,
            dek: &dek,
            campaign: campaign.as_deref(),
            now,
            due,
            reservation_id,
            key,
        },
    )
    .await;
    let order = match written {
        Ok(o) => o,
        Err(e) => {
            if let Some(rid) = reservation_id
                && let Err(re) = reservation::release(core, ctx, rid, false).await
            {
                tracing::warn!(error = %re, "releasing the stock of a failed placement failed; the TTL will");
            }
            return Err(e);
        }
    };
    publish_live(
        core,
        tenant,
        &[LiveOrderEvent {
            order_id,
            kind: "CREATED".into(),
            status: OrderStatus::PendingPayment.as_str().into(),
        }],
    )
    .await;
    Ok(order)
}

fn order_number(now: DateTime<Utc>) -> String {
    let n: u32 = rand::random::<u32>() % 1_000_000;
    format!("{}{n:06}", now.format("%Y%m%d%H%M%S"))
}

struct NewOrder<'a> {
    buyer: Uuid,
    order_id: Uuid,
    channel: ChannelType,
    channel_id: Uuid,
    priced: &'a [Priced],
    total_fen: i64,
    address: &'a crate::buyers::BuyerAddress,
    dek: &'a uphub_domain::pii::DataKey,
    campaign: Option<&'a str>,
    now: DateTime<Utc>,
    due: DateTime<Utc>,
    reservation_id: Option<Uuid>,
    key: &'a str,
}

/// The order, its lines, its CREATED event and the key's answer: one statement (data-modifying
/// CTEs; the lines' and event's foreign keys are checked at its end), so one round trip inside
/// the transaction. Returns the order as written.
async fn write_order(core: &Core, ctx: &RequestCtx, o: NewOrder<'_>) -> ServiceResult<BuyerOrder> {
    use uphub_domain::pii::{mask_address, mask_name, mask_phone};
    let tenant = ctx.tenant;
    let address = o.address;
    let receiver = Receiver {
        name: address.receiver_name.clone(),
        phone: address.receiver_phone.clone(),
        province: address.province.clone(),
        city: address.city.clone(),
        district: address.district.clone(),
        address: address.detail.clone(),
    };
    let (receiver_ct, receiver_key) = seal_receiver(o.dek, tenant, &receiver)?;
    let masked = json!({
        "name": mask_name(&receiver.name), "phone": mask_phone(&receiver.phone),
        "province": receiver.province, "city": receiver.city, "district": receiver.district,
        "address": mask_address(&format!("{}{}{}{}", receiver.province, receiver.city, receiver.district, receiver.address)),
    });
    let line_rows: Vec<Value> = o
        .priced
        .iter()
        .enumerate()
        .map(|(n, p)| {
            json!({"id": Uuid::now_v7(), "line_no": n as i32 + 1, "platform_line_id": (n + 1).to_string(),
                   "platform_sku_id": p.sku.to_string(), "outer_sku_code": p.code, "sku_id": p.sku,
                   "warehouse_id": p.warehouse, "title": p.title, "quantity": p.quantity,
                   "unit_price_fen": p.unit_price_fen, "paid_fen": p.unit_price_fen * i64::from(p.quantity)})
        })
        .collect();
    let event = json!({"channel": o.channel.as_str(), "source": "CHECKOUT", "reservation": o.reservation_id});
    let answer = json!({"orderId": o.order_id.to_string()});
    // The order number is the second plus six random digits: at a few hundred orders a second
    // two orders can draw the same one, which the unique key refuses; draw again.
    let mut attempt = 0;
    let row = loop {
        attempt += 1;
        let number = order_number(o.now);
        match insert_order(
            core,
            tenant,
            &o,
            &number,
            &masked,
            &receiver_ct,
            &receiver_key,
            &line_rows,
            &event,
            &answer,
        )
        .await
        {
            Err(e)
                if attempt < 5
                    && matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(m)) if m.contains("platform_order_id")) =>
            {
                continue;
            }
            r => break r.map_err(ServiceError::from)?,
        }
    };
    let mut order = buyer_order_from(&row)?;
    order.lines = o
        .priced
        .iter()
        .map(|p| BuyerOrderLine {
            sku_id: Some(p.sku),
            title: p.title.clone(),
            quantity: p.quantity,
            unit_price_fen: p.unit_price_fen,
        })
        .collect();
    Ok(order)
}

#[allow(clippy::too_many_arguments)]
async fn insert_order(
    core: &Core,
    tenant: TenantId,
    o: &NewOrder<'_>,
    number: &str,
    masked: &Value,
    receiver_ct: &str,
    receiver_key: &str,
    line_rows: &[Value],
    event: &Value,
    answer: &Value,
) -> Result<sea_orm::QueryResult, sea_orm::DbErr> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            &format!(
                "WITH o AS (
                   INSERT INTO orders (tenant_id, id, channel_id, channel_type, platform_order_id, status,
                      platform_status, platform_modified_at, receiver_masked, receiver_ct, receiver_key,
                      total_fen, campaign, placed_at, stock_state, reservation_id, buyer_id, payment_due_at)
                   VALUES ($1, $2, $3, $4, $5, 'PENDING_PAYMENT', 'PENDING_PAYMENT', $6, $7,
                      decode($8, 'base64'), decode($9, 'hex'), $10, $11, $6,
                      CASE WHEN $12::uuid IS NULL THEN 'CONFIRMED' ELSE 'RESERVED' END, $12, $13, $14)
                   RETURNING {BUYER_ORDER_COLS}),
                 l AS (
                   INSERT INTO order_lines (tenant_id, order_id, id, line_no, platform_line_id, platform_sku_id,
                      outer_sku_code, sku_id, warehouse_id, title, quantity, unit_price_fen, paid_fen)
                   SELECT $1, $2, x.id, x.line_no, x.platform_line_id, x.platform_sku_id, x.outer_sku_code,
                      x.sku_id, x.warehouse_id, x.title, x.quantity, x.unit_price_fen, x.paid_fen
                   FROM jsonb_to_recordset($15::jsonb) AS x(id uuid, line_no int, platform_line_id text,
                      platform_sku_id text, outer_sku_code text, sku_id uuid, warehouse_id uuid, title text,
                      quantity int, unit_price_fen bigint, paid_fen bigint)),
                 e AS (
                   INSERT INTO order_events (tenant_id, id, order_id, kind, from_status, to_status, detail, actor)
                   VALUES ($1, $16, $2, 'CREATED', NULL, 'PENDING_PAYMENT', $17, $18)),
                 k AS (
                   UPDATE idempotency_keys SET response = $19
                   WHERE tenant_id = $1 AND actor_id = $13 AND scope = 'orderPlace' AND key = $20)
                 SELECT * FROM o"
            ),
            vec![
                tenant.0.into(),
                o.order_id.into(),
                o.channel_id.into(),
                o.channel.as_str().into(),
                number.into(),
                o.now.into(),
                masked.clone().into(),
                receiver_ct.into(),
                receiver_key.into(),
                o.total_fen.into(),
                o.campaign.map(str::to_string).into(),
                o.reservation_id.into(),
                o.buyer.into(),
                o.due.into(),
                Value::Array(line_rows.to_vec()).into(),
                Uuid::now_v7().into(),
                event.clone().into(),
                format!("buyer:{}", o.buyer).into(),
                answer.clone().into(),
                o.key.into(),
            ],
        ))
        .await?
        .ok_or_else(|| sea_orm::DbErr::Custom("order insert returned no row".into()))?;
    tx.commit().await?;
    Ok(row)
}

pub(crate) async fn insert_event(
    tx: &TenantTx,
    order: Uuid,
    kind: &str,
    from: Option<OrderStatus>,
    to: Option<OrderStatus>,
    detail: Value,
    actor: &str,
) -> ServiceResult<()> {
    tx.execute_raw(stmt(
        "INSERT INTO order_events (tenant_id, id, order_id, kind, from_status, to_status, detail, actor)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        vec![
            tx.tenant().0.into(),
            Uuid::now_v7().into(),
            order.into(),
            kind.into(),
            from.map(|s| s.as_str().to_string()).into(),
            to.map(|s| s.as_str().to_string()).into(),
            detail.into(),
            actor.into(),
        ],
    ))
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- queries ---

const BUYER_ORDER_COLS: &str = "id, platform_order_id, channel_type, status, total_fen, currency,
    placed_at, paid_at, payment_due_at, receiver_masked, reservation_id";

fn buyer_order_from(r: &sea_orm::QueryResult) -> ServiceResult<BuyerOrder> {
    let status: String = r.try_get("", "status")?;
    Ok(BuyerOrder {
        id: r.try_get("", "id")?,
        number: r.try_get("", "platform_order_id")?,
        channel_type: r.try_get("", "channel_type")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("bad order status {status}"))?,
        total_fen: r.try_get("", "total_fen")?,
        currency: r.try_get("", "currency")?,
        placed_at: r.try_get("", "placed_at")?,
        paid_at: r.try_get("", "paid_at")?,
        payment_due_at: r.try_get("", "payment_due_at")?,
        receiver_masked: r.try_get("", "receiver_masked")?,
        reservation_id: r.try_get("", "reservation_id")?,
        lines: vec![],
    })
}

async fn attach_lines(tx: &TenantTx, orders: &mut [BuyerOrder]) -> ServiceResult<()> {
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let rows = tx
        .query_all_raw(stmt(
            "SELECT order_id, sku_id, title, quantity, unit_price_fen FROM order_lines
             WHERE tenant_id = $1 AND order_id = ANY($2) ORDER BY order_id, line_no",
            vec![tx.tenant().0.into(), ids.into()],
        ))
        .await?;
    for r in rows {
        let order: Uuid = r.try_get("", "order_id")?;
        if let Some(o) = orders.iter_mut().find(|o| o.id == order) {
            o.lines.push(BuyerOrderLine {
                sku_id: r.try_get("", "sku_id")?,
                title: r.try_get("", "title")?,
                quantity: r.try_get("", "quantity")?,
                unit_price_fen: r.try_get("", "unit_price_fen")?,
            });
        }
    }
    Ok(())
}

/// `buyerOrder`: only the caller's own; anyone else's id answers like an unknown one.
pub async fn buyer_order(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<BuyerOrder> {
    let buyer = require_buyer(ctx)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            &format!(
                "SELECT {BUYER_ORDER_COLS} FROM orders WHERE tenant_id = $1 AND buyer_id = $2 AND id = $3"
            ),
            vec![ctx.tenant.0.into(), buyer.into(), id.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    let mut list = vec![buyer_order_from(&row)?];
    attach_lines(&tx, &mut list).await?;
    tx.commit().await?;
    list.pop().ok_or(ServiceError::NotFound)
}

/// `buyerOrders`: the caller's orders, newest first.
pub async fn buyer_orders(
    core: &Core,
    ctx: &RequestCtx,
    page: PageArgs,
) -> ServiceResult<Page<BuyerOrder>> {
    let buyer = require_buyer(ctx)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            &format!(
                "SELECT {BUYER_ORDER_COLS} FROM orders WHERE tenant_id = $1 AND buyer_id = $2
                   AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
            ),
            vec![
                ctx.tenant.0.into(),
                buyer.into(),
                page.after.into(),
                ((page.first + 1) as i64).into(),
            ],
        ))
        .await?;
    let mut list = rows
        .iter()
        .map(buyer_order_from)
        .collect::<ServiceResult<Vec<_>>>()?;
    attach_lines(&tx, &mut list).await?;
    tx.commit().await?;
    Ok(Page::from_overfetch(list, page.first))
}

/// The activation codes issued to one of the caller's orders (empty until it is confirmed).
pub async fn buyer_order_codes(
    core: &Core,
    ctx: &RequestCtx,
    order: &BuyerOrder,
) -> ServiceResult<Vec<String>> {
    let buyer = require_buyer(ctx)?;
    let Some(rid) = order.reservation_id else {
        return Ok(vec![]);
    };
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            "SELECT c.code FROM activation_codes c JOIN orders o
               ON o.tenant_id = c.tenant_id AND o.reservation_id = c.reservation_id
             WHERE c.tenant_id = $1 AND c.reservation_id = $2 AND o.buyer_id = $3 AND c.status = 'ISSUED'
             ORDER BY c.code",
            vec![ctx.tenant.0.into(), rid.into(), buyer.into()],
        ))
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| r.try_get::<String>("", "code").map_err(Into::into))
        .collect()
}

// ------------------------------------------------------------------- cart ---

#[derive(Debug, Clone)]
pub struct CartLine {
    pub sku_id: Uuid,
    pub quantity: i32,
    pub updated_at: DateTime<Utc>,
}

/// `cart`: the caller's cart lines, oldest first.
pub async fn cart(core: &Core, ctx: &RequestCtx) -> ServiceResult<Vec<CartLine>> {
    let buyer = require_buyer(ctx)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let lines = cart_in(&tx, buyer).await?;
    tx.commit().await?;
    Ok(lines)
}

async fn cart_in(tx: &TenantTx, buyer: Uuid) -> ServiceResult<Vec<CartLine>> {
    let rows = tx
        .query_all_raw(stmt(
            "SELECT sku_id, quantity, updated_at FROM cart_lines WHERE tenant_id = $1 AND buyer_id = $2
             ORDER BY updated_at, sku_id",
            vec![tx.tenant().0.into(), buyer.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(CartLine {
                sku_id: r.try_get("", "sku_id")?,
                quantity: r.try_get("", "quantity")?,
                updated_at: r.try_get("", "updated_at")?,
            })
        })
        .collect()
}

/// `cartLineSet`: sets one SKU's quantity (0 removes it); returns the whole cart.
pub async fn cart_line_set(
    core: &Core,
    ctx: &RequestCtx,
    sku: Uuid,
    quantity: i32,
) -> ServiceResult<Vec<CartLine>> {
    let buyer = require_buyer(ctx)?;
    if !(0..=MAX_QUANTITY).contains(&quantity) {
        return Err(invalid(
            "quantity",
            format!("must be between 0 and {MAX_QUANTITY}"),
        ));
    }
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    // Serializes one buyer's cart edits, so the line cap holds.
    tx.query_one_raw(stmt(
        "SELECT id FROM buyers WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        vec![ctx.tenant.0.into(), buyer.into()],
    ))
    .await?
    .ok_or_else(|| ServiceError::Unauthenticated("unknown buyer".into()))?;
    if quantity == 0 {
        tx.execute_raw(stmt(
            "DELETE FROM cart_lines WHERE tenant_id = $1 AND buyer_id = $2 AND sku_id = $3",
            vec![ctx.tenant.0.into(), buyer.into(), sku.into()],
        ))
        .await?;
    } else {
        let known = tx
            .query_one_raw(stmt(
                "SELECT 1 AS one FROM skus WHERE tenant_id = $1 AND id = $2",
                vec![ctx.tenant.0.into(), sku.into()],
            ))
            .await?
            .is_some();
        if !known {
            return Err(invalid("skuId", "no such SKU"));
        }
        let count: i64 = tx
            .query_one_raw(stmt(
                "SELECT count(*) AS n FROM cart_lines WHERE tenant_id = $1 AND buyer_id = $2 AND sku_id <> $3",
                vec![ctx.tenant.0.into(), buyer.into(), sku.into()],
            ))
            .await?
            .map(|r| r.try_get("", "n"))
            .transpose()?
            .unwrap_or(0);
        if count >= MAX_CART_LINES {
            return Err(ServiceError::Conflict {
                field: Some("skuId"),
                message: format!("a cart holds at most {MAX_CART_LINES} lines"),
            });
        }
        tx.execute_raw(stmt(
            "INSERT INTO cart_lines (tenant_id, buyer_id, sku_id, quantity) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, buyer_id, sku_id) DO UPDATE SET quantity = EXCLUDED.quantity, updated_at = now()",
            vec![ctx.tenant.0.into(), buyer.into(), sku.into(), quantity.into()],
        ))
        .await?;
    }
    let lines = cart_in(&tx, buyer).await?;
    tx.commit().await?;
    Ok(lines)
}

// --------------------------------------------------------------- deadline ---

/// Cancels own-channel orders whose payment deadline passed (every tenant); the settle loop then
/// releases their stock. Returns how many it cancelled.
pub async fn cancel_overdue(core: &Core, batch: u64) -> ServiceResult<usize> {
    let rows = core
        .db
        .query_all_raw(stmt(
            "SELECT tenant_id, id FROM orders
             WHERE status = 'PENDING_PAYMENT' AND payment_due_at IS NOT NULL AND payment_due_at < now()
             ORDER BY payment_due_at LIMIT $1",
            vec![(batch as i64).into()],
        ))
        .await?;
    let mut n = 0;
    for r in rows {
        let tenant = TenantId(r.try_get("", "tenant_id")?);
        let id: Uuid = r.try_get("", "id")?;
        if cancel_one_overdue(core, tenant, id).await? {
            n += 1;
        }
    }
    Ok(n)
}

async fn cancel_one_overdue(core: &Core, tenant: TenantId, id: Uuid) -> ServiceResult<bool> {
    check_transition(OrderStatus::PendingPayment, OrderStatus::Cancelled)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    // Row lock: a payment callback for the same order waits, then sees CANCELLED and refunds.
    let updated = tx
        .execute_raw(stmt(
            "UPDATE orders SET status = 'CANCELLED', platform_status = 'PAYMENT_TIMEOUT',
                stock_dirty = true, version = version + 1, platform_modified_at = now(), updated_at = now()
             WHERE tenant_id = $1 AND id = $2 AND status = 'PENDING_PAYMENT' AND payment_due_at < now()",
            vec![tenant.0.into(), id.into()],
        ))
        .await?
        .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    insert_event(
        &tx,
        id,
        "STATUS_CHANGED",
        Some(OrderStatus::PendingPayment),
        Some(OrderStatus::Cancelled),
        json!({"reason": "PAYMENT_TIMEOUT"}),
        "system",
    )
    .await?;
    // Trades it opened at the providers are closed there by the close sweep, with retries.
    crate::payments::close_on_timeout(&tx, id).await?;
    tx.commit().await?;
    publish_live(
        core,
        tenant,
        &[LiveOrderEvent {
            order_id: id,
            kind: "STATUS_CHANGED".into(),
            status: OrderStatus::Cancelled.as_str().into(),
        }],
    )
    .await;
    Ok(true)
}

/// The checkout upkeep of one stock-jobs tick: payment deadlines and idempotency keys past their
/// 24 h. Provider calls never run inside the tick: closing the trades of timed-out orders and
/// retrying refunds the provider did not take run as sweeps beside it ([`spawn_sweep`]), so a
/// slow or unreachable provider never holds up the stock loop.
pub async fn upkeep(core: &Core) -> ServiceResult<()> {
    cancel_overdue(core, 200).await?;
    spawn_sweep(core, "trade-close", |core| async move {
        crate::payments::close_due_trades(&core, 64).await
    });
    spawn_sweep(core, "refund-retry", |core| async move {
        crate::payments::retry_pending_refunds(&core, 50).await
    });
    core.db
        .execute_raw(stmt(
            "DELETE FROM idempotency_keys WHERE ctid IN (
               SELECT ctid FROM idempotency_keys WHERE created_at < now() - interval '24 hours' LIMIT 500)",
            vec![],
        ))
        .await?;
    Ok(())
}

/// Sweeps running in this process, by (deployment namespace, sweep): at most one each; the next
/// tick starts another once it ends.
static SWEEPS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashSet<(String, &'static str)>>,
> = std::sync::LazyLock::new(Default::default);

/// Starts `sweep` in the background unless the same sweep of this deployment is still running.
pub fn spawn_sweep<F, Fut>(core: &Core, name: &'static str, sweep: F)
where
    F: FnOnce(Core) -> Fut,
    Fut: std::future::Future<Output = ServiceResult<usize>> + Send + 'static,
{
    let slot = (core.cfg.namespace.clone(), name);
    let claimed = SWEEPS
        .lock()
        .map(|mut running| running.insert(slot.clone()))
        .unwrap_or(false);
    if !claimed {
        return;
    }
    /// Frees the slot however the sweep ends (a panic included).
    struct Running((String, &'static str));
    impl Drop for Running {
        fn drop(&mut self) {
            if let Ok(mut running) = SWEEPS.lock() {
                running.remove(&self.0);
            }
        }
    }
    let running = Running(slot);
    let work = sweep(core.clone());
    tokio::spawn(async move {
        let _running = running;
        if let Err(e) = work.await {
            tracing::warn!(error = %e, sweep = name, "sweep failed");
        }
    });
}
