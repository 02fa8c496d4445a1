//! Frames an edge sends for the center itself rather than for the sync: its live view
//! (who is online there and their latest statuses) and roaming requests.

use std::sync::Arc;

use federation::protocol::Roamed;
use federation::LinkPdu;
use fleet_node::Node;
use fleet_store::{device_presence, device_status};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::{mpsc, Semaphore};

use super::Links;
use crate::roaming;

/// Roaming requests of one edge checked at once; more are answered "refused" at once.
const ROAMS_IN_FLIGHT: usize = 32;

impl Links {
    /// Frames for the center rather than the sync: the edge's live view, and roaming
    /// requests, at most [`ROAMS_IN_FLIGHT`] of them being checked at once.
    pub(super) async fn serve_inbox(
        self: Arc<Self>,
        node: Arc<Node>,
        edge: i64,
        mut inbox: mpsc::Receiver<LinkPdu>,
        back: mpsc::Sender<LinkPdu>,
    ) {
        let roams = Arc::new(Semaphore::new(ROAMS_IN_FLIGHT));
        while let Some(pdu) = inbox.recv().await {
            match pdu {
                LinkPdu::Live(live) => self.take_live(&node, edge, live).await,
                LinkPdu::Roam(roam) => {
                    let Ok(permit) = roams.clone().try_acquire_owned() else {
                        self.count_refused(edge, "roams_in_flight", 1);
                        let answer = Roamed {
                            request: roam.request,
                            device_id: None,
                        };
                        let _ = back.send(LinkPdu::Roamed(answer)).await;
                        continue;
                    };
                    // Beside the live view: a roaming login must not wait for a batch
                    // of statuses to be stored.
                    let (node, back) = (node.clone(), back.clone());
                    tokio::spawn(async move {
                        let device_id = match roaming::rehome(&node, edge, &roam).await {
                            Ok(device) => device,
                            Err(e) => {
                                tracing::warn!(edge, error = %e, "re-homing a roaming device failed");
                                None
                            }
                        };
                        drop(permit);
                        let answer = Roamed {
                            request: roam.request,
                            device_id,
                        };
                        let _ = back.send(LinkPdu::Roamed(answer)).await;
                    });
                }
                _ => {}
            }
        }
    }

    /// Takes in an edge's live view: who is online there, and their latest statuses
    /// (written as one batch).
    async fn take_live(&self, node: &Node, edge: i64, mut live: federation::protocol::Live) {
        let claimed: Vec<i64> = live
            .online
            .iter()
            .copied()
            .chain(live.statuses.iter().map(|s| s.device_id))
            .collect();
        let homed = match homed_at(node, edge, claimed).await {
            Ok(homed) => homed,
            Err(e) => {
                tracing::warn!(edge, error = %e, "reading the homes of an edge's live view failed");
                return;
            }
        };
        let before = live.online.len() + live.statuses.len();
        live.online.retain(|d| homed.contains(d));
        live.statuses.retain(|s| homed.contains(&s.device_id));
        let foreign = before - live.online.len() - live.statuses.len();
        if foreign > 0 {
            // Devices that just moved away are a normal race; counted, not stored.
            self.count_refused(edge, "live_not_home", foreign as u64);
            tracing::debug!(
                edge,
                entries = foreign,
                "live-view entries for devices not homed at the edge dropped"
            );
        }
        if live.full {
            self.online.retain(|_, at| *at != edge);
        }
        for device in &live.offline {
            self.online.remove_if(device, |_, at| *at == edge);
        }
        for device in &live.online {
            self.online.insert(*device, edge);
        }
        let now = fleet_store::now_ms();
        let rows: Vec<device_status::Model> = live
            .statuses
            .iter()
            .map(|s| device_status::Model {
                device_id: s.device_id,
                version: s.version,
                config_version: s.config_version,
                status: s.status.to_string(),
                updated_at: now,
            })
            .collect();
        let (full, arrived, left) = (live.full, &live.online, &live.offline);
        // Most frames say nothing new: no write turn for them.
        if !full && arrived.is_empty() && left.is_empty() && rows.is_empty() {
            return;
        }
        let rows = &rows;
        let written = node
            .transact(|txn| async move {
                if full {
                    device_presence::all_left(&*txn, edge, now).await?;
                }
                device_presence::set(&*txn, edge, left, false, now).await?;
                device_presence::set(&*txn, edge, arrived, true, now).await?;
                device_status::upsert_many(&*txn, rows.clone()).await
            })
            .await;
        if let Err(e) = written {
            tracing::warn!(edge, error = %e, "storing an edge's live view failed");
        }
    }
}

/// Which of `devices` the center records as homed at `edge`.
async fn homed_at(
    node: &Node,
    edge: i64,
    devices: Vec<i64>,
) -> Result<std::collections::HashSet<i64>, sea_orm::DbErr> {
    let mut homed = std::collections::HashSet::new();
    for chunk in devices.chunks(500) {
        let ids: Vec<i64> = fleet_store::devices::Entity::find()
            .select_only()
            .column(fleet_store::devices::Column::Id)
            .filter(fleet_store::devices::Column::EdgeId.eq(edge))
            .filter(fleet_store::devices::Column::Id.is_in(chunk.to_vec()))
            .into_tuple()
            .all(&node.db)
            .await?;
        homed.extend(ids);
    }
    Ok(homed)
}
