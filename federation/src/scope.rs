//! Which changes a peer gets. An edge sends the center everything; the center sends
//! an edge only what concerns its site (docs/design.md §5): its devices, their memberships,
//! commands, desired configuration and rollout updates, and the groups and rollouts. A device that moves to the
//! edge arrives whole, with what hangs on it; an edge whose device moved away learns
//! only the new home, and drops its copy.

use std::collections::HashMap;

use fleet_store::commands::State;
use fleet_store::sync::{full_row, Change};
use fleet_store::{commands, desired_configs, devices, memberships, rollout_devices};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, Iterable, PrimaryKeyToColumn, QueryFilter,
    QuerySelect,
};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Everything,
    Edge(i64),
}

/// Tables whose rows belong to one device.
const DEVICE_BOUND: [&str; 4] = [
    "memberships",
    "commands",
    "desired_configs",
    "rollout_devices",
];
/// Ids one lookup names.
const LOOKUP_CHUNK: usize = 500;

/// The devices the changes of a batch belong to, and those devices' home edges,
/// read with a few queries per batch whatever its size (a fan-out to ten thousand
/// devices is fifty frames, not ten thousand lookups).
struct Owners {
    /// (table, row) to device, for device-bound rows whose change does not say.
    device_of: HashMap<(&'static str, i64), i64>,
    home_of: HashMap<i64, Option<i64>>,
}

impl Owners {
    async fn read<C: ConnectionTrait>(db: &C, changes: &[Change]) -> Result<Self, DbErr> {
        let mut unknown: HashMap<&'static str, Vec<i64>> = HashMap::new();
        let mut devices: Vec<i64> = Vec::new();
        for c in changes {
            match c.table.as_str() {
                "devices" if !c.fields.contains_key("edge_id") => devices.push(c.id),
                table => {
                    let Some(bound) = DEVICE_BOUND.iter().find(|t| **t == table) else {
                        continue;
                    };
                    match c.fields.get("device_id").and_then(Value::as_i64) {
                        Some(device) => devices.push(device),
                        None => unknown.entry(bound).or_default().push(c.id),
                    }
                }
            }
        }
        let mut device_of = HashMap::new();
        for (table, ids) in unknown {
            for (id, device) in devices_of_rows(db, table, &ids).await? {
                device_of.insert((table, id), device);
                devices.push(device);
            }
        }
        devices.sort_unstable();
        devices.dedup();
        let mut home_of = HashMap::with_capacity(devices.len());
        for chunk in devices.chunks(LOOKUP_CHUNK) {
            let homes: Vec<(i64, Option<i64>)> = devices::Entity::find()
                .select_only()
                .column(devices::Column::Id)
                .column(devices::Column::EdgeId)
                .filter(devices::Column::Id.is_in(chunk.to_vec()))
                .into_tuple()
                .all(db)
                .await?;
            home_of.extend(homes);
        }
        Ok(Self { device_of, home_of })
    }

    /// The device a change of a device-bound table belongs to.
    fn device(&self, c: &Change) -> Option<i64> {
        c.fields
            .get("device_id")
            .and_then(Value::as_i64)
            .or_else(|| {
                let table = DEVICE_BOUND.iter().find(|t| **t == c.table.as_str())?;
                self.device_of.get(&(*table, c.id)).copied()
            })
    }

    fn home(&self, device: i64) -> Option<i64> {
        self.home_of.get(&device).copied().flatten()
    }
}

/// (row, device) of the stored rows of `ids` in a device-bound table.
async fn devices_of_rows<C: ConnectionTrait>(
    db: &C,
    table: &str,
    ids: &[i64],
) -> Result<Vec<(i64, i64)>, DbErr> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        let chunk = chunk.to_vec();
        out.extend(match table {
            "commands" => {
                owners::<commands::Entity, _>(db, commands::Column::DeviceId, chunk).await?
            }
            "memberships" => {
                owners::<memberships::Entity, _>(db, memberships::Column::DeviceId, chunk).await?
            }
            "desired_configs" => {
                owners::<desired_configs::Entity, _>(db, desired_configs::Column::DeviceId, chunk)
                    .await?
            }
            "rollout_devices" => {
                owners::<rollout_devices::Entity, _>(db, rollout_devices::Column::DeviceId, chunk)
                    .await?
            }
            _ => Vec::new(),
        });
    }
    Ok(out)
}

/// (id, device) of the rows of `E` named by `ids`.
async fn owners<E, C>(db: &C, device: E::Column, ids: Vec<i64>) -> Result<Vec<(i64, i64)>, DbErr>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let Some(pk) = E::PrimaryKey::iter().next() else {
        return Ok(Vec::new());
    };
    let id = pk.into_column();
    E::find()
        .select_only()
        .column(id)
        .column(device)
        .filter(id.is_in(ids))
        .into_tuple()
        .all(db)
        .await
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
    let updates: Vec<i64> = rollout_devices::Entity::find()
        .select_only()
        .column(rollout_devices::Column::Id)
        .filter(rollout_devices::Column::DeviceId.eq(device))
        .into_tuple()
        .all(db)
        .await?;
    for id in updates {
        out.extend(full_row(db, "rollout_devices", id).await?);
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
        let owners = Owners::read(db, &changes).await?;
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            match c.table.as_str() {
                // Few, the center's alone, and what an edge's rollout updates hang on.
                "device_groups" | "rollouts" => out.push(c),
                "devices" => match c.fields.get("edge_id").map(Value::as_i64) {
                    Some(Some(to)) if to == edge => out.extend(arriving(db, c.id).await?),
                    Some(_) => {
                        // Moved elsewhere (or unhomed): tell the old home only that.
                        let mut moved = c.clone();
                        moved.fields.retain(|k, _| k == "edge_id");
                        out.push(moved);
                    }
                    None if owners.home(c.id) == Some(edge) => out.push(c),
                    None => {}
                },
                table
                    if DEVICE_BOUND.contains(&table)
                        && owners.device(&c).and_then(|d| owners.home(d)) == Some(edge) =>
                {
                    out.push(c);
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
