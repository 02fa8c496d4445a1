//! The seed lab's device contract at `/v1/devices`, kept working as written so its
//! clients and scripts run unchanged (behind the same login as the rest): GET by
//! `{id}`, `{sn, model}`, `sn` alone or `model` alone (JSON body or query), POST
//! answering the new id, PUT partial update by id, DELETE `{ids}` answering the ids
//! actually deleted.

use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::devices::{create_device, delete_device, patch_device, visible, visible_query};
use fleet_node::{Error, Node};
use fleet_store::devices;
use operator_api::audit::AuditTarget;
use operator_api::devices::Device;
use operator_api::{input, reply, ApiError, Caller};
use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use shared_proto::id::{ids_from_json, parse_id};
use shared_proto::{DeviceDraft, DevicePatch};
use utoipa::ToSchema;

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct LabLookup {
    pub id: Option<String>,
    pub sn: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LabUpdate {
    pub id: String,
    #[serde(flatten)]
    pub patch: DevicePatch,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LabDelete {
    #[schema(value_type = Vec<String>)]
    pub ids: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabDeleted {
    /// The ids actually deleted; unknown ids are left out.
    pub ids: Vec<String>,
}

/// Devices one lookup answers at most: a loose model may match much of a fleet.
const MAX_FOUND: u64 = 1_000;

/// Find devices by `{id}`, by `{sn, model}` (exact), by `sn` alone (exact, every
/// model), or by `model` alone (loose: the model contains it, ignoring case). Every
/// match is answered, by id, up to 1,000; a lookup matching more is refused.
#[utoipa::path(get, path = "/v1/devices", tag = "seed lab contract", request_body = LabLookup,
    params(("id" = Option<String>, Query, description = "Device id"),
           ("sn" = Option<String>, Query, description = "Hardware serial number (exact)"),
           ("model" = Option<String>, Query, description = "Hardware model: exact with sn, else contained in the model, ignoring case")),
    security(("bearer" = [])),
    responses((status = 200, description = "The matching devices (possibly none)", body = Vec<Device>),
              (status = 400, description = "No criterion, or more than 1,000 devices match")))]
pub async fn find(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let lookup: LabLookup = if body.iter().all(u8::is_ascii_whitespace) {
        input::query(&req)?
    } else {
        input::json(&body)?
    };
    let rows = match (lookup.id, lookup.sn, lookup.model) {
        (Some(id), _, _) => {
            let id = parse_id("id", &id)?;
            match visible(&node.db, &caller, id).await {
                Ok(m) => vec![m],
                Err(Error::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            }
        }
        (None, Some(sn), Some(model)) => {
            visible_query(&caller)
                .filter(devices::Column::HwSn.eq(sn))
                .filter(devices::Column::HwModel.eq(model))
                .order_by_asc(devices::Column::Id)
                .all(&node.db)
                .await?
        }
        (None, Some(sn), None) => {
            let found = visible_query(&caller)
                .filter(devices::Column::HwSn.eq(sn))
                .order_by_asc(devices::Column::Id)
                .limit(MAX_FOUND + 1)
                .all(&node.db)
                .await?;
            at_most(found, "sn", "give the model too")?
        }
        (None, None, Some(model)) => {
            if model.trim().is_empty() {
                return Err(ApiError::invalid("model", "must not be empty"));
            }
            let found = visible_query(&caller)
                .filter(model_like(&model))
                .order_by_asc(devices::Column::Id)
                .limit(MAX_FOUND + 1)
                .all(&node.db)
                .await?;
            at_most(found, "model", "give more of the model, or the sn")?
        }
        (None, None, None) => {
            return Err(ApiError::invalid(
                "id",
                "give id, sn, model, or sn and model",
            ))
        }
    };
    Ok(reply::ok(
        rows.into_iter().map(Device::from).collect::<Vec<_>>(),
    ))
}

/// The model contains `part`, ignoring ASCII case, with `%`, `_` and `\` in `part`
/// taken literally (the same on SQLite and MySQL, whatever the column's collation).
fn model_like(part: &str) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{Func, LikeExpr};
    let mut pattern = String::with_capacity(part.len() + 2);
    pattern.push('%');
    for c in part.to_ascii_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Expr::expr(Func::lower(Expr::col(devices::Column::HwModel)))
        .like(LikeExpr::new(pattern).escape('\\'))
}

/// `found`, read with one row over [`MAX_FOUND`], or a 400 naming `field`.
fn at_most(
    found: Vec<devices::Model>,
    field: &str,
    hint: &str,
) -> Result<Vec<devices::Model>, ApiError> {
    if u64::try_from(found.len()).unwrap_or(u64::MAX) > MAX_FOUND {
        return Err(ApiError::invalid(
            field,
            format!("matches more than {MAX_FOUND} devices; {hint}"),
        ));
    }
    Ok(found)
}

/// Add a device; answers its new id.
#[utoipa::path(post, path = "/v1/devices", tag = "seed lab contract", request_body = DeviceDraft,
    security(("bearer" = [])),
    responses((status = 200, description = "The new device id", body = String)))]
