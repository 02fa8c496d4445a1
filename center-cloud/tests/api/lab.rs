//! The seed lab's `/v1/devices` contract, as its own example session uses it.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

fn lab_device() -> serde_json::Value {
    json!({
        "name": "test-name", "type": "controller",
        "hardware": {"model": "test-model", "sn": "test-sn"},
        "software": {"version": "0.1", "last_update": "2023-08-06 20:00:00"},
        "nic": [{"type": "wifi", "mac": "12:34:56:78:9a:bc", "ipv4": "192.168.1.2"}],
        "status": "online"
    })
}

#[tokio::test]
async fn the_seed_session_works_as_written() {
    let app = spawn_app().await;
    let (status, body) = app.post("/v1/devices", lab_device()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200);
    let id = body["data"]
        .as_str()
        .expect("the new id as a string")
        .to_string();

    // GET with a JSON body, by id and by (sn, model).
    let (status, body) = app
        .call(
            Method::GET,
            "/v1/devices",
            Some(&app.admin),
            Some(json!({"id": id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["name"], "test-name");
    assert_eq!(
        body["data"][0]["software"]["last_update"],
        "2023-08-06 20:00:00"
    );
    let (_, body) = app
        .call(
            Method::GET,
            "/v1/devices",
            Some(&app.admin),
            Some(json!({"sn": "test-sn", "model": "test-model"})),
        )
        .await;
    assert_eq!(body["data"][0]["id"], json!(id));
    // And by query string.
    let (_, body) = app.get("/v1/devices?sn=test-sn&model=test-model").await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));

    // PUT: partial update by id.
    let (status, body) = app
        .put("/v1/devices", json!({"id": id, "name": "new-name",
            "software": {"version": "0.5", "last_update": "2023-08-06 10:00:00"}, "status": "offline"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "new-name");
    assert_eq!(body["data"]["software"]["version"], "0.5");
    assert_eq!(body["data"]["status"], "offline");
    assert_eq!(body["data"]["type"], "controller");

    // DELETE answers the ids actually deleted; unknown ones are ignored.
    let (_, second) = app
        .post("/v1/devices", {
            let mut d = lab_device();
            d["hardware"]["sn"] = json!("other-sn");
            d
        })
        .await;
    let second = second["data"].as_str().expect("id").to_string();
    let (status, body) = app
        .delete(
            "/v1/devices",
            Some(json!({"ids": [id, second, "1234567890 "]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ids"], json!([id, second]));
    assert_eq!(body["data"]["ids"], json!([id, second]));
    let (_, body) = app
        .call(
            Method::GET,
            "/v1/devices",
            Some(&app.admin),
            Some(json!({"id": id})),
        )
        .await;
    assert_eq!(body["data"], json!([]));
}

#[tokio::test]
async fn the_seed_contract_validates_and_requires_login() {
    let app = spawn_app().await;
    let (status, body) = app
        .call(Method::GET, "/v1/devices", None, Some(json!({"id": "1"})))
        .await;
    assert_error(status, &body, 401, "UNAUTHENTICATED", None);
    let (status, body) = app
        .call(
            Method::GET,
            "/v1/devices",
            Some(&app.admin),
            Some(json!({"model": " "})),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("model"));
    let (status, body) = app
        .call(Method::GET, "/v1/devices", Some(&app.admin), None)
        .await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("id"));
    let mut bad = lab_device();
    bad["nic"][0]["ipv4"] = json!("1.2.3");
    let (status, body) = app.post("/v1/devices", bad).await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("nic[0].ipv4"));
    let (status, body) = app.put("/v1/devices", json!({"name": "no id"})).await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("id"));
    let (status, body) = app
        .put("/v1/devices", json!({"id": "42", "name": "x"}))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
    let (status, body) = app.delete("/v1/devices", Some(json!({"ids": "42"}))).await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("ids"));
    assert_eq!(app.count_devices().await, 0);
}

/// Answers the names of the devices a lookup finds, in the order given.
async fn found(app: &crate::helpers::TestApp, lookup: serde_json::Value) -> Vec<String> {
    let (status, body) = app
        .call(Method::GET, "/v1/devices", Some(&app.admin), Some(lookup))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| d["name"].as_str().expect("a name").to_string())
        .collect()
}

#[tokio::test]
async fn devices_are_found_by_sn_alone_or_by_a_loose_model_alone() {
    let app = spawn_app().await;
    for (name, model, sn) in [
        ("a", "Raspberry Pi 4", "sn-1"),
        ("b", "Raspberry Pi 5", "sn-1"),
        ("c", "Jetson Nano", "sn-2"),
        ("d", "100%_model", "sn-3"),
    ] {
        let mut d = lab_device();
        d["name"] = json!(name);
        d["hardware"] = json!({"model": model, "sn": sn});
        let (status, body) = app.post("/v1/devices", d).await;
        assert_eq!(status, 200, "{body}");
    }
    // sn alone: exact, every model, in id order.
    assert_eq!(found(&app, json!({"sn": "sn-1"})).await, ["a", "b"]);
    assert!(found(&app, json!({"sn": "sn"})).await.is_empty());
    // model alone: contained, ignoring case; wildcards in it are taken literally.
    assert_eq!(found(&app, json!({"model": "raspberry"})).await, ["a", "b"]);
    assert_eq!(found(&app, json!({"model": "PI 5"})).await, ["b"]);
    assert_eq!(found(&app, json!({"model": "0%_m"})).await, ["d"]);
    assert_eq!(found(&app, json!({"model": "%"})).await, ["d"]);
    assert_eq!(found(&app, json!({"model": "_"})).await, ["d"]);
    // Both: exact on each, so a partial model finds nothing.
    assert_eq!(
        found(&app, json!({"sn": "sn-1", "model": "Raspberry Pi 5"})).await,
        ["b"]
    );
    assert!(found(&app, json!({"sn": "sn-1", "model": "Raspberry"}))
        .await
        .is_empty());
    // The query string takes the same lookups.
    let (_, body) = app.get("/v1/devices?model=jetson").await;
    assert_eq!(body["data"][0]["name"], "c");
}
