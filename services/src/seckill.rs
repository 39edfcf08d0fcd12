//! Flash sales (秒杀): a campaign sells a quota of one SKU at a price in a time window, to buyers
//! of one tenant, through its own deployable (`uphub seckill`).
//!
//! **Redis admits, Postgres decides** — as in the stock engine, with the admission moved out of
//! the request's transaction entirely:
//!
//! 1. *Warm.* Creating a campaign (quota ≤ what is available at that moment) writes its Redis
//!    state; `seckillCampaignWarm` and the worker re-warm it when it is missing (a flushed Redis is
//!    rebuilt from `seckill_tickets`). All keys of a campaign share the hash tag
//!    `{<tenant>:sk:<campaign>}`, so one Lua call touches one cluster slot, and a buyer of another
//!    tenant computes keys that do not exist (NOT_FOUND, as RLS would answer).
//!    `c` (hash: `q` remaining units, `lim` per-buyer limit, `s`/`e` window in ms), `bought` (buyer
//!    → units admitted), `req` (`<buyer>:<requestId>` → ticket), `tk` (ticket → record
//!    `STATUS|qty|buyer|request|admitted_ms|order|due_ms`), `pq` (zset of undecided tickets by
//!    admission time), `ip:<ip>` and `bb:<buyer>` (token buckets). Everything expires 7 days
//!    after the campaign ends; Postgres keeps the record.
//! 2. *Admit.* `seckillBuy` is ONE `EVALSHA` ([`admission_script`]): campaign exists → window →
//!    duplicate request (returns the first ticket) → quantity ≤ limit → sold out (answered here,
//!    before any write) → per-IP and per-buyer token buckets (all or none, Redis server time) →
//!    per-buyer limit → quota; an admitted request decrements the quota, counts the buyer's
//!    units, records the ticket QUEUED and adds it to `pq`. No Postgres on this path.
//! 3. *Queue.* The edge publishes the ticket to the `seckill-tickets` queue (default exchange,
//!    persistent). It does not wait for the broker's confirm: `pq` is the durable to-do list, and
//!    the worker re-publishes tickets undecided for [`REPUBLISH_AFTER_MS`] (a crash between the
//!    script and the publish, a lost message). The writer is idempotent per ticket id.
//! 4. *Write.* Order writers take up to [`SeckillConfig::batch_max`] tickets or wait
//!    [`SeckillConfig::batch_wait_ms`], and per tenant run ONE transaction: claim the tickets
//!    (`INSERT … ON CONFLICT DO NOTHING`: a redelivered ticket is skipped), lock the levels of the
//!    batch's SKUs in a global order (`SELECT … FOR UPDATE`), read the buyers' units already won
//!    (the per-buyer limit decided again by Postgres), allocate first come first served
//!    ([`rules::allocate`]), ONE guarded `UPDATE inventory_levels … reserved = reserved + k WHERE
//!    on_hand - reserved - held >= k` per SKU, then one statement of data-modifying CTEs for the
//!    ticket statuses, reservations (+lines, owner ORDER/order id so the order settle loop finds
//!    them), ledger rows, orders (PENDING_PAYMENT, `payment_due_at`, stock RESERVED,
//!    `reservation_id`, `buyer_id`), order lines, timeline rows and dirty marks; COMMIT. One hot
//!    row update per batch, not per ticket, so a hot SKU is not held to Postgres' single-row rate.
//! 5. *Tell.* After commit: a finalize script per campaign writes the outcomes into `tk`, gives
//!    the quota (and the buyer's count) back for tickets that did not win, and removes them from
//!    `pq`; the general stock hash is bumped by −k (`stock_cache`), the new levels are published,
//!    and each ticket's result is published on `live:<tenant>:seckill:<ticket>` (polling reads
//!    `tk`; long-poll and the subscription wait on that channel).
//!
//! The campaign draws from the same general pool as every other channel: a marketplace order
//! racing the sale goes through the stock engine's guarded UPDATE on the same row, so the sum can
//! never exceed what is on hand. Tickets admitted in Redis for units Postgres no longer has
//! become SOLD_OUT and their quota returns.
//!
//! Failure handling: a batch that fails is retried (three attempts, back-off); then each of its
//! tickets is handed to the `seckill-order-writer` consumer of the common framework (one ticket
//! per transaction, retries, dead letters, replay).
//!
//! Unpaid orders: a reservation lasts until the payment deadline plus [`RESERVATION_MARGIN`],
//! exactly like checkout's (owner ORDER/order id: payment extends it, checkout's deadline sweeper
//! cancels the order, the settle loop releases it into the general pool). The worker's upkeep
//! then turns the ticket CANCELLED and, while the sale runs, gives its units back to the quota —
//! unpaid units go back on sale.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use redis::Script;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uphub_domain::error::ErrorCode;
use uphub_domain::identity::{InvalidInput, Permission};
use uphub_domain::money::{Currency, Money};
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

use crate::audit::require;
use crate::consumer::Handler;
use crate::inventory::{LevelView, level_from};
use crate::outbox::Envelope;
use crate::page::{Page, PageArgs};
use crate::{Core, ServiceError, ServiceResult, stock_cache};

pub use rules::TicketStatus;

/// Topic of a ticket envelope.
pub const TICKET_TOPIC: &str = "seckill.ticket";
/// The batch writers' queue (`uphub.<ns>.seckill-tickets`).
pub const TICKET_QUEUE: &str = "seckill-tickets";
/// The one-ticket-per-transaction fallback consumer of the common framework.
pub const FALLBACK_CONSUMER: &str = "seckill-order-writer";
/// Tickets undecided for this long are published again by the worker.
pub const REPUBLISH_AFTER_MS: i64 = 5_000;
/// Redis state outlives the campaign by this much (ticket polling after the sale).
const RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// A reservation outlives its order's payment deadline by this much (as checkout's do): the
/// deadline sweeper cancels an unpaid order first, and payment extends the reservation.
const RESERVATION_MARGIN: chrono::Duration = chrono::Duration::minutes(10);

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

// ------------------------------------------------------------------ rules ---

/// Pure rules of the flash sale (no I/O): statuses, input parsing, the ticket record and the
/// allocation of a batch. They would live in `domain::seckill`; kept here while this module is
/// the only user.
pub mod rules {
    use std::collections::HashMap;
    use std::hash::Hash;

    use chrono::{DateTime, Utc};
    use uphub_domain::identity::InvalidInput;
    use uphub_domain::money::Money;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum TicketStatus {
        /// Admitted in Redis, waiting for an order writer.
        Queued,
        /// An order holds the units; pay by its deadline.
        Won,
        /// No units left: at admission, or when Postgres had fewer than Redis admitted.
        SoldOut,
        /// The buyer already holds the campaign's per-buyer limit.
        LimitExceeded,
        /// Won, but the order was not paid in time: its units went back on sale.
        Cancelled,
    }

    impl TicketStatus {
        pub const fn as_str(self) -> &'static str {
            match self {
                TicketStatus::Queued => "QUEUED",
                TicketStatus::Won => "WON",
                TicketStatus::SoldOut => "SOLD_OUT",
                TicketStatus::LimitExceeded => "LIMIT_EXCEEDED",
                TicketStatus::Cancelled => "CANCELLED",
            }
        }

        pub fn parse(s: &str) -> Option<TicketStatus> {
            [
                TicketStatus::Queued,
                TicketStatus::Won,
                TicketStatus::SoldOut,
                TicketStatus::LimitExceeded,
                TicketStatus::Cancelled,
            ]
            .into_iter()
            .find(|t| t.as_str() == s)
        }

