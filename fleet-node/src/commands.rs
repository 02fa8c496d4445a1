//! Commands to devices: creating them (to one device, or fanned out to many as one
//! batch), waiting for their end, and moving them forward. Whatever holds the device
//! connections (an edge's hub; at the center, the edge link) plugs in as
//! [`Dispatch`] and reports progress through [`advance`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fleet_store::commands::{self, State};
use sea_orm::entity::prelude::*;
use sea_orm::ConnectionTrait;
use shared_proto::southbound::CommandName;
use tokio::sync::broadcast;

use crate::devices::visible;
use crate::{Actor, Error, Node};

/// Hands a new command to whatever holds the device's connection. Returns whether a
/// live session took it; if not, it stays queued until the device returns.
pub trait Dispatch: Send + Sync {
    fn offer(&self, command: &commands::Model) -> bool;
    /// Offers the commands of one batch (a group or edge fan-out).
    fn offer_many(&self, commands: &[commands::Model]) {
        for c in commands {
            self.offer(c);
        }
    }
    /// Pushes a new desired configuration to the device's live session, if any.
    fn configure(&self, config: &fleet_store::desired_configs::Model) -> bool;
    /// A command for `device` not yet finished came by sync without being offered
    /// (one already sent elsewhere): its next session must look in the database.
    fn expect(&self, _device: i64) {}
    /// The device's row changed (its secret, its home, or it was deleted): a live
    /// session it opened with what no longer holds must end now.
    fn recheck(&self, _device: i64) {}
}

pub const MAX_TIMEOUT_S: u64 = 86_400;
pub const MAX_ARGS_BYTES: usize = 16 * 1024;

/// Moves a command forward (never back) and announces it when it finished. Returns
/// the saved command, or `None` when the move was not allowed or it does not exist.
///
/// Moves are group-committed: while one write transaction runs, the moves that
/// arrive meanwhile wait and then go together in the next one. Ten thousand devices
/// answering a group command would otherwise cost ten thousand commits one after
/// another (each a disk flush on SQLite).
pub async fn advance(
    node: &Arc<Node>,
    id: i64,
    state: State,
    progress: Option<i32>,
    result: Option<serde_json::Value>,
) -> Result<Option<commands::Model>, sea_orm::DbErr> {
    Ok(
        match advance_queued(node, id, state, progress, result).await? {
            Reported::Saved(saved) => Some(*saved),
            Reported::Ignored | Reported::Unknown => None,
        },
    )
}

/// How a device's word on a command ended.
#[derive(Debug)]
pub enum Reported {
    Saved(Box<commands::Model>),
    /// A move back (a late duplicate): nothing to do.
    Ignored,
    /// No live command of this device has that id.
    Unknown,
}

/// Moves command `id` as its device `device` reports, in the same groups as
/// [`advance`]; another device's command, or a deleted one, reads as unknown.
pub async fn report(
    node: &Arc<Node>,
    device: i64,
    id: i64,
    state: State,
    progress: Option<i32>,
    result: Option<serde_json::Value>,
) -> Result<Reported, sea_orm::DbErr> {
    report_queued(node, device, id, state, progress, result).await
}

/// Like [`report`], but the move is queued before this returns, so it goes before
/// any move queued after it; the answer comes when its group commits. A device's
/// session queues its reports this way and goes on reading, so a progress report and
/// the result right behind it commit together.
pub fn report_queued(
    node: &Arc<Node>,
    device: i64,
    id: i64,
    state: State,
    progress: Option<i32>,
    result: Option<serde_json::Value>,
) -> impl std::future::Future<Output = Result<Reported, DbErr>> + Send + 'static {
    queued(node, Some(device), id, state, progress, result)
}

/// Like [`advance`], queued as [`report_queued`] is; [`advance`] awaits it.
pub fn advance_queued(
    node: &Arc<Node>,
    id: i64,
    state: State,
    progress: Option<i32>,
    result: Option<serde_json::Value>,
) -> impl std::future::Future<Output = Result<Reported, DbErr>> + Send + 'static {
    queued(node, None, id, state, progress, result)
}

/// Queues a move, by `device` when one reports it (it must be the command's own),
/// and answers when its group commits.
fn queued(
    node: &Arc<Node>,
    device: Option<i64>,
    id: i64,
    state: State,
    progress: Option<i32>,
    result: Option<serde_json::Value>,
) -> impl std::future::Future<Output = Result<Reported, DbErr>> + Send + 'static {
    let step = Step {
        id,
        device,
        state,
        progress,
        result,
    };
    answer(enqueue(node, step))
}

type Answer = tokio::sync::oneshot::Receiver<Result<Reported, DbErr>>;

