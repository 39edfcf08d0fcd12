//! Payments of own-channel orders: per-tenant merchant settings, starting a WeChat Pay (JSAPI) or
//! Alipay (`alipay.trade.create`) payment, the providers' callbacks, and refunds.
//!
//! A callback is applied at most once: its notification id is stored in the same transaction
//! that moves the order, and the payment row itself goes CREATED → PAID once. A payment that
//! lands on an order that can no longer take it (cancelled after its deadline, or already paid
//! by another payment) is refunded automatically, never lost.
//!
//! Refund notices: a notice for a refund we do not know (yet) is rejected with a 5xx-class
//! answer, so the provider retries it; our refund rows only exist once the payment notice was
//! applied, so a refund notice that overtakes its payment notice is applied on a later retry.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uphub_domain::identity::Permission;
use uphub_domain::order::{OrderStatus, check_transition};
use uphub_payments::PayError;
use uphub_payments::alipay::{self as ali, AlipayClient, AlipayConfig};
use uphub_payments::keys::{PrivateKey, PublicKey};
use uphub_payments::wechatpay::{
    self as wx, ApiV3Key, JsapiPayParams, MerchantCredentials, NotifyPayload, PlatformKeys,
    SignedHeaders, WechatPayClient, WechatPayConfig,
};
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

use crate::audit::{self, require};
use crate::checkout::{
    Claim, idem_abandon, idem_claim, idem_claim_in, idem_finish, insert_event, invalid, parse_key,
    request_hash, require_buyer, stmt,
};
use crate::config::Env;
use crate::orders::{LiveOrderEvent, publish_live};
use crate::{Core, ServiceError, ServiceResult};

const WECHAT_PROD_URL: &str = "https://api.mch.weixin.qq.com";
const ALIPAY_PROD_URL: &str = "https://openapi.alipay.com/gateway.do";
/// A paid order keeps its stock until it ships or is cancelled.
const PAID_HOLD_DAYS: i64 = 365;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Provider {
    WechatPay,
    Alipay,
}

impl Provider {
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::WechatPay => "WECHAT_PAY",
            Provider::Alipay => "ALIPAY",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "WECHAT_PAY" => Some(Provider::WechatPay),
            "ALIPAY" => Some(Provider::Alipay),
            _ => None,
        }
    }

    fn hook_path(self) -> &'static str {
        match self {
            Provider::WechatPay => "wechat",
            Provider::Alipay => "alipay",
        }
    }
}

// --------------------------------------------------------------- settings ---

#[derive(Debug, Clone)]
pub struct WechatPayInput {
    pub mchid: String,
    pub appid: String,
    pub merchant_serial_no: String,
    pub merchant_private_key_pem: String,
    pub apiv3_key: String,
    pub platform_serial: String,
    pub platform_public_key_pem: String,
    pub base_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AlipayPayInput {
    pub app_id: String,
    pub app_private_key_pem: String,
    pub alipay_public_key_pem: String,
    pub gateway_url: Option<String>,
}

/// Sections left out stay as they are.
#[derive(Debug, Clone, Default)]
pub struct PaymentSettingsInput {
    pub notify_base_url: Option<String>,
    pub wechat: Option<WechatPayInput>,
    pub alipay: Option<AlipayPayInput>,
}

/// What staff may see of the settings: never a secret.
#[derive(Debug, Clone)]
pub struct PaymentSettingsView {
    pub notify_base_url: Option<String>,
    pub wechat_mchid: Option<String>,
    pub wechat_appid: Option<String>,
    pub alipay_app_id: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

fn secret_aad(tenant: TenantId, column: &str) -> Vec<u8> {
    crate::pii::aad(tenant, &format!("payment_settings.{column}"))
}

fn check_url(core: &Core, field: &'static str, url: Option<&str>) -> ServiceResult<Option<String>> {
    let Some(u) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if core.cfg.env == Env::Prod {
        return Err(invalid(field, "can only be overridden outside production"));
    }
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() > 300 {
        return Err(invalid(field, "must be an http(s) URL"));
    }
    Ok(Some(u.trim_end_matches('/').to_string()))
}

fn check_text(field: &'static str, v: &str, max: usize) -> ServiceResult<String> {
    let v = v.trim();
    if v.is_empty() || v.len() > max {
        return Err(invalid(field, format!("must be 1-{max} characters")));
    }
    Ok(v.to_string())
}

/// `paymentSettingsSet`: CHANNEL_MANAGE. Keys are parsed before anything is stored.
pub async fn payment_settings_set(
    core: &Core,
    ctx: &RequestCtx,
    input: PaymentSettingsInput,
) -> ServiceResult<PaymentSettingsView> {
    require(ctx, Permission::ChannelManage)?;
    let tenant = ctx.tenant;
    let notify = check_url(core, "notifyBaseUrl", input.notify_base_url.as_deref())?;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let dek = crate::pii::data_key(core, &tx).await?;
    tx.execute_raw(stmt(
        "INSERT INTO payment_settings (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING",
        vec![tenant.0.into()],
    ))
    .await?;
    if let Some(n) = &notify {
        tx.execute_raw(stmt(
            "UPDATE payment_settings SET notify_base_url = $2, updated_at = now() WHERE tenant_id = $1",
            vec![tenant.0.into(), n.clone().into()],
        ))
        .await?;
    }
    if let Some(w) = &input.wechat {
        let mchid = check_text("wechat.mchid", &w.mchid, 32)?;
        let appid = check_text("wechat.appid", &w.appid, 64)?;
        let serial = check_text("wechat.merchantSerialNo", &w.merchant_serial_no, 128)?;
        let pserial = check_text("wechat.platformSerial", &w.platform_serial, 128)?;
        PrivateKey::from_pem(&w.merchant_private_key_pem)
            .map_err(|e| invalid("wechat.merchantPrivateKeyPem", e.to_string()))?;
        ApiV3Key::new(&w.apiv3_key).map_err(|e| invalid("wechat.apiV3Key", e.to_string()))?;
        PublicKey::from_pem(&w.platform_public_key_pem)
            .map_err(|e| invalid("wechat.platformPublicKeyPem", e.to_string()))?;
        let base = check_url(core, "wechat.baseUrl", w.base_url.as_deref())?;
        tx.execute_raw(stmt(
            "UPDATE payment_settings SET wechat_mchid = $2, wechat_appid = $3, wechat_serial_no = $4,
                wechat_private_key_ct = $5, wechat_apiv3_key_ct = $6, wechat_platform_serial = $7,
                wechat_platform_public_key = $8, wechat_base_url = $9, updated_at = now()
             WHERE tenant_id = $1",
            vec![
                tenant.0.into(),
                mchid.into(),
                appid.into(),
                serial.into(),
                dek.encrypt(
                    &w.merchant_private_key_pem,
                    &secret_aad(tenant, "wechat_private_key"),
                )
                .into(),
                dek.encrypt(&w.apiv3_key, &secret_aad(tenant, "wechat_apiv3_key"))
                    .into(),
                pserial.into(),
                w.platform_public_key_pem.trim().to_string().into(),
                base.into(),
            ],
        ))
        .await?;
    }
    if let Some(a) = &input.alipay {
        let app_id = check_text("alipay.appId", &a.app_id, 64)?;
        PrivateKey::from_pem(&a.app_private_key_pem)
            .map_err(|e| invalid("alipay.appPrivateKeyPem", e.to_string()))?;
        PublicKey::from_pem(&a.alipay_public_key_pem)
            .map_err(|e| invalid("alipay.alipayPublicKeyPem", e.to_string()))?;
        let gateway = check_url(core, "alipay.gatewayUrl", a.gateway_url.as_deref())?;
        tx.execute_raw(stmt(
            "UPDATE payment_settings SET alipay_app_id = $2, alipay_private_key_ct = $3,
                alipay_public_key = $4, alipay_gateway_url = $5, updated_at = now()
             WHERE tenant_id = $1",
            vec![
                tenant.0.into(),
                app_id.into(),
                dek.encrypt(
                    &a.app_private_key_pem,
                    &secret_aad(tenant, "alipay_private_key"),
                )
                .into(),
                a.alipay_public_key_pem.trim().to_string().into(),
                gateway.into(),
            ],
        ))
        .await?;
    }
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "payment_settings.updated",
        None,
        json!({"wechat": input.wechat.is_some(), "alipay": input.alipay.is_some(),
               "notifyBaseUrl": notify.is_some()}),
    )
    .await?;
    let view = settings_view(&tx).await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    Ok(view)
}

async fn settings_view(tx: &TenantTx) -> ServiceResult<PaymentSettingsView> {
    let row = tx
        .query_one_raw(stmt(
            "SELECT notify_base_url, wechat_mchid, wechat_appid, alipay_app_id, updated_at
             FROM payment_settings WHERE tenant_id = $1",
            vec![tx.tenant().0.into()],
        ))
        .await?;
    Ok(match row {
        Some(r) => PaymentSettingsView {
            notify_base_url: r.try_get("", "notify_base_url")?,
            wechat_mchid: r.try_get("", "wechat_mchid")?,
            wechat_appid: r.try_get("", "wechat_appid")?,
            alipay_app_id: r.try_get("", "alipay_app_id")?,
            updated_at: Some(r.try_get("", "updated_at")?),
        },
        None => PaymentSettingsView {
            notify_base_url: None,
            wechat_mchid: None,
            wechat_appid: None,
            alipay_app_id: None,
            updated_at: None,
        },
    })
}

/// `paymentSettings`: CHANNEL_MANAGE; secrets never leave.
pub async fn payment_settings(core: &Core, ctx: &RequestCtx) -> ServiceResult<PaymentSettingsView> {
    require(ctx, Permission::ChannelManage)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let v = settings_view(&tx).await?;
    tx.commit().await?;
    Ok(v)
}

/// A tenant's provider clients, built from its stored settings.
struct Merchant {
    notify_base: String,
    wechat: Option<WechatPayClient>,
    alipay: Option<AlipayClient>,
}

impl Merchant {
    fn notify_url(&self, tenant: TenantId, p: Provider) -> String {
        format!("{}/pay/{}/{}", self.notify_base, p.hook_path(), tenant.0)
    }

