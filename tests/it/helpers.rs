use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uphub_api::App;
use uphub_services::Core;
use uphub_services::config::{Config, Env};
use uphub_services::outbox::RelayFaults;

/// A local SMTP sink that keeps every message it receives.
#[derive(Clone, Default)]
pub struct SmtpSink {
    pub mails: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    pub async fn start() -> (SmtpSink, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = SmtpSink::default();
        let mails = sink.mails.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let mails = mails.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let cmd = line.trim_end().to_ascii_uppercase();
                        if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                            let _ = w.write_all(b"250-sink\r\n250 8BITMIME\r\n").await;
                        } else if cmd == "DATA" {
                            let _ = w.write_all(b"354 go\r\n").await;
                            let mut body = String::new();
                            loop {
                                line.clear();
                                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" || line == ".\n" {
                                    break;
                                }
                                body.push_str(&line);
                            }
                            mails.lock().unwrap().push(body);
                            let _ = w.write_all(b"250 queued\r\n").await;
                        } else if cmd == "QUIT" {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            let _ = w.write_all(b"250 ok\r\n").await;
                        }
                    }
                });
            }
        });
        (sink, port)
    }

    pub fn count(&self) -> usize {
        self.mails.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<String> {
        self.mails.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            if self.count() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.all()
    }
}

pub struct TestTenant {
    pub slug: String,
    pub token: String,
    pub refresh: String,
    pub owner_email: String,
}

pub struct TestApp {
    pub addr: String,
    pub core: Core,
    pub sink: SmtpSink,
    pub http: reqwest::Client,
    pub a: TestTenant,
    pub b: TestTenant,
    worker_stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.worker_stop.take() {
            let _ = tx.send(true);
        }
    }
}

pub const PASSWORD: &str = "correct-horse-battery";

pub struct Options {
    pub env: Env,
    pub tweak: fn(&mut Config),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env: Env::Dev,
            tweak: |_| {},
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn create_database() -> (String, String) {
    use sea_orm::ConnectionTrait;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The creation time is in the name, so later runs can drop what earlier runs left behind.
    let db_name = format!(
        "uphub_t_{now}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let admin = sea_orm::Database::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let mut sweep = false;
    SWEPT.call_once(|| sweep = true);
    if sweep {
        drop_stale_databases(&admin, now).await;
    }
    admin
        .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
        .await
        .unwrap();
    admin.close().await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
    (db_name, url)
}

/// Drops test databases older than an hour (best effort: ones still in use are skipped).
async fn drop_stale_databases(admin: &sea_orm::DatabaseConnection, now: u64) {
    use sea_orm::ConnectionTrait;
    let Ok(rows) = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT datname FROM pg_database WHERE datname LIKE 'uphub\\_t\\_%'",
        ))
        .await
    else {
        return;
    };
    for r in rows {
        let Ok(name) = r.try_get::<String>("", "datname") else {
            continue;
        };
        let created = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if created + 3600 < now {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .await;
        }
    }
}

/// An HTTP client whose requests give up after two minutes: a request that never returns fails
/// its test instead of holding the whole run.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    let (db_name, url) = create_database().await;
    let (sink, smtp_port) = SmtpSink::start().await;
    let mut cfg = Config::from_env().unwrap();
    cfg.env = opts.env;
    cfg.database_url = url.clone();
    cfg.namespace = db_name.clone();
    cfg.redis_url = "redis://127.0.0.1:6379/0".into();
    cfg.amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f".into();
    cfg.smtp_url = Some(format!("smtp://127.0.0.1:{smtp_port}"));
    cfg.queue_expires_ms = Some(600_000);
    (opts.tweak)(&mut cfg);
    let db = sea_orm::Database::connect(url.as_str()).await.unwrap();
    uphub_migrations::migrate(&db).await.unwrap();
    db.close().await.unwrap();
    let core = Core::connect(cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let app = App::new(core.clone());
    tokio::spawn(uphub_api::serve(app, listener, std::future::pending()));
    let http = http_client();
    let mut t = TestApp {
        addr,
        core,
        sink,
        http,
        a: empty_tenant(),
        b: empty_tenant(),
        worker_stop: None,
    };
    t.a = t.signup("alpha").await;
    t.b = t.signup("beta").await;
    t
}

