//! Change-sync between two nodes' databases (docs/design.md §5; `docs/sync.md` explains it).
//!
//! A sender streams its change log from the cursor the receiver acknowledged. The
//! receiver merges each change field by field: a field takes the incoming value only
//! when the incoming stamp is newer than the one it holds (stamps are unique across
//! the federation, see [`crate::clock`]). A command's `state` merges by its forward
//! order first, so a finished command never goes back to running. Merging is a
//! per-field maximum, so applying a change twice, or changes in any order, ends in
//! the same row on every node. Accepted fields are appended to the receiver's own
//! change log with their original stamps, so the center relays what an edge wrote
//! to the other nodes that need it.

use std::collections::{BTreeMap, HashMap};

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PrimaryKeyTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::replica::{content, Replicated};
use crate::{
    change_log, commands, desired_configs, devices, groups, memberships, rollout_devices, rollouts,
    Replica,
};

/// One write as it travels between nodes: the columns it set, stamped `hlc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Position in the sender's change log (0 for a snapshot row).
    pub seq: i64,
    pub table: String,
    pub id: i64,
    pub hlc: i64,
    pub fields: Map<String, Value>,
}

impl From<change_log::Model> for Change {
    fn from(entry: change_log::Model) -> Self {
        let fields = match serde_json::from_str(&entry.payload) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Self {
            seq: entry.seq,
            table: entry.table_name,
            id: entry.row_id,
            hlc: entry.hlc,
            fields,
        }
    }
}

/// Up to `limit` change-log entries after `cursor`, oldest first.
pub async fn read<C: ConnectionTrait>(
    db: &C,
    cursor: i64,
    limit: u64,
) -> Result<Vec<Change>, DbErr> {
    Ok(change_log::Entity::find()
        .filter(change_log::Column::Seq.gt(cursor))
        .order_by_asc(change_log::Column::Seq)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(Change::from)
        .collect())
}

/// Whose changes a peer gets of this node's log.
#[derive(Clone, Copy, Debug)]
pub enum Origins {
    /// Only this node's own writes (an edge sends the center nothing else).
    Only(i64),
    /// Everyone's but this node's (never a peer's own changes back).
    AllBut(i64),
}

impl Origins {
    pub fn includes(self, change: &Change) -> bool {
        let node = crate::clock::node_of(change.hlc);
        match self {
            Origins::Only(n) => node == n,
            Origins::AllBut(n) => node != n,
        }
    }
}

/// Like [`read`], for a peer that gets the changes of `origins` only: the others
/// come as positions with no fields, their payloads neither read nor parsed (under a
/// command storm most of a center's log is its edges' own results coming back), so
/// a reader still sees every position and takes none for a gap.
pub async fn read_for<C: ConnectionTrait>(
    db: &C,
    cursor: i64,
    limit: u64,
    origins: Origins,
) -> Result<Vec<Change>, DbErr> {
    use change_log::Column;
    let (op, node) = match origins {
        Origins::Only(n) => ("=", n),
        Origins::AllBut(n) => ("<>", n),
    };
    let payload = sea_orm::sea_query::Expr::cust_with_values(
        format!("CASE WHEN origin {op} ? THEN payload ELSE '' END"),
        [node],
    );
    Ok(change_log::Entity::find()
        .select_only()
        .columns([
            Column::Seq,
            Column::TableName,
            Column::RowId,
            Column::Hlc,
            Column::Origin,
            Column::Deleted,
            Column::CreatedAt,
        ])
        .column_as(payload, "payload")
        .filter(Column::Seq.gt(cursor))
        .order_by_asc(Column::Seq)
        .limit(limit)
        .into_model::<change_log::Model>()
        .all(db)
        .await?
        .into_iter()
        .map(Change::from)
        .collect())
}

/// The change-log entries at exactly these positions (those that exist).
pub async fn read_at<C: ConnectionTrait>(db: &C, seqs: &[i64]) -> Result<Vec<Change>, DbErr> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(change_log::Entity::find()
        .filter(change_log::Column::Seq.is_in(seqs.to_vec()))
        .order_by_asc(change_log::Column::Seq)
        .all(db)
        .await?
        .into_iter()
        .map(Change::from)
        .collect())
}

/// The newest position of the change log (0 when empty).
pub async fn head<C: ConnectionTrait>(db: &C) -> Result<i64, DbErr> {
    Ok(change_log::Entity::find()
        .order_by_desc(change_log::Column::Seq)
        .one(db)
        .await?
        .map_or(0, |e| e.seq))
}

