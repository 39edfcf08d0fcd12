//! Staff members and API keys.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use uphub_services::api_keys::{self, ApiKey as ApiKeyRow};
use uphub_services::page::{Page, encode_cursor};
use uphub_services::staff::{self, InviteInput, StaffMember as StaffRow};

use crate::caller::{UserError, authed, decode_id, encode_id, field, page_args, user_errors};

pub struct StaffMember(pub StaffRow);

#[Object]
impl StaffMember {
    async fn id(&self) -> ID {
        encode_id("StaffMember", self.0.id)
    }
    /// Masked unless the caller holds PII_READ; every unmasked read is audited.
    async fn email(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let (core, rctx) = authed(ctx)?;
        field(ctx, staff::contact_for(core, rctx, &self.0).await).map(|c| c.0)
    }
    /// Masked unless the caller holds PII_READ; every unmasked read is audited.
    async fn phone(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        if self.0.phone_cipher.is_none() {
            return Ok(None);
        }
        let (core, rctx) = authed(ctx)?;
        field(ctx, staff::contact_for(core, rctx, &self.0).await).map(|c| c.1)
    }
    async fn roles(&self) -> &[String] {
        &self.0.roles
    }
    /// INVITED, ACTIVE or DEACTIVATED.
    async fn status(&self) -> &str {
        &self.0.status
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at.to_utc()
    }
}

pub struct ApiKey(pub ApiKeyRow);

#[Object]
impl ApiKey {
    async fn id(&self) -> ID {
        encode_id("ApiKey", self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The first characters of the key, to recognise it; the secret is never shown again.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }
    async fn scopes(&self) -> &[String] {
        &self.0.scopes
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at.to_utc()
    }
    async fn revoked_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.revoked_at.map(|t| t.to_utc())
    }
}

/// Builds a Relay connection from a service page.
pub fn connection<R, N: async_graphql::OutputType>(
    page: Page<R>,
    id: impl Fn(&R) -> uuid::Uuid,
    wrap: impl Fn(R) -> N,
) -> Connection<String, N> {
    let mut conn = Connection::new(false, page.has_next);
    conn.edges.extend(
        page.items
            .into_iter()
            .map(|r| Edge::new(encode_cursor(id(&r)), wrap(r))),
    );
    conn
}

#[derive(Default)]
pub struct StaffQuery;

#[Object]
impl StaffQuery {
    /// The tenant's staff, oldest first. STAFF_READ.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn staff_members(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, StaffMember>> {
        let (core, rctx) = authed(ctx)?;
        let page = field(ctx, page_args(first, after))?;
        let page = field(ctx, staff::list(core, rctx, page).await)?;
        Ok(connection(page, |r| r.id, StaffMember))
    }

    /// One staff member; another tenant's ID answers exactly like an unknown one. STAFF_READ.
    async fn staff_member(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<StaffMember>> {
        let (core, rctx) = authed(ctx)?;
        let Ok(id) = decode_id("StaffMember", &id) else {
            return field(
                ctx,
                uphub_services::audit::require(rctx, uphub_domain::identity::Permission::StaffRead),
            )
            .map(|_| None);
        };
        match staff::get(core, rctx, id).await {
            Ok(row) => Ok(Some(StaffMember(row))),
            Err(uphub_services::ServiceError::NotFound) => Ok(None),
            Err(e) => field(ctx, Err(e)),
        }
    }

    /// API keys of the tenant. API_KEY_MANAGE.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn api_keys(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, ApiKey>> {
        let (core, rctx) = authed(ctx)?;
        let page = field(ctx, page_args(first, after))?;
        let page = field(ctx, api_keys::list(core, rctx, page).await)?;
        Ok(connection(page, |r| r.id, ApiKey))
    }
}

#[derive(InputObject)]
pub struct StaffInviteInput {
    pub email: String,
    pub phone: Option<String>,
    /// Role names: OWNER, ADMIN, OPERATOR, WAREHOUSE, CS_AGENT, FINANCE.
    pub roles: Vec<String>,
}