    fn wechat(&self) -> ServiceResult<&WechatPayClient> {
        self.wechat.as_ref().ok_or_else(|| {
            ServiceError::conflict("provider", "the store has not set up WeChat Pay")
        })
    }

    fn alipay(&self) -> ServiceResult<&AlipayClient> {
        self.alipay
            .as_ref()
            .ok_or_else(|| ServiceError::conflict("provider", "the store has not set up Alipay"))
    }
}

/// Built merchants by tenant, with the `payment_settings.updated_at` they were built from. Every
/// use first reads that version (in a statement the caller makes anyway, or in one round trip),
/// so a change made through any process is picked up by the next request; a hit saves reading
/// and decrypting the settings, parsing two RSA keys and building an HTTP client — and keeps
/// that client's connections to the provider alive across payments.
type MerchantCache = Mutex<HashMap<TenantId, (String, Arc<Merchant>)>>;
static MERCHANTS: LazyLock<MerchantCache> = LazyLock::new(|| Mutex::new(HashMap::new()));
/// More tenants than this paying at once: start over rather than track recency.
const MERCHANT_CACHE_MAX: usize = 10_000;

/// The tenant's merchant as of settings `version` (`updated_at::text`; None: no settings).
async fn merchant_at(
    core: &Core,
    tenant: TenantId,
    version: Option<String>,
) -> ServiceResult<Option<Arc<Merchant>>> {
    let Some(version) = version else {
        return Ok(None);
    };
    let hit = MERCHANTS.lock().ok().and_then(|c| {
        c.get(&tenant)
            .filter(|(v, _)| *v == version)
            .map(|(_, m)| m.clone())
    });
    if let Some(m) = hit {
        return Ok(Some(m));
    }
    let Some((loaded, m)) = merchant_load(core, tenant).await? else {
        return Ok(None);
    };
    let m = Arc::new(m);
    if let Ok(mut c) = MERCHANTS.lock() {
        if c.len() >= MERCHANT_CACHE_MAX {
            c.clear();
        }
        c.insert(tenant, (loaded, m.clone()));
    }
    Ok(Some(m))
}

/// The tenant's merchant: the settings version in one round trip, then the cache.
async fn merchant(core: &Core, tenant: TenantId) -> ServiceResult<Option<Arc<Merchant>>> {
    use sea_orm::sqlx::Row;
    let rows = uphub_tenants::tenant_read(
        &core.db,
        tenant,
        &format!(
            "SELECT updated_at::text AS v FROM payment_settings WHERE tenant_id = '{}'::uuid",
            tenant.0
        ),
    )
    .await?;
    let version = rows
        .first()
        .map(|r| r.try_get::<String, _>("v"))
        .transpose()
        .map_err(|e| anyhow::anyhow!("payment settings version: {e}"))?;
    merchant_at(core, tenant, version).await
}

/// Reads, decrypts and parses the settings; with the version they were read at.
async fn merchant_load(core: &Core, tenant: TenantId) -> ServiceResult<Option<(String, Merchant)>> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let Some(r) = tx
        .query_one_raw(stmt(
            "SELECT *, updated_at::text AS uphub_version FROM payment_settings WHERE tenant_id = $1",
            vec![tenant.0.into()],
        ))
        .await?
    else {
        tx.commit().await?;
        return Ok(None);
    };
    let dek = crate::pii::data_key(core, &tx).await?;
    tx.commit().await?;
    let open = |column: &str, ct: Vec<u8>| -> ServiceResult<String> {
        dek.decrypt(&ct, &secret_aad(tenant, column))
            .map_err(|e| anyhow::anyhow!("decrypting payment_settings.{column}: {e}").into())
    };
    let bad_key = |e: PayError| ServiceError::Internal(anyhow::anyhow!("stored payment key: {e}"));
    let wechat = match (
        r.try_get::<Option<String>>("", "wechat_mchid")?,
        r.try_get::<Option<Vec<u8>>>("", "wechat_private_key_ct")?,
        r.try_get::<Option<Vec<u8>>>("", "wechat_apiv3_key_ct")?,
    ) {
        (Some(mchid), Some(pk), Some(v3)) => {
            let platform_serial: String = r
                .try_get::<Option<String>>("", "wechat_platform_serial")?
                .unwrap_or_default();
            let platform_pem: String = r
                .try_get::<Option<String>>("", "wechat_platform_public_key")?
                .unwrap_or_default();
            let cfg = WechatPayConfig {
                base_url: r
                    .try_get::<Option<String>>("", "wechat_base_url")?
                    .unwrap_or_else(|| WECHAT_PROD_URL.to_string()),
                appid: r
                    .try_get::<Option<String>>("", "wechat_appid")?
                    .unwrap_or_default(),
                merchant: MerchantCredentials {
                    mchid,
                    serial_no: r
                        .try_get::<Option<String>>("", "wechat_serial_no")?
                        .unwrap_or_default(),
                    private_key: PrivateKey::from_pem(&open("wechat_private_key", pk)?)
                        .map_err(bad_key)?,
                },
                apiv3_key: ApiV3Key::new(&open("wechat_apiv3_key", v3)?).map_err(bad_key)?,
                platform_keys: PlatformKeys::new().with(
                    platform_serial,
                    PublicKey::from_pem(&platform_pem).map_err(bad_key)?,
                ),
            };
            Some(WechatPayClient::new(cfg).map_err(bad_key)?)
        }
        _ => None,
    };
    let alipay = match (
        r.try_get::<Option<String>>("", "alipay_app_id")?,
        r.try_get::<Option<Vec<u8>>>("", "alipay_private_key_ct")?,
    ) {
        (Some(app_id), Some(pk)) => {
            let cfg = AlipayConfig {
                gateway_url: r
                    .try_get::<Option<String>>("", "alipay_gateway_url")?
                    .unwrap_or_else(|| ALIPAY_PROD_URL.to_string()),
                app_id,
                app_private_key: PrivateKey::from_pem(&open("alipay_private_key", pk)?)
                    .map_err(bad_key)?,
                alipay_public_key: PublicKey::from_pem(
                    &r.try_get::<Option<String>>("", "alipay_public_key")?
                        .unwrap_or_default(),
                )
                .map_err(bad_key)?,
            };
            Some(AlipayClient::new(cfg).map_err(bad_key)?)
        }
        _ => None,
    };
    let version: String = r.try_get("", "uphub_version")?;
    Ok(Some((
        version,
        Merchant {
            notify_base: r
                .try_get::<Option<String>>("", "notify_base_url")?
                .unwrap_or_else(|| core.cfg.public_url.trim_end_matches('/').to_string()),
            wechat,
            alipay,
        },
    )))
}

