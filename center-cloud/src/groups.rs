//! Device groups and their members. Admins create, rename and delete groups;
//! operators change the membership of the groups mapped to them.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::Node;
use fleet_store::replica::Replicated;
use fleet_store::{devices, groups, memberships, user_groups};
use operator_api::reply::{PageRequest, Paged};
use operator_api::{input, reply, ApiError, Caller};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use shared_proto::device::check_text;
use shared_proto::id::{ids_from_json, parse_id};
use utoipa::{IntoParams, ToSchema};

use operator_api::devices::{self as device_api, DeviceFilter};

/// Largest number of ids one membership call takes.
const MAX_BULK: usize = 10_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Number of devices in the group.
    pub devices: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

fn view(m: groups::Model, devices: u64) -> Group {
    Group {
        id: m.id.to_string(),
        name: m.name,
        description: m.description,
        devices,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewGroup {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GroupPatch {
    pub name: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceIds {
    #[schema(value_type = Vec<String>)]
    pub device_ids: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct GroupFilter {
    /// Substring of the name.
    pub name: Option<String>,
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

fn check_fields(name: Option<&str>, description: Option<&str>) -> Result<(), ApiError> {
    if let Some(n) = name {
        check_text("name", n, 128, true)?;
    }
    if let Some(d) = description {
        check_text("description", d, 1024, false)?;
    }
    Ok(())
}

async fn counts<C: ConnectionTrait>(db: &C, ids: Vec<i64>) -> Result<HashMap<i64, u64>, ApiError> {
    let rows: Vec<(i64, i64)> = memberships::Entity::find()
        .select_only()
        .column(memberships::Column::GroupId)
        .column_as(memberships::Column::Id.count(), "n")
        .filter(memberships::Column::GroupId.is_in(ids))
        .filter(memberships::Column::Deleted.eq(false))
        .group_by(memberships::Column::GroupId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(g, n)| (g, u64::try_from(n).unwrap_or(0)))
        .collect())
}

/// A live group the caller may see, or 404.
async fn visible<C: ConnectionTrait>(
    db: &C,
    caller: &Caller,
    id: i64,
) -> Result<groups::Model, ApiError> {
    groups::Entity::find_by_id(id)
        .filter(groups::Column::Deleted.eq(false))
        .one(db)
        .await?
        .filter(|g| caller.in_group(g.id))
        .ok_or_else(|| ApiError::not_found(format!("no group with id {id}")))
}

async fn name_taken<C: ConnectionTrait>(db: &C, name: &str) -> Result<bool, ApiError> {
    Ok(groups::Entity::find()
        .filter(groups::Column::LiveName.eq(name))
        .one(db)
        .await?
        .is_some())
}

fn name_conflict(name: &str) -> ApiError {
    ApiError::exists("name", format!("group {name:?} already exists"))
}

/// List the groups the caller may see.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", params(GroupFilter),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of groups", body = inline(Paged<Group>))))]
pub async fn list(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let f: GroupFilter = input::query(&req)?;
    let page = PageRequest::new(f.page, f.per_page)?;
    let mut q = groups::Entity::find().filter(groups::Column::Deleted.eq(false));
    if !caller.is_admin() {
        q = q.filter(groups::Column::Id.is_in(caller.groups.clone()));
    }
    if let Some(n) = f.name {
        q = q.filter(groups::Column::Name.contains(n));
    }
    let total = operator_api::reply::count(&node.db, q.clone()).await?;
    let rows = q
        .order_by_asc(groups::Column::Name)
        .offset(page.offset())
        .limit(page.per_page)
        .all(&node.db)
        .await?;
    let n = counts(&node.db, rows.iter().map(|g| g.id).collect()).await?;
    let items = rows
        .into_iter()
        .map(|g| {
            let c = n.get(&g.id).copied().unwrap_or(0);
            view(g, c)
        })
        .collect();
    Ok(reply::ok(page.wrap(items, total)))
}

/// Create a group (admin).
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = NewGroup,
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = Group), (status = 409, description = "Name taken")))]
pub async fn create(
    node: web::Data<Node>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let new: NewGroup = input::json(&body)?;
    check_fields(Some(&new.name), Some(&new.description))?;
    let (core, new) = (&**node, &new);
    let m = node
        .transact(|txn| async move {
            if name_taken(&*txn, &new.name).await? {
                return Err(name_conflict(&new.name));
            }
            let now = fleet_store::now_ms();
            let row = groups::Model {
                id: core.replica.new_id(),
                live_name: Some(new.name.clone()),
                name: new.name.clone(),
                description: new.description.clone(),
                created_at: now,
                updated_at: now,
                hlc: 0,
                origin: 0,
                deleted: false,
                field_stamps: String::new(),
            };
            let m = core
                .replica
                .insert(&*txn, row)
                .await
                .map_err(|e| match e.sql_err() {
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => name_conflict(&new.name),
                    _ => e.into(),
                })?;
            Ok::<_, ApiError>(m)
        })
        .await?;
    Ok(reply::created(m.id, view(m, 0)))
}

/// Read one group.
#[utoipa::path(get, path = "/api/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "Group id")), security(("bearer" = [])),
    responses((status = 200, description = "The group", body = Group), (status = 404, description = "No such group")))]
