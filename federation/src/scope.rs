//! Which changes a peer gets. An edge sends the center everything; the center sends
//! an edge only what concerns its site (DESIGN §5): its devices, their memberships,
//! commands and desired configuration, and the groups. A device that moves to the
//! edge arrives whole, with what hangs on it; an edge whose device moved away learns
//! only the new home, and drops its copy.

use std::collections::HashMap;

use fleet_store::commands::State;
use fleet_store::sync::{full_row, Change};
use fleet_store::{commands, desired_configs, devices, memberships};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Everything,
    Edge(i64),
}

/// Home edges of devices, looked up once per batch.
struct Homes(HashMap<i64, Option<i64>>);

impl Homes {
    async fn of<C: ConnectionTrait>(&mut self, db: &C, device: i64) -> Result<Option<i64>, DbErr> {
        if let Some(home) = self.0.get(&device) {
            return Ok(*home);
        }
        let home: Option<Option<i64>> = devices::Entity::find_by_id(device)
            .select_only()
            .column(devices::Column::EdgeId)
            .into_tuple()
            .one(db)
            .await?;
        let home = home.flatten();
        self.0.insert(device, home);
        Ok(home)
    }
}

/// The device a change of a device-bound table belongs to.
async fn device_of<C: ConnectionTrait>(db: &C, c: &Change) -> Result<Option<i64>, DbErr> {
    if let Some(id) = c.fields.get("device_id").and_then(Value::as_i64) {
        return Ok(Some(id));
    }
    let id: Option<i64> = match c.table.as_str() {
        "commands" => {
            commands::Entity::find_by_id(c.id)
                .select_only()
                .column(commands::Column::DeviceId)
                .into_tuple()
                .one(db)
                .await?
        }
        "memberships" => {
            memberships::Entity::find_by_id(c.id)
                .select_only()
                .column(memberships::Column::DeviceId)
                .into_tuple()
                .one(db)
                .await?
        }
        "desired_configs" => {
            desired_configs::Entity::find_by_id(c.id)
                .select_only()
                .column(desired_configs::Column::DeviceId)
                .into_tuple()
                .one(db)
                .await?
        }
        _ => None,
    };
    Ok(id)
}

/// A device with everything that hangs on it, whole: what an edge needs when the
/// device enters its scope.
async fn arriving<C: ConnectionTrait>(db: &C, device: i64) -> Result<Vec<Change>, DbErr> {
    let mut out = full_row(db, "devices", device).await?;
    let open: Vec<i64> = commands::Entity::find()
        .select_only()
        .column(commands::Column::Id)
        .filter(commands::Column::DeviceId.eq(device))
        .filter(commands::Column::State.is_in([
            State::Queued.as_str(),
            State::Sent.as_str(),
            State::Running.as_str(),
        ]))
        .into_tuple()
        .all(db)
        .await?;
    for id in open {
        out.extend(full_row(db, "commands", id).await?);
    }
    let joined: Vec<i64> = memberships::Entity::find()
        .select_only()
        .column(memberships::Column::Id)
        .filter(memberships::Column::DeviceId.eq(device))
        .into_tuple()
        .all(db)
        .await?;
    for id in joined {
        out.extend(full_row(db, "memberships", id).await?);
    }
    let configs: Vec<i64> = desired_configs::Entity::find()
        .select_only()
        .column(desired_configs::Column::Id)
        .filter(desired_configs::Column::DeviceId.eq(device))
        .into_tuple()
        .all(db)
        .await?;
    for id in configs {
        out.extend(full_row(db, "desired_configs", id).await?);
    }
    Ok(out)
}

impl Scope {
    /// What of `changes` the peer gets.
    pub async fn select<C: ConnectionTrait>(
        &self,
        db: &C,
        changes: Vec<Change>,
    ) -> Result<Vec<Change>, DbErr> {
        let Scope::Edge(edge) = *self else {
            return Ok(changes);
        };
        let mut homes = Homes(HashMap::new());
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            match c.table.as_str() {
                "device_groups" => out.push(c),
                "devices" => match c.fields.get("edge_id").map(Value::as_i64) {
                    Some(Some(to)) if to == edge => out.extend(arriving(db, c.id).await?),
                    Some(_) => {
                        // Moved elsewhere (or unhomed): tell the old home only that.
                        let mut moved = c.clone();
                        moved.fields.retain(|k, _| k == "edge_id");
                        out.push(moved);
                    }
                    None if homes.of(db, c.id).await? == Some(edge) => out.push(c),
                    None => {}
                },
                "memberships" | "commands" | "desired_configs" => {
                    if let Some(device) = device_of(db, &c).await? {
                        if homes.of(db, device).await? == Some(edge) {
                            out.push(c);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
