//! The schema the entity definitions describe: what `print-schema` prints and `sql/`
//! holds for operators. Nodes never create it from here: they run the migrations
//! (`crate::migrations`), and a test keeps the migrated database equal to this.

use sea_orm::sea_query::{Index, IndexCreateStatement, TableCreateStatement};
use sea_orm::{DbBackend, EntityTrait, Schema};

use crate::{
    change_log, commands, desired_configs, device_status, devices, events, groups, link_cursors,
    link_refusals, memberships, pulled_logs, rollout_devices, rollouts, settings, user_groups,
    users,
};

/// One table: its CREATE TABLE and the indexes that go with it.
pub struct TableSpec {
    pub name: String,
    pub create: TableCreateStatement,
    pub indexes: Vec<IndexCreateStatement>,
}

pub fn table<E: EntityTrait + Default>(backend: DbBackend, entity: E) -> TableSpec {
    let schema = Schema::new(backend);
    let mut create = schema.create_table_from_entity(entity);
    if backend == DbBackend::MySql {
        // Whatever the server's default: names and serial numbers in any script, and
        // compared byte for byte, as SQLite does.
        create.character_set("utf8mb4").collate("utf8mb4_bin");
    }
    TableSpec {
        name: entity.table_name().to_string(),
        create,
        indexes: schema.create_index_from_entity(entity),
    }
}

/// The tables every node has: the replicated fleet tables, the change log, events,
/// and the node's own operators and settings.
pub fn fleet_tables(backend: DbBackend) -> Vec<TableSpec> {
    let mut devices = table(backend, devices::Entity);
    // Live-device listings filter on `deleted` and page in id order; this index
    // serves both, and their counts, without touching the wide rows.
    devices.indexes.push(
        Index::create()
            .name("idx-devices-deleted-id")
            .table(devices::Entity)
            .col(devices::Column::Deleted)
            .col(devices::Column::Id)
            .to_owned(),
    );
    // An edge's devices in id order: the pages of its snapshot.
    devices.indexes.push(
        Index::create()
            .name("idx-devices-edge_id-id")
            .table(devices::Entity)
            .col(devices::Column::EdgeId)
            .col(devices::Column::Id)
            .to_owned(),
    );
    let mut memberships = table(backend, memberships::Entity);
    memberships.indexes.push(
        Index::create()
            .name("uq-memberships-group-device")
            .table(memberships::Entity)
            .col(memberships::Column::GroupId)
            .col(memberships::Column::DeviceId)
            .unique()
            .to_owned(),
    );
    let mut rollout_devices = table(backend, rollout_devices::Entity);
    rollout_devices.indexes.push(
        Index::create()
            .name("uq-rollout_devices-rollout-device")
            .table(rollout_devices::Entity)
            .col(rollout_devices::Column::RolloutId)
            .col(rollout_devices::Column::DeviceId)
            .unique()
            .to_owned(),
    );
    let mut user_groups = table(backend, user_groups::Entity);
    user_groups.indexes.push(
        Index::create()
            .name("idx-user_groups-group_id")
            .table(user_groups::Entity)
            .col(user_groups::Column::GroupId)
            .to_owned(),
    );
    vec![
        devices,
        table(backend, groups::Entity),
        memberships,
        table(backend, commands::Entity),
        table(backend, desired_configs::Entity),
        table(backend, rollouts::Entity),
        rollout_devices,
        table(backend, change_log::Entity),
        table(backend, link_cursors::Entity),
        table(backend, link_refusals::Entity),
        table(backend, device_status::Entity),
        table(backend, events::Entity),
        table(backend, pulled_logs::Entity),
        table(backend, users::Entity),
        user_groups,
        table(backend, settings::Entity),
    ]
}

/// Every table of the center's database: the fleet tables and the center's own
/// (the edge registry, replicas' worker and link leases, device presence, and the
/// software artifacts).
pub fn center_tables(backend: DbBackend) -> Vec<TableSpec> {
    let mut all = fleet_tables(backend);
    all.push(table(backend, crate::edges::Entity));
    all.push(table(backend, crate::worker_leases::Entity));
    all.push(table(backend, crate::link_leases::Entity));
    let mut presence = table(backend, crate::device_presence::Entity);
    presence.indexes.push(
        Index::create()
            .name("idx-device_presence-updated_at")
            .table(crate::device_presence::Entity)
            .col(crate::device_presence::Column::UpdatedAt)
            .to_owned(),
    );
    presence.indexes.push(
        Index::create()
            .name("idx-device_presence-edge_id")
            .table(crate::device_presence::Entity)
            .col(crate::device_presence::Column::EdgeId)
            .to_owned(),
    );
    all.push(presence);
    let mut artifacts = table(backend, crate::artifacts::Entity);
    artifacts.indexes.push(
        Index::create()
            .name("idx-artifacts-name-version")
            .table(crate::artifacts::Entity)
            .col(crate::artifacts::Column::Name)
            .col(crate::artifacts::Column::Version)
            .unique()
            .to_owned(),
    );
    all.push(artifacts);
    all.push(table(backend, crate::artifacts::chunks::Entity));
    all
}

/// The DDL of `tables` as one script, in the dialect of `backend`.
pub fn ddl(backend: DbBackend, tables: &[TableSpec]) -> String {
    let mut out = String::new();
    for t in tables {
        out.push_str(&one_column_per_line(&backend.build(&t.create).to_string()));
        out.push_str(";\n");
        for i in &t.indexes {
            out.push_str(&backend.build(i).to_string());
            out.push_str(";\n");
        }
        out.push('\n');
    }
    out
}

/// `CREATE TABLE t ( a …, b … )` laid out with one column per line, for reading.
fn one_column_per_line(create: &str) -> String {
    let Some((head, rest)) = create.split_once(" ( ") else {
        return create.to_string();
    };
    // Table options (MySQL's character set) follow the closing parenthesis.
    let (body, options) = match rest.rsplit_once(" )") {
        Some((body, options)) => (body, options),
        None => (rest, ""),
    };
    let columns = body
        .replace(", `", ",\n  `")
        .replace(", PRIMARY KEY", ",\n  PRIMARY KEY");
    format!("{head} (\n  {columns}\n){options}")
}
