//! An edge's part of a rollout: for the waves the center opened, it sends `install`
//! commands to its own devices, at most `max_in_flight_per_edge` at a time (devices
//! online first, so a silent one does not hold a slot while others wait), and moves
//! each device's update as its command goes: the stage its progress reports carry,
//! then the end. An update with no end `device_timeout_s` after it started ends
//! `timed_out`, so a silent device never holds a wave. None of it needs the center:
//! a site finishes the wave it has while the link is down, and the updates reach the
//! center when it is back.

use std::collections::HashMap;

use fleet_store::commands::{self, State as CommandState};
use fleet_store::devices;
use fleet_store::replica::read_locked;
use fleet_store::rollout_devices::{self, State};
use fleet_store::rollouts;
use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect, QueryTrait};
use shared_proto::southbound::InstallStage;

use crate::commands::NewCommand;
use crate::{Actor, Error, Node, Role};

/// Lines of a device's output an update keeps.
const LOG_LINES: usize = 20;
/// Queued updates read per pass beyond the free slots, to pick online devices from.
const LOOKAHEAD: u64 = 1000;

const OPEN: [&str; 4] = ["queued", "downloading", "installing", "rebooting"];

/// One pass: follow the updates under way, then start what the slots allow.
pub async fn tick(node: &Node, edge: i64) -> Result<(), Error> {
    follow(node).await?;
    start(node, edge).await
}

/// The update `row` after its command `command`, by `now`; `None` when unchanged.
pub fn moved(
    row: &rollout_devices::Model,
    command: Option<&commands::Model>,
    timeout_s: i64,
    now: i64,
) -> Option<rollout_devices::Model> {
    let current = State::parse(&row.state)?;
    if current.is_final() {
        return None;
    }
    let mut next = row.clone();
    match command.and_then(|c| CommandState::parse(&c.state).map(|s| (c, s))) {
        Some((c, s)) if s.is_final() => {
            let result: serde_json::Value = c
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default();
            let output = result.get("output").and_then(|o| o.as_str()).unwrap_or("");
            let error = result.get("error").and_then(|e| e.as_str()).unwrap_or("");
            let (state, reason) = match s {
                CommandState::Succeeded => (State::Succeeded, String::new()),
                CommandState::Failed if !error.is_empty() => (State::Failed, error.to_string()),
                CommandState::Failed => (
                    State::Failed,
                    format!(
                        "install failed (exit code {})",
                        result.get("exit_code").unwrap_or(&serde_json::Value::Null)
                    ),
                ),
                CommandState::Cancelled => {
                    (State::Failed, "the install command was cancelled".into())
                }
                _ => (
                    State::TimedOut,
                    format!("the install command {}", s.as_str().replace('_', " ")),
                ),
            };
            next.state = state.as_str().into();
            next.reason = reason;
            next.log = tail(output);
            next.progress = if state == State::Succeeded {
                100
            } else {
                row.progress
            };
            next.finished_at = c.updated_at;
        }
        _ if row.started_at > 0
            && now
                > row
                    .started_at
                    .saturating_add(timeout_s.saturating_mul(1000)) =>
        {
            next.state = State::TimedOut.as_str().into();
            next.reason = format!("no result within device_timeout_s ({timeout_s} s)");
            next.finished_at = now;
        }
        Some((c, CommandState::Running)) => {
            let (stage, percent) =
                InstallStage::of(u8::try_from(c.progress.clamp(0, 100)).unwrap_or(0));
            let state = match stage {
                InstallStage::Downloading => State::Downloading,
                InstallStage::Installing => State::Installing,
                InstallStage::Rebooting => State::Rebooting,
            };
            // Forward only: a late report of an earlier stage changes nothing.
            if state.rank() < current.rank() {
                return None;
            }
            next.state = state.as_str().into();
            next.progress = i32::from(percent);
        }
        _ => return None,
    }
    if next == *row {
        return None;
    }
    next.updated_at = now;
    Some(next)
}

/// The last lines of a device's output.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(LOG_LINES)..].join("\n")
}

