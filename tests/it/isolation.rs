use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use uphub_tenants::{TenantId, TenantTx};

use crate::helpers::spawn_app;

async fn tenant_id(app: &crate::helpers::TestApp, slug: &str) -> uuid::Uuid {
    uphub_services::identity::tenant_by_slug(&app.core, slug)
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn tenant_tables(app: &crate::helpers::TestApp) -> Vec<String> {
    app.core
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT DISTINCT c.table_name FROM information_schema.columns c
             JOIN information_schema.tables t USING (table_schema, table_name)
             WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'
             ORDER BY 1",
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.try_get::<String>("", "table_name").unwrap())
        .collect()
}

#[tokio::test]
async fn every_table_with_a_tenant_id_has_forced_row_level_security_and_a_policy() {
    let app = spawn_app().await;
    let tables = tenant_tables(&app).await;
    assert!(tables.len() >= 8, "{tables:?}");
    for t in tables {
        let row = app
            .core
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced,
                        (SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname AND p.policyname = 'tenant_isolation') AS policies
                 FROM pg_class c WHERE c.relname = $1 AND c.relnamespace = 'public'::regnamespace",
                [t.clone().into()],
            ))
            .await
            .unwrap()
            .unwrap();
        assert!(
            row.try_get::<bool>("", "enabled").unwrap(),
            "{t}: RLS not enabled"
        );
        assert!(
            row.try_get::<bool>("", "forced").unwrap(),
            "{t}: RLS not forced"
        );
        assert_eq!(
            row.try_get::<i64>("", "policies").unwrap(),
            1,
            "{t}: no tenant_isolation policy"
        );
    }
}

#[tokio::test]
async fn the_app_role_owns_nothing_and_cannot_bypass_rls() {
    let app = spawn_app().await;
    let row = app
        .core
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT rolsuper, rolbypassrls, (SELECT count(*) FROM pg_class WHERE relowner = r.oid) AS owned
             FROM pg_roles r WHERE rolname = 'uphub_app'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(!row.try_get::<bool>("", "rolsuper").unwrap());
    assert!(!row.try_get::<bool>("", "rolbypassrls").unwrap());
    assert_eq!(row.try_get::<i64>("", "owned").unwrap(), 0);
}