pub async fn get(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    let g = visible(&node.db, &caller, id).await?;
    let n = counts(&node.db, vec![id]).await?;
    Ok(reply::ok(view(g, n.get(&id).copied().unwrap_or(0))))
}

/// Rename or describe a group (admin).
#[utoipa::path(patch, path = "/api/v1/groups/{id}", tag = "groups", request_body = GroupPatch,
    params(("id" = String, Path, description = "Group id")), security(("bearer" = [])),
    responses((status = 200, description = "The updated group", body = Group)))]
pub async fn update(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = parse_id("id", &path)?;
    let patch: GroupPatch = input::json(&body)?;
    check_fields(patch.name.as_deref(), patch.description.as_deref())?;
    let (core, who, patch) = (&**node, &caller, &patch);
    let (m, n) = node
        .transact(|txn| async move {
            let old = visible(&*txn, who, id).await?;
            let mut new = old.clone();
            if let Some(n) = patch.name.clone() {
                if n != old.name && name_taken(&*txn, &n).await? {
                    return Err(name_conflict(&n));
                }
                new.live_name = Some(n.clone());
                new.name = n;
            }
            if let Some(d) = patch.description.clone() {
                new.description = d;
            }
            if new != old {
                new.updated_at = fleet_store::now_ms();
            }
            let m = core.replica.update(&*txn, &old, new).await?;
            let n = counts(&*txn, vec![id]).await?;
            Ok::<_, ApiError>((m, n))
        })
        .await?;
    Ok(reply::ok(view(m, n.get(&id).copied().unwrap_or(0))))
}

/// Delete a group (admin). Its memberships and user mappings go with it; the
/// devices stay.
#[utoipa::path(delete, path = "/api/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "Group id")), security(("bearer" = [])),
    responses((status = 200, description = "Deleted")))]
pub async fn delete(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = parse_id("id", &path)?;
    let (core, who) = (&**node, &caller);
    node.transact(|txn| async move {
        let old = visible(&*txn, who, id).await?;
        memberships::remove_where(&*txn, &core.replica, memberships::Column::GroupId.eq(id))
            .await?;
        user_groups::Entity::delete_many()
            .filter(user_groups::Column::GroupId.eq(id))
            .exec(&*txn)
            .await?;
        let mut gone = old.clone();
        gone.updated_at = fleet_store::now_ms();
        gone.tombstone();
        core.replica.update(&*txn, &old, gone).await?;
        // Scoped accounts lose the group: their cached scopes go too.
        fleet_node::accounts::Accounts::changed(&*txn).await?;
        Ok::<_, ApiError>(())
    })
    .await?;
    node.accounts.forget();
    Ok(reply::ok(serde_json::json!({"id": id.to_string()})))
}

/// The devices of a group, filtered and paginated like the device list.
#[utoipa::path(get, path = "/api/v1/groups/{id}/devices", tag = "memberships", params(("id" = String, Path, description = "Group id"), DeviceFilter),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of devices", body = inline(Paged<device_api::Device>))))]
pub async fn members(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    visible(&node.db, &caller, id).await?;
    let mut f: DeviceFilter = input::query(&req)?;
    f.group = Some(id.to_string());
    Ok(reply::ok(device_api::query(&node.db, &caller, f).await?))
}

