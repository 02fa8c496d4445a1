//! Commands and desired configuration on their way to a device, and a device's word
//! on its own commands coming back. A device acts only on commands addressed to it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_node::commands::{advance, advance_queued, report_queued, Heard, Reported};
use fleet_store::commands::{self, State};
use fleet_store::desired_configs;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use shared_proto::southbound::{
    Command, CommandName, CommandResult, DesiredConfig, Download, ErrorCode, Install, LogUpload,
    Outcome, Pdu,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::session::error_pdu;
use super::{send, Hub};
use crate::artifacts::Artifacts;

/// What the edge still has to say about a frame once the moves it queued have
/// committed: an answer to the device, or nothing.
pub(super) type Pending = Pin<Box<dyn Future<Output = Option<Pdu>> + Send>>;

/// The answers a session owes for frames whose moves are queued, given in the order
/// of the frames. Each move is queued before its answer is pushed, so waiting on the
/// oldest alone delays none of them; an empty queue holds no allocation.
#[derive(Default)]
pub(super) struct Answers(VecDeque<Pending>);

impl Answers {
    pub fn push(&mut self, answer: Pending) {
        self.0.push_back(answer);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The oldest answer, once it is ready; never ready while none is owed. Safe to
    /// drop at any await: the answer is taken out in the same step it is ready.
    pub async fn next(&mut self) -> Option<Pdu> {
        let Some(oldest) = self.0.front_mut() else {
            return std::future::pending().await;
        };
        let answer = oldest.await;
        self.0.pop_front();
        if self.0.is_empty() {
            // A burst is over: give its memory back rather than keep it while idle.
            self.0 = VecDeque::new();
        }
        answer
    }
}

/// Commands handed to their devices and not heard of since, with when. Writing
/// `sent` at once would cost a transaction per command (and a change for the center)
/// only to be overwritten a millisecond later by the result: a command is marked
/// `sent` only once it has been out for [`SENT_AFTER`] without a word from its
/// device. Nothing depends on that mark being durable: a `queued` command is
/// delivered again on the device's next login just as a `sent` one is, and the
/// device runs a command id once.
#[derive(Default)]
pub(super) struct Delivered(std::sync::Mutex<HashMap<i64, Instant>>);

/// How long a delivered command waits for its device's word before it is marked sent.
pub(super) const SENT_AFTER: Duration = Duration::from_millis(500);

impl Delivered {
    fn insert(&self, command: i64) {
        self.lock().insert(command, Instant::now());
    }

    /// The device spoke of `command`: its own report supersedes `sent`.
    fn heard(&self, command: i64) {
        let mut out = self.lock();
        if !out.is_empty() {
            out.remove(&command);
        }
    }

    /// Takes the commands out for longer than `after`.
    fn overdue(&self, after: Duration) -> Vec<i64> {
        let mut out = self.lock();
        let now = Instant::now();
        let due: Vec<i64> = out
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= after)
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            out.remove(id);
        }
        if out.is_empty() && out.capacity() > 1024 {
            // A group command's burst is over: give its memory back.
            *out = HashMap::new();
        }
        due
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What devices reach over this edge's site API, at the host they already dial (so
/// no public URL has to be configured): log uploads for `pull_logs`, artifact
/// downloads for `install`.
#[derive(Clone)]
pub struct SiteApi {
    pub scheme: &'static str,
    pub port: u16,
    pub log_max_bytes: u64,
    pub artifacts: Arc<Artifacts>,
}

/// The PDU that delivers a desired configuration.
pub(super) fn config_pdu(c: &desired_configs::Model) -> Pdu {
    Pdu::DesiredConfig(DesiredConfig {
        version: c.version,
        report_interval_s: u32::try_from(c.report_interval_s).unwrap_or(30),
        settings: serde_json::from_str(&c.settings).unwrap_or_default(),
    })
}

/// The PDU that delivers a stored command. A `pull_logs` also learns where to
/// upload, an `install` where to download (and the edge starts fetching the file).
fn command_pdu(c: &commands::Model, site: &SiteApi) -> Option<Pdu> {
    let name: CommandName =
        serde_json::from_value(serde_json::Value::String(c.name.clone())).ok()?;
    let args = match name {
        CommandName::PullLogs => {
            let mut args: serde_json::Value = serde_json::from_str(&c.args).unwrap_or_default();
            if let Some(map) = args.as_object_mut() {
                let upload = LogUpload {
                    scheme: site.scheme.into(),
                    port: site.port,
                    path: format!("/api/v1/uploads/logs/{}", c.id),
                    max_bytes: site.log_max_bytes,
                };
                map.insert("upload".into(), serde_json::to_value(upload).ok()?);
            }
            args
        }
        CommandName::Install => {
            let mut install: Install = serde_json::from_str(&c.args).ok()?;
            if let Ok(artifact) = install.artifact_id.parse::<i64>() {
                site.artifacts.prefetch(artifact);
            }
            install.download = Some(Download {
                scheme: site.scheme.into(),
                port: site.port,
                path: format!("/api/v1/artifacts/{}/content", install.artifact_id),
            });
            serde_json::to_value(install).ok()?
        }
        _ => serde_json::from_str(&c.args).unwrap_or_default(),
    };
    Some(Pdu::Command(Command {
        command_id: c.id.to_string(),
        name,
        args,
        deadline_ms: c.deadline_at,
    }))
}

/// What a result stores: everything the device said, whole.
fn stored_result(r: &CommandResult) -> serde_json::Value {
    serde_json::json!({
        "outcome": r.outcome,
        "exit_code": r.exit_code,
        "output": r.output,
        "truncated": r.truncated,
        "error": r.error,
        "data": r.data,
    })
}

fn final_state(outcome: Outcome) -> State {
    match outcome {
        Outcome::Succeeded => State::Succeeded,
        Outcome::Failed | Outcome::Rejected => State::Failed,
        Outcome::TimedOut => State::TimedOut,
        Outcome::Expired => State::Expired,
    }
}

impl Hub {
    /// Commands waiting for this device; those past their deadline expire instead.
    pub(super) async fn pending(&self, device: i64) -> Vec<commands::Model> {
        let waiting = commands::Entity::find()
            .filter(commands::Column::DeviceId.eq(device))
            .filter(commands::Column::State.is_in([State::Queued.as_str(), State::Sent.as_str()]))
            .filter(commands::Column::Deleted.eq(false))
            .order_by_asc(commands::Column::Id)
            .all(&self.node.db)
            .await
            .unwrap_or_default();
        let now = fleet_store::now_ms();
        let mut live = Vec::with_capacity(waiting.len());
        for c in waiting {
            if c.deadline_at <= now {
                let _ = advance(&self.node, c.id, State::Expired, None, None).await;
            } else {
                live.push(c);
            }
        }
        live
    }

    /// The device's desired configuration, when it is newer than what it runs.
    pub(super) async fn desired(&self, device: i64) -> Option<desired_configs::Model> {
        let config = desired_configs::Entity::find()
            .filter(desired_configs::Column::DeviceId.eq(device))
            .filter(desired_configs::Column::Deleted.eq(false))
            .one(&self.node.db)
            .await
            .ok()??;
        let applied = self.sessions.status(device).map_or(0, |h| h.config_version);
        (config.version > applied).then_some(config)
    }

    /// Sends a command to the device. Its move to `sent` waits ([`Delivered`]): most
    /// commands end before it would be written. A command the edge cannot name is
    /// failed instead, and the session waits for that move among its pending answers,
    /// not before reading on.
    pub(super) async fn deliver<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        id: u64,
        command: &commands::Model,
    ) -> Result<Option<Pending>, tokio_tungstenite::tungstenite::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(pdu) = command_pdu(command, &self.site) else {
            let error = serde_json::json!({"error": "unknown command name"});
            let failed = advance_queued(&self.node, command.id, State::Failed, None, Some(error));
            let command = command.id;
            return Ok(Some(Box::pin(async move {
                if let Err(e) = failed.await {
                    tracing::error!(error = %e, command, "failing a command of unknown name failed");
                }
                None
            })));
        };
        self.metrics.message("out", &pdu);
        send(ws, id, pdu).await?;
        if State::parse(&command.state) == Some(State::Queued) {
            self.delivered.insert(command.id);
        }
        Ok(None)
    }

    /// A device's result for one of its commands, queued ([`Hub::command_moved`]).
    pub(super) fn command_result(&self, device: i64, r: CommandResult, frame: u64) -> Pending {
        let result = stored_result(&r);
        let state = final_state(r.outcome);
        if self.node.heard.receiver_count() > 0 {
            if let Ok(command) = r.command_id.parse() {
                let _ = self.node.heard.send(Arc::new(Heard {
                    command,
                    device,
                    state,
                    result: Some(result.clone()),
                }));
            }
        }
        let word = (state, None, Some(result));
        self.command_moved(device, &r.command_id, word, frame)
    }

    /// Queues a device's word on a command (state, progress, result), said in frame
    /// `frame`; the pending answer refuses it when it cannot apply. Another device's
    /// command reads as unknown, so a device learns nothing of it.
    pub(super) fn command_moved(
        &self,
        device: i64,
        command_id: &str,
        (state, progress, result): (State, Option<i32>, Option<serde_json::Value>),
        frame: u64,
    ) -> Pending {
        let refusal = move |message: String| error_pdu(ErrorCode::BadRequest, message, frame);
        let unknown = format!("unknown command {command_id:?}");
        let Ok(id) = command_id.parse::<i64>() else {
            return Box::pin(std::future::ready(Some(refusal(unknown))));
        };
        self.delivered.heard(id);
        let reported = report_queued(&self.node, device, id, state, progress, result);
        Box::pin(async move {
            // A report that would move a finished command back is a late duplicate:
            // ignored.
            match reported.await {
                Ok(Reported::Unknown) => Some(refusal(unknown)),
                Ok(Reported::Saved(_) | Reported::Ignored) => None,
                Err(e) => {
                    tracing::error!(error = %e, command = id, "recording command progress failed");
                    Some(refusal(
                        "the edge could not record the report; send it again".into(),
                    ))
                }
            }
        })
    }

    /// Marks `sent` the commands delivered [`SENT_AFTER`] ago that their devices have
    /// not spoken of, until `stop`; then those still out, whatever their age.
    pub async fn mark_sent(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SENT_AFTER / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let after = tokio::select! {
                _ = tick.tick() => SENT_AFTER,
                () = stop.cancelled() => Duration::ZERO,
            };
            // Queued together, so they commit in one group.
            let moves: Vec<_> = self
                .delivered
                .overdue(after)
                .into_iter()
                .map(|id| (id, advance_queued(&self.node, id, State::Sent, None, None)))
                .collect();
            for (command, moved) in moves {
                if let Err(e) = moved.await {
                    tracing::error!(error = %e, command, "marking a command sent failed");
                }
            }
            if after.is_zero() {
                return;
            }
        }
    }

    /// Expires commands nobody picked up in time and times out those that never
    /// reported back, until `stop`.
    pub async fn sweep(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let now = fleet_store::now_ms();
            let stale = commands::Entity::find()
                .filter(commands::Column::State.is_in([
                    State::Queued.as_str(),
                    State::Sent.as_str(),
                    State::Running.as_str(),
                ]))
                .filter(commands::Column::DeadlineAt.lt(now))
                .filter(commands::Column::Deleted.eq(false))
                .all(&self.node.db)
                .await
                .unwrap_or_default();
            for c in stale {
                let state = match State::parse(&c.state) {
                    Some(State::Running)
                        if c.deadline_at
                            .saturating_add(c.timeout_s.saturating_mul(1000))
                            < now =>
                    {
                        State::TimedOut
                    }
                    Some(State::Running) => continue,
                    _ => State::Expired,
                };
                if let Err(e) = advance(&self.node, c.id, state, None, None).await {
                    tracing::error!(error = %e, command = c.id, "expiring a command failed");
                }
            }
        }
    }
}
