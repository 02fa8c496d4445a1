//! Log files that devices uploaded for a `pull_logs` command (one per command; a
//! repeated upload replaces the first). They flow edge -> center like events.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::IntoActiveModel;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "pulled_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub command_id: i64,
    #[sea_orm(indexed)]
    pub device_id: i64,
    pub bytes: i64,
    /// MEDIUMBLOB: a plain BLOB holds only 64 KiB on MySQL.
    #[sea_orm(column_type = r#"custom("MEDIUMBLOB")"#)]
    pub content: Vec<u8>,
    pub uploaded_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Stores an upload, replacing an earlier one of the same command.
pub async fn save<C: ConnectionTrait>(db: &C, row: Model) -> Result<(), DbErr> {
    Entity::insert(row.into_active_model())
        .on_conflict(
            OnConflict::column(Column::CommandId)
                .update_columns([
                    Column::DeviceId,
                    Column::Bytes,
                    Column::Content,
                    Column::UploadedAt,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}
