//! Edge clouds registered at the center (admin only). Registration hands out the
//! edge's id, its own snowflake worker id and a one-time secret.

use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::Error;
use fleet_node::Node;
use fleet_store::credentials::{generate_secret, hash_secret};
use fleet_store::{devices, edges as table, ids::MAX_WORKER, link_cursors};
use operator_api::reply::{PageRequest, Paged};
use operator_api::{input, reply, ApiError, Caller};
use sea_orm::entity::prelude::*;
use sea_orm::{PaginatorTrait, QueryOrder, QuerySelect, Set};
use serde::{Deserialize, Serialize};
use shared_proto::device::check_text;
use shared_proto::id::parse_id;
use utoipa::{IntoParams, ToSchema};

use crate::link::Links;

#[derive(Debug, Serialize, ToSchema)]
pub struct Edge {
    pub id: String,
    pub name: String,
    pub site: String,
    /// Snowflake worker id the edge must use for the rows it creates.
    pub worker_id: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The edge's federation link to the center.
    pub link: EdgeLink,
    /// Changes this edge sent that the center refused (authoring rules, clock bound);
    /// each refusal is also a `link.change_refused` event.
    pub refused_changes: i64,
    /// How far the edge's wall clock ran ahead of the center's (negative: behind) when
    /// its link came up; absent while the link is down.
    pub clock_skew_ms: Option<i64>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct EdgeLink {
    /// Whether the link is up now.
    pub online: bool,
    /// When the current link came up (ms since the epoch), while it is up.
    pub since_ms: Option<i64>,
    /// When the edge last delivered or acknowledged changes (ms; 0 for never).
    pub last_seen_ms: i64,
    /// Entries of the center's change log the edge has not acknowledged yet (some may
    /// be outside its scope and are only skipped).
    pub pending_to_edge: i64,
    /// How far the center has merged the edge's change log (its cursor there).
    pub merged_from_edge: i64,
}

/// An edge with the state of its link, as the link lease in the shared database
/// says, so that every center replica shows the same whichever holds the link.
async fn with_link(node: &Node, m: table::Model) -> Result<Edge, ApiError> {
    let lease = fleet_store::link_leases::live(&node.db, m.id).await?;
    let worker = m.worker_id;
    let cursor = link_cursors::get(&node.db, worker).await?;
    let head = fleet_store::sync::head(&node.db).await?;
    let mut edge = Edge::from(m);
    edge.link = EdgeLink {
        online: lease.is_some(),
        since_ms: lease.as_ref().map(|l| l.since_ms),
        last_seen_ms: cursor.updated_at,
        pending_to_edge: (head - cursor.acked).max(0),
        merged_from_edge: cursor.applied,
    };
    edge.refused_changes = fleet_store::link_refusals::count(&node.db, worker).await?;
    edge.clock_skew_ms = lease.map(|l| l.clock_skew_ms);
    Ok(edge)
}

/// An edge with its secret, answered only at registration and rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeWithSecret {
    #[serde(flatten)]
    pub edge: Edge,
    pub secret: String,
}

