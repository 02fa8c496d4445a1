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
