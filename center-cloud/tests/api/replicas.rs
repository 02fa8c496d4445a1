//! Center replicas over one database, started the same way: each leases a worker id
//! of its own, never one an edge holds, rows made through either never clash, and
//! writes through both at once all hold. On a Galera cluster (`TEST_MYSQL_URL_2`
//! names a second node), the second replica writes through the other node.

use fleet_store::ids::worker_of;
use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::helpers::*;

async fn replica_of(first: &TestApp) -> TestApp {
    let database_url = api_harness::on_second_server(&first.database_url);
    spawn_with(|s| s.node.database_url = database_url).await
}

/// The worker id of the replica behind `app`, read from a row it makes.
async fn worker(app: &TestApp, name: &str) -> i64 {
    let id = app.group(name).await;
    worker_of(id.parse().expect("numeric id"))
}

#[tokio::test]
async fn replicas_lease_distinct_worker_ids_that_edges_never_get() {
    let a = spawn_app().await;
    let b = replica_of(&a).await;
    let (wa, wb) = (worker(&a, "made-at-a").await, worker(&b, "made-at-b").await);
    assert_eq!(wa, 1, "the first replica takes the center's usual id");
    assert_eq!(wb, 1023, "the next one leases from the top down");
    let (status, reg) = a
        .post("/api/v1/edges", json!({"name": "site-1", "site": "s"}))
        .await;
    assert_eq!(status, 201, "{reg}");
    assert_eq!(reg["data"]["worker_id"], json!(2));

    // Edges issued up to just below the top: the next edge skips the leased 1023.
    a.db()
        .await
        .execute_unprepared(
            "UPDATE settings SET value = '1021' WHERE name = 'edge_worker_high_water'",
        )
        .await
        .expect("high-water mark");
    let (status, reg) = a
        .post("/api/v1/edges", json!({"name": "site-2", "site": "s"}))
        .await;
    assert_eq!(status, 201, "{reg}");
    assert_eq!(reg["data"]["worker_id"], json!(1022));
    let (status, body) = a
        .post("/api/v1/edges", json!({"name": "site-3", "site": "s"}))
        .await;
    assert_error(status, &body, 409, "FAILED_PRECONDITION", None);

    // A replica that stopped renewing frees its id once the lease expires.
    a.db()
        .await
        .execute_unprepared("UPDATE worker_leases SET expires_at = 0 WHERE worker_id = 1023")
        .await
        .expect("expire");
    let c = replica_of(&a).await;
    assert_eq!(worker(&c, "made-at-c").await, 1023);
}

#[tokio::test]
async fn creates_through_two_replicas_at_once_never_clash() {
    if !on_mariadb() {
        // SQLite has one writer; several processes over one file are not a deployment.
        return;
    }
    let a = spawn_app().await;
    let b = replica_of(&a).await;
    let creates = (0..100).map(|n| {
        let app = if n % 2 == 0 { &a } else { &b };
        async move {
            app.post(
                "/api/v1/devices",
                device_json(&format!("r{n}"), &format!("SN-REP-{n}")),
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(creates).await;
    let mut ids: Vec<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 201, "{body}");
            body["data"]["id"].as_str().expect("id").to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert_eq!(a.count_devices().await, 100);
}

#[tokio::test]
async fn replicas_started_together_on_an_empty_database_all_come_up() {
    // An empty database both replicas race to set up: migrations, the token key, the
    // first admin and their worker ids.
    let (_dir, fresh) = test_settings(center_cloud::config::DEFAULTS).await;
    let url = fresh.database_url.clone();
    let (a, b) = tokio::join!(
        spawn_with(|s| s.node.database_url = url.clone()),
        spawn_with(|s| s.node.database_url = url.clone())
    );
    let (wa, wb) = (worker(&a, "first-up").await, worker(&b, "second-up").await);
    assert_ne!(wa, wb, "each replica leased its own worker id");
    let (status, _) = b.get("/api/v1/users").await;
    assert_eq!(status, 200, "one admin, whose token either replica accepts");
}

#[tokio::test]
async fn edits_of_one_device_through_two_replicas_at_once_all_hold() {
    if !on_mariadb() {
        // SQLite has one writer; several processes over one file are not a deployment.
        return;
    }
    let a = spawn_app().await;
    let b = replica_of(&a).await;
    let device = a.device("shared", "SN-SHARED").await;
    let id = device["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/devices/{id}");
    let group = a.group("both").await;
    // Each round, both replicas edit their own field of the same row at the same
    // time, and both edits must be there after: a write saved over a version it did
    // not read would put back the other's older value.
    for n in 0..40 {
        let ((sa, da), (sb, db)) = tokio::join!(
            a.patch(&path, json!({"description": format!("a-{n}")})),
            b.patch(&path, json!({"name": format!("b-{n}")})),
        );
        assert_eq!((sa, sb), (200, 200), "{da} {db}");
        let (_, now) = a.get(&path).await;
        assert_eq!(
            now["data"]["description"],
            json!(format!("a-{n}")),
            "round {n}: {now}"
        );
        assert_eq!(
            now["data"]["name"],
            json!(format!("b-{n}")),
            "round {n}: {now}"
        );
    }
    // Both put the device in the same group at the same time, many times over: one
    // membership, never a failed request or a second row.
    let join = format!("{path}/groups");
    for _ in 0..10 {
        let ((sa, da), (sb, db)) = tokio::join!(
            a.post(&join, json!({"group_ids": [group]})),
            b.post(&join, json!({"group_ids": [group]})),
        );
        assert_eq!((sa, sb), (200, 200), "{da} {db}");
        assert_eq!(da["data"], json!([group]), "{da}");
        let (status, left) = a.delete(&join, Some(json!({"group_ids": [group]}))).await;
        assert_eq!(status, 200, "{left}");
    }
    let (_, both) = b.post(&join, json!({"group_ids": [group]})).await;
    assert_eq!(both["data"], json!([group]), "{both}");
    let memberships: Vec<i64> = a
        .db()
        .await
        .query_all(sea_orm::Statement::from_string(
            sea_orm::DbBackend::MySql,
            "SELECT id FROM memberships",
        ))
        .await
        .expect("memberships")
        .iter()
        .map(|r| r.try_get_by_index(0).expect("id"))
        .collect();
    assert_eq!(memberships.len(), 1, "{memberships:?}");
}

/// Each replica caches the devices it reads by id; a write through the other replica
/// reaches that cache through the shared change log, without a restart or a wait
/// for the entry to age out.
#[tokio::test]
async fn a_device_read_through_one_replica_follows_writes_through_the_other() {
    let a = spawn_app().await;
    let b = replica_of(&a).await;
    let id = a.device("shared", "SN-SHARED").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let path = format!("/api/v1/devices/{id}");
    let name_at_b = async || {
        let (status, body) = b.get(&path).await;
        (status, body["data"]["name"].clone())
    };
    assert_eq!(name_at_b().await, (200, json!("shared")));
    assert_eq!(name_at_b().await, (200, json!("shared")), "now cached at b");

    let (status, body) = a.patch(&path, json!({"name": "renamed-at-a"})).await;
    assert_eq!(status, 200, "{body}");
    until_seen(async || name_at_b().await == (200, json!("renamed-at-a"))).await;

    let (status, body) = a.delete(&path, None).await;
    assert_eq!(status, 200, "{body}");
    until_seen(async || name_at_b().await.0 == 404).await;
}

/// Waits (10 s at most) until `seen` holds.
async fn until_seen(seen: impl AsyncFn() -> bool) {
    for _ in 0..200 {
        if seen().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("not seen through the other replica within 10 s");
}
