//! Storefront buyers on the creator's own channels: login with a WeChat or Alipay mini-program
//! code or an SMS code (H5), binding the WeChat phone number, delivery addresses, and the
//! per-tenant platform credentials those logins use.
//!
//! Logins name their store by slug (the buyer has no tenant yet); the slug is resolved by the
//! owner role like staff login, everything else runs in the tenant's `TenantTx`. Platform calls
//! happen outside any transaction. Each login ends with `auth::issue_buyer_token`.
//!
//! SMS codes live in Redis only: six digits, kept as an HMAC under the tenant data key (a plain
//! hash of six digits is a lookup table), 5 minutes, burned after [`SMS_MAX_ATTEMPTS`] wrong
//! tries. Sending is limited per phone and per IP (fixed windows, one Lua call, keys tagged
//! with the tenant so one script stays on one cluster slot); whether a phone belongs to a buyer
//! never changes the answer.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::Rng;
use redis::Script;
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement};
use serde_json::json;
use sha2::{Digest, Sha256};
use uphub_domain::identity::{InvalidInput, Permission};
use uphub_domain::pii::{DataKey, mask_address, mask_name, mask_phone, normalize_phone};
use uphub_payments::alipay::AlipayConfig;
use uphub_payments::alipay_oauth::AlipayOauthClient;
use uphub_payments::identity_error::IdentityError;
use uphub_payments::miniprogram::{MiniProgramClient, MiniProgramConfig, Secret};
use uphub_payments::sms::{SmsClient, SmsConfig};
use uphub_payments::{PrivateKey, PublicKey};
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

use crate::audit::{self, require};
use crate::auth::{BUYER_REFRESH_PREFIX, compose_token, issue_buyer_token, sha256, split_token};
use crate::config::Env;
use crate::{Core, ServiceError, ServiceResult, pii};

/// Lifetime of an SMS login code.
pub const SMS_CODE_TTL_SECS: u64 = 300;
/// Wrong codes accepted before the code is burned.
pub const SMS_MAX_ATTEMPTS: u32 = 5;
/// Sends per phone: (limit, window seconds).
pub const SMS_PER_PHONE: [(u32, u64); 2] = [(1, 60), (5, 3600)];
/// Sends per client IP and store: generous, because mobile carriers put many buyers behind one
/// address, but low enough to stop one client pumping SMS to a list of numbers.
pub const SMS_PER_IP: [(u32, u64); 2] = [(10, 60), (100, 3600)];
/// What a client waits after a 45011 / 40005 / provider 429 from a platform.
const PLATFORM_RETRY_AFTER_MS: u64 = 60_000;
/// Addresses per buyer.
pub const MAX_ADDRESSES: i64 = 20;

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn invalid(field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(InvalidInput {
        field,
        message: message.into(),
    })
}

// ------------------------------------------------------------------------------- input parsing

/// A mainland China mobile number, normalized to its 11 digits (the form the blind index and
/// the SMS provider take).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MobilePhone(String);

impl MobilePhone {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, InvalidInput> {
        let s = s.trim();
        let allowed = s.chars().all(|c| {
            c.is_ascii_digit()
                || matches!(c, ' ' | '+' | '-' | '(' | ')')
                || ('０'..='９').contains(&c)
        });
        let n = normalize_phone(s);
        // "+1 415 555 0100" also normalizes to 11 digits starting with 1.
        let compact: String = s.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        let foreign = (compact.starts_with('+') && !compact.starts_with("+86"))
            || (compact.starts_with("00") && !compact.starts_with("0086"));
        if foreign || s.chars().count() > 32 || !allowed || n.len() != 11 || !n.starts_with('1') {
            return Err(InvalidInput {
                field,
                message: "must be a mainland China mobile number (11 digits starting with 1)"
                    .into(),
            });
        }
        Ok(Self(n))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A code a mini-program got from `wx.login`, the phone button or `my.getAuthCode`: opaque
/// printable ASCII, passed on as is.
fn parse_platform_code(field: &'static str, s: &str) -> ServiceResult<String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            field,
            "must be the code the mini-program received (printable ASCII, at most 256)",
        ));
    }
    Ok(s.to_owned())
}

fn parse_sms_code(s: &str) -> ServiceResult<String> {
    let s = s.trim();
    if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("code", "must be the 6-digit code from the SMS"));
    }
    Ok(s.to_owned())
}

/// Trimmed text of 1..=max characters (0..=max when `optional`), no control characters.
fn parse_text(field: &'static str, s: &str, max: usize, optional: bool) -> ServiceResult<String> {
    let s = s.trim();
    let n = s.chars().count();
    if (n == 0 && !optional) || n > max || s.chars().any(char::is_control) {
        let min = if optional { 0 } else { 1 };
        return Err(invalid(
            field,
            format!("must be {min}-{max} characters without control characters"),
        ));
    }
    Ok(s.to_owned())
}

// ---------------------------------------------------------------------------- login settings

/// WeChat mini-program credentials as a staff member enters them.
#[derive(Debug, Clone)]
pub struct WechatSettingsInput {
    pub appid: String,
    pub secret: String,
    /// `None` = `https://api.weixin.qq.com`. Other values only outside prod (mocks).
    pub base_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AlipaySettingsInput {
    pub app_id: String,
    /// PEM or bare base64 (PKCS#8 or PKCS#1).
    pub app_private_key: String,
    pub alipay_public_key: String,
    /// `None` = `https://openapi.alipay.com/gateway.do`. Other values only outside prod.
    pub gateway_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SmsSettingsInput {
    pub base_url: String,
    pub access_key_id: String,
    pub access_key_secret: String,
    pub sign_name: String,
}

/// Sections left `None` keep their stored values.
#[derive(Debug, Clone, Default)]
pub struct LoginSettingsInput {
    pub wechat: Option<WechatSettingsInput>,
    pub alipay: Option<AlipaySettingsInput>,
    pub sms: Option<SmsSettingsInput>,
}

/// The stored settings without their secrets.
#[derive(Debug, Clone, Default)]
pub struct LoginSettings {
    pub wechat_appid: Option<String>,
    pub wechat_base_url: Option<String>,
    pub alipay_app_id: Option<String>,
    pub alipay_gateway_url: Option<String>,
    pub sms_base_url: Option<String>,
    pub sms_access_key_id: Option<String>,
    pub sms_sign_name: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

fn parse_key_id(field: &'static str, s: &str) -> ServiceResult<String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return Err(invalid(field, "must be 1-64 of A-Z a-z 0-9 _ - ."));
    }
    Ok(s.to_owned())
}

fn parse_secret(field: &'static str, s: &str) -> ServiceResult<String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(field, "must be 1-256 printable ASCII characters"));
    }
    Ok(s.to_owned())
}

/// Platform base URLs can only be pointed elsewhere outside prod: in prod a staff member must
/// not be able to make the server call arbitrary hosts. SMS providers have no default and must
/// use https in prod.
fn parse_base_url(
    core: &Core,
    field: &'static str,
    s: Option<&str>,
    required: bool,
) -> ServiceResult<Option<String>> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        if required {
            return Err(invalid(field, "is required"));
        }
        return Ok(None);
    };
    let prod = core.cfg.env == Env::Prod;
    if prod && !required {
        return Err(invalid(
            field,
            "only the platform's production endpoint is allowed; leave it empty",
        ));
    }
    let scheme_ok = s.starts_with("https://") || (!prod && s.starts_with("http://"));
    let host = s.split_once("://").map(|(_, r)| r).unwrap_or_default();
    if !scheme_ok
        || s.len() > 200
        || host.is_empty()
        || host.starts_with('/')
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
        || s.contains(['?', '#'])
    {
        return Err(invalid(
            field,
            if prod {
                "must be an https URL without query or fragment"
            } else {
                "must be an http(s) URL without query or fragment"
            },
        ));
    }
    Ok(Some(s.trim_end_matches('/').to_owned()))
}

