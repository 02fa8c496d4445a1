use reqwest::Method;
use serde_json::json;

use crate::auth::metric;
use crate::helpers::{spawn_app, TestApp};

/// The events matching `query` once there are at least `want` of them. Some events
/// are written after the answer (failed logins); this waits for those writes, with a
/// bound far past any write so that a missing event fails instead of hanging.
async fn wait_for_events(app: &TestApp, query: &str, want: usize) -> Vec<serde_json::Value> {
    for _ in 0..400 {
        let (status, body) = app.get(&format!("/api/v1/events?{query}")).await;
        assert_eq!(status, 200, "{body}");
        let items = body["data"]["items"].as_array().expect("items").clone();
        if items.len() >= want {
            return items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("fewer than {want} events match {query}");
}

async fn event_total(app: &TestApp) -> u64 {
    let (status, body) = app.get("/api/v1/events?per_page=1").await;
    assert_eq!(status, 200, "{body}");
    body["data"]["total"].as_u64().expect("total")
}

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
    app.call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "admin", "password": "guess-guess"})),
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
    assert!(
        errors.iter().all(|e| e["actor"] != "mallory"),
        "logins as unknown names are not recorded"
    );
    // A known account's failed login is written after the answer has gone.
    let failed = wait_for_events(&app, "actor=admin&action=login&outcome=error", 1).await;
    assert_eq!(failed[0]["status_code"], 401);
    assert_eq!(failed[0]["target_type"], "auth");

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

#[tokio::test]
async fn unauthenticated_requests_write_no_events_and_are_counted() {
    let app = spawn_app().await;
    let before = event_total(&app).await;
    for i in 0..50 {
        let (status, _) = app
            .call(
                Method::POST,
                "/api/v1/devices",
                None,
                Some(crate::helpers::device_json("d", "SN-1")),
            )
            .await;
        assert_eq!(status, 401);
        let (status, _) = app
            .call(Method::DELETE, "/api/v1/users/1", Some("not.a.token"), None)
            .await;
        assert_eq!(status, 401);
        let (status, _) = app
            .call(Method::POST, "/api/v1/nowhere", None, Some(json!({})))
            .await;
        assert_eq!(status, 404);
        let (status, _) = app
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": format!("nobody-{i}"), "password": "guess-guess"})),
            )
            .await;
        assert_eq!(status, 401);
    }
    assert_eq!(event_total(&app).await, before, "200 requests, no rows");
    let text = app.metrics().await;
    for (series, want) in [
        (
            r#"http_unrecorded_requests_total{class="devices",outcome="unauthenticated"}"#,
            50.0,
        ),
        (
            r#"http_unrecorded_requests_total{class="users",outcome="unauthenticated"}"#,
            50.0,
        ),
        (
            r#"http_unrecorded_requests_total{class="unmatched",outcome="not_found"}"#,
            50.0,
        ),
        (
            r#"http_unrecorded_requests_total{class="auth",outcome="unauthenticated"}"#,
            50.0,
        ),
        (r#"operator_logins_total{outcome="failed"}"#, 50.0),
    ] {
        assert_eq!(metric(&text, series), want, "{series} in\n{text}");
    }
}

#[tokio::test]
async fn a_flood_of_bad_logins_for_a_known_account_writes_one_event() {
    let app = spawn_app().await;
    app.user("kate", "viewer", &[]).await;
    let before = event_total(&app).await;
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let (status, _) = app
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": "kate", "password": "guess-guess"})),
            )
            .await;
        statuses.push(status);
    }
    let limit = fleet_node::throttle::MAX_FAILURES;
    assert!(statuses[..limit].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[limit..].iter().all(|s| *s == 429), "{statuses:?}");
    let failed = wait_for_events(&app, "actor=kate&outcome=error", 1).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["action"], "POST /api/v1/auth/login");
    // A later recorded write queues behind the deferred one; nothing else was added.
    app.group("after").await;
    assert_eq!(event_total(&app).await, before + 2);
    let text = app.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"http_unrecorded_requests_total{class="auth",outcome="unauthenticated"}"#
        ),
        (limit - 1) as f64
    );
    assert_eq!(
        metric(
            &text,
            r#"http_unrecorded_requests_total{class="auth",outcome="throttled"}"#
        ),
        (60 - limit) as f64
    );
}

/// Calls at once have their events written together, and each call answers only once
/// its own event is stored: none is lost or written twice.
#[tokio::test]
async fn calls_at_once_each_have_their_event_stored_before_they_answer() {
    let app = spawn_app().await;
    let creates = (0..40).map(|n| {
        app.post(
            "/api/v1/devices",
            crate::helpers::device_json(&format!("burst-{n}"), &format!("SN-BURST-{n}")),
        )
    });
    for (status, body) in futures_util::future::join_all(creates).await {
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = app
        .get("/api/v1/events?action=POST%20/api/v1/devices&per_page=100")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["total"], json!(40), "{body}");
}

/// A command's answer waits for its device, not for the event log: its event is
/// written after the answer, and is there all the same.
#[tokio::test]
async fn a_sent_command_is_recorded_after_its_answer() {
    let app = spawn_app().await;
    let d = app.device("gw", "SN-CMD").await;
    let id = d["id"].as_str().expect("id");
    let (status, made) = app
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"name": "reboot"}),
        )
        .await;
    assert!(status == 201 || status == 202, "{status} {made}");
    let command = made["data"]["id"].as_str().expect("command id");
    let items = wait_for_events(&app, &format!("target_id={command}"), 1).await;
    assert_eq!(items[0]["action"], "POST /api/v1/devices/{id}/commands");
    assert_eq!(items[0]["actor"], "admin");
    assert_eq!(items[0]["outcome"], "ok");
}
