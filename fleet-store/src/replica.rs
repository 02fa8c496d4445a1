//! Writing to replicated tables. Every write gets an HLC stamp and the writing node's
//! id, records per-field stamps (so concurrent edits of different fields on two nodes
//! can both survive a merge), and appends to the change log in the caller's
//! transaction, so a committed write is never missing from the outbox.

use std::collections::{BTreeMap, HashMap};

use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    IdenStatic, IntoActiveModel, Iterable, PrimaryKeyToColumn, QueryFilter, QuerySelect,
};
use serde::Serialize;

use crate::clock::{Hlc, StampError};
use crate::{
    change_log, commands, desired_configs, devices, groups, ids::Snowflake, memberships,
    rollout_devices, rollouts,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Devices,
    Groups,
    Memberships,
    Commands,
    DesiredConfigs,
    Rollouts,
    RolloutDevices,
    /// Append-only, edge -> center: never merged field by field, only taken in.
    Events,
    PulledLogs,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Devices => "devices",
            Table::Groups => "device_groups",
            Table::Memberships => "memberships",
            Table::Commands => "commands",
            Table::DesiredConfigs => "desired_configs",
            Table::Rollouts => "rollouts",
            Table::RolloutDevices => "rollout_devices",
            Table::Events => "events",
            Table::PulledLogs => "pulled_logs",
        }
    }
}

/// Rows written per statement: well under SQLite's and MySQL's placeholder limits for
/// the widest replicated table.
pub(crate) const ROWS_PER_STATEMENT: usize = 200;

/// Columns that describe a row's replication state rather than its content.
pub(crate) const SYNC_COLUMNS: [&str; 4] = ["hlc", "origin", "field_stamps", "id"];

/// A row of a replicated table.
pub trait Replicated: Serialize + Clone + Send + Sync + IntoActiveModel<Self::Active> {
    type Active: ActiveModelTrait + ActiveModelBehavior + Send;
    const TABLE: Table;
    fn id(&self) -> i64;
    fn hlc(&self) -> i64;
    fn field_stamps(&self) -> &str;
    fn is_deleted(&self) -> bool;
    fn set_stamp(&mut self, stamp: &Stamp);
    /// Marks the row deleted and releases anything that must stay unique among live rows.
    fn tombstone(&mut self);
}

macro_rules! replicated {
    ($module:ident, $table:expr) => {
        replicated!($module, $table, |_row| {});
    };
    ($module:ident, $table:expr, |$row:ident| $release:block) => {
        impl Replicated for $module::Model {
            type Active = $module::ActiveModel;
            const TABLE: Table = $table;
            fn id(&self) -> i64 {
                self.id
            }
            fn hlc(&self) -> i64 {
                self.hlc
            }
            fn field_stamps(&self) -> &str {
                &self.field_stamps
            }
            fn is_deleted(&self) -> bool {
                self.deleted
            }
            fn set_stamp(&mut self, stamp: &Stamp) {
                self.hlc = stamp.hlc;
                self.origin = stamp.origin;
                self.field_stamps = stamp.field_stamps.clone();
            }
            fn tombstone(&mut self) {
                self.deleted = true;
                let $row = self;
                $release
            }
        }
    };
}

replicated!(devices, Table::Devices, |row| { row.live_key = None });
replicated!(groups, Table::Groups, |row| { row.live_name = None });
replicated!(memberships, Table::Memberships);
replicated!(commands, Table::Commands);
replicated!(desired_configs, Table::DesiredConfigs);
replicated!(rollouts, Table::Rollouts);
replicated!(rollout_devices, Table::RolloutDevices);

/// The content columns of a row with their values (sync columns left out).
pub(crate) fn content<M: Serialize>(
    row: &M,
) -> Result<serde_json::Map<String, serde_json::Value>, DbErr> {
    match serde_json::to_value(row).map_err(|e| DbErr::Custom(e.to_string()))? {
        serde_json::Value::Object(map) => Ok(map
            .into_iter()
            .filter(|(k, _)| !SYNC_COLUMNS.contains(&k.as_str()))
            .collect()),
        _ => Err(DbErr::Custom("replicated rows serialize to objects".into())),
    }
}