impl From<table::Model> for Edge {
    fn from(m: table::Model) -> Self {
        Self {
            id: m.id.to_string(),
            name: m.name,
            site: m.site,
            worker_id: m.worker_id,
            created_at: m.created_at,
            updated_at: m.updated_at,
            link: EdgeLink::default(),
            refused_changes: 0,
            clock_skew_ms: None,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewEdge {
    pub name: String,
    #[serde(default)]
    pub site: String,
}

/// A partial update of an edge: absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct EdgePatch {
    pub name: Option<String>,
    pub site: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EdgeFilter {
    pub site: Option<String>,
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

/// The center is worker 1; edges get 2..=1023.
const FIRST_EDGE_WORKER: i64 = 2;

use fleet_store::worker_leases::{self, EDGE_HIGH_WATER as WORKER_HIGH_WATER};

/// The next worker id for a new edge: above every one ever issued, so a deleted
/// edge's id (which its stamps and rows carry for good) never names another edge,
/// and never one a center replica leased.
async fn next_worker<C: ConnectionTrait>(db: &C) -> Result<i64, ApiError> {
    // Locked first: two replicas registering edges at once must not issue one id.
    let recorded = fleet_store::settings::get_for_update(db, WORKER_HIGH_WATER)
        .await?
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let used: Option<Option<i64>> = table::Entity::find()
        .select_only()
        .column_as(table::Column::WorkerId.max(), "worker")
        .into_tuple()
        .one(db)
        .await?;
    let highest = used.flatten().unwrap_or(0).max(recorded);
    let mut next = highest.saturating_add(1).max(FIRST_EDGE_WORKER);
    // Center replicas lease ids from the top down; an id one ever leased stays theirs.
    while next <= MAX_WORKER && worker_leases::ever_leased(db, next).await? {
        next += 1;
    }
    if next > MAX_WORKER {
        return Err(
            Error::FailedPrecondition("all edge worker ids have been issued".into()).into(),
        );
    }
    fleet_store::settings::put(db, WORKER_HIGH_WATER, &next.to_string()).await?;
    Ok(next)
}

pub async fn find<C: ConnectionTrait>(db: &C, id: i64) -> Result<table::Model, ApiError> {
    table::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no edge with id {id}")))
}

/// Checks the fields given: a name of 1 to 128 characters, a site of at most 128.
fn check_fields(name: Option<&str>, site: Option<&str>) -> Result<(), ApiError> {
    if let Some(name) = name {
        check_text("name", name, 128, true)?;
    }
    if let Some(site) = site {
        check_text("site", site, 128, false)?;
    }
    Ok(())
}

/// 409 naming `name` when another edge has it.
async fn name_free<C: ConnectionTrait>(db: &C, name: &str) -> Result<(), ApiError> {
    let taken = table::Entity::find()
        .filter(table::Column::Name.eq(name))
        .one(db)
        .await?;
    match taken {
        Some(_) => Err(ApiError::exists(
            "name",
            format!("edge {name} already exists"),
        )),
        None => Ok(()),
    }
}

/// Register an edge cloud. The answer carries its secret; it is never shown again.
#[utoipa::path(post, path = "/api/v1/edges", tag = "edges", request_body = NewEdge,
    security(("bearer" = [])),
    responses((status = 201, description = "Registered", body = EdgeWithSecret),
              (status = 409, description = "Name taken or no worker ids left")))]
pub async fn create(
    node: web::Data<Node>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let new: NewEdge = input::json(&body)?;
    check_fields(Some(&new.name), Some(&new.site))?;
    let secret = generate_secret();
    let (core, new, secret_hash) = (&**node, &new, hash_secret(&secret));
    let (id, m) = node
        .transact(|txn| {
            let secret_hash = secret_hash.clone();
            async move {
                name_free(&*txn, &new.name).await?;
                let worker_id = next_worker(&*txn).await?;
                let now = fleet_store::now_ms();
                let id = core.replica.new_id();
                let m = table::ActiveModel {
                    id: Set(id),
                    name: Set(new.name.clone()),
                    site: Set(new.site.clone()),
                    worker_id: Set(worker_id),
                    secret_hash: Set(secret_hash.clone()),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(&*txn)
                .await?;
                Ok::<_, ApiError>((id, m))
            }
        })
        .await?;
    Ok(reply::created(
        id,
        EdgeWithSecret {
            edge: m.into(),
            secret,
        },
    ))
}

/// List edges.
#[utoipa::path(get, path = "/api/v1/edges", tag = "edges", params(EdgeFilter),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of edges", body = inline(Paged<Edge>))))]
pub async fn list(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let f: EdgeFilter = input::query(&req)?;
    let page = PageRequest::new(f.page, f.per_page)?;
    let mut q = table::Entity::find();
    if let Some(site) = f.site {
        q = q.filter(table::Column::Site.eq(site));
    }
    let total = operator_api::reply::count(&node.db, q.clone()).await?;
    let rows = q
        .order_by_asc(table::Column::Name)
        .offset(page.offset())
        .limit(page.per_page)
        .all(&node.db)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(with_link(&node, row).await?);
    }
    Ok(reply::ok(page.wrap(items, total)))
}

/// Read one edge.
#[utoipa::path(get, path = "/api/v1/edges/{id}", tag = "edges",
    params(("id" = String, Path, description = "Edge id")), security(("bearer" = [])),
    responses((status = 200, description = "The edge", body = Edge), (status = 404, description = "No such edge")))]
pub async fn get(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = parse_id("id", &path)?;
    let edge = find(&node.db, id).await?;
    Ok(reply::ok(with_link(&node, edge).await?))
}

/// Rename an edge or move it to another site. Its id, worker id, secret and link stay
/// as they are: the edge itself knows neither name nor site.
#[utoipa::path(patch, path = "/api/v1/edges/{id}", tag = "edges", request_body = EdgePatch,
    params(("id" = String, Path, description = "Edge id")), security(("bearer" = [])),
    responses((status = 200, description = "The updated edge", body = Edge),
              (status = 404, description = "No such edge"),
              (status = 409, description = "Name taken")))]
