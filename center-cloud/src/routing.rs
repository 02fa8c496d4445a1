//! The center's command fast path: a new command (or desired configuration) goes
//! straight down the link of its device's home edge, ahead of the change log that
//! carries it too (`crate::link`).

use std::sync::Arc;

use fleet_node::Node;
use fleet_store::sync::Change;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

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

    fn route(&self, table: &'static str, id: i64, device: i64) {
        let (Some(node), links) = (self.node.get().cloned(), self.links.clone()) else {
            return;
        };
        tokio::spawn(async move {
            let home = fleet_store::devices::Entity::find_by_id(device)
                .one(&node.db)
                .await
                .ok()
                .flatten()
                .and_then(|d| d.edge_id);
            let Some(edge) = home else { return };
            if let Ok(changes) = fleet_store::sync::full_row(&node.db, table, id).await {
                links.push(edge, changes);
            }
        });
    }
}

impl fleet_node::commands::Dispatch for Routing {
    fn offer(&self, command: &fleet_store::commands::Model) -> bool {
        self.route("commands", command.id, command.device_id);
        false
    }

    /// A fan-out goes down each home edge's link in frames of many commands, so the
    /// edge merges them in a few transactions rather than one per command.
    fn offer_many(&self, commands: &[fleet_store::commands::Model]) {
        let (Some(node), links) = (self.node.get().cloned(), self.links.clone()) else {
            return;
        };
        let commands = commands.to_vec();
        tokio::spawn(async move {
            let mut by_edge: std::collections::HashMap<i64, Vec<Change>> = Default::default();
            for chunk in commands.chunks(500) {
                let ids: Vec<i64> = chunk.iter().map(|c| c.device_id).collect();
                let homes: Vec<(i64, Option<i64>)> = match fleet_store::devices::Entity::find()
                    .select_only()
                    .column(fleet_store::devices::Column::Id)
                    .column(fleet_store::devices::Column::EdgeId)
                    .filter(fleet_store::devices::Column::Id.is_in(ids))
                    .into_tuple()
                    .all(&node.db)
                    .await
                {
                    Ok(homes) => homes,
                    Err(_) => return,
                };
                let homes: std::collections::HashMap<i64, Option<i64>> =
                    homes.into_iter().collect();
                for c in chunk {
                    let (Some(Some(edge)), Ok(changes)) =
                        (homes.get(&c.device_id), fleet_store::sync::row_changes(c))
                    else {
                        continue;
                    };
                    by_edge.entry(*edge).or_default().extend(changes);
                }
            }
            for (edge, changes) in by_edge {
                for frame in changes.chunks(federation::protocol::BATCH as usize) {
                    links.push(edge, frame.to_vec());
                }
            }
        });
    }

    fn configure(&self, config: &fleet_store::desired_configs::Model) -> bool {
        self.route("desired_configs", config.id, config.device_id);
        false
    }
}
