//! Who is asking, for which tenant, and the transaction that confines them to it.

use std::fmt;

use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr, Statement,
    TransactionTrait,
};
use uphub_domain::identity::{Permission, PermissionSet, Role};
use uuid::Uuid;

/// The role request work runs as (created by `uphub migrate`).
pub const APP_ROLE: &str = "uphub_app";

macro_rules! id_type {
    ($name:ident) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
        impl $name {
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }
        }
    };
}

id_type!(TenantId);
id_type!(UserId);
id_type!(ApiKeyId);

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    Staff {
        user_id: UserId,
        roles: Vec<Role>,
        token_id: Uuid,
        /// When the access token was issued (ms); revocations before this do not apply.
        issued_at_ms: i64,
    },
    ApiKey {
        key_id: ApiKeyId,
        created_by: UserId,
    },
    /// A fan of one tenant's storefront (mini-program, H5): holds no staff permission; the
    /// storefront's own fields check for this variant.
    Buyer {
        buyer_id: Uuid,
        token_id: Uuid,
        issued_at_ms: i64,
    },
    /// Background work on behalf of the platform (workers, relay); never reachable from a request.
    System,
}

impl Principal {
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "ANONYMOUS",
            Principal::Staff { .. } => "STAFF",
            Principal::ApiKey { .. } => "API_KEY",
            Principal::Buyer { .. } => "BUYER",
            Principal::System => "SYSTEM",
        }
    }
    pub fn actor_id(&self) -> Option<Uuid> {
        match self {
            Principal::Staff { user_id, .. } => Some(user_id.0),
            Principal::ApiKey { key_id, .. } => Some(key_id.0),
            Principal::Buyer { buyer_id, .. } => Some(*buyer_id),
            _ => None,
        }
    }
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Principal::Staff { user_id, .. } => Some(*user_id),
            _ => None,
        }
    }
}

/// Everything a service needs to know about the request: the first argument of every service.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub tenant: TenantId,
    pub principal: Principal,
    pub permissions: PermissionSet,
    pub request_id: String,
    pub ip: Option<String>,
}

impl RequestCtx {
    pub fn staff(
        tenant: TenantId,
        user_id: UserId,
        roles: Vec<Role>,
        token_id: Uuid,
        issued_at_ms: i64,
    ) -> Self {
        RequestCtx {
            tenant,
            permissions: PermissionSet::of_roles(&roles),
            principal: Principal::Staff {
                user_id,
                roles,
                token_id,
                issued_at_ms,
            },
            request_id: String::new(),
            ip: None,
        }
    }

    /// A storefront buyer: no staff permissions at all.
    pub fn buyer(tenant: TenantId, buyer_id: Uuid, token_id: Uuid, issued_at_ms: i64) -> Self {
        RequestCtx {
            tenant,
            principal: Principal::Buyer {
                buyer_id,
                token_id,
                issued_at_ms,
            },
            permissions: PermissionSet::default(),
            request_id: String::new(),
            ip: None,
        }
    }

    /// The buyer behind the request, if it is a storefront buyer.
    pub fn buyer_id(&self) -> Option<Uuid> {
        match self.principal {
            Principal::Buyer { buyer_id, .. } => Some(buyer_id),
            _ => None,
        }
    }

    pub fn system(tenant: TenantId, request_id: impl Into<String>) -> Self {
        RequestCtx {
            tenant,
            principal: Principal::System,
            permissions: Permission::ALL.into_iter().collect(),
            request_id: request_id.into(),
            ip: None,
        }
    }

    pub fn can(&self, p: Permission) -> bool {
        self.permissions.contains(p)
    }

    pub fn with_request(mut self, request_id: impl Into<String>, ip: Option<String>) -> Self {
        self.request_id = request_id.into();
        self.ip = ip;
        self
    }
}

/// A transaction confined to one tenant: the tenant is set transaction-locally and the session
/// switches to the app role, so RLS filters every statement even if a query forgets its filter.
pub struct TenantTx {
    tx: DatabaseTransaction,
    tenant: TenantId,
}

impl TenantTx {
    pub async fn begin(db: &DatabaseConnection, tenant: TenantId) -> Result<Self, DbErr> {
        let tx = db.begin().await?;
        tx.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT set_config('app.tenant_id', $1, true), set_config('role', $2, true)",
            [tenant.0.to_string().into(), APP_ROLE.into()],
        ))
        .await?;
        Ok(TenantTx { tx, tenant })
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    pub async fn commit(self) -> Result<(), DbErr> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for TenantTx {
    type Target = DatabaseTransaction;
    fn deref(&self) -> &DatabaseTransaction {
        &self.tx
    }
}

impl TenantTx {
    /// Wraps a transaction that has already set the tenant and switched to the app role.
    pub fn adopt(tx: DatabaseTransaction, tenant: TenantId) -> Self {
        TenantTx { tx, tenant }
    }
}

/// A read-only statement run in the tenant's scope in ONE round trip: the setting, the role
/// switch and the query travel as one simple-protocol message, which Postgres runs as a single
/// implicit transaction (so the transaction-local settings apply and vanish with it).
///
/// `query` is sent as text: callers build it from typed values only (UUIDs, integers), never
/// from client strings. Used on hot read paths where four round trips would dominate.
pub async fn tenant_read(
    db: &DatabaseConnection,
    tenant: TenantId,
    query: &str,
) -> Result<Vec<sea_orm::sqlx::postgres::PgRow>, DbErr> {
    use sea_orm::sqlx::Row;
    let sql = format!(
        "SELECT set_config('app.tenant_id', '{tenant}', true) AS uphub_scope, set_config('role', '{APP_ROLE}', true); {query}"
    );
    let rows = sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(sql))
        .fetch_all(db.get_postgres_connection_pool())
        .await
        .map_err(|e| DbErr::Custom(format!("tenant read: {e}")))?;
    // The first row is the scope statement's own result.
    Ok(rows
        .into_iter()
        .filter(|r| r.try_column("uphub_scope").is_err())
        .collect())
}
