//! The center's command fast path: a new command (or desired configuration) goes
//! straight down the link of its device's home edge, ahead of the change log that
//! carries it too (`crate::link`).

use std::sync::Arc;

use fleet_node::Node;
use sea_orm::EntityTrait;

use crate::link::Links;

/// The center's command fast path: a new command (or desired configuration) goes
/// straight down the link of its device's home edge, ahead of the change log that
/// carries it too. The edge merges it like any change, so getting it twice is
/// harmless; if the link is down, the log delivers it when the edge is back.
pub struct Routing {
    pub links: Arc<Links>,
    node: std::sync::OnceLock<Arc<Node>>,
}

impl Routing {
    pub fn new(links: Arc<Links>) -> Self {
        Self {
            links,
            node: std::sync::OnceLock::new(),
        }
    }

    /// The node is built after its dispatch is chosen; it is handed over here.
    pub fn attach(&self, node: Arc<Node>) {
        let _ = self.node.set(node);
    }

    /// Sends a new row down its device's home edge link. The row as just written is
    /// what goes: its stamps are the ones the change log carries too.
    fn route(&self, device: i64, changes: Result<Vec<fleet_store::sync::Change>, sea_orm::DbErr>) {
        let (Some(node), links, Ok(changes)) =
            (self.node.get().cloned(), self.links.clone(), changes)
        else {
            return;
        };
        tokio::spawn(async move {
            let home = fleet_store::devices::Entity::find_by_id(device)
                .one(&node.db)
                .await
                .ok()
                .flatten()
                .and_then(|d| d.edge_id);
            if let Some(edge) = home {
                links.push(edge, changes);
            }
        });
    }
}

impl fleet_node::commands::Dispatch for Routing {
    fn offer(&self, command: &fleet_store::commands::Model) -> bool {
        self.route(command.device_id, fleet_store::sync::row_changes(command));
        false
    }

    /// A fan-out is not copied down the fast path: the commit wakes every link at
    /// once, and each edge's link pushes the batch from the change log in frames of
    /// many commands. A fast copy would reach the edge after that, only to be merged
    /// a second time.
    fn offer_many(&self, _commands: &[fleet_store::commands::Model]) {}

    fn configure(&self, config: &fleet_store::desired_configs::Model) -> bool {
        self.route(config.device_id, fleet_store::sync::row_changes(config));
        false
    }
}
