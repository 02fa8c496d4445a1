//! Liveness and readiness.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use crate::{reply, Node};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive")))]
pub async fn healthz() -> HttpResponse {
    reply::ok(serde_json::json!({"alive": true}))
}

/// The process can serve: its database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Database unreachable")))]
pub async fn readyz(node: web::Data<Node>) -> HttpResponse {
    match node.db.ping().await {
        Ok(()) => reply::ok(serde_json::json!({"ready": true, "database": "ok"})),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            reply::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unreachable",
                serde_json::json!({"ready": false, "database": "unreachable"}),
            )
        }
    }
}