        pub const fn is_final(self) -> bool {
            !matches!(self, TicketStatus::Queued)
        }
    }

    /// A campaign as staff asked for it, checked.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CampaignTerms {
        pub quota: i32,
        pub price: Money,
        pub starts_at: DateTime<Utc>,
        pub ends_at: DateTime<Utc>,
        pub per_buyer_limit: i32,
        pub payment_minutes: i32,
    }

    pub const MAX_QUOTA: i64 = 1_000_000;
    pub const MAX_PER_BUYER: i64 = 1_000;
    pub const MAX_WINDOW_DAYS: i64 = 31;

    #[allow(clippy::too_many_arguments)]
    pub fn parse_terms(
        quota: i64,
        price_amount: &str,
        price_currency: &str,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        per_buyer_limit: i64,
        payment_minutes: i64,
        now: DateTime<Utc>,
    ) -> Result<CampaignTerms, InvalidInput> {
        let bad = |field: &'static str, message: String| InvalidInput { field, message };
        if !(1..=MAX_QUOTA).contains(&quota) {
            return Err(bad("quota", format!("must be between 1 and {MAX_QUOTA}")));
        }
        if !(1..=MAX_PER_BUYER).contains(&per_buyer_limit) {
            return Err(bad(
                "perBuyerLimit",
                format!("must be between 1 and {MAX_PER_BUYER}"),
            ));
        }
        if per_buyer_limit > quota {
            return Err(bad("perBuyerLimit", "must not exceed the quota".into()));
        }
        if !(1..=1440).contains(&payment_minutes) {
            return Err(bad("paymentMinutes", "must be between 1 and 1440".into()));
        }
        if ends_at <= starts_at {
            return Err(bad("endsAt", "must be after startsAt".into()));
        }
        if ends_at <= now {
            return Err(bad("endsAt", "must be in the future".into()));
        }
        if ends_at - starts_at > chrono::Duration::days(MAX_WINDOW_DAYS) {
            return Err(bad(
                "endsAt",
                format!("a sale lasts at most {MAX_WINDOW_DAYS} days"),
            ));
        }
        let price = Money::parse("price", price_amount, price_currency)?;
        Ok(CampaignTerms {
            quota: quota as i32,
            price,
            starts_at,
            ends_at,
            per_buyer_limit: per_buyer_limit as i32,
            payment_minutes: payment_minutes as i32,
        })
    }

    /// A client's idempotency key for one buy: 1-64 of A-Z a-z 0-9 '-' '_' (it is part of a
    /// Redis field and of the ticket record).
    pub fn parse_request_id(s: &str) -> Result<&str, InvalidInput> {
        if s.is_empty()
            || s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(InvalidInput {
                field: "requestId",
                message: "must be 1-64 of A-Z, a-z, 0-9, '-' or '_'".into(),
            });
        }
        Ok(s)
    }

    /// What a batch ticket asks for: units, the holder whose per-buyer limit applies, the limit.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Want<K> {
        pub holder: K,
        pub quantity: i32,
        pub limit: i32,
    }

    /// First come, first served over `available` units of one SKU: a ticket wins when its
    /// holder stays within the limit (counting `already` won and earlier winners of the batch)
    /// and its whole quantity is still there; otherwise LIMIT_EXCEEDED or SOLD_OUT. A later,
    /// smaller ticket may take units a larger one could not. Returns the statuses and the units
    /// taken.
    pub fn allocate<K: Eq + Hash + Clone>(
        available: i32,
        already: &HashMap<K, i32>,
        wants: &[Want<K>],
    ) -> (Vec<TicketStatus>, i32) {
        let mut left = available.max(0);
        let mut held: HashMap<K, i32> = HashMap::new();
        let mut out = Vec::with_capacity(wants.len());
        for w in wants {
            let mine = already.get(&w.holder).copied().unwrap_or(0)
                + held.get(&w.holder).copied().unwrap_or(0);
            if w.quantity <= 0 || mine + w.quantity > w.limit {
                out.push(TicketStatus::LimitExceeded);
            } else if w.quantity > left {
                out.push(TicketStatus::SoldOut);
            } else {
                left -= w.quantity;
                *held.entry(w.holder.clone()).or_default() += w.quantity;
                out.push(TicketStatus::Won);
            }
        }
        (out, available.max(0) - left)
    }

    /// A ticket as Redis keeps it: `STATUS|qty|buyer|request|admitted_ms|order|due_ms`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Record {
        pub status: TicketStatus,
        pub quantity: i32,
        pub buyer: uuid::Uuid,
        pub request: String,
        pub admitted_ms: i64,
        pub order: Option<uuid::Uuid>,
        pub due_ms: Option<i64>,
    }

    impl Record {
        pub fn parse(s: &str) -> Option<Record> {
            let p: Vec<&str> = s.split('|').collect();
            if p.len() != 7 {
                return None;
            }
            Some(Record {
                status: TicketStatus::parse(p[0])?,
                quantity: p[1].parse().ok()?,
                buyer: uuid::Uuid::try_parse(p[2]).ok()?,
                request: p[3].to_string(),
                admitted_ms: p[4].parse().ok()?,
                order: (!p[5].is_empty())
                    .then(|| uuid::Uuid::try_parse(p[5]).ok())
                    .flatten(),
                due_ms: (!p[6].is_empty()).then(|| p[6].parse().ok()).flatten(),
            })
        }

        pub fn encode(&self) -> String {
            format!(
                "{}|{}|{}|{}|{}|{}|{}",
                self.status.as_str(),
                self.quantity,
                self.buyer,
                self.request,
                self.admitted_ms,
                self.order.map(|o| o.to_string()).unwrap_or_default(),
                self.due_ms.map(|d| d.to_string()).unwrap_or_default()
            )
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use chrono::TimeZone;

        fn want(holder: &'static str, quantity: i32, limit: i32) -> Want<&'static str> {
            Want {
                holder,
                quantity,
                limit,
            }
        }

        #[test]
        fn allocation_is_first_come_first_served_and_never_exceeds_the_units() {
            let (st, taken) = allocate(
                3,
                &HashMap::new(),
                &[want("a", 1, 1), want("b", 2, 2), want("c", 1, 1)],
            );
            assert_eq!(
                st,
                vec![TicketStatus::Won, TicketStatus::Won, TicketStatus::SoldOut]
            );
            assert_eq!(taken, 3);
            // A later smaller ticket takes what a larger one could not.
            let (st, taken) = allocate(1, &HashMap::new(), &[want("a", 2, 2), want("b", 1, 1)]);
            assert_eq!(st, vec![TicketStatus::SoldOut, TicketStatus::Won]);
            assert_eq!(taken, 1);
            let (st, taken) = allocate(-4, &HashMap::new(), &[want("a", 1, 1)]);
            assert_eq!((st, taken), (vec![TicketStatus::SoldOut], 0));
        }

        #[test]
        fn allocation_holds_the_per_buyer_limit_across_batches_and_within_one() {
            let already = HashMap::from([("a", 1)]);
            let (st, taken) = allocate(
                10,
                &already,
                &[
                    want("a", 1, 2),
                    want("a", 1, 2),
                    want("b", 3, 2),
                    want("b", 2, 2),
                ],
            );
            assert_eq!(
                st,
                vec![
                    TicketStatus::Won,
                    TicketStatus::LimitExceeded,
                    TicketStatus::LimitExceeded,
                    TicketStatus::Won
                ]
            );
            assert_eq!(taken, 3);
        }

        #[test]
        fn records_round_trip_and_reject_garbage() {
            let r = Record {
                status: TicketStatus::Won,
                quantity: 2,
                buyer: uuid::Uuid::now_v7(),
                request: "req-1".into(),
                admitted_ms: 1_700_000_000_123,
                order: Some(uuid::Uuid::now_v7()),
                due_ms: Some(1_700_000_900_000),
            };
            assert_eq!(Record::parse(&r.encode()), Some(r.clone()));
            let queued = Record {
                status: TicketStatus::Queued,
                order: None,
                due_ms: None,
                ..r
            };
            assert_eq!(Record::parse(&queued.encode()), Some(queued));
            assert_eq!(Record::parse(""), None);
            assert_eq!(Record::parse("WON|x|y|z|1||"), None);
            assert_eq!(
                Record::parse("NOPE|1|00000000-0000-0000-0000-000000000000|r|1||"),
                None
            );
        }

        #[test]
        fn campaign_terms_are_checked() {
            let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
            let h = chrono::Duration::hours(1);
            let ok = parse_terms(50, "9.90", "CNY", now, now + h, 1, 5, now).unwrap();
            assert_eq!(ok.price.fen, 990);
            let err = |r: Result<CampaignTerms, InvalidInput>| r.unwrap_err().field;
            assert_eq!(
                err(parse_terms(0, "1", "CNY", now, now + h, 1, 5, now)),
                "quota"
            );
            assert_eq!(
                err(parse_terms(5, "1", "CNY", now, now + h, 6, 5, now)),
                "perBuyerLimit"
            );
            assert_eq!(
                err(parse_terms(5, "1", "CNY", now, now + h, 0, 5, now)),
                "perBuyerLimit"
            );
            assert_eq!(
                err(parse_terms(5, "1", "CNY", now, now + h, 1, 0, now)),
                "paymentMinutes"
            );
            assert_eq!(
                err(parse_terms(5, "1", "CNY", now, now, 1, 5, now)),
                "endsAt"
            );
            assert_eq!(
                err(parse_terms(5, "1", "CNY", now - h - h, now - h, 1, 5, now)),
                "endsAt"
            );
            assert_eq!(
                err(parse_terms(
                    5,
                    "1",
                    "CNY",
                    now,
                    now + chrono::Duration::days(40),
                    1,
                    5,
                    now
                )),
                "endsAt"
            );
            assert_eq!(
                err(parse_terms(5, "-1", "CNY", now, now + h, 1, 5, now)),
                "price"
            );
        }

        #[test]
        fn request_ids_are_short_and_plain() {
            assert!(parse_request_id("abc-DEF_123").is_ok());
            for bad in ["", "a|b", "a:b", "é", &"x".repeat(65)] {
                assert!(parse_request_id(bad).is_err(), "{bad}");
            }
        }
    }
}

use rules::Record;

// ----------------------------------------------------------------- config ---

/// Settings of the flash sale, from `UPHUB_SECKILL_*` (read by the seckill and worker roles).
#[derive(Debug, Clone, PartialEq)]
pub struct SeckillConfig {
    /// `UPHUB_SECKILL_LISTEN` (default `127.0.0.1:8081`).
    pub listen: String,
    /// Per client IP and campaign: `UPHUB_SECKILL_IP_RATE_PER_SEC` (20), `UPHUB_SECKILL_IP_BURST` (40).
    pub ip_rate_per_sec: f64,
    pub ip_burst: f64,
    /// Per buyer and campaign: `UPHUB_SECKILL_BUYER_RATE_PER_SEC` (2), `UPHUB_SECKILL_BUYER_BURST` (5).
    pub buyer_rate_per_sec: f64,
    pub buyer_burst: f64,
    /// `UPHUB_SECKILL_TRUST_FORWARDED_FOR=1` behind a load balancer: the client IP is the last
    /// `X-Forwarded-For` entry (the one the balancer appended), not the socket peer.
    pub trust_forwarded_for: bool,
    /// Order writers: `UPHUB_SECKILL_BATCH_MAX` (200) tickets or `UPHUB_SECKILL_BATCH_WAIT_MS` (20).
    pub batch_max: usize,
    pub batch_wait_ms: u64,
}

impl Default for SeckillConfig {
    fn default() -> Self {
        SeckillConfig {
            listen: "127.0.0.1:8081".into(),
            ip_rate_per_sec: 20.0,
            ip_burst: 40.0,
            buyer_rate_per_sec: 2.0,
            buyer_burst: 5.0,
            trust_forwarded_for: false,
            batch_max: 200,
            batch_wait_ms: 20,
        }
    }
}

impl SeckillConfig {
    pub fn from_env() -> anyhow::Result<SeckillConfig> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<SeckillConfig> {
        let d = SeckillConfig::default();
        let num = |name: &str, default: f64| -> anyhow::Result<f64> {
            match var(name) {
                None => Ok(default),
                Some(v) => {
                    let n: f64 = v.trim().parse().with_context(|| format!("{name}={v}"))?;
                    anyhow::ensure!(n.is_finite() && n > 0.0, "{name} must be positive");
                    Ok(n)
                }
            }
        };
        let batch_max = num("UPHUB_SECKILL_BATCH_MAX", d.batch_max as f64)?;
        let batch_wait = num("UPHUB_SECKILL_BATCH_WAIT_MS", d.batch_wait_ms as f64)?;
        Ok(SeckillConfig {
            listen: var("UPHUB_SECKILL_LISTEN").unwrap_or(d.listen),
            ip_rate_per_sec: num("UPHUB_SECKILL_IP_RATE_PER_SEC", d.ip_rate_per_sec)?,
            ip_burst: num("UPHUB_SECKILL_IP_BURST", d.ip_burst)?,
            buyer_rate_per_sec: num("UPHUB_SECKILL_BUYER_RATE_PER_SEC", d.buyer_rate_per_sec)?,
            buyer_burst: num("UPHUB_SECKILL_BUYER_BURST", d.buyer_burst)?,
            trust_forwarded_for: matches!(
                var("UPHUB_SECKILL_TRUST_FORWARDED_FOR").as_deref(),
                Some("1" | "true")
            ),
            batch_max: (batch_max as usize).clamp(1, 1000),
            batch_wait_ms: (batch_wait as u64).clamp(1, 1000),
        })
    }

    /// The process-wide settings (environment, or defaults when it is malformed — logged).
    pub fn global() -> &'static SeckillConfig {
        static CFG: LazyLock<SeckillConfig> = LazyLock::new(|| {
            SeckillConfig::from_env().unwrap_or_else(|e| {
                tracing::error!(error = %format!("{e:#}"), "bad UPHUB_SECKILL_* settings; using defaults");
                SeckillConfig::default()
            })
        });
        &CFG
    }
}

// ----------------------------------------------------------------- errors ---

