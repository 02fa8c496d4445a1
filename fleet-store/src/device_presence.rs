//! Which devices are online at which edge, at the center. The replica holding an
//! edge's link writes what the edge's live view says (and marks them offline when the
//! link ends); every replica reads it, so the live view is the same from each.
//! Not replicated: it is the center's own reading of its links.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::QueryOrder;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "device_presence")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub device_id: i64,
    /// The edge the device is (or was last) connected at.
    pub edge_id: i64,
    pub online: bool,
    /// Milliseconds since the epoch, by the writing replica's clock.
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Rows one statement writes.
const ROWS_PER_STATEMENT: usize = 500;

/// Records that `devices` connected (`online`) or left, at `edge`.
pub async fn set<C: ConnectionTrait>(
    db: &C,
    edge: i64,
    devices: &[i64],
    online: bool,
    now: i64,
) -> Result<(), DbErr> {
    for chunk in devices.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk.iter().map(|d| ActiveModel {
            device_id: sea_orm::Set(*d),
            edge_id: sea_orm::Set(edge),
            online: sea_orm::Set(online),
            updated_at: sea_orm::Set(now),
        });
        Entity::insert_many(rows)
            .on_conflict(
                OnConflict::column(Column::DeviceId)
                    .update_columns([Column::EdgeId, Column::Online, Column::UpdatedAt])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Records every device of `edge` as gone (its link ended, or it sent its whole view
/// afresh).
pub async fn all_left<C: ConnectionTrait>(db: &C, edge: i64, now: i64) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::Online, Expr::value(false))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::EdgeId.eq(edge))
        .filter(Column::Online.eq(true))
        .exec(db)
        .await?;
    Ok(())
}

/// Rows written at or after `since` (ms), oldest first.
pub async fn since<C: ConnectionTrait>(db: &C, since: i64) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .filter(Column::UpdatedAt.gte(since))
        .order_by_asc(Column::UpdatedAt)
        .all(db)
        .await
}
