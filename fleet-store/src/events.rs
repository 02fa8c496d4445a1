//! Audit and device events: who did what to which target, when, and how it ended.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub at: i64,
    #[sea_orm(column_type = "String(StringLen::N(64))", indexed)]
    pub actor: String,
    #[sea_orm(column_type = "String(StringLen::N(128))", indexed)]
    pub action: String,
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub target_type: String,
    #[sea_orm(column_type = "String(StringLen::N(64))", indexed)]
    pub target_id: String,
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub outcome: String,
    pub status_code: i32,
    #[sea_orm(column_type = "Text")]
    pub detail: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
