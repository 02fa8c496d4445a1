//! The center as a node: the common node server with the center's tables, API
//! document and routes.

use actix_web::web;
use fleet_node::devices::HomeEdges;
use fleet_store::schema::{self, TableSpec};
use operator_api::devices;
use operator_api::server::{self, Served, Service, StartupError};
use operator_api::{commands, configs, pulled_logs};
use sea_orm::DbBackend;
use std::sync::Arc;

use crate::artifacts::{self, Artifacts};
use crate::config::Settings;
use crate::link::Links;
use crate::routing::Routing;
use crate::{bulk, edges, groups, lab, openapi, rollouts};

/// Every table of the center's database, as `print-schema` shows it.
pub fn tables(backend: DbBackend) -> Vec<TableSpec> {
    schema::center_tables(backend)
}

/// A running center: its API and the endpoint edges link to.
pub struct Center {
    pub served: Served,
    pub link_port: u16,
    pub links: Arc<Links>,
}

impl Center {
    /// Closes the edge links and stops the API gracefully.
    pub async fn stop(&self) {
        self.links.shutdown();
        self.served.handle().stop(true).await;
    }
}

pub struct Application;

impl Application {
    pub async fn build(settings: Settings) -> Result<Center, StartupError> {
        let import_limit = settings.import_limit;
        let links = Arc::new(Links::new(settings.link_heartbeat));
        let routing = Arc::new(Routing::new(links.clone()));
        let artifacts = Arc::new(Artifacts::new(settings.artifact_max_bytes));
        let service = Service {
            schema: fleet_store::migrations::Schema::Center,
            openapi: openapi::document(),
            routes: {
                let links = web::Data::from(links.clone());
                let artifacts = web::Data::from(artifacts.clone());
                move |cfg: &mut web::ServiceConfig| {
                    cfg.app_data(links.clone()).app_data(artifacts.clone());
                    routes(cfg, import_limit)
                }
            },
            home_edges: HomeEdges::Registry,
            presence: Some(links.clone()),
            dispatch: Some(routing.clone()),
            metrics: {
                let links = links.clone();
                Some(Box::new(move |registry| links.register(registry)))
            },
        };
        let served = server::build(&settings.node, service).await?;
        routing.attach(served.node.clone());
        artifacts
            .attach(&served.node, settings.artifact_signing_key.as_deref())
            .await?;
        served
            .loops
            .spawn(artifacts::sweep_forever(served.node.clone()));
        served
            .loops
            .spawn(rollouts::drive_forever(served.node.clone()));
        // Replicas over one database: a change committed through another replica
        // wakes the links this one holds.
        served
            .loops
            .spawn(fleet_node::node::watch_shared_log(served.node.clone()));
        // Who is online at edges other replicas hold.
        served
            .loops
            .spawn(links.clone().watch_presence(served.node.clone()));
        let (listener, link_port, tls) = served
            .bind_beside(settings.link_listen, "edge link endpoint")
            .await?;
        served
            .loops
            .spawn(links.clone().serve(served.node.clone(), listener, tls));
        Ok(Center {
            served,
            link_port,
            links,
        })
    }
}

fn routes(cfg: &mut web::ServiceConfig, import_limit: usize) {
    cfg.configure(|c| bulk::configure(c, import_limit))
        .configure(devices::configure)
        .configure(groups::configure)
        .configure(edges::configure)
        .configure(commands::configure)
        .configure(configs::configure)
        .configure(pulled_logs::configure)
        .configure(lab::configure)
        .configure(artifacts::configure)
        .configure(rollouts::configure);
}
