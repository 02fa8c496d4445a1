//! Commands to devices, as every node's API offers them: create (return at once, or
//! wait for the result up to the command's timeout), fan out to a group, read, list,
//! cancel. The rules are the core's (`fleet_node::commands`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use fleet_node::commands::{advance, visible_command, NewCommand};
use fleet_node::devices::{in_groups, visible, visible_ids};
use fleet_node::Error;
use fleet_store::commands::{self, State};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{ConnectionTrait, QueryOrder, QuerySelect, QueryTrait};
use serde::{Deserialize, Serialize};
use shared_proto::id::parse_id;
use shared_proto::southbound::CommandName;
use utoipa::{IntoParams, ToSchema};

use crate::reply::{PageRequest, Paged};
use crate::{input, reply, ApiError, Caller, Node};

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

/// A command request that passed validation.
pub struct Checked {
    command: NewCommand,
    wait: bool,
}

impl Checked {
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        let req: CommandRequest = input::json(body)?;
        Ok(Self {
            command: NewCommand::new(req.name, req.args, req.timeout_s)?,
            wait: req.wait,
        })
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
    let scope = visible_ids(caller).into_query();
    let counts: Vec<(String, i64)> = commands::Entity::find()
        .select_only()
        .column(commands::Column::State)
        .column_as(commands::Column::Id.count(), "n")
        .filter(commands::Column::BatchId.eq(batch))
        .filter(commands::Column::Deleted.eq(false))
        .filter(commands::Column::DeviceId.in_subquery(scope))
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

/// Sends one command to each of `devices` (already checked visible), as one batch,
/// and answers 202 with the batch.
pub async fn fan_out(
    node: &Node,
    caller: &Caller,
    devices: Vec<i64>,
    req: &Checked,
) -> Result<HttpResponse, ApiError> {
    let batch = fleet_node::commands::fan_out(node, caller, devices, &req.command).await?;
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
    // The members are chosen in the database: a group of ten thousand is not read
    // out only to be sent back as a list of ids.
    let devices: Vec<i64> = visible_ids(&caller)
        .filter(
            Expr::col((
                fleet_store::devices::Entity,
                fleet_store::devices::Column::Id,
            ))
            .in_subquery(in_groups(&[group])),
        )
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
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    // The command row records who sent what, durably, before the answer; the call's
    // event follows it instead of holding the answer for one more write.
    request.extensions_mut().insert(crate::audit::AuditDeferred);
    let device = parse_id("id", &path)?;
    let req = Checked::from_body(&body)?;
    let waiter = req.wait.then(|| fleet_node::commands::Waiter::new(&node));
    let saved = fleet_node::commands::send(&node, &caller, device, &req.command).await?;
    let id = saved.id;
    let ended = match waiter {
        Some(waiter) => waiter.wait(&node, &saved, req.command.timeout()).await,
        None => None,
    };
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
        None => Err(Error::FailedPrecondition(format!("command {id} has already finished")).into()),
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