fn provider_error(e: PayError) -> ServiceError {
    // Exactly the retryable errors (`PayError::is_retryable`): the provider was not reached,
    // failed or throttled us, and the same call may be repeated.
    let unavailable = match &e {
        PayError::RateLimited { platform, .. }
        | PayError::Unavailable { platform, .. }
        | PayError::Transport { platform, .. } => Some(match platform {
            uphub_payments::Platform::WechatPay => Provider::WechatPay,
            uphub_payments::Platform::Alipay => Provider::Alipay,
        }),
        _ => None,
    };
    if let Some(provider) = unavailable {
        tracing::warn!(error = %e, code = e.code(), "payment provider unavailable");
        ServiceError::UpstreamUnavailable {
            provider: provider.as_str(),
        }
    } else {
        ServiceError::Conflict {
            field: Some("provider"),
            message: format!("the payment provider refused: {} ({e})", e.code()),
        }
    }
}

// ----------------------------------------------------------------- create ---

#[derive(Debug, Clone)]
pub struct PaymentCreateInput {
    pub order_id: Uuid,
    pub provider: Provider,
    pub idempotency_key: String,
}

/// What the client needs to open the provider's pay sheet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentStart {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub provider: Provider,
    pub out_trade_no: String,
    pub amount_fen: i64,
    /// For `wx.requestPayment`.
    pub wechat: Option<JsapiPayParams>,
    /// For `my.tradePay({tradeNO})`.
    pub alipay_trade_no: Option<String>,
}

/// `paymentCreate`: the caller's own order awaiting payment → a payment row → the provider's
/// prepay / trade. Idempotent by key (the same key replays the same pay parameters).
///
/// One transaction claims the key, reads the order (with the settings version of the cached
/// merchant) and records the payment, so a refusal rolls the claim back with it; then the
/// provider is called outside any transaction, and the answer is stored under the key.
pub async fn payment_create(
    core: &Core,
    ctx: &RequestCtx,
    input: PaymentCreateInput,
) -> ServiceResult<PaymentStart> {
    let buyer = require_buyer(ctx)?;
    let key = parse_key(&input.idempotency_key)?;
    let hash = request_hash(&format!("{}|{}", input.order_id, input.provider.as_str()));
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let mut resume = None;
    if let Claim::Replay(v) = idem_claim_in(&tx, buyer, "paymentCreate", &key, &hash).await? {
        match resume_marker(&v) {
            // An earlier try met an unavailable provider: take the key over again (under the
            // claim's row lock, so a concurrent retry sees it running) and resume its payment.
            Some(payment) => {
                idem_take_over(&tx, buyer, &key).await?;
                resume = Some(payment);
            }
            None => {
                tx.commit().await?;
                return serde_json::from_value(v)
                    .map_err(|e| anyhow::anyhow!("stored paymentCreate answer: {e}").into());
            }
        }
    }
    let prepared = prepare(core, &tx, buyer, &input, resume).await?;
    tx.commit().await?;
    let payment_id = prepared.payment_id;
    match start(core, ctx, buyer, &input, &key, prepared).await {
        Ok(s) => Ok(s),
        Err(e @ ServiceError::UpstreamUnavailable { .. }) => {
            // The payment row stays CREATED and the key remembers it: a retry with the same key
            // asks the provider again under the same out_trade_no (idempotent there).
            let marked = async {
                let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
                idem_finish(
                    &tx,
                    buyer,
                    "paymentCreate",
                    &key,
                    &json!({RESUME_KEY: payment_id.to_string()}),
                )
                .await?;
                tx.commit().await?;
                Ok::<(), ServiceError>(())
            }
            .await;
            if let Err(m) = marked {
                tracing::warn!(error = %m, "keeping a payment to resume failed");
                idem_abandon(core, ctx, buyer, "paymentCreate", &key).await;
            }
            Err(e)
        }
        Err(e) => {
            // Refused (by the provider or before it was asked): nothing there to pay, so the
            // row is FAILED rather than left CREATED. An internal error leaves it CREATED: the
            // trade may exist, and the deadline sweep closes it.
            if !matches!(e, ServiceError::Internal(_)) {
                payment_failed(core, ctx.tenant, payment_id).await;
            }
            idem_abandon(core, ctx, buyer, "paymentCreate", &key).await;
            Err(e)
        }
    }
}

/// The answer stored under a paymentCreate key whose provider call is to be resumed.
const RESUME_KEY: &str = "resumePaymentId";

fn resume_marker(v: &Value) -> Option<Uuid> {
    v.get(RESUME_KEY)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::try_parse(s).ok())
}

/// Marks the key running again (its row is locked by the claim that just read it).
async fn idem_take_over(tx: &TenantTx, buyer: Uuid, key: &str) -> ServiceResult<()> {
    tx.execute_raw(stmt(
        "UPDATE idempotency_keys SET response = NULL, created_at = now()
         WHERE tenant_id = $1 AND actor_id = $2 AND scope = 'paymentCreate' AND key = $3",
        vec![tx.tenant().0.into(), buyer.into(), key.into()],
    ))
    .await?;
    Ok(())
}

async fn payment_failed(core: &Core, tenant: TenantId, payment: Uuid) {
    let r = async {
        let tx = TenantTx::begin(&core.db, tenant).await?;
        tx.execute_raw(stmt(
            "UPDATE payments SET status = 'FAILED', updated_at = now()
             WHERE tenant_id = $1 AND id = $2 AND status = 'CREATED'",
            vec![tenant.0.into(), payment.into()],
        ))
        .await?;
        tx.commit().await?;
        Ok::<(), ServiceError>(())
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, %payment, "marking a refused payment FAILED failed");
    }
}

/// A payment row written, ready for the provider.
struct Prepared {
    merchant: Arc<Merchant>,
    order: sea_orm::QueryResult,
    payment_id: Uuid,
    out_trade_no: String,
    amount: i64,
    number: String,
    due: DateTime<Utc>,
}

