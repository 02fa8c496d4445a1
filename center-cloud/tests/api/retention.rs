//! Event retention against a fresh database with the center's schema (SQLite, or
//! MariaDB when `TEST_MYSQL_URL` is set): one pass deletes what is past the retention,
//! in steps. No server runs here, so no other retention pass can interfere.

use std::time::Duration;

use fleet_node::metrics::Metrics;
use fleet_node::tokens::Tokens;
use fleet_node::Node;
use fleet_store::events;
use fleet_store::ids::Snowflake;
use fleet_store::Replica;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};

use crate::helpers::fresh_database;

const DAY_MS: i64 = 86_400_000;

fn event(id: i64, at: i64) -> events::ActiveModel {
    events::ActiveModel {
        id: Set(id),
        at: Set(at),
        actor: Set("admin".into()),
        action: Set("POST /api/v1/devices".into()),
        target_type: Set("devices".into()),
        target_id: Set(id.to_string()),
        outcome: Set("ok".into()),
        status_code: Set(201),
        detail: Set(String::new()),
    }
}

#[tokio::test]
async fn a_retention_pass_deletes_old_events_in_steps_and_keeps_new_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = fresh_database(dir.path()).await;
    fleet_store::migrations::Schema::Center
        .migrate(&url)
        .await
        .expect("schema");
    let db = fleet_store::connect(&url, 2).await.expect("database");
    let node = Node::new(
        db,
        Replica::new(Snowflake::new(900).expect("worker")),
        Tokens::new(b"retention-test-key", Duration::from_secs(60)),
        Metrics::new(),
    );
    let now = fleet_store::now_ms();
    // 25 events from 91 to 115 days ago, 5 from 1 to 5 days ago, and one just inside
    // a 90-day retention.
    for i in 0..25 {
        event(1_000 + i, now - (91 + i) * DAY_MS)
            .insert(&node.db)
            .await
            .expect("old event");
    }
    for i in 0..5 {
        event(2_000 + i, now - (1 + i) * DAY_MS)
            .insert(&node.db)
            .await
            .expect("new event");
    }
    event(3_000, now - 89 * DAY_MS)
        .insert(&node.db)
        .await
        .expect("edge event");

    let retain = Duration::from_secs(90 * 86_400);
    // One step deletes no more than it is given, oldest first.
    let step = fleet_node::events::expire_step(&node.db, now - 90 * DAY_MS, 10)
        .await
        .expect("one step");
    assert_eq!(step, 10);
    let oldest_left = events::Entity::find_by_id(1_014).one(&node.db).await;
    assert!(
        oldest_left.expect("read").is_some(),
        "the 10 oldest went first"
    );
    let oldest_gone = events::Entity::find_by_id(1_015).one(&node.db).await;
    assert!(oldest_gone.expect("read").is_none());
    // A pass in steps of 10 takes the other 15 (two steps).
    let gone = fleet_node::events::expire(&node, retain, 10)
        .await
        .expect("retention pass");
    assert_eq!(gone, 15);
    let mut left: Vec<i64> = events::Entity::find()
        .all(&node.db)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.id)
        .collect();
    left.sort_unstable();
    assert_eq!(left, vec![2_000, 2_001, 2_002, 2_003, 2_004, 3_000]);
    let again = fleet_node::events::expire(&node, retain, 10)
        .await
        .expect("second pass");
    assert_eq!(again, 0, "a second pass finds nothing");
    assert!(node
        .metrics
        .render(&node.db)
        .contains("events_expired_total 15"));
}
