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

/// Queues events for the center: appended to the change log in the caller's
/// transaction, so they travel the link like any change (edge -> center only).
pub async fn ship<C: ConnectionTrait>(
    conn: &C,
    replica: &crate::Replica,
    rows: &[Model],
) -> Result<(), DbErr> {
    let entries: Vec<crate::change_log::ActiveModel> = rows
        .iter()
        .filter_map(|row| match serde_json::to_value(row) {
            Ok(serde_json::Value::Object(payload)) => Some((row.id, payload)),
            _ => None,
        })
        .map(|(id, payload)| {
            crate::change_log::entry(
                crate::Table::Events.name(),
                id,
                replica.tick(),
                false,
                payload,
            )
        })
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    crate::change_log::Entity::insert_many(entries)
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Takes in events another node shipped, a chunk per statement; copies already held
/// change nothing.
pub(crate) async fn take_many<'a, C: ConnectionTrait>(
    conn: &C,
    shipped: impl Iterator<Item = &'a serde_json::Map<String, serde_json::Value>>,
) -> Result<(), DbErr> {
    let rows = shipped
        .map(|fields| {
            serde_json::from_value::<Model>(serde_json::Value::Object(fields.clone()))
                .map(sea_orm::IntoActiveModel::into_active_model)
                .map_err(|e| DbErr::Custom(format!("a shipped event: {e}")))
        })
        .collect::<Result<Vec<ActiveModel>, DbErr>>()?;
    for chunk in rows.chunks(200) {
        Entity::insert_many(chunk.to_vec())
            .on_conflict(
                // Rewriting the id with itself: a no-op update every dialect accepts
                // (MySQL has no portable "do nothing").
                sea_orm::sea_query::OnConflict::column(Column::Id)
                    .update_column(Column::Id)
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}
