//! Building and running a center: open the database, create the schema, make the
//! first admin and the TLS material if needed, then serve. `Application::build` binds
//! before it returns, so tests can ask for port 0 and read the port back.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, App, HttpServer};
use base64::Engine;
use fleet_store::ids::Snowflake;
use fleet_store::schema::{self, TableSpec};
use fleet_store::{Replica, StoreError};
use operator_api::auth::Tokens;
use operator_api::metrics::Metrics;
use operator_api::tls::{self, CertFiles, TlsError};
use operator_api::{audit, docs, events, health, metrics, users, ApiError, Node};
use sea_orm::DbBackend;

use crate::config::{Settings, TlsSettings};
use crate::{bulk, devices, edges, groups, lab, openapi};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("creating the schema: {0}")]
    Schema(#[from] sea_orm::DbErr),
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
}

/// Every table of the center's database, in creation order.
pub fn tables(backend: DbBackend) -> Vec<TableSpec> {
    let mut all = schema::fleet_tables(backend);
    all.push(schema::table(backend, edges::table::Entity));
    all
}

pub struct Application {
    server: Server,
    port: u16,
    /// The development CA to trust, when the center generated its certificate.
    pub ca_file: Option<PathBuf>,
    /// The first admin's password, when the center made one up; show it once.
    pub generated_admin_password: Option<String>,
    pub tls: bool,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartupError::Io {
            context: format!("creating {}", settings.data_dir.display()),
            source,
        })?;
        let db = fleet_store::connect(&settings.database_url, settings.db_max_connections).await?;
        schema::ensure(&db, &tables(db_backend(&db))).await?;
        let key = fleet_store::settings::get_or_init(&db, "token_key", || {
            base64::engine::general_purpose::STANDARD.encode(rand_key())
        })
        .await?;
        let node = web::Data::new(Node::new(
            db,
            Replica::new(Snowflake::new(settings.worker_id)?),
            Tokens::new(key.as_bytes(), Duration::from_secs(settings.token_ttl_s)),
            Metrics::new(),
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
        let api = openapi::document();
        let body_limit = settings.body_limit;
        let import_limit = settings.import_limit;
        let mut http = HttpServer::new(move || {
            App::new()
                .app_data(node.clone())
                .app_data(web::PayloadConfig::new(body_limit))
                .wrap(ErrorHandlers::new().default_handler(docs::envelope_errors))
                .wrap(from_fn(audit::middleware))
                .wrap(from_fn(metrics::observe))
                .configure(|cfg| routes(cfg, import_limit))
                .configure(|cfg| docs::configure(cfg, api.clone()))
                .default_service(web::to(docs::not_found))
        })
        .shutdown_timeout(30);
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
        Ok(Self {
            server,
            port,
            ca_file,
            generated_admin_password,
            tls: tls_files.is_some(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server gracefully when asked (SIGINT/SIGTERM are handled already).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn db_backend(db: &sea_orm::DatabaseConnection) -> DbBackend {
    use sea_orm::ConnectionTrait;
    db.get_database_backend()
}

fn rand_key() -> [u8; 32] {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    key
}

fn routes(cfg: &mut web::ServiceConfig, import_limit: usize) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(metrics::scrape))
        .route(
            "/api/v1/auth/login",
            web::post().to(operator_api::auth::login),
        )
        .route("/api/v1/events", web::get().to(events::list))
        .configure(users::configure)
        .configure(|c| bulk::configure(c, import_limit))
        .configure(devices::configure)
        .configure(groups::configure)
        .configure(edges::configure)
        .configure(lab::configure);
}
