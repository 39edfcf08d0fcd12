//! Core: the shared handles every role of the binary works with (Postgres, Redis, RabbitMQ,
//! keys, config, clock). Cheap to clone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use sea_orm::{ConnectOptions, DatabaseConnection};
use uphub_domain::pii::{DataKey, MasterKey};
use uphub_tenants::TenantId;

use crate::config::Config;
use crate::pubsub::Hub;

/// Injected time, so TTLs and expiries are testable.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[derive(Clone)]
pub struct Core {
    pub cfg: Arc<Config>,
    pub db: DatabaseConnection,
    pub redis: ConnectionManager,
    pub redis_client: redis::Client,
    pub amqp: Arc<lapin::Connection>,
    pub master_key: Arc<MasterKey>,
    pub clock: Arc<dyn Clock>,
    pub hub: Hub,
    /// Open while Redis is failing: stock admission skips Redis until this instant (ms).
    pub(crate) stock_breaker: Arc<std::sync::atomic::AtomicI64>,
    /// Group commit of concurrent reservations (one transaction for many).
    pub(crate) reserve_batcher: Arc<crate::reservation::Batcher>,
    pub(crate) deks: Arc<Mutex<HashMap<TenantId, DataKey>>>,
    /// Products pages with SKUs and listings, by catalog version (see `catalog_cache`).
    pub catalog_cache: Arc<crate::catalog_cache::CatalogCache>,
    /// Per marketplace connection: the order versions this process handed to the bus lately
    /// (an optimization only: a pull skips them; the upsert would find them stale anyway).
    pub(crate) sent_versions: Arc<Mutex<HashMap<uuid::Uuid, crate::channel_sync::SentVersions>>>,
    /// The flash-sale ticket publisher's confirm-mode channel on this instance's connection.
    pub(crate) ticket_channel: Arc<tokio::sync::Mutex<Option<lapin::Channel>>>,
    /// Where media live: the local directory or an S3-compatible bucket (one client, one
    /// connection pool, for the process).
    pub media_store: Arc<dyn object_store::ObjectStore>,
}

impl Core {
    /// Connects to every backing service. Start-up only; failures are fatal to the role.
    pub async fn connect(cfg: Config) -> anyhow::Result<Core> {
        let mut opts = ConnectOptions::new(cfg.database_url.clone());
        opts.max_connections(cfg.db_pool.max(2))
            .min_connections(2)
            .sqlx_logging(false)
            // sqlx pings a connection on every checkout by default: one more round trip in
            // front of every statement. Only a connection idle long enough to have been cut
            // (by the server, a proxy or a firewall) is tested; a broken hot one fails its
            // statement, which callers already handle as a database error.
            .test_before_acquire_if_idle_for(std::time::Duration::from_secs(30))
            .connect_timeout(std::time::Duration::from_secs(10));
        let db = sea_orm::Database::connect(opts)
            .await
            .context("connecting to Postgres")?;
        let redis_client = redis::Client::open(cfg.redis_url.as_str()).context("REDIS_URL")?;
        // Short timeouts: a Redis outage must cost callers milliseconds, not seconds; the stock
        // engine then decides in Postgres alone (see stock_cache::Breaker).
        let redis_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_millis(500)))
            .set_response_timeout(Some(std::time::Duration::from_millis(1000)))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(500));
        let redis = redis_client
            .get_connection_manager_with_config(redis_cfg)
            .await
            .context("connecting to Redis")?;
        let amqp =
            lapin::Connection::connect(&cfg.amqp_url, lapin::ConnectionProperties::default())
                .await
                .context("connecting to RabbitMQ")?;
        let master_key = MasterKey::from_hex(cfg.pii_master_key_hex.expose())
            .map_err(|e| anyhow::anyhow!("UPHUB_PII_MASTER_KEY: {e}"))?;
        let hub = Hub::start(
            redis_client.clone(),
            format!("uphub:{}:live:*", cfg.namespace),
        );
        let media_store = crate::media::store(&cfg.media)?;
        let catalog_cache = Arc::new(crate::catalog_cache::CatalogCache::new(
            cfg.catalog_cache_pages,
        ));
        Ok(Core {
            media_store,
            cfg: Arc::new(cfg),
            db,
            redis,
            redis_client,
            amqp: Arc::new(amqp),
            master_key: Arc::new(master_key),
            clock: Arc::new(SystemClock),
            hub,
            stock_breaker: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            reserve_batcher: Arc::default(),
            deks: Arc::new(Mutex::new(HashMap::new())),
            catalog_cache,
            sent_versions: Arc::new(Mutex::new(HashMap::new())),
            ticket_channel: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// A Redis key of this instance. `tag` becomes the hash tag, so keys of one tenant share a
    /// cluster slot.
    pub fn key(&self, tag: &str, rest: &str) -> String {
        format!("uphub:{}:{{{tag}}}:{rest}", self.cfg.namespace)
    }

    /// The live (pub/sub) channel of one tenant and topic.
    pub fn live_channel(&self, tenant: TenantId, topic: &str) -> String {
        format!("uphub:{}:live:{tenant}:{topic}", self.cfg.namespace)
    }

    pub fn exchange(&self) -> String {
        format!("uphub.{}.events", self.cfg.namespace)
    }

    pub fn queue(&self, consumer: &str) -> String {
        format!("uphub.{}.{consumer}", self.cfg.namespace)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
