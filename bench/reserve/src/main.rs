//! bench/reserve: committed reservations per second through the reservation engine, on one hot
//! SKU and spread over 1,000 SKUs, beside a Postgres-only guarded UPDATE, sold-out rejections,
//! and raw `redis-benchmark` EVALSHA of the admission script — all in one run, on a fresh
//! database. The engine is driven twice: called in this process (the service column), and over
//! HTTP through GraphQL (`stockReservationCreate` on the gateway served in this process, keep-alive
//! connections, a staff access token: parsing, auth, the tenant budget, resolvers and JSON
//! included). Run with bench/reserve/run.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use uphub_services::Core;
use uphub_services::config::Config;
use uphub_services::reservation::{self, Line, ReserveRequest};
use uphub_tenants::{RequestCtx, TenantTx};
use uuid::Uuid;

const RESERVE_GQL: &str = "mutation R($i: StockReservationCreateInput!) { stockReservationCreate(input: $i) { stockReservation { id } userErrors { code } } }";

struct Stats {
    ok: usize,
    rejected: usize,
    lat: Vec<Duration>,
    elapsed: Duration,
}

impl Stats {
    fn line(&self, name: &str) -> String {
        let mut l = self.lat.clone();
        l.sort();
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        format!(
            "{name:<44} {:>10.0} {:>10.0} {:>8.2} {:>8.2}",
            self.ok as f64 / self.elapsed.as_secs_f64(),
            self.rejected as f64 / self.elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0
        )
    }
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `f` from `conc` tasks until `secs` pass; `f` returns Ok(true) committed, Ok(false) rejected.
async fn run<F, Fut>(conc: usize, secs: u64, f: F) -> Stats
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<bool>> + Send,
{
    let f = Arc::new(f);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..conc {
        let f = f.clone();
        tasks.spawn(async move {
            let (mut ok, mut rej, mut lat) = (0, 0, Vec::new());
            let mut i = 0;
            while Instant::now() < deadline {
                let s = Instant::now();
                match f(t, i).await {
                    Ok(true) => ok += 1,
                    Ok(false) => rej += 1,
                    Err(e) => panic!("bench operation failed: {e:#}"),
                }
                lat.push(s.elapsed());
                i += 1;
            }
            (ok, rej, lat)
        });
    }
    let mut st = Stats {
        ok: 0,
        rejected: 0,
        lat: vec![],
        elapsed: Duration::ZERO,
    };
    while let Some(r) = tasks.join_next().await {
        let (ok, rej, lat) = r.unwrap();
        st.ok += ok;
        st.rejected += rej;
        st.lat.extend(lat);
    }
    st.elapsed = started.elapsed();
    st
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("DURATION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let conc: usize = std::env::var("CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let db_name = format!(
        "uphub_bench_reserve_{}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let admin = sea_orm::Database::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
        .await?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
    let db = sea_orm::Database::connect(url.as_str()).await?;
    uphub_migrations::migrate(&db).await?;
    db.close().await?;
    let mut cfg = Config::from_env()?;
    cfg.database_url = url;
    cfg.namespace = db_name.clone();
    cfg.db_pool = conc as u32 + 4;
    cfg.queue_expires_ms = Some(60_000);
    // The bench measures the engine, not the per-tenant query-cost budget.
    cfg.limits.cost_rate_per_sec = 1e9;
    cfg.limits.cost_burst = 1e9;
    cfg.limits.ip_rate_per_sec = 1e9;
    cfg.limits.ip_burst = 1e9;
    let core = Core::connect(cfg).await?;

    let session = uphub_services::identity::tenant_signup(
        &core,
        None,
        "bench",
        uphub_services::identity::SignupInput {
            name: "Bench".into(),
            slug: format!("b{}", &db_name[20..]),
            owner_email: "o@bench.test".into(),
            owner_password: "bench-password-1".into(),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tenant = uphub_tenants::TenantId(session.tenant.id);
    let ctx = RequestCtx::system(tenant, "bench");
    let wh = uphub_services::inventory::warehouse_create(&core, &ctx, "BENCH", "Bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .id;
    // 1,002 SKUs: [0] hot, [1..=1000] spread, [1001] sold out. Seeded in bulk as the owner.
    let skus: Vec<Uuid> = (0..1002).map(|_| Uuid::now_v7()).collect();
    let product = Uuid::now_v7();
    let t = tenant.0;
    core.db
        .execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, "INSERT INTO products (tenant_id, id, title, kind) VALUES ($1, $2, 'bench', 'PHYSICAL')", [t.into(), product.into()]))
        .await?;
    core.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO skus (tenant_id, id, product_id, code, name, price_fen)
             SELECT $1, s, $2, 'B-' || n, 'b', 100 FROM unnest($3::uuid[]) WITH ORDINALITY AS x(s, n)",
            [t.into(), product.into(), skus.clone().into()],
        ))
        .await?;
    core.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO inventory_levels (tenant_id, sku_id, warehouse_id, on_hand)
             SELECT $1, s, $2, CASE WHEN n = 1002 THEN 0 ELSE 10000000 END FROM unnest($3::uuid[]) WITH ORDINALITY AS x(s, n)",
            [t.into(), wh.into(), skus.clone().into()],
        ))
        .await?;
    uphub_services::stock_cache::reconcile_all(&core)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let reserve = move |core: Core, ctx: RequestCtx, sku: Uuid, owner: String| async move {
        let r = reservation::reserve(
            &core,
            &ctx,
            ReserveRequest {
                owner_kind: "BENCH".into(),
                owner_id: owner,
                campaign: None,
                lines: vec![Line {
                    sku,
                    warehouse: wh,
                    quantity: 1,
                }],
                ttl: Duration::from_secs(900),
            },
        )
        .await;
        match r {
            Ok(_) => Ok(true),
            Err(uphub_services::ServiceError::SoldOut { .. }) => Ok(false),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        }
    };