/// What a flash-sale call can fail with, each on the one code table.
#[derive(Debug, thiserror::Error)]
pub enum SeckillError {
    #[error("the sale has not started; it starts in {starts_in_ms} ms")]
    NotStarted { starts_in_ms: u64 },
    #[error("the sale has ended")]
    Ended,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl SeckillError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SeckillError::NotStarted { .. } => ErrorCode::CampaignNotStarted,
            SeckillError::Ended => ErrorCode::CampaignEnded,
            SeckillError::Service(e) => e.code(),
        }
    }

    pub fn field(&self) -> Option<&'static str> {
        match self {
            SeckillError::Service(e) => e.field(),
            _ => Some("campaignId"),
        }
    }

    /// Errors a client can act on, returned as `userErrors` by the mutation.
    pub fn is_user_error(&self) -> bool {
        match self {
            SeckillError::Service(e) => e.is_user_error(),
            _ => true,
        }
    }
}

impl From<InvalidInput> for SeckillError {
    fn from(e: InvalidInput) -> Self {
        SeckillError::Service(e.into())
    }
}

impl From<redis::RedisError> for SeckillError {
    fn from(e: redis::RedisError) -> Self {
        SeckillError::Service(e.into())
    }
}

pub type SeckillResult<T> = Result<T, SeckillError>;

// ------------------------------------------------------------------- keys ---

struct Keys {
    campaign: String,
    bought: String,
    requests: String,
    tickets: String,
    pending: String,
}

fn tag(tenant: TenantId, campaign: Uuid) -> String {
    format!("{tenant}:sk:{campaign}")
}

fn keys(core: &Core, tenant: TenantId, campaign: Uuid) -> Keys {
    let t = tag(tenant, campaign);
    Keys {
        campaign: core.key(&t, "c"),
        bought: core.key(&t, "bought"),
        requests: core.key(&t, "req"),
        tickets: core.key(&t, "tk"),
        pending: core.key(&t, "pq"),
    }
}

fn live_topic(ticket: Uuid) -> String {
    format!("seckill:{ticket}")
}

/// A ticket's public id: the campaign travels with it, so a poll finds the campaign's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TicketRef {
    pub campaign: Uuid,
    pub ticket: Uuid,
}

impl TicketRef {
    pub fn encode(&self) -> String {
        uphub_domain::gid::encode(
            "SeckillTicket",
            format!("{}.{}", self.campaign, self.ticket),
        )
    }

    /// A malformed or mistyped id is None, answered like an unknown ticket.
    pub fn decode(id: &str) -> Option<TicketRef> {
        let raw = uphub_domain::gid::decode("SeckillTicket", id)?;
        let (c, t) = raw.split_once('.')?;
        Some(TicketRef {
            campaign: Uuid::try_parse(c).ok()?,
            ticket: Uuid::try_parse(t).ok()?,
        })
    }
}

// ---------------------------------------------------------------- scripts ---

/// Admission: KEYS campaign, bought, requests, tickets, pending, ip bucket, buyer bucket;
/// ARGV buyer, request id, new ticket id, quantity, ip rate, ip burst, buyer rate, buyer burst.
/// Returns {code, a, b}: 0 admitted {ticket, record}; 1 duplicate {ticket, record};
/// 2 LIMIT_EXCEEDED {units left to the buyer}; 3 SOLD_OUT {units left}; -1 unknown campaign;
/// -2 not started {ms to start}; -3 ended; -4 rate limited {retry ms}; -5 quantity above limit.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local c = redis.call('HMGET', KEYS[1], 'q', 'lim', 's', 'e')
if not c[1] then return {-1, '', ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local starts = tonumber(c[3])
if now < starts then return {-2, tostring(starts - now), ''} end
if now >= tonumber(c[4]) then return {-3, '', ''} end
local rk = ARGV[1] .. ':' .. ARGV[2]
local prev = redis.call('HGET', KEYS[3], rk)
if prev then return {1, prev, redis.call('HGET', KEYS[4], prev) or ''} end
local qty = tonumber(ARGV[4])
local lim = tonumber(c[2])
if qty > lim then return {-5, tostring(lim), ''} end
local q = tonumber(c[1])
if q <= 0 then return {3, '0', ''} end
local levels = {}
local wait = 0
for i = 1, 2 do
  local rate = tonumber(ARGV[3 + 2 * i])
  local burst = tonumber(ARGV[4 + 2 * i])
  local h = redis.call('HMGET', KEYS[5 + i], 'l', 't')
  local level = tonumber(h[1]) or 0
  local last = tonumber(h[2]) or now
  level = math.max(0, level - math.max(0, now - last) / 1000 * rate) + 1
  if level > burst then wait = math.max(wait, math.ceil((level - burst) / rate * 1000)) end
  levels[i] = level
end
if wait > 0 then return {-4, tostring(wait), ''} end
for i = 1, 2 do
  local rate = tonumber(ARGV[3 + 2 * i])
  local burst = tonumber(ARGV[4 + 2 * i])
  redis.call('HSET', KEYS[5 + i], 'l', tostring(levels[i]), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[5 + i], math.ceil(burst / rate * 1000) + 1000)
end
local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if mine + qty > lim then return {2, tostring(lim - mine), ''} end
if q < qty then return {3, tostring(q), ''} end
redis.call('HINCRBY', KEYS[1], 'q', -qty)
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
redis.call('HSET', KEYS[3], rk, ARGV[3])
local rec = 'QUEUED|' .. qty .. '|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. string.format('%d', now) .. '||'
redis.call('HSET', KEYS[4], ARGV[3], rec)
redis.call('ZADD', KEYS[5], now, ARGV[3])
return {0, ARGV[3], rec}
"#,
    )
});

/// The admission script (the benchmark runs it raw with redis-benchmark).
pub fn admission_script() -> &'static Script {
    &ADMIT
}

/// The admission script's KEYS for one buyer at one IP, in order.
pub fn admission_keys(
    core: &Core,
    tenant: TenantId,
    campaign: Uuid,
    ip: &str,
    buyer: Uuid,
) -> [String; 7] {
    let k = keys(core, tenant, campaign);
    let t = tag(tenant, campaign);
    [
        k.campaign,
        k.bought,
        k.requests,
        k.tickets,
        k.pending,
        core.key(&t, &format!("ip:{ip}")),
        core.key(&t, &format!("bb:{buyer}")),
    ]
}

/// Outcomes after commit. KEYS campaign, bought, requests, tickets, pending; ARGV groups of
/// (ticket, record, status, quantity, buyer, request). Only a QUEUED (or, after a rebuild,
/// unknown) ticket changes: a ticket that did not win gives its units and the buyer's count
/// back; one unknown to a rebuilt campaign is counted in. A decided ticket is left alone, so
/// a redelivery changes nothing. Without the campaign hash (not warm) only `pq` is cleaned.
static FINALIZE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local live = redis.call('EXISTS', KEYS[1]) == 1
local changed = 0
for i = 1, #ARGV, 6 do
  local id, rec, st, qty, buyer, req = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5]
  local cur = redis.call('HGET', KEYS[4], id)
  if live and (not cur or string.sub(cur, 1, 7) == 'QUEUED|') then
    if cur and st ~= 'WON' then
      redis.call('HINCRBY', KEYS[1], 'q', qty)
      redis.call('HINCRBY', KEYS[2], buyer, -qty)
    elseif not cur then
      redis.call('HSET', KEYS[3], buyer .. ':' .. req, id)
      if st == 'WON' then
        redis.call('HINCRBY', KEYS[1], 'q', -qty)
        redis.call('HINCRBY', KEYS[2], buyer, qty)
      end
    end
    redis.call('HSET', KEYS[4], id, rec)
    changed = changed + 1
  end
  redis.call('ZREM', KEYS[5], id)
end
return changed
"#,
    )
});

/// A won ticket's order was cancelled unpaid. KEYS campaign, bought, tickets; ARGV groups of
/// (ticket, record, quantity, buyer). Only a ticket Redis still holds as WON changes: its units
/// and the buyer's count come back.
static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = 0
for i = 1, #ARGV, 4 do
  local cur = redis.call('HGET', KEYS[3], ARGV[i])
  if cur and string.sub(cur, 1, 4) == 'WON|' then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    redis.call('HINCRBY', KEYS[1], 'q', tonumber(ARGV[i + 2]))
    redis.call('HINCRBY', KEYS[2], ARGV[i + 3], -tonumber(ARGV[i + 2]))
    n = n + 1
  end
end
return n
"#,
    )
});

/// Creates a campaign's state when absent. KEYS campaign, bought, requests, tickets, pending;
/// ARGV remaining, limit, starts ms, ends ms, expire-at ms. Returns 1 when created.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], '_', '0')
redis.call('HSET', KEYS[3], '_', '')
redis.call('HSET', KEYS[4], '_', '')
redis.call('ZADD', KEYS[5], '9000000000000000', '_')
redis.call('HSET', KEYS[1], 'q', ARGV[1], 'lim', ARGV[2], 's', ARGV[3], 'e', ARGV[4])
for i = 1, 5 do redis.call('PEXPIREAT', KEYS[i], ARGV[5]) end
return 1
"#,
    )
});

/// Rebuild chunk, written only while the campaign hash is absent (before CREATE).
/// KEYS bought, requests, tickets, campaign; ARGV triples (hash index 1-3, field, value).
static REBUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
for i = 1, #ARGV, 3 do
  redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
return 1
"#,
    )
});

// ------------------------------------------------------------ campaigns ---

/// A campaign as stored.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: Uuid,
    pub sku_id: Uuid,
    pub warehouse_id: Uuid,
    pub channel_id: Uuid,
    pub quota: i32,
    pub price: Money,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub per_buyer_limit: i32,
    pub payment_minutes: i32,
    pub created_at: DateTime<Utc>,
    pub warmed_at: Option<DateTime<Utc>>,
}

/// What staff submit; ids already decoded.
#[derive(Debug, Clone)]
pub struct CampaignInput {
    pub sku_id: Uuid,
    pub warehouse_id: Uuid,
    pub channel_id: Uuid,
    pub quota: i64,
    pub price_amount: String,
    pub price_currency: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub per_buyer_limit: i64,
    pub payment_minutes: i64,
}

/// Live numbers of a campaign: Redis for what is left and in flight, Postgres for outcomes.
#[derive(Debug, Clone, Default)]
pub struct CampaignStats {
    /// Units Redis may still admit (None: not warm).
    pub remaining: Option<i64>,
    /// Tickets admitted and not yet decided.
    pub queued: i64,
    pub tickets_won: i64,
    pub units_won: i64,
    pub tickets_sold_out: i64,
}

const CAMPAIGN_COLS: &str =
    "id, sku_id, warehouse_id, channel_id, quota, price_fen, currency, starts_at,
    ends_at, per_buyer_limit, payment_minutes, created_at, warmed_at";

