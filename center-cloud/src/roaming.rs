//! Roaming (docs/design.md §5): a device that logs in at an edge other than its home asks,
//! through that edge, to be moved. The center checks the device's own credentials
//! and, if they hold, makes the asking edge its home in one write. Sync does the
//! rest: the device arrives whole at its new edge, and the old edge learns the new
//! home and drops its copy. Only the center moves devices, so an edge cut off from
//! it refuses strangers rather than guessing.

use federation::protocol::Roam;
use fleet_node::events::{self, NewEvent};
use fleet_node::Node;
use fleet_store::devices::{self, LoginName};
use sea_orm::DbErr;

/// The device now homed at `edge`, or `None` when the request is refused.
pub async fn rehome(node: &Node, edge: i64, roam: &Roam) -> Result<Option<i64>, DbErr> {
    let Some(name) =
        LoginName::from_parts(roam.device_id, roam.model.as_deref(), roam.sn.as_deref())
    else {
        return Ok(None);
    };
    // Proven by its secret before the write turn is taken: a flood of wrong
    // secrets costs reads only, and never holds up the writers.
    if devices::authenticate(&node.db, name, &roam.secret)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let secret = roam.secret.as_str();
    let moved = node
        .transact(|txn| async move {
            let Some(device) = devices::authenticate(&*txn, name, secret).await? else {
                return Ok(None);
            };
            if device.edge_id == Some(edge) {
                // Registered for this edge, and it logged in before its rows got there.
                return Ok(Some((device.id, None)));
            }
            let mut moved = device.clone();
            moved.edge_id = Some(edge);
            moved.updated_at = fleet_store::now_ms();
            node.replica.update(&*txn, &device, moved).await?;
            let from = device.edge_id.map_or("none".to_string(), |e| e.to_string());
            events::record(
                &*txn,
                &node.replica,
                NewEvent {
                    actor: format!("edge:{edge}"),
                    action: "device.roamed".into(),
                    target_type: "device".into(),
                    target_id: device.id.to_string(),
                    status: 200,
                    detail: format!("home edge {from} -> {edge}"),
                },
            )
            .await?;
            Ok::<_, DbErr>(Some((device.id, Some(from))))
        })
        .await?;
    if let Some((device, Some(from))) = &moved {
        tracing::info!(device, from = %from, to = edge, "device re-homed");
    }
    Ok(moved.map(|(device, _)| device))
}
