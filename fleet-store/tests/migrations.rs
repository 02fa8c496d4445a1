//! The versioned migrations: run at once by several nodes they apply each migration
//! once, they adopt a database the last release created, they end at the schema
//! `print-schema` shows, and a database migrated further than this binary knows is
//! refused. On SQLite, or on MariaDB when TEST_MYSQL_URL names a server.

use fleet_store::migrations::Schema;
use fleet_store::schema::{self, TableSpec};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

const ALL_CENTER: [&str; 9] = [
    "m20261201_000001_fleet_baseline",
    "m20261201_000002_center_edges",
    "m20261201_000003_link_refusals",
    "m20261201_000004_wide_results",
    "m20261201_000005_worker_leases",
    "m20261201_000006_link_leases",
    "m20261201_000007_device_presence",
    "m20261202_000008_artifacts",
    "m20261202_000009_rollouts",
];

async fn fresh_database(dir: &std::path::Path, file: &str) -> String {
    match std::env::var("TEST_MYSQL_URL") {
        Ok(server) => {
            let name = format!("mig_{:016x}", rand::random::<u64>());
            let admin = sea_orm::Database::connect(server.as_str())
                .await
                .expect("MariaDB reachable");
            admin
                .execute_unprepared(&format!("CREATE DATABASE `{name}`"))
                .await
                .expect("create database");
            admin.close().await.expect("close");
            format!("{}/{name}", server.trim_end_matches('/'))
        }
        Err(_) => format!("sqlite://{}", dir.join(file).display()),
    }
}

async fn recorded(url: &str) -> Vec<String> {
    let db = fleet_store::connect(url, 1).await.expect("connect");
    let rows = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            "SELECT version FROM seaql_migrations ORDER BY version",
        ))
        .await
        .expect("migrations table");
    rows.iter()
        .map(|r| r.try_get::<String>("", "version").expect("version"))
        .collect()
}

/// Runs a script of `;`-separated statements, skipping comment lines.
async fn run_script(db: &impl ConnectionTrait, script: &str) {
    let text: String = script
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for sql in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        db.execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[tokio::test]
async fn nodes_migrating_one_fresh_database_at_once_apply_each_migration_once() {
    let dir = tempfile::tempdir().expect("dir");
    let url = fresh_database(dir.path(), "race.db").await;
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Schema::Center.migrate(&url).await })
        })
        .collect();
    let mut applied = Vec::new();
    for run in runs {
        applied.extend(run.await.expect("joined").expect("every run succeeds"));
    }
    applied.sort();
    assert_eq!(
        applied, ALL_CENTER,
        "each migration applied by exactly one run"
    );
    assert_eq!(recorded(&url).await, ALL_CENTER);
    assert!(Schema::Center
        .migrate(&url)
        .await
        .expect("again")
        .is_empty());
}

#[tokio::test]
async fn a_database_the_last_release_created_is_adopted_and_upgraded() {
    let dir = tempfile::tempdir().expect("dir");
    for (schema, name, release) in [
        (
            Schema::Center,
            "center",
            [
                include_str!("fixtures/release-35e8764/center.mysql.sql"),
                include_str!("fixtures/release-35e8764/center.sqlite.sql"),
            ],
        ),
        (
            Schema::Edge,
            "edge",
            [
                include_str!("fixtures/release-35e8764/edge.mysql.sql"),
                include_str!("fixtures/release-35e8764/edge.sqlite.sql"),
            ],
        ),
    ] {
        let url = fresh_database(dir.path(), &format!("{name}.db")).await;
        let db = fleet_store::connect(&url, 1).await.expect("connect");
        let backend = db.get_database_backend();
        let ddl = if backend == DbBackend::MySql {
            release[0]
        } else {
            release[1]
        };
        run_script(&db, ddl).await;
        db.execute_unprepared("INSERT INTO settings (name, value) VALUES ('token_key', 'k')")
            .await
            .expect("a row");
        db.execute_unprepared(
            "INSERT INTO commands (id, device_id, batch_id, name, args, state, progress, timeout_s, \
             deadline_at, result, created_by, created_at, updated_at, hlc, origin, deleted, field_stamps) \
             VALUES (7, 8, NULL, 'exec', '{}', 'succeeded', 100, 60, 0, '{\"output\":\"ok\"}', 'a', 1, 1, 5, 1, false, '{}')",
        )
        .await
        .expect("a command");
        for seq in [40, 41] {
            db.execute_unprepared(&format!(
                "INSERT INTO change_log (seq, table_name, row_id, hlc, origin, deleted, payload, created_at) \
                 VALUES ({seq}, 'commands', 7, 5, 1, false, '{{}}', 1)"
            ))
            .await
            .expect("a log entry");
        }
        db.close().await.expect("close");

        let applied = schema.migrate(&url).await.expect("upgraded");
        let mut expected: Vec<&str> = ALL_CENTER.to_vec();
        if schema == Schema::Edge {
            expected.retain(|m| {
                ![
                    "center_edges",
                    "worker_leases",
                    "link_leases",
                    "device_presence",
                    "artifacts",
                ]
                .iter()
                .any(|only| m.contains(only))
            });
        }
        assert_eq!(
            applied, expected,
            "{name}: the baseline adopted, then the rest"
        );
        assert_eq!(recorded(&url).await, expected);

        let db = fleet_store::connect(&url, 1).await.expect("connect");
        let kept = db
            .query_one(Statement::from_string(
                backend,
                "SELECT value FROM settings WHERE name = 'token_key'",
            ))
            .await
            .expect("query")
            .expect("the row is still there");
        assert_eq!(kept.try_get::<String>("", "value").expect("value"), "k");
        let result = db
            .query_one(Statement::from_string(
                backend,
                "SELECT result FROM commands WHERE id = 7",
            ))
            .await
            .expect("query")
            .expect("the command is still there");
        assert_eq!(
            result.try_get::<String>("", "result").expect("result"),
            r#"{"output":"ok"}"#
        );
        let wide = "x".repeat(100_000);
        db.execute_unprepared(&format!(
            "INSERT INTO change_log (table_name, row_id, hlc, origin, deleted, payload, created_at) \
             VALUES ('commands', 7, 6, 1, false, '{wide}', 2)"
        ))
        .await
        .expect("a payload past 64 KiB fits");
        let next = db
            .query_one(Statement::from_string(
                backend,
                "SELECT MAX(seq) AS seq FROM change_log",
            ))
            .await
            .expect("query")
            .expect("a row");
        assert_eq!(
            next.try_get::<i64>("", "seq").expect("seq"),
            42,
            "the log's positions go on from where they were"
        );
        db.execute_unprepared(
            "INSERT INTO link_refusals (peer_node, refused, last_rule, last_at) VALUES (1, 1, 'r', 0)",
        )
        .await
        .expect("the new table is there");
    }
}