/// Merges one change into the local database, in the caller's transaction. Returns
/// whether any field changed. Changes to tables this node does not know are skipped
/// (a newer peer), as are columns it does not know, and so is a change whose stamp
/// the clock refuses (too far ahead): it is never merged, and the clock stays put.
/// Batches go through [`crate::merge::apply_batch`], which this is the one-change case of.
pub async fn apply<C: ConnectionTrait>(
    conn: &C,
    replica: &Replica,
    change: &Change,
) -> Result<bool, DbErr> {
    Ok(!crate::merge::apply_batch(conn, replica, &[change])
        .await?
        .is_empty())
}

/// Leaves out each change that later changes of the same row in `changes` make moot:
/// every field it sets is set again with a later stamp. A peer merging only the rest
/// ends with the same rows and stamps (fields merge last-writer-wins), so a frame
/// under a storm carries a command's result, not also its `sent` and `running`.
pub fn without_superseded(changes: Vec<Change>) -> Vec<Change> {
    let mut later: HashMap<(&str, i64), HashMap<&str, i64>> = HashMap::new();
    let mut moot = vec![false; changes.len()];
    for (i, c) in changes.iter().enumerate().rev() {
        let stamps = later.entry((c.table.as_str(), c.id)).or_default();
        moot[i] = !c.fields.is_empty()
            && c.fields
                .keys()
                .all(|f| stamps.get(f.as_str()).is_some_and(|h| *h > c.hlc));
        for f in c.fields.keys() {
            let stamp = stamps.entry(f.as_str()).or_insert(c.hlc);
            *stamp = (*stamp).max(c.hlc);
        }
    }
    changes
        .into_iter()
        .zip(moot)
        .filter_map(|(c, moot)| (!moot).then_some(c))
        .collect()
}

/// A whole row as changes, one per distinct field stamp, so a peer that never saw the
/// row (a new edge, or a device entering an edge's scope) gets every field with the
/// stamp it really has.
pub fn row_changes<M: Replicated>(row: &M) -> Result<Vec<Change>, DbErr> {
    let stamps: BTreeMap<String, i64> =
        serde_json::from_str(row.field_stamps()).unwrap_or_default();
    let mut by_stamp: BTreeMap<i64, Map<String, Value>> = BTreeMap::new();
    for (field, value) in content(row)? {
        if let Some(stamp) = stamps.get(&field).copied().filter(|s| *s > 0) {
            by_stamp.entry(stamp).or_default().insert(field, value);
        }
    }
    Ok(by_stamp
        .into_iter()
        .map(|(hlc, fields)| Change {
            seq: 0,
            table: M::TABLE.name().to_string(),
            id: row.id(),
            hlc,
            fields,
        })
        .collect())
}

/// The current row `id` of `table` as changes (none when it does not exist).
pub async fn full_row<C: ConnectionTrait>(
    db: &C,
    table: &str,
    id: i64,
) -> Result<Vec<Change>, DbErr> {
    async fn of<E, C>(db: &C, id: i64) -> Result<Vec<Change>, DbErr>
    where
        C: ConnectionTrait,
        E: EntityTrait,
        E::Model: Replicated,
        <E::PrimaryKey as PrimaryKeyTrait>::ValueType: From<i64>,
    {
        match E::find_by_id(id).one(db).await? {
            Some(row) => row_changes(&row),
            None => Ok(Vec::new()),
        }
    }
    match table {
        "devices" => of::<devices::Entity, C>(db, id).await,
        "device_groups" => of::<groups::Entity, C>(db, id).await,
        "memberships" => of::<memberships::Entity, C>(db, id).await,
        "commands" => of::<commands::Entity, C>(db, id).await,
        "desired_configs" => of::<desired_configs::Entity, C>(db, id).await,
        "rollouts" => of::<rollouts::Entity, C>(db, id).await,
        "rollout_devices" => of::<rollout_devices::Entity, C>(db, id).await,
        _ => Ok(Vec::new()),
    }
}

/// The highest stamp this database holds, in any replicated row or in its change log.
pub async fn highest_stamp<C: ConnectionTrait>(db: &C) -> Result<i64, DbErr> {
    async fn max_of<E: EntityTrait, C: ConnectionTrait>(
        db: &C,
        column: E::Column,
    ) -> Result<i64, DbErr> {
        let max: Option<Option<i64>> = E::find()
            .select_only()
            .column_as(column.max(), "hlc")
            .into_tuple()
            .one(db)
            .await?;
        Ok(max.flatten().unwrap_or(0))
    }
    Ok([
        max_of::<devices::Entity, C>(db, devices::Column::Hlc).await?,
        max_of::<groups::Entity, C>(db, groups::Column::Hlc).await?,
        max_of::<memberships::Entity, C>(db, memberships::Column::Hlc).await?,
        max_of::<commands::Entity, C>(db, commands::Column::Hlc).await?,
        max_of::<desired_configs::Entity, C>(db, desired_configs::Column::Hlc).await?,
        max_of::<rollouts::Entity, C>(db, rollouts::Column::Hlc).await?,
        max_of::<rollout_devices::Entity, C>(db, rollout_devices::Column::Hlc).await?,
        max_of::<change_log::Entity, C>(db, change_log::Column::Hlc).await?,
    ]
    .into_iter()
    .max()
    .unwrap_or(0))
}