fn settings_aad(tenant: TenantId, column: &str) -> Vec<u8> {
    pii::aad(tenant, &format!("buyer_channel_settings.{column}"))
}

/// `storefrontLoginSettingsSet`: stores the given sections (secrets encrypted), keeps the rest.
pub async fn login_settings_set(
    core: &Core,
    ctx: &RequestCtx,
    input: LoginSettingsInput,
) -> ServiceResult<LoginSettings> {
    require(ctx, Permission::ChannelManage)?;
    let wechat = match &input.wechat {
        Some(w) => Some((
            parse_key_id("wechat.appId", &w.appid)?,
            parse_secret("wechat.appSecret", &w.secret)?,
            parse_base_url(core, "wechat.baseUrl", w.base_url.as_deref(), false)?,
        )),
        None => None,
    };
    let alipay = match &input.alipay {
        Some(a) => {
            let app_id = parse_key_id("alipay.appId", &a.app_id)?;
            PrivateKey::from_pem(&a.app_private_key)
                .map_err(|_| invalid("alipay.appPrivateKey", "is not an RSA private key"))?;
            PublicKey::from_pem(&a.alipay_public_key)
                .map_err(|_| invalid("alipay.alipayPublicKey", "is not an RSA public key"))?;
            Some((
                app_id,
                a.app_private_key.trim().to_owned(),
                a.alipay_public_key.trim().to_owned(),
                parse_base_url(core, "alipay.gatewayUrl", a.gateway_url.as_deref(), false)?,
            ))
        }
        None => None,
    };
    let sms = match &input.sms {
        Some(s) => Some((
            parse_base_url(core, "sms.baseUrl", Some(&s.base_url), true)?,
            parse_key_id("sms.accessKeyId", &s.access_key_id)?,
            parse_secret("sms.accessKeySecret", &s.access_key_secret)?,
            parse_text("sms.signName", &s.sign_name, 32, false)?,
        )),
        None => None,
    };
    let tenant = ctx.tenant;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let dek = pii::data_key(core, &tx).await?;
    let enc = |column: &str, v: &str| dek.encrypt(v, &settings_aad(tenant, column));
    let (w_appid, w_ct, w_url) = match &wechat {
        Some((id, secret, url)) => (
            Some(id.clone()),
            Some(enc("wechat_secret", secret)),
            url.clone(),
        ),
        None => (None, None, None),
    };
    let (a_id, a_ct, a_pub, a_url) = match &alipay {
        Some((id, key, public, url)) => (
            Some(id.clone()),
            Some(enc("alipay_private_key", key)),
            Some(public.clone()),
            url.clone(),
        ),
        None => (None, None, None, None),
    };
    let (s_url, s_id, s_ct, s_sign) = match &sms {
        Some((url, id, secret, sign)) => (
            url.clone(),
            Some(id.clone()),
            Some(enc("sms_secret", secret)),
            Some(sign.clone()),
        ),
        None => (None, None, None, None),
    };
    let row = tx
        .query_one_raw(stmt(
            "INSERT INTO buyer_channel_settings AS s (tenant_id, wechat_appid, wechat_secret_ct,
                 wechat_base_url, alipay_app_id, alipay_private_key_ct, alipay_public_key,
                 alipay_gateway_url, sms_base_url, sms_access_key_id, sms_secret_ct, sms_sign_name,
                 updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())
             ON CONFLICT (tenant_id) DO UPDATE SET
               wechat_appid = CASE WHEN $13 THEN EXCLUDED.wechat_appid ELSE s.wechat_appid END,
               wechat_secret_ct = CASE WHEN $13 THEN EXCLUDED.wechat_secret_ct ELSE s.wechat_secret_ct END,
               wechat_base_url = CASE WHEN $13 THEN EXCLUDED.wechat_base_url ELSE s.wechat_base_url END,
               alipay_app_id = CASE WHEN $14 THEN EXCLUDED.alipay_app_id ELSE s.alipay_app_id END,
               alipay_private_key_ct = CASE WHEN $14 THEN EXCLUDED.alipay_private_key_ct ELSE s.alipay_private_key_ct END,
               alipay_public_key = CASE WHEN $14 THEN EXCLUDED.alipay_public_key ELSE s.alipay_public_key END,
               alipay_gateway_url = CASE WHEN $14 THEN EXCLUDED.alipay_gateway_url ELSE s.alipay_gateway_url END,
               sms_base_url = CASE WHEN $15 THEN EXCLUDED.sms_base_url ELSE s.sms_base_url END,
               sms_access_key_id = CASE WHEN $15 THEN EXCLUDED.sms_access_key_id ELSE s.sms_access_key_id END,
               sms_secret_ct = CASE WHEN $15 THEN EXCLUDED.sms_secret_ct ELSE s.sms_secret_ct END,
               sms_sign_name = CASE WHEN $15 THEN EXCLUDED.sms_sign_name ELSE s.sms_sign_name END,
               updated_at = now()
             RETURNING wechat_appid, wechat_base_url, alipay_app_id, alipay_gateway_url,
                       sms_base_url, sms_access_key_id, sms_sign_name, updated_at",
            vec![
                tenant.0.into(),
                w_appid.into(),
                w_ct.into(),
                w_url.into(),
                a_id.into(),
                a_ct.into(),
                a_pub.into(),
                a_url.into(),
                s_url.into(),
                s_id.into(),
                s_ct.into(),
                s_sign.into(),
                wechat.is_some().into(),
                alipay.is_some().into(),
                sms.is_some().into(),
            ],
        ))
        .await?
        .context("upsert returns the row")?;
    let settings = settings_from_row(&row)?;
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "storefront_login_settings.set",
        None,
        json!({"wechat": wechat.is_some(), "alipay": alipay.is_some(), "sms": sms.is_some()}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    Ok(settings)
}

