//! API conventions: the envelope everywhere, no 500 for bad input, documentation,
//! health and metrics.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_with};

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_envelope() {
    let app = spawn_app().await;
    let (status, body) = app.get("/api/v1/nothing-here").await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/v1/devices",
            Some(&app.admin),
            Some(json!({})),
        )
        .await;
    assert!(status == 404 || status == 405, "{status}");
    assert!(body["code"].is_string(), "{body}");
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_body() {
    let app = spawn_app().await;
    for raw in ["{", "[]", "{\"name\": \"a\"} trailing", "", "\u{0}"] {
        let (status, text) = app
            .raw(
                Method::POST,
                "/api/v1/devices",
                Some(&app.admin),
                "application/json",
                raw.as_bytes().to_vec(),
            )
            .await;
        let body: serde_json::Value = serde_json::from_str(&text).expect("envelope");
        assert_error(status, &body, 400, "INVALID_ARGUMENT", None);
        assert!(body["field"].is_string(), "{body}");
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, text) = app
        .raw(
            Method::POST,
            "/api/v1/devices",
            Some(&app.admin),
            "application/json",
            deep.into_bytes(),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(app.count_devices().await, 0);
}

#[tokio::test]
async fn oversized_bodies_are_413_in_the_envelope() {
    let app = spawn_with(|s| s.node.body_limit = 4096).await;
    let mut d = crate::helpers::device_json("big", "SN-1");
    d["description"] = json!("x".repeat(8000));
    let (status, body) = app.post("/api/v1/devices", d).await;
    assert_error(status, &body, 413, "PAYLOAD_TOO_LARGE", None);
    assert_eq!(app.count_devices().await, 0);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let (status, body) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body["data"]["alive"].clone()), (200, json!(true)));
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body["data"]["database"].clone()),
        (200, json!("ok"))
    );
    app.get("/api/v1/devices").await;
    let (status, text) = app
        .raw(Method::GET, "/metrics", None, "text/plain", Vec::new())
        .await;
    assert_eq!(status, 200);
    assert!(
        text.contains(
            "http_requests_total{method=\"GET\",route=\"/api/v1/devices\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("db_pool_connections"), "{text}");
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "trace-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        res.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-123")
    );
    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("sent");
    assert!(res.headers().get("x-request-id").is_some());
}

#[tokio::test]
async fn openapi_documents_every_route_and_docs_are_served() {
    let app = spawn_app().await;
    let (status, spec) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(spec["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    let paths = spec["paths"].as_object().expect("paths");
    let expected = [
        ("/api/v1/auth/login", "post"),
        ("/api/v1/users", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{id}", "get"),
        ("/api/v1/users/{id}", "patch"),
        ("/api/v1/users/{id}", "delete"),
        ("/api/v1/users/{id}/groups", "get"),
        ("/api/v1/users/{id}/groups", "post"),
        ("/api/v1/users/{id}/groups", "put"),
        ("/api/v1/users/{id}/groups", "delete"),
        ("/api/v1/devices", "get"),
        ("/api/v1/devices", "post"),
        ("/api/v1/devices/{id}", "get"),
        ("/api/v1/devices/{id}", "patch"),
        ("/api/v1/devices/{id}", "delete"),
        ("/api/v1/devices/{id}/secret", "post"),
        ("/api/v1/devices/{id}/groups", "get"),
        ("/api/v1/devices/{id}/groups", "post"),
        ("/api/v1/devices/{id}/groups", "delete"),
        ("/api/v1/devices/export", "get"),
        ("/api/v1/devices/import", "post"),
        ("/api/v1/groups", "get"),
        ("/api/v1/groups", "post"),
        ("/api/v1/groups/{id}", "get"),
        ("/api/v1/groups/{id}", "patch"),
        ("/api/v1/groups/{id}", "delete"),
        ("/api/v1/groups/{id}/devices", "get"),
        ("/api/v1/groups/{id}/devices", "post"),
        ("/api/v1/groups/{id}/devices", "put"),
        ("/api/v1/groups/{id}/devices", "delete"),
        ("/api/v1/edges", "get"),
        ("/api/v1/edges", "post"),
        ("/api/v1/edges/{id}", "get"),
        ("/api/v1/edges/{id}", "patch"),
        ("/api/v1/edges/{id}", "delete"),
        ("/api/v1/edges/{id}/secret", "post"),
        ("/api/v1/devices/{id}/commands", "get"),
        ("/api/v1/devices/{id}/commands", "post"),
        ("/api/v1/commands/{id}", "get"),
        ("/api/v1/commands/{id}/cancel", "post"),
        ("/api/v1/groups/{id}/commands", "post"),
        ("/api/v1/batches/{id}", "get"),
        ("/api/v1/edges/{id}/commands", "post"),
        ("/api/v1/devices/{id}/config", "get"),
        ("/api/v1/devices/{id}/config", "put"),
        ("/api/v1/devices/{id}/logs", "get"),
        ("/api/v1/commands/{id}/logs", "get"),
        ("/api/v1/events", "get"),
        ("/api/v1/artifacts", "get"),
        ("/api/v1/artifacts", "post"),
        ("/api/v1/artifacts/signing-key", "get"),
        ("/api/v1/artifacts/{id}", "get"),
        ("/api/v1/artifacts/{id}", "delete"),
        ("/api/v1/artifacts/{id}/content", "get"),
        ("/api/v1/rollouts", "get"),
        ("/api/v1/rollouts", "post"),
        ("/api/v1/rollouts/{id}", "get"),
        ("/api/v1/rollouts/{id}/devices", "get"),
        ("/api/v1/rollouts/{id}/pause", "post"),
        ("/api/v1/rollouts/{id}/resume", "post"),
        ("/api/v1/rollouts/{id}/abort", "post"),
        ("/v1/devices", "get"),
        ("/v1/devices", "post"),
        ("/v1/devices", "put"),
        ("/v1/devices", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is documented"
        );
    }
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        documented,
        expected.len(),
        "no undocumented or stale routes"
    );
    for page in ["/docs", "/docs/swagger", "/docs/swagger/"] {
        let (status, html) = app
            .raw(Method::GET, page, None, "text/plain", Vec::new())
            .await;
        assert_eq!(status, 200, "{page}");
        assert!(html.to_lowercase().contains("<html"), "{page}");
    }
}

#[tokio::test]
async fn plain_http_only_when_asked() {
    let app = spawn_with(|s| s.node.tls = operator_api::settings::TlsSettings::Off).await;
    assert!(app.address.starts_with("http://"));
    let (status, _) = app.get("/api/v1/devices").await;
    assert_eq!(status, 200);
    let tls = spawn_app().await;
    assert!(tls.address.starts_with("https://"));
    assert!(tls.data_dir.join("tls/ca.crt").exists());
    let plain = tls.address.replace("https://", "http://");
    let refused = reqwest::get(format!("{plain}/healthz")).await;
    assert!(
        refused.map(|r| !r.status().is_success()).unwrap_or(true),
        "HTTPS port does not serve plain HTTP"
    );
}
