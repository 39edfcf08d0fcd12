use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "staff_users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub email_cipher: Vec<u8>,
    pub email_bidx: Vec<u8>,
    pub email_masked: String,
    pub phone_cipher: Option<Vec<u8>>,
    pub phone_masked: Option<String>,
    pub password_hash: Option<String>,
    pub roles: Vec<String>,
    pub status: String,
    pub invite_token_hash: Option<Vec<u8>>,
    pub invited_by: Option<Uuid>,
    pub created_at: crate::Timestamp,
    pub updated_at: crate::Timestamp,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