fn campaign_from(r: &sea_orm::QueryResult) -> Result<Campaign, ServiceError> {
    let currency: String = r.try_get("", "currency")?;
    let currency = Currency::parse("currency", &currency)?;
    Ok(Campaign {
        id: r.try_get("", "id")?,
        sku_id: r.try_get("", "sku_id")?,
        warehouse_id: r.try_get("", "warehouse_id")?,
        channel_id: r.try_get("", "channel_id")?,
        quota: r.try_get("", "quota")?,
        price: Money::from_fen("price", r.try_get("", "price_fen")?, currency)?,
        starts_at: r.try_get("", "starts_at")?,
        ends_at: r.try_get("", "ends_at")?,
        per_buyer_limit: r.try_get("", "per_buyer_limit")?,
        payment_minutes: r.try_get("", "payment_minutes")?,
        created_at: r.try_get("", "created_at")?,
        warmed_at: r.try_get("", "warmed_at")?,
    })
}

fn no_such(field: &'static str, what: &str) -> ServiceError {
    ServiceError::Invalid(InvalidInput {
        field,
        message: format!("no such {what}"),
    })
}

/// Creates a campaign and warms it into Redis. The quota must be available now (general stock
/// of the SKU in the warehouse); the sale still re-checks every unit in Postgres.
pub async fn campaign_create(
    core: &Core,
    ctx: &RequestCtx,
    input: CampaignInput,
) -> ServiceResult<Campaign> {
    require(ctx, Permission::InventoryWrite)?;
    let terms = rules::parse_terms(
        input.quota,
        &input.price_amount,
        &input.price_currency,
        input.starts_at,
        input.ends_at,
        input.per_buyer_limit,
        input.payment_minutes,
        core.now(),
    )?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            "SELECT (SELECT count(*) FROM skus WHERE tenant_id = $1 AND id = $2) AS sku,
                    (SELECT count(*) FROM warehouses WHERE tenant_id = $1 AND id = $3) AS wh,
                    (SELECT type FROM sales_channels WHERE tenant_id = $1 AND id = $4) AS channel_type,
                    (SELECT on_hand - reserved - held FROM inventory_levels
                      WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3) AS available",
            vec![
                ctx.tenant.0.into(),
                input.sku_id.into(),
                input.warehouse_id.into(),
                input.channel_id.into(),
            ],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    if row.try_get::<i64>("", "sku")? == 0 {
        return Err(no_such("skuId", "SKU"));
    }
    if row.try_get::<i64>("", "wh")? == 0 {
        return Err(no_such("warehouseId", "warehouse"));
    }
    match row
        .try_get::<Option<String>>("", "channel_type")?
        .as_deref()
    {
        None => return Err(no_such("channelId", "sales channel")),
        Some("WECHAT_MINI" | "ALIPAY_MINI" | "H5") => {}
        Some(other) => {
            return Err(InvalidInput {
                field: "channelId",
                message: format!(
                    "flash-sale orders are created on the tenant's own channels (WECHAT_MINI, ALIPAY_MINI, H5), not {other}"
                ),
            }
            .into());
        }
    }
    let available = row.try_get::<Option<i32>>("", "available")?.unwrap_or(0);
    if terms.quota > available {
        return Err(ServiceError::conflict(
            "quota",
            format!(
                "only {available} units are available in this warehouse, the quota asks for {}",
                terms.quota
            ),
        ));
    }
    let id = Uuid::now_v7();
    let row = tx
        .query_one_raw(stmt(
            &format!(
                "INSERT INTO seckill_campaigns (tenant_id, id, sku_id, warehouse_id, channel_id, quota,
                    price_fen, currency, starts_at, ends_at, per_buyer_limit, payment_minutes, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 RETURNING {CAMPAIGN_COLS}"
            ),
            vec![
                ctx.tenant.0.into(),
                id.into(),
                input.sku_id.into(),
                input.warehouse_id.into(),
                input.channel_id.into(),
                terms.quota.into(),
                terms.price.fen.into(),
                terms.price.currency.as_str().into(),
                terms.starts_at.into(),
                terms.ends_at.into(),
                terms.per_buyer_limit.into(),
                terms.payment_minutes.into(),
                ctx.principal.actor_id().into(),
            ],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    let mut campaign = campaign_from(&row)?;
    let ev = crate::audit::record(
        core,
        &tx,
        ctx,
        "seckill_campaign.created",
        Some(id.to_string()),
        json!({"skuId": input.sku_id, "quota": terms.quota, "price": terms.price.to_decimal_string(),
               "startsAt": terms.starts_at, "endsAt": terms.ends_at}),
    )
    .await?;
    tx.commit().await?;
    crate::audit::publish(core, &[ev]).await;
    // A failed warm-up is repaired by the worker, which re-warms running campaigns.
    match warm(core, ctx.tenant, &campaign).await {
        Ok(at) => campaign.warmed_at = Some(at),
        Err(e) => tracing::warn!(error = %e, campaign = %id, "warming the campaign failed"),
    }
    Ok(campaign)
}

async fn campaign_row(tx: &TenantTx, id: Uuid) -> ServiceResult<Option<Campaign>> {
    let row = tx
        .query_one_raw(stmt(
            &format!(
                "SELECT {CAMPAIGN_COLS} FROM seckill_campaigns WHERE tenant_id = $1 AND id = $2"
            ),
            vec![tx.tenant().0.into(), id.into()],
        ))
        .await?;
    row.as_ref().map(campaign_from).transpose()
}

pub async fn campaign(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<Campaign> {
    require(ctx, Permission::InventoryRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let c = campaign_row(&tx, id).await?.ok_or(ServiceError::NotFound)?;
    tx.commit().await?;
    Ok(c)
}

/// Newest first.
pub async fn campaigns(
    core: &Core,
    ctx: &RequestCtx,
    page: PageArgs,
) -> ServiceResult<Page<Campaign>> {
    require(ctx, Permission::InventoryRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            &format!(
                "SELECT {CAMPAIGN_COLS} FROM seckill_campaigns WHERE tenant_id = $1
                   AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            ),
            vec![
                ctx.tenant.0.into(),
                page.after.into(),
                ((page.first + 1) as i64).into(),
            ],
        ))
        .await?;
    tx.commit().await?;
    let list = rows
        .iter()
        .map(campaign_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_overfetch(list, page.first))
}

pub async fn campaign_stats(
    core: &Core,
    ctx: &RequestCtx,
    id: Uuid,
) -> ServiceResult<CampaignStats> {
    require(ctx, Permission::InventoryRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            "SELECT count(*) FILTER (WHERE status = 'WON') AS won,
                    coalesce(sum(quantity) FILTER (WHERE status = 'WON'), 0)::bigint AS units,
                    count(*) FILTER (WHERE status = 'SOLD_OUT') AS sold_out
             FROM seckill_tickets WHERE tenant_id = $1 AND campaign_id = $2",
            vec![ctx.tenant.0.into(), id.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    tx.commit().await?;
    let k = keys(core, ctx.tenant, id);
    let mut conn = core.redis.clone();
    let (remaining, pending): (Option<i64>, i64) = redis::pipe()
        .hget(&k.campaign, "q")
        .zcard(&k.pending)
        .query_async(&mut conn)
        .await?;
    Ok(CampaignStats {
        remaining,
        queued: (pending - 1).max(0),
        tickets_won: row.try_get("", "won")?,
        units_won: row.try_get("", "units")?,
        tickets_sold_out: row.try_get("", "sold_out")?,
    })
}

/// Warms the campaign again (staff, after a Redis loss; the worker also does this by itself).
pub async fn campaign_warm(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<Campaign> {
    require(ctx, Permission::InventoryWrite)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let mut c = campaign_row(&tx, id).await?.ok_or(ServiceError::NotFound)?;
    tx.commit().await?;
    c.warmed_at = Some(warm(core, ctx.tenant, &c).await?);
    Ok(c)
}

/// Makes Redis hold the campaign: if its hash exists nothing changes (live counters win);
/// otherwise it is rebuilt from `seckill_tickets` (remaining = quota − units won; the buyers'
/// units; every ticket's record) and the campaign hash is written last, so no admission sees a
/// half-built state.
async fn warm(core: &Core, tenant: TenantId, c: &Campaign) -> ServiceResult<DateTime<Utc>> {
    let k = keys(core, tenant, c.id);
    let mut conn = core.redis.clone();
    let exists: bool = redis::cmd("EXISTS")
        .arg(&k.campaign)
        .query_async(&mut conn)
        .await?;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    if !exists {
        let rows = tx
            .query_all_raw(stmt(
                "SELECT t.id, t.buyer_id, t.request_id, t.quantity, t.status, t.order_id,
                        (extract(epoch FROM t.admitted_at) * 1000)::bigint AS admitted_ms,
                        (extract(epoch FROM o.payment_due_at) * 1000)::bigint AS due_ms
                 FROM seckill_tickets t
                 LEFT JOIN orders o ON o.tenant_id = t.tenant_id AND o.id = t.order_id
                 WHERE t.tenant_id = $1 AND t.campaign_id = $2 AND t.status <> 'QUEUED'",
                vec![tenant.0.into(), c.id.into()],
            ))
            .await?;
        let mut won = 0i64;
        let mut bought: HashMap<Uuid, i64> = HashMap::new();
        let mut triples: Vec<(u8, String, String)> = Vec::with_capacity(rows.len() * 2);
        for r in &rows {
            let id: Uuid = r.try_get("", "id")?;
            let status: String = r.try_get("", "status")?;
            let rec = Record {
                status: TicketStatus::parse(&status).unwrap_or(TicketStatus::SoldOut),
                quantity: r.try_get("", "quantity")?,
                buyer: r.try_get("", "buyer_id")?,
                request: r.try_get("", "request_id")?,
                admitted_ms: r.try_get("", "admitted_ms")?,
                order: r.try_get("", "order_id")?,
                due_ms: r.try_get("", "due_ms")?,
            };
            if rec.status == TicketStatus::Won {
                won += i64::from(rec.quantity);
                *bought.entry(rec.buyer).or_default() += i64::from(rec.quantity);
            }
            triples.push((2, format!("{}:{}", rec.buyer, rec.request), id.to_string()));
            triples.push((3, id.to_string(), rec.encode()));
        }
        for (b, n) in bought {
            triples.push((1, b.to_string(), n.to_string()));
        }
        for chunk in triples.chunks(500) {
            let mut inv = REBUILD.key(&k.bought);
            inv.key(&k.requests).key(&k.tickets).key(&k.campaign);
            for (i, f, v) in chunk {
                inv.arg(*i).arg(f).arg(v);
            }
            let _: i64 = inv.invoke_async(&mut conn).await?;
        }
        let _: i64 = CREATE
            .key(&k.campaign)
            .key(&k.bought)
            .key(&k.requests)
            .key(&k.tickets)
            .key(&k.pending)
            .arg(i64::from(c.quota) - won)
            .arg(c.per_buyer_limit)
            .arg(c.starts_at.timestamp_millis())
            .arg(c.ends_at.timestamp_millis())
            .arg(c.ends_at.timestamp_millis() + RETENTION_MS)
            .invoke_async(&mut conn)
            .await?;
    }
    let at = tx
        .query_one_raw(stmt(
            "UPDATE seckill_campaigns SET warmed_at = now() WHERE tenant_id = $1 AND id = $2 RETURNING warmed_at",
            vec![tenant.0.into(), c.id.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?
        .try_get("", "warmed_at")?;
    tx.commit().await?;
    Ok(at)
}

// ---------------------------------------------------------------- tickets ---

/// A buy's outcome or a ticket as polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// None when the buy was refused at admission (SOLD_OUT, LIMIT_EXCEEDED): nothing was
    /// queued, so there is nothing to poll.
    pub id: Option<TicketRef>,
    pub campaign_id: Uuid,
    pub status: TicketStatus,
    pub quantity: i32,
    pub buyer_id: Uuid,
    pub request_id: String,
    pub order_id: Option<Uuid>,
    pub payment_due_at: Option<DateTime<Utc>>,
    /// The request id had been used: this is the first request's ticket.
    pub replayed: bool,
}

impl Ticket {
    fn from_record(r: TicketRef, rec: &Record, replayed: bool) -> Ticket {
        Ticket {
            id: Some(r),
            campaign_id: r.campaign,
            status: rec.status,
            quantity: rec.quantity,
            buyer_id: rec.buyer,
            request_id: rec.request.clone(),
            order_id: rec.order,
            payment_due_at: rec
                .due_ms
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            replayed,
        }
    }
}

/// The message an admitted ticket travels in (the envelope's payload).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TicketMsg {
    pub campaign_id: Uuid,
    pub ticket_id: Uuid,
    pub buyer_id: Uuid,
    pub request_id: String,
    pub quantity: i32,
    pub admitted_ms: i64,
}

fn envelope(tenant: TenantId, m: &TicketMsg) -> Envelope {
    Envelope {
        id: m.ticket_id,
        tenant_id: tenant.0,
        topic: TICKET_TOPIC.into(),
        payload: json!(m),
        created_at: Utc
            .timestamp_millis_opt(m.admitted_ms)
            .single()
            .unwrap_or_else(Utc::now),
    }
}

fn buyer_of(ctx: &RequestCtx) -> Result<Uuid, ServiceError> {
    ctx.buyer_id()
        .ok_or_else(|| ServiceError::forbidden("only a buyer can buy in a flash sale"))
}

/// `seckillBuy`: one Redis script decides; an admitted ticket is queued for the order writers.
/// No Postgres here.
pub async fn buy(
    core: &Core,
    ctx: &RequestCtx,
    cfg: &SeckillConfig,
    campaign: Uuid,
    quantity: i64,
    request_id: &str,
) -> SeckillResult<Ticket> {
    let buyer = buyer_of(ctx)?;
    let quantity = uphub_domain::inventory::parse_quantity("quantity", quantity)?;
    let request_id = rules::parse_request_id(request_id)?;
    let ip = ctx.ip.as_deref().unwrap_or("-");
    let ticket = Uuid::now_v7();
    let mut conn = core.redis.clone();
    let mut inv = ADMIT.prepare_invoke();
    for k in admission_keys(core, ctx.tenant, campaign, ip, buyer) {
        inv.key(k);
    }
    let (code, a, b): (i64, String, String) = inv
        .arg(buyer.to_string())
        .arg(request_id)
        .arg(ticket.to_string())
        .arg(quantity)
        .arg(cfg.ip_rate_per_sec)
        .arg(cfg.ip_burst)
        .arg(cfg.buyer_rate_per_sec)
        .arg(cfg.buyer_burst)
        .invoke_async(&mut conn)
        .await?;
    let refused = |status| Ticket {
        id: None,
        campaign_id: campaign,
        status,
        quantity,
        buyer_id: buyer,
        request_id: request_id.to_string(),
        order_id: None,
        payment_due_at: None,
        replayed: false,
    };
    let stored = |replayed: bool| -> SeckillResult<Ticket> {
        let id = Uuid::try_parse(&a).map_err(|e| {
            ServiceError::Internal(anyhow::anyhow!("admission returned ticket id {a:?}: {e}"))
        })?;
        let rec = Record::parse(&b).ok_or_else(|| {
            ServiceError::conflict("requestId", "this request id was already used")
        })?;
        if replayed && rec.quantity != quantity {
            return Err(ServiceError::conflict(
                "requestId",
                format!(
                    "this request id was used for {} units, not {quantity}",
                    rec.quantity
                ),
            )
            .into());
        }
        Ok(Ticket::from_record(
            TicketRef {
                campaign,
                ticket: id,
            },
            &rec,
            replayed,
        ))
    };
    match code {
        0 => {
            let t = stored(false)?;
            let msg = TicketMsg {
                campaign_id: campaign,
                ticket_id: ticket,
                buyer_id: buyer,
                request_id: request_id.to_string(),
                quantity,
                admitted_ms: Record::parse(&b).map(|r| r.admitted_ms).unwrap_or(0),
            };
            if let Err(e) = publish_ticket(core, &envelope(ctx.tenant, &msg)).await {
                // Still queued: the worker re-publishes undecided tickets from Redis.
                tracing::warn!(error = %format!("{e:#}"), ticket = %ticket, "publishing a ticket failed");
            }
            Ok(t)
        }
        1 => stored(true),
        2 => Ok(refused(TicketStatus::LimitExceeded)),
        3 => Ok(refused(TicketStatus::SoldOut)),
        -1 => Err(ServiceError::NotFound.into()),
        -2 => Err(SeckillError::NotStarted {
            starts_in_ms: a.parse().unwrap_or(1),
        }),
        -3 => Err(SeckillError::Ended),
        -4 => Err(ServiceError::RateLimited {
            retry_after_ms: a.parse().unwrap_or(1000),
        }
        .into()),
        -5 => Err(InvalidInput {
            field: "quantity",
            message: format!("this sale allows at most {a} per buyer"),
        }
        .into()),
        other => Err(ServiceError::Internal(anyhow::anyhow!("admission answered {other}")).into()),
    }
}

/// Where a ticket read may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The edge's polling: Redis answers, an unknown ticket is NOT_FOUND without a query.
    Redis,
    /// GraphQL: Postgres once Redis has forgotten the campaign (a week after it ended).
    RedisThenPostgres,
}

/// A ticket as it stands. Buyers see their own tickets only; staff with ORDER_READ see the
/// tenant's. Anything else is NOT_FOUND.
pub async fn ticket(core: &Core, ctx: &RequestCtx, r: TicketRef) -> ServiceResult<Ticket> {
    ticket_from(core, ctx, r, Source::RedisThenPostgres).await
}

pub async fn ticket_from(
    core: &Core,
    ctx: &RequestCtx,
    r: TicketRef,
    source: Source,
) -> ServiceResult<Ticket> {
    let me = ctx.buyer_id();
    if me.is_none() {
        require(ctx, Permission::OrderRead)?;
    }
    let k = keys(core, ctx.tenant, r.campaign);
    let mut conn = core.redis.clone();
    let raw: Option<String> = redis::cmd("HGET")
        .arg(&k.tickets)
        .arg(r.ticket.to_string())
        .query_async(&mut conn)
        .await?;
    let t = match raw.as_deref().and_then(Record::parse) {
        Some(rec) => Ticket::from_record(r, &rec, false),
        None if source == Source::RedisThenPostgres => ticket_from_db(core, ctx.tenant, r)
            .await?
            .ok_or(ServiceError::NotFound)?,
        None => return Err(ServiceError::NotFound),
    };
    if me.is_some_and(|b| b != t.buyer_id) {
        return Err(ServiceError::NotFound);
    }
    Ok(t)
}

async fn ticket_from_db(
    core: &Core,
    tenant: TenantId,
    r: TicketRef,
) -> ServiceResult<Option<Ticket>> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            "SELECT t.buyer_id, t.request_id, t.quantity, t.status, t.order_id, o.payment_due_at
             FROM seckill_tickets t LEFT JOIN orders o ON o.tenant_id = t.tenant_id AND o.id = t.order_id
             WHERE t.tenant_id = $1 AND t.id = $2 AND t.campaign_id = $3",
            vec![tenant.0.into(), r.ticket.into(), r.campaign.into()],
        ))
        .await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get("", "status")?;
    Ok(Some(Ticket {
        id: Some(r),
        campaign_id: r.campaign,
        status: TicketStatus::parse(&status).unwrap_or(TicketStatus::Queued),
        quantity: row.try_get("", "quantity")?,
        buyer_id: row.try_get("", "buyer_id")?,
        request_id: row.try_get("", "request_id")?,
        order_id: row.try_get("", "order_id")?,
        payment_due_at: row.try_get("", "payment_due_at")?,
        replayed: false,
    }))
}

/// Long-poll: the ticket once it is decided, or as it stands after `timeout`.
pub async fn ticket_wait(
    core: &Core,
    ctx: &RequestCtx,
    r: TicketRef,
    timeout: Duration,
    source: Source,
) -> ServiceResult<Ticket> {
    // Subscribe before reading, so a result published in between is not missed.
    let mut changes = Box::pin(
        core.hub
            .subscribe(core.live_channel(ctx.tenant, &live_topic(r.ticket))),
    );
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let t = ticket_from(core, ctx, r, source).await?;
        if t.status.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(t);
        }
        // Re-read at least every second: a lagging subscriber may skip a message.
        let wake = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = changes.next() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// The subscription: the ticket now, then every change until it is decided.
pub async fn ticket_changes(
    core: &Core,
    ctx: &RequestCtx,
    r: TicketRef,
) -> ServiceResult<impl futures_util::Stream<Item = Ticket> + Send + use<>> {
    let first = ticket(core, ctx, r).await?;
    let (core, ctx) = (core.clone(), ctx.clone());
    Ok(futures_util::stream::unfold(
        (Some(first), false),
        move |(next, done)| {
            let (core, ctx) = (core.clone(), ctx.clone());
            async move {
                if done {
                    return None;
                }
                if let Some(t) = next {
                    let fin = t.status.is_final();
                    return Some((t, (None, fin)));
                }
                let t = ticket_wait(
                    &core,
                    &ctx,
                    r,
                    Duration::from_secs(3600),
                    Source::RedisThenPostgres,
                )
                .await
                .ok()?;
                let fin = t.status.is_final();
                Some((t, (None, fin)))
            }
        },
    ))
}

// -------------------------------------------------------------- publishing ---

/// The confirm-mode channel for ticket publishes, opened once per `Core` (a channel open costs
/// a round trip; a publish on an open channel waits for nothing but the socket). It lives on the
/// `Core`, never in a process-wide map: a channel outliving its connection's runtime would take
/// publishes and never send them.
async fn ticket_channel(core: &Core, fresh: bool) -> anyhow::Result<lapin::Channel> {
    let mut slot = core.ticket_channel.lock().await;
    if let Some(ch) = slot.as_ref()
        && !fresh
        && ch.status().connected()
    {
        return Ok(ch.clone());
    }
    let ch = core.amqp.create_channel().await.context("amqp channel")?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    declare_queue(core, &ch).await?;
    *slot = Some(ch.clone());
    Ok(ch)
}

fn queue_args(core: &Core) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(ms) = core.cfg.queue_expires_ms {
        args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
    }
    args
}

/// Declares the batch writers' queue (idempotent; the edge and the worker both do it).
pub async fn declare_queue(core: &Core, channel: &lapin::Channel) -> anyhow::Result<()> {
    channel
        .queue_declare(
            core.queue(TICKET_QUEUE).as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            queue_args(core),
        )
        .await
        .context("declaring the ticket queue")?;
    Ok(())
}

/// Hands a ticket to the order writers. Waits for the socket, not the broker: an unconfirmed
/// ticket is still in `pq` and is published again by the worker.
async fn publish_ticket(core: &Core, env: &Envelope) -> anyhow::Result<()> {
    let body = serde_json::to_vec(env)?;
    let queue = core.queue(TICKET_QUEUE);
    let mut last = None;
    for fresh in [false, true] {
        let ch = ticket_channel(core, fresh).await?;
        match ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                lapin::BasicProperties::default()
                    .with_message_id(env.id.to_string().as_str().into())
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await
        {
            Ok(confirm) => {
                let id = env.id;
                tokio::spawn(async move {
                    match confirm.await {
                        Ok(c) if c.is_nack() => {
                            tracing::warn!(ticket = %id, "broker refused a ticket; the worker re-publishes it")
                        }
                        Err(e) => {
                            tracing::warn!(ticket = %id, error = %e, "ticket publish unconfirmed")
                        }
                        Ok(_) => {}
                    }
                });
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("publish failed")))
}

/// What the edge does once at start: open the ticket channel (declaring the queue) and load the
/// admission script, so the first buyers pay for neither.
pub async fn prepare_edge(core: &Core) -> anyhow::Result<()> {
    ticket_channel(core, false).await?;
    let mut conn = core.redis.clone();
    let _: String = ADMIT.prepare_invoke().load_async(&mut conn).await?;
    Ok(())
}

// ---------------------------------------------------------------- writers ---

/// One ticket decided by a batch.
#[derive(Debug, Clone)]
pub struct Decided {
    pub msg: TicketMsg,
    pub status: TicketStatus,
    pub order_id: Option<Uuid>,
    pub due_ms: Option<i64>,
}

/// What a committed batch must tell Redis and live subscribers.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    pub decided: Vec<Decided>,
    /// (sku, warehouse, units reserved) for the general stock hash.
    pub reserved: Vec<(Uuid, Uuid, i32)>,
    pub levels: Vec<LevelView>,
    pub orders: Vec<Uuid>,
}

struct CampaignFacts {
    sku: Uuid,
    warehouse: Uuid,
    channel: Uuid,
    channel_type: String,
    price_fen: i64,
    currency: String,
    limit: i32,
    payment_minutes: i32,
    title: String,
}

/// Decides the tickets of ONE tenant inside `tx` (the caller commits, then calls
/// [`after_batch`]). Tickets already decided (a redelivery) are reported as they were decided.
pub async fn write_batch(
    core: &Core,
    tx: &TenantTx,
    msgs: &[TicketMsg],
) -> ServiceResult<BatchOutcome> {
    let tenant = tx.tenant();
    let mut out = BatchOutcome::default();
    if msgs.is_empty() {
        return Ok(out);
    }
    // A ticket may arrive twice in one batch (a re-publish racing the original).
    let mut seen = HashSet::new();
    let mut msgs: Vec<&TicketMsg> = msgs.iter().filter(|m| seen.insert(m.ticket_id)).collect();
    msgs.sort_by_key(|m| (m.admitted_ms, m.ticket_id));

    // 1. Claim: a ticket some earlier batch wrote is not returned here.
    let claimed: HashSet<Uuid> = tx
        .query_all_raw(stmt(
            "INSERT INTO seckill_tickets (tenant_id, id, campaign_id, buyer_id, request_id, quantity, status, admitted_at)
             SELECT $1, x.i, x.c, x.b, x.r, x.q, 'QUEUED', to_timestamp(x.a::float8 / 1000)
             FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::int[], $7::bigint[]) AS x(i, c, b, r, q, a)
             WHERE EXISTS (SELECT 1 FROM seckill_campaigns k WHERE k.tenant_id = $1 AND k.id = x.c)
             ON CONFLICT DO NOTHING RETURNING id",
            vec![
                tenant.0.into(),
                msgs.iter().map(|m| m.ticket_id).collect::<Vec<_>>().into(),
                msgs.iter().map(|m| m.campaign_id).collect::<Vec<_>>().into(),
                msgs.iter().map(|m| m.buyer_id).collect::<Vec<_>>().into(),
                msgs.iter().map(|m| m.request_id.clone()).collect::<Vec<_>>().into(),
                msgs.iter().map(|m| m.quantity).collect::<Vec<_>>().into(),
                msgs.iter().map(|m| m.admitted_ms).collect::<Vec<_>>().into(),
            ],
        ))
        .await?
        .iter()
        .map(|r| r.try_get("", "id"))
        .collect::<Result<_, _>>()?;
    let (new, old): (Vec<&TicketMsg>, Vec<&TicketMsg>) = msgs
        .into_iter()
        .partition(|m| claimed.contains(&m.ticket_id));
    if !old.is_empty() {
        report_existing(tx, &old, &mut out).await?;
    }
    if new.is_empty() {
        return Ok(out);
    }

    // 2. What the campaigns sell.
    let campaign_ids: Vec<Uuid> = new
        .iter()
        .map(|m| m.campaign_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let facts: HashMap<Uuid, CampaignFacts> = tx
        .query_all_raw(stmt(
            "SELECT k.id, k.sku_id, k.warehouse_id, k.channel_id, c.type AS channel_type, k.price_fen,
                    k.currency, k.per_buyer_limit, k.payment_minutes,
                    left(p.title || ' ' || s.name, 200) AS title
             FROM seckill_campaigns k
             JOIN sales_channels c ON c.tenant_id = k.tenant_id AND c.id = k.channel_id
             JOIN skus s ON s.tenant_id = k.tenant_id AND s.id = k.sku_id
             JOIN products p ON p.tenant_id = s.tenant_id AND p.id = s.product_id
             WHERE k.tenant_id = $1 AND k.id = ANY($2)",
            vec![tenant.0.into(), campaign_ids.clone().into()],
        ))
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid>("", "id")?,
                CampaignFacts {
                    sku: r.try_get("", "sku_id")?,
                    warehouse: r.try_get("", "warehouse_id")?,
                    channel: r.try_get("", "channel_id")?,
                    channel_type: r.try_get("", "channel_type")?,
                    price_fen: r.try_get("", "price_fen")?,
                    currency: r.try_get("", "currency")?,
                    limit: r.try_get("", "per_buyer_limit")?,
                    payment_minutes: r.try_get("", "payment_minutes")?,
                    title: r.try_get("", "title")?,
                },
            ))
        })
        .collect::<Result<_, sea_orm::DbErr>>()?;

    // 3. Lock the levels of the batch's SKUs, in one global order (no deadlock between writers
    //    or with the stock engine's multi-line reservations, which lock in the same order).
    let mut pools: BTreeMap<(Uuid, Uuid), Vec<(&TicketMsg, &CampaignFacts)>> = BTreeMap::new();
    for m in &new {
        if let Some(f) = facts.get(&m.campaign_id) {
            pools.entry((f.sku, f.warehouse)).or_default().push((m, f));
        }
    }
    let (skus, whs): (Vec<Uuid>, Vec<Uuid>) = pools.keys().copied().unzip();
    let available: HashMap<(Uuid, Uuid), i32> = tx
        .query_all_raw(stmt(
            "SELECT sku_id, warehouse_id, on_hand - reserved - held AS avail FROM inventory_levels
             WHERE tenant_id = $1 AND (sku_id, warehouse_id) IN (SELECT * FROM unnest($2::uuid[], $3::uuid[]))
             ORDER BY sku_id, warehouse_id FOR UPDATE",
            vec![tenant.0.into(), skus.into(), whs.into()],
        ))
        .await?
        .iter()
        .map(|r| {
            Ok((
                (r.try_get("", "sku_id")?, r.try_get("", "warehouse_id")?),
                r.try_get("", "avail")?,
            ))
        })
        .collect::<Result<_, sea_orm::DbErr>>()?;

    // 4. Units the batch's buyers already won (read under the locks, so a concurrent writer's
    //    batch for the same SKU has committed or not started).
    let buyers: Vec<Uuid> = new
        .iter()
        .map(|m| m.buyer_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let already: HashMap<(Uuid, Uuid), i32> = tx
        .query_all_raw(stmt(
            "SELECT campaign_id, buyer_id, sum(quantity)::int AS units FROM seckill_tickets
             WHERE tenant_id = $1 AND campaign_id = ANY($2) AND buyer_id = ANY($3) AND status = 'WON'
             GROUP BY campaign_id, buyer_id",
            vec![tenant.0.into(), campaign_ids.into(), buyers.into()],
        ))
        .await?
        .iter()
        .map(|r| {
            Ok((
                (r.try_get("", "campaign_id")?, r.try_get("", "buyer_id")?),
                r.try_get("", "units")?,
            ))
        })
        .collect::<Result<_, sea_orm::DbErr>>()?;

    // 5. Allocate, then ONE guarded UPDATE per SKU (all SKUs in one statement).
    let now = core.now();
    let mut won_rows = Vec::new();
    let mut status_rows = Vec::new();
    let mut takes: Vec<(Uuid, Uuid, i32)> = Vec::new();
    for ((sku, wh), tickets) in &pools {
        let wants: Vec<rules::Want<(Uuid, Uuid)>> = tickets
            .iter()
            .map(|(m, f)| rules::Want {
                holder: (m.campaign_id, m.buyer_id),
                quantity: m.quantity,
                limit: f.limit,
            })
            .collect();
        let avail = available.get(&(*sku, *wh)).copied().unwrap_or(0);
        let (statuses, taken) = rules::allocate(avail, &already, &wants);
        if taken > 0 {
            takes.push((*sku, *wh, taken));
        }
        for ((m, f), status) in tickets.iter().zip(statuses) {
            let (order, due) = if status == TicketStatus::Won {
                let order = Uuid::now_v7();
                let due = now + chrono::Duration::minutes(i64::from(f.payment_minutes));
                won_rows.push(json!({
                    "ticket": m.ticket_id, "ord": order, "res": Uuid::now_v7(), "line": Uuid::now_v7(),
                    "ledger": Uuid::now_v7(), "ev": Uuid::now_v7(), "sku": f.sku, "wh": f.warehouse,
                    "qty": m.quantity, "unit": f.price_fen, "total": f.price_fen * i64::from(m.quantity),
                    "currency": f.currency, "buyer": m.buyer_id,
                    "campaign": format!("seckill-{}", m.campaign_id), "due": due,
                    "channel": f.channel, "channel_type": f.channel_type, "title": f.title,
                }));
                out.orders.push(order);
                (Some(order), Some(due.timestamp_millis()))
            } else {
                (None, None)
            };
            status_rows.push(json!({"id": m.ticket_id, "status": status.as_str(), "ord": order}));
            out.decided.push(Decided {
                msg: (*m).clone(),
                status,
                order_id: order,
                due_ms: due,
            });
        }
    }
    // Tickets of a campaign Postgres does not know (cannot happen through the edge).
    for m in new.iter().filter(|m| !facts.contains_key(&m.campaign_id)) {
        status_rows.push(json!({"id": m.ticket_id, "status": "SOLD_OUT", "ord": null}));
        out.decided.push(Decided {
            msg: (*m).clone(),
            status: TicketStatus::SoldOut,
            order_id: None,
            due_ms: None,
        });
    }
    if !takes.is_empty() {
        let rows = tx
            .query_all_raw(stmt(
                "UPDATE inventory_levels l SET reserved = l.reserved + x.k, updated_at = now()
                 FROM unnest($2::uuid[], $3::uuid[], $4::int[]) AS x(s, w, k)
                 WHERE l.tenant_id = $1 AND l.sku_id = x.s AND l.warehouse_id = x.w
                   AND l.on_hand - l.reserved - l.held >= x.k
                 RETURNING l.sku_id, l.warehouse_id, l.on_hand, l.reserved, l.held",
                vec![
                    tenant.0.into(),
                    takes.iter().map(|t| t.0).collect::<Vec<_>>().into(),
                    takes.iter().map(|t| t.1).collect::<Vec<_>>().into(),
                    takes.iter().map(|t| t.2).collect::<Vec<_>>().into(),
                ],
            ))
            .await?;
        if rows.len() != takes.len() {
            // The rows are locked above, so this is a bug, not a race: refuse the batch.
            return Err(ServiceError::Internal(anyhow::anyhow!(
                "guarded stock update matched {} of {} levels",
                rows.len(),
                takes.len()
            )));
        }
        for r in &rows {
            out.levels.push(level_from(r)?);
        }
        out.reserved = takes;
    }

    // 6. Everything else in one statement.
    tx.execute_raw(stmt(
        "WITH w AS (
           SELECT * FROM jsonb_to_recordset($2::jsonb) AS x(ticket uuid, ord uuid, res uuid, line uuid,
             ledger uuid, ev uuid, sku uuid, wh uuid, qty int, unit bigint, total bigint, currency text,
             buyer uuid, campaign text, due timestamptz, channel uuid, channel_type text, title text)),
         t AS (
           UPDATE seckill_tickets s SET status = d.status, order_id = d.ord, decided_at = now()
           FROM jsonb_to_recordset($3::jsonb) AS d(id uuid, status text, ord uuid)
           WHERE s.tenant_id = $1 AND s.id = d.id),
         r AS (
           INSERT INTO reservations (tenant_id, id, owner_kind, owner_id, campaign, status, expires_at)
           SELECT $1, res, 'ORDER', ord::text, campaign, 'ACTIVE', due + $4::interval FROM w),
         rl AS (
           INSERT INTO reservation_lines (tenant_id, reservation_id, line_no, sku_id, warehouse_id, quantity)
           SELECT $1, res, 0, sku, wh, qty FROM w),
         g AS (
           INSERT INTO inventory_ledger (tenant_id, id, sku_id, warehouse_id, kind, delta_reserved, reason,
                                         owner_kind, owner_id, actor_id)
           SELECT $1, ledger, sku, wh, 'RESERVE', qty, 'SECKILL', 'RESERVATION', res::text, buyer FROM w),
         o AS (
           INSERT INTO orders (tenant_id, id, channel_id, channel_type, platform_order_id, status,
                               platform_status, platform_modified_at, total_fen, currency, campaign,
                               placed_at, stock_state, reservation_id, buyer_id, payment_due_at)
           SELECT $1, ord, channel, channel_type, 'SK-' || ticket, 'PENDING_PAYMENT', 'PENDING_PAYMENT',
                  now(), total, currency, campaign, now(), 'RESERVED', res, buyer, due FROM w),
         ol AS (
           INSERT INTO order_lines (tenant_id, order_id, id, line_no, platform_line_id, sku_id, warehouse_id,
                                    title, quantity, unit_price_fen, paid_fen)
           SELECT $1, ord, line, 1, '1', sku, wh, title, qty, unit, 0 FROM w),
         e AS (
           INSERT INTO order_events (tenant_id, id, order_id, kind, to_status, detail, actor)
           SELECT $1, ev, ord, 'CREATED', 'PENDING_PAYMENT',
                  jsonb_build_object('channel', channel_type, 'seckillTicket', ticket), 'seckill' FROM w),
         d AS (
           INSERT INTO inventory_dirty (tenant_id, sku_id)
           SELECT DISTINCT $1, sku FROM w ON CONFLICT DO NOTHING)
         SELECT count(*) FROM w",
        vec![
            tenant.0.into(),
            Value::Array(won_rows).into(),
            Value::Array(status_rows).into(),
            format!("{} seconds", RESERVATION_MARGIN.num_seconds()).into(),
        ],
    ))
    .await?;
    Ok(out)
}