    println!(
        "UpHub reservation benchmark: concurrency {conc}, {secs}s per scenario, database {db_name}"
    );
    let (c1, x1) = (core.clone(), ctx.clone());
    let hot = skus[0];
    let hot_stats = run(conc, secs, move |t, i| {
        reserve(c1.clone(), x1.clone(), hot, format!("hot-{t}-{i}"))
    })
    .await;
    let (c2, x2, spread) = (core.clone(), ctx.clone(), Arc::new(skus[1..=1000].to_vec()));
    let spread_stats = run(conc, secs, move |t, i| {
        let sku = spread[(t * 7919 + i * 104729) % spread.len()];
        reserve(c2.clone(), x2.clone(), sku, format!("spread-{t}-{i}"))
    })
    .await;
    let (c3, x3, sold_out) = (core.clone(), ctx.clone(), skus[1001]);
    let sold_out_stats = run(conc, secs, move |t, i| {
        reserve(c3.clone(), x3.clone(), sold_out, format!("so-{t}-{i}"))
    })
    .await;
    // Through GraphQL over HTTP: the gateway in this process, one keep-alive connection per task.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(uphub_api::serve(
        uphub_api::App::new(core.clone()),
        listener,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let token = Arc::new(session.access_token.clone());
    let mut conns = Vec::with_capacity(conc);
    for _ in 0..conc {
        conns.push(tokio::sync::Mutex::new(
            uphub_bench_http::Conn::open(&addr).await?,
        ));
    }
    let conns = Arc::new(conns);
    let (wh_gid, sku_gids) = (
        Arc::new(uphub_domain::gid::encode("Warehouse", wh)),
        Arc::new(
            skus.iter()
                .map(|s| uphub_domain::gid::encode("Sku", *s))
                .collect::<Vec<_>>(),
        ),
    );
    let via_gql = {
        let (conns, token, wh_gid) = (conns.clone(), token.clone(), wh_gid.clone());
        move |t: usize, sku: String, reference: String| {
            let (conns, token, wh_gid) = (conns.clone(), token.clone(), wh_gid.clone());
            async move {
                let mut conn = conns[t].lock().await;
                let v = conn
                    .gql(
                        Some(&token),
                        RESERVE_GQL,
                        serde_json::json!({"i": {"reference": reference, "ttlSeconds": 900,
                            "lines": [{"skuId": sku, "warehouseId": *wh_gid, "quantity": 1}]}}),
                    )
                    .await?;
                let p = &v["data"]["stockReservationCreate"];
                match p["userErrors"][0]["code"].as_str() {
                    None if p["stockReservation"]["id"].is_string() => Ok(true),
                    Some("SOLD_OUT") => Ok(false),
                    _ => Err(anyhow::anyhow!("unexpected answer: {v}")),
                }
            }
        }
    };
    let (g1, hot_gid) = (via_gql.clone(), sku_gids[0].clone());
    let gql_hot_stats = run(conc, secs, move |t, i| {
        g1(t, hot_gid.clone(), format!("gql-hot-{t}-{i}"))
    })
    .await;
    let (g2, spread_gids) = (via_gql.clone(), sku_gids.clone());
    let gql_spread_stats = run(conc, secs, move |t, i| {
        let sku = spread_gids[1 + (t * 7919 + i * 104729) % 1000].clone();
        g2(t, sku, format!("gql-spread-{t}-{i}"))
    })
    .await;
    let (g3, so_gid) = (via_gql.clone(), sku_gids[1001].clone());
    let gql_sold_out_stats = run(conc, secs, move |t, i| {
        g3(t, so_gid.clone(), format!("gql-so-{t}-{i}"))
    })
    .await;
    drop(conns);
    let _ = stop_tx.send(());
    let _ = gateway.await;

