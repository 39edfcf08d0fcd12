//! bench/seckill: the flash-sale edge end to end over HTTP. A fresh database, the release
//! `uphub seckill` and `uphub worker` as child processes, 20,000 buyers (rows + tokens) against
//! a quota of 1,000, driven by this process's own keep-alive HTTP/1.1 load generator for
//! DURATION seconds (every buyer once, then again and again, like a crowd pressing "buy");
//! then every QUEUED ticket long-polled to its outcome, orders counted in Postgres. In the same
//! run: raw `redis-benchmark` EVALSHA of the admission script (the sold-out path, which is what
//! the edge answers after the first thousand), and the same buyers against a Postgres-only
//! hot-row path (one transaction per request, in process: no HTTP, so it is favoured).
//! Run with bench/seckill/run.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uphub_bench_http::{Conn, find};
use uphub_services::Core;
use uphub_services::config::Config;
use uphub_services::seckill::{self, CampaignInput};
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ------------------------------------------------------------ http client ---

/// The string value of `"key":"…"` in a compact JSON body.
fn json_str<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let start = find(body, pat.as_bytes())? + pat.len();
    let len = body[start..].iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&body[start..start + len]).ok()
}

// ------------------------------------------------------------------ stats ---

#[derive(Default)]
struct Tally {
    requests: usize,
    queued: Vec<(usize, String)>,
    sold_out: usize,
    limit: usize,
    rate_limited: usize,
    won: usize,
    other: usize,
    lat_us: Vec<u32>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.requests += o.requests;
        self.queued.extend(o.queued);
        self.sold_out += o.sold_out;
        self.limit += o.limit;
        self.rate_limited += o.rate_limited;
        self.won += o.won;
        self.other += o.other;
        self.lat_us.extend(o.lat_us);
    }

    fn pct(&mut self, p: f64) -> f64 {
        self.lat_us.sort_unstable();
        let i = ((self.lat_us.len() as f64 * p) as usize).min(self.lat_us.len().saturating_sub(1));
        self.lat_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

fn pid_of(name: &str) -> Option<u32> {
    let out = Command::new("pidof").arg(name).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn buy_req(path: &str, campaign: &str, b: usize, n: usize, tokens: &[String]) -> Vec<u8> {
    let body = format!(r#"{{"campaignId":"{campaign}","quantity":1,"requestId":"r{n}"}}"#);
    // Four buyers share an address (households, carrier NAT).
    let ip = b / 4;
    format!(
        "POST {path} HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nX-Forwarded-For: 10.{}.{}.{}\r\nContent-Length: {}\r\n\r\n{body}",
        tokens[b],
        (ip >> 16) & 255,
        (ip >> 8) & 255,
        ip & 255,
        body.len()
    )
    .into_bytes()
}

/// `conns` keep-alive connections post buys to `addr` + `path` until `duration` has passed:
/// buyer after buyer, round and round.
async fn drive(
    addr: String,
    path: &'static str,
    campaign: String,
    tokens: Arc<Vec<String>>,
    conns: usize,
    duration: Duration,
    offset: usize,
) -> anyhow::Result<(Tally, Duration)> {
    let counter = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (tokens, addr, campaign, counter) = (
            tokens.clone(),
            addr.clone(),
            campaign.clone(),
            counter.clone(),
        );
        tasks.spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let b = n % tokens.len();
                let req = buy_req(path, &campaign, b, n + offset, &tokens);
                let t0 = Instant::now();
                let (status, body) = conn.call(&req).await?;
                tally.lat_us.push(t0.elapsed().as_micros() as u32);
                tally.requests += 1;
                match (status, json_str(&body, "status")) {
                    (200, Some("QUEUED")) => tally
                        .queued
                        .push((b, json_str(&body, "id").unwrap_or_default().to_string())),
                    (200, Some("WON")) => tally.won += 1,
                    (200, Some("SOLD_OUT")) => tally.sold_out += 1,
                    (200, Some("LIMIT_EXCEEDED")) => tally.limit += 1,
                    (429, _) => tally.rate_limited += 1,
                    _ => {
                        if tally.other == 0 {
                            eprintln!(
                                "unexpected answer {status}: {}",
                                String::from_utf8_lossy(&body)
                            );
                        }
                        tally.other += 1;
                    }
                }
            }
            Ok::<_, anyhow::Error>(tally)
        });
    }
    let mut total = Tally::default();
    while let Some(r) = tasks.join_next().await {
        total.merge(r??);
    }
    Ok((total, started.elapsed()))
}

