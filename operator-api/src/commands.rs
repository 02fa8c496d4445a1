//! Commands to devices, as every node's API offers them: create (return at once, or
//! wait for the result up to the command's timeout), read, list, cancel. Whatever
//! holds the device connections (an edge's hub; at the center, the edge link) plugs
//! in as [`Dispatch`] and reports progress through [`advance`].

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use fleet_store::commands::{self, State};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, QueryOrder, QuerySelect, QueryTrait};
use serde::{Deserialize, Serialize};
use shared_proto::id::parse_id;
use shared_proto::southbound::CommandName;
use utoipa::{IntoParams, ToSchema};

use crate::devices::visible;
use crate::reply::{PageRequest, Paged};
use crate::{input, reply, ApiError, Caller, Node};

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
    /// The device's row changed (its secret, its home, or it was deleted): a live
    /// session it opened with what no longer holds must end now.
    fn recheck(&self, _device: i64) {}
}

pub const MAX_TIMEOUT_S: u64 = 86_400;
const MAX_ARGS_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CommandRequest {
    #[schema(value_type = String, example = "exec")]
    pub name: CommandName,
    /// Arguments of the command (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Option<serde_json::Value>,
    /// Seconds the command may wait for delivery, and then run [default: 60].
    pub timeout_s: Option<u64>,
    /// Wait for the result (up to `timeout_s`) instead of answering at once.
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Command {
    pub id: String,
    pub device_id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    /// queued, sent, running, succeeded, failed, timed_out, expired or cancelled.
    pub state: String,
    pub progress: i32,
    /// `{exit_code, output, truncated, error, data}` once the device answered.
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
    pub timeout_s: i64,
    /// Not delivered by this time (ms since the epoch), it expires.
    pub deadline_at: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<commands::Model> for Command {
    fn from(m: commands::Model) -> Self {
        Self {
            id: m.id.to_string(),
            device_id: m.device_id.to_string(),
            name: m.name,
            args: serde_json::from_str(&m.args).unwrap_or_default(),
            state: m.state,
            progress: m.progress,
            result: m
                .result
                .and_then(|r| serde_json::from_str(&r).ok())
                .unwrap_or_default(),
            timeout_s: m.timeout_s,
            deadline_at: m.deadline_at,
            created_by: m.created_by,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// Moves a command forward (never back) and announces it when it finished. Returns
/// the saved command, or `None` when the move was not allowed or it does not exist.
///
/// Moves are group-committed: while one write transaction runs, the moves that
/// arrive meanwhile wait and then go together in the next one. Ten thousand devices
/// answering a group command would otherwise cost ten thousand commits one after
/// another (each a disk flush on SQLite).
pub async fn advance(
    node: &web::Data<Node>,
    id: i64,
    state: State,
    progress: Option<i32>,
    result: Option<serde_json::Value>,
) -> Result<Option<commands::Model>, sea_orm::DbErr> {
    let (done, answer) = tokio::sync::oneshot::channel();
    let mv = Move {
        step: Step {
            id,
            state,
            progress,
            result,
        },
        done,
    };
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
    answer.await.unwrap_or_else(|_| {
        Err(sea_orm::DbErr::Custom(
            "the command move was dropped".into(),
        ))
    })
}

async fn commit_moves(node: web::Data<Node>) {
    // The group is taken once the transaction has begun (on SQLite, once it is this
    // task's turn), so it holds every move queued meanwhile; a run again after a
    // lost race applies the same group.
    let group: std::sync::Mutex<Vec<Move>> = std::sync::Mutex::default();
    let (core, cell) = (&**node, &group);
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
            let mut outcomes = Vec::with_capacity(steps.len());
            for step in &steps {
                match apply_move(core, &*txn, step).await {
                    // The whole group runs again: on MySQL a deadlock has already
                    // rolled the transaction back.
                    Err(e) if fleet_store::write::contended(&e) => return Err(e),
                    other => outcomes.push(other),
                }
            }
            Ok(outcomes)
        })
        .await;
    let mut group = group.into_inner().unwrap_or_else(|p| p.into_inner());
    if group.is_empty() {
        // The transaction never began: the queued moves are answered all the same.
        group = std::mem::take(&mut *node.moves.lock().unwrap_or_else(|p| p.into_inner()));
    }
    let outcomes = match outcome {
        Ok(outcomes) => outcomes,
        Err(e) => group
            .iter()
            .map(|_| Err(sea_orm::DbErr::Custom(e.to_string())))
            .collect(),
    };
    for (m, outcome) in group.into_iter().zip(outcomes) {
        if let Ok(Some(done)) = &outcome {
            if m.step.state.is_final() {
                let _ = node.finished.send(done.clone());
            }
        }
        let _ = m.done.send(outcome);
    }
}

/// What a command move does.
#[derive(Clone)]
struct Step {
    id: i64,
    state: State,
    progress: Option<i32>,
    result: Option<serde_json::Value>,
}

/// A command move waiting for its group's commit.
pub struct Move {
    step: Step,
    done: tokio::sync::oneshot::Sender<Result<Option<commands::Model>, sea_orm::DbErr>>,
}

async fn apply_move<C: ConnectionTrait>(
    node: &Node,
    txn: &C,
    m: &Step,
) -> Result<Option<commands::Model>, sea_orm::DbErr> {
    let Some(old) = commands::Entity::find_by_id(m.id).one(txn).await? else {
        return Ok(None);
    };
    let current = State::parse(&old.state).unwrap_or(State::Queued);
    if !current.may_become(m.state) {
        return Ok(None);
    }
    let mut new = old.clone();
    new.state = m.state.as_str().to_string();
    if let Some(p) = m.progress {
        new.progress = p.clamp(0, 100);
    }
    if m.state == State::Succeeded {
        new.progress = 100;
    }
    if let Some(r) = &m.result {
        new.result = Some(r.to_string());
    }
    new.updated_at = fleet_store::now_ms();
    Ok(Some(node.replica.update(txn, &old, new).await?))
}

pub(crate) async fn visible_command<C: ConnectionTrait>(
    db: &C,
    caller: &Caller,
    id: i64,
) -> Result<commands::Model, ApiError> {
    let command = commands::Entity::find_by_id(id)
        .filter(commands::Column::Deleted.eq(false))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no command with id {id}")))?;
    visible(db, caller, command.device_id)
        .await
        .map_err(|_| ApiError::not_found(format!("no command with id {id}")))?;
    Ok(command)
}

/// A command request that passed validation.
pub struct Checked {
    name: CommandName,
    args: String,
    timeout_s: u64,
    wait: bool,
}

impl Checked {
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        let req: CommandRequest = input::json(body)?;
        let timeout_s = req.timeout_s.unwrap_or(60);
        if !(1..=MAX_TIMEOUT_S).contains(&timeout_s) {
            return Err(ApiError::invalid(
                "timeout_s",
                format!("must be 1 to {MAX_TIMEOUT_S}"),
            ));
        }
        let args = req.args.unwrap_or_else(|| serde_json::json!({}));
        if !args.is_object() {
            return Err(ApiError::invalid("args", "must be a JSON object"));
        }
        let args = args.to_string();
        if args.len() > MAX_ARGS_BYTES {
            return Err(ApiError::invalid(
                "args",
                format!("must be at most {MAX_ARGS_BYTES} bytes"),
            ));
        }
        Ok(Self {
            name: req.name,
            args,
            timeout_s,
            wait: req.wait,
        })
    }

    /// A new queued command for `device` (not yet stamped or saved).
    fn row(
        &self,
        node: &Node,
        caller: &Caller,
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
            created_by: caller.username.clone(),
            created_at: now,
            updated_at: now,
            hlc: 0,
            origin: 0,
            deleted: false,
            field_stamps: String::new(),
        }
    }
}

/// What a fan-out answers, and `GET /api/v1/batches/{id}` shows: how many of the
/// batch's commands are in each state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Batch {
    pub batch_id: String,
    pub total: u64,
    /// Commands in a final state (succeeded, failed, timed out, expired, cancelled).
    pub done: u64,
    #[schema(value_type = Object)]
    pub states: std::collections::BTreeMap<String, u64>,
}

