//! The device registry, as every node's API offers it: CRUD, filters, credentials
//! and group membership as seen from a device. Operators and viewers see only devices in the groups mapped to them; a
//! device outside their scope answers 404, exactly like one that does not exist.

use crate::reply::{PageRequest, Paged};
use crate::{input, reply, ApiError, Caller, Node};
use actix_web::{web, HttpRequest, HttpResponse};
use fleet_store::credentials::{generate_secret, hash_secret};
use fleet_store::replica::Replicated;
use fleet_store::{devices, groups, memberships};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Expr, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, QueryOrder, QuerySelect, SqlErr};
use serde::{Deserialize, Serialize};
use shared_proto::id::{ids_from_json, parse_id};
use shared_proto::{DeviceDraft, DevicePatch, Hardware, Nic, Software};
use utoipa::{IntoParams, ToSchema};

/// A device as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Device {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub hardware: Hardware,
    pub software: Software,
    pub nic: Vec<Nic>,
    pub status: String,
    pub description: String,
    /// Home edge id, or null when unassigned.
    pub edge_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Whether the device is connected now; present where the node tracks connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
}

/// A device with its secret, answered only at creation and rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceWithSecret {
    #[serde(flatten)]
    pub device: Device,
    pub secret: String,
}

impl From<devices::Model> for Device {
    fn from(m: devices::Model) -> Self {
        Self {
            id: m.id.to_string(),
            name: m.name,
            kind: m.device_type,
            hardware: Hardware {
                model: m.hw_model,
                sn: m.hw_sn,
            },
            software: Software {
                version: m.sw_version,
                last_update: m.sw_last_update,
            },
            nic: serde_json::from_str(&m.nics).unwrap_or_default(),
            status: m.status,
            description: m.description,
            edge_id: m.edge_id.map(|e| e.to_string()),
            created_at: m.created_at,
            updated_at: m.updated_at,
            online: None,
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
pub struct DeviceFilter {
    /// Substring of the name.
    pub name: Option<String>,
    /// Exact type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Exact status.
    pub status: Option<String>,
    /// Exact hardware model.
    pub model: Option<String>,
    /// Exact hardware serial number.
    pub sn: Option<String>,
    /// Only devices in this group (id).
    pub group: Option<String>,
    /// Only devices homed at this edge (id).
    pub edge: Option<String>,
    /// Keyset paging: only devices with a larger id (the last id of the previous
    /// page). Cheaper than `page` deep into a large fleet.
    pub after: Option<String>,
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

/// Live connection state of devices, kept by whatever holds their connections.
pub trait Presence: Send + Sync {
    fn is_online(&self, device: i64) -> bool;
}

/// Fills in `online` where the node knows it.
pub fn mark_presence(node: &Node, devices: &mut [Device]) {
    if let Some(presence) = &node.presence {
        for d in devices {
            d.online = d.id.parse().ok().map(|id| presence.is_online(id));
        }
    }
}

/// One device as the API shows it, with its live state where the node knows it.
fn live_view(node: &Node, m: devices::Model) -> Device {
    let mut device = [Device::from(m)];
    mark_presence(node, &mut device);
    let [device] = device;
    device
}

/// The condition limiting a non-admin to devices in their groups.
pub fn scope(caller: &Caller) -> Option<SimpleExpr> {
    if caller.is_admin() {
        return None;
    }
    Some(Expr::col((devices::Entity, devices::Column::Id)).in_subquery(in_groups(&caller.groups)))
}

fn in_groups(groups: &[i64]) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(memberships::Column::DeviceId)
        .from(memberships::Entity)
        .and_where(Expr::col(memberships::Column::GroupId).is_in(groups.to_vec()))
        .and_where(Expr::col(memberships::Column::Deleted).eq(false))
        .to_owned()
}

/// Live devices the caller may see.
pub fn visible_query(caller: &Caller) -> Select<devices::Entity> {
    let q = devices::Entity::find().filter(devices::Column::Deleted.eq(false));
    match scope(caller) {
        Some(cond) => q.filter(cond),
        None => q,
    }
}

/// The ids of the devices `caller` may see, as a query to run or to nest.
pub fn visible_ids(caller: &Caller) -> Select<devices::Entity> {
    visible_query(caller)
        .select_only()
        .column(devices::Column::Id)
}

/// A live device the caller may see, or 404.
pub async fn visible<C: ConnectionTrait>(
    db: &C,
    caller: &Caller,
    id: i64,
) -> Result<devices::Model, ApiError> {
    visible_query(caller)
        .filter(devices::Column::Id.eq(id))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device with id {id}")))
}

fn nics_json(nics: &[Nic]) -> String {
    serde_json::to_string(nics).unwrap_or_else(|_| "[]".into())
}

/// Maps a write that lost a race on the live (model, sn) key to 409.
fn unique_conflict(e: DbErr, model: &str, sn: &str) -> ApiError {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => duplicate(model, sn),
        _ => e.into(),
    }
}

fn duplicate(model: &str, sn: &str) -> ApiError {
    ApiError::exists(
        "hardware.sn",
        format!("a device with model {model:?} and sn {sn:?} already exists"),
    )
}

/// Which edge a node homes devices at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeEdges {
    /// The center: any registered edge, or none.
    Registry,
    /// An edge: every device registered here is homed here (`None` while the edge runs
    /// standalone and does not know its id yet).
    Fixed(Option<i64>),
}

async fn check_edge<C: ConnectionTrait>(
    db: &C,
    homes: HomeEdges,
    raw: Option<&str>,
) -> Result<Option<i64>, ApiError> {
    match homes {
        HomeEdges::Registry => {
            let Some(raw) = raw else { return Ok(None) };
            let id = parse_id("edge_id", raw)?;
            fleet_store::edges::Entity::find_by_id(id)
                .one(db)
                .await?
                .ok_or_else(|| ApiError::missing_ref("edge_id", format!("no edge with id {id}")))?;
            Ok(Some(id))
        }
        HomeEdges::Fixed(own) => match raw {
            Some(raw) if Some(parse_id("edge_id", raw)?) != own => Err(ApiError::invalid(
                "edge_id",
                "devices registered at an edge are homed at that edge",
            )),
            _ => Ok(own),
        },
    }
}

async fn live_key_taken<C: ConnectionTrait>(
    db: &C,
    key: &str,
    except: Option<i64>,
) -> Result<bool, ApiError> {
    let mut q = devices::Entity::find().filter(devices::Column::LiveKey.eq(key));
    if let Some(id) = except {
        q = q.filter(devices::Column::Id.ne(id));
    }
    Ok(q.one(db).await?.is_some())
}

/// Groups named in a request that the caller may change, all existing; the first
/// bad one is named by `field[i]`.
pub async fn writable_groups<C: ConnectionTrait>(
    db: &C,
    caller: &Caller,
    field: &str,
    raw: &[serde_json::Value],
) -> Result<Vec<i64>, ApiError> {
    let ids = ids_from_json(field, raw)?;
    let live: Vec<i64> = groups::Entity::find()
        .filter(groups::Column::Id.is_in(ids.clone()))
        .filter(groups::Column::Deleted.eq(false))
        .select_only()
        .column(groups::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    for (i, id) in ids.iter().enumerate() {
        if !live.contains(id) || !caller.in_group(*id) {
            return Err(ApiError::missing_ref(
                format!("{field}[{i}]"),
                format!("no group with id {id}"),
            ));
        }
    }
    Ok(ids)
}

/// Creates a device (and its memberships) in the caller's transaction. `id` is used
/// when given (CSV import of existing ids), otherwise a new snowflake.
pub async fn create_device<C: ConnectionTrait>(
    conn: &C,
    node: &Node,
    caller: &Caller,
    draft: DeviceDraft,
    id: Option<i64>,
) -> Result<(devices::Model, String), ApiError> {
    caller.require_writer()?;
    draft.validate()?;
    let group_values: Vec<serde_json::Value> = draft
        .groups
        .iter()
        .cloned()
        .map(serde_json::Value::String)
        .collect();
    let group_ids = writable_groups(conn, caller, "groups", &group_values).await?;
    if !caller.is_admin() && group_ids.is_empty() {
        return Err(ApiError::invalid(
            "groups",
            "must name at least one of your groups, or you could not see the new device",
        ));
    }
    let edge_id = check_edge(conn, node.home_edges, draft.edge_id.as_deref()).await?;
    let key = devices::live_key(&draft.hardware.model, &draft.hardware.sn);
    if live_key_taken(conn, &key, None).await? {
        return Err(duplicate(&draft.hardware.model, &draft.hardware.sn));
    }
    let id = match id {
        Some(id) => {
            if devices::Entity::find_by_id(id).one(conn).await?.is_some() {
                return Err(ApiError::exists("id", format!("device id {id} is taken")));
            }
            id
        }
        None => node.replica.new_id(),
    };
    let secret = generate_secret();
    let now = fleet_store::now_ms();
    let row = devices::Model {
        id,
        name: draft.name,
        device_type: draft.kind,
        hw_model: draft.hardware.model.clone(),
        hw_sn: draft.hardware.sn.clone(),
        sw_version: draft.software.version,
        sw_last_update: draft.software.last_update,
        nics: nics_json(&draft.nic),
        status: draft.status,
        description: draft.description,
        edge_id,
        secret_hash: hash_secret(&secret),
        live_key: Some(key),
        created_at: now,
        updated_at: now,
        hlc: 0,
        origin: 0,
        deleted: false,
        field_stamps: String::new(),
    };
    let saved = node
        .replica
        .insert(conn, row)
        .await
        .map_err(|e| unique_conflict(e, &draft.hardware.model, &draft.hardware.sn))?;
    for g in group_ids {
        memberships::add(conn, &node.replica, g, &[saved.id]).await?;
    }
    Ok((saved, secret))
}

/// Applies a partial update in the caller's transaction.
pub async fn patch_device<C: ConnectionTrait>(
    conn: &C,
    node: &Node,
    old: &devices::Model,
    patch: DevicePatch,
) -> Result<devices::Model, ApiError> {
    patch.validate()?;
    let mut new = old.clone();
    if let Some(v) = patch.name {
        new.name = v;
    }
    if let Some(v) = patch.kind {
        new.device_type = v;
    }
    if let Some(hw) = patch.hardware {
        if let Some(v) = hw.model {
            new.hw_model = v;
        }
        if let Some(v) = hw.sn {
            new.hw_sn = v;
        }
    }
    if let Some(sw) = patch.software {
        if let Some(v) = sw.version {
            new.sw_version = v;
        }
        if let Some(v) = sw.last_update {
            new.sw_last_update = v;
        }
    }
    if let Some(nics) = patch.nic {
        new.nics = nics_json(&nics);
    }
    if let Some(v) = patch.status {
        new.status = v;
    }
    if let Some(v) = patch.description {
        new.description = v;
    }
    if let Some(edge) = patch.edge_id {
        new.edge_id = check_edge(conn, node.home_edges, edge.as_deref()).await?;
    }
    let key = devices::live_key(&new.hw_model, &new.hw_sn);
    if Some(&key) != old.live_key.as_ref() && live_key_taken(conn, &key, Some(old.id)).await? {
        return Err(duplicate(&new.hw_model, &new.hw_sn));
    }
    new.live_key = Some(key);
    if new == *old {
        return Ok(new);
    }
    new.updated_at = fleet_store::now_ms();
    node.replica
        .update(conn, old, new.clone())
        .await
        .map_err(|e| unique_conflict(e, &new.hw_model, &new.hw_sn))
}

/// Tombstones a device and its memberships in the caller's transaction.
pub async fn delete_device<C: ConnectionTrait>(
    conn: &C,
    node: &Node,
    old: &devices::Model,
) -> Result<(), ApiError> {
    memberships::remove_where(
        conn,
        &node.replica,
        memberships::Column::DeviceId.eq(old.id),
    )
    .await?;
    let mut gone = old.clone();
    gone.updated_at = fleet_store::now_ms();
    gone.tombstone();
    node.replica.update(conn, old, gone).await?;
    Ok(())
}

/// Lists devices matching `f`, newest last.
pub async fn query(
    db: &impl ConnectionTrait,
    caller: &Caller,
    f: DeviceFilter,
) -> Result<Paged<Device>, ApiError> {
    let page = PageRequest::new(f.page, f.per_page)?;
    let mut q = visible_query(caller);
    if let Some(v) = f.name {
        q = q.filter(devices::Column::Name.contains(v));
    }
    if let Some(v) = f.kind {
        q = q.filter(devices::Column::DeviceType.eq(v));
    }
    if let Some(v) = f.status {
        q = q.filter(devices::Column::Status.eq(v));
    }
    if let Some(v) = f.model {
        q = q.filter(devices::Column::HwModel.eq(v));
    }
    if let Some(v) = f.sn {
        q = q.filter(devices::Column::HwSn.eq(v));
    }
    if let Some(v) = f.group {
        let g = parse_id("group", &v)?;
        q = q
            .filter(Expr::col((devices::Entity, devices::Column::Id)).in_subquery(in_groups(&[g])));
    }
    if let Some(v) = f.edge {
        q = q.filter(devices::Column::EdgeId.eq(parse_id("edge", &v)?));
    }
    let total = crate::reply::count(db, q.clone()).await?;
    let (q, offset) = match f.after {
        Some(v) => (q.filter(devices::Column::Id.gt(parse_id("after", &v)?)), 0),
        None => (q, page.offset()),
    };
    let rows = q
        .order_by_asc(devices::Column::Id)
        .offset(offset)
        .limit(page.per_page)
        .all(db)
        .await?;
    Ok(page.wrap(rows.into_iter().map(Device::from).collect(), total))
}

/// List devices, filtered and paginated.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceFilter),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of devices", body = inline(Paged<Device>))))]
pub async fn list(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let f: DeviceFilter = input::query(&req)?;
    let mut page = query(&node.db, &caller, f).await?;
    mark_presence(&node, &mut page.items);
    Ok(reply::ok(page))
}

/// Register a device. The answer carries its secret; it is never shown again.
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = DeviceDraft,
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = DeviceWithSecret),
              (status = 409, description = "Duplicate (model, sn)")))]
