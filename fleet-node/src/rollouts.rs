//! Rollouts: an artifact installed on a target set of devices in waves, with
//! thresholds that stop a bad update early (`docs/rollouts.md`).
//!
//! Who does what:
//! - the center makes a rollout and one update row per device ([`create`]), and
//!   moves it along: starts it, opens the next wave once the current one reached its
//!   success threshold, pauses it when failures pass the error threshold, completes
//!   it ([`drive`]);
//! - each edge runs the waves that are open for its own devices ([`site`]): it sends
//!   `install` commands, at most `max_in_flight_per_edge` at a time, and moves each
//!   device's update as its command goes. It needs nothing from the center for that,
//!   so a site finishes its wave while the center is away;
//! - operators pause, resume and abort ([`act`]). Admins roll out anywhere; a
//!   scoped operator only over one of their groups or devices they see.

pub mod drive;
mod plan;
pub mod site;

use std::collections::{BTreeMap, HashSet};

use fleet_store::rollout_devices::{self, State as DeviceState};
use fleet_store::rollouts::{self, State};
use fleet_store::{artifacts, devices, memberships};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, QueryOrder, QuerySelect, Statement};
use shared_proto::southbound::Install;

use crate::devices::visible_ids;
use crate::{Actor, Error, Node};

pub use plan::MAX_WAVES;

/// Devices one rollout may name in `target.device_ids`, at most.
pub const MAX_DEVICE_IDS: usize = 100_000;

/// What a rollout targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Group(i64),
    Edge(i64),
    Devices(Vec<i64>),
}

impl Target {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Target::Group(g) => serde_json::json!({"group_id": g.to_string()}),
            Target::Edge(e) => serde_json::json!({"edge_id": e.to_string()}),
            Target::Devices(ids) => serde_json::json!({
                "device_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>()
            }),
        }
    }
}

/// A rollout as an operator asks for it, before it is checked.
#[derive(Debug, Clone)]
pub struct Draft {
    pub name: String,
    pub artifact_id: i64,
    pub target: Target,
    pub waves: Vec<String>,
    pub success_threshold_pct: Option<i64>,
    pub error_threshold_pct: Option<i64>,
    pub device_timeout_s: Option<i64>,
    pub max_in_flight_per_edge: Option<i64>,
    pub start_at: Option<i64>,
}

/// Defaults for what a draft leaves out: careful ones, for firmware.
pub const DEFAULT_SUCCESS_PCT: i64 = 95;
pub const DEFAULT_ERROR_PCT: i64 = 5;
pub const DEFAULT_DEVICE_TIMEOUT_S: i64 = 3600;
pub const DEFAULT_IN_FLIGHT: i64 = 100;

