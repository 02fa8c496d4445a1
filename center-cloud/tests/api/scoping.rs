//! Operators and viewers see and act only on devices in the groups mapped to them.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_error, device_json, spawn_app};

#[tokio::test]
async fn operators_see_and_change_only_their_groups() {
    let app = spawn_app().await;
    let (mine, theirs) = (app.group("mine").await, app.group("theirs").await);
    let inside = app.device("inside", "SN-1").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let outside = app.device("outside", "SN-2").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.post(
        &format!("/api/v1/groups/{mine}/devices"),
        json!({"device_ids": [inside]}),
    )
    .await;
    app.post(
        &format!("/api/v1/groups/{theirs}/devices"),
        json!({"device_ids": [outside]}),
    )
    .await;
    let (_, op) = app.user("oper", "operator", &[&mine]).await;

    let (_, body) = app
        .call(Method::GET, "/api/v1/devices", Some(&op), None)
        .await;
    assert_eq!(body["data"]["total"], 1);
    assert_eq!(body["data"]["items"][0]["id"], json!(inside));
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/v1/devices/{outside}"),
            Some(&op),
            None,
        )
        .await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/devices/{outside}"),
            Some(&op),
            Some(json!({"name": "hijacked"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/devices/{outside}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/devices/{outside}/secret"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, body) = app.get(&format!("/api/v1/devices/{outside}")).await;
    assert_eq!(body["data"]["name"], "outside", "untouched");

    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/devices/{inside}"),
            Some(&op),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(status, 200);

    // Groups: they see theirs only, and cannot pull foreign devices into them.
    let (_, body) = app
        .call(Method::GET, "/api/v1/groups", Some(&op), None)
        .await;
    assert_eq!(body["data"]["total"], 1);
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/groups/{theirs}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/groups/{mine}/devices"),
            Some(&op),
            Some(json!({"device_ids": [outside]})),
        )
        .await;
    assert_error(status, &body, 404, "NOT_FOUND", Some("device_ids[0]"));
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/devices/{inside}/groups"),
            Some(&op),
            Some(json!({"group_ids": [theirs]})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/v1/devices?id={outside}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([]), "the seed contract is scoped too");
    let (_, csv) = app
        .raw(
            Method::GET,
            "/api/v1/devices/export",
            Some(&op),
            "text/plain",
            Vec::new(),
        )
        .await;
    assert!(csv.contains("renamed") && !csv.contains("outside"), "{csv}");
    // Admin-only resources.
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/groups",
            Some(&op),
            Some(json!({"name": "new"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(Method::GET, "/api/v1/edges", Some(&op), None)
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn operators_must_place_new_devices_in_their_groups() {
    let app = spawn_app().await;
    let (mine, theirs) = (app.group("mine").await, app.group("theirs").await);
    let (_, op) = app.user("oper", "operator", &[&mine]).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/devices",
            Some(&op),
            Some(device_json("d", "SN-1")),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("groups"));
    let mut d = device_json("d", "SN-1");
    d["groups"] = json!([theirs]);
    let (status, body) = app
        .call(Method::POST, "/api/v1/devices", Some(&op), Some(d))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND", Some("groups[0]"));
    let mut d = device_json("d", "SN-1");
    d["groups"] = json!([mine]);
    let (status, body) = app
        .call(Method::POST, "/api/v1/devices", Some(&op), Some(d))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().expect("id");
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/devices/{id}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.count_devices().await, 1);
}

#[tokio::test]
async fn viewers_read_but_never_write() {
    let app = spawn_app().await;
    let g = app.group("g").await;
    let id = app.device("d", "SN-1").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.post(
        &format!("/api/v1/groups/{g}/devices"),
        json!({"device_ids": [id]}),
    )
    .await;
    let (_, viewer) = app.user("vic", "viewer", &[&g]).await;
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/devices/{id}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let mut d = device_json("d2", "SN-2");
    d["groups"] = json!([g]);
    let writes = [
        (Method::POST, "/api/v1/devices".to_string(), Some(d)),
        (
            Method::PATCH,
            format!("/api/v1/devices/{id}"),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, format!("/api/v1/devices/{id}"), None),
        (Method::POST, format!("/api/v1/devices/{id}/secret"), None),
        (
            Method::DELETE,
            format!("/api/v1/groups/{g}/devices"),
            Some(json!({"device_ids": [id]})),
        ),
        (
            Method::DELETE,
            "/v1/devices".to_string(),
            Some(json!({"ids": [id]})),
        ),
    ];
    for (method, path, body) in writes {
        let (status, answer) = app.call(method.clone(), &path, Some(&viewer), body).await;
        assert_error(status, &answer, 403, "PERMISSION_DENIED", None);
    }
    let (_, body) = app.get(&format!("/api/v1/groups/{g}")).await;
    assert_eq!(body["data"]["devices"], 1, "nothing changed");
    assert_eq!(app.count_devices().await, 1);
}