// ------------------------------------------------------- Postgres-only path ---

/// Flash-sale admission done by Postgres alone, one transaction per request: the guarded
/// UPDATE of the level first (with the campaign window; it serializes admissions, so the
/// per-buyer check after it cannot race), then the buyer's units, then the ticket row.
#[derive(Clone)]
struct PgPath {
    core: Core,
    tenant: TenantId,
    sku: Uuid,
    wh: Uuid,
    campaign: Uuid,
    quota: usize,
    started: Instant,
    requests: Arc<AtomicUsize>,
    won: Arc<AtomicUsize>,
    /// (time, requests) when the last unit went.
    sold_out_at: Arc<std::sync::Mutex<Option<(Duration, usize)>>>,
}

impl PgPath {
    async fn buy(&self, buyer: Uuid, request: &str) -> anyhow::Result<&'static str> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let t = self.tenant.0;
        let tx = TenantTx::begin(&self.core.db, self.tenant).await?;
        let took = tx
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "UPDATE inventory_levels SET reserved = reserved + 1, updated_at = now()
                 WHERE tenant_id = $1 AND sku_id = $2 AND warehouse_id = $3 AND on_hand - reserved - held >= 1
                   AND EXISTS (SELECT 1 FROM seckill_campaigns k WHERE k.tenant_id = $1 AND k.id = $4
                               AND now() >= k.starts_at AND now() < k.ends_at)",
                [t.into(), self.sku.into(), self.wh.into(), self.campaign.into()],
            ))
            .await?
            .rows_affected();
        if took == 0 {
            return Ok("SOLD_OUT");
        }
        let mine: i64 = tx
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT coalesce(sum(quantity), 0)::bigint AS n FROM seckill_tickets
                 WHERE tenant_id = $1 AND campaign_id = $2 AND buyer_id = $3",
                [t.into(), self.campaign.into(), buyer.into()],
            ))
            .await?
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0);
        if mine >= 1 {
            return Ok("LIMIT_EXCEEDED");
        }
        tx.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO seckill_tickets (tenant_id, id, campaign_id, buyer_id, request_id, quantity, status, admitted_at)
             VALUES ($1, $2, $3, $4, $5, 1, 'QUEUED', now())",
            [t.into(), Uuid::now_v7().into(), self.campaign.into(), buyer.into(), request.into()],
        ))
        .await?;
        tx.commit().await?;
        if self.won.fetch_add(1, Ordering::Relaxed) + 1 == self.quota {
            *self.sold_out_at.lock().unwrap() = Some((self.started.elapsed(), n));
        }
        Ok("WON")
    }

    /// Requests per second while units were left.
    fn selling_rate(&self) -> Option<(f64, Duration)> {
        let (t, n) = (*self.sold_out_at.lock().unwrap())?;
        Some((n as f64 / t.as_secs_f64(), t))
    }
}

/// The Postgres-only path behind HTTP, for a like-for-like comparison with the edge: the same
/// request, the same token check (stateless JWT), JSON in and out.
async fn pg_http(
    axum::extract::State(p): axum::extract::State<PgPath>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(buyer) = uphub_services::auth::authenticate(&p.core, token)
        .await
        .ok()
        .and_then(|c| c.buyer_id())
    else {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "{}".into());
    };
    let request = v["requestId"].as_str().unwrap_or("-").to_string();
    match p.buy(buyer, &request).await {
        Ok(status) => (
            StatusCode::OK,
            serde_json::json!({"ticket": {"status": status}}).to_string(),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\":\"{e}\"}}"),
        ),
    }
}

