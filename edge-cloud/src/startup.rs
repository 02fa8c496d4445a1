//! The edge as a node: the common node server with the fleet tables and the site
//! routes. Standalone (until it joins a center) its devices have no home edge id.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use fleet_node::devices::HomeEdges;
use fleet_node::loops::Loops;
use fleet_store::schema::{self, TableSpec};
use operator_api::devices;
use operator_api::server::{self, Served, Service, StartupError};
use operator_api::{commands, configs, pulled_logs};
use sea_orm::DbBackend;

use crate::artifacts::{ArtifactMetrics, Artifacts};
use crate::config::Settings;
use crate::device_auth::DeviceAuth;
use crate::hub::{Hub, HubMetrics, Sessions, SiteApi};
use crate::uplink::{Uplink, UplinkMetrics};
use crate::uploads::Uploads;
use crate::{artifacts, openapi, status, uploads};

/// Every table of an edge's database, as `print-schema` shows it.
pub fn tables(backend: DbBackend) -> Vec<TableSpec> {
    schema::fleet_tables(backend)
}

impl Edge {
    /// Stops everything but the site API ([`Stopper::stop`]), then the site API.
    pub async fn stop(&self) {
        self.stopper.stop().await;
        self.served.handle().stop(true).await;
    }
}

/// A running edge: its site API and its device hub.
pub struct Edge {
    pub served: Served,
    /// Port of the devices' WebSocket endpoint.
    pub device_port: u16,
    pub sessions: Arc<Sessions>,
    pub hub: Arc<Hub>,
    /// The link to the center, when the edge joined one.
    pub uplink: Option<Arc<Uplink>>,
    pub stopper: Stopper,
}

/// What a stop winds down besides the site API: the device hub, the center link and
/// the loops behind them (command sweep, status and event writers), in that order, so
/// that nothing a session queues on its way out is lost.
#[derive(Clone)]
pub struct Stopper {
    hub: Arc<Hub>,
    uplink: Option<Arc<Uplink>>,
    loops: Loops,
    /// Fetches of artifacts from the center.
    fetches: Loops,
}

impl Stopper {
    /// Closes the device endpoint and ends every session (each device is told the edge
    /// is stopping), closes the center link, then lets the loops write what is queued
    /// (device events, the last statuses) and waits for every one of them.
    pub async fn stop(&self) {
        if let Some(uplink) = &self.uplink {
            uplink.shutdown();
        }
        self.hub.shutdown();
        self.hub.connections_ended().await;
        self.fetches.stop().await;
        self.loops.stop().await;
    }
}

pub struct Application;

impl Application {
    pub async fn build(settings: Settings) -> Result<Edge, StartupError> {
        let sessions = Arc::new(Sessions::default());
        let site_sessions = web::Data::from(sessions.clone());
        let hub_metrics = HubMetrics::default();
        let uplink_metrics = UplinkMetrics::default();
        let uploads = web::Data::new(Uploads {
            max_bytes: settings.log_upload_max_bytes,
        });
        let device_auth = web::Data::new(DeviceAuth::default());
        let artifact_metrics = ArtifactMetrics::default();
        let fetches = Loops::default();
        let artifacts = Arc::new(
            Artifacts::open(
                &settings.node.data_dir.join("artifacts"),
                settings.artifact_cache_bytes,
                settings.center.as_ref(),
                artifact_metrics.clone(),
                fetches.clone(),
            )
            .map_err(|e| StartupError::Config(format!("the artifact cache: {e}")))?,
        );
        let site_artifacts = web::Data::from(artifacts.clone());
        let service = Service {
            schema: fleet_store::migrations::Schema::Edge,
            openapi: openapi::document(),
            routes: move |cfg: &mut web::ServiceConfig| {
                cfg.app_data(site_sessions.clone())
                    .app_data(uploads.clone())
                    .app_data(device_auth.clone())
                    .app_data(site_artifacts.clone())
                    .route("/api/v1/devices/{id}/status", web::get().to(status::get))
                    .configure(devices::configure)
                    .configure(configs::configure)
                    .configure(commands::configure)
                    .configure(pulled_logs::configure)
                    .configure(uploads::configure)
                    .configure(artifacts::configure);
            },
            home_edges: HomeEdges::Fixed(settings.center.as_ref().map(|c| c.edge_id)),
            presence: Some(sessions.clone()),
            dispatch: Some(sessions.clone()),
            metrics: Some(Box::new({
                let (hub, uplink) = (hub_metrics.clone(), uplink_metrics.clone());
                move |registry: &mut prometheus_client::registry::Registry| {
                    hub.register(registry);
                    uplink.register(registry);
                    artifact_metrics.register(registry);
                }
            })),
        };
        let served = server::build(&settings.node, service).await?;
        // Bound at once, taken from once the devices are cached: a device dialing
        // meanwhile waits in the backlog instead of being refused and backing off.
        let (listener, device_port, tls) = served
            .bind_beside(settings.device_listen, "device endpoint")
            .await?;
        sessions.restore(&served.node.db).await?;
        let loops = served.loops.clone();
        let uplink = match settings.center.clone() {
            Some(center) => {
                loops.spawn(crate::rollouts::run_forever(
                    served.node.clone(),
                    center.edge_id,
                ));
                let uplink = Arc::new(
                    Uplink::new(
                        center,
                        served.node.clone(),
                        sessions.clone(),
                        uplink_metrics,
                    )
                    .map_err(|e| StartupError::Config(e.to_string()))?,
                );
                loops.spawn(uplink.clone().run());
                Some(uplink)
            }
            None => None,
        };
        let hub = Arc::new(Hub::new(
            served.node.clone(),
            sessions.clone(),
            settings.hub.clone(),
            tls,
            hub_metrics,
            SiteApi {
                scheme: if served.tls { "https" } else { "http" },
                port: served.port(),
                log_max_bytes: settings.log_upload_max_bytes,
                artifacts,
            },
            uplink.clone(),
        ));
        loops.track(hub.clone().sweep(Duration::from_secs(1), loops.stopping()));
        loops.track(hub.clone().mark_sent(loops.stopping()));
        loops.track(hub.clone().write_events(loops.stopping()));
        loops.track(hub.clone().persist(settings.status_flush, loops.stopping()));
        // Before the first device gets in: a restarted edge is met by every device
        // at once, and their logins then read no row from the database.
        match served.node.preload_devices().await {
            Ok(n) => tracing::info!(devices = n, "device rows cached for logins"),
            Err(e) => tracing::warn!(error = %e, "caching device rows failed; logins read them"),
        }
        loops.spawn(hub.clone().serve(listener));
        let stopper = Stopper {
            hub: hub.clone(),
            uplink: uplink.clone(),
            loops,
            fetches,
        };
        Ok(Edge {
            served,
            device_port,
            sessions,
            hub,
            uplink,
            stopper,
        })
    }
}