async fn batch_view<C: ConnectionTrait>(
    db: &C,
    caller: &Caller,
    batch: i64,
) -> Result<Batch, ApiError> {
    let visible_ids = crate::devices::visible_ids(caller).into_query();
    let counts: Vec<(String, i64)> = commands::Entity::find()
        .select_only()
        .column(commands::Column::State)
        .column_as(commands::Column::Id.count(), "n")
        .filter(commands::Column::BatchId.eq(batch))
        .filter(commands::Column::Deleted.eq(false))
        .filter(commands::Column::DeviceId.in_subquery(visible_ids))
        .group_by(commands::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    let mut view = Batch {
        batch_id: batch.to_string(),
        total: 0,
        done: 0,
        states: std::collections::BTreeMap::new(),
    };
    for (state, n) in counts {
        let n = u64::try_from(n).unwrap_or(0);
        view.total += n;
        if State::parse(&state).is_some_and(State::is_final) {
            view.done += n;
        }
        view.states.insert(state, n);
    }
    Ok(view)
}

/// Sends one command to each of `devices` (already checked visible), as one batch.
pub async fn fan_out(
    node: &Node,
    caller: &Caller,
    devices: Vec<i64>,
    req: &Checked,
) -> Result<HttpResponse, ApiError> {
    if devices.is_empty() {
        return Err(ApiError::FailedPrecondition(
            "there is no device to send the command to".into(),
        ));
    }
    let batch = node.replica.new_id();
    let devices = &devices;
    let saved = node
        .transact(|txn| async move {
            let rows = devices
                .iter()
                .map(|d| req.row(node, caller, *d, Some(batch)))
                .collect();
            node.replica.insert_many(&*txn, rows).await
        })
        .await?;
    if let Some(dispatch) = &node.dispatch {
        dispatch.offer_many(&saved);
    }
    let mut response = reply::with_status(
        StatusCode::ACCEPTED,
        "accepted",
        batch_view(&node.db, caller, batch).await?,
    );
    response
        .extensions_mut()
        .insert(crate::audit::AuditTarget(batch.to_string()));
    Ok(response)
}

/// Send a command to every device of a group (that the caller can reach), as one
/// batch; follow it at `GET /api/v1/batches/{id}`.
#[utoipa::path(post, path = "/api/v1/groups/{id}/commands", tag = "commands", request_body = CommandRequest,
    params(("id" = String, Path, description = "Group id")), security(("bearer" = [])),
    responses((status = 202, description = "Accepted: the batch", body = Batch)))]
