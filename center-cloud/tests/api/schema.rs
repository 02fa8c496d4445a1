//! The schema the center's migrations create on MariaDB is the one in
//! `sql/center.sql`, and a database the last release made is upgraded in place.

use sea_orm::{ConnectionTrait, Statement};

use crate::helpers::{
    assert_error, assert_schema_matches, device_json, on_mariadb, release, spawn_app, spawn_with,
    ADMIN_PASSWORD,
};

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

#[tokio::test]
async fn a_database_the_last_release_made_is_upgraded_in_place_when_the_center_starts() {
    let release_dir = tempfile::tempdir().expect("temp dir");
    let url = release::release_center_database(release_dir.path()).await;
    let app = spawn_with(|settings| settings.node.database_url = url.clone()).await;

    let (status, body) = app
        .get(&format!("/api/v1/devices/{}", release::DEVICE_ID))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "old-router");
    // Its unique (model, serial number) index came through: the same pair is taken.
    let (status, body) = app
        .post("/api/v1/devices", device_json("again", release::DEVICE_SN))
        .await;
    assert_error(status, &body, 409, "ALREADY_EXISTS", Some("hardware.sn"));
    app.login(release::OPERATOR, ADMIN_PASSWORD).await;

    let db = app.db().await;
    let count = |sql: &str| {
        let db = &db;
        let stmt = Statement::from_string(db.get_database_backend(), sql.to_string());
        async move {
            db.query_one(stmt)
                .await
                .expect("query")
                .expect("a row")
                .try_get::<i64>("", "n")
                .expect("n")
        }
    };
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) AS n FROM memberships WHERE group_id = {} AND device_id = {}",
            release::GROUP_ID,
            release::DEVICE_ID
        ))
        .await,
        1
    );
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM user_groups").await,
        1,
        "the operator's group"
    );
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM change_log WHERE seq <= 3").await,
        i64::try_from(release::CHANGES).expect("small")
    );
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) AS n FROM link_cursors WHERE peer_node = {}",
            release::PEER
        ))
        .await,
        1
    );
    assert_eq!(count("SELECT COUNT(*) AS n FROM link_refusals").await, 0);
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM seaql_migrations").await,
        9,
        "the baseline adopted and the later migrations, each recorded once"
    );
}
