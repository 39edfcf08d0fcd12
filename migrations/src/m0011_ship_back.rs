use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0011_ship_back"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, include_str!("sql/0011_ship_back.sql")).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(
            manager,
            "DROP TABLE IF EXISTS ship_backs CASCADE;
             ALTER TABLE fulfillments DROP COLUMN IF EXISTS carrier, DROP COLUMN IF EXISTS tracking_no,
               DROP COLUMN IF EXISTS shipped_at;
             ALTER TABLE order_lines DROP COLUMN IF EXISTS stock_released;
             ALTER TABLE reservations DROP COLUMN IF EXISTS released_parts;",
        )
        .await
    }
}