    // Postgres-only: the guarded UPDATE of the same hot row plus its ledger row, one transaction each.
    let c4 = core.clone();
    let pg_stats = run(conc, secs, move |_, _| {
        let core = c4.clone();
        async move {
            // Same statement order as the engine: the ledger row first, the hot row last.
            let tx = TenantTx::begin(&core.db, tenant).await?;
            tx.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO inventory_ledger (tenant_id, id, sku_id, warehouse_id, kind, delta_reserved) VALUES ($1, $2, $3, $4, 'RESERVE', 1)",
                [t.into(), Uuid::now_v7().into(), hot.into(), wh.into()],
            ))
            .await?;
            let n = tx
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "UPDATE inventory_levels SET reserved = reserved + 1 WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3 AND on_hand - reserved - held >= 1",
                    [t.into(), hot.into(), wh.into()],
                ))
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(n == 1)
        }
    })
    .await;
    // Raw EVALSHA of the admission script on a loaded hash (stock large enough never to run out).
    let mut conn = core.redis.clone();
    let script = uphub_services::stock_cache::admit_script();
    let sha: String = script.prepare_invoke().load_async(&mut conn).await?;
    let key = uphub_services::stock_cache::key(&core, tenant, skus[1]);
    let field = uphub_services::stock_cache::general_field(wh);
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "6379",
            "-c",
            &conc.to_string(),
            "-n",
            "300000",
            "-q",
            "EVALSHA",
            &sha,
            "1",
            &key,
            "1",
            &field,
            "",
        ])
        .output();
    let raw_evalsha: f64 = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[1] == "requests")
            .and_then(|w| w[0].parse().ok())
            .unwrap_or(0.0),
        Err(_) => 0.0,
    };
    let _ = core.db.begin().await;

    println!();
    println!(
        "{:<44} {:>10} {:>10} {:>8} {:>8}",
        "scenario", "commits/s", "rejects/s", "p50 ms", "p99 ms"
    );
    println!("{}", hot_stats.line("engine, one hot SKU"));
    println!("{}", spread_stats.line("engine, spread over 1,000 SKUs"));
    println!(
        "{}",
        sold_out_stats.line("engine, sold-out SKU (rejections)")
    );
    println!("{}", gql_hot_stats.line("GraphQL over HTTP, one hot SKU"));
    println!(
        "{}",
        gql_spread_stats.line("GraphQL over HTTP, spread over 1,000 SKUs")
    );
    println!(
        "{}",
        gql_sold_out_stats.line("GraphQL over HTTP, sold-out SKU (rejections)")
    );
    println!("{}", pg_stats.line("Postgres-only guarded UPDATE, hot SKU"));
    println!(
        "{:<44} {:>10.0}",
        "raw redis-benchmark EVALSHA (admission)", raw_evalsha
    );
    println!();
    println!(
        "ratio engine hot / Postgres-only hot:        {:.2}",
        hot_stats.rate() / pg_stats.rate().max(1.0)
    );
    println!(
        "ratio engine spread / Postgres-only hot:     {:.2}",
        spread_stats.rate() / pg_stats.rate().max(1.0)
    );
    println!(
        "ratio GraphQL hot / Postgres-only hot:       {:.2}",
        gql_hot_stats.rate() / pg_stats.rate().max(1.0)
    );
    println!(
        "ratio GraphQL spread / Postgres-only hot:    {:.2}",
        gql_spread_stats.rate() / pg_stats.rate().max(1.0)
    );
    println!(
        "ratio GraphQL spread / engine spread:        {:.2}",
        gql_spread_stats.rate() / spread_stats.rate().max(1.0)
    );
    println!(
        "ratio sold-out rejections / raw EVALSHA:     {:.2}",
        sold_out_stats.rejected as f64
            / sold_out_stats.elapsed.as_secs_f64()
            / raw_evalsha.max(1.0)
    );
    drop(core);
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await;
    Ok(())
}
