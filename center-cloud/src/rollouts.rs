//! Rollouts over HTTP: make one, read how it goes (per state, wave and edge, and
//! device by device), pause, resume and abort it. Writers (admins and operators)
//! make and steer rollouts, every signed-in caller reads them; a scoped operator
//! sees and steers only those over one of their groups or devices they all see.
//! The rules are the core's (`fleet_node::rollouts`); the center moves rollouts
//! along ([`drive_forever`]), the edges run their waves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::rollouts::{self, Action, Counts, Draft, Target, MAX_DEVICE_IDS};
use fleet_node::Node;
use fleet_store::rollout_devices::{self, State as DeviceState};
use fleet_store::rollouts as table;
use operator_api::reply::{PageRequest, Paged};
use operator_api::{input, reply, ApiError, Caller};
use serde::{Deserialize, Serialize};
use shared_proto::id::{id_from_json, ids_from_json, parse_id};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    pub name: String,
    #[schema(value_type = String)]
    pub artifact_id: serde_json::Value,
    /// Exactly one of `{"group_id": …}`, `{"edge_id": …}` (admins) or
    /// `{"device_ids": […]}`.
    #[schema(value_type = Object)]
    pub target: serde_json::Map<String, serde_json::Value>,
    /// Cumulative wave sizes, in percent or counts, e.g. `["1%", "10%", "100%"]`;
    /// the last wave takes every device left [default: one wave].
    #[serde(default)]
    pub waves: Vec<String>,
    /// Share of a wave that must succeed before the next opens [default: 95].
    pub success_threshold_pct: Option<i64>,
    /// Share of a wave whose failure pauses the rollout [default: 5].
    pub error_threshold_pct: Option<i64>,
    /// How long one device's update may take, from its start [default: 3600].
    pub device_timeout_s: Option<i64>,
    /// Updates under way at once at each edge, at most [default: 100].
    pub max_in_flight_per_edge: Option<i64>,
    /// When it starts, ms since the epoch [default: now].
    pub start_at: Option<i64>,
}

