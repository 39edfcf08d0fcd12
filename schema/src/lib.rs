//! Assembles the GraphQL schema and its protection: depth, complexity and alias limits, the
//! query-cost budget, and a stable `extensions.code` on every error. No HTTP here.

mod doc_cache;
mod protection;

use async_graphql::Schema;
use uphub_resolvers::{Mutation, Query, Subscription};
use uphub_services::Core;
use uphub_services::config::Env;

pub use doc_cache::DocCache;
pub use protection::Protection;

pub type AppSchema = Schema<Query, Mutation, Subscription>;

pub fn build(core: Core) -> AppSchema {
    let limits = core.cfg.limits.clone();
    let prod = core.cfg.env == Env::Prod;
    let mut b = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .extension(Protection::new(core.clone()))
    // Enforced by Protection with coded errors; these are the hard backstops.
    .limit_recursive_depth(64)
    .limit_directives(20)
    .data(core);
    let _ = limits;
    if prod {
        b = b.disable_introspection().disable_suggestions();
    }
    b.finish()
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
