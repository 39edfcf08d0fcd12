use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_catalog_inventory"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, include_str!("sql/0002_catalog_inventory.sql")).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(
            manager,
            "DROP TABLE IF EXISTS inventory_dirty, activation_codes, reservation_lines, reservations,
             stock_holds, inventory_ledger, inventory_levels, warehouses, listings, sales_channels,
             skus, products, membership_plans CASCADE;",
        )
        .await
    }
}