/// The current settings without secrets (CHANNEL_MANAGE).
pub async fn login_settings(core: &Core, ctx: &RequestCtx) -> ServiceResult<LoginSettings> {
    require(ctx, Permission::ChannelManage)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            "SELECT wechat_appid, wechat_base_url, alipay_app_id, alipay_gateway_url,
                    sms_base_url, sms_access_key_id, sms_sign_name, updated_at
             FROM buyer_channel_settings WHERE tenant_id = $1",
            vec![ctx.tenant.0.into()],
        ))
        .await?;
    tx.commit().await?;
    match row {
        Some(r) => settings_from_row(&r),
        None => Ok(LoginSettings::default()),
    }
}

fn settings_from_row(r: &QueryResult) -> ServiceResult<LoginSettings> {
    Ok(LoginSettings {
        wechat_appid: r.try_get("", "wechat_appid")?,
        wechat_base_url: r.try_get("", "wechat_base_url")?,
        alipay_app_id: r.try_get("", "alipay_app_id")?,
        alipay_gateway_url: r.try_get("", "alipay_gateway_url")?,
        sms_base_url: r.try_get("", "sms_base_url")?,
        sms_access_key_id: r.try_get("", "sms_access_key_id")?,
        sms_sign_name: r.try_get("", "sms_sign_name")?,
        updated_at: r
            .try_get::<Option<DateTime<chrono::FixedOffset>>>("", "updated_at")?
            .map(|t| t.to_utc()),
    })
}

// --------------------------------------------------------------- platform clients per tenant

/// Which credentials a login needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Wechat,
    Alipay,
    Sms,
}

impl Channel {
    fn not_configured(self) -> ServiceError {
        let what = match self {
            Channel::Wechat => "WeChat mini-program login",
            Channel::Alipay => "Alipay mini-program login",
            Channel::Sms => "SMS login",
        };
        invalid("tenantSlug", format!("this store has not set up {what}"))
    }
}

/// Clients live as long as the process: the WeChat one caches its access token, and loading an
/// RSA key per login would be wasted work. Keyed by tenant and a hash of the credentials, so a
/// settings change simply makes a new client.
type Registry<C> = LazyLock<Mutex<HashMap<(TenantId, [u8; 32]), C>>>;
static WECHAT_CLIENTS: Registry<MiniProgramClient> = LazyLock::new(Default::default);
static ALIPAY_CLIENTS: Registry<AlipayOauthClient> = LazyLock::new(Default::default);
static SMS_CLIENTS: Registry<SmsClient> = LazyLock::new(Default::default);
/// Entries per registry before it is emptied (stale credentials are never evicted otherwise).
const REGISTRY_CAP: usize = 10_000;

fn fingerprint(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

fn cached<C: Clone>(
    registry: &Registry<C>,
    key: (TenantId, [u8; 32]),
    make: impl FnOnce() -> Result<C, IdentityError>,
) -> ServiceResult<C> {
    if let Some(c) = registry.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(c);
    }
    let client = make().map_err(|e| anyhow::anyhow!(e).context("building a platform client"))?;
    if let Ok(mut m) = registry.lock() {
        if m.len() >= REGISTRY_CAP {
            m.clear();
        }
        m.insert(key, client.clone());
    }
    Ok(client)
}

/// Columns of `buyer_channel_settings` a login reads.
struct Credentials {
    row: Option<QueryResult>,
    dek: DataKey,
    tenant: TenantId,
}

impl Credentials {
    async fn load(core: &Core, tx: &TenantTx) -> ServiceResult<Self> {
        let dek = pii::data_key(core, tx).await?;
        let row = tx
            .query_one_raw(stmt(
                "SELECT * FROM buyer_channel_settings WHERE tenant_id = $1",
                vec![tx.tenant().0.into()],
            ))
            .await?;
        Ok(Self {
            row,
            dek,
            tenant: tx.tenant(),
        })
    }

    fn text(&self, column: &str) -> ServiceResult<Option<String>> {
        match &self.row {
            Some(r) => Ok(r.try_get::<Option<String>>("", column)?),
            None => Ok(None),
        }
    }

    fn secret(&self, column: &str, aad_column: &str) -> ServiceResult<Option<String>> {
        let ct: Option<Vec<u8>> = match &self.row {
            Some(r) => r.try_get("", column)?,
            None => None,
        };
        ct.map(|ct| {
            self.dek
                .decrypt(&ct, &settings_aad(self.tenant, aad_column))
                .map_err(|e| anyhow::anyhow!("decrypting {aad_column}: {e}").into())
        })
        .transpose()
    }

    fn wechat(&self) -> ServiceResult<MiniProgramClient> {
        let (Some(appid), Some(secret)) = (
            self.text("wechat_appid")?,
            self.secret("wechat_secret_ct", "wechat_secret")?,
        ) else {
            return Err(Channel::Wechat.not_configured());
        };
        let base = self
            .text("wechat_base_url")?
            .unwrap_or_else(|| uphub_payments::miniprogram::DEFAULT_BASE_URL.to_owned());
        let key = (self.tenant, fingerprint(&[&base, &appid, &secret]));
        cached(&WECHAT_CLIENTS, key, || {
            MiniProgramClient::new(MiniProgramConfig {
                base_url: base,
                appid,
                secret: Secret::new(secret),
            })
        })
    }

    fn alipay(&self) -> ServiceResult<AlipayOauthClient> {
        let (Some(app_id), Some(private), Some(public)) = (
            self.text("alipay_app_id")?,
            self.secret("alipay_private_key_ct", "alipay_private_key")?,
            self.text("alipay_public_key")?,
        ) else {
            return Err(Channel::Alipay.not_configured());
        };
        let gateway = self
            .text("alipay_gateway_url")?
            .unwrap_or_else(|| uphub_payments::alipay::DEFAULT_GATEWAY.to_owned());
        let key = (
            self.tenant,
            fingerprint(&[&gateway, &app_id, &private, &public]),
        );
        cached(&ALIPAY_CLIENTS, key, || {
            AlipayOauthClient::new(AlipayConfig {
                gateway_url: gateway,
                app_id,
                app_private_key: PrivateKey::from_pem(&private)?,
                alipay_public_key: PublicKey::from_pem(&public)?,
            })
        })
    }

    fn sms(&self) -> ServiceResult<SmsClient> {
        let (Some(base), Some(key_id), Some(secret), Some(sign)) = (
            self.text("sms_base_url")?,
            self.text("sms_access_key_id")?,
            self.secret("sms_secret_ct", "sms_secret")?,
            self.text("sms_sign_name")?,
        ) else {
            return Err(Channel::Sms.not_configured());
        };
        let key = (self.tenant, fingerprint(&[&base, &key_id, &secret, &sign]));
        cached(&SMS_CLIENTS, key, || {
            SmsClient::new(SmsConfig {
                base_url: base,
                access_key_id: key_id,
                access_key_secret: Secret::new(secret),
                sign_name: sign,
            })
        })
    }
}