async fn prepare(
    core: &Core,
    tx: &TenantTx,
    buyer: Uuid,
    input: &PaymentCreateInput,
    resume: Option<Uuid>,
) -> ServiceResult<Prepared> {
    let tenant = tx.tenant();
    let order = tx
        .query_one_raw(stmt(
            "SELECT o.status, o.total_fen, o.payment_due_at, o.platform_order_id,
                    b.wechat_openid, b.alipay_user_id,
                    (SELECT updated_at::text FROM payment_settings s WHERE s.tenant_id = o.tenant_id) AS settings_version
             FROM orders o JOIN buyers b ON b.tenant_id = o.tenant_id AND b.id = o.buyer_id
             WHERE o.tenant_id = $1 AND o.id = $2 AND o.buyer_id = $3",
            vec![tenant.0.into(), input.order_id.into(), buyer.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    let status: String = order.try_get("", "status")?;
    let due: Option<DateTime<Utc>> = order.try_get("", "payment_due_at")?;
    if status != OrderStatus::PendingPayment.as_str() || due.is_none_or(|d| d <= core.now()) {
        return Err(ServiceError::conflict(
            "orderId",
            format!("the order is {status}, not awaiting payment"),
        ));
    }
    let due = due.unwrap_or_else(|| core.now());
    let amount: i64 = order.try_get("", "total_fen")?;
    let number: String = order.try_get("", "platform_order_id")?;
    let merchant = merchant_at(core, tenant, order.try_get("", "settings_version")?)
        .await?
        .ok_or_else(|| ServiceError::conflict("provider", "the store has not set up payments"))?;
    // Refused before a payment row exists.
    match input.provider {
        Provider::WechatPay => merchant.wechat().map(|_| ())?,
        Provider::Alipay => merchant.alipay().map(|_| ())?,
    }
    if let Some(payment_id) = resume {
        let p = tx
            .query_one_raw(stmt(
                "SELECT out_trade_no, amount_fen FROM payments
                 WHERE tenant_id = $1 AND id = $2 AND order_id = $3 AND buyer_id = $4
                   AND provider = $5 AND status = 'CREATED' AND close_state IS NULL",
                vec![
                    tenant.0.into(),
                    payment_id.into(),
                    input.order_id.into(),
                    buyer.into(),
                    input.provider.as_str().into(),
                ],
            ))
            .await?
            .ok_or_else(|| {
                ServiceError::conflict("orderId", "the payment to resume is no longer open")
            })?;
        return Ok(Prepared {
            merchant,
            order,
            payment_id,
            out_trade_no: p.try_get("", "out_trade_no")?,
            amount: p.try_get("", "amount_fen")?,
            number,
            due,
        });
    }
    let payment_id = Uuid::now_v7();
    let out_trade_no = payment_id.simple().to_string();
    tx.execute_raw(stmt(
        "INSERT INTO payments (tenant_id, id, order_id, buyer_id, provider, out_trade_no, amount_fen)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            tenant.0.into(),
            payment_id.into(),
            input.order_id.into(),
            buyer.into(),
            input.provider.as_str().into(),
            out_trade_no.clone().into(),
            amount.into(),
        ],
    ))
    .await?;
    Ok(Prepared {
        merchant,
        order,
        payment_id,
        out_trade_no,
        amount,
        number,
        due,
    })
}

async fn start(
    core: &Core,
    ctx: &RequestCtx,
    buyer: Uuid,
    input: &PaymentCreateInput,
    key: &str,
    prepared: Prepared,
) -> ServiceResult<PaymentStart> {
    let tenant = ctx.tenant;
    let Prepared {
        merchant: m,
        order,
        payment_id,
        out_trade_no,
        amount,
        number,
        due,
    } = prepared;
    let subject = format!("Order {number}");
    let mut out = PaymentStart {
        payment_id,
        order_id: input.order_id,
        provider: input.provider,
        out_trade_no: out_trade_no.clone(),
        amount_fen: amount,
        wechat: None,
        alipay_trade_no: None,
    };
    match input.provider {
        Provider::WechatPay => {
            let client = m.wechat()?;
            let openid: String = order
                .try_get::<Option<String>>("", "wechat_openid")?
                .ok_or_else(|| {
                    ServiceError::conflict("provider", "sign in with WeChat to pay with WeChat Pay")
                })?;
            let cst = FixedOffset::east_opt(8 * 3600).ok_or_else(|| anyhow::anyhow!("offset"))?;
            let prepay = client
                .jsapi_prepay(&wx::JsapiPrepayRequest {
                    description: subject,
                    out_trade_no: out_trade_no.clone(),
                    notify_url: m.notify_url(tenant, Provider::WechatPay),
                    amount_total_fen: amount,
                    payer_openid: openid,
                    attach: None,
                    time_expire: Some(
                        due.with_timezone(&cst)
                            .to_rfc3339_opts(SecondsFormat::Secs, false),
                    ),
                    profit_sharing: false,
                })
                .await
                .map_err(provider_error)?;
            out.wechat = Some(client.jsapi_pay_params(&prepay).map_err(provider_error)?);
        }
        Provider::Alipay => {
            let client = m.alipay()?;
            let buyer_id: String = order
                .try_get::<Option<String>>("", "alipay_user_id")?
                .ok_or_else(|| {
                    ServiceError::conflict("provider", "sign in with Alipay to pay with Alipay")
                })?;
            let minutes = ((due - core.now()).num_minutes()).max(1);
            let created = client
                .trade_create(&ali::TradeCreateRequest {
                    out_trade_no: out_trade_no.clone(),
                    total_amount_fen: amount,
                    subject,
                    buyer_id: Some(buyer_id),
                    notify_url: Some(m.notify_url(tenant, Provider::Alipay)),
                    timeout_express: Some(format!("{minutes}m")),
                })
                .await
                .map_err(provider_error)?;
            out.alipay_trade_no = Some(created.trade_no);
        }
    }
    let answer = serde_json::to_value(&out).map_err(anyhow::Error::from)?;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    idem_finish(&tx, buyer, "paymentCreate", key, &answer).await?;
    tx.commit().await?;
    Ok(out)
}

// -------------------------------------------------------------- callbacks ---

/// Why a callback was not accepted; the HTTP layer answers with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRejected {
    pub status: u16,
    pub message: String,
}

fn reject(status: u16, message: impl Into<String>) -> NotifyRejected {
    NotifyRejected {
        status,
        message: message.into(),
    }
}

impl From<ServiceError> for NotifyRejected {
    fn from(e: ServiceError) -> Self {
        tracing::error!(error = %e, "payment callback failed");
        reject(500, "internal error; retry")
    }
}

impl From<sea_orm::DbErr> for NotifyRejected {
    fn from(e: sea_orm::DbErr) -> Self {
        ServiceError::from(e).into()
    }
}

fn pay_reject(e: PayError) -> NotifyRejected {
    tracing::warn!(error = %e, code = e.code(), "payment callback refused");
    let status = match e {
        PayError::SignatureInvalid
        | PayError::UnknownSerial(_)
        | PayError::TimestampSkew { .. } => 401,
        _ => 400,
    };
    reject(status, e.code())
}

/// `POST /pay/wechat/{tenant}`: `header` reads a request header by name.
pub async fn wechat_notify(
    core: &Core,
    tenant: Uuid,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<(), NotifyRejected> {
    let tenant = TenantId(tenant);
    let m = merchant(core, tenant)
        .await?
        .ok_or_else(|| reject(404, "no payment settings for this store"))?;
    let client = m
        .wechat
        .as_ref()
        .ok_or_else(|| reject(404, "WeChat Pay is not set up for this store"))?;
    if let Some(kind) = header("Wechatpay-Signature-Type")
        && kind != "WECHATPAY2-SHA256-RSA2048"
    {
        return Err(reject(400, "unsupported signature type"));
    }
    let get = |name: &str| header(name).ok_or_else(|| reject(400, format!("missing {name}")));
    let signed = SignedHeaders {
        timestamp: get("Wechatpay-Timestamp")?,
        nonce: get("Wechatpay-Nonce")?,
        signature: get("Wechatpay-Signature")?,
        serial: get("Wechatpay-Serial")?,
    };
    let cfg = client.config();
    let n = wx::parse_notification(
        &cfg.platform_keys,
        &cfg.apiv3_key,
        &signed,
        body,
        core.now().timestamp(),
    )
    .map_err(pay_reject)?;
    let mchid = match &n.payload {
        NotifyPayload::Transaction(t) => &t.mchid,
        NotifyPayload::Refund(r) => &r.mchid,
    };
    if *mchid != cfg.merchant.mchid {
        return Err(reject(400, "PAY_MERCHANT_MISMATCH"));
    }
    match n.payload {
        NotifyPayload::Transaction(t) if t.trade_state == wx::TradeState::Success => {
            apply_paid(
                core,
                tenant,
                Provider::WechatPay,
                &n.id,
                &t.out_trade_no,
                t.transaction_id.as_deref(),
                t.amount_total_fen,
            )
            .await
        }
        NotifyPayload::Transaction(t) => {
            record_only(
                core,
                tenant,
                Provider::WechatPay,
                &n.id,
                &t.out_trade_no,
                "TRANSACTION_OTHER",
            )
            .await
        }
        NotifyPayload::Refund(r) => {
            let outcome = match r.refund_status {
                wx::RefundStatus::Success => Some(true),
                wx::RefundStatus::Closed | wx::RefundStatus::Abnormal => Some(false),
                _ => None,
            };
            apply_refund_notice(
                core,
                tenant,
                Provider::WechatPay,
                &n.id,
                &r.out_refund_no,
                outcome,
                Some(&r.refund_id),
            )
            .await
        }
    }
}

/// `POST /pay/alipay/{tenant}`: the form body of an Alipay notify.
pub async fn alipay_notify(core: &Core, tenant: Uuid, body: &[u8]) -> Result<(), NotifyRejected> {
    let tenant = TenantId(tenant);
    let m = merchant(core, tenant)
        .await?
        .ok_or_else(|| reject(404, "no payment settings for this store"))?;
    let client = m
        .alipay
        .as_ref()
        .ok_or_else(|| reject(404, "Alipay is not set up for this store"))?;
    let n = ali::parse_notify(&client.config().alipay_public_key, body).map_err(pay_reject)?;
    if n.app_id != client.config().app_id {
        return Err(reject(400, "PAY_MERCHANT_MISMATCH"));
    }
    // A refund shows up as a notify with refund_fee and the refund's out_request_no (out_biz_no).
    if let (Some(_), Some(out_request_no)) = (n.refund_fee_fen, n.out_biz_no.as_deref()) {
        return apply_refund_notice(
            core,
            tenant,
            Provider::Alipay,
            &n.notify_id,
            out_request_no,
            Some(true),
            None,
        )
        .await;
    }
    match n.trade_status {
        ali::TradeStatus::TradeSuccess | ali::TradeStatus::TradeFinished => {
            apply_paid(
                core,
                tenant,
                Provider::Alipay,
                &n.notify_id,
                &n.out_trade_no,
                Some(&n.trade_no),
                n.total_amount_fen,
            )
            .await
        }
        _ => {
            record_only(
                core,
                tenant,
                Provider::Alipay,
                &n.notify_id,
                &n.out_trade_no,
                n.trade_status.as_str(),
            )
            .await
        }
    }
}

/// Stores the notification id; `false` when it was stored before (a redelivery).
async fn first_delivery(
    tx: &TenantTx,
    provider: Provider,
    id: &str,
    out_trade_no: &str,
    kind: &str,
) -> ServiceResult<bool> {
    Ok(tx
        .query_one_raw(stmt(
            "INSERT INTO payment_notifications (tenant_id, provider, notification_id, out_trade_no, kind)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING notification_id",
            vec![
                tx.tenant().0.into(),
                provider.as_str().into(),
                id.into(),
                out_trade_no.into(),
                kind.into(),
            ],
        ))
        .await?
        .is_some())
}

async fn record_only(
    core: &Core,
    tenant: TenantId,
    provider: Provider,
    id: &str,
    out_trade_no: &str,
    kind: &str,
) -> Result<(), NotifyRejected> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    first_delivery(&tx, provider, id, out_trade_no, kind).await?;
    tx.commit().await?;
    Ok(())
}

/// A settled payment: the payment row goes PAID and the order PENDING_PAYMENT → PAID (→ COMPLETED
/// for all-virtual orders) exactly once; a payment the order cannot take is refunded.
async fn apply_paid(
    core: &Core,
    tenant: TenantId,
    provider: Provider,
    notification_id: &str,
    out_trade_no: &str,
    provider_trade_no: Option<&str>,
    amount_fen: i64,
) -> Result<(), NotifyRejected> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    if !first_delivery(&tx, provider, notification_id, out_trade_no, "PAID").await? {
        tx.commit().await?;
        return Ok(());
    }
    // The payment and its order, both locked, with what the order holds (all virtual goods?).
    let Some(p) = tx
        .query_one_raw(stmt(
            "SELECT p.id, p.order_id, p.buyer_id, p.amount_fen, p.status, o.status AS order_status,
                    (SELECT count(*) > 0 AND count(*) = count(*) FILTER (WHERE pr.kind IN ('COURSE', 'ACTIVATION_CODE', 'MEMBERSHIP'))
                     FROM order_lines l JOIN skus s ON s.tenant_id = l.tenant_id AND s.id = l.sku_id
                     JOIN products pr ON pr.tenant_id = s.tenant_id AND pr.id = s.product_id
                     WHERE l.tenant_id = o.tenant_id AND l.order_id = o.id) AS virtual_only
             FROM payments p JOIN orders o ON o.tenant_id = p.tenant_id AND o.id = p.order_id
             WHERE p.tenant_id = $1 AND p.out_trade_no = $2 AND p.provider = $3 FOR UPDATE OF p, o",
            vec![
                tenant.0.into(),
                out_trade_no.into(),
                provider.as_str().into(),
            ],
        ))
        .await?
    else {
        // Rolled back: nothing recorded, a later retry is judged afresh.
        return Err(reject(404, "unknown out_trade_no"));
    };
    let pay = |c: &str| p.try_get::<Uuid>("", c);
    let (payment_id, order_id, buyer) = (pay("id")?, pay("order_id")?, pay("buyer_id")?);
    let expected: i64 = p.try_get("", "amount_fen")?;
    if expected != amount_fen {
        tracing::error!(
            out_trade_no,
            expected,
            amount_fen,
            "payment amount differs from the order"
        );
        return Err(reject(400, "amount does not match the payment"));
    }
    if p.try_get::<String>("", "status")? == "PAID" {
        // Another notification of the same trade was applied already.
        tx.commit().await?;
        return Ok(());
    }
    let status: String = p.try_get("", "order_status")?;
    let status = OrderStatus::parse(&status).unwrap_or(OrderStatus::Cancelled);
    let actor = format!("provider:{}", provider.as_str());
    let mut live = Vec::new();
    let mut refund = None;
    if check_transition(status, OrderStatus::Paid).is_ok() {
        let mut to = OrderStatus::Paid;
        let virtual_only: bool = p.try_get("", "virtual_only")?;
        if virtual_only && check_transition(OrderStatus::Paid, OrderStatus::Completed).is_ok() {
            to = OrderStatus::Completed;
        }
        // The payment and the order move, the event is written and the stock now waits for
        // shipping, not for the payment deadline: one statement.
        let kept: i64 = tx
            .query_one_raw(stmt(
                "WITH pay AS (
                   UPDATE payments SET status = 'PAID', provider_trade_no = $3, paid_at = now(), updated_at = now()
                   WHERE tenant_id = $1 AND id = $2),
                 ord AS (
                   UPDATE orders SET status = $5, platform_status = $5, paid_at = now(), stock_dirty = true,
                      version = version + 1, platform_modified_at = now(), updated_at = now()
                   WHERE tenant_id = $1 AND id = $4),
                 ev AS (
                   INSERT INTO order_events (tenant_id, id, order_id, kind, from_status, to_status, detail, actor)
                   VALUES ($1, $6, $4, 'STATUS_CHANGED', $7, 'PAID', $8, $9)),
                 res AS (
                   UPDATE reservations SET expires_at = now() + make_interval(days => $10), updated_at = now()
                   WHERE tenant_id = $1 AND owner_kind = 'ORDER' AND owner_id = $11 AND status = 'ACTIVE'
                   RETURNING 1)
                 SELECT count(*) AS kept FROM res",
                vec![
                    tenant.0.into(),
                    payment_id.into(),
                    provider_trade_no.map(str::to_string).into(),
                    order_id.into(),
                    to.as_str().into(),
                    Uuid::now_v7().into(),
                    status.as_str().into(),
                    json!({"payment": payment_id, "provider": provider.as_str(), "amountFen": amount_fen})
                        .into(),
                    actor.clone().into(),
                    (PAID_HOLD_DAYS as i32).into(),
                    order_id.to_string().into(),
                ],
            ))
            .await?
            .ok_or_else(|| anyhow::anyhow!("paid update returned no row"))
            .map_err(ServiceError::from)?
            .try_get("", "kept")?;
        if to == OrderStatus::Completed {
            insert_event(
                &tx,
                order_id,
                "STATUS_CHANGED",
                Some(OrderStatus::Paid),
                Some(OrderStatus::Completed),
                json!({"reason": "VIRTUAL_DELIVERED"}),
                "system",
            )
            .await?;
            grant_entitlements(&tx, order_id, buyer).await?;
        }
        // If the reservation is gone already, the settle loop reserves again (or marks the
        // order short).
        if kept == 0 {
            tx.execute_raw(stmt(
                "UPDATE orders SET stock_state = 'NONE' WHERE tenant_id = $1 AND id = $2 AND stock_state = 'RESERVED'",
                vec![tenant.0.into(), order_id.into()],
            ))
            .await?;
        }
        live.push(LiveOrderEvent {
            order_id,
            kind: "STATUS_CHANGED".into(),
            status: to.as_str().into(),
        });
    } else {
        // Cancelled (timed out) or already paid by another payment: the money goes back.
        let id = insert_refund(
            &tx,
            payment_id,
            order_id,
            amount_fen,
            &format!("payment arrived for a {} order", status.as_str()),
            true,
        )
        .await?;
        insert_event(
            &tx,
            order_id,
            "REFUND_REQUESTED",
            None,
            None,
            json!({"payment": payment_id, "refund": id, "amountFen": amount_fen, "auto": true}),
            &actor,
        )
        .await?;
        refund = Some(id);
    }
    tx.commit().await?;
    publish_live(core, tenant, &live).await;
    if let Some(id) = refund {
        // Best effort now; the upkeep retries a refund the provider did not take.
        if let Err(e) = execute_refund(core, tenant, id).await {
            tracing::warn!(error = %e, refund = %id, "automatic refund deferred");
        }
    }
    Ok(())
}