#[tokio::test]
async fn an_unfiltered_query_inside_tenant_a_sees_none_of_tenant_b() {
    let app = spawn_app().await;
    let a = tenant_id(&app, &app.a.slug).await;
    let b = tenant_id(&app, &app.b.slug).await;
    // Give B rows in every kind of table through the API first.
    app.gql(
        Some(&app.b.token),
        "mutation { apiKeyCreate(input: {name: \"b\", scopes: [\"STAFF_READ\"]}) { secret } }",
        json!({}),
    )
    .await;
    app.gql(Some(&app.b.token), "mutation { staffInvite(input: {email: \"x@beta.test\", roles: [\"OPERATOR\"]}) { staffMember { id } } }", json!({})).await;
    let tx = TenantTx::begin(&app.core.db, TenantId(a)).await.unwrap();
    for t in tenant_tables(&app).await {
        let rows = tx
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT tenant_id FROM {t}"),
            ))
            .await
            .unwrap();
        for r in rows {
            let tid: uuid::Uuid = r.try_get("", "tenant_id").unwrap();
            assert_eq!(tid, a, "{t} leaked a row of another tenant");
        }
    }
    let tenants = tx
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id FROM tenants",
        ))
        .await
        .unwrap();
    assert_eq!(tenants.len(), 1);
    // Writing a row for B from A's transaction is refused by the policy's WITH CHECK.
    let write = tx
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO audit_events (tenant_id, id, actor_kind, action) VALUES ($1, gen_random_uuid(), 'SYSTEM', 'forged')",
            [b.into()],
        ))
        .await;
    assert!(write.is_err(), "cross-tenant insert must fail");
    drop(tx);
    // The one-round-trip read path is scoped the same way.
    for t in tenant_tables(&app).await {
        let rows = uphub_tenants::tenant_read(
            &app.core.db,
            TenantId(a),
            &format!("SELECT tenant_id FROM {t}"),
        )
        .await
        .unwrap();
        for r in rows {
            use sea_orm::sqlx::Row;
            let tid: uuid::Uuid = r.try_get("tenant_id").unwrap();
            assert_eq!(tid, a, "{t} leaked through tenant_read");
        }
    }
    // Without a tenant set, the app role sees nothing at all.
    let tx = app.core.db.begin_with_app_role().await;
    let none = tx
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id FROM staff_users",
        ))
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Inside a tenant transaction the tenant and the app role hold; dropped without commit it leaves
/// nothing; committed it stays; and the scope never outlives it on the pooled connection the next
/// request gets.
#[tokio::test]
async fn a_tenant_transaction_is_scoped_rolls_back_when_dropped_and_leaves_the_connection_clean() {
    let app = spawn_app().await;
    let a = tenant_id(&app, &app.a.slug).await;
    let scope = || {
        Statement::from_string(
            DbBackend::Postgres,
            "SELECT coalesce(current_setting('app.tenant_id', true), '') AS t, current_user::text AS r",
        )
    };
    let key = |k: &str| {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO idempotency_keys (tenant_id, actor_id, scope, key, request_hash)
             VALUES ($1, $1, 'test', $2, '\\x00')",
            [a.into(), k.into()],
        )
    };
    let count = |k: &str| {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
            [a.into(), k.into()],
        )
    };

    let tx = TenantTx::begin(&app.core.db, TenantId(a)).await.unwrap();
    let inside = tx.query_one_raw(scope()).await.unwrap().unwrap();
    assert_eq!(inside.try_get::<String>("", "t").unwrap(), a.to_string());
    assert_eq!(
        inside.try_get::<String>("", "r").unwrap(),
        uphub_tenants::APP_ROLE
    );
    tx.execute_raw(key("dropped")).await.unwrap();
    drop(tx);

    let tx = TenantTx::begin(&app.core.db, TenantId(a)).await.unwrap();
    tx.execute_raw(key("kept")).await.unwrap();
    tx.commit().await.unwrap();

    let n = |row: Option<sea_orm::QueryResult>| row.unwrap().try_get::<i64>("", "n").unwrap();
    assert_eq!(
        n(app.core.db.query_one_raw(count("dropped")).await.unwrap()),
        0
    );
    assert_eq!(
        n(app.core.db.query_one_raw(count("kept")).await.unwrap()),
        1
    );
    // Every pooled connection the next requests get is back to no tenant and the owner role.
    for _ in 0..20 {
        let after = app.core.db.query_one_raw(scope()).await.unwrap().unwrap();
        assert_eq!(after.try_get::<String>("", "t").unwrap(), "");
        assert_ne!(
            after.try_get::<String>("", "r").unwrap(),
            uphub_tenants::APP_ROLE
        );
    }
}

trait BeginAppRole {
    async fn begin_with_app_role(&self) -> sea_orm::DatabaseTransaction;
}

impl BeginAppRole for sea_orm::DatabaseConnection {
    async fn begin_with_app_role(&self) -> sea_orm::DatabaseTransaction {
        use sea_orm::TransactionTrait;
        let tx = self.begin().await.unwrap();
        tx.execute_unprepared("SET LOCAL ROLE uphub_app")
            .await
            .unwrap();
        tx
    }
}