fn empty_tenant() -> TestTenant {
    TestTenant {
        slug: String::new(),
        token: String::new(),
        refresh: String::new(),
        owner_email: String::new(),
    }
}

impl TestApp {
    pub async fn signup(&self, prefix: &str) -> TestTenant {
        let slug = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let email = format!("owner@{slug}.test");
        let r = self
            .gql(
                None,
                "mutation($i: TenantSignupInput!) { tenantSignup(input: $i) { accessToken refreshToken userErrors { code field message } } }",
                json!({"i": {"name": format!("{prefix} shop"), "slug": slug, "ownerEmail": email, "ownerPassword": PASSWORD}}),
            )
            .await;
        let p = &r["data"]["tenantSignup"];
        assert_eq!(p["userErrors"], json!([]), "{r}");
        TestTenant {
            slug,
            token: p["accessToken"].as_str().unwrap().to_string(),
            refresh: p["refreshToken"].as_str().unwrap().to_string(),
            owner_email: email,
        }
    }

    /// POST /graphql; returns the JSON body whatever the status.
    /// Another gateway process on the same database, Redis and RabbitMQ namespace (its own
    /// `Core`, so its own per-process caches); returns its base address.
    pub async fn second_gateway(&self) -> String {
        let core = Core::connect((*self.core.cfg).clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(uphub_api::serve(
            App::new(core),
            listener,
            std::future::pending(),
        ));
        addr
    }

    /// A GraphQL call to the gateway at `addr` (see `second_gateway`).
    pub async fn gql_at(&self, addr: &str, token: &str, query: &str, variables: Value) -> Value {
        let resp = self
            .http
            .post(format!("{addr}/graphql"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(json!({"query": query, "variables": variables}).to_string())
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }

    /// The value of an unlabelled metric on the gateway at `addr`.
    pub async fn metric_at(&self, addr: &str, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    }

    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        self.post_json(token, &json!({"query": query, "variables": variables}))
            .await
            .1
    }

    pub async fn post_json(&self, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/graphql", self.addr))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text})),
        )
    }

    pub async fn login(&self, slug: &str, email: &str, password: &str) -> Value {
        self.gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken userErrors { code field message } } }",
            json!({"i": {"tenantSlug": slug, "email": email, "password": password}}),
        )
        .await
    }

    /// Starts the worker role (relay + consumers) in this process.
    pub async fn start_worker(&mut self, faults: RelayFaults) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(uphub_api::run_worker(self.core.clone(), faults, rx));
        self.worker_stop = Some(tx);
    }

    /// Invites a staff member with `roles` into tenant A; returns the staff id.
    pub async fn invite(&self, token: &str, email: &str, roles: &[&str]) -> Value {
        self.gql(
            Some(token),
            "mutation($i: StaffInviteInput!) { staffInvite(input: $i) { staffMember { id email status roles } userErrors { code field message } } }",
            json!({"i": {"email": email, "roles": roles}}),
        )
        .await
    }
}

impl TestApp {
    /// Accepts the invitation in `mail` into tenant A with `password`; returns the access token.
    pub async fn accept_invite(&self, mail: &str, password: &str) -> String {
        let r = self
            .gql(
                None,
                "mutation($i: StaffInviteAcceptInput!) { staffInviteAccept(input: $i) { accessToken } }",
                json!({"i": {"tenantSlug": self.a.slug, "token": invite_token(mail), "password": password}}),
            )
            .await;
        r["data"]["staffInviteAccept"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string()
    }
}

/// The first error code of a GraphQL response.
pub fn code(v: &Value) -> String {
    v["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

/// Pulls the invitation token out of an e-mail body (quoted-printable safe: the token is url-safe base64).
pub fn invite_token(mail: &str) -> String {
    let joined = mail.replace("=\r\n", "").replace("=\n", "");
    let start = joined.find("token: ").expect("token in mail") + "token: ".len();
    joined[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}
