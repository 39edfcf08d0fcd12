//! bench/checkout: own-channel orders placed AND paid per second, end to end over HTTP. A fresh
//! database, the release `uphub serve` and `uphub worker` as child processes, the WeChat Pay mock
//! and the mini-program login mock in this process. Buyers sign in the way the mini-program does
//! (`buyerLoginWechat` with a code2Session code) and add an address; then, at CONNECTIONS
//! keep-alive connections for DURATION seconds, each cycle is what a buyer's app does:
//! `orderPlace` (idempotency key) → `paymentCreate` (WeChat JSAPI: prepay at the mock, paySign)
//! → the mock platform sends the signed, encrypted TRANSACTION.SUCCESS notification to
//! `/pay/wechat/{tenant}` → PAID. Only orders Postgres shows PAID are counted. In the same run:
//! the same client doing `buyerMe` and `orderPlace` alone (baselines), then SHOPPERS distinct
//! buyers racing to buy and pay one unit each of a SKU with UNITS on hand.
//! Run with bench/checkout/run.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use uphub_bench_http::Conn;
use uphub_payments::identity_mock::{IdentityMock, IdentityMockConfig, MiniApp};
use uphub_payments::mock::{DevKeys, PayMock, PayMockConfig, WechatMerchant};
use uphub_payments::wechatpay::ApiV3Key;
use uuid::Uuid;

const APIV3: &str = "0123456789abcdef0123456789abcdef";
const PLATFORM_SERIAL: &str = "PLATFORM_SERIAL_BENCH";
const MCHID: &str = "1900009999";
const WX_APPID: &str = "wx-bench-mini";
const WX_SECRET: &str = "wx-bench-secret";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `data.<field>` of a mutation payload, failing on userErrors.
fn payload<'a>(v: &'a Value, field: &str) -> anyhow::Result<&'a Value> {
    let p = &v["data"][field];
    let errors = &p["userErrors"];
    anyhow::ensure!(
        errors.is_null() || errors.as_array().is_some_and(Vec::is_empty),
        "{field}: {errors}"
    );
    Ok(p)
}

fn text(v: &Value) -> anyhow::Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("expected a string, got {v}"))
}

// ------------------------------------------------------------------ stats ---

#[derive(Default)]
struct Tally {
    done: usize,
    sold_out: usize,
    errors: usize,
    first_error: Option<String>,
    /// The whole unit of work (a cycle, or one request for the baselines).
    lat_us: Vec<u32>,
    /// Cycle steps: orderPlace, paymentCreate, the notification until acknowledged.
    place_us: Vec<u32>,
    pay_us: Vec<u32>,
    notify_us: Vec<u32>,
    paid_orders: Vec<Uuid>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.done += o.done;
        self.sold_out += o.sold_out;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.lat_us.extend(o.lat_us);
        self.place_us.extend(o.place_us);
        self.pay_us.extend(o.pay_us);
        self.notify_us.extend(o.notify_us);
        self.paid_orders.extend(o.paid_orders);
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1));
    v.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

// ------------------------------------------------------------ CPU and pids ---

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

/// CPU seconds of every process whose command name is `comm` (all Postgres backends, say).
fn cpu_of_comm(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .map(cpu_secs)
        .sum()
}

/// (busy, total) jiffies of the whole machine.
fn machine_jiffies() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

#[derive(Clone, Copy)]
struct CpuSnap {
    serve: f64,
    worker: f64,
    bench: f64,
    postgres: f64,
    redis: f64,
    rabbit: f64,
    busy: f64,
    total: f64,
}

fn snap(serve: u32, worker: u32) -> CpuSnap {
    let (busy, total) = machine_jiffies();
    CpuSnap {
        serve: cpu_secs(serve),
        worker: cpu_secs(worker),
        bench: cpu_secs(std::process::id()),
        postgres: cpu_of_comm("postgres"),
        redis: cpu_of_comm("redis-server"),
        rabbit: cpu_of_comm("beam.smp"),
        busy,
        total,
    }
}

fn cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// Cores the whole machine was busy between two snapshots.
fn busy_cores(a: &CpuSnap, b: &CpuSnap) -> f64 {
    cpus() * (b.busy - a.busy) / (b.total - a.total).max(1.0)
}