/// Appends one write to the change log: the columns it set, with their values.
pub(crate) async fn append_log<C: ConnectionTrait>(
    conn: &C,
    table: Table,
    row_id: i64,
    hlc: i64,
    deleted: bool,
    payload: serde_json::Map<String, serde_json::Value>,
) -> Result<(), DbErr> {
    // Without returning the entry: on MySQL that would cost a second statement.
    change_log::Entity::insert(change_log::entry(
        table.name(),
        row_id,
        hlc,
        deleted,
        payload,
    ))
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// This node's identity as a writer: its id generator and its clock.
#[derive(Debug)]
pub struct Replica {
    ids: Snowflake,
    clock: Hlc,
}

/// The sync columns of one write, to be copied into the row before it is saved.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub hlc: i64,
    pub origin: i64,
    pub field_stamps: String,
}

impl Replica {
    pub fn new(ids: Snowflake) -> Self {
        Self {
            clock: Hlc::new(ids.worker()),
            ids,
        }
    }

    /// Refuses peers' stamps more than `ms` ahead of this node's wall clock.
    pub fn with_max_ahead_ms(mut self, ms: i64) -> Self {
        self.clock = self.clock.with_max_ahead_ms(ms);
        self
    }

    /// How far ahead of the wall clock a peer's stamp may be.
    pub fn max_ahead_ms(&self) -> i64 {
        self.clock.max_ahead_ms()
    }

    pub fn node_id(&self) -> i64 {
        self.ids.worker()
    }

    /// Whether a peer's stamp may be merged (see [`Hlc::check`]).
    pub fn check_stamp(&self, hlc: i64) -> Result<(), StampError> {
        self.clock.check(hlc)
    }

    /// Resumes this node's clock above the highest stamp its database holds, so a
    /// restart never stamps a write below what is already stored.
    pub async fn resume<C: ConnectionTrait>(&self, db: &C) -> Result<i64, DbErr> {
        let highest = crate::sync::highest_stamp(db).await?;
        self.clock.resume_above(highest);
        Ok(highest)
    }

    pub fn new_id(&self) -> i64 {
        self.ids.next_id()
    }

    /// A fresh stamp of this node's clock.
    pub fn tick(&self) -> i64 {
        self.clock.tick()
    }

    /// Stamps a write that sets `fields`, merging into the row's previous per-field
    /// stamps (`previous` is empty for a new row).
    pub fn stamp(&self, previous: &str, fields: &[&str]) -> Stamp {
        let mut stamps: BTreeMap<String, i64> = serde_json::from_str(previous).unwrap_or_default();
        // Never below what a field holds, or the write would lose every merge.
        if let Some(held) = fields.iter().filter_map(|f| stamps.get(*f)).max() {
            self.clock.resume_above(*held);
        }
        let hlc = self.clock.tick();
        for field in fields {
            stamps.insert((*field).to_string(), hlc);
        }
        Stamp {
            hlc,
            origin: self.node_id(),
            field_stamps: serde_json::to_string(&stamps).unwrap_or_else(|_| "{}".into()),
        }
    }

    /// Appends the write of `row` to the change log. `fields` names the columns the
    /// write set; `None` means the whole row (a create or a snapshot).
    async fn log<C, M>(
        &self,
        conn: &C,
        stamp: &Stamp,
        row: &M,
        fields: Option<&[&str]>,
    ) -> Result<(), DbErr>
    where
        C: ConnectionTrait,
        M: Replicated,
    {
        let payload: serde_json::Map<String, serde_json::Value> = content(row)?
            .into_iter()
            .filter(|(k, _)| fields.is_none_or(|f| f.contains(&k.as_str())))
            .collect();
        append_log(
            conn,
            M::TABLE,
            row.id(),
            stamp.hlc,
            row.is_deleted(),
            payload,
        )
        .await
    }