/// Tickets a previous batch decided: their outcome, so Redis can be told again.
async fn report_existing(
    tx: &TenantTx,
    msgs: &[&TicketMsg],
    out: &mut BatchOutcome,
) -> ServiceResult<()> {
    let ids: Vec<Uuid> = msgs.iter().map(|m| m.ticket_id).collect();
    let rows = tx
        .query_all_raw(stmt(
            "SELECT t.id, t.status, t.order_id, o.payment_due_at FROM seckill_tickets t
             LEFT JOIN orders o ON o.tenant_id = t.tenant_id AND o.id = t.order_id
             WHERE t.tenant_id = $1 AND t.id = ANY($2) AND t.status <> 'QUEUED'",
            vec![tx.tenant().0.into(), ids.into()],
        ))
        .await?;
    let mut by_id: HashMap<Uuid, (TicketStatus, Option<Uuid>, Option<i64>)> = HashMap::new();
    for r in &rows {
        let status: String = r.try_get("", "status")?;
        let due: Option<DateTime<Utc>> = r.try_get("", "payment_due_at")?;
        by_id.insert(
            r.try_get("", "id")?,
            (
                TicketStatus::parse(&status).unwrap_or(TicketStatus::SoldOut),
                r.try_get("", "order_id")?,
                due.map(|d| d.timestamp_millis()),
            ),
        );
    }
    for m in msgs {
        match by_id.get(&m.ticket_id) {
            Some((status, order, due)) => out.decided.push(Decided {
                msg: (*m).clone(),
                status: *status,
                order_id: *order,
                due_ms: *due,
            }),
            // Another request of the same buyer and request id was written under another ticket
            // id (Redis lost its state in between): this one gets nothing.
            None => out.decided.push(Decided {
                msg: (*m).clone(),
                status: TicketStatus::SoldOut,
                order_id: None,
                due_ms: None,
            }),
        }
    }
    Ok(())
}

