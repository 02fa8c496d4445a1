//! The device registry, as every node's API offers it: CRUD, filters, credentials
//! and group membership as seen from a device. Operators and viewers see only
//! devices in the groups mapped to them; a device outside their scope answers 404,
//! exactly like one that does not exist (`fleet_node::devices` holds the rules).

use crate::reply::{PageRequest, Paged};
use crate::{input, reply, ApiError, Caller, Node};
use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::devices::{
    create_device, delete_device, in_groups, patch_device, visible, visible_query, writable_groups,
};
use fleet_node::Actor;
use fleet_store::credentials::{generate_secret, hash_secret};
use fleet_store::{devices, memberships};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{QueryOrder, QuerySelect};
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
    let device = if caller.is_admin() {
        // An admin sees every live device, so the cached row answers alone.
        match node.device(id).await? {
            Some(device) if !device.deleted => devices::Model::clone(&device),
            _ => {
                return Err(fleet_node::Error::not_found(format!("no device with id {id}")).into())
            }
        }
    } else {
        visible(&node.db, &caller, id).await?
    };
    Ok(reply::ok(live_view(&node, device)))
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
    caller: &Actor,
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
