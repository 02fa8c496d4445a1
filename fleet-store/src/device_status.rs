//! The latest status report of each device (flows edge -> center). Written in
//! coalesced batches, never once per report.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "device_status")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub device_id: i64,
    pub version: i64,
    /// The desired-configuration version the device reported it runs (0 for none).
    pub config_version: i64,
    /// The status report as JSON (`shared_proto::southbound::Status`).
    #[sea_orm(column_type = "Text")]
    pub status: String,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Writes many statuses in one statement, replacing what is there.
pub async fn upsert_many<C: ConnectionTrait>(db: &C, rows: Vec<Model>) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let models = rows.into_iter().map(|m| ActiveModel {
        device_id: sea_orm::Set(m.device_id),
        version: sea_orm::Set(m.version),
        config_version: sea_orm::Set(m.config_version),
        status: sea_orm::Set(m.status),
        updated_at: sea_orm::Set(m.updated_at),
    });
    Entity::insert_many(models)
        .on_conflict(
            OnConflict::column(Column::DeviceId)
                .update_columns([
                    Column::Version,
                    Column::ConfigVersion,
                    Column::Status,
                    Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}
