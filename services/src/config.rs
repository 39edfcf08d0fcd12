//! Configuration from the environment: defaults, then `UPHUB_*` variables, with `DATABASE_URL`,
//! `REDIS_URL` and `AMQP_URL` honoured as is. Secrets come from a variable or a `*_FILE`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use uphub_domain::media::MediaLimits;
use uphub_domain::pii::MasterKey;

/// A secret string that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    Dev,
    Prod,
}

/// Known development secrets: prod mode refuses to start with any of them.
pub const DEV_JWT_SECRET: &str = "uphub-dev-jwt-secret-do-not-use-in-production-0123456789";
pub const DEV_PII_MASTER_KEY: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

#[derive(Debug, Clone)]
pub struct Config {
    pub env: Env,
    pub database_url: String,
    pub redis_url: String,
    pub amqp_url: String,
    pub listen: String,
    /// Postgres connections per process.
    pub db_pool: u32,
    /// Products pages kept by the per-process catalog cache; 0 turns it off
    /// (`UPHUB_CATALOG_CACHE_PAGES`, default 512).
    pub catalog_cache_pages: usize,
    /// The per-process `me` cache (`UPHUB_ME_CACHE`, default true; bench/api turns it off for
    /// its baseline run).
    pub me_cache: bool,
    /// Prefix of every Redis key, exchange and queue of this instance.
    pub namespace: String,
    pub jwt_secret: Secret,
    pub pii_master_key_hex: Secret,
    pub smtp_url: Option<String>,
    pub mail_dir: String,
    pub mail_from: String,
    pub public_url: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub limits: Limits,
    /// Queues of this instance expire when unused this long (tests set it; None in production).
    pub queue_expires_ms: Option<u32>,
    pub media: MediaConfig,
    /// How often each marketplace connection is pulled (`UPHUB_CHANNEL_SYNC_EVERY_MS`, default 5000).
    pub channel_sync_every_ms: u64,
    /// Per-request timeout of marketplace calls (`UPHUB_CHANNEL_TIMEOUT_MS`, default 10000).
    pub channel_timeout_ms: u64,
}

/// Where uploaded media is stored and how large it may be.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Root of the local object store (`UPHUB_MEDIA_DIR`, default `var/media`).
    pub dir: PathBuf,
    /// An S3-compatible bucket instead of the directory.
    pub s3: Option<S3Config>,
    pub limits: MediaLimits,
    /// How long one multipart request may take to arrive and be stored.
    pub upload_timeout: Duration,
}

/// An S3-compatible bucket for media (`UPHUB_S3_BUCKET` set): AWS S3, MinIO, OSS/COS in their S3
/// mode. Without it media go to the local directory.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// `UPHUB_S3_ENDPOINT`, e.g. `https://oss-cn-hangzhou.aliyuncs.com` or `http://127.0.0.1:9000`;
    /// AWS's own when unset. Path-style requests when set (what MinIO and most gateways want).
    pub endpoint: Option<String>,
    /// `UPHUB_S3_REGION`, default `us-east-1`.
    pub region: String,
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
}

/// The `UPHUB_S3_*` settings.
pub const S3_VARS: [&str; 5] = [
    "UPHUB_S3_BUCKET",
    "UPHUB_S3_ENDPOINT",
    "UPHUB_S3_REGION",
    "UPHUB_S3_ACCESS_KEY_ID",
    "UPHUB_S3_SECRET_ACCESS_KEY",
];

