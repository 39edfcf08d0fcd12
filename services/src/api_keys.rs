//! API keys for third-party developers: shown once, stored as a hash, scoped to permissions
//! the creator holds; a key without write scopes cannot mutate anything.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::json;
use uphub_domain::identity::{InvalidInput, Permission, PermissionSet, parse_display_name};
use uphub_entities::api_key;
use uphub_tenants::{ApiKeyId, Principal, RequestCtx, TenantTx, UserId};
use uuid::Uuid;

use crate::audit::{self, require};
use crate::auth::{API_KEY_PREFIX, compose_token, random_token, sha256, split_token};
use crate::page::{Page, PageArgs};
use crate::{Core, ServiceError, ServiceResult};

pub type ApiKey = api_key::Model;

pub fn parse_scopes(names: &[String]) -> Result<PermissionSet, InvalidInput> {
    if names.is_empty() {
        return Err(InvalidInput {
            field: "scopes",
            message: "at least one scope is required".into(),
        });
    }
    names
        .iter()
        .map(|n| {
            Permission::parse(n).ok_or_else(|| InvalidInput {
                field: "scopes",
                message: format!("unknown scope {n}"),
            })
        })
        .collect()
}

/// Creates a key; returns the row and the secret, which is never shown again.
pub async fn create(
    core: &Core,
    ctx: &RequestCtx,
    name: &str,
    scopes: &[String],
) -> ServiceResult<(ApiKey, String)> {
    require(ctx, Permission::ApiKeyManage)?;
    let Some(creator) = ctx.principal.user_id() else {
        return Err(ServiceError::forbidden(
            "API keys are created by staff, not by other keys",
        ));
    };
    let name = parse_display_name("name", name)?;
    let scopes = parse_scopes(scopes)?;
    if scopes.intersect(ctx.permissions) != scopes {
        return Err(ServiceError::forbidden(
            "a key cannot hold scopes its creator lacks",
        ));
    }
    let secret = random_token(32);
    let id = Uuid::now_v7();
    let token = compose_token(
        API_KEY_PREFIX,
        ctx.tenant,
        &format!("{}.{secret}", id.simple()),
    );
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = api_key::ActiveModel {
        tenant_id: Set(ctx.tenant.0),
        id: Set(id),
        name: Set(name),
        prefix: Set(token.chars().take(16).collect()),
        secret_hash: Set(sha256(secret.as_bytes())),
        scopes: Set(scopes.iter().map(|p| p.as_str().to_string()).collect()),
        created_by: Set(creator.0),
        created_at: Set(core.now().into()),
        revoked_at: Set(None),
        last_used_at: Set(None),
    }
    .insert(&*tx)
    .await?;
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "api_key.created",
        Some(id.to_string()),
        json!({"name": row.name, "scopes": row.scopes}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    Ok((row, token))
}

pub async fn revoke(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<ApiKey> {
    require(ctx, Permission::ApiKeyManage)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = api_key::Entity::find_by_id((ctx.tenant.0, id))
        .one(&*tx)
        .await?
        .ok_or(ServiceError::NotFound)?;
    if row.revoked_at.is_some() {
        tx.commit().await?;
        return Ok(row);
    }
    let mut active: api_key::ActiveModel = row.into();
    active.revoked_at = Set(Some(core.now().into()));
    let row = active.update(&*tx).await?;
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "api_key.revoked",
        Some(id.to_string()),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    Ok(row)
}

pub async fn list(core: &Core, ctx: &RequestCtx, page: PageArgs) -> ServiceResult<Page<ApiKey>> {
    require(ctx, Permission::ApiKeyManage)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let mut q = api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(ctx.tenant.0))
        .order_by_asc(api_key::Column::Id)
        .limit(page.first + 1);
    if let Some(after) = page.after {
        q = q.filter(api_key::Column::Id.gt(after));
    }
    let rows = q.all(&*tx).await?;
    tx.commit().await?;
    Ok(Page::from_overfetch(rows, page.first))
}

/// Resolves `uhk_<tenant>_<keyid>.<secret>` to a RequestCtx holding the key's scopes.
pub async fn authenticate(core: &Core, token: &str) -> ServiceResult<RequestCtx> {
    let invalid = || ServiceError::Unauthenticated("invalid API key".into());
    let (tenant, rest) = split_token(API_KEY_PREFIX, token).ok_or_else(invalid)?;
    let (id, secret) = rest.split_once('.').ok_or_else(invalid)?;
    let id = Uuid::try_parse(id).map_err(|_| invalid())?;
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let row = api_key::Entity::find_by_id((tenant.0, id))
        .one(&*tx)
        .await?
        .ok_or_else(invalid)?;
    // A key never outlives or outranks its creator: it acts with at most the creator's
    // current permissions, and not at all once the creator is deactivated.
    let creator = uphub_entities::staff_user::Entity::find_by_id((tenant.0, row.created_by))
        .one(&*tx)
        .await?
        .filter(|u| u.status == "ACTIVE");
    tx.commit().await?;
    let presented = sha256(secret.as_bytes());
    // Constant-time compare of the two digests.
    let same = presented.len() == row.secret_hash.len()
        && presented
            .iter()
            .zip(&row.secret_hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(invalid());
    }
    if row.revoked_at.is_some() {
        return Err(ServiceError::Unauthenticated(
            "API key has been revoked".into(),
        ));
    }
    let Some(creator) = creator else {
        return Err(ServiceError::Unauthenticated(
            "the key's creator is no longer active".into(),
        ));
    };
    let creator_roles = crate::identity::parse_roles_lenient(&creator.roles);
    let permissions: PermissionSet = row
        .scopes
        .iter()
        .filter_map(|s| Permission::parse(s))
        .collect::<PermissionSet>()
        .intersect(PermissionSet::of_roles(&creator_roles));
    Ok(RequestCtx {
        tenant,
        principal: Principal::ApiKey {
            key_id: ApiKeyId(row.id),
            created_by: UserId(row.created_by),
        },
        permissions,
        request_id: String::new(),
        ip: None,
    })
}
