//! Merging a batch of changes set by set (`docs/sync.md` §2): the rows a batch touches
//! are read at once per table, merged field by field in memory in the batch's order,
//! then written back with a bounded number of statements per table (one multi-row
//! upsert per chunk, one multi-row append to the change log), whatever the batch's
//! size. The per-field rule is the one of [`crate::sync::apply`]: an incoming value
//! wins only with a newer stamp, and a command's state by its forward order first.

use std::collections::{BTreeMap, HashMap};

use sea_orm::sea_query::{ColumnType, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IdenStatic,
    IntoActiveModel, Iterable, PrimaryKeyToColumn, PrimaryKeyTrait,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::keys::{self, Key};
use crate::replica::{content, Replicated, ROWS_PER_STATEMENT, SYNC_COLUMNS};
use crate::sync::Change;
use crate::{
    change_log, commands, desired_configs, devices, groups, memberships, rollout_devices, rollouts,
    Replica, Table,
};

/// Merges `changes` in order, in the caller's transaction. Returns the (table, id) of
/// every row that changed, in the order of their first change. Changes whose stamp
/// the clock refuses, to tables this node does not know, or to unknown columns, are
/// skipped as in [`crate::sync::apply`].
pub async fn apply_batch<C: ConnectionTrait>(
    conn: &C,
    replica: &Replica,
    changes: &[&Change],
) -> Result<Vec<(String, i64)>, DbErr> {
    let mut by_table: BTreeMap<&str, Vec<&Change>> = BTreeMap::new();
    for change in changes {
        if replica.observe(change.hlc).is_err() {
            continue;
        }
        by_table
            .entry(change.table.as_str())
            .or_default()
            .push(change);
    }
    let mut touched: Vec<(String, i64)> = Vec::new();
    for (table, batch) in by_table {
        let changed = match table {
            "devices" => merge::<devices::Entity, C>(conn, &batch).await?,
            "device_groups" => merge::<groups::Entity, C>(conn, &batch).await?,
            "memberships" => merge::<memberships::Entity, C>(conn, &batch).await?,
            "commands" => merge::<commands::Entity, C>(conn, &batch).await?,
            "desired_configs" => merge::<desired_configs::Entity, C>(conn, &batch).await?,
            "rollouts" => merge::<rollouts::Entity, C>(conn, &batch).await?,
            "rollout_devices" => merge::<rollout_devices::Entity, C>(conn, &batch).await?,
            "events" => {
                crate::events::take_many(conn, batch.iter().map(|c| &c.fields)).await?;
                Vec::new()
            }
            "pulled_logs" => {
                for c in batch {
                    crate::pulled_logs::take(conn, c.id, &c.fields).await?;
                }
                Vec::new()
            }
            _ => Vec::new(),
        };
        touched.extend(changed.into_iter().map(|id| (table.to_string(), id)));
    }
    // The order of first appearance in the batch, which callers react in.
    let position: HashMap<(&str, i64), usize> = changes
        .iter()
        .enumerate()
        .rev()
        .map(|(i, c)| ((c.table.as_str(), c.id), i))
        .collect();
    touched.sort_by_key(|(t, id)| position.get(&(t.as_str(), *id)).copied());
    Ok(touched)
}

/// One row being merged: its content, per-field stamps and what the batch did to it.
struct Working {
    row: Map<String, Value>,
    stamps: BTreeMap<String, i64>,
    hlc: i64,
    /// Its content before the batch, when it existed.
    before: Option<Map<String, Value>>,
    /// Change-log entries the batch adds for it: (stamp, fields accepted).
    log: Vec<(i64, Map<String, Value>)>,
}

/// Orders values of one field before their stamps do (see `sync::rank`).
fn rank(table: Table, field: &str, value: &Value) -> u8 {
    match (table, field) {
        (Table::Commands, "state") => value
            .as_str()
            .and_then(commands::State::parse)
            .map_or(0, commands::State::rank),
        (Table::RolloutDevices, "state") => value
            .as_str()
            .and_then(rollout_devices::State::parse)
            .map_or(0, rollout_devices::State::rank),
        _ => 0,
    }
}

fn decode<M: DeserializeOwned>(row: Map<String, Value>) -> Result<M, DbErr> {
    serde_json::from_value(Value::Object(row)).map_err(|e| DbErr::Custom(e.to_string()))
}

/// A row with every column at its zero value (see `sync::zero_row`).
fn zero_row<E: EntityTrait>(id: i64) -> Map<String, Value> {
    let mut row = Map::new();
    for column in E::Column::iter() {
        let def = column.def();
        let value = if def.is_null() {
            Value::Null
        } else {
            match def.get_column_type() {
                ColumnType::BigInteger
                | ColumnType::Integer
                | ColumnType::SmallInteger
                | ColumnType::TinyInteger => Value::from(0),
                ColumnType::Boolean => Value::Bool(false),
                _ => Value::String(String::new()),
            }
        };
        row.insert(column.as_str().to_string(), value);
    }
    row.insert("id".into(), Value::from(id));
    row.insert("field_stamps".into(), Value::String("{}".into()));
    row
}

/// A row as the merge starts from: the stored one, or zero values for a new row.
fn start<E>(stored: Option<&E::Model>, id: i64) -> Result<Working, DbErr>
where
    E: EntityTrait,
    E::Model: Replicated,
{
    Ok(match stored {
        Some(m) => {
            let mut row = content(m)?;
            row.insert("id".into(), Value::from(m.id()));
            Working {
                row,
                stamps: serde_json::from_str(m.field_stamps()).unwrap_or_default(),
                hlc: m.hlc(),
                before: Some(content(m)?),
                log: Vec::new(),
            }
        }
        None => Working {
            row: zero_row::<E>(id),
            stamps: BTreeMap::new(),
            hlc: 0,
            before: None,
            log: Vec::new(),
        },
    })
}

/// Applies one change to a row in memory; the fields it accepted, if any.
fn merge_fields(table: Table, w: &mut Working, change: &Change) {
    let mut accepted = Map::new();
    for (field, value) in &change.fields {
        if SYNC_COLUMNS.contains(&field.as_str()) {
            continue;
        }
        let Some(current) = w.row.get(field) else {
            continue;
        };
        let held = w.stamps.get(field).copied().unwrap_or(0);
        let incoming = (rank(table, field, value), change.hlc);
        if incoming > (rank(table, field, current), held) {
            w.row.insert(field.clone(), value.clone());
            w.stamps.insert(field.clone(), change.hlc);
            accepted.insert(field.clone(), value.clone());
        }
    }
    if !accepted.is_empty() {
        w.hlc = w.hlc.max(change.hlc);
        w.log.push((change.hlc, accepted));
    }
}

async fn merge<E, C>(conn: &C, batch: &[&Change]) -> Result<Vec<i64>, DbErr>
where
    C: ConnectionTrait,
    E: EntityTrait,
    E::Model: Replicated + DeserializeOwned + IntoActiveModel<<E::Model as Replicated>::Active>,
    <E::Model as Replicated>::Active: ActiveModelTrait<Entity = E>,
    <E::PrimaryKey as PrimaryKeyTrait>::ValueType: From<i64>,
{
    let table = <E::Model as Replicated>::TABLE;
    let mut ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let found = crate::replica::read_locked::<E, C>(conn, &ids).await?;
    let mut working: HashMap<i64, Working> = HashMap::with_capacity(ids.len());
    let mut first_seen: Vec<i64> = Vec::new();
    for change in batch {
        let w = match working.entry(change.id) {
            std::collections::hash_map::Entry::Occupied(held) => held.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                first_seen.push(change.id);
                slot.insert(start::<E>(found.get(&change.id), change.id)?)
            }
        };
        merge_fields(table, w, change);
    }
    let changed: Vec<i64> = first_seen
        .into_iter()
        .filter(|id| working.get(id).is_some_and(|w| !w.log.is_empty()))
        .collect();
    if changed.is_empty() {
        return Ok(changed);
    }
    let mut rows: Vec<keys::Settling> = Vec::with_capacity(changed.len());
    let mut log: Vec<change_log::ActiveModel> = Vec::new();
    for id in &changed {
        let Some(mut w) = working.remove(id) else {
            continue;
        };
        w.row.insert("hlc".into(), Value::from(w.hlc));
        w.row
            .insert("origin".into(), Value::from(crate::clock::node_of(w.hlc)));
        let stamps = serde_json::to_string(&w.stamps).map_err(|e| DbErr::Custom(e.to_string()))?;
        w.row.insert("field_stamps".into(), Value::String(stamps));
        if let Some(column) = Key::column(table) {
            // Derived, not merged: settled for the whole batch below.
            let held = w.before.as_ref().and_then(|b| b.get(column)).cloned();
            w.row.insert(column.into(), held.unwrap_or(Value::Null));
        }
        let deleted = w
            .row
            .get("deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        for (hlc, fields) in w.log {
            log.push(change_log::entry(table.name(), *id, hlc, deleted, fields));
        }
        rows.push(keys::Settling {
            id: *id,
            before: w.before,
            row: w.row,
        });
    }
    let pending = keys::settle_batch(conn, table, &mut rows).await?;
    let (mut stored, mut fresh) = (Vec::new(), Vec::new());
    for r in rows {
        let list = if r.before.is_some() {
            &mut stored
        } else {
            &mut fresh
        };
        list.push(decode::<E::Model>(r.row)?);
    }
    write_rows::<E, C>(conn, stored, true).await?;
    write_rows::<E, C>(conn, fresh, false).await?;
    pending.finish(conn, table).await?;
    for chunk in log.chunks(ROWS_PER_STATEMENT) {
        change_log::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(conn)
            .await?;
    }
    Ok(changed)
}