#[tokio::test]
async fn a_database_migrated_further_than_this_binary_knows_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let url = fresh_database(dir.path(), "newer.db").await;
    Schema::Edge.migrate(&url).await.expect("migrated");
    let db = fleet_store::connect(&url, 1).await.expect("connect");
    db.execute_unprepared(
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m29991231_000001_future', 0)",
    )
    .await
    .expect("a newer release's migration");
    db.close().await.expect("close");
    let refused = Schema::Edge.migrate(&url).await.expect_err("refused");
    assert!(
        refused.to_string().contains("m29991231_000001_future"),
        "{refused}"
    );
}

/// Columns and indexes of every table of an SQLite database, one line each.
async fn describe_sqlite(db: &impl ConnectionTrait) -> Vec<String> {
    let q = |sql: String| Statement::from_string(DbBackend::Sqlite, sql);
    let tables = db
        .query_all(q(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT IN ('seaql_migrations', 'sqlite_sequence') ORDER BY name"
                .into(),
        ))
        .await
        .expect("tables");
    let mut out = Vec::new();
    for t in tables {
        let table: String = t.try_get("", "name").expect("name");
        for c in db
            .query_all(q(format!(
                "SELECT name, type, \"notnull\" AS nn, pk FROM pragma_table_info('{table}') ORDER BY cid"
            )))
            .await
            .expect("columns")
        {
            out.push(format!(
                "{table}.{} {} notnull={} pk={}",
                c.try_get::<String>("", "name").expect("name"),
                c.try_get::<String>("", "type").expect("type"),
                c.try_get::<i64>("", "nn").expect("notnull"),
                c.try_get::<i64>("", "pk").expect("pk"),
            ));
        }
        for i in db
            .query_all(q(format!(
                "SELECT name, \"unique\" AS u FROM pragma_index_list('{table}') ORDER BY name"
            )))
            .await
            .expect("indexes")
        {
            let index: String = i.try_get("", "name").expect("name");
            let columns: Vec<String> = db
                .query_all(q(format!(
                    "SELECT name FROM pragma_index_info('{index}') ORDER BY seqno"
                )))
                .await
                .expect("index columns")
                .iter()
                .map(|r| r.try_get::<String>("", "name").expect("column"))
                .collect();
            out.push(format!(
                "{table} index {index} unique={} ({})",
                i.try_get::<i64>("", "u").expect("unique"),
                columns.join(", ")
            ));
        }
    }
    out
}

#[tokio::test]
async fn on_sqlite_the_migrations_end_at_the_schema_print_schema_shows() {
    let dir = tempfile::tempdir().expect("dir");
    let cases: [(Schema, Vec<TableSpec>); 2] = [
        (Schema::Center, schema::center_tables(DbBackend::Sqlite)),
        (Schema::Edge, schema::fleet_tables(DbBackend::Sqlite)),
    ];
    for (n, (migrator, tables)) in cases.into_iter().enumerate() {
        let migrated = format!("sqlite://{}", dir.path().join(format!("m{n}.db")).display());
        migrator.migrate(&migrated).await.expect("migrated");
        let printed = format!("sqlite://{}", dir.path().join(format!("p{n}.db")).display());
        let printed_db = fleet_store::connect(&printed, 1).await.expect("connect");
        run_script(&printed_db, &schema::ddl(DbBackend::Sqlite, &tables)).await;
        let migrated_db = fleet_store::connect(&migrated, 1).await.expect("connect");
        assert_eq!(
            describe_sqlite(&migrated_db).await,
            describe_sqlite(&printed_db).await,
            "{migrator:?}"
        );
    }
}
