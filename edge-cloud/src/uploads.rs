//! `POST /api/v1/uploads/logs/{command_id}`: where a device delivers the log that a
//! `pull_logs` command asked for. Devices authenticate with their own credentials
//! (HTTP Basic `device_id:secret`), not an operator token. Like a southbound login, a
//! refusal does not say why, and failures are throttled per source address.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use fleet_node::throttle::LoginThrottle;
use fleet_node::Error;
use fleet_node::Node;
use fleet_store::commands::{self, State};
use fleet_store::pulled_logs;
use futures_util::StreamExt;
use operator_api::{reply, ApiError};
use sea_orm::EntityTrait;
use serde::Serialize;
use shared_proto::id::parse_id;
use shared_proto::southbound::{CommandName, Login};
use utoipa::ToSchema;

use crate::hub::authenticate;

pub struct Uploads {
    pub max_bytes: u64,
    throttle: LoginThrottle,
}

impl Uploads {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            throttle: LoginThrottle::default(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    pub command_id: String,
    pub bytes: u64,
}

/// `device_id` and `secret` from `Authorization: Basic …`.
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
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
    req: HttpRequest,
    path: web::Path<String>,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let source = req
        .peer_addr()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    if let Err(wait) = uploads.throttle.check(source) {
        return Err(Error::TooManyAttempts(wait.as_secs().max(1)).into());
    }
    let refused = || Error::Unauthenticated("device credentials were not accepted".into());
    let Some((device_id, secret)) = basic_credentials(&req) else {
        uploads.throttle.failed(source);
        return Err(refused().into());
    };
    let login = Login {
        device_id: Some(device_id),
        sn: None,
        model: None,
        secret,
        agent_version: String::new(),
    };
    let Some(device) = authenticate(&node.db, &login).await?.map(|d| d.id) else {
        uploads.throttle.failed(source);
        return Err(refused().into());
    };
    uploads.throttle.succeeded(source);
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
