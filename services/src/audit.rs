//! The audit log: logins, role changes, key creation, PII unmasking. Rows are written in the
//! transaction of the change; the live feed is published to Redis after commit.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::Value;
use uphub_domain::identity::Permission;
use uphub_entities::audit_event;
use uphub_tenants::{RequestCtx, TenantTx};
use uuid::Uuid;

use crate::page::{Page, PageArgs};
use crate::{Core, ServiceError, ServiceResult};

pub type AuditEvent = audit_event::Model;

pub const TOPIC: &str = "audit";

pub async fn record(
    core: &Core,
    tx: &TenantTx,
    ctx: &RequestCtx,
    action: &str,
    target: Option<String>,
    detail: Value,
) -> ServiceResult<AuditEvent> {
    let row = audit_event::ActiveModel {
        tenant_id: Set(tx.tenant().0),
        id: Set(Uuid::now_v7()),
        actor_kind: Set(ctx.principal.kind().to_string()),
        actor_id: Set(ctx.principal.actor_id()),
        action: Set(action.to_string()),
        target: Set(target),
        detail: Set(detail),
        ip: Set(ctx.ip.clone()),
        request_id: Set(Some(ctx.request_id.clone()).filter(|s| !s.is_empty())),
        created_at: Set(core.now().into()),
    }
    .insert(&**tx)
    .await?;
    Ok(row)
}

/// Publishes committed audit rows to subscribers of the tenant (best effort: the table is the record).
pub async fn publish(core: &Core, events: &[AuditEvent]) {
    for ev in events {
        let tenant = uphub_tenants::TenantId(ev.tenant_id);
        if let Err(e) = crate::pubsub::publish(core, tenant, TOPIC, &ev.id.to_string()).await {
            tracing::warn!(error = %e, "audit live publish failed");
        }
    }
}

pub async fn list(
    core: &Core,
    ctx: &RequestCtx,
    page: PageArgs,
) -> ServiceResult<Page<AuditEvent>> {
    require(ctx, Permission::AuditRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let mut q = audit_event::Entity::find()
        .filter(audit_event::Column::TenantId.eq(ctx.tenant.0))
        .order_by_desc(audit_event::Column::Id)
        .limit(page.first + 1);
    if let Some(after) = page.after {
        q = q.filter(audit_event::Column::Id.lt(after));
    }
    let rows = q.all(&*tx).await?;
    tx.commit().await?;
    Ok(Page::from_overfetch(rows, page.first))
}

pub async fn get(core: &Core, ctx: &RequestCtx, id: Uuid) -> ServiceResult<AuditEvent> {
    require(ctx, Permission::AuditRead)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = audit_event::Entity::find_by_id((ctx.tenant.0, id))
        .one(&*tx)
        .await?
        .ok_or(ServiceError::NotFound)?;
    tx.commit().await?;
    Ok(row)
}

/// Every permission check goes through here, so the error is uniform.
pub fn require(ctx: &RequestCtx, p: Permission) -> ServiceResult<()> {
    if ctx.can(p) {
        Ok(())
    } else {
        Err(ServiceError::forbidden(format!("requires {}", p.as_str())))
    }
}