/// Platform outcomes a buyer can act on become user errors; the rest is logged as INTERNAL.
fn platform_error(field: &'static str, e: IdentityError) -> ServiceError {
    match e {
        IdentityError::CodeInvalid { .. } => invalid(
            field,
            "the code is invalid or has expired; get a new one from the app",
        ),
        IdentityError::CodeUsed { .. } => invalid(
            field,
            "the code was already used; get a new one from the app",
        ),
        IdentityError::RateLimited { .. } => ServiceError::RateLimited {
            retry_after_ms: PLATFORM_RETRY_AFTER_MS,
        },
        IdentityError::Blocked { .. } => {
            ServiceError::forbidden("the platform's risk control blocked this account")
        }
        other => ServiceError::Internal(anyhow::Error::new(other).context("identity platform")),
    }
}

/// An active store by slug (owner role: the caller has no tenant yet).
async fn storefront(core: &Core, slug: &str) -> ServiceResult<TenantId> {
    let t = crate::identity::tenant_by_slug(core, slug).await?;
    match t.filter(|t| t.status == "ACTIVE") {
        Some(t) => Ok(TenantId(t.id)),
        None => Err(invalid("tenantSlug", "no such store")),
    }
}

async fn credentials(core: &Core, tenant: TenantId) -> ServiceResult<Credentials> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let c = Credentials::load(core, &tx).await?;
    tx.commit().await?;
    Ok(c)
}

// ------------------------------------------------------------------------------------ logins

/// A buyer's tokens after a login or a refresh.
#[derive(Debug, Clone)]
pub struct BuyerSession {
    pub tenant: TenantId,
    pub buyer_id: Uuid,
    pub access_token: String,
    pub access_expires_at: i64,
    /// Opaque, single use: `buyerTokenRefresh` swaps it for a new pair.
    pub refresh_token: String,
    /// The login created the buyer.
    pub new_buyer: bool,
}

/// A login's session: a new refresh-token family, then the access token.
async fn session(
    core: &Core,
    tenant: TenantId,
    buyer_id: Uuid,
    new_buyer: bool,
) -> ServiceResult<BuyerSession> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let refresh_token = insert_refresh_token(core, &tx, buyer_id, Uuid::now_v7()).await?;
    tx.commit().await?;
    let (access_token, access_expires_at) = issue_buyer_token(core, tenant, buyer_id)?;
    Ok(BuyerSession {
        tenant,
        buyer_id,
        access_token,
        access_expires_at,
        refresh_token,
        new_buyer,
    })
}

/// Stores a new refresh token of `family` (its SHA-256 only) and returns the token.
async fn insert_refresh_token(
    core: &Core,
    tx: &TenantTx,
    buyer: Uuid,
    family: Uuid,
) -> ServiceResult<String> {
    let secret = crate::auth::random_token(32);
    let ttl = chrono::Duration::from_std(core.cfg.refresh_token_ttl)
        .map_err(|e| anyhow::anyhow!("refresh token ttl: {e}"))?;
    tx.execute_raw(stmt(
        "INSERT INTO buyer_refresh_tokens (tenant_id, id, buyer_id, family_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            tx.tenant().0.into(),
            Uuid::now_v7().into(),
            buyer.into(),
            family.into(),
            sha256(secret.as_bytes()).into(),
            (core.now() + ttl).into(),
        ],
    ))
    .await?;
    Ok(compose_token(BUYER_REFRESH_PREFIX, tx.tenant(), &secret))
}

/// `buyerTokenRefresh`: rotates a buyer refresh token. A token used before means it leaked: its
/// whole family (every token since that login) is revoked. The tenant comes from the token; a
/// `tenant_slug`, when given, must name the same store. Staff refresh tokens are not accepted.
pub async fn buyer_token_refresh(
    core: &Core,
    request_id: &str,
    ip: Option<String>,
    token: &str,
    tenant_slug: Option<&str>,
) -> ServiceResult<BuyerSession> {
    let invalid = || ServiceError::Unauthenticated("invalid refresh token".into());
    let (tenant, secret) = split_token(BUYER_REFRESH_PREFIX, token.trim()).ok_or_else(invalid)?;
    if let Some(slug) = tenant_slug.map(str::trim).filter(|s| !s.is_empty()) {
        let named = crate::identity::tenant_by_slug(core, slug).await?;
        if named.is_none_or(|t| t.id != tenant.0 || t.status != "ACTIVE") {
            return Err(invalid());
        }
    }
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            "SELECT id, buyer_id, family_id, expires_at, used_at IS NOT NULL OR revoked_at IS NOT NULL AS spent
             FROM buyer_refresh_tokens WHERE tenant_id = $1 AND token_hash = $2 FOR UPDATE",
            vec![tenant.0.into(), sha256(secret.as_bytes()).into()],
        ))
        .await?
        .ok_or_else(invalid)?;
    let id: Uuid = row.try_get("", "id")?;
    let buyer: Uuid = row.try_get("", "buyer_id")?;
    let family: Uuid = row.try_get("", "family_id")?;
    let expires_at: DateTime<Utc> = row.try_get("", "expires_at")?;
    if row.try_get::<bool>("", "spent")? {
        tx.execute_raw(stmt(
            "UPDATE buyer_refresh_tokens SET revoked_at = now()
             WHERE tenant_id = $1 AND family_id = $2 AND revoked_at IS NULL",
            vec![tenant.0.into(), family.into()],
        ))
        .await?;
        let ctx = RequestCtx::system(tenant, request_id).with_request(request_id, ip);
        let ev = audit::record(
            core,
            &tx,
            &ctx,
            "buyer.refresh_reuse_detected",
            Some(buyer.to_string()),
            json!({"familyId": family}),
        )
        .await?;
        tx.commit().await?;
        audit::publish(core, &[ev]).await;
        return Err(ServiceError::Unauthenticated(
            "refresh token reuse detected; session revoked".into(),
        ));
    }
    if expires_at < core.now() {
        return Err(ServiceError::Unauthenticated(
            "refresh token expired".into(),
        ));
    }
    tx.execute_raw(stmt(
        "UPDATE buyer_refresh_tokens SET used_at = now() WHERE tenant_id = $1 AND id = $2",
        vec![tenant.0.into(), id.into()],
    ))
    .await?;
    let refresh_token = insert_refresh_token(core, &tx, buyer, family).await?;
    tx.commit().await?;
    let (access_token, access_expires_at) = issue_buyer_token(core, tenant, buyer)?;
    Ok(BuyerSession {
        tenant,
        buyer_id: buyer,
        access_token,
        access_expires_at,
        refresh_token,
        new_buyer: false,
    })
}

