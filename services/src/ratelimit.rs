//! Budgets kept in Redis so every gateway process shares them: a leaky bucket on query cost per
//! tenant and per API key (per IP when anonymous), the revocation check of staff (and logged-out
//! buyer) tokens folded
//! into the same atomic script, and login throttling per account and per IP.

use redis::Script;
use std::sync::LazyLock;
use uphub_tenants::{Principal, RequestCtx};

use crate::{Core, ServiceError, ServiceResult};

/// Same rule as `uphub_domain::rate::Bucket::admit`, applied to every bucket in KEYS[1..nb]:
/// all must admit or none is charged. KEYS[nb+1..] are revocation markers holding the time (ms)
/// of the revocation: they deny tokens issued at or before that time, not later logins.
/// Time comes from the Redis server so all gateways agree.
static COST_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local nb = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local issued = tonumber(ARGV[5])
for i = nb + 1, #KEYS do
  local revoked = tonumber(redis.call('GET', KEYS[i]))
  if revoked and revoked >= issued then return {2, 0, 0} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local levels = {}
local remaining = burst
for i = 1, nb do
  local h = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = tonumber(h[1]) or 0
  local last = tonumber(h[2]) or now
  level = math.max(0, level - (now - last) / 1000 * rate)
  if level + cost > burst then
    local wait = math.ceil((level + cost - burst) / rate * 1000)
    return {1, 0, math.max(wait, 1)}
  end
  levels[i] = level + cost
  remaining = math.min(remaining, burst - levels[i])
end
local ttl = math.ceil(burst / rate * 1000) + 1000
for i = 1, nb do
  redis.call('HSET', KEYS[i], 'l', tostring(levels[i]), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return {0, math.floor(remaining), 0}
"#,
    )
});

/// What a request was charged and what is left.
#[derive(Debug, Clone, Copy)]
pub struct Charge {
    pub cost: u64,
    pub remaining: u64,
}

pub fn deny_user_key(core: &Core, ctx: &RequestCtx, user: uuid::Uuid) -> String {
    core.key(&ctx.tenant.to_string(), &format!("deny:user:{user}"))
}

pub fn deny_token_key(core: &Core, ctx: &RequestCtx, jti: uuid::Uuid) -> String {
    core.key(&ctx.tenant.to_string(), &format!("deny:jti:{jti}"))
}

/// Charges `cost` to the caller's budgets. Anonymous callers are charged per IP.
pub async fn charge(
    core: &Core,
    ctx: Option<&RequestCtx>,
    ip: &str,
    cost: u64,
) -> ServiceResult<Charge> {
    let limits = &core.cfg.limits;
    let mut keys = Vec::with_capacity(4);
    let mut issued_at = 0i64;
    let (rate, burst) = match ctx {
        None => {
            keys.push(core.key(&format!("ip:{ip}"), "bucket"));
            (limits.ip_rate_per_sec, limits.ip_burst)
        }
        Some(ctx) => {
            let tenant = ctx.tenant.to_string();
            // Buyers spend a budget of their own: a crowd of fans never starves the back office.
            match ctx.buyer_id() {
                Some(b) => keys.push(core.key(&tenant, &format!("buyer:{b}:bucket"))),
                None => keys.push(core.key(&tenant, "bucket")),
            }
            match &ctx.principal {
                Principal::ApiKey { key_id, .. } => {
                    keys.push(core.key(&tenant, &format!("key:{key_id}:bucket")));
                }
                Principal::Staff {
                    user_id,
                    token_id,
                    issued_at_ms,
                    ..
                } => {
                    issued_at = *issued_at_ms;
                    keys.push(deny_user_key(core, ctx, user_id.0));
                    keys.push(deny_token_key(core, ctx, *token_id));
                }
                // A buyer who logged out: that access token is refused at once.
                Principal::Buyer {
                    token_id,
                    issued_at_ms,
                    ..
                } => {
                    issued_at = *issued_at_ms;
                    keys.push(deny_token_key(core, ctx, *token_id));
                }
                _ => {}
            }
            (limits.cost_rate_per_sec, limits.cost_burst)
        }
    };
    let nb = match ctx.map(|c| &c.principal) {
        Some(Principal::ApiKey { .. }) => 2,
        _ => 1,
    };
    let mut conn = core.redis.clone();
    let mut inv = COST_SCRIPT.prepare_invoke();
    for k in &keys {
        inv.key(k);
    }
    inv.arg(nb).arg(cost).arg(rate).arg(burst).arg(issued_at);
    let (status, remaining, retry): (i64, i64, i64) = inv.invoke_async(&mut conn).await?;
    match status {
        0 => Ok(Charge {
            cost,
            remaining: remaining.max(0) as u64,
        }),
        1 => Err(ServiceError::RateLimited {
            retry_after_ms: retry.max(1) as u64,
        }),
        _ => Err(ServiceError::Unauthenticated(
            "token has been revoked".into(),
        )),
    }
}

/// Per-IP attempt counter and per-account failure counter for logins.
pub async fn login_check(core: &Core, ip: &str, account: &str) -> ServiceResult<()> {
    let limits = &core.cfg.limits;
    let mut conn = core.redis.clone();
    let ip_key = core.key(&format!("ip:{ip}"), "login");
    let acct_key = core.key(&format!("acct:{account}"), "login-failures");
    let (attempts, _, failures, acct_ttl): (u32, i64, Option<u32>, i64) = redis::pipe()
        .incr(&ip_key, 1)
        .expire(&ip_key, 60)
        .get(&acct_key)
        .pttl(&acct_key)
        .query_async(&mut conn)
        .await?;
    if attempts > limits.login_attempts_per_ip_per_min {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&ip_key)
            .query_async(&mut conn)
            .await?;
        return Err(ServiceError::RateLimited {
            retry_after_ms: ttl.max(1000) as u64,
        });
    }
    if failures.unwrap_or(0) >= limits.login_failures_per_account {
        return Err(ServiceError::RateLimited {
            retry_after_ms: acct_ttl.max(1000) as u64,
        });
    }
    Ok(())
}

pub async fn login_failed(core: &Core, account: &str) -> ServiceResult<()> {
    let mut conn = core.redis.clone();
    let acct_key = core.key(&format!("acct:{account}"), "login-failures");
    let _: (i64, i64) = redis::pipe()
        .incr(&acct_key, 1)
        .expire(&acct_key, 15 * 60)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

pub async fn login_succeeded(core: &Core, account: &str) -> ServiceResult<()> {
    let mut conn = core.redis.clone();
    let _: i64 = redis::cmd("DEL")
        .arg(core.key(&format!("acct:{account}"), "login-failures"))
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Records a revocation for `ttl_secs` (until every token it concerns has expired): tokens
/// issued up to now are refused, later ones are not.
pub async fn set_marker(core: &Core, key: &str, ttl_secs: u64) -> ServiceResult<()> {
    let mut conn = core.redis.clone();
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(core.now().timestamp_millis())
        .arg("EX")
        .arg(ttl_secs.max(1))
        .query_async(&mut conn)
        .await?;
    Ok(())
}