pub async fn create(
    node: web::Data<Node>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let draft: DeviceDraft = input::json(&body)?;
    let (core, who) = (&**node, &caller);
    let (m, secret) = node
        .transact(|txn| {
            let draft = draft.clone();
            async move { create_device(&*txn, core, who, draft, None).await }
        })
        .await?;
    let id = m.id;
    let device = live_view(&node, m);
    Ok(reply::created(id, DeviceWithSecret { device, secret }))
}

/// Read one device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "The device", body = Device), (status = 404, description = "No such device")))]
pub async fn get(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    Ok(reply::ok(live_view(
        &node,
        visible(&node.db, &caller, id).await?,
    )))
}

/// After a committed change of a device's row: a live session it opened with what
/// no longer holds (secret, home edge, existence) ends now.
fn recheck(node: &Node, device: i64) {
    if let Some(dispatch) = &node.dispatch {
        dispatch.recheck(device);
    }
}

/// Change some fields of a device; absent fields stay as they are.
#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices", request_body = DevicePatch,
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "The updated device", body = Device)))]
pub async fn update(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let id = parse_id("id", &path)?;
    let patch: DevicePatch = input::json(&body)?;
    let (core, who) = (&**node, &caller);
    let m = node
        .transact(|txn| {
            let patch = patch.clone();
            async move {
                let old = visible(&*txn, who, id).await?;
                patch_device(&*txn, core, &old, patch).await
            }
        })
        .await?;
    recheck(&node, id);
    Ok(reply::ok(Device::from(m)))
}

