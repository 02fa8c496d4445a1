use fleet_store::{change_log, devices};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;

use crate::helpers::{assert_error, device_json, spawn_app};

#[tokio::test]
async fn create_answers_id_and_secret_once() {
    let app = spawn_app().await;
    let d = app.device("gw-1", "SN-1").await;
    let id = d["id"].as_str().expect("id string");
    assert!(id.parse::<i64>().is_ok());
    let secret = d["secret"].as_str().expect("secret");
    assert!(secret.len() >= 22, "at least 128 bits");
    assert_eq!(
        d["hardware"],
        json!({"model": "Raspberry Pi 4", "sn": "SN-1"})
    );
    assert_eq!(d["nic"][0]["mac"], "12:34:56:78:9a:bc");
    assert_eq!(d["edge_id"], json!(null));

    let (status, body) = app.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        body["data"].get("secret").is_none(),
        "secret is shown only once"
    );
    assert_eq!(body["data"]["name"], "gw-1");
    assert_eq!(body["data"]["type"], "gateway");

    // Stored only as a keyed hash.
    let db = app.db().await;
    let row = devices::Entity::find_by_id(id.parse::<i64>().expect("id"))
        .one(&db)
        .await
        .expect("query")
        .expect("row");
    assert!(!row.secret_hash.contains(secret));
    assert!(fleet_store::credentials::verify_secret(
        secret,
        &row.secret_hash
    ));
}

#[tokio::test]
async fn writes_are_stamped_and_logged_in_the_change_log() {
    let app = spawn_app().await;
    let d = app.device("gw-1", "SN-1").await;
    let id: i64 = d["id"].as_str().expect("id").parse().expect("num");
    let (status, _) = app
        .patch(&format!("/api/v1/devices/{id}"), json!({"name": "renamed"}))
        .await;
    assert_eq!(status, 200);
    let db = app.db().await;
    let row = devices::Entity::find_by_id(id)
        .one(&db)
        .await
        .expect("q")
        .expect("row");
    let log = change_log::Entity::find()
        .filter(change_log::Column::RowId.eq(id))
        .order_by_asc(change_log::Column::Seq)
        .all(&db)
        .await
        .expect("q");
    assert_eq!(log.len(), 2, "one entry per write");
    assert_eq!(log[0].table_name, "devices");
    assert_eq!(
        log[1].hlc, row.hlc,
        "the last entry carries the row's stamp"
    );
    assert!(log[1].hlc > log[0].hlc);
    assert_eq!(row.origin, 1, "written by the center (worker 1)");
    let payload: serde_json::Value = serde_json::from_str(&log[1].payload).expect("json");
    assert_eq!(payload["name"], "renamed");
    assert!(
        payload.get("hw_sn").is_none(),
        "an update logs only what changed"
    );
    let stamps: serde_json::Value = serde_json::from_str(&row.field_stamps).expect("json");
    assert_eq!(stamps["name"], row.hlc);
    assert!(stamps["hw_sn"].as_i64().expect("stamp") < row.hlc);

    let (status, _) = app.delete(&format!("/api/v1/devices/{id}"), None).await;
    assert_eq!(status, 200);
    let row = devices::Entity::find_by_id(id)
        .one(&db)
        .await
        .expect("q")
        .expect("tombstone kept");
    assert!(row.deleted);
    let last = change_log::Entity::find()
        .filter(change_log::Column::RowId.eq(id))
        .order_by_desc(change_log::Column::Seq)
        .one(&db)
        .await
        .expect("q")
        .expect("entry");
    assert!(last.deleted);
}

