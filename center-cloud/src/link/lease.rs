//! Which replica holds an edge's link: a lease row in the shared database, taken at
//! login, renewed every heartbeat, and taken over by another replica only after it
//! expired (`docs/sync.md`).

use std::sync::Arc;

use fleet_node::Node;
use fleet_store::link_leases;
use tokio::time::Instant;

use super::Links;

impl Links {
    /// How long a link lease lasts without renewal: a few heartbeats.
    fn lease_ttl_ms(&self) -> i64 {
        i64::try_from(self.heartbeat.as_millis())
            .unwrap_or(5_000)
            .saturating_mul(3)
            .max(3_000)
    }

    /// Takes the edge's link lease for this replica; `None` (and the link is refused)
    /// while another replica holds the edge's link.
    pub(super) async fn take_lease(&self, node: &Node, edge: i64, skew_ms: i64) -> Option<i64> {
        let ttl = self.lease_ttl_ms();
        let holder = &self.holder;
        let taken = node
            .transact(
                |txn| async move { link_leases::take(&*txn, edge, holder, ttl, skew_ms).await },
            )
            .await;
        match taken {
            Ok(Some(lease)) => Some(lease),
            Ok(None) => {
                self.count_refused(edge, "link_held_elsewhere", 1);
                tracing::info!(
                    edge,
                    "another center replica holds this edge's link; refused here"
                );
                None
            }
            Err(e) => {
                tracing::error!(edge, error = %e, "taking an edge's link lease failed");
                None
            }
        }
    }

    /// Renews the link lease every heartbeat; returns when it is lost (another
    /// replica took it over after it expired) or cannot be renewed in time.
    pub(super) async fn hold_lease(self: Arc<Self>, node: Arc<Node>, edge: i64, lease: i64) {
        let ttl = self.lease_ttl_ms();
        let mut tick = tokio::time::interval(self.heartbeat);
        let mut renewed = Instant::now();
        loop {
            tick.tick().await;
            // Its own task: the link's end cancels this loop, and a transaction cut
            // off mid-way would keep SQLite's write lock until its rollback runs.
            let renewed_now = tokio::spawn({
                let (node, holder) = (node.clone(), self.holder.clone());
                async move {
                    let holder = &holder;
                    node.transact(|txn| async move {
                        link_leases::renew(&*txn, edge, holder, lease, ttl).await
                    })
                    .await
                }
            });
            let renewed_now = async {
                renewed_now
                    .await
                    .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
            };
            match renewed_now.await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!(
                        edge,
                        "this replica lost the edge's link lease; closing the link"
                    );
                    return;
                }
                Err(e) if renewed.elapsed() + self.heartbeat >= self.heartbeat * 3 => {
                    tracing::warn!(edge, error = %e, "the edge's link lease could not be renewed in time; closing the link");
                    return;
                }
                Err(e) => {
                    tracing::debug!(edge, error = %e, "renewing an edge's link lease failed; retrying")
                }
            }
        }
    }
}
