use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_with, TestApp, ADMIN_PASSWORD};

#[tokio::test]
async fn login_gives_a_token_with_expiry() {
    let app = spawn_app().await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], 200);
    assert!(body["data"]["token"].as_str().is_some_and(|t| t.len() > 20));
    let exp = body["data"]["expires_at"].as_i64().expect("expires_at");
    let now = fleet_store::now_ms() / 1000;
    assert!(exp > now && exp <= now + 3601, "expires_at {exp}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_the_same_401() {
    let app = spawn_app().await;
    for (user, pw) in [("admin", "wrong-password"), ("nobody", "wrong-password")] {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": user, "password": pw})),
            )
            .await;
        assert_error(status, &body, 401, "UNAUTHENTICATED", None);
        assert_eq!(body["message"], "wrong username or password");
    }
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "admin"})),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("password"));
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let app = spawn_app().await;
    let (status, body) = app.call(Method::GET, "/api/v1/devices", None, None).await;
    assert_error(status, &body, 401, "UNAUTHENTICATED", None);
    let (status, body) = app
        .call(Method::GET, "/api/v1/devices", Some("not.a.token"), None)
        .await;
    assert_error(status, &body, 401, "UNAUTHENTICATED", None);
    // A token signed with another key (another center's) is refused too.
    let other = spawn_app().await;
    let (status, body) = app
        .call(Method::GET, "/api/v1/devices", Some(&other.admin), None)
        .await;
    assert_error(status, &body, 401, "UNAUTHENTICATED", None);
}

#[tokio::test]
async fn tokens_expire() {
    let app = spawn_with(|s| s.node.token_ttl_s = 1).await;
    let (status, _) = app.get("/api/v1/devices").await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body) = app.get("/api/v1/devices").await;
    assert_error(status, &body, 401, "UNAUTHENTICATED", None);
    assert!(body["message"]
        .as_str()
        .unwrap_or_default()
        .contains("expired"));
}

#[tokio::test]
async fn changing_a_password_revokes_older_tokens() {
    let app = spawn_app().await;
    let (id, token) = app.user("olga", "operator", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&token),
            Some(json!({"password": "another-pass-1", "current_password": "password-123"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/v1/users/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_error(status, &body, 401, "UNAUTHENTICATED", None);
    let fresh = app.login("olga", "another-pass-1").await;
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/users/{id}"),
            Some(&fresh),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_deleted_account_token_stops_working() {
    let app = spawn_app().await;
    let (id, token) = app.user("gone", "viewer", &[]).await;
    let (status, _) = app.delete(&format!("/api/v1/users/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, body) = app
        .call(Method::GET, "/api/v1/devices", Some(&token), None)
        .await;
    assert_error(status, &body, 401, "UNAUTHENTICATED", None);
}

#[tokio::test]
async fn a_random_admin_password_is_made_when_none_is_configured() {
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = center_cloud::Settings::with_data_dir(dir.path());
    settings.node.listen = "127.0.0.1:0".parse().expect("addr");
    settings.node.database_url = crate::helpers::fresh_database(dir.path()).await;
    settings.link_listen = "127.0.0.1:0".parse().expect("addr");
    let app = center_cloud::Application::build(settings)
        .await
        .expect("starts");
    let password = app
        .served
        .generated_admin_password
        .clone()
        .expect("a generated password");
    assert!(password.len() >= 32);
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_per_source_and_account() {
    let app = spawn_app().await;
    for _ in 0..fleet_node::throttle::MAX_FAILURES {
        let (status, _) = app
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": "admin", "password": "guess-guess"})),
            )
            .await;
        assert_eq!(status, 401);
    }
    let res = app
        .client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 429, "even the right password waits");
    assert!(res.headers().get("retry-after").is_some());
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["code"], "RESOURCE_EXHAUSTED");
    // Tokens already issued keep working.
    let (status, _) = app.get("/api/v1/devices").await;
    assert_eq!(status, 200);
}

async fn try_login(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("sent")
}

async fn assert_throttled(res: reqwest::Response) {
    assert_eq!(res.status().as_u16(), 429);
    let wait: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(wait >= 1 && wait <= fleet_node::throttle::WINDOW.as_secs());
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["status"], 429, "{body}");
    assert_eq!(body["code"], "RESOURCE_EXHAUSTED", "{body}");
    assert!(body["data"].is_null(), "{body}");
}

#[tokio::test]
async fn another_accounts_login_does_not_reset_guesses_at_an_account() {
    let app = spawn_app().await;
    app.user("alice", "viewer", &[]).await;
    app.user("bob", "viewer", &[]).await;
    let limit = fleet_node::throttle::MAX_FAILURES;
    for _ in 0..limit - 1 {
        let res = try_login(&app, "alice", "guess-guess").await;
        assert_eq!(res.status().as_u16(), 401);
    }
    // A friend on the same address logs in: alice's count must stay.
    app.login("bob", "password-123").await;
    let res = try_login(&app, "alice", "guess-guess").await;
    assert_eq!(res.status().as_u16(), 401, "the last guess left");
    assert_throttled(try_login(&app, "alice", "password-123").await).await;
    // Another spelling the database may take as the same name is the same account.
    assert_throttled(try_login(&app, "ALICE", "guess-guess").await).await;
    // Bob is not held back by guesses at alice.
    app.login("bob", "password-123").await;
}

#[tokio::test]
async fn parallel_guesses_get_no_more_than_the_limit_checked() {
    let app = spawn_app().await;
    app.user("carol", "viewer", &[]).await;
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..30 {
        let client = app.client.clone();
        let url = format!("{}/api/v1/auth/login", app.address);
        guesses.spawn(async move {
            let res = client
                .post(url)
                .json(&json!({"username": "carol", "password": format!("guess-{i:04}")}))
                .send()
                .await
                .expect("sent");
            res.status().as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = guesses.join_next().await {
        statuses.push(status.expect("guess task"));
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked, fleet_node::throttle::MAX_FAILURES, "{statuses:?}");
    assert_eq!(checked + refused, 30, "{statuses:?}");
    // The server checked only that many passwords (plus the setup's two logins).
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert_eq!(
        metric(&metrics, r#"operator_logins_total{outcome="failed"}"#),
        fleet_node::throttle::MAX_FAILURES as f64,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, r#"operator_logins_total{outcome="throttled"}"#),
        20.0
    );
}

/// The value of one sample in Prometheus text (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|rest| rest.trim().split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