fn enqueue(node: &Arc<Node>, step: Step) -> Answer {
    let (done, answer) = tokio::sync::oneshot::channel();
    let mv = Move { step, done };
    let first = {
        let mut pending = node.moves.lock().unwrap_or_else(|p| p.into_inner());
        pending.push(mv);
        pending.len() == 1
    };
    if first {
        // The first of a group commits for everyone queued by the time it gets its
        // write turn. It runs as its own task: a caller that goes away (a client
        // hanging up) must not strand the others.
        tokio::spawn(commit_moves(node.clone()));
    }
    answer
}

async fn answer(answer: Answer) -> Result<Reported, DbErr> {
    answer.await.unwrap_or_else(|_| {
        Err(sea_orm::DbErr::Custom(
            "the command move was dropped".into(),
        ))
    })
}

async fn commit_moves(node: Arc<Node>) {
    // The group is taken once the transaction has begun (on SQLite, once it is this
    // task's turn), so it holds every move queued meanwhile; a run again after a
    // lost race applies the same group.
    let group: std::sync::Mutex<Vec<Move>> = std::sync::Mutex::default();
    let (core, cell) = (&*node, &group);
    let outcome = node
        .transact(|txn| async move {
            let steps: Vec<Step> = {
                let mut taken = cell.lock().unwrap_or_else(|p| p.into_inner());
                if taken.is_empty() {
                    *taken =
                        std::mem::take(&mut *core.moves.lock().unwrap_or_else(|p| p.into_inner()));
                }
                taken.iter().map(|m| m.step.clone()).collect()
            };
            let outcomes = apply_moves(core, &*txn, &steps).await?;
            // Told to the peers before the commit (`Node::ending`); should the commit
            // fail, the device is told to send its result again.
            for (step, outcome) in steps.iter().zip(&outcomes) {
                if let (true, Reported::Saved(done)) = (step.state.is_final(), outcome) {
                    let _ = core.ending.send((**done).clone());
                }
            }
            Ok::<_, DbErr>(outcomes)
        })
        .await;
    let mut group = group.into_inner().unwrap_or_else(|p| p.into_inner());
    if group.is_empty() {
        // The transaction never began: the queued moves are answered all the same.
        group = std::mem::take(&mut *node.moves.lock().unwrap_or_else(|p| p.into_inner()));
    }
    let outcomes: Vec<Result<Reported, DbErr>> = match outcome {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(e) => group
            .iter()
            .map(|_| Err(DbErr::Custom(e.to_string())))
            .collect(),
    };
    for (m, outcome) in group.into_iter().zip(outcomes) {
        if let Ok(Reported::Saved(done)) = &outcome {
            if m.step.state.is_final() {
                let _ = node.finished.send((**done).clone());
            }
        }
        let _ = m.done.send(outcome);
    }
}

/// What a command move does.
#[derive(Clone)]
struct Step {
    id: i64,
    /// The device reporting the move, which must own the command.
    device: Option<i64>,
    state: State,
    progress: Option<i32>,
    result: Option<serde_json::Value>,
}

/// A command move waiting for its group's commit.
pub struct Move {
    step: Step,
    done: tokio::sync::oneshot::Sender<Result<Reported, DbErr>>,
}

/// Applies a group of moves in a few statements: the commands are read locked, moved
/// in memory in the order the moves came, and written back together. Answers each
/// move's command as it left it, or why it did not move.
async fn apply_moves<C: ConnectionTrait>(
    node: &Node,
    txn: &C,
    steps: &[Step],
) -> Result<Vec<Reported>, DbErr> {
    let ids: Vec<i64> = steps.iter().map(|s| s.id).collect();
    let stored = fleet_store::replica::read_locked::<commands::Entity, _>(txn, &ids).await?;
    let now = fleet_store::now_ms();
    let mut working: HashMap<i64, commands::Model> = HashMap::new();
    let mut last_move_of: HashMap<i64, usize> = HashMap::new();
    let mut answers = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let current = working
            .get(&step.id)
            .or_else(|| stored.get(&step.id))
            .filter(|c| step.device.is_none_or(|d| c.device_id == d && !c.deleted));
        let Some(current) = current else {
            answers.push(Reported::Unknown);
            continue;
        };
        match moved(current, step, now) {
            Some(new) => {
                working.insert(step.id, new.clone());
                last_move_of.insert(step.id, i);
                answers.push(Reported::Saved(Box::new(new)));
            }
            None => answers.push(Reported::Ignored),
        }
    }
    let pairs: Vec<(commands::Model, commands::Model)> = working
        .into_iter()
        .filter_map(|(id, new)| stored.get(&id).map(|old| (old.clone(), new)))
        .collect();
    for saved in node
        .replica
        .update_many::<commands::Entity, _>(txn, pairs)
        .await?
    {
        if let Some(&i) = last_move_of.get(&saved.id) {
            answers[i] = Reported::Saved(Box::new(saved));
        }
    }
    Ok(answers)
}

