use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_foundation"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, include_str!("sql/0001_foundation.sql")).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(
            manager,
            "DROP TABLE IF EXISTS dead_letters, processed_events, outbox, audit_events, api_keys,
             refresh_tokens, staff_users, tenant_keys, tenants CASCADE;
             DROP FUNCTION IF EXISTS uphub_tenant_id();",
        )
        .await
    }
}