/// Delete a device (a tombstone that replicates) and its memberships.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "Deleted")))]
pub async fn delete(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let id = parse_id("id", &path)?;
    let (core, who) = (&**node, &caller);
    node.transact(|txn| async move {
        let old = visible(&*txn, who, id).await?;
        delete_device(&*txn, core, &old).await
    })
    .await?;
    recheck(&node, id);
    Ok(reply::ok(serde_json::json!({"id": id.to_string()})))
}

/// Issue a new secret for a device; the old one stops working.
#[utoipa::path(post, path = "/api/v1/devices/{id}/secret", tag = "devices",
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "The new secret", body = DeviceWithSecret)))]
pub async fn rotate_secret(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let id = parse_id("id", &path)?;
    let secret = generate_secret();
    let (core, who, secret_hash) = (&**node, &caller, hash_secret(&secret));
    let m = node
        .transact(|txn| {
            let secret_hash = secret_hash.clone();
            async move {
                let old = visible(&*txn, who, id).await?;
                let mut new = old.clone();
                new.secret_hash = secret_hash;
                new.updated_at = fleet_store::now_ms();
                Ok::<_, ApiError>(core.replica.update(&*txn, &old, new).await?)
            }
        })
        .await?;
    recheck(&node, id);
    Ok(reply::ok(DeviceWithSecret {
        device: m.into(),
        secret,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GroupIds {
    #[schema(value_type = Vec<String>)]
    pub group_ids: Vec<serde_json::Value>,
}

async fn group_ids_view(
    db: &impl ConnectionTrait,
    caller: &Caller,
    device: i64,
) -> Result<Vec<String>, ApiError> {
    Ok(memberships::groups_of(db, device)
        .await?
        .into_iter()
        .filter(|g| caller.in_group(*g))
        .map(|g| g.to_string())
        .collect())
}

/// The groups a device is in (those the caller may see).
#[utoipa::path(get, path = "/api/v1/devices/{id}/groups", tag = "memberships",
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "Group ids", body = Vec<String>)))]
pub async fn groups_of(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    visible(&node.db, &caller, id).await?;
    Ok(reply::ok(group_ids_view(&node.db, &caller, id).await?))
}