fn within(
    field: &str,
    v: Option<i64>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, Error> {
    let v = v.unwrap_or(default);
    if !range.contains(&v) {
        return Err(Error::invalid(
            field,
            format!("must be {} to {}", range.start(), range.end()),
        ));
    }
    Ok(v)
}

/// Makes a rollout of `draft` for `actor`, with its devices spread over the waves;
/// answers the rollout.
pub async fn create(node: &Node, actor: &Actor, draft: Draft) -> Result<rollouts::Model, Error> {
    actor.require_writer()?;
    let name = draft.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(Error::invalid("name", "must be 1 to 128 characters"));
    }
    let success = within(
        "success_threshold_pct",
        draft.success_threshold_pct,
        DEFAULT_SUCCESS_PCT,
        0..=100,
    )?;
    let error = within(
        "error_threshold_pct",
        draft.error_threshold_pct,
        DEFAULT_ERROR_PCT,
        0..=100,
    )?;
    let max_timeout = i64::try_from(crate::commands::MAX_TIMEOUT_S).unwrap_or(i64::MAX);
    let timeout = within(
        "device_timeout_s",
        draft.device_timeout_s,
        DEFAULT_DEVICE_TIMEOUT_S,
        1..=max_timeout,
    )?;
    let in_flight = within(
        "max_in_flight_per_edge",
        draft.max_in_flight_per_edge,
        DEFAULT_IN_FLIGHT,
        1..=100_000,
    )?;
    let now = fleet_store::now_ms();
    let start_at = match draft.start_at {
        Some(t) if t < 0 => {
            return Err(Error::invalid(
                "start_at",
                "must be milliseconds since the epoch",
            ))
        }
        Some(t) => t,
        None => now,
    };
    let sizes = plan::parse(&draft.waves)?;
    let artifact = artifacts::Entity::find_by_id(draft.artifact_id)
        .filter(artifacts::Column::Ready.eq(true))
        .one(&node.db)
        .await?
        .ok_or_else(|| {
            Error::missing_ref("artifact_id", format!("no artifact {}", draft.artifact_id))
        })?;
    let install = Install {
        artifact_id: artifact.id.to_string(),
        version: artifact.version.clone(),
        size: u64::try_from(artifact.size).unwrap_or(0),
        sha256: artifact.sha256.clone(),
        manifest: artifact.manifest.clone(),
        signature: artifact.signature.clone(),
        download: None,
    };
    let devices = targets(&node.db, actor, &draft.target, &artifact).await?;
    if devices.is_empty() {
        return Err(Error::FailedPrecondition(
            "no device of the target is homed at an edge and of a type and model the artifact is for".into(),
        ));
    }
    let id = node.replica.new_id();
    let rollout = rollouts::Model {
        id,
        name,
        artifact_id: artifact.id,
        install: serde_json::to_string(&install).unwrap_or_default(),
        target: draft.target.to_json().to_string(),
        waves: serde_json::to_string(&draft.waves).unwrap_or_default(),
        success_threshold_pct: i32::try_from(success).unwrap_or(100),
        error_threshold_pct: i32::try_from(error).unwrap_or(0),
        device_timeout_s: timeout,
        max_in_flight_per_edge: i32::try_from(in_flight).unwrap_or(i32::MAX),
        start_at,
        state: State::Scheduled.as_str().into(),
        wave: 0,
        accepted_wave: -1,
        reason: String::new(),
        created_by: actor.username.clone(),
        created_at: now,
        updated_at: now,
        hlc: 0,
        origin: 0,
        deleted: false,
        field_stamps: String::new(),
    };
    let assigned = plan::assign(id, &sizes, &devices);
    let (rollout, assigned) = (&rollout, &assigned);
    node.transact(|txn| async move {
        let saved = node.replica.insert(&*txn, rollout.clone()).await?;
        let rows = assigned
            .iter()
            .map(|(device, wave)| update_row(node, id, *device, *wave, now))
            .collect();
        node.replica.insert_many(&*txn, rows).await?;
        Ok::<_, Error>(saved)
    })
    .await
}

fn update_row(
    node: &Node,
    rollout: i64,
    device: i64,
    wave: i32,
    now: i64,
) -> rollout_devices::Model {
    rollout_devices::Model {
        id: node.replica.new_id(),
        rollout_id: rollout,
        device_id: device,
        wave,
        state: DeviceState::Queued.as_str().into(),
        progress: 0,
        reason: String::new(),
        log: String::new(),
        command_id: None,
        started_at: 0,
        finished_at: 0,
        updated_at: now,
        hlc: 0,
        origin: 0,
        deleted: false,
        field_stamps: String::new(),
    }
}

