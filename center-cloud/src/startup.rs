//! The center as a node: the common node server with the center's tables, API
//! document and routes.

use actix_web::web;
use fleet_store::schema::{self, TableSpec};
use operator_api::devices::{self, HomeEdges};
use operator_api::server::{self, Served, Service, StartupError};
use sea_orm::DbBackend;

use crate::config::Settings;
use crate::{bulk, edges, groups, lab, openapi};

/// Every table of the center's database, in creation order.
pub fn tables(backend: DbBackend) -> Vec<TableSpec> {
    let mut all = schema::fleet_tables(backend);
    all.push(schema::table(backend, fleet_store::edges::Entity));
    all
}

pub struct Application;

impl Application {
    pub async fn build(settings: Settings) -> Result<Served, StartupError> {
        let import_limit = settings.import_limit;
        let service = Service {
            tables,
            openapi: openapi::document(),
            routes: move |cfg: &mut web::ServiceConfig| routes(cfg, import_limit),
            home_edges: HomeEdges::Registry,
            presence: None,
            dispatch: None,
            metrics: None,
        };
        server::build(&settings.node, service).await
    }
}

fn routes(cfg: &mut web::ServiceConfig, import_limit: usize) {
    cfg.configure(|c| bulk::configure(c, import_limit))
        .configure(devices::configure)
        .configure(groups::configure)
        .configure(edges::configure)
        .configure(lab::configure);
}
