//! Creating the schema from the entity definitions, so the code is the one source of
//! truth; `sql/` holds the same DDL for operators, and a test keeps the two equal.

use sea_orm::sea_query::{Index, IndexCreateStatement, TableCreateStatement};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, Schema, Statement};

use crate::{
    change_log, commands, desired_configs, device_status, devices, events, groups, link_cursors,
    link_refusals, memberships, pulled_logs, settings, user_groups, users,
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

/// The quoted name in `CREATE [UNIQUE] INDEX "name" ON …` (sea-query has no getter).
fn index_name(sql: &str) -> &str {
    let quote = if sql.contains('`') { '`' } else { '"' };
    sql.split(quote).nth(1).unwrap_or_default()
}

async fn exists<C: ConnectionTrait>(db: &C, kind: &str, name: &str) -> Result<bool, DbErr> {
    let backend = db.get_database_backend();
    let sql = match (backend, kind) {
        (DbBackend::Sqlite, _) => {
            "SELECT 1 FROM sqlite_master WHERE type = ? AND name = ? LIMIT 1"
        }
        (_, "table") => {
            "SELECT 1 FROM information_schema.tables WHERE ? = 'table' AND table_schema = DATABASE() AND table_name = ? LIMIT 1"
        }
        _ => {
            "SELECT 1 FROM information_schema.statistics WHERE ? = 'index' AND table_schema = DATABASE() AND index_name = ? LIMIT 1"
        }
    };
    let stmt = Statement::from_sql_and_values(backend, sql, [kind.into(), name.into()]);
    Ok(db.query_one(stmt).await?.is_some())
}

/// Creates every missing table and every missing index (so an index added in a
/// later version reaches existing databases). Existing ones are left alone.
pub async fn ensure<C: ConnectionTrait>(db: &C, tables: &[TableSpec]) -> Result<usize, DbErr> {
    let backend = db.get_database_backend();
    let mut created = 0;
    for t in tables {
        if !exists(db, "table", &t.name).await? {
            db.execute(backend.build(&t.create)).await?;
            tracing::info!(table = %t.name, "created table");
            created += 1;
        }
        for i in &t.indexes {
            let sql = backend.build(i);
            let name = index_name(&sql.sql).to_string();
            if !exists(db, "index", &name).await? {
                db.execute(sql).await?;
                tracing::info!(table = %t.name, index = %name, "created index");
                created += 1;
            }
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ensure_creates_what_is_missing_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let db = crate::connect(&url, 1).await.expect("db");
        let tables = fleet_tables(DbBackend::Sqlite);
        let first = ensure(&db, &tables).await.expect("created");
        assert!(first >= tables.len());
        assert_eq!(ensure(&db, &tables).await.expect("again"), 0);
        db.execute_unprepared("DROP INDEX `idx-devices-deleted-id`")
            .await
            .expect("drop");
        assert_eq!(ensure(&db, &tables).await.expect("index back"), 1);
    }
}