/// After the batch committed: Redis learns the outcomes (quota back for losers), the stock hash
/// and live subscribers learn the new levels, buyers learn their tickets. Best effort: a failure
/// leaves tickets in `pq`, which the worker re-publishes, and the writer reports them again.
pub async fn after_batch(core: &Core, tenant: TenantId, out: &BatchOutcome) {
    let mut by_campaign: HashMap<Uuid, Vec<&Decided>> = HashMap::new();
    for d in &out.decided {
        by_campaign.entry(d.msg.campaign_id).or_default().push(d);
    }
    let mut conn = core.redis.clone();
    for (campaign, list) in &by_campaign {
        let k = keys(core, tenant, *campaign);
        let mut inv = FINALIZE.key(&k.campaign);
        inv.key(&k.bought)
            .key(&k.requests)
            .key(&k.tickets)
            .key(&k.pending);
        for d in list {
            let rec = record_of(d);
            inv.arg(d.msg.ticket_id.to_string())
                .arg(rec.encode())
                .arg(d.status.as_str())
                .arg(d.msg.quantity)
                .arg(d.msg.buyer_id.to_string())
                .arg(&d.msg.request_id);
        }
        if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
            tracing::warn!(error = %e, %campaign, "finalizing tickets in Redis failed; they will be re-published");
        }
    }
    for (sku, wh, k) in &out.reserved {
        if let Err(e) = stock_cache::bump(
            core,
            tenant,
            *sku,
            &[(stock_cache::general_field(*wh), -*k)],
        )
        .await
        {
            tracing::warn!(error = %e, %sku, "stock cache update failed; reconciler will repair");
        }
    }
    stock_cache::publish_levels(core, tenant, &out.levels).await;
    let mut pipe = redis::pipe();
    for d in &out.decided {
        let t = Ticket::from_record(
            TicketRef {
                campaign: d.msg.campaign_id,
                ticket: d.msg.ticket_id,
            },
            &record_of(d),
            false,
        );
        pipe.publish(
            core.live_channel(tenant, &live_topic(d.msg.ticket_id)),
            ticket_json(&t).to_string(),
        )
        .ignore();
    }
    if let Err(e) = pipe.query_async::<()>(&mut conn).await {
        tracing::warn!(error = %e, "publishing ticket results failed");
    }
    if !out.orders.is_empty() {
        let events: Vec<crate::orders::LiveOrderEvent> = out
            .orders
            .iter()
            .map(|id| crate::orders::LiveOrderEvent {
                order_id: *id,
                kind: "CREATED".into(),
                status: "PENDING_PAYMENT".into(),
            })
            .collect();
        let core = core.clone();
        tokio::spawn(async move { crate::orders::publish_live(&core, tenant, &events).await });
    }
}

