//! The state every request handler of a node can reach.

use fleet_store::Replica;
use sea_orm::DatabaseConnection;

use crate::auth::Tokens;
use crate::metrics::Metrics;

pub struct Node {
    pub db: DatabaseConnection,
    pub replica: Replica,
    pub tokens: Tokens,
    pub metrics: Metrics,
}
