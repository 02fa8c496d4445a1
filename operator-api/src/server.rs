//! Building and running a node's HTTPS API: migrate the database, open it,
//! make the first admin, the token key and the TLS material if needed, then serve
//! the routes every node has plus the binary's own. `build` binds before it
//! returns, so tests can ask for port 0 and read the port back.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, App, HttpServer};
use base64::Engine;
use fleet_store::ids::Snowflake;
use fleet_store::migrations::Schema;
use fleet_store::schema::TableSpec;
use fleet_store::{Replica, StoreError};
use sea_orm::DbBackend;

use crate::lease::Lease;
use crate::settings::{NodeSettings, TlsSettings};
use crate::{audit, docs, events, health, metrics, users, ApiError, Node};
use fleet_node::loops::Loops;
use fleet_node::metrics::Metrics;
use fleet_node::tls::{self, CertFiles, TlsError};
use fleet_node::tokens::Tokens;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("migrating the database: {0}")]
    Migrations(#[source] StoreError),
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("worker id: {0}")]
    Worker(#[from] fleet_store::ids::BadWorker),
    #[error("creating the first admin: {0}")]
    Admin(#[from] ApiError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// The listen backlog asked for; the kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 65_535;

/// Registers a binary's own metrics in the node's registry.
pub type RegisterMetrics = Box<dyn FnOnce(&mut prometheus_client::registry::Registry) + Send>;

/// What a binary adds to the common node: its schema, its API document and its routes.
pub struct Service<R> {
    /// Which migrations bring its database up to date.
    pub schema: Schema,
    pub openapi: utoipa::openapi::OpenApi,
    pub routes: R,
    pub home_edges: fleet_node::devices::HomeEdges,
    pub presence: Option<std::sync::Arc<dyn fleet_node::devices::Presence>>,
    pub dispatch: Option<std::sync::Arc<dyn fleet_node::commands::Dispatch>>,
    /// Registers the binary's own metrics next to the common ones.
    pub metrics: Option<RegisterMetrics>,
}

/// A node bound to its port, ready to run.
pub struct Served {
    server: Server,
    port: u16,
    /// The development CA to trust, when the node generated its certificate.
    pub ca_file: Option<PathBuf>,
    /// The first admin's password, when the node made one up; show it once.
    pub generated_admin_password: Option<String>,
    pub tls: bool,
    /// The certificate the node serves, for other listeners of the same node.
    pub tls_files: Option<CertFiles>,
    pub node: Arc<Node>,
    /// The worker id this replica leased, when it leases one.
    lease: Option<Lease>,
    /// The node's long-running tasks; they stop once the API has.
    pub loops: Loops,
    /// How long winding down may take on a stop (`Served::run_until_signal`).
    shutdown_timeout: std::time::Duration,
}

impl Served {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server gracefully when asked (`run_until_signal` does on SIGINT/SIGTERM).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Binds another endpoint of this node (devices', or edge links') and makes the
    /// TLS configuration it serves with, the API's own (none without TLS). Answers the
    /// listener, its port and the TLS configuration.
    ///
    /// The listen backlog is as long as the system allows (`net.core.somaxconn`):
    /// when every device of a site dials a restarted edge at once, a connection the
    /// backlog cannot hold is dropped, and its device only tries again a second later.
    pub async fn bind_beside(
        &self,
        addr: std::net::SocketAddr,
        what: &str,
    ) -> Result<(tokio::net::TcpListener, u16, Option<rustls::ServerConfig>), StartupError> {
        let bind = || {
            let socket = match addr {
                std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(LISTEN_BACKLOG)
        };
        let listener = bind().map_err(|source| StartupError::Io {
            context: format!("binding the {what} {addr}"),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Io {
                context: format!("reading the {what} address"),
                source,
            })?
            .port();
        let tls = match &self.tls_files {
            Some(files) => Some(tls::server_config(files)?),
            None => None,
        };
        Ok((listener, port, tls))
    }

    /// Serves until SIGTERM or SIGINT (or until the server stops on its own), then
    /// runs `wind_down` (for at most `--shutdown-timeout-s`) and only then stops the
    /// HTTP server gracefully. What the node must end cleanly goes in `wind_down`: it
    /// runs while the HTTP workers still do, and database connections a worker opened
    /// die with it.
    pub async fn run_until_signal<F, Fut>(self, wind_down: F) -> std::io::Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (handle, self_timeout) = (self.handle(), self.shutdown_timeout);
        let run = self.run_until_stopped();
        tokio::pin!(run);
        tokio::select! {
            served = &mut run => return served,
            () = stop_signal() => {}
        }
        if tokio::time::timeout(self_timeout, wind_down())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_s = self_timeout.as_secs(),
                "the shutdown timeout passed before the node wound down; stopping anyway"
            );
        }
        // The server future handles the stop, so it is polled meanwhile.
        let ((), served) = tokio::join!(handle.stop(true), run);
        served
    }

    /// Serves until the server stops, then stops the node's loops and gives back
    /// its worker id.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        self.loops.stop().await;
        if let Some(lease) = &self.lease {
            lease.release(&self.node.db).await;
        }
        served
    }
}

