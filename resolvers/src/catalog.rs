//! Catalog resolvers (placeholder until the catalog module lands).

use async_graphql::{Context, ID, Object};

#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    async fn catalog_placeholder(&self, _ctx: &Context<'_>, _id: Option<ID>) -> bool {
        false
    }
}

#[derive(Default)]
pub struct CatalogMutation;

#[Object]
impl CatalogMutation {
    async fn catalog_placeholder_noop(&self) -> bool {
        false
    }
}
