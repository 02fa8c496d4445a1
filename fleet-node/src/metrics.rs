//! A node's Prometheus metrics: one registry the node's parts register into, and the
//! counters every node keeps (requests by route pattern, logins, the database pool,
//! event retention).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};

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

    /// Counts one answered request and its latency.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
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
