//! Device groups (replicated both ways).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "device_groups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[sea_orm(column_type = "String(StringLen::N(128))")]
    pub name: String,
    #[sea_orm(column_type = "String(StringLen::N(1024))")]
    pub description: String,
    /// The name while the group is live, NULL once deleted (see devices::live_key).
    #[sea_orm(column_type = "String(StringLen::N(128))", nullable, unique)]
    pub live_name: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub hlc: i64,
    pub origin: i64,
    pub deleted: bool,
    #[sea_orm(column_type = "Text")]
    pub field_stamps: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