pub async fn update(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = parse_id("id", &path)?;
    let patch: EdgePatch = input::json(&body)?;
    check_fields(patch.name.as_deref(), patch.site.as_deref())?;
    let patch = &patch;
    let m = node
        .transact(|txn| async move {
            let edge = find(&*txn, id).await?;
            if let Some(name) = patch.name.as_deref().filter(|n| *n != edge.name) {
                name_free(&*txn, name).await?;
            }
            let mut active: table::ActiveModel = edge.into();
            if let Some(name) = &patch.name {
                active.name = Set(name.clone());
            }
            if let Some(site) = &patch.site {
                active.site = Set(site.clone());
            }
            active.updated_at = Set(fleet_store::now_ms());
            Ok::<_, ApiError>(active.update(&*txn).await?)
        })
        .await?;
    Ok(reply::ok(with_link(&node, m).await?))
}

/// Delete an edge. Refused while devices are homed at it: move them first.
#[utoipa::path(delete, path = "/api/v1/edges/{id}", tag = "edges",
    params(("id" = String, Path, description = "Edge id")), security(("bearer" = [])),
    responses((status = 200, description = "Deleted"), (status = 409, description = "Devices are homed here")))]
pub async fn delete(
    node: web::Data<Node>,
    links: web::Data<Links>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = parse_id("id", &path)?;
    node.transact(|txn| async move {
        let edge = find(&*txn, id).await?;
        let homed = devices::Entity::find()
            .filter(devices::Column::EdgeId.eq(id))
            .filter(devices::Column::Deleted.eq(false))
            .count(&*txn)
            .await?;
        if homed > 0 {
            return Err(ApiError(Error::FailedPrecondition(format!(
                "{homed} devices are homed at this edge; move or delete them first"
            ))));
        }
        table::Entity::delete_by_id(id).exec(&*txn).await?;
        // A later edge given the same worker id starts afresh (from a snapshot), and
        // compaction stops waiting for this one.
        fleet_store::link_cursors::Entity::delete_by_id(edge.worker_id)
            .exec(&*txn)
            .await?;
        fleet_store::link_leases::revoke(&*txn, id).await?;
        Ok(())
    })
    .await?;
    links.close(id);
    Ok(reply::ok(serde_json::json!({"id": id.to_string()})))
}

/// Issue a new secret for an edge; the old one stops working, and the edge's live
/// link closes at once (it links again with the new secret).
#[utoipa::path(post, path = "/api/v1/edges/{id}/secret", tag = "edges",
    params(("id" = String, Path, description = "Edge id")), security(("bearer" = [])),
    responses((status = 200, description = "The new secret", body = EdgeWithSecret)))]
pub async fn rotate_secret(
    node: web::Data<Node>,
    links: web::Data<Links>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = parse_id("id", &path)?;
    let edge = find(&node.db, id).await?;
    let secret = generate_secret();
    let mut active: table::ActiveModel = edge.into();
    active.secret_hash = Set(hash_secret(&secret));
    active.updated_at = Set(fleet_store::now_ms());
    let active = &active;
    let m = node
        .transact(|txn| async move {
            let m = active.clone().update(&*txn).await?;
            // Another replica holding the link closes it at its next lease renewal.
            fleet_store::link_leases::revoke(&*txn, id).await?;
            Ok::<_, ApiError>(m)
        })
        .await?;
    links.close(id);
    Ok(reply::ok(EdgeWithSecret {
        edge: m.into(),
        secret,
    }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/edges")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/api/v1/edges/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    )
    .service(web::resource("/api/v1/edges/{id}/secret").route(web::post().to(rotate_secret)))
    .route("/api/v1/edges/{id}/commands", web::post().to(commands));
}

/// Send a command to every device homed at an edge (that the caller can reach), as
/// one batch; follow it at `GET /api/v1/batches/{id}`.
#[utoipa::path(post, path = "/api/v1/edges/{id}/commands", tag = "commands",
    request_body = operator_api::commands::CommandRequest,
    params(("id" = String, Path, description = "Edge id")), security(("bearer" = [])),
    responses((status = 202, description = "Accepted: the batch", body = operator_api::commands::Batch)))]
pub async fn commands(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let id = parse_id("id", &path)?;
    let req = operator_api::commands::Checked::from_body(&body)?;
    find(&node.db, id).await?;
    let homed: Vec<i64> = fleet_node::devices::visible_ids(&caller)
        .filter(devices::Column::EdgeId.eq(id))
        .into_tuple()
        .all(&node.db)
        .await?;
    operator_api::commands::fan_out(&node, &caller, homed, &req).await
}