/// The command after `step`, or `None` when it may not move that way (never back).
fn moved(current: &commands::Model, step: &Step, now: i64) -> Option<commands::Model> {
    let state = State::parse(&current.state).unwrap_or(State::Queued);
    if !state.may_become(step.state) {
        return None;
    }
    let mut new = current.clone();
    new.state = step.state.as_str().to_string();
    if let Some(p) = step.progress {
        new.progress = p.clamp(0, 100);
    }
    if step.state == State::Succeeded {
        new.progress = 100;
    }
    if let Some(r) = &step.result {
        new.result = Some(r.to_string());
    }
    new.updated_at = now;
    Some(new)
}

pub async fn visible_command<C: ConnectionTrait>(
    db: &C,
    caller: &Actor,
    id: i64,
) -> Result<commands::Model, Error> {
    let command = commands::Entity::find_by_id(id)
        .filter(commands::Column::Deleted.eq(false))
        .one(db)
        .await?
        .ok_or_else(|| Error::not_found(format!("no command with id {id}")))?;
    visible(db, caller, command.device_id)
        .await
        .map_err(|_| Error::not_found(format!("no command with id {id}")))?;
    Ok(command)
}

/// A command as an operator asked for it, checked: what every device of a fan-out,
/// or the one device, is sent.
pub struct NewCommand {
    name: CommandName,
    args: String,
    timeout_s: u64,
}

impl NewCommand {
    /// Checks a request: `timeout_s` defaults to 60 s, `args` to `{}` and must be an
    /// object of at most [`MAX_ARGS_BYTES`].
    pub fn new(
        name: CommandName,
        args: Option<serde_json::Value>,
        timeout_s: Option<u64>,
    ) -> Result<Self, Error> {
        if name == CommandName::Install {
            return Err(Error::invalid(
                "name",
                "install commands are made by rollouts (POST /api/v1/rollouts), which sign what they install",
            ));
        }
        let timeout_s = timeout_s.unwrap_or(60);
        if !(1..=MAX_TIMEOUT_S).contains(&timeout_s) {
            return Err(Error::invalid(
                "timeout_s",
                format!("must be 1 to {MAX_TIMEOUT_S}"),
            ));
        }
        let args = args.unwrap_or_else(|| serde_json::json!({}));
        if !args.is_object() {
            return Err(Error::invalid("args", "must be a JSON object"));
        }
        let args = args.to_string();
        if args.len() > MAX_ARGS_BYTES {
            return Err(Error::invalid(
                "args",
                format!("must be at most {MAX_ARGS_BYTES} bytes"),
            ));
        }
        Ok(Self {
            name,
            args,
            timeout_s,
        })
    }

    /// An `install` of a stored artifact, as a rollout sends it.
    pub fn install(args: &shared_proto::southbound::Install, timeout_s: u64) -> Self {
        Self {
            name: CommandName::Install,
            args: serde_json::to_string(args).unwrap_or_default(),
            timeout_s: timeout_s.clamp(1, MAX_TIMEOUT_S),
        }
    }

    /// How long the command may take, delivery included.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }

    /// A new queued command for `device` (not yet stamped or saved).
    pub(crate) fn row(
        &self,
        node: &Node,
        actor: &Actor,
        device: i64,
        batch: Option<i64>,
    ) -> commands::Model {
        let now = fleet_store::now_ms();
        let timeout_ms = i64::try_from(self.timeout_s * 1000).unwrap_or(i64::MAX);
        commands::Model {
            id: node.replica.new_id(),
            device_id: device,
            batch_id: batch,
            name: self.name.as_str().to_string(),
            args: self.args.clone(),
            state: State::Queued.as_str().into(),
            progress: 0,
            timeout_s: i64::try_from(self.timeout_s).unwrap_or(i64::MAX),
            deadline_at: now.saturating_add(timeout_ms),
            result: None,
            created_by: actor.username.clone(),
            created_at: now,
            updated_at: now,
            hlc: 0,
            origin: 0,
            deleted: false,
            field_stamps: String::new(),
        }
    }
}