pub async fn build<R>(settings: &NodeSettings, service: Service<R>) -> Result<Served, StartupError>
where
    R: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartupError::Io {
        context: format!("creating {}", settings.data_dir.display()),
        source,
    })?;
    // The pool first: when the migrations' connection closes, it is then not the
    // database's last one, and SQLite does not checkpoint the write-ahead log a
    // killed node left (seconds for a busy edge's) before the node can serve.
    let db = fleet_store::connect(&settings.database_url, settings.db_max_connections).await?;
    service
        .schema
        .migrate(&settings.database_url)
        .await
        .map_err(StartupError::Migrations)?;
    let key = fleet_store::settings::get_or_init(&db, "token_key", || {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        base64::engine::general_purpose::STANDARD.encode(key)
    })
    .await?;
    let mut metrics = Metrics::new();
    if let Some(register) = service.metrics {
        register(&mut metrics.registry);
    }
    let lease = match (service.schema, settings.worker_id_pinned) {
        (Schema::Center, false) => Some(Lease::take(&db).await?),
        _ => None,
    };
    let worker_id = lease.as_ref().map_or(settings.worker_id, |l| l.worker_id);
    let mut node = Node::new(
        db,
        Replica::new(Snowflake::new(worker_id)?).with_max_ahead_ms(settings.max_clock_skew_ms),
        Tokens::new(key.as_bytes(), Duration::from_secs(settings.token_ttl_s)),
        metrics,
    );
    let highest = node.replica.resume(&node.db).await?;
    tracing::debug!(
        stamp = highest,
        "clock resumed above the highest stored stamp"
    );
    node.home_edges = service.home_edges;
    node.presence = service.presence;
    node.dispatch = service.dispatch;
    let node = Arc::new(node);
    let loops = Loops::default();
    loops.spawn(fleet_node::accounts::watch(node.clone()));
    if sea_orm::ConnectionTrait::get_database_backend(&node.db) == sea_orm::DbBackend::Sqlite {
        loops.spawn(fleet_store::checkpoint_forever(node.db.clone()));
    }
    loops.spawn(fleet_node::node::compact_forever(
        node.clone(),
        settings.change_log_retain,
    ));
    loops.track(fleet_node::events::write_soon_forever(
        node.clone(),
        loops.stopping(),
    ));
    loops.spawn(fleet_node::events::expire_forever(
        node.clone(),
        settings.event_retain,
    ));
    let generated_admin_password =
        users::ensure_admin(&node, settings.admin_password.clone()).await?;

    let (tls_files, ca_file) = match &settings.tls {
        TlsSettings::Off => (None, None),
        TlsSettings::Files { cert, key } => (
            Some(CertFiles {
                ca: None,
                cert: cert.clone(),
                key: key.clone(),
                tickets: settings.data_dir.join("tls/ticket.key"),
            }),
            None,
        ),
        TlsSettings::Development { extra_hosts } => {
            let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
            if !settings.listen.ip().is_unspecified() {
                hosts.push(settings.listen.ip().to_string());
            }
            hosts.extend(extra_hosts.iter().cloned());
            hosts.dedup();
            let files = tls::ensure_dev_certs(&settings.data_dir.join("tls"), &hosts)?;
            let ca = files.ca.clone();
            (Some(files), ca)
        }
    };

    let listener = TcpListener::bind(settings.listen).map_err(|source| StartupError::Io {
        context: format!("binding {}", settings.listen),
        source,
    })?;
    let port = listener
        .local_addr()
        .map_err(|source| StartupError::Io {
            context: "reading the bound address".into(),
            source,
        })?
        .port();
    let body_limit = settings.body_limit;
    let api = service.openapi;
    let routes = service.routes;
    let app_node = web::Data::from(node.clone());
    let mut http = HttpServer::new(move || {
        App::new()
            .app_data(app_node.clone())
            .app_data(web::PayloadConfig::new(body_limit))
            .wrap(ErrorHandlers::new().default_handler(docs::envelope_errors))
            .wrap(from_fn(audit::middleware))
            .wrap(from_fn(metrics::observe))
            .configure(common_routes)
            .configure(routes.clone())
            .configure(|cfg| docs::configure(cfg, api.clone()))
            .default_service(web::to(docs::not_found))
    })
    .shutdown_timeout(settings.shutdown_timeout.as_secs())
    .disable_signals();
    if let Some(workers) = settings.workers {
        http = http.workers(workers);
    }
    let io = |source| StartupError::Io {
        context: format!("listening on {}", settings.listen),
        source,
    };
    let server = match &tls_files {
        Some(files) => http
            .listen_rustls_0_23(listener, tls::server_config(files)?)
            .map_err(io)?,
        None => http.listen(listener).map_err(io)?,
    }
    .run();
    if let Some(lease) = &lease {
        loops.spawn(lease.clone().keep(node.clone(), server.handle()));
    }
    Ok(Served {
        server,
        port,
        ca_file,
        generated_admin_password,
        tls: tls_files.is_some(),
        tls_files,
        node,
        lease,
        loops,
        shutdown_timeout: settings.shutdown_timeout,
    })
}

