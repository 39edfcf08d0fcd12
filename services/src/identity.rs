//! Tenants and sessions: signup, login, rotating refresh tokens, logout, `me`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use anyhow::Context;
use chrono::Duration as ChronoDuration;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, Set, Statement, TransactionTrait,
};
use serde_json::json;
use uphub_domain::identity::{Email, Password, Role, Slug, parse_display_name};
use uphub_domain::pii::{mask_email, normalize_email};
use uphub_entities::{refresh_token, staff_user, tenant};
use uphub_tenants::{APP_ROLE, Principal, RequestCtx, TenantId, TenantTx, UserId};
use uuid::Uuid;

use crate::auth::{REFRESH_PREFIX, compose_token, issue_access_token, sha256, split_token};
use crate::{Core, ServiceError, ServiceResult, audit, outbox, pii, ratelimit};

#[derive(Debug, Clone)]
pub struct SignupInput {
    pub name: String,
    pub slug: String,
    pub owner_email: String,
    pub owner_password: String,
}

/// Tokens handed to a client after signup, login or refresh.
#[derive(Debug, Clone)]
pub struct Session {
    pub tenant: tenant::Model,
    pub user_id: UserId,
    pub access_token: String,
    pub access_expires_at: i64,
    pub refresh_token: String,
}

pub async fn tenant_signup(
    core: &Core,
    ctx_ip: Option<String>,
    request_id: &str,
    input: SignupInput,
) -> ServiceResult<Session> {
    let name = parse_display_name("name", &input.name)?;
    let slug = Slug::parse("slug", &input.slug)?;
    let email = Email::parse("ownerEmail", &input.owner_email)?;
    let password = Password::parse("ownerPassword", &input.owner_password)?;
    let password_hash = crate::auth::hash_password(password.expose().to_string()).await?;

    let tenant_id = TenantId::new_v7();
    let user_id = UserId::new_v7();
    // The tenant row is created by the owner role; the rest of the transaction switches to the
    // app role under the new tenant, exactly like a TenantTx.
    let db_tx = core.db.begin().await?;
    let inserted = db_tx
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, $3) ON CONFLICT (slug) DO NOTHING",
            [tenant_id.0.into(), slug.as_str().into(), name.clone().into()],
        ))
        .await?
        .rows_affected();
    if inserted == 0 {
        return Err(ServiceError::conflict("slug", "this slug is taken"));
    }
    db_tx
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('app.tenant_id', $1, true), set_config('role', $2, true)",
            [tenant_id.0.to_string().into(), APP_ROLE.into()],
        ))
        .await?;
    let tx = TenantTx::adopt(db_tx, tenant_id);
    let dek = pii::create_data_key(core, &tx).await?;
    let normalized = normalize_email(email.as_str());
    let now = core.now();
    staff_user::ActiveModel {
        tenant_id: Set(tenant_id.0),
        id: Set(user_id.0),
        email_cipher: Set(dek.encrypt(&normalized, &pii::aad(tenant_id, "staff_users.email"))),
        email_bidx: Set(dek.blind_index("email", &normalized)),
        email_masked: Set(mask_email(&normalized)),
        phone_cipher: Set(None),
        phone_masked: Set(None),
        password_hash: Set(Some(password_hash)),
        roles: Set(vec![Role::Owner.as_str().to_string()]),
        status: Set("ACTIVE".into()),
        invite_token_hash: Set(None),
        invited_by: Set(None),
        created_at: Set(now.into()),
        updated_at: Set(now.into()),
    }
    .insert(&*tx)
    .await?;
    let ctx = RequestCtx::staff(tenant_id, user_id, vec![Role::Owner], Uuid::nil(), 0)
        .with_request(request_id, ctx_ip);
    let refresh = insert_refresh_token(core, &tx, user_id, Uuid::now_v7()).await?;
    let ev = audit::record(
        core,
        &tx,
        &ctx,
        "tenant.signup",
        Some(slug.as_str().into()),
        json!({"name": name}),
    )
    .await?;
    outbox::enqueue(
        core,
        &tx,
        "tenant.created",
        json!({"tenantId": tenant_id.0, "slug": slug.as_str(), "ownerId": user_id.0}),
    )
    .await?;
    let tenant = tenant::Entity::find_by_id(tenant_id.0)
        .one(&*tx)
        .await?
        .context("tenant just inserted")?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    let (access_token, access_expires_at) =
        issue_access_token(core, tenant_id, user_id, &[Role::Owner])?;
    Ok(Session {
        tenant,
        user_id,
        access_token,
        access_expires_at,
        refresh_token: refresh,
    })
}

