use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0010_payment_close_buyer_refresh"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(
            manager,
            include_str!("sql/0010_payment_close_buyer_refresh.sql"),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(
            manager,
            "DROP TABLE IF EXISTS buyer_refresh_tokens CASCADE;
             DROP INDEX IF EXISTS payments_close_due;
             ALTER TABLE payments DROP COLUMN IF EXISTS close_state, DROP COLUMN IF EXISTS close_attempts,
               DROP COLUMN IF EXISTS close_next_at, DROP COLUMN IF EXISTS close_error;
             ALTER TABLE payments DROP CONSTRAINT payments_status_check;
             ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('CREATED', 'PAID'));",
        )
        .await
    }
}