    /// Takes in the stamp of a change from another node, so that later local writes
    /// are stamped after it.
    pub fn observe(&self, hlc: i64) -> Result<(), StampError> {
        self.clock.observe(hlc)
    }

    /// Inserts a new row, stamping every field, and logs it.
    pub async fn insert<C, M>(&self, conn: &C, mut row: M) -> Result<M, DbErr>
    where
        C: ConnectionTrait,
        M: Replicated,
        <M::Active as ActiveModelTrait>::Entity: EntityTrait<Model = M>,
    {
        let fields: Vec<String> = content(&row)?.into_iter().map(|(k, _)| k).collect();
        let names: Vec<&str> = fields.iter().map(String::as_str).collect();
        let stamp = self.stamp("", &names);
        row.set_stamp(&stamp);
        <M::Active as ActiveModelTrait>::Entity::insert(
            row.clone().into_active_model().reset_all(),
        )
        .exec_without_returning(conn)
        .await?;
        self.log(conn, &stamp, &row, None).await?;
        Ok(row)
    }

    /// Inserts new rows as [`Replica::insert`] does, with one multi-row statement per
    /// [`ROWS_PER_STATEMENT`] rows and as many for their change-log entries.
    pub async fn insert_many<C, M>(&self, conn: &C, rows: Vec<M>) -> Result<Vec<M>, DbErr>
    where
        C: ConnectionTrait,
        M: Replicated,
        <M::Active as ActiveModelTrait>::Entity: EntityTrait<Model = M>,
    {
        let mut saved = Vec::with_capacity(rows.len());
        let mut entries = Vec::with_capacity(rows.len());
        for mut row in rows {
            let payload = content(&row)?;
            let names: Vec<&str> = payload.keys().map(String::as_str).collect();
            let stamp = self.stamp("", &names);
            row.set_stamp(&stamp);
            entries.push(change_log::entry(
                M::TABLE.name(),
                row.id(),
                stamp.hlc,
                row.is_deleted(),
                payload,
            ));
            saved.push(row);
        }
        for chunk in saved.chunks(ROWS_PER_STATEMENT) {
            <M::Active as ActiveModelTrait>::Entity::insert_many(
                chunk
                    .iter()
                    .map(|r| r.clone().into_active_model().reset_all()),
            )
            .exec_without_returning(conn)
            .await?;
        }
        for chunk in entries.chunks(ROWS_PER_STATEMENT) {
            change_log::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(conn)
                .await?;
        }
        Ok(saved)
    }