fn s3_config(var: Lookup) -> anyhow::Result<Option<S3Config>> {
    let Some(bucket) = var("UPHUB_S3_BUCKET").filter(|b| !b.trim().is_empty()) else {
        if let Some(name) = S3_VARS.iter().find(|n| var(n).is_some()) {
            bail!("{name} is set but UPHUB_S3_BUCKET is not: set the bucket or unset UPHUB_S3_*");
        }
        return Ok(None);
    };
    let key = |name: &str| {
        var(name)
            .filter(|v| !v.is_empty())
            .map(Secret::new)
            .ok_or_else(|| anyhow::anyhow!("UPHUB_S3_BUCKET is set: {name} is required too"))
    };
    let endpoint = var("UPHUB_S3_ENDPOINT").filter(|e| !e.trim().is_empty());
    if let Some(e) = &endpoint
        && !(e.starts_with("https://") || e.starts_with("http://"))
    {
        bail!("UPHUB_S3_ENDPOINT must be an http(s) URL, got {e:?}");
    }
    Ok(Some(S3Config {
        bucket: bucket.trim().to_string(),
        endpoint,
        region: var("UPHUB_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
        access_key_id: key("UPHUB_S3_ACCESS_KEY_ID")?,
        secret_access_key: key("UPHUB_S3_SECRET_ACCESS_KEY")?,
    }))
}

fn media_config(var: Lookup) -> anyhow::Result<MediaConfig> {
    let s3 = s3_config(var)?;
    let d = MediaLimits::default();
    let limits = MediaLimits {
        max_image_bytes: parsed(var, "UPHUB_MAX_UPLOAD_BYTES", d.max_image_bytes)?,
        max_video_bytes: parsed(var, "UPHUB_MAX_VIDEO_UPLOAD_BYTES", d.max_video_bytes)?,
        max_image_pixels: parsed(var, "UPHUB_MAX_IMAGE_PIXELS", d.max_image_pixels)?,
    };
    if limits.max_image_bytes == 0 || limits.max_video_bytes == 0 || limits.max_image_pixels == 0 {
        bail!("upload limits must be positive");
    }
    Ok(MediaConfig {
        s3,
        dir: PathBuf::from(var("UPHUB_MEDIA_DIR").unwrap_or_else(|| "var/media".into())),
        limits,
        upload_timeout: Duration::from_secs(parsed(var, "UPHUB_UPLOAD_TIMEOUT_SECS", 300u64)?),
    })
}

/// API protection limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_batch: usize,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub cost_rate_per_sec: f64,
    pub cost_burst: f64,
    pub ip_rate_per_sec: f64,
    pub ip_burst: f64,
    pub login_failures_per_account: u32,
    pub login_attempts_per_ip_per_min: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 12,
            max_complexity: 1000,
            max_aliases: 30,
            max_batch: 10,
            max_body_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(15),
            cost_rate_per_sec: 1000.0,
            cost_burst: 20_000.0,
            ip_rate_per_sec: 50.0,
            ip_burst: 500.0,
            login_failures_per_account: 5,
            login_attempts_per_ip_per_min: 30,
        }
    }
}

/// Where settings come from: the process environment, or a map in tests.
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn secret(var: Lookup, name: &str) -> anyhow::Result<Option<Secret>> {
    if let Some(v) = var(name) {
        return Ok(Some(Secret(v.trim().to_string())));
    }
    let file_var = format!("{name}_FILE");
    match var(&file_var) {
        Some(path) => {
            let v = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {file_var}={path}"))?;
            Ok(Some(Secret(v.trim().to_string())))
        }
        None => Ok(None),
    }
}

fn parsed<T: std::str::FromStr>(var: Lookup, name: &str, default: T) -> anyhow::Result<T> {
    match var(name) {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v} is not valid")),
        None => Ok(default),
    }
}