/// Every operation that takes an ID answers another tenant's ID exactly as a missing one.
#[tokio::test]
async fn another_tenants_ids_answer_exactly_like_ids_that_do_not_exist() {
    let app = spawn_app().await;
    let b_key = app
        .gql(Some(&app.b.token), "mutation { apiKeyCreate(input: {name: \"b\", scopes: [\"STAFF_READ\"]}) { apiKey { id } } }", json!({}))
        .await["data"]["apiKeyCreate"]["apiKey"]["id"]
        .clone();
    let b_staff = app
        .gql(Some(&app.b.token), "{ me { id } }", json!({}))
        .await["data"]["me"]["id"]
        .clone();
    let missing_staff = uphub_domain::gid::encode("StaffMember", uuid::Uuid::now_v7());
    let missing_key = uphub_domain::gid::encode("ApiKey", uuid::Uuid::now_v7());
    let missing_dl = uphub_domain::gid::encode("DeadLetter", uuid::Uuid::now_v7());
    let cases = [
        (
            "query($id: ID!) { staffMember(id: $id) { id email } }",
            b_staff.clone(),
            json!(missing_staff),
        ),
        (
            "mutation($id: ID!) { staffUpdateRoles(input: {id: $id, roles: [\"OPERATOR\"]}) { staffMember { id } userErrors { code field message } } }",
            b_staff.clone(),
            json!(missing_staff),
        ),
        (
            "mutation($id: ID!) { staffDeactivate(input: {id: $id}) { staffMember { id } userErrors { code field message } } }",
            b_staff.clone(),
            json!(missing_staff),
        ),
        (
            "mutation($id: ID!) { apiKeyRevoke(input: {id: $id}) { apiKey { id } userErrors { code field message } } }",
            b_key.clone(),
            json!(missing_key),
        ),
        (
            "mutation($id: ID!) { deadLetterReplay(input: {id: $id}) { deadLetter { id } userErrors { code field message } } }",
            json!(missing_dl),
            json!(missing_dl),
        ),
        (
            "query($id: ID!) { staffMember(id: $id) { id } }",
            json!("garbage-id"),
            json!(missing_staff),
        ),
    ];
    for (q, foreign, missing) in cases {
        let mut f = app.gql(Some(&app.a.token), q, json!({"id": foreign})).await;
        let mut m = app.gql(Some(&app.a.token), q, json!({"id": missing})).await;
        f.as_object_mut().unwrap().remove("extensions");
        m.as_object_mut().unwrap().remove("extensions");
        assert_eq!(f, m, "{q}");
        assert!(!f.to_string().contains("INTERNAL"), "{f}");
    }
    // B's objects are untouched.
    let me = app
        .gql(
            Some(&app.b.token),
            "{ me { roles } apiKeys { edges { node { revokedAt } } } }",
            json!({}),
        )
        .await;
    assert_eq!(me["data"]["me"]["roles"], json!(["OWNER"]));
    assert_eq!(
        me["data"]["apiKeys"]["edges"][0]["node"]["revokedAt"],
        json!(null)
    );
}

/// `uphub_me` (the one-round-trip `me` read) runs its query under tenant A's scope as the app
/// role, finds only A's user, and the app role itself cannot call it.
#[tokio::test]
async fn the_me_function_reads_as_the_app_role_in_the_callers_tenant_only() {
    use sea_orm::TransactionTrait;
    let app = spawn_app().await;
    let a = tenant_id(&app, &app.a.slug).await;
    let b = tenant_id(&app, &app.b.slug).await;
    let user_of = |t: uuid::Uuid| {
        let db = app.core.db.clone();
        async move {
            db.query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT id FROM staff_users WHERE tenant_id = $1",
                [t.into()],
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<uuid::Uuid>("", "id")
            .unwrap()
        }
    };
    let (ua, ub) = (user_of(a).await, user_of(b).await);
    let call = |t: uuid::Uuid, u: uuid::Uuid| {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT slug FROM uphub_me($1, $2)",
            [t.into(), u.into()],
        )
    };
    let tx = app.core.db.begin().await.unwrap();
    let rows = tx.query_all_raw(call(a, ua)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].try_get::<String>("", "slug").unwrap(), app.a.slug);
    // What its query ran under: the app role and A's scope, until the transaction ends.
    let scope = tx
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_user::text AS who, current_setting('app.tenant_id') AS tenant",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(scope.try_get::<String>("", "who").unwrap(), "uphub_app");
    assert_eq!(
        scope.try_get::<String>("", "tenant").unwrap(),
        a.to_string()
    );
    drop(tx);
    // B's user asked in A's scope (or the other way round) is nobody; each call is its own
    // transaction, as the gateway makes it.
    assert!(
        app.core
            .db
            .query_all_raw(call(a, ub))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        app.core
            .db
            .query_all_raw(call(b, ua))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        app.core.db.query_all_raw(call(b, ub)).await.unwrap().len(),
        1
    );
    // Request work (the app role) cannot call it to pick a tenant of its own.
    let tx = app.core.db.begin_with_app_role().await;
    let denied = tx.query_all_raw(call(b, ub)).await;
    assert!(denied.is_err(), "the app role must not execute uphub_me");
}
