//! Who is asking, for which tenant, and the transaction that confines them to it.

use std::fmt;

use sea_orm::sea_query::Values;
use sea_orm::sqlx;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, ExecResult, QueryResult,
    RuntimeErr, Statement,
};
use sea_query_sqlx::SqlxValues;
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
///
/// `BEGIN` and the scope travel as ONE simple-protocol message (`BEGIN; SELECT set_config(…)`),
/// a round trip less than `BEGIN` followed by the scope statement: every request pays for its
/// transactions' round trips, in this process and in Postgres, more than for most statements.
pub struct TenantTx {
    conn: PgTx,
    tenant: TenantId,
}

impl TenantTx {
    pub async fn begin(db: &DatabaseConnection, tenant: TenantId) -> Result<Self, DbErr> {
        let conn = PgTx::begin_with(db, scope_sql("BEGIN; SELECT ", tenant)).await?;
        Ok(TenantTx { conn, tenant })
    }

    /// Confines a transaction begun without a tenant (sign-up creates the tenant first).
    pub async fn enter(conn: PgTx, tenant: TenantId) -> Result<Self, DbErr> {
        conn.execute_unprepared(&scope_sql("SELECT ", tenant))
            .await?;
        Ok(TenantTx { conn, tenant })
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    pub async fn commit(self) -> Result<(), DbErr> {
        self.conn.commit().await
    }
}

/// The scope statement, after `prefix`: typed values only (a UUID and a constant).
fn scope_sql(prefix: &str, tenant: TenantId) -> String {
    format!(
        "{prefix}set_config('app.tenant_id', '{}', true), set_config('role', '{APP_ROLE}', true)",
        tenant.0
    )
}

impl std::ops::Deref for TenantTx {
    type Target = PgTx;
    fn deref(&self) -> &PgTx {
        &self.conn
    }
}

/// A Postgres transaction on one pooled connection that sea-orm can run statements on (it is a
/// [`ConnectionTrait`]), begun by a statement of our choosing. Dropped without `commit`, it
/// rolls back (the pool sends the queued `ROLLBACK` before the connection's next use).
pub struct PgTx {
    tx: tokio::sync::Mutex<sqlx::Transaction<'static, sqlx::Postgres>>,
}

impl PgTx {
    /// A plain `BEGIN`: no tenant, the connecting role (migrations, sign-up, system scans).
    pub async fn begin(db: &DatabaseConnection) -> Result<Self, DbErr> {
        Self::begin_with(db, "BEGIN".to_string()).await
    }

    /// `statement` starts the transaction and may set it up in the same message; it is sent as
    /// text, so it is built from typed values only.
    async fn begin_with(db: &DatabaseConnection, statement: String) -> Result<Self, DbErr> {
        let tx = db
            .get_postgres_connection_pool()
            .begin_with(sqlx::AssertSqlSafe(statement))
            .await
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e.into())))?;
        Ok(PgTx {
            tx: tokio::sync::Mutex::new(tx),
        })
    }

    pub async fn commit(self) -> Result<(), DbErr> {
        self.tx
            .into_inner()
            .commit()
            .await
            .map_err(|e| DbErr::Exec(RuntimeErr::SqlxError(e.into())))
    }
}

fn bound(stmt: &Statement) -> sqlx::query::Query<'_, sqlx::Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e.into()))
}

fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e.into()))
}

#[async_trait::async_trait]
impl ConnectionTrait for PgTx {
    fn get_database_backend(&self) -> DatabaseBackend {
        DatabaseBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let mut tx = self.tx.lock().await;
        bound(&stmt)
            .execute(&mut **tx)
            .await
            .map(Into::into)
            .map_err(exec_err)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut tx = self.tx.lock().await;
        sqlx::Executor::execute(&mut **tx, sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .map(Into::into)
            .map_err(exec_err)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut tx = self.tx.lock().await;
        bound(&stmt)
            .fetch_optional(&mut **tx)
            .await
            .map(|row| row.map(Into::into))
            .map_err(query_err)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut tx = self.tx.lock().await;
        bound(&stmt)
            .fetch_all(&mut **tx)
            .await
            .map(|rows| rows.into_iter().map(Into::into).collect())
            .map_err(query_err)
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