pub async fn add(
    node: web::Data<Node>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let draft: DeviceDraft = input::json(&body)?;
    let (core, who) = (&**node, &caller);
    let (m, _secret) = node
        .transact(|txn| {
            let draft = draft.clone();
            async move { create_device(&*txn, core, who, draft, None).await }
        })
        .await?;
    let mut response = reply::ok(m.id.to_string());
    response
        .extensions_mut()
        .insert(AuditTarget(m.id.to_string()));
    Ok(response)
}

/// Update some fields of the device with `id`.
#[utoipa::path(put, path = "/v1/devices", tag = "seed lab contract", request_body = LabUpdate,
    security(("bearer" = [])),
    responses((status = 200, description = "The updated device", body = Device)))]
pub async fn update(
    node: web::Data<Node>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let req: LabUpdate = input::json(&body)?;
    let id = parse_id("id", &req.id)?;
    let (core, who, patch) = (&**node, &caller, &req.patch);
    let m = node
        .transact(|txn| async move {
            let old = visible(&*txn, who, id).await?;
            patch_device(&*txn, core, &old, patch.clone()).await
        })
        .await?;
    let mut response = reply::ok(Device::from(m));
    response
        .extensions_mut()
        .insert(AuditTarget(id.to_string()));
    Ok(response)
}

/// Delete the devices in `ids`; answers those actually deleted.
#[utoipa::path(delete, path = "/v1/devices", tag = "seed lab contract", request_body = LabDelete,
    security(("bearer" = [])),
    responses((status = 200, description = "The deleted ids, in `data.ids` and at the top level as the seed answered", body = LabDeleted)))]
pub async fn remove(
    node: web::Data<Node>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let req: LabDelete = input::json(&body)?;
    // The seed trims ids ("1234567890 " in its own example), so do we.
    let ids = ids_from_json("ids", &req.ids)?;
    let (core, who, ids) = (&**node, &caller, &ids);
    let deleted = node
        .transact(|txn| async move {
            let mut deleted = Vec::new();
            for id in ids {
                if let Ok(old) = visible(&*txn, who, *id).await {
                    delete_device(&*txn, core, &old).await?;
                    deleted.push(id.to_string());
                }
            }
            Ok::<_, ApiError>(deleted)
        })
        .await?;
    let mut response = HttpResponse::Ok().json(serde_json::json!({
        "status": 200,
        "message": format!("deleted {} devices", deleted.len()),
        "data": {"ids": deleted},
        "ids": deleted,
    }));
    response
        .extensions_mut()
        .insert(AuditTarget(deleted.join(",")));
    Ok(response)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/devices")
            .route(web::get().to(find))
            .route(web::post().to(add))
            .route(web::put().to(update))
            .route(web::delete().to(remove)),
    );
}
