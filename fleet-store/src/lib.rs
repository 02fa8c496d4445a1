//! The federation's databases. Center and edges share one definition of the
//! replicated fleet tables (devices, groups, memberships, commands, desired config,
//! rollouts and their devices),
//! each carrying the sync columns (HLC stamp, origin node, tombstone, per-field
//! stamps), and every write to them appends to the change log in the same
//! transaction through [`replica::Replica`].

pub mod artifacts;
pub mod change_log;
pub mod clock;
pub mod commands;
pub mod credentials;
pub mod database;
pub mod desired_configs;
pub mod device_presence;
pub mod device_status;
pub mod devices;
pub mod edges;
pub mod events;
pub mod groups;
pub mod ids;
mod keys;
pub mod link_cursors;
pub mod link_leases;
pub mod link_refusals;
pub mod memberships;
pub mod merge;
pub mod migrations;
pub mod outbox;
pub mod pulled_logs;
pub mod replica;
pub mod rollout_devices;
pub mod rollouts;
pub mod schema;
pub mod settings;
pub mod sync;
pub mod user_groups;
pub mod users;
pub mod worker_leases;
pub mod write;

pub use database::{checkpoint_forever, connect, Backend, StoreError};
pub use replica::{Replica, Table};

/// Milliseconds since the Unix epoch: the one time format every synced column uses,
/// because datetime types round-trip differently on SQLite and MySQL.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