pub async fn for_group(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let group = parse_id("id", &path)?;
    let req = Checked::from_body(&body)?;
    fleet_store::groups::Entity::find_by_id(group)
        .filter(fleet_store::groups::Column::Deleted.eq(false))
        .one(&node.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no group with id {group}")))?;
    let members = fleet_store::memberships::devices_of(&node.db, group).await?;
    let devices: Vec<i64> = crate::devices::visible_ids(&caller)
        .filter(fleet_store::devices::Column::Id.is_in(members))
        .into_tuple()
        .all(&node.db)
        .await?;
    fan_out(&node, &caller, devices, &req).await
}

/// How a batch of commands (a group or edge fan-out) is doing.
#[utoipa::path(get, path = "/api/v1/batches/{id}", tag = "commands",
    params(("id" = String, Path, description = "Batch id")), security(("bearer" = [])),
    responses((status = 200, description = "Commands of the batch by state", body = Batch)))]
pub async fn batch(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    let view = batch_view(&node.db, &caller, id).await?;
    if view.total == 0 {
        return Err(ApiError::not_found(format!("no batch with id {id}")));
    }
    Ok(reply::ok(view))
}

/// Send a command to a device; with `wait`, answer when it finished (200) or its
/// timeout passed (202, still under way).
#[utoipa::path(post, path = "/api/v1/devices/{id}/commands", tag = "commands", request_body = CommandRequest,
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "Finished", body = Command),
              (status = 202, description = "Accepted, not finished yet", body = Command)))]