/// `buyerLogout`: ends the buyer's session on this device. The access token in use stops
/// working at once (a revocation marker, like staff logout); the refresh token, when given and
/// the buyer's own, is revoked with its whole family (every token since that login). Another
/// buyer's or a staff refresh token revokes nothing.
pub async fn buyer_logout(
    core: &Core,
    ctx: &RequestCtx,
    refresh: Option<&str>,
) -> ServiceResult<()> {
    let uphub_tenants::Principal::Buyer {
        buyer_id, token_id, ..
    } = &ctx.principal
    else {
        return Err(ServiceError::forbidden(
            "only a storefront buyer session can log out here",
        ));
    };
    if let Some((tenant, secret)) =
        refresh.and_then(|r| split_token(BUYER_REFRESH_PREFIX, r.trim()))
        && tenant == ctx.tenant
    {
        let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
        tx.execute_raw(stmt(
            "UPDATE buyer_refresh_tokens SET revoked_at = now()
             WHERE tenant_id = $1 AND revoked_at IS NULL AND family_id = (
               SELECT family_id FROM buyer_refresh_tokens
               WHERE tenant_id = $1 AND token_hash = $2 AND buyer_id = $3)",
            vec![
                tenant.0.into(),
                sha256(secret.as_bytes()).into(),
                (*buyer_id).into(),
            ],
        ))
        .await?;
        tx.commit().await?;
    }
    let ttl = core.cfg.access_token_ttl.as_secs() + 10;
    crate::ratelimit::set_marker(
        core,
        &crate::ratelimit::deny_token_key(core, ctx, *token_id),
        ttl,
    )
    .await
}

/// Runs an upsert that returns `id`; the buyer is new when it returns the id we proposed.
async fn upsert_buyer(
    core: &Core,
    tenant: TenantId,
    sql: &str,
    values: impl FnOnce(Uuid) -> Vec<sea_orm::Value>,
) -> ServiceResult<(Uuid, bool)> {
    let proposed = Uuid::now_v7();
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let row = tx
        .query_one_raw(stmt(sql, values(proposed)))
        .await?
        .context("buyer upsert returns its row")?;
    let id: Uuid = row.try_get("", "id")?;
    tx.commit().await?;
    Ok((id, id == proposed))
}

/// `buyerLoginWechat`: a `wx.login` code → the buyer with that openid (created on first login).
pub async fn buyer_login_wechat(
    core: &Core,
    tenant_slug: &str,
    code: &str,
) -> ServiceResult<BuyerSession> {
    let code = parse_platform_code("code", code)?;
    let tenant = storefront(core, tenant_slug).await?;
    let client = credentials(core, tenant).await?.wechat()?;
    let s = client
        .code_to_session(&code)
        .await
        .map_err(|e| platform_error("code", e))?;
    let (id, new_buyer) = upsert_buyer(
        core,
        tenant,
        "INSERT INTO buyers (tenant_id, id, wechat_openid, wechat_unionid) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, wechat_openid) WHERE wechat_openid IS NOT NULL DO UPDATE SET
           wechat_unionid = COALESCE(EXCLUDED.wechat_unionid, buyers.wechat_unionid),
           updated_at = now()
         RETURNING id",
        |proposed| {
            vec![
                tenant.0.into(),
                proposed.into(),
                s.openid.clone().into(),
                s.unionid.clone().into(),
            ]
        },
    )
    .await?;
    session(core, tenant, id, new_buyer).await
}

/// `buyerLoginAlipay`: a `my.getAuthCode` code → the buyer with that Alipay user.
pub async fn buyer_login_alipay(
    core: &Core,
    tenant_slug: &str,
    code: &str,
) -> ServiceResult<BuyerSession> {
    let code = parse_platform_code("code", code)?;
    let tenant = storefront(core, tenant_slug).await?;
    let client = credentials(core, tenant).await?.alipay()?;
    let user = client
        .exchange_code(&code)
        .await
        .map_err(|e| platform_error("code", e))?;
    let (id, new_buyer) = upsert_buyer(
        core,
        tenant,
        "INSERT INTO buyers (tenant_id, id, alipay_user_id) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, alipay_user_id) WHERE alipay_user_id IS NOT NULL DO UPDATE SET
           updated_at = now()
         RETURNING id",
        |proposed| {
            vec![
                tenant.0.into(),
                proposed.into(),
                user.id().to_owned().into(),
            ]
        },
    )
    .await?;
    session(core, tenant, id, new_buyer).await
}

/// The buyer's phone as stored: ciphertext, blind index, mask.
fn phone_columns(dek: &DataKey, tenant: TenantId, normalized: &str) -> (Vec<u8>, Vec<u8>, String) {
    (
        dek.encrypt(normalized, &pii::aad(tenant, "buyers.phone")),
        dek.blind_index("phone", normalized),
        mask_phone(normalized),
    )
}

/// What `buyerSmsCodeSend` tells the client: the same for every phone, registered or not.
#[derive(Debug, Clone, Copy)]
pub struct SmsCodeSent {
    /// The earliest a new code for this phone can be asked for.
    pub resend_after_secs: u64,
    pub expires_in_secs: u64,
}

/// Fixed-window counters, all or nothing: KEYS are counters, ARGV pairs (limit, window ms).
/// Returns {0, 0} when admitted (every counter charged), else {i, ms until counter i resets}.
static WINDOWS_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i = 1, #KEYS do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  if c >= tonumber(ARGV[2 * i - 1]) then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then
      redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
      ttl = tonumber(ARGV[2 * i])
    end
    return {i, ttl}
  end
end
for i = 1, #KEYS do
  if redis.call('INCR', KEYS[i]) == 1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
  end
end
return {0, 0}
"#,
    )
});

/// Checks a code and counts a wrong one. {0} no code, {1} match (deleted), {2, n} wrong and
/// burned, {3, n} wrong with attempts left.
static VERIFY_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local h = redis.call('HGET', KEYS[1], 'h')
if not h then return {0, 0} end
if h == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {1, 0}
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
if n >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return {2, n}
end
return {3, n}
"#,
    )
});

fn sms_code_key(core: &Core, tenant: TenantId, phone_index: &[u8]) -> String {
    core.key(
        &tenant.to_string(),
        &format!("sms:code:{}", hex::encode(phone_index)),
    )
}

fn sms_code_mac(dek: &DataKey, phone: &MobilePhone, code: &str) -> String {
    hex::encode(dek.blind_index("sms-login-code", &format!("{}\0{code}", phone.as_str())))
}

