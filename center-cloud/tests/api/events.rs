use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn every_mutating_call_is_recorded() {
    let app = spawn_app().await;
    let d = app.device("gw", "SN-1").await;
    let id = d["id"].as_str().expect("id");
    app.patch(&format!("/api/v1/devices/{id}"), json!({"name": "x"}))
        .await;
    app.post(
        "/api/v1/devices",
        crate::helpers::device_json("dup", "SN-1"),
    )
    .await;
    app.call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "mallory", "password": "guess-guess"})),
    )
    .await;
    app.get("/api/v1/devices").await;

    let (status, body) = app.get(&format!("/api/v1/events?target_id={id}")).await;
    assert_eq!(status, 200);
    let items = body["data"]["items"].as_array().expect("items");
    let actions: Vec<&str> = items.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        vec!["PATCH /api/v1/devices/{id}", "POST /api/v1/devices"],
        "newest first"
    );
    assert!(items
        .iter()
        .all(|e| e["actor"] == "admin" && e["outcome"] == "ok" && e["target_type"] == "devices"));

    let (_, body) = app.get("/api/v1/events?outcome=error").await;
    let errors = body["data"]["items"].as_array().expect("items");
    assert!(errors.iter().any(|e| e["status_code"] == 409
        && e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("already exists"))));
    assert!(errors
        .iter()
        .any(|e| e["actor"] == "mallory" && e["status_code"] == 401));

    let (_, body) = app.get("/api/v1/events?actor=admin&action=login").await;
    assert!(body["data"]["total"].as_u64().expect("total") >= 1);
    let (_, body) = app.get("/api/v1/events").await;
    assert!(
        body["data"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|e| e["action"].as_str() != Some("GET /api/v1/devices")),
        "reads are not audited"
    );
    let (status, body) = app.get("/api/v1/events?outcome=maybe").await;
    crate::helpers::assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("outcome"));
}

#[tokio::test]
async fn non_admins_see_their_own_events_only() {
    let app = spawn_app().await;
    let g = app.group("g").await;
    let (_, op) = app.user("oper", "operator", &[&g]).await;
    let mut d = crate::helpers::device_json("d", "SN-1");
    d["groups"] = json!([g]);
    app.call(Method::POST, "/api/v1/devices", Some(&op), Some(d))
        .await;
    let (_, body) = app
        .call(Method::GET, "/api/v1/events", Some(&op), None)
        .await;
    let items = body["data"]["items"].as_array().expect("items");
    assert!(!items.is_empty());
    assert!(items.iter().all(|e| e["actor"] == "oper"), "{body}");
}
