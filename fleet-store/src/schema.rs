//! Creating the schema from the entity definitions, so the code is the one source of
//! truth; `sql/` holds the same DDL for operators, and a test keeps the two equal.

use sea_orm::sea_query::{Index, IndexCreateStatement, TableCreateStatement};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, Schema, Statement};

use crate::{
    change_log, commands, desired_configs, devices, events, groups, memberships, settings,
    user_groups, users,
};

/// One table: its CREATE TABLE and the indexes that go with it.
pub struct TableSpec {
    pub name: String,
    pub create: TableCreateStatement,
    pub indexes: Vec<IndexCreateStatement>,
}

pub fn table<E: EntityTrait + Default>(backend: DbBackend, entity: E) -> TableSpec {
    let schema = Schema::new(backend);
    TableSpec {
        name: entity.table_name().to_string(),
        create: schema.create_table_from_entity(entity),
        indexes: schema.create_index_from_entity(entity),
    }
}

/// The tables every node has: the replicated fleet tables, the change log, events,
/// and the node's own operators and settings.
pub fn fleet_tables(backend: DbBackend) -> Vec<TableSpec> {
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
        table(backend, devices::Entity),
        table(backend, groups::Entity),
        memberships,
        table(backend, commands::Entity),
        table(backend, desired_configs::Entity),
        table(backend, change_log::Entity),
        table(backend, events::Entity),
        table(backend, users::Entity),
        user_groups,
        table(backend, settings::Entity),
    ]
}

/// The DDL of `tables` as one script, in the dialect of `backend`.
pub fn ddl(backend: DbBackend, tables: &[TableSpec]) -> String {
    let mut out = String::new();
    for t in tables {
        out.push_str(&backend.build(&t.create).to_string());
        out.push_str(";\n");
        for i in &t.indexes {
            out.push_str(&backend.build(i).to_string());
            out.push_str(";\n");
        }
        out.push('\n');
    }
    out
}

async fn table_exists<C: ConnectionTrait>(db: &C, name: &str) -> Result<bool, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ? HAVING COUNT(*) > 0"
        }
        _ => {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ? HAVING COUNT(*) > 0"
        }
    };
    let stmt = Statement::from_sql_and_values(backend, sql, [name.into()]);
    Ok(db.query_one(stmt).await?.is_some())
}

/// Creates every missing table with its indexes. Existing tables are left alone.
pub async fn ensure<C: ConnectionTrait>(db: &C, tables: &[TableSpec]) -> Result<usize, DbErr> {
    let backend = db.get_database_backend();
    let mut created = 0;
    for t in tables {
        if table_exists(db, &t.name).await? {
            continue;
        }
        db.execute(backend.build(&t.create)).await?;
        for i in &t.indexes {
            db.execute(backend.build(i)).await?;
        }
        tracing::info!(table = %t.name, "created table");
        created += 1;
    }
    Ok(created)
}
