use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn registering_edges_hands_out_unique_worker_ids_and_secrets() {
    let app = spawn_app().await;
    let (status, a) = app
        .post(
            "/api/v1/edges",
            json!({"name": "edge-a", "site": "shanghai"}),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    let (_, b) = app
        .post(
            "/api/v1/edges",
            json!({"name": "edge-b", "site": "chengdu"}),
        )
        .await;
    let (wa, wb) = (
        a["data"]["worker_id"].as_i64().expect("w"),
        b["data"]["worker_id"].as_i64().expect("w"),
    );
    assert!(
        wa >= 2 && wb >= 2 && wa != wb,
        "{wa} {wb}: 1 is the center's"
    );
    assert!(a["data"]["secret"].as_str().is_some_and(|s| s.len() >= 22));
    let id = a["data"]["id"].as_str().expect("id");
    let (status, body) = app.get(&format!("/api/v1/edges/{id}")).await;
    assert_eq!(status, 200);
    assert!(body["data"].get("secret").is_none());
    assert_eq!(body["data"]["site"], "shanghai");
    let (_, body) = app.get("/api/v1/edges?site=chengdu").await;
    assert_eq!(body["data"]["total"], 1);
    let (status, body) = app.post("/api/v1/edges", json!({"name": "edge-a"})).await;
    assert_error(status, &body, 409, "ALREADY_EXISTS", Some("name"));
    let (status, body) = app.post("/api/v1/edges", json!({"site": "x"})).await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("name"));

    let (status, body) = app
        .post(&format!("/api/v1/edges/{id}/secret"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_ne!(body["data"]["secret"], a["data"]["secret"]);
}

#[tokio::test]
async fn an_edge_with_devices_cannot_be_deleted() {
    let app = spawn_app().await;
    let (_, e) = app.post("/api/v1/edges", json!({"name": "edge-a"})).await;
    let edge = e["data"]["id"].as_str().expect("id").to_string();
    let d = app.device("d", "SN-1").await;
    let device = d["id"].as_str().expect("id");
    app.patch(
        &format!("/api/v1/devices/{device}"),
        json!({"edge_id": edge}),
    )
    .await;
    let (status, body) = app.delete(&format!("/api/v1/edges/{edge}"), None).await;
    assert_error(status, &body, 409, "FAILED_PRECONDITION", None);
    app.delete(&format!("/api/v1/devices/{device}"), None).await;
    let (status, _) = app.delete(&format!("/api/v1/edges/{edge}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = app.get(&format!("/api/v1/edges/{edge}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn edges_are_admin_only() {
    let app = spawn_app().await;
    let (_, op) = app.user("oper", "operator", &[]).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/edges",
            Some(&op),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(status, &body, 403, "PERMISSION_DENIED", None);
    let (_, body) = app.get("/api/v1/edges").await;
    assert_eq!(body["data"]["total"], 0);
}

#[tokio::test]
async fn an_edge_is_renamed_and_moved_to_another_site_by_an_admin() {
    let app = spawn_app().await;
    let (_, a) = app
        .post(
            "/api/v1/edges",
            json!({"name": "edge-a", "site": "shanghai"}),
        )
        .await;
    app.post("/api/v1/edges", json!({"name": "edge-b"})).await;
    let id = a["data"]["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/edges/{id}");

    let (status, body) = app.patch(&path, json!({"site": "chengdu"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["site"], "chengdu");
    assert_eq!(body["data"]["name"], "edge-a", "an absent field stays");
    assert_eq!(body["data"]["worker_id"], a["data"]["worker_id"]);
    let (status, body) = app.patch(&path, json!({"name": "edge-c"})).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = app.get(&path).await;
    assert_eq!(
        (body["data"]["name"].as_str(), body["data"]["site"].as_str()),
        (Some("edge-c"), Some("chengdu"))
    );
    // Keeping its own name is no conflict.
    let (status, _) = app.patch(&path, json!({"name": "edge-c"})).await;
    assert_eq!(status, 200);

    // Bad input changes nothing and names the field.
    let (status, body) = app.patch(&path, json!({"name": "edge-b"})).await;
    assert_error(status, &body, 409, "ALREADY_EXISTS", Some("name"));
    let (status, body) = app.patch(&path, json!({"name": ""})).await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("name"));
    let (status, body) = app.patch(&path, json!({"site": "x".repeat(129)})).await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("site"));
    let (status, body) = app.patch("/api/v1/edges/42", json!({"site": "y"})).await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
    let (_, body) = app.get(&path).await;
    assert_eq!(body["data"]["name"], "edge-c");
    assert_eq!(body["data"]["site"], "chengdu");

    let (_, op) = app.user("oper", "operator", &[]).await;
    let (status, body) = app
        .call(Method::PATCH, &path, Some(&op), Some(json!({"site": "z"})))
        .await;
    assert_error(status, &body, 403, "PERMISSION_DENIED", None);
}