/// The devices `target` names that `actor` may roll out to, that are homed at an
/// edge and that the artifact is for. Devices named one by one must all qualify.
async fn targets<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    target: &Target,
    artifact: &artifacts::Model,
) -> Result<Vec<i64>, Error> {
    let types: Vec<String> = serde_json::from_str(&artifact.device_types).unwrap_or_default();
    let models: Vec<String> = serde_json::from_str(&artifact.models).unwrap_or_default();
    let fits = |d: &devices::Model| {
        (types.is_empty() || types.contains(&d.device_type))
            && (models.is_empty() || models.contains(&d.hw_model))
    };
    let visible =
        crate::devices::visible_query(actor).filter(devices::Column::EdgeId.is_not_null());
    let rows = match target {
        Target::Group(group) => {
            if !actor.is_admin() && !actor.groups.contains(group) {
                return Err(Error::missing_ref(
                    "target.group_id",
                    format!("no group {group}"),
                ));
            }
            let members = memberships::Entity::find()
                .select_only()
                .column(memberships::Column::DeviceId)
                .filter(memberships::Column::GroupId.eq(*group))
                .filter(memberships::Column::Deleted.eq(false));
            visible
                .filter(devices::Column::Id.in_subquery(sea_orm::QueryTrait::into_query(members)))
                .all(db)
                .await?
        }
        Target::Edge(edge) => {
            if !actor.is_admin() {
                return Err(Error::PermissionDenied(
                    "only admins roll out to a whole edge; scoped operators target one of their groups".into(),
                ));
            }
            visible
                .filter(devices::Column::EdgeId.eq(*edge))
                .all(db)
                .await?
        }
        Target::Devices(ids) => {
            let mut rows = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(500) {
                rows.extend(
                    crate::devices::visible_query(actor)
                        .filter(devices::Column::Id.is_in(chunk.to_vec()))
                        .all(db)
                        .await?,
                );
            }
            let found: HashSet<i64> = rows.iter().map(|d| d.id).collect();
            if let Some(missing) = ids.iter().find(|id| !found.contains(id)) {
                return Err(Error::missing_ref(
                    "target.device_ids",
                    format!("no device {missing}"),
                ));
            }
            if let Some(d) = rows.iter().find(|d| d.edge_id.is_none()) {
                return Err(Error::FailedPrecondition(format!(
                    "device {} is not homed at an edge",
                    d.id
                )));
            }
            if let Some(d) = rows.iter().find(|d| !fits(d)) {
                return Err(Error::invalid(
                    "target.device_ids",
                    format!(
                        "device {} is a {} {}, which the artifact is not for",
                        d.id, d.device_type, d.hw_model
                    ),
                ));
            }
            rows
        }
    };
    Ok(rows.iter().filter(|d| fits(d)).map(|d| d.id).collect())
}

/// Whether `actor` may see `rollout`: admins all; others those over one of their
/// groups, or over devices they all see.
pub async fn visible<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    rollout: &rollouts::Model,
) -> Result<bool, Error> {
    if actor.is_admin() {
        return Ok(true);
    }
    let target: serde_json::Value = serde_json::from_str(&rollout.target).unwrap_or_default();
    let id_of = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<i64>().ok());
    if let Some(group) = target.get("group_id").and_then(id_of) {
        return Ok(actor.groups.contains(&group));
    }
    let Some(ids) = target.get("device_ids").and_then(|v| v.as_array()) else {
        return Ok(false);
    };
    let ids: Vec<i64> = ids.iter().filter_map(id_of).collect();
    let mut seen = 0usize;
    for chunk in ids.chunks(500) {
        seen += visible_ids(actor)
            .filter(devices::Column::Id.is_in(chunk.to_vec()))
            .count(db)
            .await? as usize;
    }
    Ok(seen == ids.len())
}

/// A rollout `actor` may see, or 404.
pub async fn find<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    id: i64,
) -> Result<rollouts::Model, Error> {
    let missing = || Error::not_found(format!("no rollout {id}"));
    let rollout = rollouts::Entity::find_by_id(id)
        .filter(rollouts::Column::Deleted.eq(false))
        .one(db)
        .await?
        .ok_or_else(missing)?;
    if !visible(db, actor, &rollout).await? {
        return Err(missing());
    }
    Ok(rollout)
}

/// Device updates by state: the whole rollout, each wave, each edge.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub total: BTreeMap<String, u64>,
    pub waves: BTreeMap<i32, BTreeMap<String, u64>>,
    /// By the device's home edge (`None`: homed nowhere now).
    pub edges: BTreeMap<Option<i64>, BTreeMap<String, u64>>,
}

/// The counts of `rollout`, one grouped query.
pub async fn counts<C: ConnectionTrait>(db: &C, rollout: i64) -> Result<Counts, Error> {
    let sql = "SELECT rd.wave, rd.state, d.edge_id, COUNT(*) FROM rollout_devices rd \
               LEFT JOIN devices d ON d.id = rd.device_id \
               WHERE rd.rollout_id = ? AND rd.deleted = ? GROUP BY rd.wave, rd.state, d.edge_id";
    let rows = db
        .query_all(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            [rollout.into(), false.into()],
        ))
        .await?;
    let mut out = Counts::default();
    for row in rows {
        let wave: i32 = row.try_get_by_index(0)?;
        let state: String = row.try_get_by_index(1)?;
        let edge: Option<i64> = row.try_get_by_index(2)?;
        let n: i64 = row.try_get_by_index(3)?;
        let n = u64::try_from(n).unwrap_or(0);
        for map in [
            &mut out.total,
            out.waves.entry(wave).or_default(),
            out.edges.entry(edge).or_default(),
        ] {
            *map.entry(state.clone()).or_default() += n;
        }
    }
    Ok(out)
}