/// `buyerSmsCodeSend`: texts a 6-digit login code to `phone`, within the per-phone and per-IP
/// limits. The answer does not depend on whether the phone belongs to a buyer.
pub async fn buyer_sms_code_send(
    core: &Core,
    tenant_slug: &str,
    phone: &str,
    ip: &str,
) -> ServiceResult<SmsCodeSent> {
    let phone = MobilePhone::parse("phone", phone)?;
    let tenant = storefront(core, tenant_slug).await?;
    let creds = credentials(core, tenant).await?;
    let client = creds.sms()?;
    let phone_index = creds.dek.blind_index("phone", phone.as_str());
    let tag = tenant.to_string();
    let phone_hex = hex::encode(&phone_index);
    let mut keys = Vec::new();
    let mut args: Vec<u64> = Vec::new();
    for (who, limits) in [
        (format!("sms:phone:{phone_hex}"), SMS_PER_PHONE),
        (format!("sms:ip:{ip}"), SMS_PER_IP),
    ] {
        for (limit, window) in limits {
            keys.push(core.key(&tag, &format!("{who}:{window}")));
            args.push(u64::from(limit));
            args.push(window * 1000);
        }
    }
    let mut conn = core.redis.clone();
    let mut inv = WINDOWS_SCRIPT.prepare_invoke();
    for k in &keys {
        inv.key(k);
    }
    for a in &args {
        inv.arg(*a);
    }
    let (which, ttl_ms): (i64, i64) = inv.invoke_async(&mut conn).await?;
    if which != 0 {
        return Err(ServiceError::RateLimited {
            retry_after_ms: ttl_ms.max(1000) as u64,
        });
    }
    let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
    let key = sms_code_key(core, tenant, &phone_index);
    // A new code replaces the previous one and its attempt count.
    let _: () = redis::pipe()
        .atomic()
        .del(&key)
        .hset(&key, "h", sms_code_mac(&creds.dek, &phone, &code))
        .hset(&key, "n", 0)
        .pexpire(&key, (SMS_CODE_TTL_SECS * 1000) as i64)
        .query_async(&mut conn)
        .await?;
    let sent = client
        .send_login_code(
            phone.as_str(),
            &code,
            (SMS_CODE_TTL_SECS / 60) as u32,
            &Uuid::now_v7().to_string(),
        )
        .await;
    if let Err(e) = sent {
        let _: Result<i64, redis::RedisError> =
            redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
        return Err(match e {
            IdentityError::Rejected { code, .. } if code == "INVALID_PHONE" => {
                invalid("phone", "this number cannot receive SMS")
            }
            other => platform_error("phone", other),
        });
    }
    Ok(SmsCodeSent {
        resend_after_secs: SMS_PER_PHONE[0].1,
        expires_in_secs: SMS_CODE_TTL_SECS,
    })
}

/// `buyerLoginSms`: phone + code → the buyer with that phone (created on first login). A wrong
/// code is INVALID_CREDENTIALS; the [`SMS_MAX_ATTEMPTS`]th wrong one burns the code.
pub async fn buyer_login_sms(
    core: &Core,
    tenant_slug: &str,
    phone: &str,
    code: &str,
) -> ServiceResult<BuyerSession> {
    let phone = MobilePhone::parse("phone", phone)?;
    let code = parse_sms_code(code)?;
    let tenant = storefront(core, tenant_slug).await?;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let dek = pii::data_key(core, &tx).await?;
    tx.commit().await?;
    let (ct, index, masked) = phone_columns(&dek, tenant, phone.as_str());
    let mut conn = core.redis.clone();
    let (outcome, _attempts): (i64, i64) = VERIFY_SCRIPT
        .key(sms_code_key(core, tenant, &index))
        .arg(sms_code_mac(&dek, &phone, &code))
        .arg(SMS_MAX_ATTEMPTS)
        .invoke_async(&mut conn)
        .await?;
    match outcome {
        1 => {}
        3 => return Err(ServiceError::InvalidCredentials),
        2 => {
            return Err(invalid(
                "code",
                "too many wrong codes: this code is no longer valid; request a new one",
            ));
        }
        _ => {
            return Err(invalid(
                "code",
                "no valid code for this phone (expired, used or never sent); request a new one",
            ));
        }
    }
    let (id, new_buyer) = upsert_buyer(
        core,
        tenant,
        "INSERT INTO buyers (tenant_id, id, phone_ct, phone_index, phone_masked)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, phone_index) WHERE phone_index IS NOT NULL DO UPDATE SET
           updated_at = now()
         RETURNING id",
        |proposed| {
            vec![
                tenant.0.into(),
                proposed.into(),
                ct.into(),
                index.into(),
                masked.into(),
            ]
        },
    )
    .await?;
    session(core, tenant, id, new_buyer).await
}

// ------------------------------------------------------------------------ the signed-in buyer

/// The calling buyer, or FORBIDDEN for any other principal (staff and API keys included).
fn require_buyer(ctx: &RequestCtx) -> ServiceResult<Uuid> {
    ctx.buyer_id()
        .ok_or_else(|| ServiceError::forbidden("only a storefront buyer session can do this"))
}

/// A buyer as the buyer sees themself.
#[derive(Debug, Clone)]
pub struct BuyerProfile {
    pub id: Uuid,
    pub phone_masked: Option<String>,
    pub nickname: Option<String>,
    pub has_wechat: bool,
    pub has_alipay: bool,
    pub created_at: DateTime<Utc>,
}

const PROFILE_COLUMNS: &str = "id, phone_masked, nickname, wechat_openid IS NOT NULL AS has_wechat,
     alipay_user_id IS NOT NULL AS has_alipay, created_at";

fn profile_from_row(r: &QueryResult) -> ServiceResult<BuyerProfile> {
    Ok(BuyerProfile {
        id: r.try_get("", "id")?,
        phone_masked: r.try_get("", "phone_masked")?,
        nickname: r.try_get("", "nickname")?,
        has_wechat: r.try_get("", "has_wechat")?,
        has_alipay: r.try_get("", "has_alipay")?,
        created_at: r
            .try_get::<DateTime<chrono::FixedOffset>>("", "created_at")?
            .to_utc(),
    })
}

/// `buyerMe`.
pub async fn buyer_me(core: &Core, ctx: &RequestCtx) -> ServiceResult<BuyerProfile> {
    let buyer = require_buyer(ctx)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            &format!("SELECT {PROFILE_COLUMNS} FROM buyers WHERE tenant_id = $1 AND id = $2"),
            vec![ctx.tenant.0.into(), buyer.into()],
        ))
        .await?;
    tx.commit().await?;
    match row {
        Some(r) => profile_from_row(&r),
        None => Err(ServiceError::Unauthenticated("unknown buyer".into())),
    }
}