/// Resolves device ids of a request to live devices the caller may see.
async fn visible_devices<C: ConnectionTrait>(
    db: &C,
    caller: &Caller,
    raw: &[serde_json::Value],
) -> Result<Vec<i64>, ApiError> {
    if raw.len() > MAX_BULK {
        return Err(ApiError::invalid(
            "device_ids",
            format!("at most {MAX_BULK} ids per call"),
        ));
    }
    let ids = ids_from_json("device_ids", raw)?;
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let part: Vec<i64> = fleet_node::devices::visible_ids(caller)
            .filter(devices::Column::Id.is_in(chunk.to_vec()))
            .into_tuple()
            .all(db)
            .await?;
        found.extend(part);
    }
    found.sort_unstable();
    if let Some((i, id)) = ids
        .iter()
        .enumerate()
        .find(|(_, id)| found.binary_search(id).is_err())
    {
        return Err(ApiError::missing_ref(
            format!("device_ids[{i}]"),
            format!("no device with id {id}"),
        ));
    }
    Ok(ids)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipChange {
    /// Memberships added or removed by this call.
    pub changed: usize,
    /// Devices in the group after the call.
    pub devices: u64,
}

#[derive(Clone, Copy)]
enum Change {
    Add,
    Replace,
    Remove,
}

async fn change_members(
    node: &Node,
    caller: &Caller,
    path: &str,
    body: &[u8],
    change: Change,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let id = parse_id("id", path)?;
    let req: DeviceIds = input::json(body)?;
    let wanted = &req.device_ids;
    let (changed, n) = node
        .transact(|txn| async move {
            visible(&*txn, caller, id).await?;
            let ids = visible_devices(&*txn, caller, wanted).await?;
            let changed = match change {
                Change::Add => memberships::add(&*txn, &node.replica, id, &ids).await?,
                Change::Remove => {
                    memberships::remove_where(
                        &*txn,
                        &node.replica,
                        memberships::Column::GroupId
                            .eq(id)
                            .and(memberships::Column::DeviceId.is_in(ids.clone())),
                    )
                    .await?
                }
                Change::Replace => {
                    let removed = memberships::remove_where(
                        &*txn,
                        &node.replica,
                        memberships::Column::GroupId
                            .eq(id)
                            .and(memberships::Column::DeviceId.is_not_in(ids.clone())),
                    )
                    .await?;
                    removed + memberships::add(&*txn, &node.replica, id, &ids).await?
                }
            };
            let n = counts(&*txn, vec![id]).await?;
            Ok::<_, ApiError>((changed, n))
        })
        .await?;
    Ok(reply::ok(MembershipChange {
        changed,
        devices: n.get(&id).copied().unwrap_or(0),
    }))
}

/// Add devices to a group (one or many).
#[utoipa::path(post, path = "/api/v1/groups/{id}/devices", tag = "memberships", request_body = DeviceIds,
    params(("id" = String, Path, description = "Group id")), security(("bearer" = [])),
    responses((status = 200, description = "Result", body = MembershipChange)))]
pub async fn add_members(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    change_members(&node, &caller, &path, &body, Change::Add).await
}

/// Make exactly these devices the members of a group.
#[utoipa::path(put, path = "/api/v1/groups/{id}/devices", tag = "memberships", request_body = DeviceIds,
    params(("id" = String, Path, description = "Group id")), security(("bearer" = [])),
    responses((status = 200, description = "Result", body = MembershipChange)))]
pub async fn replace_members(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    change_members(&node, &caller, &path, &body, Change::Replace).await
}

/// Remove devices from a group (one or many).
#[utoipa::path(delete, path = "/api/v1/groups/{id}/devices", tag = "memberships", request_body = DeviceIds,
    params(("id" = String, Path, description = "Group id")), security(("bearer" = [])),
    responses((status = 200, description = "Result", body = MembershipChange)))]
pub async fn remove_members(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    change_members(&node, &caller, &path, &body, Change::Remove).await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/groups")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/api/v1/groups/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    )
    .service(
        web::resource("/api/v1/groups/{id}/devices")
            .route(web::get().to(members))
            .route(web::post().to(add_members))
            .route(web::put().to(replace_members))
            .route(web::delete().to(remove_members)),
    );
}
