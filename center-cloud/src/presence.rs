//! Who is online at edges whose link another center replica holds. The holder writes
//! what its edges' live views say to `device_presence` (`crate::link`); every replica
//! reads it here, so the live view is the same whichever replica answers.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use dashmap::DashMap;
use fleet_node::Node;
use fleet_store::{device_presence, link_leases};
use sea_orm::DbErr;

/// How often a replica reads the presence other replicas wrote.
const EVERY: Duration = Duration::from_secs(1);
/// How far back each read looks past the last row seen: rows are stamped by their
/// writers' clocks, which may run this much apart.
const OVERLAP_MS: i64 = 5_000;

/// What other replicas wrote of their edges' devices.
#[derive(Default)]
pub struct Elsewhere {
    /// Device id -> edge id, for devices online as last written.
    devices: DashMap<i64, i64>,
    /// Edges whose link another replica holds live.
    edges: RwLock<HashSet<i64>>,
}

impl Elsewhere {
    /// Online at an edge another replica holds live (and `linked_here` does not).
    pub fn is_online(&self, device: i64, linked_here: impl Fn(i64) -> bool) -> bool {
        let Some(edge) = self.devices.get(&device).map(|e| *e) else {
            return false;
        };
        !linked_here(edge)
            && self
                .edges
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&edge)
    }

    /// Reads, every [`EVERY`], what replicas other than `holder` wrote, for as long as
    /// the process runs.
    pub async fn watch(&self, node: &Node, holder: &str) {
        let mut tick = tokio::time::interval(EVERY);
        let mut seen = 0_i64;
        loop {
            tick.tick().await;
            if let Err(e) = self.read(node, holder, &mut seen).await {
                tracing::warn!(error = %e, "reading device presence failed");
            }
        }
    }

    async fn read(&self, node: &Node, holder: &str, seen: &mut i64) -> Result<(), DbErr> {
        let from = seen.saturating_sub(OVERLAP_MS);
        for row in device_presence::since(&node.db, from).await? {
            *seen = (*seen).max(row.updated_at);
            if row.online {
                self.devices.insert(row.device_id, row.edge_id);
            } else {
                self.devices.remove(&row.device_id);
            }
        }
        let held: HashSet<i64> = link_leases::held_by_others(&node.db, holder)
            .await?
            .into_iter()
            .collect();
        *self.edges.write().unwrap_or_else(|p| p.into_inner()) = held;
        Ok(())
    }
}
