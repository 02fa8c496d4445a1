//! The per-request observer: a request id (taken from `X-Request-Id` or made up), one
//! log line per request, and request counters and latency histograms labelled by
//! route pattern (never by raw path, which would let clients create unbounded label
//! sets); and `/metrics`.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use tracing::Instrument;

use crate::Node;

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_string)
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().to_string();
    let node = req.app_data::<web::Data<Node>>().cloned();
    let span = tracing::info_span!("request", id = %id, method = %method, path = %req.path());
    let mut res = next.call(req).instrument(span.clone()).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(node) = node {
        node.metrics
            .observe_request(&method, &route, status, elapsed.as_secs_f64());
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    tracing::info!(parent: &span, status, route = %route, ms = elapsed.as_secs_f64() * 1000.0, "request done");
    Ok(res)
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn scrape(node: web::Data<Node>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(node.metrics.render(&node.db))
}
