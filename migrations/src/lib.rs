//! Schema migrations. Each migration is plain SQL (tables, indexes, RLS policies) run by
//! sea-orm-migration as the database owner.

use sea_orm_migration::prelude::*;

mod m0001_foundation;
mod m0002_catalog_inventory;
mod m0004_media;
mod m0005_orders;
mod m0006_buyers;
mod m0007_buyer_identity;
mod m0008_checkout;
mod m0009_seckill;
mod m0010_payment_close_buyer_refresh;
mod m0011_ship_back;
mod m0012_ingest_tuning;
mod m0013_refund_retry;
mod m0014_catalog_version;
mod m0015_me_read;

/// The role request work runs as: owns nothing, no BYPASSRLS, so every tenant table's forced
/// policy applies to it. Roles are cluster-wide; grants are per database.
pub const APP_ROLE: &str = "uphub_app";

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_foundation::Migration),
            Box::new(m0002_catalog_inventory::Migration),
            Box::new(m0004_media::Migration),
            Box::new(m0005_orders::Migration),
            Box::new(m0006_buyers::Migration),
            Box::new(m0007_buyer_identity::Migration),
            Box::new(m0008_checkout::Migration),
            Box::new(m0009_seckill::Migration),
            Box::new(m0010_payment_close_buyer_refresh::Migration),
            Box::new(m0011_ship_back::Migration),
            Box::new(m0012_ingest_tuning::Migration),
            Box::new(m0013_refund_retry::Migration),
            Box::new(m0014_catalog_version::Migration),
            Box::new(m0015_me_read::Migration),
        ]
    }
}

/// Runs `sql` (several statements) on the migration connection.
pub(crate) async fn run_sql(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}

/// Creates the app role if missing (tolerating a concurrent migrate creating it), then grants it
/// DML on every table of this database and re-applies RLS grants. Safe to run any number of times.
pub async fn ensure_app_role(
    db: &sea_orm_migration::sea_orm::DatabaseConnection,
) -> Result<(), DbErr> {
    use sea_orm_migration::sea_orm::ConnectionTrait;
    db.execute_unprepared(&format!(
        r#"DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
               BEGIN
                 CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
               EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
               END;
             END IF;
           END $$;
           GRANT {APP_ROLE} TO CURRENT_USER;
           GRANT USAGE ON SCHEMA public TO {APP_ROLE};
           GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};
           GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE};
           REVOKE ALL ON seaql_migrations FROM {APP_ROLE};
           DO $g$ BEGIN
             IF to_regclass('public.inventory_ledger') IS NOT NULL THEN
               REVOKE UPDATE, DELETE ON inventory_ledger FROM {APP_ROLE};
             END IF;
           END $g$;"#
    ))
    .await?;
    Ok(())
}

/// Applies pending migrations, then (re)grants the app role. What `uphub migrate` runs.
pub async fn migrate(db: &sea_orm_migration::sea_orm::DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await?;
    ensure_app_role(db).await
}