// ------------------------------------------------------------------- main ---

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let buyers_n: usize = env_or("BUYERS", 20_000);
    let quota: i64 = env_or("QUOTA", 1_000);
    let conns: usize = env_or("CONNECTIONS", 64);
    let secs: u64 = env_or("DURATION", 10);
    let listen: String = env_or("BENCH_LISTEN", "127.0.0.1:18081".to_string());
    let bin: String = env_or("UPHUB_BIN", "target/release/uphub".to_string());
    let buyer_rate: f64 = env_or("BUYER_RATE_PER_SEC", 5.0);
    let buyer_burst: f64 = env_or("BUYER_BURST", 10.0);

    let db_name = format!(
        "uphub_bench_seckill_{}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let admin = sea_orm::Database::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
        .await?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
    let result = run(
        &db_name,
        &url,
        buyers_n,
        quota,
        conns,
        secs,
        &listen,
        &bin,
        (buyer_rate, buyer_burst),
    )
    .await;
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run(
    db_name: &str,
    url: &str,
    buyers_n: usize,
    quota: i64,
    conns: usize,
    secs: u64,
    listen: &str,
    bin: &str,
    (buyer_rate, buyer_burst): (f64, f64),
) -> anyhow::Result<()> {
    let db = sea_orm::Database::connect(url).await?;
    uphub_migrations::migrate(&db).await?;
    db.close().await?;
    let mut cfg = Config::from_env()?;
    cfg.database_url = url.to_string();
    cfg.namespace = db_name.to_string();
    cfg.db_pool = conns as u32 + 4;
    cfg.queue_expires_ms = Some(600_000);
    // Tokens must outlive the run.
    cfg.access_token_ttl = Duration::from_secs(3600);
    let core = Core::connect(cfg.clone()).await?;

    // ---- seed: tenant, warehouse, SKUs, own channel, buyers, campaigns
    let session = uphub_services::identity::tenant_signup(
        &core,
        None,
        "bench",
        uphub_services::identity::SignupInput {
            name: "Bench".into(),
            slug: format!("s{}", &db_name[21..]),
            owner_email: "o@bench.test".into(),
            owner_password: "bench-password-1".into(),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tenant = TenantId(session.tenant.id);
    let t = tenant.0;
    let ctx = RequestCtx::system(tenant, "bench");
    let wh = uphub_services::inventory::warehouse_create(&core, &ctx, "BENCH", "Bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .id;
    // [0] the flash sale, [1] Postgres-only in process, [2] warm-up, [3] Postgres-only over HTTP.
    let skus: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let product = Uuid::now_v7();
    let channel = Uuid::now_v7();
    let exec = |sql: &str, v: Vec<sea_orm::Value>| {
        core.db
            .execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, v))
    };
    exec(
        "INSERT INTO products (tenant_id, id, title, kind) VALUES ($1, $2, 'bench', 'PHYSICAL')",
        vec![t.into(), product.into()],
    )
    .await?;
    exec(
        "INSERT INTO skus (tenant_id, id, product_id, code, name, price_fen)
         SELECT $1, s, $2, 'S-' || n, 'b', 9900 FROM unnest($3::uuid[]) WITH ORDINALITY AS x(s, n)",
        vec![t.into(), product.into(), skus.clone().into()],
    )
    .await?;
    exec(
        "INSERT INTO inventory_levels (tenant_id, sku_id, warehouse_id, on_hand)
         SELECT $1, s, $2, CASE WHEN n = 3 THEN 1000000 ELSE $4 END
         FROM unnest($3::uuid[]) WITH ORDINALITY AS x(s, n)",
        vec![
            t.into(),
            wh.into(),
            skus.clone().into(),
            (quota as i32).into(),
        ],
    )
    .await?;
    exec(
        "INSERT INTO sales_channels (tenant_id, id, type, shop_id, name) VALUES ($1, $2, 'WECHAT_MINI', 'mini', 'mini')",
        vec![t.into(), channel.into()],
    )
    .await?;
    let buyer_ids: Vec<Uuid> = (0..buyers_n).map(|_| Uuid::now_v7()).collect();
    exec(
        "INSERT INTO buyers (tenant_id, id) SELECT $1, b FROM unnest($2::uuid[]) AS b",
        vec![t.into(), buyer_ids.clone().into()],
    )
    .await?;
    let tokens: Arc<Vec<String>> = Arc::new(
        buyer_ids
            .iter()
            .map(|b| {
                uphub_services::auth::issue_buyer_token(&core, tenant, *b)
                    .map(|x| x.0)
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .collect::<anyhow::Result<_>>()?,
    );
    let campaign = |sku: Uuid, quota: i64| {
        let core = core.clone();
        let ctx = ctx.clone();
        async move {
            let now = chrono::Utc::now();
            seckill::campaign_create(
                &core,
                &ctx,
                CampaignInput {
                    sku_id: sku,
                    warehouse_id: wh,
                    channel_id: channel,
                    quota,
                    price_amount: "9.90".into(),
                    price_currency: "CNY".into(),
                    starts_at: now - chrono::Duration::seconds(1),
                    ends_at: now + chrono::Duration::minutes(30),
                    per_buyer_limit: 1,
                    payment_minutes: 15,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
        }
    };
    let sale = campaign(skus[0], quota).await?;
    let pg_campaign = campaign(skus[1], quota).await?;
    let warmup = campaign(skus[2], 1_000_000).await?;
    let pg_http_campaign = campaign(skus[3], quota).await?;

    // ---- the two roles under test, as child processes of the release binary
    let envs: Vec<(&str, String)> = vec![
        ("DATABASE_URL", url.to_string()),
        ("UPHUB_NAMESPACE", db_name.to_string()),
        ("REDIS_URL", cfg.redis_url.clone()),
        ("AMQP_URL", cfg.amqp_url.clone()),
        ("UPHUB_QUEUE_EXPIRES_MS", "600000".into()),
        ("UPHUB_SECKILL_LISTEN", listen.to_string()),
        // Behind a balancer: the client address is the last X-Forwarded-For entry.
        ("UPHUB_SECKILL_TRUST_FORWARDED_FOR", "1".into()),
        ("UPHUB_SECKILL_BUYER_RATE_PER_SEC", buyer_rate.to_string()),
        ("UPHUB_SECKILL_BUYER_BURST", buyer_burst.to_string()),
        (
            "UPHUB_SECKILL_IP_RATE_PER_SEC",
            (buyer_rate * 4.0).to_string(),
        ),
        ("UPHUB_SECKILL_IP_BURST", (buyer_burst * 4.0).to_string()),
        ("UPHUB_CHANNEL_SYNC_EVERY_MS", "60000".into()),
        ("RUST_LOG", "warn".into()),
    ];
    let spawn = |role: &str| {
        let mut c = Command::new(bin);
        c.arg(role).stdout(Stdio::null()).stderr(Stdio::inherit());
        for (k, v) in &envs {
            c.env(k, v);
        }
        c.spawn()
    };
    let children = Children(vec![spawn("seckill")?, spawn("worker")?]);
    let edge_pid = children.0[0].id();
    let worker_pid = children.0[1].id();
    // Ready: the edge answers and the worker consumes the ticket queue.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Conn::open(listen).await
            && let Ok((200, _)) = c
                .call(format!("GET /readyz HTTP/1.1\r\nHost: {listen}\r\n\r\n").as_bytes())
                .await
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the edge did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let amqp = lapin::Connection::connect(&cfg.amqp_url, Default::default()).await?;
    let ch = amqp.create_channel().await?;
    loop {
        let q = ch
            .queue_declare(
                core.queue(seckill::TICKET_QUEUE).as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await;
        if q.as_ref().is_ok_and(|q| q.consumer_count() > 0) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the worker did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let gid = |id: Uuid| uphub_domain::gid::encode("SeckillCampaign", id);

    // ---- load phase (after a short warm-up on its own campaign)
    let edge = |campaign: Uuid, duration: Duration, offset: usize| {
        drive(
            listen.to_string(),
            "/seckill/buy",
            gid(campaign),
            tokens.clone(),
            conns,
            duration,
            offset,
        )
    };
    edge(warmup.id, Duration::from_secs(2), 10_000_000).await?;
    let redis_pid = pid_of("redis-server");
    let cpu0 = (
        cpu_secs(edge_pid),
        cpu_secs(worker_pid),
        redis_pid.map(cpu_secs).unwrap_or(0.0),
        cpu_secs(std::process::id()),
    );
    let (mut http, elapsed) = edge(sale.id, Duration::from_secs(secs), 0).await?;
    let cpu1 = (
        cpu_secs(edge_pid),
        cpu_secs(worker_pid),
        redis_pid.map(cpu_secs).unwrap_or(0.0),
        cpu_secs(std::process::id()),
    );

    // ---- every QUEUED ticket to its outcome (long-poll), then Postgres' count
    let queued = std::mem::take(&mut http.queued);
    let queued_n = queued.len();
    let work = Arc::new(std::sync::Mutex::new(queued));
    let mut pollers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (work, tokens, listen) = (work.clone(), tokens.clone(), listen.to_string());
        pollers.spawn(async move {
            let mut conn = Conn::open(&listen).await?;
            let mut won = 0usize;
            loop {
                let Some((b, id)) = work.lock().unwrap().pop() else {
                    break;
                };
                loop {
                    let req = format!(
                        "GET /seckill/tickets/{id}/wait?timeoutMs=10000 HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer {}\r\n\r\n",
                        tokens[b]
                    );
                    let (_, body) = conn.call(req.as_bytes()).await?;
                    match json_str(&body, "status") {
                        Some("QUEUED") => continue,
                        Some("WON") => won += 1,
                        _ => {}
                    }
                    break;
                }
            }
            Ok::<_, anyhow::Error>(won)
        });
    }
    while let Some(r) = pollers.join_next().await {
        http.won += r??;
    }
    let scalar = |sql: &str, v: Vec<sea_orm::Value>| {
        let core = core.clone();
        let sql = sql.to_string();
        async move {
            core.db
                .query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, &sql, v))
                .await?
                .ok_or_else(|| anyhow::anyhow!("no row"))?
                .try_get_by_index::<i64>(0)
                .map_err(anyhow::Error::from)
        }
    };
    let orders = scalar(
        "SELECT count(*) FROM orders WHERE tenant_id = $1 AND campaign = $2",
        vec![t.into(), format!("seckill-{}", sale.id).into()],
    )
    .await?;
    let won_db = scalar(
        "SELECT count(*) FROM seckill_tickets WHERE tenant_id = $1 AND campaign_id = $2 AND status = 'WON'",
        vec![t.into(), sale.id.into()],
    )
    .await?;
    let reserved = scalar(
        "SELECT reserved::bigint FROM inventory_levels WHERE tenant_id = $1 AND sku_id = $2",
        vec![t.into(), skus[0].into()],
    )
    .await?;
    // One writer transaction stamps all its tickets with the same now().
    let batches = scalar(
        "SELECT count(DISTINCT decided_at) FROM seckill_tickets WHERE tenant_id = $1 AND campaign_id = $2",
        vec![t.into(), sale.id.into()],
    )
    .await?;
    drop(children);

    // ---- raw EVALSHA of the admission script: the sold-out campaign, the path most requests take
    let mut conn = core.redis.clone();
    let sha: String = seckill::admission_script()
        .prepare_invoke()
        .load_async(&mut conn)
        .await?;
    let keys = seckill::admission_keys(&core, tenant, sale.id, "10.0.0.1", buyer_ids[0]);
    let mut args: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        "6379".into(),
        "-c".into(),
        conns.to_string(),
        "-n".into(),
        "500000".into(),
        "-q".into(),
        "EVALSHA".into(),
        sha,
        "7".into(),
    ];
    args.extend(keys.iter().cloned());
    args.extend([
        buyer_ids[0].to_string(),
        "bench-__rand_int__".into(),
        Uuid::now_v7().to_string(),
        "1".into(),
        "1000000".into(),
        "1000000".into(),
        "1000000".into(),
        "1000000".into(),
    ]);
    let raw_evalsha: f64 = match Command::new("redis-benchmark").args(&args).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[1] == "requests")
            .and_then(|w| w[0].parse().ok())
            .unwrap_or(0.0),
        Err(e) => {
            eprintln!("redis-benchmark: {e}");
            0.0
        }
    };

    // ---- the same buyers against the Postgres-only path: in process (no HTTP: favoured), then
    // behind HTTP like the edge.
    let pg_path = |sku: Uuid, campaign: Uuid| PgPath {
        core: core.clone(),
        tenant,
        sku,
        wh,
        campaign,
        quota: quota as usize,
        started: Instant::now(),
        requests: Arc::new(AtomicUsize::new(0)),
        won: Arc::new(AtomicUsize::new(0)),
        sold_out_at: Arc::new(std::sync::Mutex::new(None)),
    };
    let inproc = pg_path(skus[1], pg_campaign.id);
    let (mut pg, pg_elapsed) = {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let counter = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..conns {
            let (p, counter, buyer_ids) = (inproc.clone(), counter.clone(), buyer_ids.clone());
            tasks.spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let t0 = Instant::now();
                    match p
                        .buy(buyer_ids[n % buyer_ids.len()], &format!("p{n}"))
                        .await?
                    {
                        "WON" => tally.won += 1,
                        "SOLD_OUT" => tally.sold_out += 1,
                        _ => tally.limit += 1,
                    }
                    tally.lat_us.push(t0.elapsed().as_micros() as u32);
                    tally.requests += 1;
                }
                Ok::<_, anyhow::Error>(tally)
            });
        }
        let mut total = Tally::default();
        while let Some(r) = tasks.join_next().await {
            total.merge(r??);
        }
        (total, started.elapsed())
    };
    let over_http = pg_path(skus[3], pg_http_campaign.id);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let pg_addr = listener.local_addr()?.to_string();
    let server = tokio::spawn(
        axum::serve(
            listener,
            axum::Router::new()
                .route("/pg/buy", axum::routing::post(pg_http))
                .with_state(over_http.clone()),
        )
        .into_future(),
    );
    let (mut pgh, pgh_elapsed) = drive(
        pg_addr,
        "/pg/buy",
        gid(pg_http_campaign.id),
        tokens.clone(),
        conns,
        Duration::from_secs(secs),
        0,
    )
    .await?;
    server.abort();

    // ---- report
    let rps = http.requests as f64 / elapsed.as_secs_f64();
    let pg_rps = pg.requests as f64 / pg_elapsed.as_secs_f64();
    let pgh_rps = pgh.requests as f64 / pgh_elapsed.as_secs_f64();
    let (p50, p99) = (http.pct(0.50), http.pct(0.99));
    let row = |name: &str, rps: f64, t: &mut Tally| {
        println!(
            "{name:<50} {rps:>10.0} {:>8.2} {:>8.2}",
            t.pct(0.50),
            t.pct(0.99)
        );
    };
    let cpu = |a: f64, b: f64| (b - a) / elapsed.as_secs_f64();
    println!(
        "UpHub flash-sale benchmark: {buyers_n} buyers, quota {quota}, {conns} connections, {secs}s per path, database {db_name}"
    );
    println!();
    println!(
        "{:<50} {:>10} {:>8} {:>8}",
        "path", "requests/s", "p50 ms", "p99 ms"
    );
    println!(
        "{:<50} {rps:>10.0} {p50:>8.2} {p99:>8.2}",
        "edge over HTTP (POST /seckill/buy)"
    );
    row(
        "Postgres-only over HTTP (same client, same JWT)",
        pgh_rps,
        &mut pgh,
    );
    row("Postgres-only in process (no HTTP)", pg_rps, &mut pg);
    for (name, p) in [("over HTTP", &over_http), ("in process", &inproc)] {
        if let Some((r, t)) = p.selling_rate() {
            println!(
                "{:<50} {r:>10.0}   ({quota} won in {:.2} s)",
                format!("Postgres-only {name}, until sold out"),
                t.as_secs_f64()
            );
        }
    }
    println!(
        "{:<50} {:>10.0}",
        "raw redis-benchmark EVALSHA (sold-out path)", raw_evalsha
    );
    println!();
    println!(
        "edge: {} requests: {} queued, {} sold out, {} limit exceeded, {} rate limited, {} other",
        http.requests, queued_n, http.sold_out, http.limit, http.rate_limited, http.other
    );
    println!(
        "tickets won {} (Postgres: {won_db}), orders created {orders}, units reserved {reserved}, in {batches} writer transactions",
        http.won
    );
    for (name, t) in [("over HTTP", &pgh), ("in process", &pg)] {
        println!(
            "Postgres-only {name}: {} requests: {} won, {} sold out, {} limit exceeded, {} other",
            t.requests, t.won, t.sold_out, t.limit, t.other
        );
    }
    println!(
        "CPU during the edge phase (cores): edge {:.2}, worker {:.2}, redis {:.2}, load generator {:.2}",
        cpu(cpu0.0, cpu1.0),
        cpu(cpu0.1, cpu1.1),
        cpu(cpu0.2, cpu1.2),
        cpu(cpu0.3, cpu1.3)
    );
    println!();
    println!(
        "ratio edge / raw EVALSHA:                          {:.2}  (target >= 0.25)",
        rps / raw_evalsha.max(1.0)
    );
    println!(
        "ratio edge / Postgres-only over HTTP:              {:.1}  (target >= 10)",
        rps / pgh_rps.max(1.0)
    );
    println!(
        "ratio edge / Postgres-only in process:             {:.1}",
        rps / pg_rps.max(1.0)
    );
    if let Some((r, _)) = over_http.selling_rate() {
        println!(
            "ratio edge / Postgres-only over HTTP, selling:     {:.1}  (while the hot row had units)",
            rps / r.max(1.0)
        );
    }
    println!(
        "p99 {p99:.2} ms (target <= 20); won {} (target exactly {quota}); orders = won: {}",
        http.won,
        orders as usize == http.won && won_db as usize == http.won
    );
    let ok = http.won as i64 == quota && orders == quota && won_db == quota && http.other == 0;

    // Redis keys of this instance.
    let pattern = format!("uphub:{db_name}:*");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
    }
    anyhow::ensure!(
        ok,
        "the sale did not end with exactly {quota} tickets won and orders"
    );
    Ok(())
}
