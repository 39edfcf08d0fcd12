//! Products pages with their SKUs and listings, cached per process and keyed by the tenant's
//! catalog version.
//!
//! Migration 0014 keeps one version per tenant in `catalog_versions`; statement triggers on
//! products, SKUs, listings and sales channels bump it in the same transaction as the write, so
//! no write path can forget it. Every cached read asks Postgres for the current version FIRST
//! (one short statement) and serves a cached page only when it was read at that version:
//!
//! - a write committed in any process before the version read is seen (the version moved);
//! - a write committing between the version read and the data read makes the page newer than
//!   its version, never older, so it is at worst refetched once.
//!
//! Stock is never cached; it is read per request. A full cache is cleared rather than tracked:
//! bounded and simple, and a page costs one refetch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uphub_tenants::{RequestCtx, TenantId};

use crate::Core;
use crate::catalog::Product;
use crate::error::{ServiceError, ServiceResult};
use crate::page::Page;

struct Cached {
    version: i64,
    items: Vec<Arc<Product>>,
    has_next: bool,
}

pub struct CatalogCache {
    /// Pages kept (over all tenants); 0: off.
    capacity: usize,
    pages: Mutex<HashMap<(TenantId, String), Cached>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CatalogCache {
    pub fn new(capacity: usize) -> Self {
        CatalogCache {
            capacity,
            pages: Mutex::default(),
            hits: AtomicU64::default(),
            misses: AtomicU64::default(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The page cached under `key` when it was read at `version`.
    pub(crate) fn get(
        &self,
        tenant: TenantId,
        key: &str,
        version: i64,
    ) -> Option<Page<Arc<Product>>> {
        let found = self.pages.lock().ok().and_then(|m| {
            m.get(&(tenant, key.to_string()))
                .filter(|c| c.version == version)
                .map(|c| Page {
                    items: c.items.clone(),
                    has_next: c.has_next,
                })
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub(crate) fn put(
        &self,
        tenant: TenantId,
        key: String,
        version: i64,
        page: &Page<Arc<Product>>,
    ) {
        if let Ok(mut m) = self.pages.lock() {
            if m.len() >= self.capacity {
                m.clear();
            }
            m.insert(
                (tenant, key),
                Cached {
                    version,
                    items: page.items.clone(),
                    has_next: page.has_next,
                },
            );
        }
    }

    /// (hits, misses) since start, for /metrics.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// The tenant's catalog version now (0 before its first catalog write).
pub(crate) async fn version(core: &Core, ctx: &RequestCtx) -> ServiceResult<i64> {
    use sea_orm::sqlx::Row;
    let rows = uphub_tenants::tenant_read(
        &core.db,
        ctx.tenant,
        &format!(
            "SELECT version FROM catalog_versions WHERE tenant_id = '{}'",
            ctx.tenant.0
        ),
    )
    .await?;
    match rows.first() {
        None => Ok(0),
        Some(row) => row.try_get::<i64, _>("version").map_err(|e| {
            ServiceError::Internal(anyhow::Error::new(e).context("catalog version row"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(title: &str) -> Page<Arc<Product>> {
        let now = chrono::Utc::now();
        Page {
            items: vec![Arc::new(Product {
                id: uuid::Uuid::nil(),
                title: title.into(),
                description: String::new(),
                kind: uphub_domain::catalog::ProductKind::Physical,
                status: uphub_domain::catalog::ProductStatus::Active,
                tags: vec![],
                course_id: None,
                membership_plan_id: None,
                created_at: now,
                updated_at: now,
                skus: Some(vec![]),
            })],
            has_next: true,
        }
    }

    #[test]
    fn a_page_is_served_only_at_the_version_it_was_read_and_only_to_its_tenant() {
        let cache = CatalogCache::new(8);
        let (a, b) = (
            TenantId(uuid::Uuid::from_u128(1)),
            TenantId(uuid::Uuid::from_u128(2)),
        );
        assert!(cache.get(a, "q", 3).is_none());
        cache.put(a, "q".into(), 3, &page("t"));
        let hit = cache.get(a, "q", 3).expect("same tenant, key and version");
        assert_eq!(hit.items[0].title, "t");
        assert!(hit.has_next);
        assert!(cache.get(a, "q", 4).is_none(), "a newer version misses");
        assert!(cache.get(b, "q", 3).is_none(), "another tenant misses");
        assert!(cache.get(a, "other", 3).is_none(), "another query misses");
        assert_eq!(cache.counts(), (1, 4));
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = CatalogCache::new(8);
        let t = TenantId(uuid::Uuid::from_u128(1));
        for i in 0..8 {
            cache.put(t, i.to_string(), 1, &page("x"));
        }
        cache.put(t, "last".into(), 1, &page("x"));
        assert!(cache.get(t, "0", 1).is_none());
        assert!(cache.get(t, "last", 1).is_some());
    }
}