/// Mean milliseconds of one RSA-2048 SHA-256 PKCS#1 v1.5 signature with the code the server
/// and the mock platform sign with, on one core, measured now (a machine's speed varies by day).
fn rsa_sign_ms(key: &uphub_payments::keys::PrivateKey) -> anyhow::Result<f64> {
    let message = [b'x'; 256];
    for _ in 0..20 {
        key.sign_sha256_base64(&message)?;
    }
    let n = 300;
    let t = Instant::now();
    for _ in 0..n {
        key.sign_sha256_base64(&message)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0 / f64::from(n))
}

fn cpu_line(a: CpuSnap, b: CpuSnap, secs: f64) -> String {
    let c = |x: f64, y: f64| (y - x) / secs;
    let busy = busy_cores(&a, &b);
    let ours = c(a.serve, b.serve)
        + c(a.worker, b.worker)
        + c(a.postgres, b.postgres)
        + c(a.redis, b.redis)
        + c(a.rabbit, b.rabbit)
        + c(a.bench, b.bench);
    format!(
        "serve {:.2}, worker {:.2}, postgres {:.2}, redis {:.2}, rabbitmq {:.2}, bench (load + mocks) {:.2}, anything else {:.2}; machine busy {:.0}%",
        c(a.serve, b.serve),
        c(a.worker, b.worker),
        c(a.postgres, b.postgres),
        c(a.redis, b.redis),
        c(a.rabbit, b.rabbit),
        c(a.bench, b.bench),
        (busy - ours).max(0.0),
        100.0 * busy / cpus()
    )
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

// -------------------------------------------------------------- the buyer ---

#[derive(Clone)]
struct Buyer {
    token: String,
    address: String,
}

const PLACE: &str = "mutation($i: OrderPlaceInput!) { orderPlace(input: $i) {
    order { id status total { amount currency } paymentDueAt }
    userErrors { field code message } } }";

const PAY: &str = "mutation($i: PaymentCreateInput!) { paymentCreate(input: $i) {
    payment { id outTradeNo amount { amount } wechat { appId timeStamp nonceStr package signType paySign } }
    userErrors { field code message } } }";

const ME: &str = "{ buyerMe { id hasWechat } }";

enum Placed {
    Order(String),
    SoldOut,
}

async fn place(conn: &mut Conn, b: &Buyer, sku: &str, key: &str) -> anyhow::Result<Placed> {
    let v = conn
        .gql(
            Some(&b.token),
            PLACE,
            json!({"i": {"channel": "WECHAT_MINI", "lines": [{"skuId": sku, "quantity": 1}],
                         "addressId": b.address, "idempotencyKey": key}}),
        )
        .await?;
    let p = &v["data"]["orderPlace"];
    if p["userErrors"][0]["code"] == "SOLD_OUT" {
        return Ok(Placed::SoldOut);
    }
    let p = payload(&v, "orderPlace")?;
    anyhow::ensure!(p["order"]["status"] == "PENDING_PAYMENT", "{v}");
    Ok(Placed::Order(text(&p["order"]["id"])?))
}

