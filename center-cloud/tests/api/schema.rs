//! The schema the binary creates on MariaDB is the one in `sql/center.sql`.

use crate::helpers::{assert_schema_matches, on_mariadb, spawn_app};

#[tokio::test]
async fn the_created_schema_matches_sql_center_sql() {
    if !on_mariadb() {
        eprintln!("schema comparison runs in the MariaDB pass (TEST_MYSQL_URL); nothing to compare on SQLite");
        return;
    }
    let app = spawn_app().await;
    assert_schema_matches(
        &app.database_url,
        concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/center.sql"),
    )
    .await;
}
