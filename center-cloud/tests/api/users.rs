use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn admins_manage_accounts() {
    let app = spawn_app().await;
    let g = app.group("lab").await;
    let (status, body) = app
        .post("/api/v1/users", json!({"username": "vera", "password": "password-123", "role": "viewer", "groups": [g]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().expect("id").to_string();
    assert_eq!(body["data"]["role"], "viewer");
    assert_eq!(body["data"]["groups"], json!([g]));
    assert!(body["data"].get("password_hash").is_none());

    let (status, body) = app.get("/api/v1/users").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["total"], 2);
    let (status, body) = app.get("/api/v1/users?role=viewer").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["items"][0]["username"], "vera");

    let (status, body) = app
        .patch(&format!("/api/v1/users/{id}"), json!({"role": "operator"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["role"], "operator");

    let (status, body) = app.delete(&format!("/api/v1/users/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get(&format!("/api/v1/users/{id}")).await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
}

#[tokio::test]
async fn bad_accounts_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"username": "x", "password": "password-123", "role": "viewer"}),
            "username",
        ),
        (
            json!({"username": "has space", "password": "password-123", "role": "viewer"}),
            "username",
        ),
        (
            json!({"username": "valid", "password": "short", "role": "viewer"}),
            "password",
        ),
        (
            json!({"username": "valid", "password": "password-123", "role": "root"}),
            "role",
        ),
        (
            json!({"username": "valid", "password": "password-123"}),
            "role",
        ),
        (
            json!({"username": "valid", "password": "password-123", "role": "viewer", "groups": ["x"]}),
            "groups[0]",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = app.post("/api/v1/users", body).await;
        assert_error(status, &answer, 400, "INVALID_ARGUMENT", Some(field));
    }
    let (status, answer) = app
        .post("/api/v1/users", json!({"username": "valid", "password": "password-123", "role": "viewer", "groups": ["123"]}))
        .await;
    assert_error(status, &answer, 404, "NOT_FOUND", Some("groups[0]"));
    let (status, answer) = app
        .post(
            "/api/v1/users",
            json!({"username": "admin", "password": "password-123", "role": "viewer"}),
        )
        .await;
    assert_error(status, &answer, 409, "ALREADY_EXISTS", Some("username"));
    let (_, body) = app.get("/api/v1/users").await;
    assert_eq!(body["data"]["total"], 1, "nothing was created");
}

#[tokio::test]
async fn the_last_admin_stays_and_cannot_delete_itself() {
    let app = spawn_app().await;
    let (_, me) = app.get("/api/v1/users?role=admin").await;
    let my_id = me["data"]["items"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, body) = app
        .patch(&format!("/api/v1/users/{my_id}"), json!({"role": "viewer"}))
        .await;
    assert_error(status, &body, 409, "FAILED_PRECONDITION", None);
    let (status, body) = app.delete(&format!("/api/v1/users/{my_id}"), None).await;
    assert_error(status, &body, 409, "FAILED_PRECONDITION", None);
}

#[tokio::test]
async fn non_admins_cannot_manage_accounts() {
    let app = spawn_app().await;
    let (id, token) = app.user("oscar", "operator", &[]).await;
    let (status, body) = app
        .call(Method::GET, "/api/v1/users", Some(&token), None)
        .await;
    assert_error(status, &body, 403, "PERMISSION_DENIED", None);
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&token),
            Some(json!({"username": "evil", "password": "password-123", "role": "admin"})),
        )
        .await;
    assert_error(status, &body, 403, "PERMISSION_DENIED", None);
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_error(status, &body, 403, "PERMISSION_DENIED", None);
    // Reading oneself is allowed.
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/v1/users/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn group_scopes_are_added_replaced_and_removed() {
    let app = spawn_app().await;
    let (a, b, c) = (
        app.group("a").await,
        app.group("b").await,
        app.group("c").await,
    );
    let (id, _) = app.user("sam", "operator", &[&a]).await;
    let path = format!("/api/v1/users/{id}/groups");
    let (status, body) = app.post(&path, json!({"group_ids": [b]})).await;
    assert_eq!(status, 200, "{body}");
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(body["data"], json!(want));
    let (_, body) = app.put(&path, json!({"group_ids": [c]})).await;
    assert_eq!(body["data"], json!([c]));
    let (_, body) = app.delete(&path, Some(json!({"group_ids": [c]}))).await;
    assert_eq!(body["data"], json!([]));
    let (status, body) = app.post(&path, json!({"group_ids": ["999"]})).await;
    assert_error(status, &body, 404, "NOT_FOUND", Some("group_ids[0]"));
    let (_, body) = app.get(&path).await;
    assert_eq!(body["data"], json!([]), "a refused call changed nothing");
}

