//! The outbox: one row per write to a replicated table, appended in the same
//! transaction as the write. `seq` is the cursor peers acknowledge.

use sea_orm::entity::prelude::*;
use sea_orm::{Condition, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "change_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub table_name: String,
    #[sea_orm(indexed)]
    pub row_id: i64,
    pub hlc: i64,
    pub origin: i64,
    pub deleted: bool,
    /// JSON object of the columns this write set, with their new values. MEDIUMTEXT:
    /// a command's result is escaped once more in here.
    #[sea_orm(column_type = r#"custom("MEDIUMTEXT")"#)]
    pub payload: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A new entry: the write of `fields` to row `row_id` of `table`, stamped `hlc` (the
/// writer is the stamp's node). Its position is given when it is inserted.
pub fn entry(
    table: &str,
    row_id: i64,
    hlc: i64,
    deleted: bool,
    fields: serde_json::Map<String, serde_json::Value>,
) -> ActiveModel {
    ActiveModel {
        table_name: sea_orm::Set(table.to_string()),
        row_id: sea_orm::Set(row_id),
        hlc: sea_orm::Set(hlc),
        origin: sea_orm::Set(crate::clock::node_of(hlc)),
        deleted: sea_orm::Set(deleted),
        payload: sea_orm::Set(serde_json::Value::Object(fields).to_string()),
        created_at: sea_orm::Set(crate::now_ms()),
        ..Default::default()
    }
}

/// Which rows the log says changed: `(position, table, row)` of up to `limit` entries
/// after position `after`, and of those at the skipped positions `gaps` that have
/// appeared since, oldest first. Payloads are not read.
pub async fn touched<C: ConnectionTrait>(
    db: &C,
    after: i64,
    gaps: &[i64],
    limit: u64,
) -> Result<Vec<(i64, String, i64)>, DbErr> {
    let mut wanted = Condition::any().add(Column::Seq.gt(after));
    if !gaps.is_empty() {
        wanted = wanted.add(Column::Seq.is_in(gaps.iter().copied()));
    }
    let gaps = u64::try_from(gaps.len()).unwrap_or(u64::MAX);
    Entity::find()
        .select_only()
        .column(Column::Seq)
        .column(Column::TableName)
        .column(Column::RowId)
        .filter(wanted)
        .order_by_asc(Column::Seq)
        .limit(limit.saturating_add(gaps))
        .into_tuple()
        .all(db)
        .await
}