/// paymentCreate (WeChat JSAPI) → the pay sheet's parameters; returns the out_trade_no.
async fn pay_create(conn: &mut Conn, b: &Buyer, order: &str, key: &str) -> anyhow::Result<String> {
    let v = conn
        .gql(
            Some(&b.token),
            PAY,
            json!({"i": {"orderId": order, "provider": "WECHAT_PAY", "idempotencyKey": key}}),
        )
        .await?;
    let p = payload(&v, "paymentCreate")?;
    anyhow::ensure!(
        p["payment"]["wechat"]["paySign"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "no paySign: {v}"
    );
    text(&p["payment"]["outTradeNo"])
}

fn order_uuid(gid: &str) -> anyhow::Result<Uuid> {
    let raw = uphub_domain::gid::decode("Order", gid)
        .ok_or_else(|| anyhow::anyhow!("bad order id {gid}"))?;
    Ok(Uuid::parse_str(&raw)?)
}

/// One buyer's whole checkout: place → pay → the platform's notification acknowledged.
async fn cycle(
    conn: &mut Conn,
    mock: &PayMock,
    b: &Buyer,
    sku: &str,
    n: usize,
    t: &mut Tally,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let order = match place(conn, b, sku, &format!("place-{n}")).await? {
        Placed::Order(o) => o,
        Placed::SoldOut => {
            t.sold_out += 1;
            return Ok(());
        }
    };
    let t1 = Instant::now();
    let out_trade_no = pay_create(conn, b, &order, &format!("pay-{n}")).await?;
    let t2 = Instant::now();
    // The buyer pays in the WeChat sheet; the platform notifies our callback URL.
    let report = mock
        .pay(&out_trade_no)
        .await
        .map_err(|e| anyhow::anyhow!("mock pay: {e}"))?;
    anyhow::ensure!(
        report.delivered,
        "notification not acknowledged: {report:?}"
    );
    let t3 = Instant::now();
    let us = |a: Instant, b: Instant| (b - a).as_micros() as u32;
    t.place_us.push(us(t0, t1));
    t.pay_us.push(us(t1, t2));
    t.notify_us.push(us(t2, t3));
    t.lat_us.push(us(t0, t3));
    t.paid_orders.push(order_uuid(&order)?);
    t.done += 1;
    Ok(())
}

#[derive(Clone, Copy)]
enum Work {
    Checkout,
    PlaceOnly,
    Me,
}

/// `conns` keep-alive connections run `work` until `duration` has passed, buyer after buyer.
#[allow(clippy::too_many_arguments)]
async fn drive(
    addr: &str,
    mock: &PayMock,
    buyers: &Arc<Vec<Buyer>>,
    sku: &str,
    work: Work,
    conns: usize,
    duration: Duration,
    counter: &Arc<AtomicUsize>,
) -> anyhow::Result<(Tally, Duration)> {
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(Conn::open(addr).await?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in opened {
        let (mock, buyers, sku, counter) = (
            mock.clone(),
            buyers.clone(),
            sku.to_string(),
            counter.clone(),
        );
        tasks.spawn(async move {
            let mut t = Tally::default();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let b = &buyers[n % buyers.len()];
                let r = match work {
                    Work::Checkout => cycle(&mut conn, &mock, b, &sku, n, &mut t).await,
                    Work::PlaceOnly => {
                        let t0 = Instant::now();
                        match place(&mut conn, b, &sku, &format!("place-{n}")).await {
                            Ok(Placed::Order(_)) => {
                                t.lat_us.push(t0.elapsed().as_micros() as u32);
                                t.done += 1;
                                Ok(())
                            }
                            Ok(Placed::SoldOut) => Err(anyhow::anyhow!("sold out")),
                            Err(e) => Err(e),
                        }
                    }
                    Work::Me => {
                        let t0 = Instant::now();
                        let r = conn.gql(Some(&b.token), ME, json!({})).await;
                        r.and_then(|v| {
                            anyhow::ensure!(v["data"]["buyerMe"]["hasWechat"] == true, "{v}");
                            t.lat_us.push(t0.elapsed().as_micros() as u32);
                            t.done += 1;
                            Ok(())
                        })
                    }
                };
                if let Err(e) = r {
                    t.error(e);
                    // The connection may be out of step after a failure.
                    match Conn::open(&conn.host).await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    }
                }
            }
            t
        });
    }
    let mut total = Tally::default();
    while let Some(r) = tasks.join_next().await {
        total.merge(r?);
    }
    Ok((total, started.elapsed()))
}

// ------------------------------------------------------------------- main ---

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let db_name = format!(
        "uphub_bench_checkout_{}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let admin = sea_orm::Database::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
        .await?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
    let result = run(&db_name, &url).await;
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await;
    // This instance's Redis keys.
    if let Ok(client) =
        redis::Client::open(env_or("REDIS_URL", "redis://127.0.0.1:6379/0".to_string()))
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("uphub:{db_name}:*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
        }
    }
    if let Err(e) = &result {
        eprintln!("bench-checkout: {e:#}");
    }
    result
}