async fn insert_refresh_token(
    core: &Core,
    tx: &TenantTx,
    user: UserId,
    family: Uuid,
) -> ServiceResult<String> {
    let secret = crate::auth::random_token(32);
    let token = compose_token(REFRESH_PREFIX, tx.tenant(), &secret);
    let now = core.now();
    refresh_token::ActiveModel {
        tenant_id: Set(tx.tenant().0),
        id: Set(Uuid::now_v7()),
        user_id: Set(user.0),
        family_id: Set(family),
        token_hash: Set(sha256(secret.as_bytes())),
        expires_at: Set((now
            + ChronoDuration::from_std(core.cfg.refresh_token_ttl).unwrap_or_default())
        .into()),
        used_at: Set(None),
        revoked_at: Set(None),
        created_at: Set(now.into()),
    }
    .insert(&**tx)
    .await?;
    Ok(token)
}

/// The tenant with this slug, looked up by the owner role (login has no tenant yet).
pub async fn tenant_by_slug(core: &Core, slug: &str) -> ServiceResult<Option<tenant::Model>> {
    Ok(tenant::Entity::find()
        .filter(tenant::Column::Slug.eq(slug.trim().to_ascii_lowercase()))
        .one(&core.db)
        .await?)
}

pub fn parse_roles_lenient(names: &[String]) -> Vec<Role> {
    names.iter().filter_map(|n| Role::parse(n)).collect()
}

