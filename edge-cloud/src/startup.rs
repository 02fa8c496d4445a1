//! The edge as a node: the common node server with the fleet tables and the site
//! routes. Standalone (until it joins a center) its devices have no home edge id.

use actix_web::web;
use fleet_store::schema::{self, TableSpec};
use operator_api::devices::{self, HomeEdges};
use operator_api::server::{self, Served, Service, StartupError};
use sea_orm::DbBackend;

use crate::config::Settings;
use crate::openapi;

/// Every table of an edge's database, in creation order.
pub fn tables(backend: DbBackend) -> Vec<TableSpec> {
    schema::fleet_tables(backend)
}

pub struct Application;

impl Application {
    pub async fn build(settings: Settings) -> Result<Served, StartupError> {
        let service = Service {
            tables,
            openapi: openapi::document(),
            routes: |cfg: &mut web::ServiceConfig| {
                cfg.configure(devices::configure);
            },
            home_edges: HomeEdges::Fixed(None),
        };
        server::build(&settings.node, service).await
    }
}
