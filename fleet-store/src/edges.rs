//! Edge clouds registered at the center. Not replicated: the registry lives at the
//! center; each edge learns its own id and worker id at registration.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "edges")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[sea_orm(column_type = "String(StringLen::N(128))", unique)]
    pub name: String,
    #[sea_orm(column_type = "String(StringLen::N(128))")]
    pub site: String,
    #[sea_orm(unique)]
    pub worker_id: i64,
    #[sea_orm(column_type = "String(StringLen::N(128))")]
    pub secret_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
