//! bench/ingest: marketplace orders ingested end to end per second — platform mocks → adapters
//! (signing, paging, decryption) → outbox → RabbitMQ → batch upsert — first without faults, then
//! with 20 % 5xx, throttling with bans and timeouts. A backlog of paid orders waits on the mocks
//! when the shops are connected; the clock runs until every order is in Postgres, and then until
//! every order's stock is settled through the reservation engine. Run with bench/ingest/run.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uphub_channels::Credentials;
use uphub_channels_mock::{
    Faults, LineSpec, MockConfig, MockPlatforms, OrderSpec, Platform, Receiver, ShopSpec,
};
use uphub_domain::catalog::ChannelType;
use uphub_services::Core;
use uphub_services::channel_sync::{self, ConnectInput};
use uphub_services::config::Config;
use uphub_tenants::{RequestCtx, TenantId};
use uuid::Uuid;

async fn count(core: &Core, sql: &str) -> i64 {
    core.db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap()
}

/// Places `per_platform` paid orders on a fresh shop of each platform, connects the shops, and
/// times ingestion and stock settling. Returns (orders, ingest secs, settle secs).
async fn round(
    core: &Core,
    ctx: &RequestCtx,
    mock: &MockPlatforms,
    url: &str,
    tag: &str,
    per_platform: usize,
    faults: Faults,
) -> (i64, f64, f64) {
    mock.set_faults(None, Faults::default());
    let before = count(core, "SELECT count(*) AS n FROM orders").await;
    for (i, p) in [Platform::Taobao, Platform::Douyin, Platform::Xiaohongshu]
        .into_iter()
        .enumerate()
    {
        let shop_id = format!("{tag}-{}", p.as_str());
        mock.add_shop(ShopSpec {
            platform: p,
            shop_id: shop_id.clone(),
            app_key: format!("k-{shop_id}"),
            app_secret: format!("s-{shop_id}-secret"),
            access_token: format!("t-{shop_id}"),
            refresh_token: format!("r-{shop_id}"),
            webhook_url: None,
        });
        for n in 0..per_platform {
            let sku = 1 + (n % 5);
            mock.place_order(OrderSpec {
                platform: p,
                shop_id: shop_id.clone(),
                buyer_id: format!("{tag}-b{i}-{n}"),
                receiver: Receiver {
                    name: format!("买家{n}"),
                    phone: format!("138{:08}", n),
                    province: "浙江省".into(),
                    city: "杭州市".into(),
                    district: "西湖区".into(),
                    address: format!("文三路 {n} 号"),
                },
                lines: vec![LineSpec {
                    item_id: format!("{}-item-{sku}", p.as_str()),
                    sku_id: format!("{}-sku-{sku}", p.as_str()),
                    outer_sku_code: format!("SC-{sku}"),
                    title: format!("Tee {sku}"),
                    quantity: 1,
                    price_fen: 9900,
                }],
                post_fee_fen: 0,
                paid: true,
            })
            .unwrap();
        }
    }
    // A backlog: the newest orders are older than the settle lag a pull leaves for the platform
    // to finish writing (otherwise the first seconds would time that deliberate wait).
    tokio::time::sleep(channel_sync::SETTLE_LAG).await;
    mock.set_faults(None, faults);
    let started = Instant::now();
    for p in [Platform::Taobao, Platform::Douyin, Platform::Xiaohongshu] {
        let shop_id = format!("{tag}-{}", p.as_str());
        channel_sync::connect(
            core,
            ctx,
            ConnectInput {
                channel_type: match p {
                    Platform::Taobao => ChannelType::Taobao,
                    Platform::Douyin => ChannelType::Douyin,
                    Platform::Xiaohongshu => ChannelType::Xiaohongshu,
                },
                shop_id: shop_id.clone(),
                name: None,
                credentials: Credentials {
                    base_url: url.to_string(),
                    app_key: format!("k-{shop_id}"),
                    app_secret: format!("s-{shop_id}-secret"),
                    access_token: format!("t-{shop_id}"),
                    refresh_token: Some(format!("r-{shop_id}")),
                    shop_id: shop_id.clone(),
                },
                sync_from: Some(chrono::Utc::now() - chrono::Duration::minutes(10)),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .unwrap();
    }
    let want = before + 3 * per_platform as i64;
    loop {
        if count(core, "SELECT count(*) AS n FROM orders").await >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ingest = started.elapsed().as_secs_f64();
    eprintln!(
        "  {tag}: {} orders in Postgres after {ingest:.2} s; settling stock…",
        3 * per_platform
    );
    loop {
        if count(core, "SELECT count(*) AS n FROM orders WHERE stock_dirty").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settle = started.elapsed().as_secs_f64();
    (3 * per_platform as i64, ingest, settle)
}

// The same allocator as the `uphub` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    // FAULTS=0 runs the fault-free round only.
    let with_faults = std::env::var("FAULTS").map_or(true, |v| v != "0");
    let per_platform: usize = std::env::var("ORDERS_PER_PLATFORM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let db_name = format!(
        "uphub_bench_ingest_{}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let admin = sea_orm::Database::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
        .await?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
    // Autovacuum visits every database of the server: a hundred left-over test databases (the
    // integration tests keep theirs for an hour) cost this run 20-30 % (measured).
    let others = admin
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_database WHERE datname LIKE 'uphub%'",
        ))
        .await?
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0)
        - 1;
    if others > 10 {
        println!(
            "warning: {others} other UpHub databases on this server (autovacuum visits each); expect lower numbers"
        );
    }
    let db = sea_orm::Database::connect(url.as_str()).await?;
    uphub_migrations::migrate(&db).await?;
    db.close().await?;
    let mut cfg = Config::from_env()?;
    cfg.database_url = url;
    cfg.namespace = db_name.clone();
    cfg.queue_expires_ms = Some(60_000);
    // The production default (UPHUB_CHANNEL_SYNC_EVERY_MS): every round re-lists its overlap,
    // so a shorter interval would mostly measure re-listing the backlog.
    cfg.channel_sync_every_ms = 5000;
    cfg.channel_timeout_ms = 2000;
    let core = Core::connect(cfg).await?;
    let session = uphub_services::identity::tenant_signup(
        &core,
        None,
        "bench",
        uphub_services::identity::SignupInput {
            name: "Bench".into(),
            slug: format!("i{}", &db_name[19..]),
            owner_email: "o@bench.test".into(),
            owner_password: "bench-password-1".into(),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tenant = TenantId(session.tenant.id);
    let ctx = RequestCtx::system(tenant, "bench");
    let wh = uphub_services::inventory::warehouse_create(&core, &ctx, "BENCH", "Bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .id;
    let product = Uuid::now_v7();
    let t = tenant.0;
    core.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO products (tenant_id, id, title, kind) VALUES ($1, $2, 'bench', 'PHYSICAL')",
            [t.into(), product.into()],
        ))
        .await?;
    for sku in 1..=5 {
        let id = Uuid::now_v7();
        core.db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO skus (tenant_id, id, product_id, code, name, price_fen) VALUES ($1, $2, $3, $4, 'b', 9900)",
                [t.into(), id.into(), product.into(), format!("SC-{sku}").into()],
            ))
            .await?;
        core.db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO inventory_levels (tenant_id, sku_id, warehouse_id, on_hand) VALUES ($1, $2, $3, 10000000)",
                [t.into(), id.into(), wh.into()],
            ))
            .await?;
    }

    let mock = MockPlatforms::new(MockConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mock_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(mock.clone().serve(listener));
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(uphub_api::run_worker(core.clone(), Default::default(), rx));

    println!(
        "bench/ingest: {per_platform} paid orders per platform (Taobao, Douyin, Xiaohongshu), one worker, 2 cores shared with the mocks"
    );
    println!(
        "{:<44} {:>8} {:>10} {:>12} {:>12}",
        "scenario", "orders", "ingest s", "ingested/s", "settled/s"
    );
    for (name, tag, faults) in [
        ("no faults", "clean", Faults::default()),
        (
            "20% 5xx, 3% throttle (1 s ban), 1% timeouts",
            "faulty",
            Faults {
                error_5xx_rate: 0.2,
                throttle_rate: 0.03,
                ban_seconds: 1,
                timeout_rate: 0.01,
                timeout_ms: 2500,
            },
        ),
    ]
    .into_iter()
    .take(if with_faults { 2 } else { 1 })
    {
        let (n, ingest, settle) =
            round(&core, &ctx, &mock, &mock_url, tag, per_platform, faults).await;
        println!(
            "{name:<44} {n:>8} {ingest:>10.2} {:>12.0} {:>12.0}",
            n as f64 / ingest,
            n as f64 / settle
        );
    }
    let stats = mock.fault_stats();
    println!("mock fault counters: {stats:?}");
    // Stop the worker, then drop the database (and whatever connections are left).
    let _ = stop.send(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await?;
    Ok(())
}
