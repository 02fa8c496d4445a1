//! A center database as the last release (35e8764) left it, for upgrade tests: that
//! release's DDL, then rows written by plain SQL on that release's columns (never
//! through today's entities, which evolve with the migrations).

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::{fresh_database, ADMIN_PASSWORD};

/// The release's `sql/center.sql`, and its SQLite dialect.
const CENTER_MYSQL: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fleet-store/tests/fixtures/release-35e8764/center.mysql.sql"
));
const CENTER_SQLITE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fleet-store/tests/fixtures/release-35e8764/center.sqlite.sql"
));

pub const DEVICE_ID: i64 = 7_000_001;
/// The device's hardware: the model `device_json` uses, so a new device with the same
/// serial number collides with it.
pub const DEVICE_MODEL: &str = "Raspberry Pi 4";
pub const DEVICE_SN: &str = "SN-OLD-1";
pub const GROUP_ID: i64 = 7_000_002;
pub const MEMBERSHIP_ID: i64 = 7_000_003;
/// An operator account the release made, besides `admin` (whose password is
/// [`ADMIN_PASSWORD`]).
pub const OPERATOR: &str = "old-operator";
/// Change-log entries the release appended: the device, the group, the membership.
pub const CHANGES: usize = 3;
/// A linked peer (an edge's node id) that has acknowledged none of them yet.
pub const PEER: i64 = 2;

/// A fresh database on the selected backend, created and filled as the release did.
pub async fn release_center_database(dir: &std::path::Path) -> String {
    let url = fresh_database(dir).await;
    let db = fleet_store::connect(&url, 1)
        .await
        .expect("release database");
    let backend = db.get_database_backend();
    let ddl = match backend {
        DbBackend::MySql => CENTER_MYSQL,
        _ => CENTER_SQLITE,
    };
    let without_comments: String = ddl
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for sql in without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        db.execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let admin_hash = fleet_node::passwords::hash_blocking(ADMIN_PASSWORD.into())
        .await
        .expect("hash");
    // A minute ago: older rows would be past the change log's retention, and compacted.
    let at = fleet_store::now_ms() - 60_000;
    let stamp = fleet_store::clock::stamp_at(at, 1);
    let rows: Vec<(&str, Vec<Value>)> = vec![
        (
            "INSERT INTO devices (id, name, device_type, hw_model, hw_sn, sw_version, sw_last_update, \
             nics, status, description, edge_id, secret_hash, live_key, created_at, updated_at, \
             hlc, origin, deleted, field_stamps) \
             VALUES (?, 'old-router', 'router', ?, ?, '1.0', '2023-11-14', '[]', 'active', \
             'made by the last release', NULL, '', ?, ?, ?, ?, 1, ?, '{}')",
            vec![
                DEVICE_ID.into(),
                DEVICE_MODEL.into(),
                DEVICE_SN.into(),
                fleet_store::devices::live_key(DEVICE_MODEL, DEVICE_SN).into(),
                at.into(),
                at.into(),
                stamp.into(),
                false.into(),
            ],
        ),
        (
            "INSERT INTO device_groups (id, name, description, live_name, created_at, updated_at, \
             hlc, origin, deleted, field_stamps) VALUES (?, 'old-group', '', 'old-group', ?, ?, ?, 1, ?, '{}')",
            vec![
                GROUP_ID.into(),
                at.into(),
                at.into(),
                stamp.into(),
                false.into(),
            ],
        ),
        (
            "INSERT INTO memberships (id, group_id, device_id, created_at, updated_at, hlc, origin, \
             deleted, field_stamps) VALUES (?, ?, ?, ?, ?, ?, 1, ?, '{}')",
            vec![
                MEMBERSHIP_ID.into(),
                GROUP_ID.into(),
                DEVICE_ID.into(),
                at.into(),
                at.into(),
                stamp.into(),
                false.into(),
            ],
        ),
        (
            "INSERT INTO users (id, username, password_hash, role, created_at, updated_at) \
             VALUES (7000004, 'admin', ?, 'admin', ?, ?), (7000005, ?, ?, 'operator', ?, ?)",
            vec![
                admin_hash.clone().into(),
                at.into(),
                at.into(),
                OPERATOR.into(),
                admin_hash.into(),
                at.into(),
                at.into(),
            ],
        ),
        (
            "INSERT INTO user_groups (user_id, group_id, created_at) VALUES (7000005, ?, ?)",
            vec![GROUP_ID.into(), at.into()],
        ),
        (
            "INSERT INTO change_log (table_name, row_id, hlc, origin, deleted, payload, created_at) \
             VALUES ('devices', ?, ?, 1, ?, '{}', ?), ('device_groups', ?, ?, 1, ?, '{}', ?), \
             ('memberships', ?, ?, 1, ?, '{}', ?)",
            vec![
                DEVICE_ID.into(),
                stamp.into(),
                false.into(),
                at.into(),
                GROUP_ID.into(),
                stamp.into(),
                false.into(),
                at.into(),
                MEMBERSHIP_ID.into(),
                stamp.into(),
                false.into(),
                at.into(),
            ],
        ),
        (
            // A peer that has acknowledged none of them, so compaction keeps them all.
            "INSERT INTO link_cursors (peer_node, applied, acked, updated_at) VALUES (?, 0, 0, ?)",
            vec![PEER.into(), at.into()],
        ),
    ];
    for (sql, values) in rows {
        db.execute(Statement::from_sql_and_values(backend, sql, values))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    db.close().await.expect("close");
    url
}