/// The namespace derived from the database name: `postgres://…/uphub_dev?x` → `uphub_dev`.
pub fn namespace_from_db_url(url: &str) -> String {
    let path = url.rsplit('/').next().unwrap_or("uphub");
    let name = path.split('?').next().unwrap_or("uphub");
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "uphub".into()
    } else {
        clean
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Config> {
        Config::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Builds the configuration from `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let var = &|name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let env = match var("UPHUB_ENV").as_deref() {
            None | Some("dev") => Env::Dev,
            Some("prod") => Env::Prod,
            Some(other) => bail!("UPHUB_ENV must be dev or prod, not {other}"),
        };
        let database_url = var("DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/uphub_dev".into());
        let jwt_secret = secret(var, "UPHUB_JWT_SECRET")?;
        let pii_key = secret(var, "UPHUB_PII_MASTER_KEY")?;
        let (jwt_secret, pii_master_key_hex) = match env {
            Env::Prod => {
                let jwt = jwt_secret.context("UPHUB_JWT_SECRET is required in prod")?;
                let pii = pii_key.context("UPHUB_PII_MASTER_KEY is required in prod")?;
                if jwt.expose() == DEV_JWT_SECRET || jwt.expose().len() < 32 {
                    bail!(
                        "refusing to start: UPHUB_JWT_SECRET is a dev secret or shorter than 32 bytes"
                    );
                }
                if pii.expose().eq_ignore_ascii_case(DEV_PII_MASTER_KEY) {
                    bail!("refusing to start: UPHUB_PII_MASTER_KEY is the dev key");
                }
                (jwt, pii)
            }
            Env::Dev => (
                jwt_secret.unwrap_or_else(|| Secret::new(DEV_JWT_SECRET)),
                pii_key.unwrap_or_else(|| Secret::new(DEV_PII_MASTER_KEY)),
            ),
        };
        MasterKey::from_hex(pii_master_key_hex.expose())
            .map_err(|e| anyhow::anyhow!("UPHUB_PII_MASTER_KEY: {e}"))?;
        let defaults = Limits::default();
        let limits = Limits {
            max_depth: parsed(var, "UPHUB_MAX_DEPTH", defaults.max_depth)?,
            max_complexity: parsed(var, "UPHUB_MAX_COMPLEXITY", defaults.max_complexity)?,
            max_aliases: parsed(var, "UPHUB_MAX_ALIASES", defaults.max_aliases)?,
            max_batch: parsed(var, "UPHUB_MAX_BATCH", defaults.max_batch)?,
            max_body_bytes: parsed(var, "UPHUB_MAX_BODY_BYTES", defaults.max_body_bytes)?,
            request_timeout: Duration::from_millis(parsed(
                var,
                "UPHUB_REQUEST_TIMEOUT_MS",
                defaults.request_timeout.as_millis() as u64,
            )?),
            cost_rate_per_sec: parsed(var, "UPHUB_COST_RATE_PER_SEC", defaults.cost_rate_per_sec)?,
            cost_burst: parsed(var, "UPHUB_COST_BURST", defaults.cost_burst)?,
            ip_rate_per_sec: parsed(var, "UPHUB_IP_RATE_PER_SEC", defaults.ip_rate_per_sec)?,
            ip_burst: parsed(var, "UPHUB_IP_BURST", defaults.ip_burst)?,
            login_failures_per_account: parsed(
                var,
                "UPHUB_LOGIN_FAILURES_PER_ACCOUNT",
                defaults.login_failures_per_account,
            )?,
            login_attempts_per_ip_per_min: parsed(
                var,
                "UPHUB_LOGIN_ATTEMPTS_PER_IP_PER_MIN",
                defaults.login_attempts_per_ip_per_min,
            )?,
        };
        let listen = var("UPHUB_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
        Ok(Config {
            env,
            namespace: var("UPHUB_NAMESPACE")
                .unwrap_or_else(|| namespace_from_db_url(&database_url)),
            database_url,
            redis_url: var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()),
            amqp_url: var("AMQP_URL")
                .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            public_url: var("UPHUB_PUBLIC_URL").unwrap_or_else(|| format!("http://{listen}")),
            listen,
            db_pool: parsed(var, "UPHUB_DB_POOL", 32u32)?,
            catalog_cache_pages: parsed(var, "UPHUB_CATALOG_CACHE_PAGES", 512usize)?,
            me_cache: parsed(var, "UPHUB_ME_CACHE", true)?,
            jwt_secret,
            pii_master_key_hex,
            smtp_url: var("UPHUB_SMTP_URL"),
            mail_dir: var("UPHUB_MAIL_DIR").unwrap_or_else(|| "var/mail".into()),
            mail_from: var("UPHUB_MAIL_FROM")
                .unwrap_or_else(|| "UpHub <no-reply@uphub.local>".into()),
            access_token_ttl: Duration::from_secs(parsed(
                var,
                "UPHUB_ACCESS_TOKEN_TTL_SECS",
                900u64,
            )?),
            refresh_token_ttl: Duration::from_secs(parsed(
                var,
                "UPHUB_REFRESH_TOKEN_TTL_SECS",
                30 * 24 * 3600u64,
            )?),
            limits,
            queue_expires_ms: var("UPHUB_QUEUE_EXPIRES_MS").and_then(|v| v.parse().ok()),
            media: media_config(var)?,
            channel_sync_every_ms: parsed(var, "UPHUB_CHANNEL_SYNC_EVERY_MS", 5000u64)?,
            channel_timeout_ms: parsed(var, "UPHUB_CHANNEL_TIMEOUT_MS", 10_000u64)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_the_database_name() {
        assert_eq!(
            namespace_from_db_url("postgres://postgres@127.0.0.1:5432/uphub_t1"),
            "uphub_t1"
        );
        assert_eq!(
            namespace_from_db_url("postgres://h/db-x?sslmode=disable"),
            "db-x"
        );
    }

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn prod_refuses_missing_or_dev_secrets() {
        let good_key = "a".repeat(64);
        let good_jwt = "k".repeat(40);
        let cases = [
            vec![("UPHUB_ENV", "prod")],
            vec![
                ("UPHUB_ENV", "prod"),
                ("UPHUB_JWT_SECRET", DEV_JWT_SECRET),
                ("UPHUB_PII_MASTER_KEY", &good_key),
            ],
            vec![
                ("UPHUB_ENV", "prod"),
                ("UPHUB_JWT_SECRET", &good_jwt),
                ("UPHUB_PII_MASTER_KEY", DEV_PII_MASTER_KEY),
            ],
            vec![
                ("UPHUB_ENV", "prod"),
                ("UPHUB_JWT_SECRET", "short"),
                ("UPHUB_PII_MASTER_KEY", &good_key),
            ],
            vec![
                ("UPHUB_ENV", "prod"),
                ("UPHUB_JWT_SECRET", &good_jwt),
                ("UPHUB_PII_MASTER_KEY", "not-hex"),
            ],
            vec![("UPHUB_ENV", "staging")],
        ];
        for case in cases {
            assert!(Config::from_lookup(&lookup(&case)).is_err(), "{case:?}");
        }
        let ok = Config::from_lookup(&lookup(&[
            ("UPHUB_ENV", "prod"),
            ("UPHUB_JWT_SECRET", &good_jwt),
            ("UPHUB_PII_MASTER_KEY", &good_key),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/shop_x"),
        ]))
        .unwrap();
        assert_eq!(ok.env, Env::Prod);
        assert_eq!(ok.namespace, "shop_x");
    }

    #[test]
    fn dev_defaults_work_without_any_setting() {
        let c = Config::from_lookup(&lookup(&[])).unwrap();
        assert_eq!(c.env, Env::Dev);
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.jwt_secret.expose(), DEV_JWT_SECRET);
    }

    #[test]
    fn media_defaults_to_a_local_directory_and_takes_a_complete_s3_setting() {
        let c = Config::from_lookup(&lookup(&[])).unwrap();
        assert_eq!(c.media.dir, PathBuf::from("var/media"));
        assert_eq!(c.media.limits.max_image_bytes, 20 * 1024 * 1024);
        assert!(c.media.limits.max_video_bytes > c.media.limits.max_image_bytes);
        let c = Config::from_lookup(&lookup(&[
            ("UPHUB_MEDIA_DIR", "/srv/media"),
            ("UPHUB_MAX_UPLOAD_BYTES", "1024"),
        ]))
        .unwrap();
        assert_eq!(c.media.dir, PathBuf::from("/srv/media"));
        assert_eq!(c.media.limits.max_image_bytes, 1024);
        assert!(c.media.s3.is_none());
        // A bucket needs its keys; keys without a bucket are a mistake, not a silent fallback.
        let err = Config::from_lookup(&lookup(&[("UPHUB_S3_BUCKET", "shop")])).unwrap_err();
        assert!(err.to_string().contains("UPHUB_S3_ACCESS_KEY_ID"), "{err}");
        let err = Config::from_lookup(&lookup(&[("UPHUB_S3_REGION", "cn")])).unwrap_err();
        assert!(err.to_string().contains("UPHUB_S3_BUCKET"), "{err}");
        let c = Config::from_lookup(&lookup(&[
            ("UPHUB_S3_BUCKET", "shop"),
            ("UPHUB_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("UPHUB_S3_ACCESS_KEY_ID", "ak"),
            ("UPHUB_S3_SECRET_ACCESS_KEY", "sk"),
        ]))
        .unwrap();
        let s3 = c.media.s3.unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.region.as_str()),
            ("shop", "us-east-1")
        );
        assert!(
            Config::from_lookup(&lookup(&[
                ("UPHUB_S3_BUCKET", "shop"),
                ("UPHUB_S3_ENDPOINT", "ftp://x"),
                ("UPHUB_S3_ACCESS_KEY_ID", "ak"),
                ("UPHUB_S3_SECRET_ACCESS_KEY", "sk"),
            ]))
            .is_err()
        );
        assert!(Config::from_lookup(&lookup(&[("UPHUB_MAX_UPLOAD_BYTES", "0")])).is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(..)");
    }
}
