//! The schema the binary creates on MariaDB is the one in `sql/center.sql`.

use sea_orm::{ConnectionTrait, Database, FromQueryResult, Statement};

use crate::helpers::{on_mariadb, spawn_app};

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
         FROM information_schema.columns WHERE table_schema = ? ORDER BY table_name, column_name",
        [schema.into()],
    ))
    .all(db)
    .await
    .expect("columns");
    let indexes = IndexPart::find_by_statement(Statement::from_sql_and_values(
        backend,
        "SELECT CAST(table_name AS CHAR) AS table_name, CAST(index_name AS CHAR) AS index_name, \
         CAST(column_name AS CHAR) AS column_name, CAST(seq_in_index AS SIGNED) AS seq_in_index, \
         CAST(non_unique AS SIGNED) AS non_unique \
         FROM information_schema.statistics WHERE table_schema = ? ORDER BY table_name, index_name, seq_in_index",
        [schema.into()],
    ))
    .all(db)
    .await
    .expect("indexes");
    (columns, indexes)
}

#[tokio::test]
async fn the_created_schema_matches_sql_center_sql() {
    if !on_mariadb() {
        eprintln!("schema comparison runs in the MariaDB pass (TEST_MYSQL_URL); nothing to compare on SQLite");
        return;
    }
    let app = spawn_app().await;
    let created = app
        .database_url
        .rsplit('/')
        .next()
        .expect("db name")
        .to_string();
    let server = std::env::var("TEST_MYSQL_URL").expect("set");
    let admin = Database::connect(server.as_str()).await.expect("connect");
    let reference = format!("ref_{:x}", rand::random::<u64>());
    admin
        .execute_unprepared(&format!("CREATE DATABASE `{reference}`"))
        .await
        .expect("create");
    let ddl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/center.sql"))
        .expect("sql/center.sql");
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
        "columns differ between the binary and sql/center.sql"
    );
    assert_eq!(
        from_binary.1, from_file.1,
        "indexes differ between the binary and sql/center.sql"
    );
}
