//! Every mutating call (and every login attempt) is recorded as an event: who, what,
//! on which target, when, and how it ended. Handlers and the auth extractor leave the
//! actor, target and error detail in request/response extensions; one middleware
//! writes the event after the response is built, so no handler can forget.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use crate::{events, Node};

/// The account (or attempted username) behind the request.
#[derive(Debug, Clone)]
pub struct AuditActor(pub String);

/// The id of the resource a call created or acted on, when the path does not say.
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// The public error message of a failed call.
#[derive(Debug, Clone)]
pub struct AuditDetail(pub String);

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let method = req.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.call(req).await;
    }
    let res = next.call(req).await?;
    let request = res.request();
    let Some(node) = request.app_data::<web::Data<Node>>() else {
        return Ok(res);
    };
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let actor = request
        .extensions()
        .get::<AuditActor>()
        .map_or_else(|| "anonymous".to_string(), |a| a.0.clone());
    let target = res
        .response()
        .extensions()
        .get::<AuditTarget>()
        .map(|t| t.0.clone())
        .or_else(|| request.match_info().get("id").map(str::to_string))
        .unwrap_or_default();
    let detail = res
        .response()
        .extensions()
        .get::<AuditDetail>()
        .map(|d| d.0.clone())
        .unwrap_or_default();
    let event = events::NewEvent {
        actor,
        action: format!("{method} {route}"),
        target_type: target_type(&route),
        target_id: target,
        status: res.status().as_u16(),
        detail,
    };
    let recorded = async {
        let (_turn, txn) = node.write().await?;
        events::record(&txn, &node.replica, event).await?;
        txn.commit().await
    };
    if let Err(e) = recorded.await {
        tracing::error!(error = %e, "recording an audit event failed");
    }
    Ok(res)
}

/// `api` and version segments like `v1` say nothing about the resource.
fn is_prefix(segment: &str) -> bool {
    segment == "api"
        || segment
            .strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// `/api/v1/devices/{id}/groups` -> `devices`; `/v1/devices` -> `devices`.
fn target_type(route: &str) -> String {
    route
        .split('/')
        .filter(|s| !s.is_empty())
        .find(|s| !is_prefix(s))
        .unwrap_or("none")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn target_type_is_the_resource_segment() {
        assert_eq!(super::target_type("/api/v1/devices/{id}/groups"), "devices");
        assert_eq!(super::target_type("/v1/devices"), "devices");
        assert_eq!(super::target_type("/api/v1/auth/login"), "auth");
        assert_eq!(super::target_type("unmatched"), "unmatched");
    }
}
