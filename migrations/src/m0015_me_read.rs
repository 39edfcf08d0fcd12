use sea_orm_migration::prelude::*;

pub struct Migration;

/// The function's body switches to the app role by name: the name comes from [`crate::APP_ROLE`],
/// not from a second literal that could drift from it.
fn sql() -> String {
    include_str!("sql/0015_me_read.sql").replace("{APP_ROLE}", crate::APP_ROLE)
}

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0015_me_read"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, &sql()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_sql(manager, "DROP FUNCTION IF EXISTS uphub_me(uuid, uuid);").await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_function_switches_to_the_app_role_of_the_crate() {
        let sql = super::sql();
        assert!(sql.contains(&format!("set_config('role', '{}', true)", crate::APP_ROLE)));
        assert!(!sql.contains("{APP_ROLE}"));
    }
}