async fn run(db_name: &str, url: &str) -> anyhow::Result<()> {
    let secs: u64 = env_or("DURATION", 10);
    let conns: usize = env_or("CONNECTIONS", 32);
    let buyers_n: usize = env_or("BUYERS", 256);
    let shoppers: usize = env_or("SHOPPERS", 200);
    let units: i64 = env_or("UNITS", 10);
    let listen: String = env_or("BENCH_LISTEN", "127.0.0.1:18082".to_string());
    let bin: String = env_or("UPHUB_BIN", "target/release/uphub".to_string());
    let db_pool: u32 = env_or("DB_POOL", 32);
    let redis_url: String = env_or("REDIS_URL", "redis://127.0.0.1:6379/0".to_string());
    let amqp_url: String = env_or(
        "AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
    );

    let db = sea_orm::Database::connect(url).await?;
    uphub_migrations::migrate(&db).await?;

    // ---- the platforms: WeChat Pay (prepay, signed answers, signed + encrypted notifications)
    // and mini-program login (code2Session), in this process.
    let keys = DevKeys::generate()?;
    let mut pay_cfg = PayMockConfig::new(
        keys.wechat_platform.clone(),
        PLATFORM_SERIAL,
        keys.alipay_platform.clone(),
    );
    pay_cfg.wechat_merchants.push(WechatMerchant {
        mchid: MCHID.into(),
        serial_no: "MERCHANT_SERIAL".into(),
        public_key: keys.wechat_merchant.public_key(),
        apiv3_key: ApiV3Key::new(APIV3)?,
    });
    let mock = PayMock::new(pay_cfg);
    let pay_url = format!("http://{}", mock.spawn().await?);
    let mut id_cfg = IdentityMockConfig::new(keys.alipay_platform.clone());
    id_cfg.wechat_apps.push(MiniApp {
        appid: WX_APPID.into(),
        secret: WX_SECRET.into(),
    });
    let identity = IdentityMock::new(id_cfg);
    let identity_url = format!("http://{}", identity.spawn().await?);

    // ---- the two roles under test, as child processes of the release binary
    let envs: Vec<(&str, String)> = vec![
        ("DATABASE_URL", url.to_string()),
        ("UPHUB_NAMESPACE", db_name.to_string()),
        ("REDIS_URL", redis_url.clone()),
        ("AMQP_URL", amqp_url.clone()),
        ("UPHUB_LISTEN", listen.clone()),
        ("UPHUB_DB_POOL", db_pool.to_string()),
        ("UPHUB_QUEUE_EXPIRES_MS", "600000".into()),
        // Tokens must outlive the run; throttles must not skew it (as in bench/api).
        ("UPHUB_ACCESS_TOKEN_TTL_SECS", "3600".into()),
        ("UPHUB_COST_RATE_PER_SEC", "100000000".into()),
        ("UPHUB_COST_BURST", "100000000".into()),
        ("UPHUB_IP_RATE_PER_SEC", "100000000".into()),
        ("UPHUB_IP_BURST", "100000000".into()),
        ("UPHUB_LOGIN_ATTEMPTS_PER_IP_PER_MIN", "100000000".into()),
        ("UPHUB_CHANNEL_SYNC_EVERY_MS", "60000".into()),
        ("RUST_LOG", "warn".into()),
    ];
    let spawn = |role: &str| {
        let mut c = Command::new(&bin);
        c.arg(role).stdout(Stdio::null()).stderr(Stdio::inherit());
        for (k, v) in &envs {
            c.env(k, v);
        }
        c.spawn()
    };
    let children = Children(vec![spawn("serve")?, spawn("worker")?]);
    let (serve_pid, worker_pid) = (children.0[0].id(), children.0[1].id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut c) = Conn::open(&listen).await
            && let Ok((200, _)) = c
                .call(format!("GET /readyz HTTP/1.1\r\nHost: {listen}\r\n\r\n").as_bytes())
                .await
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "uphub serve did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ---- the store, set up the way staff do it: GraphQL with the owner's token
    let mut c = Conn::open(&listen).await?;
    let slug = format!("ck{}", &db_name[db_name.len() - 8..]);
    let v = c
        .gql(
            None,
            "mutation($i: TenantSignupInput!) { tenantSignup(input: $i) { accessToken tenant { id } userErrors { code message } } }",
            json!({"i": {"name": "Checkout bench", "slug": slug, "ownerEmail": "owner@bench.test",
                         "ownerPassword": "bench-password-123"}}),
        )
        .await?;
    let staff = text(&payload(&v, "tenantSignup")?["accessToken"])?;
    let staff = Some(staff.as_str());
    let v = c
        .gql(
            staff,
            "mutation($i: SalesChannelCreateInput!) { salesChannelCreate(input: $i) { salesChannel { id } userErrors { code message } } }",
            json!({"i": {"type": "WECHAT_MINI", "shopId": "bench-mini", "name": "小程序"}}),
        )
        .await?;
    payload(&v, "salesChannelCreate")?;
    let v = c
        .gql(
            staff,
            "mutation($i: PaymentSettingsSetInput!) { paymentSettingsSet(input: $i) { settings { wechatMchid } userErrors { field code message } } }",
            json!({"i": {
                "notifyBaseUrl": format!("http://{listen}"),
                "wechat": {"mchid": MCHID, "appid": WX_APPID, "merchantSerialNo": "MERCHANT_SERIAL",
                           "merchantPrivateKeyPem": keys.wechat_merchant.to_pkcs8_pem()?,
                           "apiV3Key": APIV3, "platformSerial": PLATFORM_SERIAL,
                           "platformPublicKeyPem": keys.wechat_platform.public_key().to_pem()?,
                           "baseUrl": pay_url}}}),
        )
        .await?;
    payload(&v, "paymentSettingsSet")?;
    let v = c
        .gql(
            staff,
            "mutation($i: StorefrontLoginSettingsSetInput!) { storefrontLoginSettingsSet(input: $i) { settings { wechatConfigured } userErrors { field code message } } }",
            json!({"i": {"wechat": {"appId": WX_APPID, "appSecret": WX_SECRET, "baseUrl": identity_url}}}),
        )
        .await?;
    payload(&v, "storefrontLoginSettingsSet")?;
    let v = c
        .gql(
            staff,
            "mutation($i: WarehouseCreateInput!) { warehouseCreate(input: $i) { warehouse { id } userErrors { code message } } }",
            json!({"i": {"code": "WH-BENCH", "name": "Main"}}),
        )
        .await?;
    let wh = text(&payload(&v, "warehouseCreate")?["warehouse"]["id"])?;
    // [0] the checkout SKU (plenty), [1] the race SKU (UNITS on hand).
    let mut skus = Vec::new();
    for (code, qty) in [("TEE-BENCH", 10_000_000i64), ("TEE-RACE", units)] {
        let v = c
            .gql(
                staff,
                "mutation($i: ProductCreateInput!) { productCreate(input: $i) { product { skus { id } } userErrors { code message } } }",
                json!({"i": {"title": format!("Tee {code}"), "kind": "PHYSICAL", "status": "ACTIVE",
                             "skus": [{"code": code, "name": "M", "weightGrams": 200,
                                       "price": {"amount": "99.00", "currency": "CNY"}}]}}),
            )
            .await?;
        let sku = text(&payload(&v, "productCreate")?["product"]["skus"][0]["id"])?;
        let v = c
            .gql(
                staff,
                "mutation($i: InventorySetInput!) { inventorySet(input: $i) { userErrors { code message } } }",
                json!({"i": {"skuId": sku, "warehouseId": wh, "quantity": qty, "changeFrom": 0}}),
            )
            .await?;
        payload(&v, "inventorySet")?;
        skus.push(sku);
    }

    // ---- buyers sign in as the mini-program does (wx.login code → buyerLoginWechat) and add
    // an address: BUYERS for the throughput phases, SHOPPERS others for the race.
    let n_all = buyers_n + shoppers;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (identity, next, listen, slug) =
            (identity.clone(), next.clone(), listen.clone(), slug.clone());
        tasks.spawn(async move {
            let mut c = Conn::open(&listen).await?;
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n_all {
                    break;
                }
                let code = identity.issue_wechat_code(&format!("o-bench-{i:06}"), None);
                let v = c
                    .gql(
                        None,
                        "mutation($i: BuyerLoginWechatInput!) { buyerLoginWechat(input: $i) { accessToken userErrors { field code message } } }",
                        json!({"i": {"tenantSlug": slug, "code": code}}),
                    )
                    .await?;
                let token = text(&payload(&v, "buyerLoginWechat")?["accessToken"])?;
                let v = c
                    .gql(
                        Some(&token),
                        "mutation($i: BuyerAddressCreateInput!) { buyerAddressCreate(input: $i) { address { id } userErrors { code message } } }",
                        json!({"i": {"receiverName": "张三", "receiverPhone": format!("138{:08}", i),
                                     "province": "浙江省", "city": "杭州市", "district": "西湖区",
                                     "detail": format!("文三路 {} 号", i + 1), "isDefault": true}}),
                    )
                    .await?;
                let address = text(&payload(&v, "buyerAddressCreate")?["address"]["id"])?;
                out.push((i, Buyer { token, address }));
            }
            Ok::<_, anyhow::Error>(out)
        });
    }
    let mut all: Vec<(usize, Buyer)> = Vec::with_capacity(n_all);
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    all.sort_by_key(|(i, _)| *i);
    let mut all: Vec<Buyer> = all.into_iter().map(|(_, b)| b).collect();
    let racers: Vec<Buyer> = all.split_off(buyers_n);
    let buyers = Arc::new(all);

    // ---- throughput phases, all at CONNECTIONS, each after the last one's writes settled
    let counter = Arc::new(AtomicUsize::new(0));
    let phase = |work: Work, sku: String, d: Duration| {
        let (mock, buyers, counter, listen) = (
            mock.clone(),
            buyers.clone(),
            counter.clone(),
            listen.clone(),
        );
        async move { drive(&listen, &mock, &buyers, &sku, work, conns, d, &counter).await }
    };
    let (warm, _) = phase(Work::Checkout, skus[0].clone(), Duration::from_secs(2)).await?;
    anyhow::ensure!(
        warm.errors == 0,
        "warm-up failed: {}",
        warm.first_error.unwrap_or_default()
    );
    let secs_f = secs as f64;
    // Postgres transactions (committed + rolled back) of this database: per order, a count of
    // what a cycle costs the database (the statistics lag by up to a second; 1 s pauses let
    // them catch up).
    let xacts = || {
        let db = db.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            db.query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
            ))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no stats row"))?
            .try_get_by_index::<i64>(0)
            .map_err(anyhow::Error::from)
        }
    };
    let x0 = xacts().await?;
    let c0 = snap(serve_pid, worker_pid);
    let (mut ck, ck_elapsed) =
        phase(Work::Checkout, skus[0].clone(), Duration::from_secs(secs)).await?;
    let c1 = snap(serve_pid, worker_pid);
    let x1 = xacts().await?;
    let c1b = snap(serve_pid, worker_pid);
    let (mut po, po_elapsed) =
        phase(Work::PlaceOnly, skus[0].clone(), Duration::from_secs(secs)).await?;
    let c2 = snap(serve_pid, worker_pid);
    let x2 = xacts().await?;
    let c2b = snap(serve_pid, worker_pid);
    let (mut me, me_elapsed) = phase(Work::Me, skus[0].clone(), Duration::from_secs(secs)).await?;
    let c3 = snap(serve_pid, worker_pid);
    // The protocol's floor: WeChat Pay v3 signs four times per cycle (the server: the prepay
    // request and paySign; the platform: its answer and the notification), measured with
    // nothing else running.
    let sign_ms = rsa_sign_ms(&keys.wechat_merchant)?;

    // Postgres decides what counts: the cycles' orders that are PAID there.
    let scalar = |sql: &'static str, v: Vec<sea_orm::Value>| {
        let db = db.clone();
        async move {
            db.query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, v))
                .await?
                .ok_or_else(|| anyhow::anyhow!("no row"))?
                .try_get_by_index::<i64>(0)
                .map_err(anyhow::Error::from)
        }
    };
    let paid_pg = scalar(
        "SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'PAID' AND paid_at IS NOT NULL",
        vec![ck.paid_orders.clone().into()],
    )
    .await?;
    let payments_paid = scalar(
        "SELECT count(*) FROM payments WHERE order_id = ANY($1) AND status = 'PAID'",
        vec![ck.paid_orders.clone().into()],
    )
    .await?;

    // ---- the race: SHOPPERS distinct buyers, one connection each, released at once
    let race_sku = skus[1].clone();
    let mut race_conns = Vec::with_capacity(racers.len());
    for _ in 0..racers.len() {
        race_conns.push(Conn::open(&listen).await?);
    }
    let gate = Arc::new(tokio::sync::Barrier::new(racers.len()));
    let race_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (b, mut conn)) in racers.into_iter().zip(race_conns).enumerate() {
        let (gate, mock, sku) = (gate.clone(), mock.clone(), race_sku.clone());
        tasks.spawn(async move {
            let mut t = Tally::default();
            gate.wait().await;
            if let Err(e) = cycle(&mut conn, &mock, &b, &sku, 1_000_000_000 + i, &mut t).await {
                t.error(e);
            }
            t
        });
    }
    let mut race = Tally::default();
    while let Some(r) = tasks.join_next().await {
        race.merge(r?);
    }
    let race_elapsed = race_started.elapsed();
    let race_uuid = Uuid::parse_str(
        &uphub_domain::gid::decode("Sku", &race_sku)
            .ok_or_else(|| anyhow::anyhow!("bad SKU id"))?,
    )?;
    let race_orders = scalar(
        "SELECT count(DISTINCT o.id) FROM orders o JOIN order_lines l ON l.tenant_id = o.tenant_id AND l.order_id = o.id
         WHERE l.sku_id = $1",
        vec![race_uuid.into()],
    )
    .await?;
    let race_paid = scalar(
        "SELECT count(DISTINCT o.id) FROM orders o JOIN order_lines l ON l.tenant_id = o.tenant_id AND l.order_id = o.id
         WHERE l.sku_id = $1 AND o.status = 'PAID'",
        vec![race_uuid.into()],
    )
    .await?;
    let sold = scalar(
        "SELECT coalesce(sum(l.quantity), 0)::bigint FROM orders o JOIN order_lines l ON l.tenant_id = o.tenant_id AND l.order_id = o.id
         WHERE l.sku_id = $1 AND o.status = 'PAID'",
        vec![race_uuid.into()],
    )
    .await?;
    let on_hand = scalar(
        "SELECT coalesce(sum(on_hand), 0)::bigint FROM inventory_levels WHERE sku_id = $1",
        vec![race_uuid.into()],
    )
    .await?;
    let reserved = scalar(
        "SELECT coalesce(sum(reserved), 0)::bigint FROM inventory_levels WHERE sku_id = $1",
        vec![race_uuid.into()],
    )
    .await?;
    drop(children);

    // ---- report
    let rate = paid_pg as f64 / ck_elapsed.as_secs_f64();
    let po_rate = po.done as f64 / po_elapsed.as_secs_f64();
    let me_rate = me.done as f64 / me_elapsed.as_secs_f64();
    let oversell = (sold - units).max(0);
    println!(
        "UpHub checkout benchmark: {conns} connections, {secs}s per phase, {buyers_n} buyers, race of {shoppers} shoppers for {units} units, database {db_name}"
    );
    println!();
    println!(
        "{:<58} {:>10} {:>8} {:>8}",
        "phase (same client, same buyers)", "per second", "p50 ms", "p99 ms"
    );
    println!(
        "{:<58} {rate:>10.0} {:>8.2} {:>8.2}",
        "orders placed + paid (orderPlace → paymentCreate → notify)",
        pct(&mut ck.lat_us, 0.50),
        pct(&mut ck.lat_us, 0.99)
    );
    for (name, v) in [
        ("  step: orderPlace", &mut ck.place_us),
        (
            "  step: paymentCreate (prepay at the mock, paySign)",
            &mut ck.pay_us,
        ),
        (
            "  step: pay notification signed, sent, acknowledged",
            &mut ck.notify_us,
        ),
    ] {
        println!(
            "{name:<58} {:>10} {:>8.2} {:>8.2}",
            "",
            pct(v, 0.50),
            pct(v, 0.99)
        );
    }
    println!(
        "{:<58} {po_rate:>10.0} {:>8.2} {:>8.2}",
        "baseline: orderPlace only",
        pct(&mut po.lat_us, 0.50),
        pct(&mut po.lat_us, 0.99)
    );
    println!(
        "{:<58} {me_rate:>10.0} {:>8.2} {:>8.2}",
        "baseline: buyerMe",
        pct(&mut me.lat_us, 0.50),
        pct(&mut me.lat_us, 0.99)
    );
    println!();
    println!(
        "checkout: {} cycles completed, {paid_pg} orders PAID in Postgres ({payments_paid} payments PAID), {} errors{}",
        ck.done,
        ck.errors,
        ck.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    for (name, t) in [("orderPlace only", &po), ("buyerMe", &me)] {
        println!(
            "{name}: {} requests, {} errors{}",
            t.done,
            t.errors,
            t.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
    println!(
        "CPU (cores) during checkout:        {}",
        cpu_line(c0, c1, secs_f)
    );
    println!(
        "CPU (cores) during orderPlace only: {}",
        cpu_line(c1b, c2, secs_f)
    );
    println!(
        "CPU (cores) during buyerMe:         {}",
        cpu_line(c2b, c3, secs_f)
    );
    let cpus = cpus();
    let cycle_ms = busy_cores(&c0, &c1) * 1000.0 / rate.max(1.0);
    println!(
        "CPU per placed + paid order (the whole machine): {cycle_ms:.1} ms; 500 orders/s on {cpus:.0} cores needs <= {:.1} ms",
        cpus * 1000.0 / 500.0
    );
    println!(
        "RSA-2048 signature now: {sign_ms:.2} ms; the 4 per cycle WeChat Pay v3 requires (2 server, 2 platform) take {:.1} ms, a ceiling of {:.0} orders/s on {cpus:.0} cores with nothing else done",
        4.0 * sign_ms,
        cpus * 1000.0 / (4.0 * sign_ms)
    );
    println!(
        "Postgres transactions per order (server and worker): placed + paid {:.1}, orderPlace only {:.1}",
        (x1 - x0) as f64 / ck.done.max(1) as f64,
        (x2 - x1) as f64 / po.done.max(1) as f64
    );
    println!();
    println!(
        "race: {shoppers} shoppers for {units} units in {:.2} s: {} paid, {} sold out, {} errors{}",
        race_elapsed.as_secs_f64(),
        race.done,
        race.sold_out,
        race.errors,
        race.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "race in Postgres: {race_orders} orders, {race_paid} PAID, units sold {sold}, oversell {oversell}; level on_hand {on_hand}, reserved {reserved}"
    );
    println!();
    println!(
        "ratio placed+paid / orderPlace only:  {:.2}",
        rate / po_rate.max(1.0)
    );
    println!(
        "ratio placed+paid / buyerMe:          {:.3}",
        rate / me_rate.max(1.0)
    );
    println!(
        "ratio placed+paid / peer (10 orders/s): {:.0}x   (target >= 500 orders/s: {})",
        rate / 10.0,
        if rate >= 500.0 { "met" } else { "NOT met" }
    );
    println!(
        "oversell {oversell} (peer: 19x; target 0: {})",
        if oversell == 0 { "met" } else { "NOT met" }
    );

    let race_consistent = race_orders == race.done as i64
        && race_paid == race.done as i64
        && sold == race.done as i64
        && reserved == sold
        && on_hand == units
        && race.done as i64 == units.min(shoppers as i64)
        && race.done + race.sold_out == shoppers;
    let unexpected = ck.errors + po.errors + me.errors + race.errors;
    anyhow::ensure!(unexpected == 0, "{unexpected} requests failed unexpectedly");
    anyhow::ensure!(oversell == 0, "oversold by {oversell} units");
    anyhow::ensure!(
        paid_pg as usize == ck.done && payments_paid as usize == ck.done,
        "{} cycles completed but Postgres shows {paid_pg} orders and {payments_paid} payments PAID",
        ck.done
    );
    anyhow::ensure!(
        race_consistent,
        "the race's answers, orders and stock level disagree"
    );
    Ok(())
}
