use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn devices_are_registered_at_the_site() {
    let edge = spawn_edge().await.api;
    let d = edge.device("gw-1", "SN-1").await;
    assert!(d["secret"].as_str().is_some_and(|s| s.len() >= 22));
    assert_eq!(
        d["edge_id"],
        json!(null),
        "a standalone edge does not know its own id yet"
    );
    assert_eq!(
        d["online"],
        json!(false),
        "the edge tracks connections from the start"
    );
    let id = d["id"].as_str().expect("id");
    let (status, body) = edge.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(edge.count_devices().await, 1);
    let (status, body) = edge
        .post("/api/v1/devices", device_json("dup", "SN-1"))
        .await;
    assert_error(status, &body, 409, "ALREADY_EXISTS", Some("hardware.sn"));
}

#[tokio::test]
async fn an_edge_homes_its_devices_itself() {
    let edge = spawn_edge().await.api;
    let mut d = device_json("gw", "SN-1");
    d["edge_id"] = json!("12345");
    let (status, body) = edge.post("/api/v1/devices", d).await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("edge_id"));
    assert_eq!(edge.count_devices().await, 0);
}

#[tokio::test]
async fn the_site_api_has_the_center_conventions() {
    let edge = spawn_edge().await.api;
    let (status, body) = edge
        .call(reqwest::Method::GET, "/api/v1/devices", None, None)
        .await;
    assert_error(status, &body, 401, "UNAUTHENTICATED", None);
    let (status, body) = edge.get("/api/v1/edges").await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
    let (status, spec) = edge
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(spec["info"]["title"], "Edge cloud site API");
    assert!(spec["paths"]["/api/v1/devices"]["post"].is_object());
    let (status, body) = edge.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body["data"]["database"].clone()),
        (200, json!("ok"))
    );
    // Audit events are recorded at the edge too.
    edge.device("gw", "SN-9").await;
    let (_, body) = edge.get("/api/v1/events?target_type=devices").await;
    assert_eq!(body["data"]["total"], 1);
}

#[tokio::test]
async fn the_created_schema_matches_sql_edge_sql() {
    if !on_mariadb() {
        eprintln!("schema comparison runs in the MariaDB pass (TEST_MYSQL_URL); nothing to compare on SQLite");
        return;
    }
    let edge = spawn_edge().await.api;
    assert_schema_matches(
        &edge.database_url,
        concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/edge.sql"),
    )
    .await;
}

#[test]
fn help_names_the_edge_variables() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-cloud"))
        .args(["serve", "--help"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("EDGE_LISTEN")
            && text.contains("EDGE_ADMIN_PASSWORD")
            && text.contains("EDGE_DATABASE_URL")
    );
    assert!(
        text.contains("default: 127.0.0.1:9443") && text.contains("default: ./data/edge"),
        "{text}"
    );
}
