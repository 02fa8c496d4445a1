//! Operator accounts (admin only, except that anyone may read themselves and change
//! their own password, given the current one) and their mapping to device groups.

use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::Error;
use fleet_store::{groups, user_groups, users};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use shared_proto::id::{ids_from_json, parse_id};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{source_of, verify_throttled};
use crate::reply::{PageRequest, Paged};
use crate::{input, reply, ApiError, Caller, Node};
use fleet_node::passwords;
use fleet_node::Role;

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    pub role: Role,
    /// Ids of the device groups this account is scoped to.
    pub groups: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub groups: Vec<serde_json::Value>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize, ToSchema)]
pub struct UserPatch {
    /// The new password (8 to 128 characters).
    pub password: Option<String>,
    /// Required, with the account's password now, when the caller changes their own
    /// `password` (a stolen token alone cannot take the account over). Not needed, and
    /// ignored, when an admin sets another account's password.
    pub current_password: Option<String>,
    pub role: Option<Role>,
}

impl std::fmt::Debug for UserPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPatch")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GroupIds {
    #[schema(value_type = Vec<String>)]
    pub group_ids: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

fn check_username(name: &str) -> Result<(), ApiError> {
    let ok = (3..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "username",
            "must be 3 to 64 characters of letters, digits and . _ - @",
        ))
    }
}

async fn group_ids_of<C: ConnectionTrait>(db: &C, user: i64) -> Result<Vec<i64>, ApiError> {
    Ok(user_groups::Entity::find()
        .filter(user_groups::Column::UserId.eq(user))
        .order_by_asc(user_groups::Column::GroupId)
        .all(db)
        .await?
        .into_iter()
        .map(|m| m.group_id)
        .collect())
}

async fn to_view<C: ConnectionTrait>(db: &C, m: users::Model) -> Result<User, ApiError> {
    let groups = group_ids_of(db, m.id).await?;
    Ok(User {
        id: m.id.to_string(),
        role: Role::parse(&m.role).unwrap_or(Role::Viewer),
        username: m.username,
        groups: groups.iter().map(i64::to_string).collect(),
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

async fn find_user<C: ConnectionTrait>(db: &C, id: i64) -> Result<users::Model, ApiError> {
    users::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))
}

/// Resolves group ids given in a body, naming the first that is malformed or unknown.
async fn existing_groups<C: ConnectionTrait>(
    db: &C,
    field: &str,
    raw: &[serde_json::Value],
) -> Result<Vec<i64>, ApiError> {
    let ids = ids_from_json(field, raw)?;
    let found: Vec<i64> = groups::Entity::find()
        .filter(groups::Column::Id.is_in(ids.clone()))
        .filter(groups::Column::Deleted.eq(false))
        .all(db)
        .await?
        .into_iter()
        .map(|g| g.id)
        .collect();
    if let Some((i, missing)) = ids.iter().enumerate().find(|(_, id)| !found.contains(id)) {
        return Err(ApiError::missing_ref(
            format!("{field}[{i}]"),
            format!("no group with id {missing}"),
        ));
    }
    Ok(ids)
}

async fn map_groups<C: ConnectionTrait>(db: &C, user: i64, groups: &[i64]) -> Result<(), ApiError> {
    let current = group_ids_of(db, user).await?;
    for g in groups.iter().filter(|g| !current.contains(g)) {
        user_groups::ActiveModel {
            user_id: Set(user),
            group_id: Set(*g),
            created_at: Set(fleet_store::now_ms()),
        }
        .insert(db)
        .await?;
    }
    Ok(())
}

async fn admins_other_than(db: &DatabaseConnection, user: i64) -> Result<u64, ApiError> {
    Ok(users::Entity::find()
        .filter(users::Column::Role.eq(Role::Admin.as_str()))
        .filter(users::Column::Id.ne(user))
        .count(db)
        .await?)
}

/// List accounts.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserFilter),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of users", body = inline(Paged<User>))))]
pub async fn list(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let f: UserFilter = input::query(&req)?;
    let page = PageRequest::new(f.page, f.per_page)?;
    let mut q = users::Entity::find();
    if let Some(role) = f.role {
        q = q.filter(users::Column::Role.eq(role.as_str()));
    }
    let total = crate::reply::count(&node.db, q.clone()).await?;
    let rows = q
        .order_by_asc(users::Column::Username)
        .offset(page.offset())
        .limit(page.per_page)
        .all(&node.db)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for m in rows {
        items.push(to_view(&node.db, m).await?);
    }
    Ok(reply::ok(page.wrap(items, total)))
}

/// Create an account, optionally scoped to groups.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = User),
              (status = 409, description = "Username taken")))]
