//! How many changes each federation peer sent that were refused (`federation`'s
//! authoring rules, or a stamp too far ahead), kept across restarts so operators see
//! the running count in the edge list.

use sea_orm::entity::prelude::*;
use sea_orm::{IntoActiveModel, Set};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "link_refusals")]
pub struct Model {
    /// The peer's node (worker) id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub peer_node: i64,
    pub refused: i64,
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub last_rule: String,
    pub last_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The count of refused changes from `peer` (0 when none ever was).
pub async fn count<C: ConnectionTrait>(db: &C, peer: i64) -> Result<i64, DbErr> {
    Ok(Entity::find_by_id(peer)
        .one(db)
        .await?
        .map_or(0, |r| r.refused))
}

/// Adds `n` refusals to `peer`'s count. Callers hold the node's write turn, so the
/// read and the write cannot interleave with another writer of this count.
pub async fn add<C: ConnectionTrait>(db: &C, peer: i64, n: usize, rule: &str) -> Result<(), DbErr> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    match Entity::find_by_id(peer).one(db).await? {
        Some(row) => {
            let refused = row.refused.saturating_add(n);
            let mut active = row.into_active_model();
            active.refused = Set(refused);
            active.last_rule = Set(rule.to_string());
            active.last_at = Set(crate::now_ms());
            active.update(db).await?;
        }
        None => {
            Model {
                peer_node: peer,
                refused: n,
                last_rule: rule.to_string(),
                last_at: crate::now_ms(),
            }
            .into_active_model()
            .insert(db)
            .await?;
        }
    }
    Ok(())
}
