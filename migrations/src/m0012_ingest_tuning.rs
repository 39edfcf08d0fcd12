use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0012_ingest_tuning"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, include_str!("sql/0012_ingest_tuning.sql")).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(
            manager,
            "ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION default;
             ALTER TABLE orders RESET (fillfactor);
             ALTER TABLE order_lines RESET (fillfactor);",
        )
        .await
    }
}