    /// Saves `new` over `old`, stamping and logging only the fields that differ.
    /// Nothing is written when nothing changed. The row is saved only over the
    /// version `old` was read as: when another writer changed it since, nothing is
    /// written and the answer is [`DbErr::RecordNotUpdated`], which
    /// [`crate::write::Writer::transact`] runs the transaction again for (with the
    /// row read afresh). So no writer ever saves a whole row over a change it did
    /// not see.
    pub async fn update<C, M>(&self, conn: &C, old: &M, mut new: M) -> Result<M, DbErr>
    where
        C: ConnectionTrait,
        M: Replicated,
        <M::Active as ActiveModelTrait>::Entity: EntityTrait<Model = M>,
    {
        let before = content(old)?;
        let changed: Vec<String> = content(&new)?
            .into_iter()
            .filter(|(k, v)| before.get(k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        if changed.is_empty() {
            return Ok(old.clone());
        }
        let names: Vec<&str> = changed.iter().map(String::as_str).collect();
        let stamp = self.stamp(old.field_stamps(), &names);
        new.set_stamp(&stamp);
        let saved = update_over::<C, M>(conn, old, new).await?;
        crate::keys::settle_write(conn, M::TABLE, Some(&before), &content(&saved)?).await?;
        self.log(conn, &stamp, &saved, Some(&names)).await?;
        Ok(saved)
    }
    /// Saves many rows over their stored versions as [`Replica::update`] does, with
    /// one multi-row statement per [`ROWS_PER_STATEMENT`] rows and as many for their
    /// change-log entries. The `old` rows must have been read with
    /// [`read_locked`] in this transaction, so no other writer saved them since.
    /// Each row appears once.
    pub async fn update_many<E, C>(
        &self,
        conn: &C,
        pairs: Vec<(E::Model, E::Model)>,
    ) -> Result<Vec<E::Model>, DbErr>
    where
        C: ConnectionTrait,
        E: EntityTrait,
        E::Model: Replicated + IntoActiveModel<<E::Model as Replicated>::Active>,
        <E::Model as Replicated>::Active: ActiveModelTrait<Entity = E>,
    {
        let mut saved = Vec::with_capacity(pairs.len());
        let mut written = Vec::new();
        let mut entries = Vec::new();
        let mut keyed = Vec::new();
        for (old, mut new) in pairs {
            let before = content(&old)?;
            let after = content(&new)?;
            let changed: Vec<&str> = after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(v))
                .map(|(k, _)| k.as_str())
                .collect();
            if changed.is_empty() {
                saved.push(old);
                continue;
            }
            let stamp = self.stamp(old.field_stamps(), &changed);
            let payload: serde_json::Map<String, serde_json::Value> = after
                .iter()
                .filter(|(k, _)| changed.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            new.set_stamp(&stamp);
            entries.push(change_log::entry(
                E::Model::TABLE.name(),
                new.id(),
                stamp.hlc,
                new.is_deleted(),
                payload,
            ));
            keyed.push((before, after));
            written.push(new.clone());
            saved.push(new);
        }
        crate::merge::write_rows::<E, C>(conn, written, true).await?;
        for (before, after) in &keyed {
            crate::keys::settle_write(conn, E::Model::TABLE, Some(before), after).await?;
        }
        for chunk in entries.chunks(ROWS_PER_STATEMENT) {
            change_log::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(conn)
                .await?;
        }
        Ok(saved)
    }
}

/// Writes `new` over the row only if it is still as `old` was read (the same
/// per-field stamps: every replicated write changes them), in one statement.
async fn update_over<C, M>(conn: &C, old: &M, new: M) -> Result<M, DbErr>
where
    C: ConnectionTrait,
    M: Replicated,
    <M::Active as ActiveModelTrait>::Entity: EntityTrait<Model = M>,
{
    type Entity<M> = <<M as Replicated>::Active as ActiveModelTrait>::Entity;
    let column = |name: &str| {
        <Entity<M> as EntityTrait>::Column::iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| DbErr::Custom(format!("{} has no {name} column", M::TABLE.name())))
    };
    let written = Entity::<M>::update_many()
        .set(new.clone().into_active_model().reset_all())
        .filter(column("id")?.eq(old.id()))
        .filter(column("field_stamps")?.eq(old.field_stamps()))
        .exec(conn)
        .await?;
    if written.rows_affected == 0 {
        return Err(DbErr::RecordNotUpdated);
    }
    Ok(new)
}

/// The stored rows of `ids` (those that exist), locked until the transaction ends.
pub async fn read_locked<E, C>(conn: &C, ids: &[i64]) -> Result<HashMap<i64, E::Model>, DbErr>
where
    C: ConnectionTrait,
    E: EntityTrait,
    E::Model: Replicated,
{
    let Some(pk) = E::PrimaryKey::iter().next() else {
        return Ok(HashMap::new());
    };
    let mut found = HashMap::with_capacity(ids.len());
    // Locked until the commit (MySQL; SQLite has one writer anyway), so no other
    // writer saves these rows, or inserts the missing ones, between this read and the
    // merge's write. In id order, so two merges lock shared rows in the same order.
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(500) {
        for row in E::find()
            .filter(pk.into_column().is_in(chunk.to_vec()))
            .lock_exclusive()
            .all(conn)
            .await?
        {
            found.insert(row.id(), row);
        }
    }
    Ok(found)
}
