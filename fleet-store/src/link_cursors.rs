//! How far each federation link has come, per peer node: `applied` is the last entry
//! of the peer's change log merged here (written in the same transaction as the
//! merge, so a crash never loses or repeats it); `acked` is how far the peer has
//! acknowledged this node's log (what change-log compaction may drop up to).

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::IntoActiveModel;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "link_cursors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub peer_node: i64,
    pub applied: i64,
    pub acked: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub async fn get<C: ConnectionTrait>(db: &C, peer: i64) -> Result<Model, DbErr> {
    Ok(Entity::find_by_id(peer).one(db).await?.unwrap_or(Model {
        peer_node: peer,
        applied: 0,
        acked: 0,
        updated_at: 0,
    }))
}

async fn upsert<C: ConnectionTrait>(db: &C, row: Model, column: Column) -> Result<(), DbErr> {
    Entity::insert(row.into_active_model())
        .on_conflict(
            OnConflict::column(Column::PeerNode)
                .update_columns([column, Column::UpdatedAt])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}

pub async fn set_applied<C: ConnectionTrait>(db: &C, peer: i64, seq: i64) -> Result<(), DbErr> {
    let mut row = get(db, peer).await?;
    row.applied = seq;
    row.updated_at = crate::now_ms();
    upsert(db, row, Column::Applied).await
}

pub async fn set_acked<C: ConnectionTrait>(db: &C, peer: i64, seq: i64) -> Result<(), DbErr> {
    let mut row = get(db, peer).await?;
    row.acked = seq;
    row.updated_at = crate::now_ms();
    upsert(db, row, Column::Acked).await
}
