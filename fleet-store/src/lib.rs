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

/// The UTC calendar date of `ms` (milliseconds since the epoch), `YYYY-MM-DD`: how
/// the device registry writes dates (`software.last_update`).
pub fn date_of(ms: i64) -> String {
    // Days to a proleptic Gregorian date, counted in 400-year eras (H. Hinnant's
    // `civil_from_days`).
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_calendar_days_in_utc() {
        assert_eq!(super::date_of(0), "1970-01-01");
        assert_eq!(super::date_of(951_782_400_000), "2000-02-29");
        assert_eq!(super::date_of(1_796_169_599_999), "2026-12-01");
        assert_eq!(super::date_of(1_796_169_600_000), "2026-12-02");
    }
}