fn record_of(d: &Decided) -> Record {
    Record {
        status: d.status,
        quantity: d.msg.quantity,
        buyer: d.msg.buyer_id,
        request: d.msg.request_id.clone(),
        admitted_ms: d.msg.admitted_ms,
        order: d.order_id,
        due_ms: d.due_ms,
    }
}

/// The JSON shape of a ticket on the edge and on the live channel.
pub fn ticket_json(t: &Ticket) -> Value {
    json!({
        "id": t.id.map(|r| r.encode()),
        "campaignId": uphub_domain::gid::encode("SeckillCampaign", t.campaign_id),
        "status": t.status.as_str(),
        "quantity": t.quantity,
        "requestId": t.request_id,
        "orderId": t.order_id.map(|o| uphub_domain::gid::encode("Order", o)),
        "paymentDueAt": t.payment_due_at,
        "replayed": t.replayed,
    })
}

fn parse_msg(env: &Envelope) -> anyhow::Result<TicketMsg> {
    let m: TicketMsg = serde_json::from_value(env.payload.clone()).context("ticket payload")?;
    anyhow::ensure!(m.ticket_id == env.id, "envelope and ticket ids differ");
    anyhow::ensure!(m.quantity > 0, "ticket quantity must be positive");
    rules::parse_request_id(&m.request_id).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(m)
}

