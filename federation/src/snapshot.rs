//! Snapshots: everything a peer is owed, row by row, for a peer that starts from
//! nothing (a new edge, or a center meeting an edge for the first time) or whose
//! cursor fell below what the change log still holds (it was away longer than the
//! log keeps entries). Each row goes whole, every field at the stamp it really has,
//! so the peer merges it like any change: what it already has that is newer stays.
//! Tombstones are rows too, so deletes arrive. The peer's cursor moves to the log
//! position read before the first row; later writes follow through the log.

use fleet_store::replica::Replicated;
use fleet_store::sync::{row_changes, Change};
use fleet_store::{
    commands, desired_configs, devices, groups, memberships, rollout_devices, rollouts,
};
use sea_orm::sea_query::{Condition, IntoCondition};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, Iterable, PrimaryKeyToColumn, QueryFilter,
    QueryOrder, QuerySelect,
};

use crate::Scope;

/// Rows read per page; a page goes as one frame.
const PAGE: u64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Groups,
    Rollouts,
    Devices,
    Memberships,
    Commands,
    DesiredConfigs,
    RolloutDevices,
    Done,
}

/// A snapshot being sent, page by page.
pub struct Snapshot {
    scope: Scope,
    stage: Stage,
    after: i64,
}

async fn page<E, C>(db: &C, after: i64, filter: Condition) -> Result<Vec<E::Model>, DbErr>
where
    C: ConnectionTrait,
    E: EntityTrait,
    E::Model: Replicated,
{
    let Some(pk) = E::PrimaryKey::iter().next() else {
        return Ok(Vec::new());
    };
    let id = pk.into_column();
    E::find()
        .filter(filter)
        .filter(id.gt(after))
        .order_by_asc(id)
        .limit(PAGE)
        .all(db)
        .await
}

fn changes_of<M: Replicated>(rows: &[M]) -> Result<Vec<Change>, DbErr> {
    let mut out = Vec::new();
    for row in rows {
        out.extend(row_changes(row)?);
    }
    Ok(out)
}

impl Snapshot {
    pub fn new(scope: Scope) -> Self {
        Self {
            scope,
            stage: Stage::Groups,
            after: 0,
        }
    }

    /// The next page of rows as changes; `None` once everything has gone.
    pub async fn next<C: ConnectionTrait>(&mut self, db: &C) -> Result<Option<Vec<Change>>, DbErr> {
        loop {
            let (changes, last) = match self.stage {
                Stage::Done => return Ok(None),
                Stage::Groups => {
                    let rows = page::<groups::Entity, C>(db, self.after, Condition::all()).await?;
                    (changes_of(&rows)?, rows.last().map(|r| r.id))
                }
                Stage::Rollouts => {
                    let rows =
                        page::<rollouts::Entity, C>(db, self.after, Condition::all()).await?;
                    (changes_of(&rows)?, rows.last().map(|r| r.id))
                }
                Stage::Devices => match self.scope {
                    Scope::Everything => {
                        let rows =
                            page::<devices::Entity, C>(db, self.after, Condition::all()).await?;
                        (changes_of(&rows)?, rows.last().map(|r| r.id))
                    }
                    Scope::Edge(edge) => {
                        let home = devices::Column::EdgeId.eq(edge).into_condition();
                        let rows = page::<devices::Entity, C>(db, self.after, home).await?;
                        let mut out = changes_of(&rows)?;
                        out.extend(hanging_on(db, rows.iter().map(|d| d.id).collect()).await?);
                        (out, rows.last().map(|r| r.id))
                    }
                },
                Stage::Memberships => {
                    let rows =
                        page::<memberships::Entity, C>(db, self.after, Condition::all()).await?;
                    (changes_of(&rows)?, rows.last().map(|r| r.id))
                }
                Stage::Commands => {
                    let rows =
                        page::<commands::Entity, C>(db, self.after, Condition::all()).await?;
                    (changes_of(&rows)?, rows.last().map(|r| r.id))
                }
                Stage::DesiredConfigs => {
                    let rows = page::<desired_configs::Entity, C>(db, self.after, Condition::all())
                        .await?;
                    (changes_of(&rows)?, rows.last().map(|r| r.id))
                }
                Stage::RolloutDevices => {
                    let rows = page::<rollout_devices::Entity, C>(db, self.after, Condition::all())
                        .await?;
                    (changes_of(&rows)?, rows.last().map(|r| r.id))
                }
            };
            match last {
                Some(id) => {
                    self.after = id;
                    return Ok(Some(changes));
                }
                None => {
                    self.after = 0;
                    self.stage = match (self.stage, self.scope) {
                        (Stage::Groups, _) => Stage::Rollouts,
                        (Stage::Rollouts, _) => Stage::Devices,
                        // An edge's device pages carry what hangs on its devices.
                        (Stage::Devices, Scope::Edge(_)) => Stage::Done,
                        (Stage::Devices, Scope::Everything) => Stage::Memberships,
                        (Stage::Memberships, _) => Stage::Commands,
                        (Stage::Commands, _) => Stage::DesiredConfigs,
                        (Stage::DesiredConfigs, _) => Stage::RolloutDevices,
                        (Stage::RolloutDevices | Stage::Done, _) => Stage::Done,
                    };
                }
            }
        }
    }

    /// For an edge, every device homed there: the edge drops the ones it holds that
    /// are not (they moved while it was away), once it knows the center has them.
    pub async fn homed<C: ConnectionTrait>(&self, db: &C) -> Result<Option<Vec<i64>>, DbErr> {
        let Scope::Edge(edge) = self.scope else {
            return Ok(None);
        };
        let ids = devices::Entity::find()
            .select_only()
            .column(devices::Column::Id)
            .filter(devices::Column::EdgeId.eq(edge))
            .into_tuple()
            .all(db)
            .await?;
        Ok(Some(ids))
    }
}

/// The memberships, commands, desired configuration and rollout updates of
/// `devices`, whole.
async fn hanging_on<C: ConnectionTrait>(db: &C, devices: Vec<i64>) -> Result<Vec<Change>, DbErr> {
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = changes_of(
        &memberships::Entity::find()
            .filter(memberships::Column::DeviceId.is_in(devices.clone()))
            .all(db)
            .await?,
    )?;
    out.extend(changes_of(
        &commands::Entity::find()
            .filter(commands::Column::DeviceId.is_in(devices.clone()))
            .all(db)
            .await?,
    )?);
    out.extend(changes_of(
        &desired_configs::Entity::find()
            .filter(desired_configs::Column::DeviceId.is_in(devices.clone()))
            .all(db)
            .await?,
    )?);
    out.extend(changes_of(
        &rollout_devices::Entity::find()
            .filter(rollout_devices::Column::DeviceId.is_in(devices))
            .all(db)
            .await?,
    )?);
    Ok(out)
}
