//! Keys that must stay unique among live rows: a device's (model, serial number) and
//! a group's name. The unique column (`live_key`, `live_name`) is derived, not
//! merged: two nodes may register the same serial number while apart, and when their
//! rows meet, the key goes to the live row with the smallest id, on every node alike.
//! The other rows stay, without the key, until an operator resolves the duplicate;
//! if the holder is deleted or renamed, the next one takes the key over. Because the
//! holder is a function of replicated columns only, every node settles on the same
//! holder whatever order the changes came in.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::{devices, groups, Table};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Device { model: String, sn: String },
    Group(String),
}

fn text(row: &Map<String, Value>, field: &str) -> String {
    row.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl Key {
    /// The key a row of `table` claims, deleted or not; `None` for tables without one.
    pub(crate) fn of(table: Table, row: &Map<String, Value>) -> Option<Key> {
        match table {
            Table::Devices => Some(Key::Device {
                model: text(row, "hw_model"),
                sn: text(row, "hw_sn"),
            }),
            Table::Groups => Some(Key::Group(text(row, "name"))),
            _ => None,
        }
    }

    /// The derived unique column of the key's table.
    pub(crate) fn column(table: Table) -> Option<&'static str> {
        match table {
            Table::Devices => Some("live_key"),
            Table::Groups => Some("live_name"),
            _ => None,
        }
    }

    /// Gives the key to the live row with the smallest id that claims it, and takes
    /// it from every other row.
    pub(crate) async fn settle<C: ConnectionTrait>(&self, conn: &C) -> Result<(), DbErr> {
        match self {
            Key::Device { model, sn } => {
                // Every row with this serial number (almost always one), picked in
                // code: filtering on `deleted` or ordering by id in SQL would let the
                // planner walk another index over the whole table.
                let claims: Vec<(i64, String, bool)> = devices::Entity::find()
                    .select_only()
                    .column(devices::Column::Id)
                    .column(devices::Column::HwModel)
                    .column(devices::Column::Deleted)
                    .filter(devices::Column::HwSn.eq(sn.as_str()))
                    .into_tuple()
                    .all(conn)
                    .await?;
                let holder = claims
                    .into_iter()
                    .filter(|(_, m, deleted)| m == model && !deleted)
                    .map(|(id, _, _)| id)
                    .min();
                let value = devices::live_key(model, sn);
                // Released first: the unique index admits one holder at a time.
                devices::Entity::update_many()
                    .col_expr(
                        devices::Column::LiveKey,
                        Expr::value(Option::<String>::None),
                    )
                    .filter(devices::Column::LiveKey.eq(value.as_str()))
                    .filter(devices::Column::Id.ne(holder.unwrap_or(0)))
                    .exec(conn)
                    .await?;
                if let Some(id) = holder {
                    devices::Entity::update_many()
                        .col_expr(devices::Column::LiveKey, Expr::value(value))
                        .filter(devices::Column::Id.eq(id))
                        .exec(conn)
                        .await?;
                }
            }
            Key::Group(name) => {
                let holder: Option<i64> = groups::Entity::find()
                    .select_only()
                    .column(groups::Column::Id)
                    .filter(groups::Column::Name.eq(name.as_str()))
                    .filter(groups::Column::Deleted.eq(false))
                    .order_by_asc(groups::Column::Id)
                    .into_tuple()
                    .one(conn)
                    .await?;
                groups::Entity::update_many()
                    .col_expr(
                        groups::Column::LiveName,
                        Expr::value(Option::<String>::None),
                    )
                    .filter(groups::Column::LiveName.eq(name.as_str()))
                    .filter(groups::Column::Id.ne(holder.unwrap_or(0)))
                    .exec(conn)
                    .await?;
                if let Some(id) = holder {
                    groups::Entity::update_many()
                        .col_expr(groups::Column::LiveName, Expr::value(name.clone()))
                        .filter(groups::Column::Id.eq(id))
                        .exec(conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// Settles the keys a write touched: the one the row claimed before (another row
/// may take it over) and the one it claims now.
pub(crate) async fn settle_write<C: ConnectionTrait>(
    conn: &C,
    table: Table,
    before: Option<&Map<String, Value>>,
    after: &Map<String, Value>,
) -> Result<(), DbErr> {
    let Some(now) = Key::of(table, after) else {
        return Ok(());
    };
    let then = before.and_then(|b| Key::of(table, b));
    let deleted = |row: &Map<String, Value>| row.get("deleted").and_then(Value::as_bool);
    if then.as_ref() == Some(&now) && before.map(deleted) == Some(deleted(after)) {
        return Ok(());
    }
    if let Some(then) = then.filter(|t| *t != now) {
        then.settle(conn).await?;
    }
    now.settle(conn).await
}

/// A row of a batch merge whose key may need settling, before it is written.
pub(crate) struct Settling {
    pub id: i64,
    /// Its content before the batch, when it existed.
    pub before: Option<Map<String, Value>>,
    /// Its content as it will be written; the derived key column is set here.
    pub row: Map<String, Value>,
}

/// Keys to hand to rows outside the batch once the batch's rows are written.
#[derive(Default)]
pub(crate) struct Pending {
    take: Vec<(i64, String)>,
}

impl Pending {
    pub(crate) async fn finish<C: ConnectionTrait>(
        self,
        conn: &C,
        table: Table,
    ) -> Result<(), DbErr> {
        for (id, value) in self.take {
            match table {
                Table::Devices => {
                    devices::Entity::update_many()
                        .col_expr(devices::Column::LiveKey, Expr::value(value))
                        .filter(devices::Column::Id.eq(id))
                        .exec(conn)
                        .await?;
                }
                _ => {
                    groups::Entity::update_many()
                        .col_expr(groups::Column::LiveName, Expr::value(value))
                        .filter(groups::Column::Id.eq(id))
                        .exec(conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

impl Key {
    /// The value the key's unique column holds for its holder.
    fn value(&self) -> String {
        match self {
            Key::Device { model, sn } => devices::live_key(model, sn),
            Key::Group(name) => name.clone(),
        }
    }
}

/// A claim on a key: (key, deleted, the value its key column holds now).
type Claim = (Key, bool, Option<String>);

/// Every row in the database that claims one of `keys`, by id.
async fn claims<C: ConnectionTrait>(
    conn: &C,
    table: Table,
    keys: &[Key],
) -> Result<HashMap<i64, Claim>, DbErr> {
    let mut out = HashMap::new();
    match table {
        Table::Devices => {
            let sns: Vec<&str> = keys
                .iter()
                .filter_map(|k| match k {
                    Key::Device { sn, .. } => Some(sn.as_str()),
                    Key::Group(_) => None,
                })
                .collect();
            for chunk in sns.chunks(500) {
                let rows: Vec<(i64, String, String, bool, Option<String>)> =
                    devices::Entity::find()
                        .select_only()
                        .column(devices::Column::Id)
                        .column(devices::Column::HwModel)
                        .column(devices::Column::HwSn)
                        .column(devices::Column::Deleted)
                        .column(devices::Column::LiveKey)
                        .filter(devices::Column::HwSn.is_in(chunk.to_vec()))
                        .into_tuple()
                        .all(conn)
                        .await?;
                for (id, model, sn, deleted, live) in rows {
                    out.insert(id, (Key::Device { model, sn }, deleted, live));
                }
            }
        }
        _ => {
            let names: Vec<&str> = keys
                .iter()
                .filter_map(|k| match k {
                    Key::Group(name) => Some(name.as_str()),
                    Key::Device { .. } => None,
                })
                .collect();
            for chunk in names.chunks(500) {
                let rows: Vec<(i64, String, bool, Option<String>)> = groups::Entity::find()
                    .select_only()
                    .column(groups::Column::Id)
                    .column(groups::Column::Name)
                    .column(groups::Column::Deleted)
                    .column(groups::Column::LiveName)
                    .filter(groups::Column::Name.is_in(chunk.to_vec()))
                    .into_tuple()
                    .all(conn)
                    .await?;
                for (id, name, deleted, live) in rows {
                    out.insert(id, (Key::Group(name), deleted, live));
                }
            }
        }
    }
    Ok(out)
}

/// Settles the keys a batch of merged rows touches, the same way [`settle_write`]
/// does one row at a time: each key goes to the live row with the smallest id that
/// claims it, whether that row is in the batch or not. Sets the key column of the
/// batch's rows, releases the key of rows in the database that lose or change theirs
/// (before the batch is written, so no unique index ever sees two holders), and
/// answers what rows outside the batch take over once the batch is written.
pub(crate) async fn settle_batch<C: ConnectionTrait>(
    conn: &C,
    table: Table,
    rows: &mut [Settling],
) -> Result<Pending, DbErr> {
    let Some(column) = Key::column(table) else {
        return Ok(Pending::default());
    };
    let deleted = |row: &Map<String, Value>| row.get("deleted").and_then(Value::as_bool);
    let mut affected: Vec<Key> = Vec::new();
    for r in rows.iter() {
        let Some(now) = Key::of(table, &r.row) else {
            continue;
        };
        let then = r.before.as_ref().and_then(|b| Key::of(table, b));
        if then.as_ref() == Some(&now) && r.before.as_ref().map(deleted) == Some(deleted(&r.row)) {
            continue;
        }
        affected.extend(then.filter(|t| *t != now));
        affected.push(now);
    }
    if affected.is_empty() {
        return Ok(Pending::default());
    }
    affected.sort_by_key(Key::value);
    affected.dedup();
    // What the database holds, overlaid with what the batch is about to write.
    let mut all = claims(conn, table, &affected).await?;
    let stored: HashMap<i64, Option<String>> = all
        .iter()
        .map(|(id, (_, _, live))| (*id, live.clone()))
        .collect();
    let in_batch: HashMap<i64, usize> = rows.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    for r in rows.iter() {
        if let Some(key) = Key::of(table, &r.row) {
            let live = r
                .row
                .get(column)
                .and_then(Value::as_str)
                .map(str::to_string);
            all.insert(r.id, (key, deleted(&r.row).unwrap_or(false), live));
        }
    }
    let mut holders: HashMap<String, i64> = HashMap::new();
    for (id, (key, gone, _)) in &all {
        if !*gone && affected.contains(key) {
            let value = key.value();
            let holder = holders.entry(value).or_insert(*id);
            *holder = (*holder).min(*id);
        }
    }
    let mut release: Vec<i64> = Vec::new();
    let mut pending = Pending::default();
    for (id, (key, _, _)) in &all {
        if !affected.contains(key) {
            continue;
        }
        let value = key.value();
        let want = (holders.get(&value) == Some(id)).then_some(value);
        let held = stored.get(id).cloned().flatten();
        if held.is_some() && held != want {
            release.push(*id);
        }
        match in_batch.get(id) {
            Some(i) => {
                let v = want.map_or(Value::Null, Value::String);
                rows[*i].row.insert(column.into(), v);
            }
            None => {
                if let Some(value) = want.filter(|w| held.as_ref() != Some(w)) {
                    pending.take.push((*id, value));
                }
            }
        }
    }
    for chunk in release.chunks(500) {
        match table {
            Table::Devices => {
                devices::Entity::update_many()
                    .col_expr(
                        devices::Column::LiveKey,
                        Expr::value(Option::<String>::None),
                    )
                    .filter(devices::Column::Id.is_in(chunk.to_vec()))
                    .exec(conn)
                    .await?;
            }
            _ => {
                groups::Entity::update_many()
                    .col_expr(
                        groups::Column::LiveName,
                        Expr::value(Option::<String>::None),
                    )
                    .filter(groups::Column::Id.is_in(chunk.to_vec()))
                    .exec(conn)
                    .await?;
            }
        }
    }
    Ok(pending)
}
