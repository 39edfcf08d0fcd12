//! Assembles the GraphQL schema and its protection: depth, complexity and alias limits, the
//! query-cost budget, and a stable `extensions.code` on every error. No HTTP here.

mod doc_cache;
mod protection;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_graphql::{BatchRequest, Schema};
use uphub_resolvers::{Caller, Mutation, Query, Subscription};
use uphub_services::config::Env;
use uphub_services::{Core, ratelimit};

pub use doc_cache::DocCache;
pub use protection::Protection;

pub type AppSchema = Schema<Query, Mutation, Subscription>;

pub fn build(core: Core) -> AppSchema {
    builder(core.clone())
        .extension(Protection::new(core))
        .finish()
}

/// The same schema without the Protection extension: only for requests `Schemas::execute`
/// has checked and charged itself.
fn build_unprotected(core: Core) -> AppSchema {
    builder(core).finish()
}

fn builder(core: Core) -> async_graphql::SchemaBuilder<Query, Mutation, Subscription> {
    let prod = core.cfg.env == Env::Prod;
    let mut b = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    // Enforced by Protection with coded errors; these are the hard backstops.
    .limit_recursive_depth(64)
    .limit_directives(20)
    .data(core);
    if prod {
        b = b.disable_introspection().disable_suggestions();
    }
    b
}

/// The schema with Protection (every first run of a request, every mutation, every
/// subscription) and without it (repeats of a query that passed every check before).
///
/// With any extension registered, async-graphql routes every field of every request through
/// the extension chain (a registry lookup and a boxed future per field), though Protection only
/// acts on parsing and validation. A query repeated with the same variables passes those
/// exactly as before, so its repeat is charged here and run without the chain. The products
/// page of bench/catalog resolves ~1,000 fields per request.
pub struct Schemas {
    pub protected: AppSchema,
    unprotected: AppSchema,
    memo: Arc<protection::Memo>,
    /// Requests run on the unprotected schema (for /metrics).
    memoized: AtomicU64,
}

impl Schemas {
    pub fn new(core: Core) -> Schemas {
        Schemas {
            protected: build(core.clone()),
            unprotected: build_unprotected(core),
            memo: Arc::default(),
            memoized: AtomicU64::new(0),
        }
    }

    /// Requests that ran as a memoized repeat since start.
    pub fn memoized(&self) -> u64 {
        self.memoized.load(Ordering::Relaxed)
    }

    /// Runs `batch` (which already carries `caller` in its data).
    pub async fn execute(
        &self,
        core: &Core,
        caller: &Caller,
        batch: BatchRequest,
    ) -> async_graphql::BatchResponse {
        let mut req = match batch {
            BatchRequest::Single(req) => req,
            batch => return self.protected.execute_batch(batch).await,
        };
        let Some(key) = protection::MemoKey::of(&mut req) else {
            return self.protected.execute(req).await.into();
        };
        let Some(cost) = self.memo.cost(&key) else {
            let ticket = protection::MemoTicket {
                memo: self.memo.clone(),
                key,
            };
            return self.protected.execute(req.data(ticket)).await.into();
        };
        let rid = caller.request_id.as_str();
        let resp = match ratelimit::charge(core, caller.ctx.as_ref(), &caller.ip, cost).await {
            Ok(charge) => {
                self.memoized.fetch_add(1, Ordering::Relaxed);
                let mut resp = self.unprotected.execute(req).await;
                protection::finish(&mut resp, None, rid, Some((charge.cost, charge.remaining)));
                resp
            }
            Err(e) => {
                let code = e.code();
                let mut resp =
                    async_graphql::Response::from_errors(vec![protection::charge_error(e)]);
                protection::finish(&mut resp, Some(code), rid, None);
                resp
            }
        };
        resp.into()
    }
}

/// The SDL of the schema, as committed in schema.graphql.
pub fn sdl() -> String {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .finish()
    .sdl()
}
