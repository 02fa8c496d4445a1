//! Versioned schema migrations, applied when a node starts.
//!
//! Each schema change is one migration, frozen once released (`fleet-store/migrations/`
//! holds its SQL), recorded by name in `seaql_migrations`. A node applies the ones its
//! database lacks, under a database lock ([`lock`]) so that replicas starting at once
//! never apply one twice. The first migration is the schema of release 35e8764 and
//! adopts a database that release created. `print-schema` and `sql/` show where the
//! migrations end; a test keeps them equal to the migrated database.

mod lock;
mod script;

use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};
use sea_orm_migration::{MigrationTrait, MigratorTrait};

use crate::StoreError;
use script::script;

/// The migrator's own tables, outside the schema `print-schema` shows: the record of
/// applied migrations, and the lease that locks a Galera cluster.
pub const OWN_TABLES: [&str; 2] = ["seaql_migrations", lock::LEASE_TABLE];

/// How long a node waits for another node's migrations before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(600);

// Each migration is defined once here and listed by every migrator that runs it. A
// new one takes the next number and goes at the end of the lists it belongs to; the
// names are recorded in databases, so they never change.

/// Shared: the fleet tables of release 35e8764, the baseline.
fn fleet_baseline() -> Box<dyn MigrationTrait> {
    Box::new(script!("m20261201_000001_fleet_baseline"))
}

/// The center's own part of that baseline: the registry of edges.
fn center_edges() -> Box<dyn MigrationTrait> {
    Box::new(script!("m20261201_000002_center_edges"))
}

/// Shared: what each federation peer sent that was refused.
fn link_refusals() -> Box<dyn MigrationTrait> {
    Box::new(script!("m20261201_000003_link_refusals"))
}

/// Shared: command results and change-log payloads as MEDIUMTEXT.
fn wide_results() -> Box<dyn MigrationTrait> {
    Box::new(script!("m20261201_000004_wide_results"))
}

/// The center's: worker ids leased by its replicas.
fn worker_leases() -> Box<dyn MigrationTrait> {
    Box::new(script!("m20261201_000005_worker_leases"))
}

/// The center's: which replica holds each edge's link.
fn link_leases() -> Box<dyn MigrationTrait> {
    Box::new(script!("m20261201_000006_link_leases"))
}

/// The center's: which devices are online at which edge, for every replica.
fn device_presence() -> Box<dyn MigrationTrait> {
    Box::new(script!("m20261201_000007_device_presence"))
}

/// The center's: software artifacts and their chunks.
fn artifacts() -> Box<dyn MigrationTrait> {
    Box::new(script!("m20261202_000008_artifacts"))
}

/// Shared: rollouts and each device's update in them.
fn rollouts() -> Box<dyn MigrationTrait> {
    Box::new(script!("m20261202_000009_rollouts"))
}

struct CenterMigrator;

impl MigratorTrait for CenterMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            fleet_baseline(),
            center_edges(),
            link_refusals(),
            wide_results(),
            worker_leases(),
            link_leases(),
            device_presence(),
            artifacts(),
            rollouts(),
        ]
    }
}

struct EdgeMigrator;

impl MigratorTrait for EdgeMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            fleet_baseline(),
            link_refusals(),
            wide_results(),
            rollouts(),
        ]
    }
}

/// Which database a node keeps, and so which migrations it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    Center,
    Edge,
}

impl Schema {
    /// Brings the database at `url` up to date on a connection of its own, holding the
    /// migration lock. Answers the migrations applied now, in order.
    pub async fn migrate(self, url: &str) -> Result<Vec<String>, StoreError> {
        // One connection: a MySQL named lock and an SQLite transaction both belong to
        // the connection that took them.
        let db = crate::connect(url, 1).await?;
        let lock = lock::Lock::acquire(&db, LOCK_WAIT).await?;
        let applied = match self {
            Schema::Center => apply::<CenterMigrator>(&db).await,
            Schema::Edge => apply::<EdgeMigrator>(&db).await,
        };
        let released = lock.release(&db, applied.is_ok()).await;
        db.close().await?;
        let applied = applied?;
        released?;
        Ok(applied)
    }
}

/// Applies `M`'s pending migrations one at a time, logging each.
async fn apply<M: MigratorTrait>(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let pending: Vec<String> = M::get_pending_migrations(db)
        .await?
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    for name in &pending {
        M::up(db, Some(1)).await?;
        tracing::info!(migration = %name, "applied migration");
    }
    Ok(pending)
}
