//! Prometheus metrics and the per-request observer: a request id (taken from
//! `X-Request-Id` or made up), one log line per request, and request counters and
//! latency histograms labelled by route pattern (never by raw path, which would let
//! clients create unbounded label sets).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use tracing::Instrument;

use crate::Node;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnrecordedLabels {
    class: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    outcome: &'static str,
}

/// How an operator password check ended. A wrong password and an unknown username
/// are one outcome: `/metrics` is open, and a counter that told them apart would let
/// anyone find out whether a name exists by reading it before and after a try.
#[derive(Clone, Copy, Debug)]
pub enum LoginOutcome {
    Ok,
    Failed,
    /// Refused by the throttle before any password check.
    Throttled,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    /// Open for other subsystems to register their metrics before the node starts.
    pub registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    db_connections: Gauge,
    db_idle: Gauge,
    unrecorded: Family<UnrecordedLabels, Counter>,
    logins: Family<LoginLabels, Counter>,
    events_expired: Counter,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0002, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        let db_connections = Gauge::default();
        let db_idle = Gauge::default();
        let unrecorded = Family::<UnrecordedLabels, Counter>::default();
        let logins = Family::<LoginLabels, Counter>::default();
        let events_expired = Counter::default();
        registry.register(
            "http_unrecorded_requests",
            "Failed requests with no authenticated actor (bad tokens, unknown routes, failed or \
             throttled logins), which are counted here instead of written to the event log, by \
             route class (resource segment, or `unmatched`) and outcome",
            unrecorded.clone(),
        );
        registry.register(
            "operator_logins",
            "Operator password checks (logins and password changes) by outcome: ok, failed \
             (wrong password or unknown username, not told apart) or throttled",
            logins.clone(),
        );
        registry.register(
            "events_expired",
            "Events deleted because they were older than the event retention",
            events_expired.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by method, route pattern and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route pattern",
            latency.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Open connections in the database pool",
            db_connections.clone(),
        );
        registry.register(
            "db_pool_idle_connections",
            "Idle connections in the database pool",
            db_idle.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            db_connections,
            db_idle,
            unrecorded,
            logins,
            events_expired,
        }
    }

    /// Counts a request that is not written to the event log.
    pub fn count_unrecorded(&self, class: &str, outcome: &'static str) {
        self.unrecorded
            .get_or_create(&UnrecordedLabels {
                class: class.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn count_login(&self, outcome: LoginOutcome) {
        let outcome = match outcome {
            LoginOutcome::Ok => "ok",
            LoginOutcome::Failed => "failed",
            LoginOutcome::Throttled => "throttled",
        };
        self.logins.get_or_create(&LoginLabels { outcome }).inc();
    }

    pub fn count_events_expired(&self, n: u64) {
        self.events_expired.inc_by(n);
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(seconds);
    }

    pub fn render(&self, db: &DatabaseConnection) -> String {
        let (size, idle) = match db.get_database_backend() {
            DbBackend::Sqlite => {
                let pool = db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DbBackend::MySql => {
                let pool = db.get_mysql_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DbBackend::Postgres => (0, 0),
        };
        self.db_connections.set(i64::from(size));
        self.db_idle.set(i64::try_from(idle).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

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
            .observe(&method, &route, status, elapsed.as_secs_f64());
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