/// One entitlement per COURSE / MEMBERSHIP line (unique per line, so a replay adds nothing).
async fn grant_entitlements(tx: &TenantTx, order: Uuid, buyer: Uuid) -> ServiceResult<()> {
    tx.execute_raw(stmt(
        "INSERT INTO entitlements (tenant_id, id, buyer_id, order_id, order_line_id, kind, course_id,
            membership_plan_id, ends_at)
         SELECT l.tenant_id, gen_random_uuid(), $3, l.order_id, l.id, p.kind, p.course_id,
            p.membership_plan_id,
            CASE WHEN p.kind = 'MEMBERSHIP' THEN now() + make_interval(days => mp.duration_days * l.quantity) END
         FROM order_lines l JOIN skus s ON s.tenant_id = l.tenant_id AND s.id = l.sku_id
         JOIN products p ON p.tenant_id = s.tenant_id AND p.id = s.product_id
         LEFT JOIN membership_plans mp ON mp.tenant_id = p.tenant_id AND mp.id = p.membership_plan_id
         WHERE l.tenant_id = $1 AND l.order_id = $2 AND p.kind IN ('COURSE', 'MEMBERSHIP')
         ON CONFLICT (tenant_id, order_line_id) DO NOTHING",
        vec![tx.tenant().0.into(), order.into(), buyer.into()],
    ))
    .await?;
    Ok(())
}

