//! Desired device configuration, one row per device (replicated both ways).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "desired_configs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[sea_orm(unique)]
    pub device_id: i64,
    pub version: i64,
    pub report_interval_s: i32,
    /// JSON object of custom key/values.
    #[sea_orm(column_type = "Text")]
    pub settings: String,
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