/// The position below which the log no longer holds entries: a peer whose cursor is
/// below it missed changes that are gone, and needs a snapshot.
pub async fn horizon<C: ConnectionTrait>(db: &C) -> Result<i64, DbErr> {
    let oldest = change_log::Entity::find()
        .order_by_asc(change_log::Column::Seq)
        .one(db)
        .await?;
    Ok(oldest.map_or(0, |e| e.seq - 1))
}

/// Entries one compaction step deletes at most, so no one transaction grows big.
pub const COMPACT_STEP: i64 = 10_000;

/// One step of compaction: drops up to [`COMPACT_STEP`] of the oldest change-log
/// entries that every peer has acknowledged, or that are older than `retain_ms`
/// whoever has not (a peer that far behind gets a snapshot instead). The newest
/// entry always stays, so positions keep counting up from it. Returns how many
/// entries went; call again until it returns 0.
pub async fn compact<C: ConnectionTrait>(db: &C, retain_ms: i64) -> Result<u64, DbErr> {
    let head = head(db).await?;
    if head == 0 {
        return Ok(0);
    }
    let acked: Option<Option<i64>> = crate::link_cursors::Entity::find()
        .select_only()
        .column_as(crate::link_cursors::Column::Acked.min(), "acked")
        .into_tuple()
        .one(db)
        .await?;
    // With no peer yet, nobody waits for the log: a first link starts from a snapshot.
    let by_ack = acked.flatten().unwrap_or(head);
    let expired: Option<Option<i64>> = change_log::Entity::find()
        .select_only()
        .column_as(change_log::Column::Seq.max(), "seq")
        .filter(change_log::Column::CreatedAt.lt(crate::now_ms() - retain_ms))
        .into_tuple()
        .one(db)
        .await?;
    let floor = by_ack.max(expired.flatten().unwrap_or(0)).min(head - 1);
    let oldest = horizon(db).await?;
    if oldest >= floor {
        return Ok(0);
    }
    Ok(change_log::Entity::delete_many()
        .filter(change_log::Column::Seq.lte(floor.min(oldest + COMPACT_STEP)))
        .exec(db)
        .await?
        .rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: i64, id: i64, hlc: i64, fields: &[(&str, i64)]) -> Change {
        Change {
            seq,
            table: "commands".into(),
            id,
            hlc,
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_string(), Value::from(*v)))
                .collect(),
        }
    }

    #[test]
    fn a_change_whose_fields_are_all_set_again_later_is_left_out() {
        let kept = without_superseded(vec![
            change(1, 7, 10, &[("state", 1)]),
            change(2, 8, 11, &[("state", 1)]),
            change(3, 7, 12, &[("state", 2), ("progress", 40)]),
            change(4, 7, 13, &[("state", 3), ("result", 0)]),
        ]);
        let seqs: Vec<i64> = kept.iter().map(|c| c.seq).collect();
        // 1 is covered by 3; 3's progress is set by nothing later, so 3 stays.
        assert_eq!(seqs, vec![2, 3, 4]);
    }

    #[test]
    fn fields_set_by_several_later_changes_cover_an_earlier_one() {
        let kept = without_superseded(vec![
            change(1, 7, 10, &[("state", 1), ("result", 0)]),
            change(2, 7, 11, &[("state", 2)]),
            change(3, 7, 12, &[("result", 1)]),
        ]);
        assert_eq!(kept.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn a_later_change_with_an_older_stamp_covers_nothing() {
        let kept = without_superseded(vec![
            change(1, 7, 20, &[("state", 1)]),
            change(2, 7, 15, &[("state", 2)]),
        ]);
        assert_eq!(kept.len(), 2);
        let other_table = Change {
            table: "devices".into(),
            ..change(3, 7, 30, &[("state", 3)])
        };
        let kept = without_superseded(vec![change(1, 7, 10, &[("state", 1)]), other_table]);
        assert_eq!(
            kept.len(),
            2,
            "rows of other tables with the same id are not the same row"
        );
    }
}