/// Writes rows, a chunk per statement: over the stored ones (`overwrite`, locked since
/// they were read), or as new ones. A row the batch found missing is inserted, never
/// written over: should another writer have inserted it meanwhile, the insert fails
/// as a duplicate and the merge runs again from that row ([`crate::write`]).
pub(crate) async fn write_rows<E, C>(
    conn: &C,
    models: Vec<E::Model>,
    overwrite: bool,
) -> Result<(), DbErr>
where
    C: ConnectionTrait,
    E: EntityTrait,
    E::Model: Replicated + IntoActiveModel<<E::Model as Replicated>::Active>,
    <E::Model as Replicated>::Active: ActiveModelTrait<Entity = E>,
{
    let Some(pk) = E::PrimaryKey::iter().next() else {
        return Ok(());
    };
    let pk = pk.into_column();
    let others: Vec<E::Column> = E::Column::iter()
        .filter(|c| c.as_str() != pk.as_str())
        .collect();
    let mut rows = models.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<<E::Model as Replicated>::Active> = rows
            .by_ref()
            .take(ROWS_PER_STATEMENT)
            .map(|m| m.into_active_model().reset_all())
            .collect();
        let mut insert = E::insert_many(chunk);
        if overwrite {
            insert = insert.on_conflict(
                OnConflict::column(pk)
                    .update_columns(others.iter().copied())
                    .to_owned(),
            );
        }
        insert.exec_without_returning(conn).await?;
    }
    Ok(())
}