#[tokio::test]
async fn changing_ones_own_password_needs_the_current_one() {
    let app = spawn_app().await;
    let (id, token) = app.user("olga", "operator", &[]).await;
    let path = format!("/api/v1/users/{id}");
    let cases = [
        (json!({"password": "new-pass-123"}), "current_password"),
        (
            json!({"password": "new-pass-123", "current_password": "wrong-pass-1"}),
            "current_password",
        ),
        (
            json!({"password": "new-pass-123", "current_password": ""}),
            "current_password",
        ),
        (
            json!({"password": "new-pass-123", "current_password": 5}),
            "current_password",
        ),
        (
            json!({"password": "short", "current_password": "password-123"}),
            "password",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = app
            .call(Method::PATCH, &path, Some(&token), Some(body))
            .await;
        assert_error(status, &answer, 400, "INVALID_ARGUMENT", Some(field));
    }
    // Nothing changed: the token still works and the old password still logs in.
    let (status, _) = app.call(Method::GET, &path, Some(&token), None).await;
    assert_eq!(status, 200);
    app.login("olga", "password-123").await;

    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"password": "new-pass-123", "current_password": "password-123"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.login("olga", "new-pass-123").await;

    // An admin resets another account's password without knowing it.
    let (status, body) = app.patch(&path, json!({"password": "reset-pass-1"})).await;
    assert_eq!(status, 200, "{body}");
    app.login("olga", "reset-pass-1").await;

    // An admin changing their own password is changing their own password.
    let (_, me) = app.get("/api/v1/users?role=admin").await;
    let my_id = me["data"]["items"][0]["id"].as_str().expect("id");
    let (status, body) = app
        .patch(
            &format!("/api/v1/users/{my_id}"),
            json!({"password": "admin-pass-2"}),
        )
        .await;
    assert_error(
        status,
        &body,
        400,
        "INVALID_ARGUMENT",
        Some("current_password"),
    );
    app.login("admin", crate::helpers::ADMIN_PASSWORD).await;
}

#[tokio::test]
async fn wrong_current_passwords_are_throttled_like_logins() {
    let app = spawn_app().await;
    let (id, token) = app.user("petra", "viewer", &[]).await;
    let path = format!("/api/v1/users/{id}");
    for i in 0..fleet_node::throttle::MAX_FAILURES {
        let (status, body) = app
            .call(
                Method::PATCH,
                &path,
                Some(&token),
                Some(json!({"password": "new-pass-123", "current_password": format!("guess-{i}")})),
            )
            .await;
        assert_error(
            status,
            &body,
            400,
            "INVALID_ARGUMENT",
            Some("current_password"),
        );
    }
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"password": "new-pass-123", "current_password": "password-123"})),
        )
        .await;
    assert_error(status, &body, 429, "RESOURCE_EXHAUSTED", None);
    // The same count holds back password logins of the account from this address.
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "petra", "password": "password-123"})),
        )
        .await;
    assert_error(status, &body, 429, "RESOURCE_EXHAUSTED", None);
    // The password did not change.
    let (status, _) = app.call(Method::GET, &path, Some(&token), None).await;
    assert_eq!(status, 200);
}
