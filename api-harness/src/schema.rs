//! Proves that the schema a binary's migrations create on MariaDB is the DDL file in
//! `sql/` (what `print-schema` derives from the entities): applies the file to a fresh
//! database and compares information_schema (columns, types, nullability, extras,
//! indexes) with the database the binary migrated.

use fleet_store::migrations::OWN_TABLES;
use sea_orm::{ConnectionTrait, Database, FromQueryResult, Statement};

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, FromQueryResult)]
struct Column {
    table_name: String,
    column_name: String,
    column_type: String,
    is_nullable: String,
    extra: String,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, FromQueryResult)]
struct IndexPart {
    table_name: String,
    index_name: String,
    column_name: String,
    seq_in_index: i64,
    non_unique: i64,
}

async fn describe(db: &impl ConnectionTrait, schema: &str) -> (Vec<Column>, Vec<IndexPart>) {
    let backend = db.get_database_backend();
    let columns = Column::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT CAST(table_name AS CHAR) AS table_name, CAST(column_name AS CHAR) AS column_name, \
         CAST(column_type AS CHAR) AS column_type, CAST(is_nullable AS CHAR) AS is_nullable, CAST(extra AS CHAR) AS extra \
         FROM information_schema.columns WHERE table_schema = ? AND table_name NOT IN (?, ?) ORDER BY table_name, column_name",
        [schema.into(), OWN_TABLES[0].into(), OWN_TABLES[1].into()],
    ))
    .all(db)
    .await
    .expect("columns");
    let indexes = IndexPart::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT CAST(table_name AS CHAR) AS table_name, CAST(index_name AS CHAR) AS index_name, \
         CAST(column_name AS CHAR) AS column_name, CAST(seq_in_index AS SIGNED) AS seq_in_index, \
         CAST(non_unique AS SIGNED) AS non_unique \
         FROM information_schema.statistics WHERE table_schema = ? AND table_name NOT IN (?, ?) ORDER BY table_name, index_name, seq_in_index",
        [schema.into(), OWN_TABLES[0].into(), OWN_TABLES[1].into()],
    ))
    .all(db)
    .await
    .expect("indexes");
    (columns, indexes)
}

/// `created_url` is a database the binary created; `sql_file` the DDL to compare with.
pub async fn assert_schema_matches(created_url: &str, sql_file: &str) {
    let server = std::env::var("TEST_MYSQL_URL").expect("the schema comparison runs on MariaDB");
    let created = created_url.rsplit('/').next().expect("db name").to_string();
    let admin = Database::connect(server.as_str()).await.expect("connect");
    let reference = format!("ref_{:x}", rand::random::<u64>());
    admin
        .execute_unprepared(&format!("CREATE DATABASE `{reference}`"))
        .await
        .expect("create");
    let ddl = std::fs::read_to_string(sql_file).expect("the DDL file");
    let refdb = Database::connect(format!("{}/{reference}", server.trim_end_matches('/')).as_str())
        .await
        .expect("connect");
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
        refdb
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let from_binary = describe(&admin, &created).await;
    let from_file = describe(&admin, &reference).await;
    assert!(!from_binary.0.is_empty());
    assert_eq!(
        from_binary.0, from_file.0,
        "columns differ between the binary and {sql_file}"
    );
    assert_eq!(
        from_binary.1, from_file.1,
        "indexes differ between the binary and {sql_file}"
    );
}
