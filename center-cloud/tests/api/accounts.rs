//! Accounts are cached per node, and a change still takes effect at once: on the node
//! that made it, and within the watch interval on another node over one database.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_cached_account_is_refused_or_rescoped_right_after_a_change() {
    let app = spawn_app().await;
    let (g1, g2) = (app.group("scope-one").await, app.group("scope-two").await);
    let (status, made) = app
        .post("/api/v1/devices", device_json("in-two", "SN-ACC-2"))
        .await;
    assert_eq!(status, 201, "{made}");
    let device = made["data"]["id"].as_str().expect("id").to_string();
    let (status, _) = app
        .post(
            &format!("/api/v1/groups/{g2}/devices"),
            json!({"device_ids": [device]}),
        )
        .await;
    assert_eq!(status, 200);
    let (id, token) = app.user("cached", "operator", &[&g1]).await;
    let list = async |token: &str| {
        app.call(Method::GET, "/api/v1/devices", Some(token), None)
            .await
    };
    let (status, body) = list(&token).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["total"], json!(0), "{body}");

    let (status, _) = app
        .put(
            &format!("/api/v1/users/{id}/groups"),
            json!({"group_ids": [g2]}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = list(&token).await;
    assert_eq!(
        body["data"]["total"],
        json!(1),
        "the new scope at once: {body}"
    );

    let (status, _) = app.delete(&format!("/api/v1/users/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, body) = list(&token).await;
    assert_error(status, &body, 401, "UNAUTHENTICATED", None);
}

#[tokio::test]
async fn an_account_deleted_through_one_replica_loses_its_token_at_the_other() {
    let a = spawn_app().await;
    let database_url = a.database_url.clone();
    let b = spawn_with(|s| s.node.database_url = database_url).await;
    let (id, token) = a.user("roaming-viewer", "viewer", &[]).await;
    let (status, _) = b
        .call(Method::GET, "/api/v1/devices", Some(&token), None)
        .await;
    assert_eq!(status, 200, "a token from one replica works at the other");
    let (status, _) = a.delete(&format!("/api/v1/users/{id}"), None).await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = b
            .call(Method::GET, "/api/v1/devices", Some(&token), None)
            .await;
        if status == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other replica still accepts the deleted account's token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
