//! Commands to devices (replicated both ways; state only moves forward).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "commands")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub device_id: i64,
    /// The group or edge fan-out this command belongs to, if any.
    #[sea_orm(indexed)]
    pub batch_id: Option<i64>,
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub name: String,
    #[sea_orm(column_type = "Text")]
    pub args: String,
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub state: String,
    pub progress: i32,
    pub timeout_s: i64,
    pub deadline_at: i64,
    #[sea_orm(column_type = "Text", nullable)]
    pub result: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub created_by: String,
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
