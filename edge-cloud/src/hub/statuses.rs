//! Device statuses: held in memory, applied as full reports or diffs on a version,
//! and written to the database in coalesced batches, never once per report.

use std::sync::Arc;
use std::time::Duration;

use fleet_store::replica::read_locked;
use fleet_store::{device_status, devices};
use sea_orm::EntityTrait;
use shared_proto::device::check_version;
use shared_proto::southbound::{Pdu, Status, StatusAck, StatusReport, StatusResync};
use tokio_util::sync::CancellationToken;

use super::{Hub, Sessions};

/// The status the edge holds for a device, with its version.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub version: u64,
    pub status: Status,
    /// The desired-configuration version the device reported it runs.
    pub config_version: i64,
}

impl Sessions {
    pub(super) async fn restore_statuses(
        &self,
        db: &sea_orm::DatabaseConnection,
    ) -> Result<(), sea_orm::DbErr> {
        for row in device_status::Entity::find().all(db).await? {
            self.statuses.insert(
                row.device_id,
                Held {
                    version: u64::try_from(row.version).unwrap_or(0),
                    status: serde_json::from_str(&row.status).unwrap_or_default(),
                    config_version: row.config_version,
                },
            );
        }
        Ok(())
    }

    /// Every held status as (device, version, config version), without the statuses
    /// themselves, so a caller can pick the changed ones cheaply.
    pub fn versions(&self) -> Vec<(i64, u64, i64)> {
        self.statuses
            .iter()
            .map(|e| (*e.key(), e.version, e.config_version))
            .collect()
    }

    pub fn status(&self, device: i64) -> Option<Held> {
        self.statuses.get(&device).map(|h| h.clone())
    }

    fn mark_dirty(&self, device: i64) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device);
    }

    /// Applies a full report, or a diff on the version the edge holds.
    pub(super) fn apply_report(&self, device: i64, report: StatusReport) -> Pdu {
        let mut held = self.statuses.entry(device).or_default();
        let applies = report.full || report.base_version == Some(held.version);
        if !applies {
            return Pdu::StatusResync(StatusResync {
                have_version: held.version,
            });
        }
        if report.full {
            held.status = report.status;
        } else {
            held.status.merge(report.status);
        }
        held.version = report.version;
        drop(held);
        self.mark_dirty(device);
        Pdu::StatusAck(StatusAck {
            version: report.version,
        })
    }

    /// The device runs desired-configuration `version` now (the twin's reported side).
    pub(super) fn config_applied(&self, device: i64, version: i64) {
        self.statuses.entry(device).or_default().config_version = version;
        self.mark_dirty(device);
    }
}

/// Status rows written per transaction, at most.
const STATUS_ROWS_PER_WRITE: usize = 100;

impl Hub {
    /// Writes the statuses that changed since the last call, in multi-row statements.
    pub async fn flush_statuses(&self) -> Result<usize, sea_orm::DbErr> {
        let dirty: Vec<i64> = std::mem::take(
            &mut *self
                .sessions
                .dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
        .into_iter()
        .collect();
        let now = fleet_store::now_ms();
        let rows: Vec<device_status::Model> = dirty
            .iter()
            .filter_map(|id| {
                let held = self.sessions.statuses.get(id)?;
                Some(device_status::Model {
                    device_id: *id,
                    version: i64::try_from(held.version).unwrap_or(i64::MAX),
                    config_version: held.config_version,
                    status: serde_json::to_string(&held.status).unwrap_or_default(),
                    updated_at: now,
                })
            })
            .collect();
        let written = rows.len();
        if let Err(e) = self.follow_software(&dirty).await {
            tracing::warn!(error = %e, "recording reported software versions failed; retrying with the next reports");
        }
        // Small transactions: an operator's write waits for the one under way, and a
        // hundred rows take about a millisecond.
        for chunk in rows.chunks(STATUS_ROWS_PER_WRITE) {
            let stored = self
                .node
                .transact(
                    |txn| async move { device_status::upsert_many(&*txn, chunk.to_vec()).await },
                )
                .await;
            if let Err(e) = stored {
                // Keep them dirty so the next round writes them.
                self.sessions
                    .dirty
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(dirty);
                return Err(e);
            }
        }
        Ok(written)
    }

    /// The device rows of `devices` take the software version their devices report,
    /// where it differs: the registry, and the center's copy, follow updates.
    async fn follow_software(&self, devices: &[i64]) -> Result<(), sea_orm::DbErr> {
        let reported: Vec<(i64, String)> = devices
            .iter()
            .filter_map(|id| {
                let v = self
                    .sessions
                    .statuses
                    .get(id)?
                    .status
                    .software_version
                    .clone()?;
                let known = self.sessions.software.get(id).is_some_and(|k| *k == v);
                (!known && check_version("software_version", &v).is_ok()).then_some((*id, v))
            })
            .collect();
        for chunk in reported.chunks(STATUS_ROWS_PER_WRITE) {
            let node = &*self.node;
            node.transact(|txn| async move {
                let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
                let rows = read_locked::<devices::Entity, _>(&*txn, &ids).await?;
                let now = fleet_store::now_ms();
                let pairs = chunk
                    .iter()
                    .filter_map(|(id, v)| {
                        let row = rows.get(id).filter(|r| !r.deleted && r.sw_version != *v)?;
                        let mut next = row.clone();
                        next.sw_version.clone_from(v);
                        next.sw_last_update = fleet_store::date_of(now);
                        next.updated_at = now;
                        Some((row.clone(), next))
                    })
                    .collect();
                node.replica
                    .update_many::<devices::Entity, _>(&*txn, pairs)
                    .await
            })
            .await?;
            for (id, v) in chunk {
                self.sessions.software.insert(*id, v.clone());
            }
        }
        Ok(())
    }

    /// Writes changed statuses every `every` until `stop`, and once more then.
    pub async fn persist(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                () = stop.cancelled() => true,
            };
            let flushed = self.flush_statuses().await;
            if last {
                if let Err(e) = flushed {
                    tracing::error!(error = %e, "writing the last device statuses failed");
                }
                return;
            }
            if let Err(e) = flushed {
                tracing::error!(error = %e, "writing device statuses failed; retrying next round");
            }
        }
    }
}