pub async fn create(
    node: web::Data<Node>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let new: NewUser = input::json(&body)?;
    check_username(&new.username)?;
    passwords::check_policy("password", &new.password)?;
    let group_ids = existing_groups(&node.db, "groups", &new.groups).await?;
    let hash = passwords::hash_blocking(new.password).await?;
    let (core, username, role, hash, group_ids) = (
        &**node,
        new.username.as_str(),
        new.role.as_str(),
        &hash,
        &group_ids,
    );
    let (id, view) = node
        .transact(|txn| async move {
            let taken = users::Entity::find()
                .filter(users::Column::Username.eq(username))
                .one(&*txn)
                .await?;
            if taken.is_some() {
                return Err(ApiError::exists(
                    "username",
                    format!("user {username} already exists"),
                ));
            }
            let now = fleet_store::now_ms();
            let id = core.replica.new_id();
            let model = users::ActiveModel {
                id: Set(id),
                username: Set(username.to_string()),
                password_hash: Set(hash.clone()),
                role: Set(role.to_string()),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&*txn)
            .await?;
            map_groups(&*txn, id, group_ids).await?;
            let view = to_view(&*txn, model).await?;
            fleet_node::accounts::Accounts::changed(&*txn).await?;
            Ok::<_, ApiError>((id, view))
        })
        .await?;
    node.accounts.forget();
    Ok(reply::created(id, view))
}

/// Read an account (admins: any; others: themselves).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "The user", body = User), (status = 404, description = "No such user")))]
pub async fn get(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    if id != caller.id {
        caller.require_admin()?;
    }
    let m = find_user(&node.db, id).await?;
    Ok(reply::ok(to_view(&node.db, m).await?))
}

/// Change an account's password (admins, or the account itself) or role (admins).
///
/// Changing one's own password needs `current_password`, the password now; a wrong
/// or missing one is refused (400 naming `current_password`) and changes nothing, and
/// wrong ones count in the login throttle (429 with Retry-After past its limit). An
/// admin setting another account's password (a reset) does not send it. Tokens issued
/// before the change stop working.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UserPatch,
    params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "Updated", body = User),
              (status = 400, description = "A bad field, or a missing or wrong `current_password`"),
              (status = 429, description = "Too many wrong current passwords; see Retry-After")))]
pub async fn update(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    let patch: UserPatch = input::json(&body)?;
    if id != caller.id || patch.role.is_some() {
        caller.require_admin()?;
    }
    let user = find_user(&node.db, id).await?;
    if let Some(p) = &patch.password {
        passwords::check_policy("password", p)?;
    }
    if patch.role.is_some_and(|r| r != Role::Admin)
        && user.role == Role::Admin.as_str()
        && admins_other_than(&node.db, id).await? == 0
    {
        return Err(Error::FailedPrecondition("the last admin cannot be demoted".into()).into());
    }
    if patch.password.is_some() && id == caller.id {
        let Some(current) = patch.current_password else {
            return Err(ApiError::invalid(
                "current_password",
                "is required to change your own password",
            ));
        };
        if current.is_empty() || current.len() > 128 {
            return Err(ApiError::invalid(
                "current_password",
                "must be 1 to 128 characters",
            ));
        }
        let (matches, attempt) = verify_throttled(
            &node,
            source_of(&req),
            &user.username,
            Some(user.password_hash.clone()),
            current,
        )
        .await?;
        if !matches {
            attempt.failed();
            return Err(ApiError::invalid(
                "current_password",
                "is not this account's password",
            ));
        }
        attempt.succeeded();
    }
    let mut active: users::ActiveModel = user.into();
    if let Some(p) = patch.password {
        active.password_hash = Set(passwords::hash_blocking(p).await?);
    }
    if let Some(r) = patch.role {
        active.role = Set(r.as_str().to_string());
    }
    active.updated_at = Set(fleet_store::now_ms());
    let active = &active;
    let m = node
        .transact(|txn| async move {
            let m = active.clone().update(&*txn).await?;
            fleet_node::accounts::Accounts::changed(&*txn).await?;
            Ok::<_, ApiError>(m)
        })
        .await?;
    node.accounts.forget();
    Ok(reply::ok(to_view(&node.db, m).await?))
}

/// Delete an account. Admins cannot delete themselves.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "Deleted")))]
pub async fn delete(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = parse_id("id", &path)?;
    if id == caller.id {
        return Err(Error::FailedPrecondition("you cannot delete your own account".into()).into());
    }
    find_user(&node.db, id).await?;
    node.transact(|txn| async move {
        user_groups::Entity::delete_many()
            .filter(user_groups::Column::UserId.eq(id))
            .exec(&*txn)
            .await?;
        users::Entity::delete_by_id(id).exec(&*txn).await?;
        fleet_node::accounts::Accounts::changed(&*txn).await
    })
    .await?;
    node.accounts.forget();
    Ok(reply::ok(serde_json::json!({"id": id.to_string()})))
}

