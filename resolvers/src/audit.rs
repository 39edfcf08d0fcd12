//! The audit log: query and live subscription.

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, Object, Subscription};
use futures_util::{Stream, StreamExt};
use uphub_domain::identity::Permission;
use uphub_services::audit::{self, AuditEvent as AuditRow};

use crate::caller::{authed, encode_id, field, page_args};
use crate::staff::connection;

pub struct AuditEvent(pub AuditRow);

#[Object]
impl AuditEvent {
    async fn id(&self) -> ID {
        encode_id("AuditEvent", self.0.id)
    }
    /// STAFF, API_KEY or SYSTEM.
    async fn actor_kind(&self) -> &str {
        &self.0.actor_kind
    }
    async fn actor_id(&self) -> Option<String> {
        self.0.actor_id.map(|id| id.to_string())
    }
    /// e.g. login.succeeded, staff.roles_changed, api_key.created, pii.unmasked.
    async fn action(&self) -> &str {
        &self.0.action
    }
    async fn target(&self) -> Option<&str> {
        self.0.target.as_deref()
    }
    async fn detail(&self) -> &serde_json::Value {
        &self.0.detail
    }
    async fn ip(&self) -> Option<&str> {
        self.0.ip.as_deref()
    }
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at.to_utc()
    }
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Newest first. AUDIT_READ (OWNER, ADMIN).
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, AuditEvent>> {
        let (core, rctx) = authed(ctx)?;
        let page = field(ctx, page_args(first, after))?;
        let page = field(ctx, audit::list(core, rctx, page).await)?;
        Ok(connection(page, |r| r.id, AuditEvent))
    }
}

#[derive(Default)]
pub struct AuditSubscription;

#[Subscription]
impl AuditSubscription {
    /// Audit events of the caller's tenant as they happen. AUDIT_READ.
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = AuditEvent> + use<>> {
        let (core, rctx) = authed(ctx)?;
        field(ctx, audit::require(rctx, Permission::AuditRead))?;
        let core = core.clone();
        let rctx = rctx.clone();
        let channel = core.live_channel(rctx.tenant, audit::TOPIC);
        Ok(core.hub.subscribe(channel).filter_map(move |id| {
            let core = core.clone();
            let rctx = rctx.clone();
            async move {
                let id = uuid::Uuid::try_parse(&id).ok()?;
                audit::get(&core, &rctx, id).await.ok().map(AuditEvent)
            }
        }))
    }
}
