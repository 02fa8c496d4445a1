//! The center's part of a rollout: it starts it at `start_at`, opens the next wave
//! once the current one reached its success threshold, pauses it (with an event
//! saying why) when the wave's failures pass the error threshold or the wave ended
//! below its success threshold, and completes it when the last wave is done. Every
//! center replica runs it; each move is made in a transaction over the row as it is
//! then, so two replicas deciding at once make the same move once.

use fleet_store::replica::read_locked;
use fleet_store::rollout_devices::{self, State as DeviceState};
use fleet_store::rollouts::{self, State};
use sea_orm::entity::prelude::*;
use sea_orm::QuerySelect;

use super::plan;
use crate::events::{record, NewEvent};
use crate::{Error, Node};

/// How one wave stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wave {
    pub total: u64,
    pub succeeded: u64,
    /// Failed or timed out.
    pub failed: u64,
}

impl Wave {
    fn done(&self) -> u64 {
        self.succeeded + self.failed
    }
}

/// What the center does to a rollout next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    Start,
    /// Opens the next wave.
    Advance,
    Complete,
    Pause(String),
}

/// The next move of `rollout`, whose current wave stands as `wave`, out of `waves`
/// waves; `None` while it waits.
pub fn decide(rollout: &rollouts::Model, wave: Wave, waves: usize, now: i64) -> Option<Move> {
    let w = rollout.wave;
    let last = usize::try_from(w).is_ok_and(|w| w + 1 >= waves);
    let onward = if last { Move::Complete } else { Move::Advance };
    match State::parse(&rollout.state)? {
        State::Scheduled => (rollout.start_at <= now).then_some(Move::Start),
        State::Running => {
            if wave.total == 0 {
                return Some(onward);
            }
            let (pct_ok, pct_err) = (
                u64::try_from(rollout.success_threshold_pct).unwrap_or(100),
                u64::try_from(rollout.error_threshold_pct).unwrap_or(0),
            );
            let accepted = w <= rollout.accepted_wave;
            if !accepted && wave.failed * 100 > pct_err * wave.total {
                return Some(Move::Pause(format!(
                    "wave {}: {} of {} devices failed, over the error threshold of {pct_err}%",
                    w + 1,
                    wave.failed,
                    wave.total
                )));
            }
            let all_done = wave.done() >= wave.total;
            if accepted {
                return all_done.then_some(onward);
            }
            if wave.succeeded * 100 >= pct_ok * wave.total {
                return (!last || all_done).then_some(onward);
            }
            all_done.then(|| {
                Move::Pause(format!(
                    "wave {}: {} of {} devices succeeded, under the success threshold of {pct_ok}%",
                    w + 1,
                    wave.succeeded,
                    wave.total
                ))
            })
        }
        State::Paused | State::Completed | State::Aborted => None,
    }
}

/// One pass over the rollouts that are scheduled or running.
pub async fn tick(node: &Node) -> Result<(), Error> {
    let live = rollouts::Entity::find()
        .filter(rollouts::Column::Deleted.eq(false))
        .filter(rollouts::Column::State.is_in([State::Scheduled.as_str(), State::Running.as_str()]))
        .all(&node.db)
        .await?;
    for rollout in live {
        let waves =
            plan::parse(&serde_json::from_str::<Vec<String>>(&rollout.waves).unwrap_or_default())
                .map_or(1, |w| w.len());
        let wave = wave_of(node, rollout.id, rollout.wave).await?;
        let now = fleet_store::now_ms();
        if let Some(step) = decide(&rollout, wave, waves, now) {
            make(node, &rollout, step, now).await?;
        }
    }
    Ok(())
}

/// How wave `wave` of `rollout` stands.
async fn wave_of(node: &Node, rollout: i64, wave: i32) -> Result<Wave, Error> {
    let by_state: Vec<(String, i64)> = rollout_devices::Entity::find()
        .select_only()
        .column(rollout_devices::Column::State)
        .column_as(rollout_devices::Column::Id.count(), "n")
        .filter(rollout_devices::Column::RolloutId.eq(rollout))
        .filter(rollout_devices::Column::Wave.eq(wave))
        .filter(rollout_devices::Column::Deleted.eq(false))
        .group_by(rollout_devices::Column::State)
        .into_tuple()
        .all(&node.db)
        .await?;
    let mut out = Wave::default();
    for (state, n) in by_state {
        let n = u64::try_from(n).unwrap_or(0);
        out.total += n;
        match DeviceState::parse(&state) {
            Some(DeviceState::Succeeded) => out.succeeded += n,
            Some(DeviceState::Failed | DeviceState::TimedOut) => out.failed += n,
            _ => {}
        }
    }
    Ok(out)
}