/// The fallback writer: one ticket per transaction through the common consumer framework
/// (retries with back-off, dead letters, replay). Batches that keep failing end up here.
pub struct OrderWriter;

#[async_trait::async_trait]
impl Handler for OrderWriter {
    fn name(&self) -> &'static str {
        FALLBACK_CONSUMER
    }

    fn topics(&self) -> &'static [&'static str] {
        // Fed directly by the batch writers (default exchange), not by the outbox.
        &[]
    }

    async fn handle(&self, core: &Core, tx: &TenantTx, event: &Envelope) -> anyhow::Result<()> {
        let m = parse_msg(event)?;
        write_batch(core, tx, std::slice::from_ref(&m))
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(())
    }

    async fn after_commit(&self, core: &Core, event: &Envelope) {
        // The outcome is in Postgres now; a no-op batch reads it back for Redis.
        let Ok(m) = parse_msg(event) else { return };
        let tenant = TenantId(event.tenant_id);
        let run = async {
            let tx = TenantTx::begin(&core.db, tenant).await?;
            let out = write_batch(core, &tx, std::slice::from_ref(&m)).await?;
            tx.commit().await?;
            Ok::<_, ServiceError>(out)
        };
        match run.await {
            Ok(out) => after_batch(core, tenant, &out).await,
            Err(e) => {
                tracing::warn!(error = %e, ticket = %m.ticket_id, "re-reading a decided ticket failed")
            }
        }
    }
}

/// Runs one tenant's share of a batch: write, commit, tell. Retried by the caller.
async fn run_tenant_batch(core: &Core, tenant: TenantId, msgs: &[TicketMsg]) -> ServiceResult<()> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let out = write_batch(core, &tx, msgs).await?;
    tx.commit().await?;
    after_batch(core, tenant, &out).await;
    Ok(())
}

/// The batch order writer of `uphub worker`: takes up to `batch_max` tickets or waits
/// `batch_wait_ms`, decides them per tenant in one transaction each, then acks the batch.
pub async fn run_order_writer(
    core: Core,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let cfg = SeckillConfig::global().clone();
    let channel = core.amqp.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_queue(&core, &channel).await?;
    channel
        .basic_qos(
            (cfg.batch_max * 2).min(u16::MAX as usize) as u16,
            BasicQosOptions::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            core.queue(TICKET_QUEUE).as_str().into(),
            format!("seckill-writer-{}", Uuid::new_v4().simple())
                .as_str()
                .into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        let first = tokio::select! {
            d = consumer.next() => d,
            _ = shutdown.changed() => return Ok(()),
        };
        let Some(first) = first else {
            anyhow::bail!("ticket consumer stream ended");
        };
        let mut batch = vec![first.context("delivery")?];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.batch_wait_ms);
        while batch.len() < cfg.batch_max {
            tokio::select! {
                d = consumer.next() => match d {
                    Some(d) => batch.push(d.context("delivery")?),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let mut by_tenant: BTreeMap<Uuid, Vec<(TicketMsg, Envelope)>> = BTreeMap::new();
        for d in &batch {
            match serde_json::from_slice::<Envelope>(&d.data)
                .context("envelope")
                .and_then(|env| Ok((parse_msg(&env)?, env)))
            {
                Ok((m, env)) => by_tenant.entry(env.tenant_id).or_default().push((m, env)),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "malformed ticket parked");
                    let _ = channel
                        .basic_publish(
                            "".into(),
                            format!("{}.dlq", core.queue(FALLBACK_CONSUMER))
                                .as_str()
                                .into(),
                            BasicPublishOptions::default(),
                            &d.data,
                            lapin::BasicProperties::default(),
                        )
                        .await;
                }
            }
        }
        for (tenant, items) in by_tenant {
            let tenant = TenantId(tenant);
            let msgs: Vec<TicketMsg> = items.iter().map(|(m, _)| m.clone()).collect();
            let mut done = false;
            for attempt in 1..=3u32 {
                match run_tenant_batch(&core, tenant, &msgs).await {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), attempt, tickets = msgs.len(), "ticket batch failed");
                        tokio::time::sleep(crate::consumer::backoff(attempt * 2 - 1)).await;
                    }
                }
            }
            if !done {
                // One ticket per transaction, with the framework's retries and dead letters.
                for (_, env) in &items {
                    crate::outbox::publish_envelope(
                        &channel,
                        "",
                        &core.queue(FALLBACK_CONSUMER),
                        env,
                        0,
                    )
                    .await?;
                }
            }
        }
        if let Some(last) = batch.last() {
            last.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
}

// ----------------------------------------------------------------- upkeep ---

/// Worker upkeep every second: re-warm running campaigns Redis lost, re-publish tickets left
/// undecided for [`REPUBLISH_AFTER_MS`].
pub async fn run_upkeep(
    core: Core,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return Ok(()),
        }
        upkeep_once(&core)
            .await
            .map_err(|e| anyhow::anyhow!("seckill upkeep: {e:#}"))?;
    }
}

/// Tickets whose order was cancelled unpaid: CANCELLED in Postgres, then their units and the
/// buyer's count go back to the running sale in Redis. Postgres first: if Redis is not told, the
/// sale only sells less.
async fn reclaim_cancelled(core: &Core, tenant: TenantId, campaign: Uuid) -> ServiceResult<usize> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            "UPDATE seckill_tickets t SET status = 'CANCELLED', decided_at = now()
             FROM orders o
             WHERE t.tenant_id = $1 AND t.campaign_id = $2 AND t.status = 'WON'
               AND o.tenant_id = t.tenant_id AND o.id = t.order_id AND o.status = 'CANCELLED'
             RETURNING t.id, t.buyer_id, t.request_id, t.quantity, t.order_id,
                       (extract(epoch FROM t.admitted_at) * 1000)::bigint AS admitted_ms",
            vec![tenant.0.into(), campaign.into()],
        ))
        .await?;
    tx.commit().await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let k = keys(core, tenant, campaign);
    let mut inv = RECLAIM.key(&k.campaign);
    inv.key(&k.bought).key(&k.tickets);
    let mut changed = Vec::with_capacity(rows.len());
    for r in &rows {
        let rec = Record {
            status: TicketStatus::Cancelled,
            quantity: r.try_get("", "quantity")?,
            buyer: r.try_get("", "buyer_id")?,
            request: r.try_get("", "request_id")?,
            admitted_ms: r.try_get("", "admitted_ms")?,
            order: r.try_get("", "order_id")?,
            due_ms: None,
        };
        let id: Uuid = r.try_get("", "id")?;
        inv.arg(id.to_string())
            .arg(rec.encode())
            .arg(rec.quantity)
            .arg(rec.buyer.to_string());
        changed.push((id, rec));
    }
    let mut conn = core.redis.clone();
    let _: i64 = inv.invoke_async(&mut conn).await?;
    let mut pipe = redis::pipe();
    for (id, rec) in &changed {
        let t = Ticket::from_record(
            TicketRef {
                campaign,
                ticket: *id,
            },
            rec,
            false,
        );
        pipe.publish(
            core.live_channel(tenant, &live_topic(*id)),
            ticket_json(&t).to_string(),
        )
        .ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    tracing::info!(%campaign, tickets = changed.len(), "unpaid flash-sale units back on sale");
    Ok(changed.len())
}

/// One pass of the upkeep; returns the tickets re-published.
pub async fn upkeep_once(core: &Core) -> ServiceResult<usize> {
    // Which campaigns are running is a cross-tenant question: asked as the owner role.
    let rows = core
        .db
        .query_all_raw(stmt(
            &format!(
                "SELECT tenant_id, {CAMPAIGN_COLS} FROM seckill_campaigns
                 WHERE ends_at > now() - interval '1 day' ORDER BY ends_at LIMIT 500"
            ),
            vec![],
        ))
        .await?;
    let mut republished = 0;
    let mut conn = core.redis.clone();
    let cutoff = core.now().timestamp_millis() - REPUBLISH_AFTER_MS;
    for r in &rows {
        let tenant = TenantId(r.try_get("", "tenant_id")?);
        let c = campaign_from(r)?;
        let k = keys(core, tenant, c.id);
        let exists: bool = redis::cmd("EXISTS")
            .arg(&k.campaign)
            .query_async(&mut conn)
            .await?;
        if !exists {
            if c.ends_at + chrono::Duration::milliseconds(RETENTION_MS) > core.now() {
                warm(core, tenant, &c).await?;
                tracing::warn!(campaign = %c.id, "flash-sale campaign re-warmed from Postgres");
            }
            continue;
        }
        if c.ends_at > core.now() {
            reclaim_cancelled(core, tenant, c.id).await?;
        }
        let stale: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&k.pending)
            .arg("-inf")
            .arg(cutoff)
            .arg("LIMIT")
            .arg(0)
            .arg(500)
            .query_async(&mut conn)
            .await?;
        let ids: Vec<Uuid> = stale
            .iter()
            .filter_map(|s| Uuid::try_parse(s).ok())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let recs: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&k.tickets)
            .arg(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>())
            .query_async(&mut conn)
            .await?;
        for (id, rec) in ids.iter().zip(recs) {
            let Some(rec) = rec.as_deref().and_then(Record::parse) else {
                continue;
            };
            if rec.status.is_final() {
                let _: i64 = redis::cmd("ZREM")
                    .arg(&k.pending)
                    .arg(id.to_string())
                    .query_async(&mut conn)
                    .await?;
                continue;
            }
            let msg = TicketMsg {
                campaign_id: c.id,
                ticket_id: *id,
                buyer_id: rec.buyer,
                request_id: rec.request.clone(),
                quantity: rec.quantity,
                admitted_ms: rec.admitted_ms,
            };
            if let Err(e) = publish_ticket(core, &envelope(tenant, &msg)).await {
                return Err(ServiceError::Internal(e.context("re-publishing a ticket")));
            }
            republished += 1;
        }
    }
    if republished > 0 {
        tracing::warn!(republished, "undecided flash-sale tickets re-published");
    }
    Ok(republished)
}