async fn insert_refund(
    tx: &TenantTx,
    payment: Uuid,
    order: Uuid,
    amount_fen: i64,
    reason: &str,
    auto: bool,
) -> ServiceResult<Uuid> {
    let id = Uuid::now_v7();
    tx.execute_raw(stmt(
        "INSERT INTO refunds (tenant_id, id, payment_id, order_id, out_refund_no, amount_fen, reason, auto)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        vec![
            tx.tenant().0.into(),
            id.into(),
            payment.into(),
            order.into(),
            id.simple().to_string().into(),
            amount_fen.into(),
            reason.into(),
            auto.into(),
        ],
    ))
    .await?;
    Ok(id)
}

async fn apply_refund_notice(
    core: &Core,
    tenant: TenantId,
    provider: Provider,
    notification_id: &str,
    out_refund_no: &str,
    succeeded: Option<bool>,
    provider_refund_id: Option<&str>,
) -> Result<(), NotifyRejected> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    if !first_delivery(&tx, provider, notification_id, out_refund_no, "REFUND").await? {
        tx.commit().await?;
        return Ok(());
    }
    let Some(r) = tx
        .query_one_raw(stmt(
            "SELECT r.id, r.order_id, r.amount_fen, p.status AS payment_status FROM refunds r
             JOIN payments p ON p.tenant_id = r.tenant_id AND p.id = r.payment_id
             WHERE r.tenant_id = $1 AND r.out_refund_no = $2 FOR UPDATE OF r",
            vec![tenant.0.into(), out_refund_no.into()],
        ))
        .await?
    else {
        // Not known yet (its payment notice has not been applied): the provider retries.
        return Err(reject(503, "refund not known yet; retry later"));
    };
    let get = |c: &str| r.try_get::<Uuid>("", c);
    let (id, order) = (get("id")?, get("order_id")?);
    let Some(ok) = succeeded else {
        tx.commit().await?;
        return Ok(());
    };
    let status = if ok { "SUCCEEDED" } else { "FAILED" };
    let changed = tx
        .execute_raw(stmt(
            "UPDATE refunds SET status = $3, provider_refund_id = COALESCE($4, provider_refund_id), updated_at = now()
             WHERE tenant_id = $1 AND id = $2 AND status IN ('PENDING', 'PROCESSING')",
            vec![
                tenant.0.into(),
                id.into(),
                status.into(),
                provider_refund_id.map(str::to_string).into(),
            ],
        ))
        .await
        ?
        .rows_affected();
    if changed > 0 {
        insert_event(
            &tx,
            order,
            if ok {
                "REFUND_SUCCEEDED"
            } else {
                "REFUND_FAILED"
            },
            None,
            None,
            json!({"refund": id, "provider": provider.as_str()}),
            &format!("provider:{}", provider.as_str()),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------- refunds ---

#[derive(Debug, Clone)]
pub struct RefundInput {
    pub order_id: Uuid,
    /// None = everything not refunded yet.
    pub amount_fen: Option<i64>,
    pub idempotency_key: String,
}

#[derive(Debug, Clone)]
pub struct RefundView {
    pub id: Uuid,
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub out_refund_no: String,
    pub amount_fen: i64,
    pub status: String,
    pub auto: bool,
    pub created_at: DateTime<Utc>,
}

async fn refund_view(core: &Core, tenant: TenantId, id: Uuid) -> ServiceResult<RefundView> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let r = tx
        .query_one_raw(stmt(
            "SELECT id, order_id, payment_id, out_refund_no, amount_fen, status, auto, created_at
             FROM refunds WHERE tenant_id = $1 AND id = $2",
            vec![tenant.0.into(), id.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?;
    tx.commit().await?;
    Ok(RefundView {
        id: r.try_get("", "id")?,
        order_id: r.try_get("", "order_id")?,
        payment_id: r.try_get("", "payment_id")?,
        out_refund_no: r.try_get("", "out_refund_no")?,
        amount_fen: r.try_get("", "amount_fen")?,
        status: r.try_get("", "status")?,
        auto: r.try_get("", "auto")?,
        created_at: r.try_get("", "created_at")?,
    })
}

/// `orderRefund`: ORDER_WRITE; full (default) or partial, idempotent by key. A full refund of
/// an unshipped order cancels it (its stock goes back through the settle loop).
pub async fn order_refund(
    core: &Core,
    ctx: &RequestCtx,
    input: RefundInput,
) -> ServiceResult<RefundView> {
    require(ctx, Permission::OrderWrite)?;
    let actor = ctx
        .principal
        .actor_id()
        .ok_or_else(|| ServiceError::forbidden("refunds need a staff or API-key caller"))?;
    let key = parse_key(&input.idempotency_key)?;
    if input.amount_fen.is_some_and(|a| a <= 0) {
        return Err(invalid("amount", "must be more than zero"));
    }
    let hash = request_hash(&format!("{}|{:?}", input.order_id, input.amount_fen));
    if let Claim::Replay(v) = idem_claim(core, ctx, actor, "orderRefund", &key, &hash).await? {
        let id = v
            .get("refundId")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::try_parse(s).ok())
            .ok_or_else(|| anyhow::anyhow!("stored orderRefund answer without refundId"))?;
        return refund_view(core, ctx.tenant, id).await;
    }
    let id = match refund_request(core, ctx, actor, &input, &key).await {
        Ok(id) => id,
        Err(e) => {
            idem_abandon(core, ctx, actor, "orderRefund", &key).await;
            return Err(e);
        }
    };
    if let Err(e) = execute_refund(core, ctx.tenant, id).await {
        // Recorded and retried by the upkeep; the caller sees it PENDING.
        tracing::warn!(error = %e, refund = %id, "refund deferred");
    }
    refund_view(core, ctx.tenant, id).await
}

async fn refund_request(
    core: &Core,
    ctx: &RequestCtx,
    actor: Uuid,
    input: &RefundInput,
    key: &str,
) -> ServiceResult<Uuid> {
    let tenant = ctx.tenant;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let status: String = tx
        .query_one_raw(stmt(
            "SELECT status FROM orders WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            vec![tenant.0.into(), input.order_id.into()],
        ))
        .await?
        .ok_or(ServiceError::NotFound)?
        .try_get("", "status")?;
    let status = OrderStatus::parse(&status).unwrap_or(OrderStatus::Cancelled);
    let p = tx
        .query_one_raw(stmt(
            "SELECT p.id, p.amount_fen,
                    COALESCE((SELECT sum(amount_fen) FROM refunds r WHERE r.tenant_id = p.tenant_id
                       AND r.payment_id = p.id AND r.status <> 'FAILED'), 0)::bigint AS refunded
             FROM payments p WHERE p.tenant_id = $1 AND p.order_id = $2 AND p.status = 'PAID'
             ORDER BY p.paid_at LIMIT 1 FOR UPDATE",
            vec![tenant.0.into(), input.order_id.into()],
        ))
        .await?
        .ok_or_else(|| ServiceError::conflict("orderId", "the order has no settled payment"))?;
    let payment: Uuid = p.try_get("", "id")?;
    let paid: i64 = p.try_get("", "amount_fen")?;
    let refunded: i64 = p.try_get("", "refunded")?;
    let remaining = paid - refunded;
    let amount = input.amount_fen.unwrap_or(remaining);
    if remaining <= 0 {
        return Err(ServiceError::conflict(
            "orderId",
            "the payment is refunded in full already",
        ));
    }
    if amount > remaining {
        return Err(invalid(
            "amount",
            format!("at most {remaining} fen can still be refunded"),
        ));
    }
    let id = insert_refund(&tx, payment, input.order_id, amount, "staff refund", false).await?;
    let actor_text = format!("staff:{actor}");
    insert_event(
        &tx,
        input.order_id,
        "REFUND_REQUESTED",
        None,
        None,
        json!({"payment": payment, "refund": id, "amountFen": amount, "auto": false}),
        &actor_text,
    )
    .await?;
    if amount == remaining
        && !status.shipped()
        && check_transition(status, OrderStatus::Cancelled).is_ok()
    {
        tx.execute_raw(stmt(
            "UPDATE orders SET status = 'CANCELLED', platform_status = 'REFUNDED', stock_dirty = true,
                version = version + 1, platform_modified_at = now(), updated_at = now()
             WHERE tenant_id = $1 AND id = $2",
            vec![tenant.0.into(), input.order_id.into()],
        ))
        .await?;
        insert_event(
            &tx,
            input.order_id,
            "STATUS_CHANGED",
            Some(status),
            Some(OrderStatus::Cancelled),
            json!({"reason": "REFUNDED", "refund": id}),
            &actor_text,
        )
        .await?;
    }
    idem_finish(
        &tx,
        actor,
        "orderRefund",
        key,
        &json!({"refundId": id.to_string()}),
    )
    .await?;
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "order.refund_requested",
        Some(input.order_id.to_string()),
        json!({"refund": id, "amountFen": amount}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    Ok(id)
}

/// Sends a PENDING refund to its provider (idempotent there by out_refund_no).
async fn execute_refund(core: &Core, tenant: TenantId, id: Uuid) -> ServiceResult<()> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let Some(r) = tx
        .query_one_raw(stmt(
            "SELECT r.out_refund_no, r.amount_fen, r.reason, r.status, r.attempts, p.out_trade_no, p.amount_fen AS total_fen, p.provider
             FROM refunds r JOIN payments p ON p.tenant_id = r.tenant_id AND p.id = r.payment_id
             WHERE r.tenant_id = $1 AND r.id = $2",
            vec![tenant.0.into(), id.into()],
        ))
        .await?
    else {
        return Err(ServiceError::NotFound);
    };
    tx.commit().await?;
    if r.try_get::<String>("", "status")? != "PENDING" {
        return Ok(());
    }
    let out_refund_no: String = r.try_get("", "out_refund_no")?;
    let out_trade_no: String = r.try_get("", "out_trade_no")?;
    let amount: i64 = r.try_get("", "amount_fen")?;
    let total: i64 = r.try_get("", "total_fen")?;
    let reason: String = r.try_get("", "reason")?;
    let attempts: i32 = r.try_get("", "attempts")?;
    let provider = Provider::parse(&r.try_get::<String>("", "provider")?)
        .ok_or_else(|| anyhow::anyhow!("unknown provider"))?;
    let m = merchant(core, tenant)
        .await?
        .ok_or_else(|| anyhow::anyhow!("payment settings are gone"))?;
    let result: Result<(String, Option<String>), PayError> = match provider {
        Provider::WechatPay => {
            let client = m.wechat()?;
            client
                .refund(&wx::RefundRequest {
                    out_trade_no,
                    out_refund_no,
                    reason: Some(reason.chars().take(80).collect()),
                    notify_url: Some(m.notify_url(tenant, Provider::WechatPay)),
                    refund_fen: amount,
                    total_fen: total,
                })
                .await
                .map(|x| {
                    let st = if x.status == wx::RefundStatus::Success {
                        "SUCCEEDED"
                    } else {
                        "PROCESSING"
                    };
                    (st.to_string(), Some(x.refund_id))
                })
        }
        Provider::Alipay => {
            let client = m.alipay()?;
            client
                .trade_refund(&ali::TradeRefundRequest {
                    out_trade_no,
                    out_request_no: out_refund_no,
                    refund_amount_fen: amount,
                    refund_reason: Some(reason.chars().take(80).collect()),
                })
                .await
                // Alipay answers synchronously: the money moved (or had moved on an earlier try).
                .map(|_| ("SUCCEEDED".to_string(), None))
        }
    };
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let (status, refund_id, error) = match &result {
        Ok((s, rid)) => (s.clone(), rid.clone(), None),
        Err(e) if e.is_retryable() => ("PENDING".to_string(), None, Some(e.to_string())),
        Err(e) => ("FAILED".to_string(), None, Some(e.to_string())),
    };
    tx.execute_raw(stmt(
        "UPDATE refunds SET status = $3, provider_refund_id = COALESCE($4, provider_refund_id),
            last_error = $5, updated_at = now(),
            next_at = CASE WHEN $3 = 'PENDING' THEN now() + make_interval(secs => $6) END
         WHERE tenant_id = $1 AND id = $2 AND status = 'PENDING'",
        vec![
            tenant.0.into(),
            id.into(),
            status.into(),
            refund_id.into(),
            error.into(),
            refund_backoff_secs(attempts.max(1)).into(),
        ],
    ))
    .await?;
    tx.commit().await?;
    result.map(|_| ()).map_err(provider_error)
}

/// Retries refunds the provider did not take yet (every tenant), a few side by side. Safe to run
/// from several workers: due rows are claimed with SKIP LOCKED and leased by pushing `next_at`
/// ahead; a retry that fails again is due after [`refund_backoff_secs`]. A refund is never given
/// up on (the money is the buyer's): the back-off stops growing at an hour.
pub async fn retry_pending_refunds(core: &Core, batch: u64) -> ServiceResult<usize> {
    use futures_util::StreamExt;
    let rows = core
        .db
        .query_all_raw(stmt(
            "UPDATE refunds r SET next_at = now() + make_interval(secs => $2),
                attempts = r.attempts + 1
             FROM (SELECT tenant_id, id FROM refunds
                   WHERE status = 'PENDING'
                     AND COALESCE(next_at, updated_at + interval '10 seconds') <= now()
                   ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
             WHERE r.tenant_id = due.tenant_id AND r.id = due.id
             RETURNING r.tenant_id, r.id",
            vec![(batch as i64).into(), REFUND_LEASE_SECS.into()],
        ))
        .await?;
    let mut due = Vec::with_capacity(rows.len());
    for r in rows {
        due.push((
            TenantId(r.try_get("", "tenant_id")?),
            r.try_get::<Uuid>("", "id")?,
        ));
    }
    let done: Vec<bool> = futures_util::stream::iter(due)
        .map(|(tenant, id)| async move {
            match execute_refund(core, tenant, id).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, refund = %id, "refund retry failed");
                    false
                }
            }
        })
        .buffer_unordered(CLOSE_CONCURRENCY)
        .collect()
        .await;
    Ok(done.into_iter().filter(|ok| *ok).count())
}

/// A claimed refund retry belongs to its claimer this long.
const REFUND_LEASE_SECS: f64 = 120.0;

/// Seconds before the next try of a refund tried `attempts` times: 10 s doubling, at most an
/// hour.
fn refund_backoff_secs(attempts: i32) -> f64 {
    let exp = (attempts - 1).clamp(0, 9) as u32;
    (10.0 * f64::from(2u32.pow(exp))).min(3600.0)
}

// ------------------------------------------------------------------ close ---
//
// An order that times out unpaid may have trades open at the providers. They are closed there
// from a persisted retry state on the payment row, not inside the deadline sweep: the sweep
// marks them (`close_on_timeout`, in the transaction that cancels the order), and
// `close_due_trades` claims due rows, calls the provider and backs off on outages. The trade's
// own expiry (WeChat `time_expire`, Alipay `timeout_express`, both at the payment deadline)
// already stops payment at the provider; closing makes it immediate and explicit. A payment
// that still lands (paid just before the close) takes the refund path in `apply_paid`.

/// Attempts before a close is given up on (about a day with the back-off below).
const CLOSE_MAX_ATTEMPTS: i32 = 30;
/// A claimed close belongs to its claimer this long: one that died mid-call is taken again.
const CLOSE_LEASE_SECS: f64 = 120.0;
const CLOSE_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
const CLOSE_CONCURRENCY: usize = 8;

/// Seconds before attempt `attempts + 1`: 15 s doubling, at most an hour.
fn close_backoff_secs(attempts: i32) -> f64 {
    let exp = (attempts - 1).clamp(0, 8) as u32;
    (15.0 * f64::from(2u32.pow(exp))).min(3600.0)
}

/// Marks the order's open payments for closing at their provider; in the caller's transaction.
pub(crate) async fn close_on_timeout(tx: &TenantTx, order: Uuid) -> ServiceResult<u64> {
    Ok(tx
        .execute_raw(stmt(
            "UPDATE payments SET close_state = 'PENDING', close_next_at = now(), updated_at = now()
             WHERE tenant_id = $1 AND order_id = $2 AND status = 'CREATED' AND close_state IS NULL",
            vec![tx.tenant().0.into(), order.into()],
        ))
        .await?
        .rows_affected())
}

struct CloseJob {
    tenant: TenantId,
    payment: Uuid,
    order: Uuid,
    provider: Provider,
    out_trade_no: String,
    attempts: i32,
}

enum CloseOutcome {
    /// Closed, or never opened there (nothing to pay).
    Done,
    Retry(String),
    Failed(String),
}

/// Closes due provider trades of timed-out orders (every tenant), a few at a time; returns how
/// many are closed now. Safe to run from several workers: rows are claimed with SKIP LOCKED
/// and leased by pushing `close_next_at` ahead.
pub async fn close_due_trades(core: &Core, batch: u64) -> ServiceResult<usize> {
    use futures_util::StreamExt;
    let rows = core
        .db
        .query_all_raw(stmt(
            "UPDATE payments p SET close_next_at = now() + make_interval(secs => $2),
                close_attempts = p.close_attempts + 1
             FROM (SELECT tenant_id, id FROM payments
                   WHERE close_state = 'PENDING' AND close_next_at <= now()
                   ORDER BY close_next_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
             WHERE p.tenant_id = due.tenant_id AND p.id = due.id
             RETURNING p.tenant_id, p.id, p.order_id, p.provider, p.out_trade_no, p.close_attempts",
            vec![(batch as i64).into(), CLOSE_LEASE_SECS.into()],
        ))
        .await?;
    let mut jobs = Vec::with_capacity(rows.len());
    for r in rows {
        jobs.push(CloseJob {
            tenant: TenantId(r.try_get("", "tenant_id")?),
            payment: r.try_get("", "id")?,
            order: r.try_get("", "order_id")?,
            provider: Provider::parse(&r.try_get::<String>("", "provider")?)
                .ok_or_else(|| anyhow::anyhow!("unknown provider"))?,
            out_trade_no: r.try_get("", "out_trade_no")?,
            attempts: r.try_get("", "close_attempts")?,
        });
    }
    let results: Vec<ServiceResult<bool>> = futures_util::stream::iter(jobs)
        .map(|job| close_one(core, job))
        .buffer_unordered(CLOSE_CONCURRENCY)
        .collect()
        .await;
    let mut closed = 0;
    for r in results {
        match r {
            Ok(true) => closed += 1,
            Ok(false) => {}
            // The lease runs out and the row is taken again.
            Err(e) => tracing::warn!(error = %e, "recording a trade close failed"),
        }
    }
    Ok(closed)
}

fn trade_not_exist(e: &PayError) -> bool {
    matches!(e, PayError::Rejected { code, sub_code, .. }
        if code == "ORDER_NOT_EXIST" || sub_code.as_deref() == Some("ACQ.TRADE_NOT_EXIST"))
}

async fn close_one(core: &Core, job: CloseJob) -> ServiceResult<bool> {
    let outcome = match merchant(core, job.tenant).await {
        Err(e) => CloseOutcome::Retry(format!("payment settings: {e}")),
        Ok(None) => CloseOutcome::Failed("the store's payment settings are gone".into()),
        Ok(Some(m)) => {
            let call = async {
                match job.provider {
                    Provider::WechatPay => match m.wechat.as_ref() {
                        Some(c) => c.close(&job.out_trade_no).await.map(Some),
                        None => Ok(None),
                    },
                    Provider::Alipay => match m.alipay.as_ref() {
                        Some(c) => c.trade_close(&job.out_trade_no).await.map(Some),
                        None => Ok(None),
                    },
                }
            };
            match tokio::time::timeout(CLOSE_CALL_TIMEOUT, call).await {
                Err(_) => CloseOutcome::Retry("the provider did not answer in time".into()),
                Ok(Ok(Some(()))) => CloseOutcome::Done,
                Ok(Ok(None)) => {
                    CloseOutcome::Failed(format!("{} is no longer set up", job.provider.as_str()))
                }
                Ok(Err(e)) if trade_not_exist(&e) => CloseOutcome::Done,
                Ok(Err(e)) if e.is_retryable() => CloseOutcome::Retry(e.to_string()),
                Ok(Err(e)) => CloseOutcome::Failed(e.to_string()),
            }
        }
    };
    let (state, error, next) = match &outcome {
        CloseOutcome::Done => ("DONE", None, 0.0),
        CloseOutcome::Retry(e) if job.attempts < CLOSE_MAX_ATTEMPTS => {
            ("PENDING", Some(e.clone()), close_backoff_secs(job.attempts))
        }
        CloseOutcome::Retry(e) | CloseOutcome::Failed(e) => ("FAILED", Some(e.clone()), 0.0),
    };
    match &outcome {
        CloseOutcome::Done => {}
        CloseOutcome::Retry(e) => tracing::warn!(
            payment = %job.payment, attempts = job.attempts, error = %e, "trade close deferred"
        ),
        CloseOutcome::Failed(e) => tracing::warn!(
            payment = %job.payment, error = %e, "trade close refused; a late payment is refunded"
        ),
    }
    let tx = TenantTx::begin(&core.db, job.tenant).await?;
    let changed = tx
        .execute_raw(stmt(
            "UPDATE payments SET close_state = $3, close_error = $4,
                close_next_at = CASE WHEN $3 = 'PENDING' THEN now() + make_interval(secs => $5) END,
                status = CASE WHEN $3 = 'DONE' AND status = 'CREATED' THEN 'CLOSED' ELSE status END,
                updated_at = now()
             WHERE tenant_id = $1 AND id = $2 AND close_state = 'PENDING'",
            vec![
                job.tenant.0.into(),
                job.payment.into(),
                state.into(),
                error.into(),
                next.into(),
            ],
        ))
        .await?
        .rows_affected();
    if changed > 0 && state != "PENDING" {
        insert_event(
            &tx,
            job.order,
            if state == "DONE" {
                "PAYMENT_CLOSED"
            } else {
                "PAYMENT_CLOSE_FAILED"
            },
            None,
            None,
            json!({"payment": job.payment, "provider": job.provider.as_str(),
                   "attempts": job.attempts}),
            "system",
        )
        .await?;
    }
    tx.commit().await?;
    Ok(changed > 0 && state == "DONE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_retries_back_off_from_ten_seconds_to_an_hour() {
        assert_eq!(refund_backoff_secs(1), 10.0);
        assert_eq!(refund_backoff_secs(2), 20.0);
        assert_eq!(refund_backoff_secs(0), 10.0);
        assert_eq!(refund_backoff_secs(9), 2560.0);
        assert_eq!(refund_backoff_secs(40), 3600.0);
    }
}