/// Sends one command to each of `devices` (already checked visible), as one batch;
/// answers the batch's id.
pub async fn fan_out(
    node: &Node,
    actor: &Actor,
    devices: Vec<i64>,
    command: &NewCommand,
) -> Result<i64, Error> {
    if devices.is_empty() {
        return Err(Error::FailedPrecondition(
            "there is no device to send the command to".into(),
        ));
    }
    let batch = node.replica.new_id();
    let devices = &devices;
    let saved = node
        .transact(|txn| async move {
            let rows = devices
                .iter()
                .map(|d| command.row(node, actor, *d, Some(batch)))
                .collect();
            node.replica.insert_many(&*txn, rows).await
        })
        .await?;
    if let Some(dispatch) = &node.dispatch {
        dispatch.offer_many(&saved);
    }
    Ok(batch)
}

/// Sends a command to one device the actor may see, and hands it to the device's
/// session if it is connected.
pub async fn send(
    node: &Node,
    actor: &Actor,
    device: i64,
    command: &NewCommand,
) -> Result<commands::Model, Error> {
    let saved = node
        .transact(|txn| async move {
            visible(&*txn, actor, device).await?;
            let row = command.row(node, actor, device, None);
            Ok::<_, Error>(node.replica.insert(&*txn, row).await?)
        })
        .await?;
    if let Some(dispatch) = &node.dispatch {
        dispatch.offer(&saved);
    }
    Ok(saved)
}

/// A device's final word on one of its commands, as the device hub heard it, before
/// it is written (`Node::heard`).
#[derive(Debug)]
pub struct Heard {
    pub command: i64,
    /// The device that said it: only the command's own device is believed.
    pub device: i64,
    pub state: State,
    pub result: Option<serde_json::Value>,
}

/// Someone waiting for a command's end, subscribed before the command was created
/// so an early end is not missed.
pub struct Waiter {
    finished: broadcast::Receiver<commands::Model>,
    ending: broadcast::Receiver<commands::Model>,
    heard: broadcast::Receiver<Arc<Heard>>,
}

impl Waiter {
    pub fn new(node: &Node) -> Self {
        Self {
            finished: node.finished.subscribe(),
            ending: node.ending.subscribe(),
            heard: node.heard.subscribe(),
        }
    }

    /// Waits up to `timeout` for `command` (as it was created) to reach a final
    /// state; answers it as it ended, or `None` if it did not end in time. A result
    /// its device gives here answers as soon as it arrives, moved by the same rule a
    /// write applies, while its write is group-committed: should that write fail, the
    /// device is told to send the result again, and should the edge die first, the
    /// device answers the command's next delivery with the result it kept.
    pub async fn wait(
        mut self,
        node: &Node,
        command: &commands::Model,
        timeout: Duration,
    ) -> Option<commands::Model> {
        let id = command.id;
        let ended = async {
            // A result merged by another center replica (the one holding the edge's
            // link) is announced there, not here: the row is looked at now and then.
            // Its first look is one period away. Awaiting an interval's immediate first
            // tick would not be immediate: a timer fires on the driver's next
            // millisecond, and an answer arriving meanwhile would wait for it.
            let mut look =
                tokio::time::interval_at(tokio::time::Instant::now() + LOOK_EVERY, LOOK_EVERY);
            loop {
                let announced = tokio::select! {
                    heard = self.heard.recv() => match heard {
                        Ok(word) => match from_device(command, &word) {
                            Some(done) => return Some(done),
                            None => continue,
                        },
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    announced = self.ending.recv() => announced,
                    announced = self.finished.recv() => announced,
                    _ = look.tick() => {
                        if let Some(done) = ended(node, id).await {
                            return Some(done);
                        }
                        continue;
                    }
                };
                match announced {
                    Ok(done) if done.id == id => return Some(done),
                    Ok(_) => {}
                    // Missed announcements: look at the row instead.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(done) = ended(node, id).await {
                            return Some(done);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        tokio::time::timeout(timeout, ended).await.ok().flatten()
    }
}

/// `command` as its device's final word leaves it, when the word is about it, from
/// its own device, and moves it.
fn from_device(command: &commands::Model, word: &Heard) -> Option<commands::Model> {
    if word.command != command.id || word.device != command.device_id || !word.state.is_final() {
        return None;
    }
    let step = Step {
        id: word.command,
        device: Some(word.device),
        state: word.state,
        progress: None,
        result: word.result.clone(),
    };
    moved(command, &step, fleet_store::now_ms())
}

/// How often a waiting caller looks at the command's row.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// The command as stored, if it has ended.
async fn ended(node: &Node, id: i64) -> Option<commands::Model> {
    let now = commands::Entity::find_by_id(id).one(&node.db).await;
    match now {
        Ok(Some(c)) if State::parse(&c.state).is_some_and(State::is_final) => Some(c),
        _ => None,
    }
}