#[derive(SimpleObject, Default)]
pub struct StaffInvitePayload {
    pub staff_member: Option<StaffMember>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct StaffUpdateRolesInput {
    pub id: ID,
    pub roles: Vec<String>,
}

#[derive(SimpleObject, Default)]
pub struct StaffUpdateRolesPayload {
    pub staff_member: Option<StaffMember>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct StaffDeactivateInput {
    pub id: ID,
}

#[derive(SimpleObject, Default)]
pub struct StaffDeactivatePayload {
    pub staff_member: Option<StaffMember>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct ApiKeyCreateInput {
    pub name: String,
    /// Permission names the key may use (a subset of the creator's), e.g. STAFF_READ.
    pub scopes: Vec<String>,
}

#[derive(SimpleObject, Default)]
pub struct ApiKeyCreatePayload {
    pub api_key: Option<ApiKey>,
    /// The key itself, shown only in this response.
    pub secret: Option<String>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct ApiKeyRevokeInput {
    pub id: ID,
}

#[derive(SimpleObject, Default)]
pub struct ApiKeyRevokePayload {
    pub api_key: Option<ApiKey>,
    pub user_errors: Vec<UserError>,
}

#[derive(Default)]
pub struct StaffMutation;

#[Object]
impl StaffMutation {
    /// Invites a staff member by e-mail (sent by the worker). STAFF_MANAGE; only an OWNER grants OWNER/ADMIN.
    async fn staff_invite(
        &self,
        ctx: &Context<'_>,
        input: StaffInviteInput,
    ) -> async_graphql::Result<StaffInvitePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = staff::invite(
            core,
            rctx,
            InviteInput {
                email: input.email,
                phone: input.phone,
                roles: input.roles,
            },
        )
        .await;
        let (m, user_errors) = user_errors(ctx, r)?;
        Ok(StaffInvitePayload {
            staff_member: m.map(StaffMember),
            user_errors,
        })
    }

    /// Replaces a member's roles; their sessions are revoked so the change applies at once. STAFF_MANAGE.
    async fn staff_update_roles(
        &self,
        ctx: &Context<'_>,
        input: StaffUpdateRolesInput,
    ) -> async_graphql::Result<StaffUpdateRolesPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("StaffMember", &input.id) {
            Ok(id) => staff::update_roles(core, rctx, id, &input.roles).await,
            Err(e) => uphub_services::audit::require(
                rctx,
                uphub_domain::identity::Permission::StaffManage,
            )
            .and(Err(e)),
        };
        let (m, user_errors) = user_errors(ctx, r)?;
        Ok(StaffUpdateRolesPayload {
            staff_member: m.map(StaffMember),
            user_errors,
        })
    }

    /// Deactivates a member and revokes their sessions. STAFF_MANAGE.
    async fn staff_deactivate(
        &self,
        ctx: &Context<'_>,
        input: StaffDeactivateInput,
    ) -> async_graphql::Result<StaffDeactivatePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("StaffMember", &input.id) {
            Ok(id) => staff::deactivate(core, rctx, id).await,
            Err(e) => uphub_services::audit::require(
                rctx,
                uphub_domain::identity::Permission::StaffManage,
            )
            .and(Err(e)),
        };
        let (m, user_errors) = user_errors(ctx, r)?;
        Ok(StaffDeactivatePayload {
            staff_member: m.map(StaffMember),
            user_errors,
        })
    }

    /// Creates an API key; the secret is in this payload only. API_KEY_MANAGE.
    async fn api_key_create(
        &self,
        ctx: &Context<'_>,
        input: ApiKeyCreateInput,
    ) -> async_graphql::Result<ApiKeyCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = api_keys::create(core, rctx, &input.name, &input.scopes).await;
        let (k, user_errors) = user_errors(ctx, r)?;
        let (api_key, secret) = match k {
            Some((row, secret)) => (Some(ApiKey(row)), Some(secret)),
            None => (None, None),
        };
        Ok(ApiKeyCreatePayload {
            api_key,
            secret,
            user_errors,
        })
    }

    /// Revokes an API key immediately. API_KEY_MANAGE.
    async fn api_key_revoke(
        &self,
        ctx: &Context<'_>,
        input: ApiKeyRevokeInput,
    ) -> async_graphql::Result<ApiKeyRevokePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("ApiKey", &input.id) {
            Ok(id) => api_keys::revoke(core, rctx, id).await,
            Err(e) => uphub_services::audit::require(
                rctx,
                uphub_domain::identity::Permission::ApiKeyManage,
            )
            .and(Err(e)),
        };
        let (k, user_errors) = user_errors(ctx, r)?;
        Ok(ApiKeyRevokePayload {
            api_key: k.map(ApiKey),
            user_errors,
        })
    }
}