/// `buyerPhoneBind`: a phone-number button code → the WeChat-verified phone on the caller. A
/// phone already on another buyer of the store is a CONFLICT (merging is not done here).
pub async fn buyer_bind_phone(
    core: &Core,
    ctx: &RequestCtx,
    code: &str,
) -> ServiceResult<BuyerProfile> {
    let buyer = require_buyer(ctx)?;
    let code = parse_platform_code("code", code)?;
    let tenant = ctx.tenant;
    let client = credentials(core, tenant).await?.wechat()?;
    let info = client
        .phone_number(&code)
        .await
        .map_err(|e| platform_error("code", e))?;
    let normalized = if info.country_code.is_empty() || info.country_code == "86" {
        normalize_phone(&info.pure_phone_number)
    } else {
        // Other countries keep their code, so a foreign number never collides with a mainland one.
        normalize_phone(&format!(
            "00{}{}",
            info.country_code, info.pure_phone_number
        ))
    };
    if normalized.len() < 5 {
        return Err(ServiceError::Internal(anyhow::anyhow!(
            "WeChat returned an unusable phone number"
        )));
    }
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let dek = pii::data_key(core, &tx).await?;
    let (ct, index, masked) = phone_columns(&dek, tenant, &normalized);
    let holder = tx
        .query_one_raw(stmt(
            "SELECT id FROM buyers WHERE tenant_id = $1 AND phone_index = $2",
            vec![tenant.0.into(), index.clone().into()],
        ))
        .await?
        .map(|r| r.try_get::<Uuid>("", "id"))
        .transpose()?;
    let conflict = || {
        ServiceError::conflict(
            "code",
            "this phone number already belongs to another account of this store",
        )
    };
    if holder.is_some_and(|h| h != buyer) {
        return Err(conflict());
    }
    let row = tx
        .query_one_raw(stmt(
            &format!(
                "UPDATE buyers SET phone_ct = $3, phone_index = $4, phone_masked = $5, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 RETURNING {PROFILE_COLUMNS}"
            ),
            vec![
                tenant.0.into(),
                buyer.into(),
                ct.into(),
                index.into(),
                masked.into(),
            ],
        ))
        .await;
    let row = match row {
        Ok(r) => r,
        // Another buyer bound the same phone between the check and the update.
        Err(e)
            if matches!(
                e.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            return Err(conflict());
        }
        Err(e) => return Err(e.into()),
    };
    let Some(row) = row else {
        return Err(ServiceError::Unauthenticated("unknown buyer".into()));
    };
    let profile = profile_from_row(&row)?;
    tx.commit().await?;
    Ok(profile)
}

// --------------------------------------------------------------------------------- addresses

#[derive(Debug, Clone)]
pub struct AddressInput {
    pub receiver_name: String,
    pub receiver_phone: String,
    pub province: String,
    pub city: String,
    /// May be empty: a few prefecture-level cities (e.g. 东莞市) have no districts.
    pub district: String,
    pub detail: String,
    pub is_default: bool,
}

/// An address as its buyer sees it: in clear, it is theirs.
#[derive(Debug, Clone)]
pub struct BuyerAddress {
    pub id: Uuid,
    pub receiver_name: String,
    pub receiver_phone: String,
    pub province: String,
    pub city: String,
    pub district: String,
    pub detail: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

struct ParsedAddress {
    name: String,
    phone: String,
    province: String,
    city: String,
    district: String,
    detail: String,
}

fn parse_address(a: &AddressInput) -> ServiceResult<ParsedAddress> {
    let name = parse_text("receiverName", &a.receiver_name, 30, false)?;
    let raw_phone = a.receiver_phone.trim();
    let phone = normalize_phone(raw_phone);
    let phone_chars_ok = raw_phone.chars().all(|c| {
        c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '(' | ')') || ('０'..='９').contains(&c)
    });
    if !phone_chars_ok || raw_phone.chars().count() > 32 || !(7..=15).contains(&phone.len()) {
        return Err(invalid(
            "receiverPhone",
            "must be a phone number of 7-15 digits",
        ));
    }
    Ok(ParsedAddress {
        name,
        phone,
        province: parse_text("province", &a.province, 30, false)?,
        city: parse_text("city", &a.city, 30, false)?,
        district: parse_text("district", &a.district, 30, true)?,
        detail: parse_text("detail", &a.detail, 120, false)?,
    })
}

fn address_aad(tenant: TenantId, column: &str, id: Uuid) -> Vec<u8> {
    pii::aad(tenant, &format!("buyer_addresses.{column}:{id}"))
}

const ADDRESS_COLUMNS: &str =
    "id, name_ct, phone_ct, detail_ct, province, city, district, is_default, created_at";

fn address_from_row(
    dek: &DataKey,
    tenant: TenantId,
    r: &QueryResult,
) -> ServiceResult<BuyerAddress> {
    address_from_columns(dek, tenant, r, "id", "created_at")
}

/// An address from a row whose id and creation time may carry other names (a join's aliases).
pub(crate) fn address_from_columns(
    dek: &DataKey,
    tenant: TenantId,
    r: &QueryResult,
    id_column: &str,
    created_column: &str,
) -> ServiceResult<BuyerAddress> {
    let id: Uuid = r.try_get("", id_column)?;
    let open = |column: &str| -> ServiceResult<String> {
        let ct: Vec<u8> = r.try_get("", &format!("{column}_ct"))?;
        dek.decrypt(&ct, &address_aad(tenant, column, id))
            .map_err(|e| anyhow::anyhow!("decrypting buyer_addresses.{column} of {id}: {e}").into())
    };
    Ok(BuyerAddress {
        id,
        receiver_name: open("name")?,
        receiver_phone: open("phone")?,
        detail: open("detail")?,
        province: r.try_get("", "province")?,
        city: r.try_get("", "city")?,
        district: r.try_get("", "district")?,
        is_default: r.try_get("", "is_default")?,
        created_at: r
            .try_get::<DateTime<chrono::FixedOffset>>("", created_column)?
            .to_utc(),
    })
}

/// Locks the buyer row, so address count and default changes of one buyer are serialized.
async fn lock_buyer(tx: &TenantTx, buyer: Uuid) -> ServiceResult<()> {
    let row = tx
        .query_one_raw(stmt(
            "SELECT id FROM buyers WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            vec![tx.tenant().0.into(), buyer.into()],
        ))
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(ServiceError::Unauthenticated("unknown buyer".into())),
    }
}

