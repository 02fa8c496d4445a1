//! Logs that devices uploaded for `pull_logs` commands: a device's list, and the
//! download of one command's log. Scoped like the device they came from.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use fleet_store::pulled_logs;
use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use shared_proto::id::parse_id;
use utoipa::{IntoParams, ToSchema};

use crate::reply::{PageRequest, Paged};
use crate::{input, reply, ApiError, Caller, Node};
use fleet_node::commands::visible_command;
use fleet_node::devices::visible;

#[derive(Debug, Serialize, ToSchema)]
pub struct PulledLog {
    pub command_id: String,
    pub device_id: String,
    pub bytes: i64,
    pub uploaded_at: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LogPage {
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

/// The logs a device uploaded, newest first (metadata only).
#[utoipa::path(get, path = "/api/v1/devices/{id}/logs", tag = "commands",
    params(("id" = String, Path, description = "Device id"), LogPage), security(("bearer" = [])),
    responses((status = 200, description = "A page of uploaded logs", body = inline(Paged<PulledLog>))))]
pub async fn list(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let device = parse_id("id", &path)?;
    let f: LogPage = input::query(&req)?;
    let page = PageRequest::new(f.page, f.per_page)?;
    visible(&node.db, &caller, device).await?;
    let q = pulled_logs::Entity::find().filter(pulled_logs::Column::DeviceId.eq(device));
    let total = reply::count(&node.db, q.clone()).await?;
    let rows: Vec<(i64, i64, i64)> = q
        .select_only()
        .columns([
            pulled_logs::Column::CommandId,
            pulled_logs::Column::Bytes,
            pulled_logs::Column::UploadedAt,
        ])
        .order_by_desc(pulled_logs::Column::CommandId)
        .offset(page.offset())
        .limit(page.per_page)
        .into_tuple()
        .all(&node.db)
        .await?;
    let items = rows
        .into_iter()
        .map(|(command_id, bytes, uploaded_at)| PulledLog {
            command_id: command_id.to_string(),
            device_id: device.to_string(),
            bytes,
            uploaded_at,
        })
        .collect();
    Ok(reply::ok(page.wrap(items, total)))
}

/// Download the log a device uploaded for a `pull_logs` command (raw text).
#[utoipa::path(get, path = "/api/v1/commands/{id}/logs", tag = "commands",
    params(("id" = String, Path, description = "Command id")), security(("bearer" = [])),
    responses((status = 200, description = "The log file", content_type = "text/plain"),
              (status = 404, description = "No such command, or nothing uploaded yet")))]
pub async fn download(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    let command = visible_command(&node.db, &caller, id).await?;
    let log = pulled_logs::Entity::find_by_id(command.id)
        .one(&node.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no log was uploaded for command {id}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"device-{}-{}.log\"",
                log.device_id, log.command_id
            ),
        ))
        .body(log.content))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/devices/{id}/logs", web::get().to(list))
        .route("/api/v1/commands/{id}/logs", web::get().to(download));
}
