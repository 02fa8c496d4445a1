//! The site's part of the rollouts the center opened waves of: installs sent to
//! this edge's devices and followed to their end (`fleet_node::rollouts::site`),
//! whether or not the center is reachable.

use std::sync::Arc;
use std::time::Duration;

use fleet_node::Node;

/// How often the site looks at its rollouts: slots to fill, installs that moved.
const RUN_EVERY: Duration = Duration::from_secs(1);

/// Runs this edge's waves until the node stops.
pub async fn run_forever(node: Arc<Node>, edge: i64) {
    let mut tick = tokio::time::interval(RUN_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = fleet_node::rollouts::site::tick(&node, edge).await {
            tracing::warn!(error = %e, "running this site's rollouts failed");
        }
    }
}