/// `buyerAddressCreate`: the buyer's first address, or one with `is_default`, becomes the default.
pub async fn buyer_address_create(
    core: &Core,
    ctx: &RequestCtx,
    input: AddressInput,
) -> ServiceResult<BuyerAddress> {
    let buyer = require_buyer(ctx)?;
    let a = parse_address(&input)?;
    let tenant = ctx.tenant;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    lock_buyer(&tx, buyer).await?;
    let count: i64 = tx
        .query_one_raw(stmt(
            "SELECT count(*) AS n FROM buyer_addresses WHERE tenant_id = $1 AND buyer_id = $2",
            vec![tenant.0.into(), buyer.into()],
        ))
        .await?
        .context("count row")?
        .try_get("", "n")?;
    if count >= MAX_ADDRESSES {
        return Err(ServiceError::Conflict {
            field: None,
            message: format!("at most {MAX_ADDRESSES} addresses; delete one first"),
        });
    }
    let is_default = input.is_default || count == 0;
    if is_default {
        tx.execute_raw(stmt(
            "UPDATE buyer_addresses SET is_default = false
             WHERE tenant_id = $1 AND buyer_id = $2 AND is_default",
            vec![tenant.0.into(), buyer.into()],
        ))
        .await?;
    }
    let dek = pii::data_key(core, &tx).await?;
    let id = Uuid::now_v7();
    let seal = |column: &str, v: &str| dek.encrypt(v, &address_aad(tenant, column, id));
    let full = format!("{}{}{}{}", a.province, a.city, a.district, a.detail);
    let row = tx
        .query_one_raw(stmt(
            &format!(
                "INSERT INTO buyer_addresses (tenant_id, id, buyer_id, name_ct, phone_ct, detail_ct,
                     name_masked, phone_masked, province, city, district, detail_masked, is_default)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 RETURNING {ADDRESS_COLUMNS}"
            ),
            vec![
                tenant.0.into(),
                id.into(),
                buyer.into(),
                seal("name", &a.name).into(),
                seal("phone", &a.phone).into(),
                seal("detail", &a.detail).into(),
                mask_name(&a.name).into(),
                mask_phone(&a.phone).into(),
                a.province.clone().into(),
                a.city.clone().into(),
                a.district.clone().into(),
                mask_address(&full).into(),
                is_default.into(),
            ],
        ))
        .await?
        .context("insert returns the row")?;
    let address = address_from_row(&dek, tenant, &row)?;
    tx.commit().await?;
    Ok(address)
}

/// `buyerAddressDelete`: only the caller's own addresses; another buyer's (or tenant's) id is
/// NOT_FOUND like a missing one. Deleting the default promotes the newest remaining address.
pub async fn buyer_address_delete(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<Uuid> {
    let buyer = require_buyer(ctx)?;
    let tenant = ctx.tenant;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    lock_buyer(&tx, buyer).await?;
    let deleted = tx
        .query_one_raw(stmt(
            "DELETE FROM buyer_addresses WHERE tenant_id = $1 AND buyer_id = $2 AND id = $3
             RETURNING is_default",
            vec![tenant.0.into(), buyer.into(), id.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    if deleted.try_get::<bool>("", "is_default")? {
        tx.execute_raw(stmt(
            "UPDATE buyer_addresses SET is_default = true
             WHERE tenant_id = $1 AND id = (
               SELECT id FROM buyer_addresses WHERE tenant_id = $1 AND buyer_id = $2
               ORDER BY created_at DESC, id DESC LIMIT 1)",
            vec![tenant.0.into(), buyer.into()],
        ))
        .await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// `buyerAddresses`: the caller's addresses, default first, then newest first.
pub async fn buyer_addresses(core: &Core, ctx: &RequestCtx) -> ServiceResult<Vec<BuyerAddress>> {
    let buyer = require_buyer(ctx)?;
    let tenant = ctx.tenant;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let rows = tx
        .query_all_raw(stmt(
            &format!(
                "SELECT {ADDRESS_COLUMNS} FROM buyer_addresses WHERE tenant_id = $1 AND buyer_id = $2
                 ORDER BY is_default DESC, created_at DESC, id DESC"
            ),
            vec![tenant.0.into(), buyer.into()],
        ))
        .await?;
    let dek = pii::data_key(core, &tx).await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| address_from_row(&dek, tenant, r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobile_phones_normalize_and_other_input_is_refused() {
        for ok in [
            "13800138000",
            "+86 138-0013-8000",
            "0086 13800138000",
            "１３８００１３８０００",
        ] {
            assert_eq!(
                MobilePhone::parse("phone", ok).map(|p| p.0).ok().as_deref(),
                Some("13800138000"),
                "{ok}"
            );
        }
        for bad in [
            "",
            "12345",
            "23800138000",
            "abc13800138000",
            "138001380001",
            "+1 415 555 0100",
        ] {
            assert!(MobilePhone::parse("phone", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sms_codes_are_six_digits() {
        assert!(parse_sms_code(" 012345 ").is_ok());
        for bad in ["12345", "1234567", "12345a", "１２３４５６"] {
            assert!(parse_sms_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platform_codes_are_printable_ascii() {
        assert!(parse_platform_code("code", "0a1B2c3D-_").is_ok());
        for bad in ["", "a b", "码", &"x".repeat(257)] {
            assert!(parse_platform_code("code", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platform_outcomes_map_to_codes_buyers_can_act_on() {
        use uphub_domain::error::ErrorCode;
        use uphub_payments::identity_error::IdentityPlatform;
        let p = IdentityPlatform::WechatMiniProgram;
        let e = |f: fn(IdentityPlatform, String, String) -> IdentityError| {
            platform_error("code", f(p, String::new(), String::new())).code()
        };
        assert_eq!(
            e(|platform, code, message| IdentityError::CodeInvalid {
                platform,
                code,
                message
            }),
            ErrorCode::Validation
        );
        assert_eq!(
            e(|platform, code, message| IdentityError::CodeUsed {
                platform,
                code,
                message
            }),
            ErrorCode::Validation
        );
        assert_eq!(
            e(|platform, code, message| IdentityError::RateLimited {
                platform,
                code,
                message
            }),
            ErrorCode::RateLimited
        );
        assert_eq!(
            e(|platform, code, message| IdentityError::Blocked {
                platform,
                code,
                message
            }),
            ErrorCode::Forbidden
        );
        assert_eq!(
            e(|platform, code, message| IdentityError::Unavailable {
                platform,
                code,
                message
            }),
            ErrorCode::Internal
        );
    }

    #[test]
    fn addresses_are_validated_field_by_field() {
        let good = AddressInput {
            receiver_name: "张三".into(),
            receiver_phone: "138 0013 8000".into(),
            province: "广东省".into(),
            city: "东莞市".into(),
            district: "".into(),
            detail: "南城街道某路1号".into(),
            is_default: false,
        };
        let parsed = parse_address(&good).map_err(|e| e.to_string());
        assert_eq!(parsed.map(|p| p.phone), Ok("13800138000".to_string()));
        let fields: Vec<Option<&str>> = [
            AddressInput {
                receiver_name: " ".into(),
                ..good.clone()
            },
            AddressInput {
                receiver_phone: "12".into(),
                ..good.clone()
            },
            AddressInput {
                receiver_phone: "call me 13800138000".into(),
                ..good.clone()
            },
            AddressInput {
                city: "".into(),
                ..good.clone()
            },
            AddressInput {
                detail: "x".repeat(121),
                ..good.clone()
            },
            AddressInput {
                province: "a\u{0}b".into(),
                ..good.clone()
            },
        ]
        .iter()
        .map(|a| parse_address(a).err().and_then(|e| e.field()))
        .collect();
        assert_eq!(
            fields,
            [
                Some("receiverName"),
                Some("receiverPhone"),
                Some("receiverPhone"),
                Some("city"),
                Some("detail"),
                Some("province")
            ]
        );
    }
}