/// The groups an account is scoped to.
#[utoipa::path(get, path = "/api/v1/users/{id}/groups", tag = "users",
    params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "Group ids", body = Vec<String>)))]
pub async fn groups(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    if id != caller.id {
        caller.require_admin()?;
    }
    find_user(&node.db, id).await?;
    let ids = group_ids_of(&node.db, id).await?;
    Ok(reply::ok(
        ids.iter().map(i64::to_string).collect::<Vec<_>>(),
    ))
}

async fn change_groups(
    node: &Node,
    caller: &Caller,
    path: &str,
    body: &[u8],
    change: GroupChange,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = parse_id("id", path)?;
    let req: GroupIds = input::json(body)?;
    find_user(&node.db, id).await?;
    let wanted = &req.group_ids;
    let now = node
        .transact(|txn| async move {
            let ids = match change {
                GroupChange::Remove => ids_from_json("group_ids", wanted)?,
                _ => existing_groups(&*txn, "group_ids", wanted).await?,
            };
            match change {
                GroupChange::Add => map_groups(&*txn, id, &ids).await?,
                GroupChange::Replace => {
                    user_groups::Entity::delete_many()
                        .filter(user_groups::Column::UserId.eq(id))
                        .exec(&*txn)
                        .await?;
                    map_groups(&*txn, id, &ids).await?;
                }
                GroupChange::Remove => {
                    user_groups::Entity::delete_many()
                        .filter(user_groups::Column::UserId.eq(id))
                        .filter(user_groups::Column::GroupId.is_in(ids.clone()))
                        .exec(&*txn)
                        .await?;
                }
            }
            let now = group_ids_of(&*txn, id).await?;
            fleet_node::accounts::Accounts::changed(&*txn).await?;
            Ok::<_, ApiError>(now)
        })
        .await?;
    node.accounts.forget();
    Ok(reply::ok(
        now.iter().map(i64::to_string).collect::<Vec<_>>(),
    ))
}

#[derive(Clone, Copy)]
enum GroupChange {
    Add,
    Replace,
    Remove,
}

/// Scope an account to more groups.
#[utoipa::path(post, path = "/api/v1/users/{id}/groups", tag = "users", request_body = GroupIds,
    params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "The account's group ids now", body = Vec<String>)))]
pub async fn add_groups(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    change_groups(&node, &caller, &path, &body, GroupChange::Add).await
}

/// Replace the groups an account is scoped to.
#[utoipa::path(put, path = "/api/v1/users/{id}/groups", tag = "users", request_body = GroupIds,
    params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "The account's group ids now", body = Vec<String>)))]
pub async fn replace_groups(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    change_groups(&node, &caller, &path, &body, GroupChange::Replace).await
}

/// Unscope an account from groups.
#[utoipa::path(delete, path = "/api/v1/users/{id}/groups", tag = "users", request_body = GroupIds,
    params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "The account's group ids now", body = Vec<String>)))]
pub async fn remove_groups(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    change_groups(&node, &caller, &path, &body, GroupChange::Remove).await
}

/// Registers the routes of this module.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/users")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/api/v1/users/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    )
    .service(
        web::resource("/api/v1/users/{id}/groups")
            .route(web::get().to(groups))
            .route(web::post().to(add_groups))
            .route(web::put().to(replace_groups))
            .route(web::delete().to(remove_groups)),
    );
}

/// On a node with no accounts, creates `admin` with `password`, or with a random
/// password that is returned so the caller can show it once.
pub async fn ensure_admin(
    node: &Node,
    password: Option<String>,
) -> Result<Option<String>, ApiError> {
    if users::Entity::find().count(&node.db).await? > 0 {
        return Ok(None);
    }
    let (password, generated) = match password {
        Some(p) => {
            passwords::check_policy("admin_password", &p)?;
            (p, false)
        }
        None => (fleet_store::credentials::generate_secret(), true),
    };
    let now = fleet_store::now_ms();
    let made = users::ActiveModel {
        id: Set(node.replica.new_id()),
        username: Set("admin".into()),
        password_hash: Set(passwords::hash_blocking(password.clone()).await?),
        role: Set(Role::Admin.as_str().into()),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&node.db)
    .await;
    if let Err(e) = made {
        // Center replicas starting together race here: the account's unique name
        // lets one in, and the others find the account it made.
        if users::Entity::find().count(&node.db).await? > 0 {
            tracing::info!("the initial admin account was made by another replica");
            return Ok(None);
        }
        return Err(e.into());
    }
    tracing::info!("created the initial admin account `admin`");
    Ok(generated.then_some(password))
}
