//! The event log records what accountable callers did: every mutating call of an
//! authenticated operator (and how it ended), logins of known accounts, and changes
//! made without an operator (a device delivering a log). Handlers and the auth
//! extractor leave the actor, target and error detail in request/response
//! extensions; one middleware writes the event after the response is built, so no
//! handler can forget.
//!
//! Failed requests with no authenticated actor (missing or bad tokens, unknown routes,
//! refused or throttled logins, logins as unknown names) are not written: anyone can
//! send them as fast as they like, and a row each would turn such a flood into
//! database writes. They are counted in the `http_unrecorded_requests` metric by route
//! class and outcome instead.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use crate::Node;
use fleet_node::events;

/// The authenticated account behind the request, or the known account a login was
/// for when that login is to be recorded (`auth::login`).
#[derive(Debug, Clone)]
pub struct AuditActor(pub String);

/// The id of the resource a call created or acted on, when the path does not say.
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// The public error message of a failed call.
#[derive(Debug, Clone)]
pub struct AuditDetail(pub String);

/// Write this request's event after the answer has gone, not before: for a failed
/// login, waiting for the write would make the answer slower for known usernames
/// than for unknown ones; a command's answer waits for its device, not for the log.
#[derive(Debug, Clone, Copy)]
pub struct AuditDeferred;

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let method = req.method().clone();
    let res = next.call(req).await?;
    let request = res.request();
    let Some(node) = request.app_data::<web::Data<Node>>() else {
        return Ok(res);
    };
    let status = res.status().as_u16();
    let is_read = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let actor = request
        .extensions()
        .get::<AuditActor>()
        .map(|a| a.0.clone());
    let route = request.match_pattern();
    let actor = match actor {
        Some(_) if is_read => return Ok(res),
        Some(actor) => actor,
        None if status >= 400 => {
            let class = route.as_deref().map_or("unmatched", route_class);
            node.metrics.count_unrecorded(class, outcome_of(status));
            return Ok(res);
        }
        None if is_read => return Ok(res),
        // A change that needed no operator (a device's upload).
        None => "anonymous".to_string(),
    };
    let route = route.unwrap_or_else(|| "unmatched".to_string());
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
        target_type: route_class(&route).to_string(),
        target_id: target,
        status,
        detail,
    };
    if request.extensions().get::<AuditDeferred>().is_some() {
        node.record_soon(event);
    } else {
        node.clone().into_inner().record(event).await;
    }
    Ok(res)
}

/// A bounded label for what a failed request was about: the status says enough, and
/// the route class keeps clients from making up label values.
fn outcome_of(status: u16) -> &'static str {
    match status {
        401 => "unauthenticated",
        403 => "denied",
        404 | 405 => "not_found",
        429 => "throttled",
        400..=499 => "rejected",
        // Only failed requests are counted, so the rest are server errors.
        _ => "failed",
    }
}

/// `api` and version segments like `v1` say nothing about the resource.
fn is_prefix(segment: &str) -> bool {
    segment == "api"
        || segment
            .strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// `/api/v1/devices/{id}/groups` -> `devices`; `/v1/devices` -> `devices`.
fn route_class(route: &str) -> &str {
    route
        .split('/')
        .filter(|s| !s.is_empty())
        .find(|s| !is_prefix(s))
        .unwrap_or("none")
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_class_is_the_resource_segment() {
        assert_eq!(super::route_class("/api/v1/devices/{id}/groups"), "devices");
        assert_eq!(super::route_class("/v1/devices"), "devices");
        assert_eq!(super::route_class("/api/v1/auth/login"), "auth");
        assert_eq!(super::route_class("unmatched"), "unmatched");
    }

    #[test]
    fn outcomes_are_few() {
        let outcomes: std::collections::BTreeSet<_> = (400..600).map(super::outcome_of).collect();
        assert_eq!(outcomes.len(), 6);
    }
}