pub async fn create(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let device = parse_id("id", &path)?;
    let req = Checked::from_body(&body)?;
    let mut finished = node.finished.subscribe();
    let (core, who, checked) = (&**node, &caller, &req);
    let saved = node
        .transact(|txn| async move {
            visible(&*txn, who, device).await?;
            let row = checked.row(core, who, device, None);
            Ok::<_, ApiError>(core.replica.insert(&*txn, row).await?)
        })
        .await?;
    if let Some(dispatch) = &node.dispatch {
        dispatch.offer(&saved);
    }
    let id = saved.id;
    let mut ended = None;
    if req.wait {
        let wait = async {
            // A result merged by another center replica (the one holding the edge's
            // link) is announced there, not here: the row is looked at now and then.
            let mut look = tokio::time::interval(Duration::from_millis(250));
            look.tick().await;
            loop {
                let announced = tokio::select! {
                    announced = finished.recv() => announced,
                    _ = look.tick() => {
                        let now = commands::Entity::find_by_id(id).one(&node.db).await;
                        if let Ok(Some(c)) = now {
                            if State::parse(&c.state).is_some_and(State::is_final) {
                                return Some(c);
                            }
                        }
                        continue;
                    }
                };
                match announced {
                    // As it ended: a result that came over the federation link is
                    // answered before the merge that stores it commits.
                    Ok(done) if done.id == id => return Some(done),
                    Ok(_) => {}
                    // Missed announcements: look at the row instead.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let now = commands::Entity::find_by_id(id).one(&node.db).await;
                        if let Ok(Some(c)) = now {
                            if State::parse(&c.state).is_some_and(State::is_final) {
                                return Some(c);
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        ended = tokio::time::timeout(Duration::from_secs(req.timeout_s), wait)
            .await
            .ok()
            .flatten();
    }
    let current = match ended {
        Some(done) => done,
        None => commands::Entity::find_by_id(id)
            .one(&node.db)
            .await?
            .unwrap_or(saved),
    };
    let done = State::parse(&current.state).is_some_and(State::is_final);
    let status = if done {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = reply::with_status(
        status,
        if done { "finished" } else { "accepted" },
        Command::from(current),
    );
    response
        .extensions_mut()
        .insert(crate::audit::AuditTarget(id.to_string()));
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CommandFilter {
    /// Only commands in this state.
    pub state: Option<String>,
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

/// A device's commands, newest first.
#[utoipa::path(get, path = "/api/v1/devices/{id}/commands", tag = "commands",
    params(("id" = String, Path, description = "Device id"), CommandFilter), security(("bearer" = [])),
    responses((status = 200, description = "A page of commands", body = inline(Paged<Command>))))]
pub async fn list(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let device = parse_id("id", &path)?;
    let f: CommandFilter = input::query(&req)?;
    let page = PageRequest::new(f.page, f.per_page)?;
    visible(&node.db, &caller, device).await?;
    let mut q = commands::Entity::find()
        .filter(commands::Column::DeviceId.eq(device))
        .filter(commands::Column::Deleted.eq(false));
    if let Some(s) = f.state {
        let state =
            State::parse(&s).ok_or_else(|| ApiError::invalid("state", "is not a command state"))?;
        q = q.filter(commands::Column::State.eq(state.as_str()));
    }
    let total = crate::reply::count(&node.db, q.clone()).await?;
    let rows = q
        .order_by_desc(commands::Column::Id)
        .offset(page.offset())
        .limit(page.per_page)
        .all(&node.db)
        .await?;
    Ok(reply::ok(page.wrap(
        rows.into_iter().map(Command::from).collect(),
        total,
    )))
}

/// One command.
#[utoipa::path(get, path = "/api/v1/commands/{id}", tag = "commands",
    params(("id" = String, Path, description = "Command id")), security(("bearer" = [])),
    responses((status = 200, description = "The command", body = Command)))]
pub async fn get(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    Ok(reply::ok(Command::from(
        visible_command(&node.db, &caller, id).await?,
    )))
}

/// Cancel a command that has not finished. A command already running on the device
/// is marked cancelled here; its late result is ignored.
#[utoipa::path(post, path = "/api/v1/commands/{id}/cancel", tag = "commands",
    params(("id" = String, Path, description = "Command id")), security(("bearer" = [])),
    responses((status = 200, description = "Cancelled", body = Command),
              (status = 409, description = "Already finished")))]
pub async fn cancel(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let id = parse_id("id", &path)?;
    let command = visible_command(&node.db, &caller, id).await?;
    match advance(&node, command.id, State::Cancelled, None, None).await? {
        Some(saved) => Ok(reply::ok(Command::from(saved))),
        None => Err(ApiError::FailedPrecondition(format!(
            "command {id} has already finished"
        ))),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/devices/{id}/commands")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .route("/api/v1/groups/{id}/commands", web::post().to(for_group))
    .route("/api/v1/batches/{id}", web::get().to(batch))
    .service(web::resource("/api/v1/commands/{id}").route(web::get().to(get)))
    .service(web::resource("/api/v1/commands/{id}/cancel").route(web::post().to(cancel)));
}