pub async fn login(
    core: &Core,
    ip: Option<String>,
    request_id: &str,
    tenant_slug: &str,
    email: &str,
    password: &str,
) -> ServiceResult<Session> {
    let ip_str = ip.clone().unwrap_or_else(|| "unknown".into());
    let account = hex::encode(
        &sha256(
            format!(
                "{}\0{}",
                tenant_slug.trim().to_lowercase(),
                normalize_email(email)
            )
            .as_bytes(),
        )[..16],
    );
    ratelimit::login_check(core, &ip_str, &account).await?;

    let tenant = tenant_by_slug(core, tenant_slug).await?;
    let Some(tenant) = tenant.filter(|t| t.status == "ACTIVE") else {
        crate::auth::verify_password(password.to_string(), None).await?;
        ratelimit::login_failed(core, &account).await?;
        return Err(ServiceError::InvalidCredentials);
    };
    let tenant_id = TenantId(tenant.id);
    let tx = TenantTx::begin(&core.db, tenant_id).await?;
    let dek = pii::data_key(core, &tx).await?;
    let user = staff_user::Entity::find()
        .filter(staff_user::Column::TenantId.eq(tenant.id))
        .filter(staff_user::Column::EmailBidx.eq(dek.blind_index("email", &normalize_email(email))))
        .one(&*tx)
        .await?;
    let active = user.filter(|u| u.status == "ACTIVE");
    let ok = crate::auth::verify_password(
        password.to_string(),
        active.as_ref().and_then(|u| u.password_hash.clone()),
    )
    .await?;
    let Some(user) = active.filter(|_| ok) else {
        let ctx = RequestCtx::system(tenant_id, request_id).with_request(request_id, ip);
        let ev = audit::record(
            core,
            &tx,
            &ctx,
            "login.failed",
            None,
            json!({"emailMasked": mask_email(&normalize_email(email))}),
        )
        .await?;
        tx.commit().await?;
        audit::publish(core, &[ev]).await;
        ratelimit::login_failed(core, &account).await?;
        return Err(ServiceError::InvalidCredentials);
    };
    let user_id = UserId(user.id);
    let roles = parse_roles_lenient(&user.roles);
    let ctx = RequestCtx::staff(tenant_id, user_id, roles.clone(), Uuid::nil(), 0)
        .with_request(request_id, ip);
    let refresh = insert_refresh_token(core, &tx, user_id, Uuid::now_v7()).await?;
    let ev = audit::record(
        core,
        &tx,
        &ctx,
        "login.succeeded",
        Some(user.id.to_string()),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    ratelimit::login_succeeded(core, &account).await?;
    let (access_token, access_expires_at) = issue_access_token(core, tenant_id, user_id, &roles)?;
    Ok(Session {
        tenant,
        user_id,
        access_token,
        access_expires_at,
        refresh_token: refresh,
    })
}

/// Rotates a refresh token. A token that was already used means it leaked: the whole family
/// (every token descended from that login) is revoked.
pub async fn token_refresh(
    core: &Core,
    request_id: &str,
    ip: Option<String>,
    token: &str,
) -> ServiceResult<Session> {
    let invalid = || ServiceError::Unauthenticated("invalid refresh token".into());
    let (tenant_id, secret) = split_token(REFRESH_PREFIX, token).ok_or_else(invalid)?;
    let tx = TenantTx::begin(&core.db, tenant_id).await?;
    let row = refresh_token::Entity::find()
        .filter(refresh_token::Column::TenantId.eq(tenant_id.0))
        .filter(refresh_token::Column::TokenHash.eq(sha256(secret.as_bytes())))
        .lock_exclusive()
        .one(&*tx)
        .await?
        .ok_or_else(invalid)?;
    let now = core.now();
    let ctx = RequestCtx::system(tenant_id, request_id).with_request(request_id, ip.clone());
    if row.used_at.is_some() || row.revoked_at.is_some() {
        revoke_family(&tx, row.family_id).await?;
        let ev = audit::record(
            core,
            &tx,
            &ctx,
            "session.refresh_reuse_detected",
            Some(row.user_id.to_string()),
            json!({"familyId": row.family_id}),
        )
        .await?;
        tx.commit().await?;
        audit::publish(core, &[ev]).await;
        return Err(ServiceError::Unauthenticated(
            "refresh token reuse detected; session revoked".into(),
        ));
    }
    if row.expires_at < now {
        return Err(ServiceError::Unauthenticated(
            "refresh token expired".into(),
        ));
    }
    let user = staff_user::Entity::find_by_id((tenant_id.0, row.user_id))
        .one(&*tx)
        .await?
        .filter(|u| u.status == "ACTIVE")
        .ok_or_else(invalid)?;
    let family = row.family_id;
    let mut used: refresh_token::ActiveModel = row.into();
    used.used_at = Set(Some(now.into()));
    used.update(&*tx).await?;
    let user_id = UserId(user.id);
    let refresh = insert_refresh_token(core, &tx, user_id, family).await?;
    let tenant = tenant::Entity::find_by_id(tenant_id.0)
        .one(&*tx)
        .await?
        .ok_or_else(invalid)?;
    tx.commit().await?;
    let roles = parse_roles_lenient(&user.roles);
    let (access_token, access_expires_at) = issue_access_token(core, tenant_id, user_id, &roles)?;
    Ok(Session {
        tenant,
        user_id,
        access_token,
        access_expires_at,
        refresh_token: refresh,
    })
}

async fn revoke_family(tx: &TenantTx, family: Uuid) -> ServiceResult<()> {
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        [family.into()],
    ))
    .await?;
    Ok(())
}

/// Revokes every refresh token of a user (deactivation, logout everywhere).
pub async fn revoke_user_sessions(tx: &TenantTx, user: UserId) -> ServiceResult<()> {
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        [user.0.into()],
    ))
    .await?;
    Ok(())
}

