//! A center replica's lease of its snowflake worker id (`fleet_store::worker_leases`):
//! taken at start, renewed while the process runs, given back at a clean stop. A
//! replica that cannot renew in time stops serving rather than risk another replica
//! taking the same id and making the same row ids.

use std::time::Duration;

use actix_web::dev::ServerHandle;
use fleet_store::worker_leases::{self, LeaseError, RENEW_EVERY, TTL_MS};
use sea_orm::DatabaseConnection;
use tokio::time::Instant;

use crate::server::StartupError;
use crate::Node;

#[derive(Debug, Clone)]
pub struct Lease {
    pub worker_id: i64,
    holder: String,
}

impl Lease {
    pub async fn take(db: &DatabaseConnection) -> Result<Self, StartupError> {
        let holder = format!("{:016x}", rand::random::<u64>());
        let worker_id = worker_leases::take(db, &holder)
            .await
            .map_err(|e| match e {
                LeaseError::Db(e) => StartupError::Db(e),
                LeaseError::Exhausted => StartupError::Config(e.to_string()),
            })?;
        tracing::info!(worker_id, "leased a snowflake worker id");
        Ok(Self { worker_id, holder })
    }

    /// Renews the lease for as long as the process runs; stops the server when the
    /// lease is lost or could not be renewed before it would expire.
    pub async fn keep(self, node: std::sync::Arc<Node>, server: ServerHandle) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        let mut renewed = Instant::now();
        let margin = Duration::from_millis(u64::try_from(TTL_MS).unwrap_or(30_000)) - RENEW_EVERY;
        loop {
            tick.tick().await;
            let (worker_id, holder) = (self.worker_id, &self.holder);
            let renewal = node
                .transact(|txn| async move { worker_leases::renew(&*txn, worker_id, holder).await })
                .await;
            match renewal {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::error!(
                        worker_id = self.worker_id,
                        "the worker id lease was taken over; stopping"
                    );
                    server.stop(true).await;
                    return;
                }
                Err(e) if renewed.elapsed() >= margin => {
                    tracing::error!(worker_id = self.worker_id, error = %e, "the worker id lease could not be renewed before it expires; stopping");
                    server.stop(true).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker_id = self.worker_id, error = %e, "renewing the worker id lease failed; retrying")
                }
            }
        }
    }

    pub async fn release(&self, db: &DatabaseConnection) {
        if let Err(e) = worker_leases::release(db, self.worker_id, &self.holder).await {
            tracing::warn!(worker_id = self.worker_id, error = %e, "giving back the worker id lease failed; it expires by itself");
        }
    }
}