/// Moves every update whose command went on since the last pass.
async fn follow(node: &Node) -> Result<(), Error> {
    let open = rollout_devices::Entity::find()
        .filter(rollout_devices::Column::CommandId.is_not_null())
        .filter(rollout_devices::Column::State.is_in(OPEN))
        .filter(rollout_devices::Column::Deleted.eq(false))
        .all(&node.db)
        .await?;
    if open.is_empty() {
        return Ok(());
    }
    let mut rollout_ids: Vec<i64> = open.iter().map(|r| r.rollout_id).collect();
    rollout_ids.sort_unstable();
    rollout_ids.dedup();
    let timeouts: HashMap<i64, i64> = rollouts::Entity::find()
        .select_only()
        .column(rollouts::Column::Id)
        .column(rollouts::Column::DeviceTimeoutS)
        .filter(rollouts::Column::Id.is_in(rollout_ids))
        .into_tuple()
        .all(&node.db)
        .await?
        .into_iter()
        .collect();
    let mut by_id = HashMap::new();
    let ids: Vec<i64> = open.iter().filter_map(|r| r.command_id).collect();
    for chunk in ids.chunks(500) {
        for c in commands::Entity::find()
            .filter(commands::Column::Id.is_in(chunk.to_vec()))
            .all(&node.db)
            .await?
        {
            by_id.insert(c.id, c);
        }
    }
    let now = fleet_store::now_ms();
    let step = |row: &rollout_devices::Model| {
        let timeout = timeouts
            .get(&row.rollout_id)
            .copied()
            .unwrap_or(i64::MAX / 1000);
        moved(
            row,
            row.command_id.and_then(|c| by_id.get(&c)),
            timeout,
            now,
        )
    };
    let changed: Vec<i64> = open
        .iter()
        .filter(|r| step(r).is_some())
        .map(|r| r.id)
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let (changed, step) = (&changed, &step);
    node.transact(|txn| async move {
        let locked = read_locked::<rollout_devices::Entity, _>(&*txn, changed).await?;
        let pairs = locked
            .into_values()
            .filter_map(|row| step(&row).map(|next| (row, next)))
            .collect();
        node.replica
            .update_many::<rollout_devices::Entity, _>(&*txn, pairs)
            .await?;
        Ok::<_, Error>(())
    })
    .await
}