/// Ends the caller's session: the presented refresh token's family (or every session with
/// `everywhere`) and the current access token.
pub async fn logout(
    core: &Core,
    ctx: &RequestCtx,
    refresh: Option<&str>,
    everywhere: bool,
) -> ServiceResult<()> {
    let uphub_tenants::Principal::Staff {
        user_id, token_id, ..
    } = &ctx.principal
    else {
        return Err(ServiceError::forbidden("only staff sessions can log out"));
    };
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    if everywhere {
        revoke_user_sessions(&tx, *user_id).await?;
    } else if let Some((tenant, secret)) = refresh.and_then(|r| split_token(REFRESH_PREFIX, r))
        && tenant == ctx.tenant
    {
        {
            let row = refresh_token::Entity::find()
                .filter(refresh_token::Column::TenantId.eq(tenant.0))
                .filter(refresh_token::Column::TokenHash.eq(sha256(secret.as_bytes())))
                .filter(refresh_token::Column::UserId.eq(user_id.0))
                .one(&*tx)
                .await?;
            if let Some(row) = row {
                revoke_family(&tx, row.family_id).await?;
            }
        }
    }
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "logout",
        Some(user_id.to_string()),
        json!({"everywhere": everywhere}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    let ttl = core.cfg.access_token_ttl.as_secs() + 10;
    let key = if everywhere {
        ratelimit::deny_user_key(core, ctx, user_id.0)
    } else {
        ratelimit::deny_token_key(core, ctx, *token_id)
    };
    ratelimit::set_marker(core, &key, ttl).await?;
    Ok(())
}

/// The caller as seen by itself.
#[derive(Debug, Clone)]
pub struct Me {
    pub user_id: Uuid,
    pub email: String,
    pub roles: Vec<Role>,
    pub tenant: tenant::Model,
}

/// How long a cached `me` may be served at most, whatever the token: bounds staleness for
/// changes that do not revoke tokens (none today; e.g. an operator editing rows by hand).
pub const ME_CACHE_MAX_AGE_MS: i64 = 10_000;
const ME_CACHE_CAPACITY: usize = 10_000;

struct CachedMe {
    /// Our clock just before the row was read: the row reflects every commit before then.
    read_at_ms: i64,
    me: Me,
}

/// `me` per process. Everything it shows is immutable (e-mail, tenant id/slug/name) except a
/// staff member's roles and status, and every change of those sets the user's revocation
/// marker *after* committing (staff::update_roles, staff::deactivate), so a token that passed
/// the revocation check (ratelimit::charge, run by schema::Protection before every operation
/// executes) was issued after the last such change. An entry read at or after the
/// token's issue time therefore already shows it: a role change is visible on the very next
/// request of the new token, and the old token is refused. Keyed by tenant and user; tenant ids
/// are unique across databases, so instances sharing a process never share entries.
static ME_CACHE: LazyLock<Mutex<HashMap<(TenantId, UserId), CachedMe>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn me_cached(tenant: TenantId, user: UserId, issued_at_ms: i64, now_ms: i64) -> Option<Me> {
    let cache = ME_CACHE.lock().ok()?;
    let e = cache.get(&(tenant, user))?;
    let fresh = e.read_at_ms >= issued_at_ms
        && now_ms.saturating_sub(e.read_at_ms) < ME_CACHE_MAX_AGE_MS
        && e.read_at_ms <= now_ms;
    fresh.then(|| e.me.clone())
}

fn me_store(tenant: TenantId, user: UserId, read_at_ms: i64, me: &Me) {
    if let Ok(mut cache) = ME_CACHE.lock() {
        // A full cache is cleared rather than tracked: simple, and bounded.
        if cache.len() >= ME_CACHE_CAPACITY && !cache.contains_key(&(tenant, user)) {
            cache.clear();
        }
        let newer = cache
            .get(&(tenant, user))
            .is_none_or(|e| e.read_at_ms <= read_at_ms);
        if newer {
            cache.insert(
                (tenant, user),
                CachedMe {
                    read_at_ms,
                    me: me.clone(),
                },
            );
        }
    }
}

/// Forgets this process's cached `me` of a user (tests, and writers that want it gone at once).
pub fn me_forget(tenant: TenantId, user: UserId) {
    if let Ok(mut cache) = ME_CACHE.lock() {
        cache.remove(&(tenant, user));
    }
}

pub async fn me(core: &Core, ctx: &RequestCtx) -> ServiceResult<Me> {
    let Principal::Staff {
        user_id,
        issued_at_ms,
        ..
    } = ctx.principal
    else {
        return Err(ServiceError::forbidden(
            "me is only for staff sessions; API keys use `tenant`",
        ));
    };
    let read_at_ms = core.now().timestamp_millis();
    let cache = core.cfg.me_cache;
    if cache && let Some(me) = me_cached(ctx.tenant, user_id, issued_at_ms, read_at_ms) {
        return Ok(me);
    }
    let me = me_read(core, ctx, user_id).await?;
    if cache {
        me_store(ctx.tenant, user_id, read_at_ms, &me);
    }
    Ok(me)
}

async fn me_read(core: &Core, ctx: &RequestCtx, user_id: UserId) -> ServiceResult<Me> {
    // The hot path of every client start-up: one prepared round trip. `uphub_me` (migration
    // 0015) sets the same tenant scope and app role as `tenant_read` before its query, so the
    // forced RLS policies apply, and Postgres neither parses nor plans it again.
    let row = sea_orm::sqlx::query("SELECT * FROM uphub_me($1, $2)")
        .bind(ctx.tenant.0)
        .bind(user_id.0)
        .fetch_optional(core.db.get_postgres_connection_pool())
        .await
        .map_err(|e| ServiceError::Internal(anyhow::Error::new(e).context("me read")))?;
    let Some(row) = row else {
        return Err(ServiceError::Unauthenticated("unknown user".into()));
    };
    use sea_orm::sqlx::Row;
    let col =
        |e: sea_orm::sqlx::Error| ServiceError::Internal(anyhow::Error::new(e).context("me row"));
    let status: String = row.try_get("status").map_err(col)?;
    if status != "ACTIVE" {
        return Err(ServiceError::Unauthenticated("user is not active".into()));
    }
    let wrapped: Vec<u8> = row.try_get("wrapped_dek").map_err(col)?;
    let dek = pii::data_key_from_wrapped(core, ctx.tenant, &wrapped)?;
    let cipher: Vec<u8> = row.try_get("email_cipher").map_err(col)?;
    let email = dek
        .decrypt(&cipher, &pii::aad(ctx.tenant, "staff_users.email"))
        .map_err(|e| anyhow::anyhow!("decrypting own email: {e}"))?;
    let roles: Vec<String> = row.try_get("roles").map_err(col)?;
    Ok(Me {
        user_id: user_id.0,
        email,
        roles: parse_roles_lenient(&roles),
        tenant: tenant::Model {
            id: row.try_get("id").map_err(col)?,
            slug: row.try_get("slug").map_err(col)?,
            name: row.try_get("name").map_err(col)?,
            status: row.try_get("tstatus").map_err(col)?,
            created_at: row.try_get("created_at").map_err(col)?,
        },
    })
}

/// The caller's tenant (staff or API key).
pub async fn current_tenant(core: &Core, ctx: &RequestCtx) -> ServiceResult<tenant::Model> {
    audit::require(ctx, uphub_domain::identity::Permission::TenantRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let t = tenant::Entity::find_by_id(ctx.tenant.0)
        .one(&*tx)
        .await?
        .ok_or(ServiceError::NotFound)?;
    tx.commit().await?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tenant: TenantId, user: UserId) -> Me {
        Me {
            user_id: user.0,
            email: "a@b.test".into(),
            roles: vec![Role::Operator],
            tenant: tenant::Model {
                id: tenant.0,
                slug: "s".into(),
                name: "n".into(),
                status: "ACTIVE".into(),
                created_at: chrono::Utc::now().into(),
            },
        }
    }

    #[test]
    fn a_cached_me_serves_only_tokens_issued_before_the_read_and_only_for_a_while() {
        let (t, u) = (TenantId(Uuid::now_v7()), UserId(Uuid::now_v7()));
        me_store(t, u, 1_000, &sample(t, u));
        // Issued before (or at) the read: nothing changed since, served.
        assert!(me_cached(t, u, 900, 1_500).is_some());
        assert!(me_cached(t, u, 1_000, 1_500).is_some());
        // Issued after the read, e.g. after a role change revoked the older tokens: read again.
        assert!(me_cached(t, u, 1_001, 1_500).is_none());
        // Never older than the bound, whatever the token.
        assert!(me_cached(t, u, 900, 1_000 + ME_CACHE_MAX_AGE_MS).is_none());
        // Another user or tenant never sees the entry.
        assert!(me_cached(t, UserId(Uuid::now_v7()), 900, 1_500).is_none());
        assert!(me_cached(TenantId(Uuid::now_v7()), u, 900, 1_500).is_none());
        // An older read never replaces a newer one.
        me_store(t, u, 500, &sample(t, u));
        assert!(me_cached(t, u, 1_000, 1_500).is_some());
        me_forget(t, u);
        assert!(me_cached(t, u, 900, 1_500).is_none());
    }
}