#[tokio::test]
async fn duplicate_sn_and_model_is_409_and_changes_nothing() {
    let app = spawn_app().await;
    app.device("a", "SN-1").await;
    let (status, body) = app.post("/api/v1/devices", device_json("b", "SN-1")).await;
    assert_error(status, &body, 409, "ALREADY_EXISTS", Some("hardware.sn"));
    assert_eq!(app.count_devices().await, 1);
    // Same sn on another model is a different device.
    let mut other = device_json("c", "SN-1");
    other["hardware"]["model"] = json!("Jetson");
    let (status, _) = app.post("/api/v1/devices", other).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn bad_fields_are_named_and_change_nothing() {
    let app = spawn_app().await;
    type Case = (fn(&mut serde_json::Value), &'static str);
    let cases: Vec<Case> = vec![
        (|d| d["name"] = json!(""), "name"),
        (|d| d["name"] = json!("n".repeat(129)), "name"),
        (|d| d["type"] = json!(7), "type"),
        (|d| d["hardware"] = json!({"model": "m"}), "hardware.sn"),
        (
            |d| d["nic"][0]["mac"] = json!("12:34:56:78:9a"),
            "nic[0].mac",
        ),
        (
            |d| d["nic"][0]["ipv4"] = json!("192.168.1.256"),
            "nic[0].ipv4",
        ),
        (
            |d| d["software"]["version"] = json!("1.0 beta"),
            "software.version",
        ),
        (|d| d["edge_id"] = json!("abc"), "edge_id"),
        (|d| d["groups"] = json!(["-1"]), "groups[0]"),
    ];
    for (mutate, field) in cases {
        let mut d = device_json("x", "SN-X");
        mutate(&mut d);
        let (status, body) = app.post("/api/v1/devices", d).await;
        assert_error(status, &body, 400, "INVALID_ARGUMENT", Some(field));
    }
    let mut d = device_json("x", "SN-X");
    d["edge_id"] = json!("12345");
    let (status, body) = app.post("/api/v1/devices", d).await;
    assert_error(status, &body, 404, "NOT_FOUND", Some("edge_id"));
    assert_eq!(app.count_devices().await, 0);

    let dev = app.device("ok", "SN-OK").await;
    let id = dev["id"].as_str().expect("id");
    let (status, body) = app
        .patch(
            &format!("/api/v1/devices/{id}"),
            json!({"nic": [{"mac": "zz"}]}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("nic[0].mac"));
    let (_, body) = app.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(
        body["data"]["nic"][0]["mac"], "12:34:56:78:9a:bc",
        "unchanged"
    );
    let (status, body) = app.get("/api/v1/devices/not-an-id").await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("id"));
}

#[tokio::test]
async fn partial_update_keeps_other_fields() {
    let app = spawn_app().await;
    let edge = app
        .post("/api/v1/edges", json!({"name": "site-a", "site": "a"}))
        .await
        .1["data"]["id"]
        .as_str()
        .expect("edge")
        .to_string();
    let d = app.device("gw", "SN-1").await;
    let id = d["id"].as_str().expect("id");
    let (status, body) = app
        .patch(
            &format!("/api/v1/devices/{id}"),
            json!({"software": {"version": "2.0.0"}, "status": "maintenance", "edge_id": edge}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["software"]["version"], "2.0.0");
    assert_eq!(
        body["data"]["software"]["last_update"],
        "2026-01-01 10:00:00"
    );
    assert_eq!(body["data"]["status"], "maintenance");
    assert_eq!(body["data"]["name"], "gw");
    assert_eq!(body["data"]["edge_id"], json!(edge));
    let (_, body) = app
        .patch(&format!("/api/v1/devices/{id}"), json!({"edge_id": null}))
        .await;
    assert_eq!(body["data"]["edge_id"], json!(null));
    // Moving onto another device's (model, sn) is a conflict.
    app.device("other", "SN-2").await;
    let (status, body) = app
        .patch(
            &format!("/api/v1/devices/{id}"),
            json!({"hardware": {"sn": "SN-2"}}),
        )
        .await;
    assert_error(status, &body, 409, "ALREADY_EXISTS", Some("hardware.sn"));
}

#[tokio::test]
async fn list_filters_and_paginates() {
    let app = spawn_app().await;
    let edge = app.post("/api/v1/edges", json!({"name": "e1"})).await.1["data"]["id"]
        .as_str()
        .expect("edge")
        .to_string();
    for i in 0..12 {
        let mut d = device_json(&format!("dev-{i:02}"), &format!("SN-{i}"));
        if i % 3 == 0 {
            d["type"] = json!("camera");
            d["edge_id"] = json!(edge);
        }
        let (status, _) = app.post("/api/v1/devices", d).await;
        assert_eq!(status, 201);
    }
    let (_, body) = app.get("/api/v1/devices?per_page=5&page=3").await;
    assert_eq!(body["data"]["total"], 12);
    assert_eq!(body["data"]["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["data"]["page"], 3);
    let (_, body) = app.get("/api/v1/devices?type=camera").await;
    assert_eq!(body["data"]["total"], 4);
    let (_, body) = app.get(&format!("/api/v1/devices?edge={edge}")).await;
    assert_eq!(body["data"]["total"], 4);
    let (_, body) = app.get("/api/v1/devices?name=dev-1").await;
    assert_eq!(body["data"]["total"], 2, "dev-10 and dev-11");
    let (_, body) = app
        .get("/api/v1/devices?sn=SN-7&model=Raspberry%20Pi%204")
        .await;
    assert_eq!(body["data"]["items"][0]["name"], "dev-07");
    let (status, body) = app.get("/api/v1/devices?page=0").await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("page"));
    for huge in ["18446744073709551615", "9223372036854775807"] {
        let (status, body) = app
            .get(&format!("/api/v1/devices?per_page=1000&page={huge}"))
            .await;
        assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("page"));
    }
    let (status, body) = app.get("/api/v1/devices?per_page=abc").await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("per_page"));
}

#[tokio::test]
async fn delete_is_soft_and_frees_the_hardware_key() {
    let app = spawn_app().await;
    let d = app.device("gw", "SN-1").await;
    let id = d["id"].as_str().expect("id");
    let (status, _) = app.delete(&format!("/api/v1/devices/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, body) = app.get(&format!("/api/v1/devices/{id}")).await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
    let (status, body) = app.delete(&format!("/api/v1/devices/{id}"), None).await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
    assert_eq!(app.count_devices().await, 0);
    let again = app.device("gw", "SN-1").await;
    assert_ne!(again["id"], d["id"]);
}

#[tokio::test]
async fn rotating_a_secret_replaces_it() {
    let app = spawn_app().await;
    let d = app.device("gw", "SN-1").await;
    let id = d["id"].as_str().expect("id");
    let (status, body) = app
        .post(&format!("/api/v1/devices/{id}/secret"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let new_secret = body["data"]["secret"].as_str().expect("secret");
    assert_ne!(new_secret, d["secret"].as_str().expect("old"));
    let db = app.db().await;
    let row = devices::Entity::find_by_id(id.parse::<i64>().expect("id"))
        .one(&db)
        .await
        .expect("q")
        .expect("row");
    assert!(fleet_store::credentials::verify_secret(
        new_secret,
        &row.secret_hash
    ));
    assert!(!fleet_store::credentials::verify_secret(
        d["secret"].as_str().expect("old"),
        &row.secret_hash
    ));
}

#[tokio::test]
async fn concurrent_writes_all_succeed() {
    let app = std::sync::Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let (status, body) = app
                .post(
                    "/api/v1/devices",
                    device_json(&format!("c{i}"), &format!("SN-C{i}")),
                )
                .await;
            (status, body)
        }));
    }
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(app.count_devices().await, 40);
}

#[tokio::test]
async fn keyset_paging_walks_every_device_once() {
    let app = spawn_app().await;
    for i in 0..7 {
        app.device(&format!("k{i}"), &format!("SN-K{i}")).await;
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = if after.is_empty() {
            "/api/v1/devices?per_page=3".to_string()
        } else {
            format!("/api/v1/devices?per_page=3&after={after}")
        };
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["total"], 7);
        let items = body["data"]["items"].as_array().expect("items").clone();
        if items.is_empty() {
            break;
        }
        after = items
            .last()
            .and_then(|d| d["id"].as_str())
            .expect("id")
            .to_string();
        seen.extend(
            items
                .into_iter()
                .filter_map(|d| d["name"].as_str().map(str::to_string)),
        );
    }
    assert_eq!(seen, (0..7).map(|i| format!("k{i}")).collect::<Vec<_>>());
    let (status, body) = app.get("/api/v1/devices?after=x").await;
    crate::helpers::assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("after"));
}