/// Put a device in more groups.
#[utoipa::path(post, path = "/api/v1/devices/{id}/groups", tag = "memberships", request_body = GroupIds,
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "The device's group ids now", body = Vec<String>)))]
pub async fn join_groups(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let id = parse_id("id", &path)?;
    let req: GroupIds = input::json(&body)?;
    let (core, who, wanted) = (&**node, &caller, &req.group_ids);
    let now = node
        .transact(|txn| async move {
            visible(&*txn, who, id).await?;
            for g in writable_groups(&*txn, who, "group_ids", wanted).await? {
                memberships::add(&*txn, &core.replica, g, &[id]).await?;
            }
            group_ids_view(&*txn, who, id).await
        })
        .await?;
    Ok(reply::ok(now))
}

/// Take a device out of groups.
#[utoipa::path(delete, path = "/api/v1/devices/{id}/groups", tag = "memberships", request_body = GroupIds,
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "The device's group ids now", body = Vec<String>)))]
pub async fn leave_groups(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let id = parse_id("id", &path)?;
    let req: GroupIds = input::json(&body)?;
    let groups = ids_from_json("group_ids", &req.group_ids)?;
    if let Some((i, g)) = groups
        .iter()
        .enumerate()
        .find(|(_, g)| !caller.in_group(**g))
    {
        return Err(ApiError::missing_ref(
            format!("group_ids[{i}]"),
            format!("no group with id {g}"),
        ));
    }
    let (core, who, groups) = (&**node, &caller, &groups);
    let now = node
        .transact(|txn| async move {
            visible(&*txn, who, id).await?;
            memberships::remove_where(
                &*txn,
                &core.replica,
                memberships::Column::DeviceId
                    .eq(id)
                    .and(memberships::Column::GroupId.is_in(groups.clone())),
            )
            .await?;
            group_ids_view(&*txn, who, id).await
        })
        .await?;
    Ok(reply::ok(now))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/devices")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/api/v1/devices/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    )
    .service(web::resource("/api/v1/devices/{id}/secret").route(web::post().to(rotate_secret)))
    .service(
        web::resource("/api/v1/devices/{id}/groups")
            .route(web::get().to(groups_of))
            .route(web::post().to(join_groups))
            .route(web::delete().to(leave_groups)),
    );
}
