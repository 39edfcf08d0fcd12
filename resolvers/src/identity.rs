//! Tenants, sessions and `me`.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use uphub_entities::tenant;
use uphub_services::identity::{self, Session, SignupInput};

use crate::caller::{UserError, authed, caller, core, encode_id, field, user_errors};

/// A creator's business: the unit of isolation.
pub struct Tenant(pub tenant::Model);

#[Object]
impl Tenant {
    async fn id(&self) -> ID {
        encode_id("Tenant", self.0.id)
    }
    async fn slug(&self) -> &str {
        &self.0.slug
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn status(&self) -> &str {
        &self.0.status
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at.to_utc()
    }
}

/// The signed-in staff member.
pub struct Me(identity::Me);

#[Object]
impl Me {
    async fn id(&self) -> ID {
        encode_id("StaffMember", self.0.user_id)
    }
    /// Your own e-mail, unmasked: it is yours.
    async fn email(&self) -> &str {
        &self.0.email
    }
    async fn roles(&self) -> Vec<&'static str> {
        self.0.roles.iter().map(|r| r.as_str()).collect()
    }
    async fn permissions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<&'static str>> {
        let (_, rctx) = authed(ctx)?;
        Ok(rctx.permissions.iter().map(|p| p.as_str()).collect())
    }
    async fn tenant(&self) -> Tenant {
        Tenant(self.0.tenant.clone())
    }
}

#[derive(Default)]
pub struct IdentityQuery;

#[Object]
impl IdentityQuery {
    /// The signed-in staff member (staff tokens only).
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let (core, rctx) = authed(ctx)?;
        field(ctx, identity::me(core, rctx).await).map(Me)
    }

    /// The caller's tenant (staff or API key with TENANT_READ).
    async fn tenant(&self, ctx: &Context<'_>) -> async_graphql::Result<Tenant> {
        let (core, rctx) = authed(ctx)?;
        field(ctx, identity::current_tenant(core, rctx).await).map(Tenant)
    }
}

#[derive(InputObject)]
pub struct TenantSignupInput {
    pub name: String,
    pub slug: String,
    pub owner_email: String,
    pub owner_password: String,
}

#[derive(SimpleObject, Default)]
pub struct TenantSignupPayload {
    pub tenant: Option<Tenant>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub tenant_slug: String,
    pub email: String,
    pub password: String,
}

/// Tokens of a new or renewed session.
#[derive(SimpleObject, Default)]
pub struct SessionPayload {
    pub tenant: Option<Tenant>,
    pub access_token: Option<String>,
    /// Unix seconds when the access token expires.
    pub access_token_expires_at: Option<i64>,
    pub refresh_token: Option<String>,
    pub user_errors: Vec<UserError>,
}

#[derive(SimpleObject, Default)]
#[graphql(name = "LoginPayload")]
pub struct LoginPayload {
    #[graphql(flatten)]
    pub session: SessionPayload,
}

#[derive(InputObject)]
pub struct TokenRefreshInput {
    pub refresh_token: String,
}

#[derive(SimpleObject, Default)]
pub struct TokenRefreshPayload {
    #[graphql(flatten)]
    pub session: SessionPayload,
}

#[derive(InputObject)]
pub struct LogoutInput {
    /// The refresh token of the session to end; its whole rotation family is revoked.
    pub refresh_token: Option<String>,
    /// End every session of the caller.
    #[graphql(default)]
    pub everywhere: bool,
}

#[derive(SimpleObject, Default)]
pub struct LogoutPayload {
    pub ok: bool,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct StaffInviteAcceptInput {
    pub tenant_slug: String,
    pub token: String,
    pub password: String,
}

#[derive(SimpleObject, Default)]
pub struct StaffInviteAcceptPayload {
    #[graphql(flatten)]
    pub session: SessionPayload,
}

fn session_payload(r: (Option<Session>, Vec<UserError>)) -> SessionPayload {
    match r {
        (Some(s), errs) => SessionPayload {
            tenant: Some(Tenant(s.tenant)),
            access_token: Some(s.access_token),
            access_token_expires_at: Some(s.access_expires_at),
            refresh_token: Some(s.refresh_token),
            user_errors: errs,
        },
        (None, errs) => SessionPayload {
            user_errors: errs,
            ..Default::default()
        },
    }
}

#[derive(Default)]
pub struct IdentityMutation;

#[Object]
impl IdentityMutation {
    /// Creates a tenant and its OWNER; returns a session for the owner.
    async fn tenant_signup(
        &self,
        ctx: &Context<'_>,
        input: TenantSignupInput,
    ) -> async_graphql::Result<TenantSignupPayload> {
        let c = caller(ctx)?;
        let r = identity::tenant_signup(
            core(ctx)?,
            Some(c.ip.clone()),
            &c.request_id,
            SignupInput {
                name: input.name,
                slug: input.slug,
                owner_email: input.owner_email,
                owner_password: input.owner_password,
            },
        )
        .await;
        let s = session_payload(user_errors(ctx, r)?);
        Ok(TenantSignupPayload {
            tenant: s.tenant,
            access_token: s.access_token,
            refresh_token: s.refresh_token,
            user_errors: s.user_errors,
        })
    }

    /// Signs a staff member in. Throttled per account and per IP.
    async fn login(
        &self,
        ctx: &Context<'_>,
        input: LoginInput,
    ) -> async_graphql::Result<LoginPayload> {
        let c = caller(ctx)?;
        let r = identity::login(
            core(ctx)?,
            Some(c.ip.clone()),
            &c.request_id,
            &input.tenant_slug,
            &input.email,
            &input.password,
        )
        .await;
        Ok(LoginPayload {
            session: session_payload(user_errors(ctx, r)?),
        })
    }

    /// Exchanges a refresh token for a new pair. Reusing a refresh token revokes its family.
    async fn token_refresh(
        &self,
        ctx: &Context<'_>,
        input: TokenRefreshInput,
    ) -> async_graphql::Result<TokenRefreshPayload> {
        let c = caller(ctx)?;
        let r = identity::token_refresh(
            core(ctx)?,
            &c.request_id,
            Some(c.ip.clone()),
            &input.refresh_token,
        )
        .await;
        Ok(TokenRefreshPayload {
            session: session_payload(user_errors(ctx, r)?),
        })
    }

    /// Ends the current session (and its refresh family), or every session.
    async fn logout(
        &self,
        ctx: &Context<'_>,
        input: LogoutInput,
    ) -> async_graphql::Result<LogoutPayload> {
        let (core, rctx) = authed(ctx)?;
        let r =
            identity::logout(core, rctx, input.refresh_token.as_deref(), input.everywhere).await;
        let (ok, user_errors) = user_errors(ctx, r)?;
        Ok(LogoutPayload {
            ok: ok.is_some(),
            user_errors,
        })
    }

    /// Sets the password of an invited staff member and signs them in.
    async fn staff_invite_accept(
        &self,
        ctx: &Context<'_>,
        input: StaffInviteAcceptInput,
    ) -> async_graphql::Result<StaffInviteAcceptPayload> {
        let c = caller(ctx)?;
        let r = uphub_services::staff::accept_invite(
            core(ctx)?,
            &c.request_id,
            Some(c.ip.clone()),
            &input.tenant_slug,
            &input.token,
            &input.password,
        )
        .await;
        Ok(StaffInviteAcceptPayload {
            session: session_payload(user_errors(ctx, r)?),
        })
    }
}