impl RolloutRequest {
    fn draft(self) -> Result<Draft, ApiError> {
        let artifact_id = id_from_json("artifact_id", &self.artifact_id)?;
        let target = match self.target.iter().next() {
            _ if self.target.len() != 1 => None,
            Some((key, value)) => match key.as_str() {
                "group_id" => Some(Target::Group(id_from_json("target.group_id", value)?)),
                "edge_id" => Some(Target::Edge(id_from_json("target.edge_id", value)?)),
                "device_ids" => {
                    let list = value.as_array().ok_or_else(|| {
                        ApiError::invalid("target.device_ids", "must be a list of device ids")
                    })?;
                    if list.is_empty() || list.len() > MAX_DEVICE_IDS {
                        return Err(ApiError::invalid(
                            "target.device_ids",
                            format!("must list 1 to {MAX_DEVICE_IDS} devices"),
                        ));
                    }
                    let mut ids = ids_from_json("target.device_ids", list)?;
                    ids.sort_unstable();
                    ids.dedup();
                    Some(Target::Devices(ids))
                }
                _ => None,
            },
            None => None,
        };
        let target = target.ok_or_else(|| {
            ApiError::invalid(
                "target",
                "must be exactly one of {\"group_id\": …}, {\"edge_id\": …} or {\"device_ids\": […]}",
            )
        })?;
        Ok(Draft {
            name: self.name,
            artifact_id,
            target,
            waves: self.waves,
            success_threshold_pct: self.success_threshold_pct,
            error_threshold_pct: self.error_threshold_pct,
            device_timeout_s: self.device_timeout_s,
            max_in_flight_per_edge: self.max_in_flight_per_edge,
            start_at: self.start_at,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaveCounts {
    /// 1 for the first wave.
    pub wave: i32,
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeCounts {
    /// The devices' home edge (`null`: homed nowhere now).
    pub edge_id: Option<String>,
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rollout {
    pub id: String,
    pub name: String,
    pub artifact_id: String,
    pub version: String,
    #[schema(value_type = Object)]
    pub target: serde_json::Value,
    pub waves: Vec<String>,
    pub success_threshold_pct: i32,
    pub error_threshold_pct: i32,
    pub device_timeout_s: i64,
    pub max_in_flight_per_edge: i32,
    pub start_at: i64,
    /// scheduled, running, paused, completed or aborted.
    pub state: String,
    /// The wave under way, 1 for the first.
    pub wave: i32,
    /// Why it paused or ended, when it did on its own or by an operator.
    pub reason: String,
    /// Devices by update state: queued, downloading, installing, rebooting,
    /// succeeded, failed, timed_out (and `total`).
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, u64>,
    pub per_wave: Vec<WaveCounts>,
    pub per_edge: Vec<EdgeCounts>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn with_total(mut counts: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    for s in DeviceState::ALL {
        counts.entry(s.as_str().to_string()).or_insert(0);
    }
    let total = counts.values().sum();
    counts.insert("total".into(), total);
    counts
}

impl Rollout {
    fn new(m: table::Model, counts: Counts) -> Self {
        let version = serde_json::from_str::<serde_json::Value>(&m.install)
            .ok()
            .and_then(|i| {
                i.get("version")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        Self {
            id: m.id.to_string(),
            name: m.name,
            artifact_id: m.artifact_id.to_string(),
            version,
            target: serde_json::from_str(&m.target).unwrap_or_default(),
            waves: serde_json::from_str(&m.waves).unwrap_or_default(),
            success_threshold_pct: m.success_threshold_pct,
            error_threshold_pct: m.error_threshold_pct,
            device_timeout_s: m.device_timeout_s,
            max_in_flight_per_edge: m.max_in_flight_per_edge,
            start_at: m.start_at,
            state: m.state,
            wave: m.wave.saturating_add(1),
            reason: m.reason,
            counts: with_total(counts.total),
            per_wave: counts
                .waves
                .into_iter()
                .map(|(wave, c)| WaveCounts {
                    wave: wave.saturating_add(1),
                    counts: with_total(c),
                })
                .collect(),
            per_edge: counts
                .edges
                .into_iter()
                .map(|(edge, c)| EdgeCounts {
                    edge_id: edge.map(|e| e.to_string()),
                    counts: with_total(c),
                })
                .collect(),
            created_by: m.created_by,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

async fn view(node: &Node, m: table::Model) -> Result<Rollout, ApiError> {
    let counts = rollouts::counts(&node.db, m.id).await?;
    Ok(Rollout::new(m, counts))
}

/// Make a rollout: its devices are spread over the waves now; it starts at
/// `start_at`.
#[utoipa::path(post, path = "/api/v1/rollouts", tag = "rollouts", request_body = RolloutRequest,
    security(("bearer" = [])),
    responses((status = 201, description = "Made", body = Rollout),
              (status = 400, description = "A bad field, named"),
              (status = 404, description = "No such artifact, group or device"),
              (status = 409, description = "No device of the target can take the artifact")))]
pub async fn create(
    node: web::Data<Node>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let draft = input::json::<RolloutRequest>(&body)?.draft()?;
    let made = rollouts::create(&node, &caller, draft).await?;
    let id = made.id;
    Ok(reply::created(id, view(&node, made).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

/// The rollouts the caller sees, newest first.
#[utoipa::path(get, path = "/api/v1/rollouts", tag = "rollouts", params(Page), security(("bearer" = [])),
    responses((status = 200, description = "A page of rollouts", body = inline(Paged<Rollout>))))]
pub async fn list(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let p: Page = input::query(&req)?;
    let page = PageRequest::new(p.page, p.per_page)?;
    let (rows, total) = rollouts::list(&node.db, &caller, page.offset(), page.per_page).await?;
    let mut items = Vec::with_capacity(rows.len());
    for m in rows {
        items.push(view(&node, m).await?);
    }
    Ok(reply::ok(page.wrap(items, total)))
}

/// One rollout, with its counts by device state, per wave and per edge.
#[utoipa::path(get, path = "/api/v1/rollouts/{id}", tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")), security(("bearer" = [])),
    responses((status = 200, description = "The rollout", body = Rollout),
              (status = 404, description = "No such rollout")))]
pub async fn get(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    let m = rollouts::find(&node.db, &caller, id).await?;
    Ok(reply::ok(view(&node, m).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeviceFilter {
    /// Only devices in this state.
    pub state: Option<String>,
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceUpdate {
    pub device_id: String,
    /// 1 for the first wave.
    pub wave: i32,
    pub state: String,
    /// Percent of the current stage.
    pub progress: i32,
    pub reason: String,
    /// The last lines the device reported.
    pub log: String,
    pub command_id: Option<String>,
    pub started_at: i64,
    pub finished_at: i64,
    pub updated_at: i64,
}

impl From<rollout_devices::Model> for DeviceUpdate {
    fn from(m: rollout_devices::Model) -> Self {
        Self {
            device_id: m.device_id.to_string(),
            wave: m.wave.saturating_add(1),
            state: m.state,
            progress: m.progress,
            reason: m.reason,
            log: m.log,
            command_id: m.command_id.map(|c| c.to_string()),
            started_at: m.started_at,
            finished_at: m.finished_at,
            updated_at: m.updated_at,
        }
    }
}

/// A rollout's devices with their update state and last log lines.
#[utoipa::path(get, path = "/api/v1/rollouts/{id}/devices", tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id"), DeviceFilter), security(("bearer" = [])),
    responses((status = 200, description = "A page of device updates", body = inline(Paged<DeviceUpdate>)),
              (status = 404, description = "No such rollout")))]
pub async fn devices(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    let f: DeviceFilter = input::query(&req)?;
    let state = match f.state.as_deref() {
        None => None,
        Some(s) => Some(DeviceState::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "state",
                "must be queued, downloading, installing, rebooting, succeeded, failed or timed_out",
            )
        })?),
    };
    let page = PageRequest::new(f.page, f.per_page)?;
    rollouts::find(&node.db, &caller, id).await?;
    let (rows, total) =
        rollouts::devices_of(&node.db, id, state, page.offset(), page.per_page).await?;
    let items: Vec<DeviceUpdate> = rows.into_iter().map(DeviceUpdate::from).collect();
    Ok(reply::ok(page.wrap(items, total)))
}

async fn act(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    action: Action,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    let m = rollouts::act(&node, &caller, id, action).await?;
    Ok(reply::ok(view(&node, m).await?))
}

/// Pause a rollout: no new device starts; those under way go on.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/pause", tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")), security(("bearer" = [])),
    responses((status = 200, description = "Paused", body = Rollout),
              (status = 409, description = "Completed or aborted already")))]
pub async fn pause(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(node, caller, path, Action::Pause).await
}

/// Resume a paused rollout. The failures of the wave it paused in are accepted: the
/// wave goes on to its end, and the next opens then.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/resume", tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")), security(("bearer" = [])),
    responses((status = 200, description = "Running (or scheduled) again", body = Rollout),
              (status = 409, description = "Completed or aborted already")))]
pub async fn resume(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(node, caller, path, Action::Resume).await
}

/// Abort a rollout for good: no device starts any more; those under way finish.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/abort", tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")), security(("bearer" = [])),
    responses((status = 200, description = "Aborted", body = Rollout),
              (status = 409, description = "Completed or aborted already")))]
pub async fn abort(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(node, caller, path, Action::Abort).await
}

/// How often rollouts are looked at: starts, waves, pauses and completions.
const DRIVE_EVERY: Duration = Duration::from_secs(1);

/// Moves the rollouts along until the node stops.
pub async fn drive_forever(node: Arc<Node>) {
    let mut tick = tokio::time::interval(DRIVE_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = rollouts::drive::tick(&node).await {
            tracing::warn!(error = %e, "moving rollouts along failed");
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/rollouts")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .route("/api/v1/rollouts/{id}", web::get().to(get))
    .route("/api/v1/rollouts/{id}/devices", web::get().to(devices))
    .route("/api/v1/rollouts/{id}/pause", web::post().to(pause))
    .route("/api/v1/rollouts/{id}/resume", web::post().to(resume))
    .route("/api/v1/rollouts/{id}/abort", web::post().to(abort));
}