/// A page of `rollout`'s device updates, in `state` if given, in device order.
pub async fn devices_of<C: ConnectionTrait>(
    db: &C,
    rollout: i64,
    state: Option<DeviceState>,
    offset: u64,
    limit: u64,
) -> Result<(Vec<rollout_devices::Model>, u64), Error> {
    let mut q = rollout_devices::Entity::find()
        .filter(rollout_devices::Column::RolloutId.eq(rollout))
        .filter(rollout_devices::Column::Deleted.eq(false));
    if let Some(s) = state {
        q = q.filter(rollout_devices::Column::State.eq(s.as_str()));
    }
    let total = q.clone().count(db).await?;
    let rows = q
        .order_by_asc(rollout_devices::Column::DeviceId)
        .offset(offset)
        .limit(limit)
        .all(db)
        .await?;
    Ok((rows, total))
}

/// What an operator does to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Abort,
}

/// Pauses, resumes or aborts a rollout `actor` sees; answers it as it is now.
/// Resuming accepts the failures of the wave under way: its error threshold no
/// longer pauses the rollout, and the wave ends when all its devices did.
pub async fn act(
    node: &Node,
    actor: &Actor,
    id: i64,
    action: Action,
) -> Result<rollouts::Model, Error> {
    actor.require_writer()?;
    find(&node.db, actor, id).await?;
    node.transact(|txn| async move {
        let rows = fleet_store::replica::read_locked::<rollouts::Entity, _>(&*txn, &[id]).await?;
        let current = rows
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no rollout {id}")))?;
        let state = State::parse(&current.state).unwrap_or(State::Aborted);
        let now = fleet_store::now_ms();
        let mut next = current.clone();
        match (action, state) {
            (_, s) if s.is_final() => {
                return Err(Error::FailedPrecondition(format!(
                    "rollout {id} is {}",
                    s.as_str()
                )))
            }
            (Action::Pause, State::Paused)
            | (Action::Resume, State::Running | State::Scheduled) => return Ok(current),
            (Action::Pause, _) => {
                next.state = State::Paused.as_str().into();
                next.reason = format!("paused by {}", actor.username);
            }
            (Action::Resume, _) => {
                next.state = if current.start_at > now {
                    State::Scheduled
                } else {
                    State::Running
                }
                .as_str()
                .into();
                next.accepted_wave = current.wave;
                next.reason = String::new();
            }
            (Action::Abort, _) => {
                next.state = State::Aborted.as_str().into();
                next.reason = format!("aborted by {}", actor.username);
            }
        }
        next.updated_at = now;
        Ok(node.replica.update(&*txn, &current, next).await?)
    })
    .await
}

/// Whether a rollout that is not finished installs artifact `artifact`: while one
/// does, the artifact cannot be deleted.
pub async fn artifact_in_use<C: ConnectionTrait>(
    db: &C,
    artifact: i64,
) -> Result<Option<i64>, Error> {
    let live = rollouts::Entity::find()
        .select_only()
        .column(rollouts::Column::Id)
        .filter(rollouts::Column::ArtifactId.eq(artifact))
        .filter(rollouts::Column::Deleted.eq(false))
        .filter(rollouts::Column::State.is_in([
            State::Scheduled.as_str(),
            State::Running.as_str(),
            State::Paused.as_str(),
        ]))
        .into_tuple::<i64>()
        .one(db)
        .await?;
    Ok(live)
}

/// The list of rollouts `actor` sees, newest first, a page at a time.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    offset: u64,
    limit: u64,
) -> Result<(Vec<rollouts::Model>, u64), Error> {
    let all = rollouts::Entity::find()
        .filter(rollouts::Column::Deleted.eq(false))
        .order_by_desc(rollouts::Column::Id)
        .all(db)
        .await?;
    let mut seen = Vec::new();
    for r in all {
        if visible(db, actor, &r).await? {
            seen.push(r);
        }
    }
    let total = seen.len() as u64;
    let page = seen
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    Ok((page, total))
}

/// The install a rollout sends.
pub(crate) fn install_of(rollout: &rollouts::Model) -> Option<Install> {
    serde_json::from_str(&rollout.install).ok()
}