/// Makes `step`, if the rollout is still as it was read.
async fn make(node: &Node, seen: &rollouts::Model, step: Move, now: i64) -> Result<(), Error> {
    let (step, id) = (&step, seen.id);
    node.transact(|txn| async move {
        let rows = read_locked::<rollouts::Entity, _>(&*txn, &[id]).await?;
        let Some(current) = rows.get(&id) else {
            return Ok(());
        };
        if current.state != seen.state || current.wave != seen.wave {
            return Ok(());
        }
        let mut next = current.clone();
        let (action, detail) = match step {
            Move::Start => {
                next.state = State::Running.as_str().into();
                ("rollout.started", "wave 1 open".to_string())
            }
            Move::Advance => {
                next.wave = current.wave.saturating_add(1);
                (
                    "rollout.wave_opened",
                    format!("wave {} open", next.wave + 1),
                )
            }
            Move::Complete => {
                next.state = State::Completed.as_str().into();
                ("rollout.completed", String::new())
            }
            Move::Pause(why) => {
                next.state = State::Paused.as_str().into();
                next.reason = why.clone();
                ("rollout.paused", why.clone())
            }
        };
        next.updated_at = now;
        node.replica.update(&*txn, current, next).await?;
        tracing::info!(rollout = id, action, detail = %detail, "rollout moved");
        record(
            &*txn,
            &node.replica,
            NewEvent {
                actor: format!("rollout:{id}"),
                action: action.into(),
                target_type: "rollouts".into(),
                target_id: id.to_string(),
                status: 200,
                detail: detail.clone(),
            },
        )
        .await?;
        Ok::<_, Error>(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(state: State, wave: i32) -> rollouts::Model {
        rollouts::Model {
            id: 1,
            name: "r".into(),
            artifact_id: 2,
            install: String::new(),
            target: String::new(),
            waves: String::new(),
            success_threshold_pct: 90,
            error_threshold_pct: 10,
            device_timeout_s: 60,
            max_in_flight_per_edge: 10,
            start_at: 1_000,
            state: state.as_str().into(),
            wave,
            accepted_wave: -1,
            reason: String::new(),
            created_by: "admin".into(),
            created_at: 0,
            updated_at: 0,
            hlc: 0,
            origin: 0,
            deleted: false,
            field_stamps: String::new(),
        }
    }

    fn wave(total: u64, succeeded: u64, failed: u64) -> Wave {
        Wave {
            total,
            succeeded,
            failed,
        }
    }

    #[test]
    fn a_scheduled_rollout_starts_at_its_time() {
        let r = rollout(State::Scheduled, 0);
        assert_eq!(decide(&r, wave(10, 0, 0), 3, 999), None);
        assert_eq!(decide(&r, wave(10, 0, 0), 3, 1_000), Some(Move::Start));
    }

    #[test]
    fn a_wave_opens_the_next_at_its_success_threshold_and_the_last_completes_when_done() {
        let r = rollout(State::Running, 0);
        assert_eq!(decide(&r, wave(10, 8, 0), 3, 0), None, "80% < 90%");
        assert_eq!(
            decide(&r, wave(10, 9, 0), 3, 0),
            Some(Move::Advance),
            "stragglers go on"
        );
        let last = rollout(State::Running, 2);
        assert_eq!(
            decide(&last, wave(10, 9, 0), 3, 0),
            None,
            "one still installing"
        );
        assert_eq!(decide(&last, wave(10, 9, 1), 3, 0), Some(Move::Complete));
        assert_eq!(
            decide(&r, wave(0, 0, 0), 3, 0),
            Some(Move::Advance),
            "an empty wave"
        );
    }

    #[test]
    fn failures_past_the_error_threshold_pause_until_the_operator_accepts_them() {
        let r = rollout(State::Running, 1);
        assert_eq!(
            decide(&r, wave(10, 1, 1), 3, 0),
            None,
            "10% is not over 10%"
        );
        match decide(&r, wave(10, 1, 2), 3, 0) {
            Some(Move::Pause(why)) => assert!(why.contains("wave 2: 2 of 10"), "{why}"),
            other => panic!("expected a pause, got {other:?}"),
        }
        let mut tolerant = r.clone();
        tolerant.error_threshold_pct = 50;
        match decide(&tolerant, wave(10, 8, 2), 3, 0) {
            Some(Move::Pause(why)) => assert!(why.contains("under the success threshold"), "{why}"),
            other => panic!("a finished wave below its threshold pauses, got {other:?}"),
        }
        let mut resumed = r.clone();
        resumed.accepted_wave = 1;
        assert_eq!(
            decide(&resumed, wave(10, 1, 5), 3, 0),
            None,
            "still installing"
        );
        assert_eq!(decide(&resumed, wave(10, 1, 9), 3, 0), Some(Move::Advance));
    }

    #[test]
    fn paused_and_finished_rollouts_do_not_move() {
        for s in [State::Paused, State::Completed, State::Aborted] {
            assert_eq!(decide(&rollout(s, 0), wave(1, 1, 0), 1, 0), None);
        }
    }
}
