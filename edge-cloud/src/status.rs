//! `GET /api/v1/devices/{id}/status`: what the edge holds of a device right now.

use actix_web::{web, HttpResponse};
use fleet_node::devices::visible;
use fleet_node::Node;
use operator_api::{reply, ApiError, Caller};
use serde::Serialize;
use shared_proto::id::parse_id;
use utoipa::ToSchema;

use crate::hub::Sessions;

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceStatus {
    pub device_id: String,
    pub online: bool,
    /// Version of the last report the edge applied (0 before the first).
    pub version: u64,
    /// The desired-configuration version the device reported it runs (0 for none).
    pub config_version: i64,
    /// The merged status (CPU, memory, disk, uptime, network, agent version), or null.
    #[schema(value_type = Object)]
    pub status: serde_json::Value,
}

/// A device's live state and latest status.
#[utoipa::path(get, path = "/api/v1/devices/{id}/status", tag = "devices",
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "The status", body = DeviceStatus)))]
pub async fn get(
    node: web::Data<Node>,
    sessions: web::Data<Sessions>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    visible(&node.db, &caller, id).await?;
    let held = sessions.status(id);
    Ok(reply::ok(DeviceStatus {
        device_id: id.to_string(),
        online: fleet_node::devices::Presence::is_online(sessions.as_ref(), id),
        version: held.as_ref().map_or(0, |h| h.version),
        config_version: held.as_ref().map_or(0, |h| h.config_version),
        status: held
            .and_then(|h| serde_json::to_value(h.status).ok())
            .unwrap_or_default(),
    }))
}
