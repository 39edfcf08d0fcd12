//! Staff of a tenant: invite (e-mailed through the outbox), list, roles, deactivation, accept.

use anyhow::Context;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde_json::json;
use uphub_domain::identity::{Email, Password, Permission, Role, check_role_change, parse_roles};
use uphub_domain::pii::{mask_email, mask_phone, normalize_email, normalize_phone};
use uphub_entities::staff_user;
use uphub_tenants::{RequestCtx, TenantTx, UserId};
use uuid::Uuid;

use crate::audit::{self, require};
use crate::auth::{random_token, sha256};
use crate::identity::{Session, parse_roles_lenient};
use crate::page::{Page, PageArgs};
use crate::{Core, ServiceError, ServiceResult, outbox, pii, ratelimit};

pub type StaffMember = staff_user::Model;

pub struct InviteInput {
    pub email: String,
    pub phone: Option<String>,
    pub roles: Vec<String>,
}

pub async fn invite(
    core: &Core,
    ctx: &RequestCtx,
    input: InviteInput,
) -> ServiceResult<StaffMember> {
    require(ctx, Permission::StaffManage)?;
    let email = Email::parse("email", &input.email)?;
    let roles = parse_roles("roles", &input.roles)?;
    let phone = match input.phone.as_deref().map(normalize_phone) {
        Some(p) if !(6..=15).contains(&p.len()) => {
            return Err(uphub_domain::identity::InvalidInput {
                field: "phone",
                message: "must have 6-15 digits".into(),
            }
            .into());
        }
        other => other,
    };
    check_role_change(&actor_roles(ctx), false, &[], &roles, 1)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let dek = pii::data_key(core, &tx).await?;
    let normalized = normalize_email(email.as_str());
    let bidx = dek.blind_index("email", &normalized);
    let exists = staff_user::Entity::find()
        .filter(staff_user::Column::TenantId.eq(ctx.tenant.0))
        .filter(staff_user::Column::EmailBidx.eq(bidx.clone()))
        .count(&*tx)
        .await?;
    if exists > 0 {
        return Err(ServiceError::conflict(
            "email",
            "a staff member with this e-mail exists",
        ));
    }
    let token = random_token(32);
    let now = core.now();
    let id = Uuid::now_v7();
    let row = staff_user::ActiveModel {
        tenant_id: Set(ctx.tenant.0),
        id: Set(id),
        email_cipher: Set(dek.encrypt(&normalized, &pii::aad(ctx.tenant, "staff_users.email"))),
        email_bidx: Set(bidx),
        email_masked: Set(mask_email(&normalized)),
        phone_cipher: Set(phone
            .as_ref()
            .map(|p| dek.encrypt(p, &pii::aad(ctx.tenant, "staff_users.phone")))),
        phone_masked: Set(phone.as_deref().map(mask_phone)),
        password_hash: Set(None),
        roles: Set(roles.iter().map(|r| r.as_str().to_string()).collect()),
        status: Set("INVITED".into()),
        invite_token_hash: Set(Some(sha256(token.as_bytes()))),
        invited_by: Set(ctx.principal.actor_id()),
        created_at: Set(now.into()),
        updated_at: Set(now.into()),
    }
    .insert(&*tx)
    .await?;
    // The invitation token travels encrypted under the tenant's key; the outbox holds no secret.
    let token_cipher = dek.encrypt(&token, &pii::aad(ctx.tenant, "outbox.invite_token"));
    outbox::enqueue(
        core,
        &tx,
        "staff.invited",
        json!({"staffId": id, "tokenCipher": hex::encode(token_cipher)}),
    )
    .await?;
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "staff.invited",
        Some(id.to_string()),
        json!({"roles": row.roles, "emailMasked": row.email_masked}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    Ok(row)
}

fn actor_roles(ctx: &RequestCtx) -> Vec<Role> {
    match &ctx.principal {
        uphub_tenants::Principal::Staff { roles, .. } => roles.clone(),
        // API keys act with the roles of nobody: they can manage only non-privileged roles.
        _ => vec![],
    }
}

pub async fn list(
    core: &Core,
    ctx: &RequestCtx,
    page: PageArgs,
) -> ServiceResult<Page<StaffMember>> {
    require(ctx, Permission::StaffRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let mut q = staff_user::Entity::find()
        .filter(staff_user::Column::TenantId.eq(ctx.tenant.0))
        .order_by_asc(staff_user::Column::Id)
        .limit(page.first + 1);
    if let Some(after) = page.after {
        q = q.filter(staff_user::Column::Id.gt(after));
    }
    let rows = q.all(&*tx).await?;
    tx.commit().await?;
    Ok(Page::from_overfetch(rows, page.first))
}

pub async fn get(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<StaffMember> {
    require(ctx, Permission::StaffRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = find(&tx, id).await?;
    tx.commit().await?;
    Ok(row)
}

async fn find(tx: &TenantTx, id: Uuid) -> ServiceResult<StaffMember> {
    staff_user::Entity::find_by_id((tx.tenant().0, id))
        .one(&**tx)
        .await?
        .ok_or(ServiceError::NotFound)
}

async fn other_active_owners(tx: &TenantTx, except: Uuid) -> ServiceResult<usize> {
    let owners = staff_user::Entity::find()
        .filter(staff_user::Column::TenantId.eq(tx.tenant().0))
        .filter(staff_user::Column::Status.eq("ACTIVE"))
        .filter(staff_user::Column::Id.ne(except))
        .all(&**tx)
        .await?
        .into_iter()
        .filter(|u| u.roles.iter().any(|r| r == Role::Owner.as_str()))
        .count();
    Ok(owners)
}

fn is_self(ctx: &RequestCtx, id: Uuid) -> bool {
    ctx.principal.user_id() == Some(UserId(id))
}

pub async fn update_roles(
    core: &Core,
    ctx: &RequestCtx,
    id: Uuid,
    roles: &[String],
) -> ServiceResult<StaffMember> {
    require(ctx, Permission::StaffManage)?;
    let next = parse_roles("roles", roles)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = find(&tx, id).await?;
    let current = parse_roles_lenient(&row.roles);
    let owners = other_active_owners(&tx, id).await?;
    check_role_change(&actor_roles(ctx), is_self(ctx, id), &current, &next, owners)?;
    let mut active: staff_user::ActiveModel = row.into();
    active.roles = Set(next.iter().map(|r| r.as_str().to_string()).collect());
    active.updated_at = Set(core.now().into());
    let row = active.update(&*tx).await?;
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "staff.roles_changed",
        Some(id.to_string()),
        json!({"from": current.iter().map(|r| r.as_str()).collect::<Vec<_>>(), "to": row.roles}),
    )
    .await?;
    // Existing access tokens carry the old roles: revoke them so the change applies at once.
    crate::identity::revoke_user_sessions(&tx, UserId(id)).await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    ratelimit::set_marker(
        core,
        &ratelimit::deny_user_key(core, ctx, id),
        core.cfg.access_token_ttl.as_secs() + 10,
    )
    .await?;
    Ok(row)
}

pub async fn deactivate(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<StaffMember> {
    require(ctx, Permission::StaffManage)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = find(&tx, id).await?;
    if is_self(ctx, id) {
        return Err(ServiceError::forbidden("you cannot deactivate yourself"));
    }
    let current = parse_roles_lenient(&row.roles);
    let privileged = current
        .iter()
        .any(|r| matches!(r, Role::Owner | Role::Admin));
    if privileged && !actor_roles(ctx).contains(&Role::Owner) {
        return Err(ServiceError::forbidden(
            "only an OWNER may deactivate an OWNER or ADMIN",
        ));
    }
    if current.contains(&Role::Owner) && other_active_owners(&tx, id).await? == 0 {
        return Err(ServiceError::conflict(
            "id",
            "the tenant must keep at least one active OWNER",
        ));
    }
    if row.status == "DEACTIVATED" {
        tx.commit().await?;
        return Ok(row);
    }
    let mut active: staff_user::ActiveModel = row.into();
    active.status = Set("DEACTIVATED".into());
    active.invite_token_hash = Set(None);
    active.updated_at = Set(core.now().into());
    let row = active.update(&*tx).await?;
    crate::identity::revoke_user_sessions(&tx, UserId(id)).await?;
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "staff.deactivated",
        Some(id.to_string()),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    ratelimit::set_marker(
        core,
        &ratelimit::deny_user_key(core, ctx, id),
        core.cfg.access_token_ttl.as_secs() + 10,
    )
    .await?;
    Ok(row)
}

/// Sets the password of an invited member and signs them in.
pub async fn accept_invite(
    core: &Core,
    request_id: &str,
    ip: Option<String>,
    tenant_slug: &str,
    token: &str,
    password: &str,
) -> ServiceResult<Session> {
    let password = Password::parse("password", password)?;
    let invalid = || ServiceError::Unauthenticated("invalid or used invitation".into());
    let tenant = crate::identity::tenant_by_slug(core, tenant_slug)
        .await?
        .ok_or_else(invalid)?;
    let tenant_id = uphub_tenants::TenantId(tenant.id);
    let hash = crate::auth::hash_password(password.expose().to_string()).await?;
    let tx = TenantTx::begin(&core.db, tenant_id).await?;
    let row = staff_user::Entity::find()
        .filter(staff_user::Column::TenantId.eq(tenant.id))
        .filter(staff_user::Column::InviteTokenHash.eq(sha256(token.as_bytes())))
        .filter(staff_user::Column::Status.eq("INVITED"))
        .one(&*tx)
        .await?
        .ok_or_else(invalid)?;
    let roles = parse_roles_lenient(&row.roles);
    let user_id = UserId(row.id);
    let dek = pii::data_key(core, &tx).await?;
    let email = dek
        .decrypt(&row.email_cipher, &pii::aad(tenant_id, "staff_users.email"))
        .map_err(|e| anyhow::anyhow!("decrypt email: {e}"))?;
    let mut active: staff_user::ActiveModel = row.into();
    active.status = Set("ACTIVE".into());
    active.password_hash = Set(Some(hash));
    active.invite_token_hash = Set(None);
    active.updated_at = Set(core.now().into());
    active.update(&*tx).await?;
    let ctx = RequestCtx::staff(tenant_id, user_id, roles, Uuid::nil(), 0)
        .with_request(request_id, ip.clone());
    let ev = audit::record(
        core,
        &tx,
        &ctx,
        "staff.invite_accepted",
        Some(user_id.to_string()),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    // Sign in through the normal path so throttling and auditing stay in one place.
    crate::identity::login(core, ip, request_id, tenant_slug, &email, password.expose()).await
}

/// Decrypted (email, phone) of a member — for the owner of the data only; callers audit.
async fn contact_plain(
    core: &Core,
    tenant: uphub_tenants::TenantId,
    row: &StaffMember,
) -> ServiceResult<(String, Option<String>)> {
    let tx = TenantTx::begin(&core.db, tenant).await?;
    let dek = pii::data_key(core, &tx).await?;
    tx.commit().await?;
    let email = dek
        .decrypt(&row.email_cipher, &pii::aad(tenant, "staff_users.email"))
        .map_err(|e| anyhow::anyhow!("decrypt email: {e}"))?;
    let phone = match &row.phone_cipher {
        Some(c) => Some(
            dek.decrypt(c, &pii::aad(tenant, "staff_users.phone"))
                .map_err(|e| anyhow::anyhow!("decrypt phone: {e}"))?,
        ),
        None => None,
    };
    Ok((email, phone))
}

/// A member's contact data as the caller may see it: plain (and audited) with PII_READ,
/// otherwise masked.
pub async fn contact_for(
    core: &Core,
    ctx: &RequestCtx,
    row: &StaffMember,
) -> ServiceResult<(String, Option<String>)> {
    if !ctx.can(Permission::PiiRead) {
        return Ok((row.email_masked.clone(), row.phone_masked.clone()));
    }
    let plain = contact_plain(core, ctx.tenant, row).await?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let ev = audit::record(
        core,
        &tx,
        ctx,
        "pii.unmasked",
        Some(row.id.to_string()),
        json!({"entity": "StaffMember", "fields": ["email", "phone"]}),
    )
    .await?;
    tx.commit().await?;
    audit::publish(core, &[ev]).await;
    Ok(plain)
}

/// Decrypts the invitation of `staff.invited` and mails it (the consumer's effect).
pub async fn send_invitation(
    core: &Core,
    tx: &TenantTx,
    mailer: &crate::mailer::Mailer,
    staff_id: Uuid,
    token_cipher_hex: &str,
) -> anyhow::Result<()> {
    let dek = pii::data_key(core, tx)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let row = staff_user::Entity::find_by_id((tx.tenant().0, staff_id))
        .one(&**tx)
        .await?
        .context("invited staff member no longer exists")?;
    if row.status != "INVITED" {
        tracing::info!(%staff_id, "invitation no longer pending; not sent");
        return Ok(());
    }
    let token = dek
        .decrypt(
            &hex::decode(token_cipher_hex)?,
            &pii::aad(tx.tenant(), "outbox.invite_token"),
        )
        .map_err(|e| anyhow::anyhow!("invite token: {e}"))?;
    let email = dek
        .decrypt(
            &row.email_cipher,
            &pii::aad(tx.tenant(), "staff_users.email"),
        )
        .map_err(|e| anyhow::anyhow!("decrypt email: {e}"))?;
    let tenant = uphub_entities::tenant::Entity::find_by_id(tx.tenant().0)
        .one(&**tx)
        .await?
        .context("tenant")?;
    let body = format!(
        "You have been invited to {name} on UpHub as {roles}.\n\n\
         Accept with the staffInviteAccept mutation (tenantSlug: {slug}, token: {token})\n\
         or open {url}/accept-invite?tenant={slug}&token={token}\n",
        name = tenant.name,
        roles = row.roles.join(", "),
        slug = tenant.slug,
        url = core.cfg.public_url,
    );
    mailer
        .send(
            &core.cfg.mail_from,
            &email,
            &format!("Invitation to {} on UpHub", tenant.name),
            body,
        )
        .await
}
