//! `POST /api/v1/uploads/logs/{command_id}`: where a device delivers the log that a
//! `pull_logs` command asked for, with its own credentials (`DeviceAuth`).

use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::Error;
use fleet_node::Node;
use fleet_store::commands::{self, State};
use fleet_store::pulled_logs;
use futures_util::StreamExt;
use operator_api::{reply, ApiError};
use sea_orm::EntityTrait;
use serde::Serialize;
use shared_proto::id::parse_id;
use shared_proto::southbound::CommandName;
use utoipa::ToSchema;

use crate::device_auth::DeviceAuth;

pub struct Uploads {
    pub max_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    pub command_id: String,
    pub bytes: u64,
}

/// A device uploads the log of one of its `pull_logs` commands (raw bytes).
#[utoipa::path(post, path = "/api/v1/uploads/logs/{command_id}", tag = "commands",
    params(("command_id" = String, Path, description = "The pull_logs command")),
    request_body(content = String, content_type = "application/octet-stream"),
    security(("device_basic" = [])),
    responses((status = 201, description = "Stored", body = Uploaded),
              (status = 401, description = "Not this device's credentials"),
              (status = 413, description = "Larger than the edge accepts")))]
pub async fn logs(
    node: web::Data<Node>,
    uploads: web::Data<Uploads>,
    auth: web::Data<DeviceAuth>,
    req: HttpRequest,
    path: web::Path<String>,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let device = auth.device(&node, &req).await?;
    let id = parse_id("command_id", &path)?;
    let command = commands::Entity::find_by_id(id)
        .one(&node.db)
        .await?
        .filter(|c| !c.deleted && c.device_id == device && c.name == CommandName::PullLogs.as_str())
        .ok_or_else(|| ApiError::not_found(format!("no pull_logs command {id} for this device")))?;
    if State::parse(&command.state).is_some_and(State::is_final) {
        return Err(Error::FailedPrecondition(format!("command {id} has already finished")).into());
    }
    let mut content = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid("body", e.to_string()))?;
        if (content.len() + chunk.len()) as u64 > uploads.max_bytes {
            return Err(ApiError(Error::TooLarge {
                field: "body".into(),
                message: format!("must be at most {} bytes", uploads.max_bytes),
            }));
        }
        content.extend_from_slice(&chunk);
    }
    let bytes = content.len() as u64;
    let (core, content) = (&**node, &content);
    node.transact(|txn| async move {
        pulled_logs::save(
            &*txn,
            &core.replica,
            pulled_logs::Model {
                command_id: id,
                device_id: device,
                bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                content: content.clone(),
                uploaded_at: fleet_store::now_ms(),
            },
        )
        .await
    })
    .await?;
    tracing::info!(command = id, device, bytes, "device uploaded a log");
    Ok(reply::created(
        id,
        Uploaded {
            command_id: id.to_string(),
            bytes,
        },
    ))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/uploads/logs/{command_id}", web::post().to(logs));
}