/// The routes every node has: operations, login, events and accounts.
fn common_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(metrics::scrape))
        .route("/api/v1/auth/login", web::post().to(crate::auth::login))
        .route("/api/v1/events", web::get().to(events::list))
        .configure(users::configure);
}

/// Prints what an operator needs after start: where the node listens, the first admin's
/// password when one was made up (once), and the development CA to trust.
pub fn announce(
    out: &mut impl std::io::Write,
    name: &str,
    settings: &NodeSettings,
    served: &Served,
) -> std::io::Result<()> {
    let scheme = if served.tls { "https" } else { "http" };
    writeln!(
        out,
        "{name} listening on {scheme}://{}:{}",
        settings.listen.ip(),
        served.port()
    )?;
    if let Some(password) = &served.generated_admin_password {
        writeln!(
            out,
            "first start: created user `admin` with password {password} (shown once)"
        )?;
    }
    if let Some(ca) = &served.ca_file {
        writeln!(out, "development CA certificate: {}", ca.display())?;
    }
    Ok(())
}

/// One log line per event on stderr, filtered by `filter` (a `tracing` directive).
pub fn init_logging(filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

/// Writes the DDL a node creates, under a header naming the binary and its `sql/` file.
pub fn print_schema(
    out: &mut impl std::io::Write,
    binary: &str,
    sql_file: &str,
    tables: &[TableSpec],
    backend: DbBackend,
) -> std::io::Result<()> {
    writeln!(
        out,
        "-- Schema of the {binary} database, as `{binary} print-schema` prints it.
-- The binary's versioned migrations create it at start, and upgrade older databases;
-- this is for operators who review the database. A test keeps {sql_file} equal to
-- what the migrations create.
-- Replicated tables carry hlc (hybrid logical clock stamp), origin (writing node),
-- deleted (tombstone) and field_stamps (per-field HLC stamps, JSON); every write to
-- them is appended to change_log in the same transaction. There are no foreign keys:
-- replicated rows may arrive in any order, so the application keeps integrity.
"
    )?;
    out.write_all(fleet_store::schema::ddl(backend, tables).as_bytes())
}

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM received; stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; stopping"),
    }
}