/// Starts installs in the open waves of the running rollouts, as slots allow.
async fn start(node: &Node, edge: i64) -> Result<(), Error> {
    let running = rollouts::Entity::find()
        .filter(rollouts::Column::State.eq(rollouts::State::Running.as_str()))
        .filter(rollouts::Column::Deleted.eq(false))
        .all(&node.db)
        .await?;
    for rollout in running {
        let Some(install) = super::install_of(&rollout) else {
            tracing::warn!(
                rollout = rollout.id,
                "a rollout's install does not parse; skipped"
            );
            continue;
        };
        let busy = rollout_devices::Entity::find()
            .filter(rollout_devices::Column::RolloutId.eq(rollout.id))
            .filter(rollout_devices::Column::CommandId.is_not_null())
            .filter(rollout_devices::Column::State.is_in(OPEN))
            .filter(rollout_devices::Column::Deleted.eq(false))
            .count(&node.db)
            .await?;
        let free = u64::try_from(rollout.max_in_flight_per_edge)
            .unwrap_or(0)
            .saturating_sub(busy);
        if free == 0 {
            continue;
        }
        let homed_here = devices::Entity::find()
            .select_only()
            .column(devices::Column::Id)
            .filter(devices::Column::EdgeId.eq(edge))
            .filter(devices::Column::Deleted.eq(false))
            .into_query();
        let mut waiting = rollout_devices::Entity::find()
            .filter(rollout_devices::Column::RolloutId.eq(rollout.id))
            .filter(rollout_devices::Column::CommandId.is_null())
            .filter(rollout_devices::Column::State.eq(State::Queued.as_str()))
            .filter(rollout_devices::Column::Wave.lte(rollout.wave))
            .filter(rollout_devices::Column::Deleted.eq(false))
            .filter(rollout_devices::Column::DeviceId.in_subquery(homed_here))
            .order_by_asc(rollout_devices::Column::Wave)
            .order_by_asc(rollout_devices::Column::Id)
            .limit(free + LOOKAHEAD)
            .all(&node.db)
            .await?;
        if waiting.is_empty() {
            continue;
        }
        if let Some(presence) = &node.presence {
            // Stable: within online and offline devices, the wave order stays.
            waiting.sort_by_key(|r| (r.wave, !presence.is_online(r.device_id)));
        }
        waiting.truncate(usize::try_from(free).unwrap_or(usize::MAX));
        let command = NewCommand::install(
            &install,
            u64::try_from(rollout.device_timeout_s).unwrap_or(1),
        );
        let actor = Actor {
            id: 0,
            username: format!("rollout:{}", rollout.id),
            role: Role::Operator,
            groups: Vec::new(),
        };
        let ids: Vec<i64> = waiting.iter().map(|r| r.id).collect();
        let (ids, command, actor) = (&ids, &command, &actor);
        let sent = node
            .transact(|txn| async move {
                let now = fleet_store::now_ms();
                let locked = read_locked::<rollout_devices::Entity, _>(&*txn, ids).await?;
                let mut commands = Vec::new();
                let mut pairs = Vec::new();
                for row in locked
                    .into_values()
                    .filter(|r| r.command_id.is_none() && r.state == State::Queued.as_str())
                {
                    let c = command.row(node, actor, row.device_id, None);
                    let mut next = row.clone();
                    next.command_id = Some(c.id);
                    next.started_at = now;
                    next.updated_at = now;
                    pairs.push((row, next));
                    commands.push(c);
                }
                let saved = node.replica.insert_many(&*txn, commands).await?;
                node.replica
                    .update_many::<rollout_devices::Entity, _>(&*txn, pairs)
                    .await?;
                Ok::<_, Error>(saved)
            })
            .await?;
        tracing::info!(rollout = rollout.id, installs = sent.len(), "installs sent");
        if let Some(dispatch) = &node.dispatch {
            dispatch.offer_many(&sent);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: State, started_at: i64) -> rollout_devices::Model {
        rollout_devices::Model {
            id: 1,
            rollout_id: 2,
            device_id: 3,
            wave: 0,
            state: state.as_str().into(),
            progress: 0,
            reason: String::new(),
            log: String::new(),
            command_id: Some(4),
            started_at,
            finished_at: 0,
            updated_at: 0,
            hlc: 0,
            origin: 0,
            deleted: false,
            field_stamps: String::new(),
        }
    }

    fn command(
        state: CommandState,
        progress: i32,
        result: Option<serde_json::Value>,
    ) -> commands::Model {
        commands::Model {
            id: 4,
            device_id: 3,
            batch_id: None,
            name: "install".into(),
            args: "{}".into(),
            state: state.as_str().into(),
            progress,
            timeout_s: 60,
            deadline_at: 0,
            result: result.map(|r| r.to_string()),
            created_by: "rollout:2".into(),
            created_at: 0,
            updated_at: 5_000,
            hlc: 0,
            origin: 0,
            deleted: false,
            field_stamps: String::new(),
        }
    }

    #[test]
    fn progress_moves_the_stage_forward_only() {
        let queued = row(State::Queued, 1_000);
        let c = command(
            CommandState::Running,
            i32::from(InstallStage::Downloading.progress(50)),
            None,
        );
        let next = moved(&queued, Some(&c), 60, 2_000).expect("moved");
        assert_eq!(next.state, "downloading");
        assert!((49..=51).contains(&next.progress), "{}", next.progress);
        let installing = row(State::Installing, 1_000);
        assert_eq!(moved(&installing, Some(&c), 60, 2_000), None, "no way back");
        let sent = command(CommandState::Sent, 0, None);
        assert_eq!(moved(&queued, Some(&sent), 60, 2_000), None);
    }

    #[test]
    fn the_end_carries_the_reason_and_the_last_lines() {
        let r = row(State::Installing, 1_000);
        let output: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let ok = command(
            CommandState::Succeeded,
            99,
            Some(serde_json::json!({"output": output})),
        );
        let next = moved(&r, Some(&ok), 60, 2_000).expect("moved");
        assert_eq!(
            (next.state.as_str(), next.progress, next.finished_at),
            ("succeeded", 100, 5_000)
        );
        assert!(
            next.log.starts_with("line 11\n") && next.log.ends_with("line 30"),
            "{}",
            next.log
        );
        let bad = command(
            CommandState::Failed,
            85,
            Some(serde_json::json!({"error": "digest mismatch"})),
        );
        let next = moved(&r, Some(&bad), 60, 2_000).expect("moved");
        assert_eq!(
            (next.state.as_str(), next.reason.as_str()),
            ("failed", "digest mismatch")
        );
        let expired = command(CommandState::Expired, 0, None);
        assert_eq!(
            moved(&r, Some(&expired), 60, 2_000).expect("moved").state,
            "timed_out"
        );
    }

    #[test]
    fn a_silent_device_times_out_and_a_final_update_stays() {
        let r = row(State::Downloading, 1_000);
        let running = command(CommandState::Running, 10, None);
        assert!(moved(&r, Some(&running), 60, 61_000).is_some_and(|n| n.state == "downloading"));
        let late = moved(&r, Some(&running), 60, 61_001).expect("timed out");
        assert_eq!(late.state, "timed_out");
        assert!(late.reason.contains("60 s"), "{}", late.reason);
        let done = row(State::Succeeded, 1_000);
        assert_eq!(moved(&done, None, 60, 999_999), None);
    }
}