#[tokio::test]
async fn names_in_any_script_round_trip_and_differ_by_case() {
    let app = spawn_app().await;
    let d = app.device("上海网关-1 Ünïcode", "SN-中文").await;
    let id = d["id"].as_str().expect("id");
    let (status, body) = app.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "上海网关-1 Ünïcode");
    assert_eq!(body["data"]["hardware"]["sn"], "SN-中文");
    // Serial numbers compare byte for byte on every database, as on SQLite.
    let (status, body) = app
        .post("/api/v1/devices", device_json("gw-lower", "sn-中文"))
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Reads of one device by id are answered from the node's cache, yet a read that
/// begins after a write returned sees it, however many reads race the writes.
#[tokio::test]
async fn a_cached_device_read_sees_every_write_that_returned_before_it() {
    let app = spawn_app().await;
    let id = app.device("cached", "SN-CACHED").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let path = format!("/api/v1/devices/{id}");
    let hits = async || {
        crate::auth::metric(
            &app.metrics().await,
            r#"device_cache_reads_total{outcome="hit"}"#,
        )
    };
    let before = hits().await;
    for _ in 0..3 {
        assert_eq!(app.get(&path).await.0, 200);
    }
    assert!(
        hits().await >= before + 2.0,
        "repeated reads are served from the cache"
    );

    for n in 0..20 {
        let name = format!("renamed-{n}");
        let readers = futures_util::future::join_all((0..4).map(|_| app.get(&path)));
        let ((status, body), read) =
            tokio::join!(app.patch(&path, json!({ "name": name })), readers);
        assert_eq!(status, 200, "{body}");
        assert!(read.iter().all(|(status, _)| *status == 200));
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["name"], json!(name), "the write that returned");
    }
    let (status, body) = app.delete(&path, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get(&path).await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
}
