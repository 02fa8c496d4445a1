use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn groups_crud_with_unique_names() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/api/v1/groups",
            json!({"name": "north", "description": "north site"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().expect("id").to_string();
    assert_eq!(body["data"]["devices"], 0);
    let (status, body) = app.post("/api/v1/groups", json!({"name": "north"})).await;
    assert_error(status, &body, 409, "ALREADY_EXISTS", Some("name"));
    let (status, body) = app.post("/api/v1/groups", json!({"name": ""})).await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("name"));
    let (status, body) = app
        .patch(&format!("/api/v1/groups/{id}"), json!({"name": "south"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "south");
    assert_eq!(body["data"]["description"], "north site");
    let (_, body) = app.get("/api/v1/groups?name=sou").await;
    assert_eq!(body["data"]["total"], 1);
    let (status, _) = app.delete(&format!("/api/v1/groups/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = app.get(&format!("/api/v1/groups/{id}")).await;
    assert_eq!(status, 404);
    // The name is free again once the group is deleted.
    let (status, _) = app.post("/api/v1/groups", json!({"name": "south"})).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn memberships_from_both_sides_in_bulk() {
    let app = spawn_app().await;
    let g = app.group("g").await;
    let h = app.group("h").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.device(&format!("d{i}"), &format!("SN-{i}")).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let path = format!("/api/v1/groups/{g}/devices");
    let (status, body) = app.post(&path, json!({"device_ids": ids[..3]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({"changed": 3, "devices": 3}));
    // Adding again is harmless.
    let (_, body) = app.post(&path, json!({"device_ids": [ids[0]]})).await;
    assert_eq!(body["data"], json!({"changed": 0, "devices": 3}));
    let (_, body) = app.get(&path).await;
    assert_eq!(body["data"]["total"], 3);
    let (_, body) = app
        .put(&path, json!({"device_ids": [ids[3], ids[4]]}))
        .await;
    assert_eq!(body["data"]["devices"], 2);
    let (_, body) = app.get(&format!("/api/v1/devices?group={g}")).await;
    let listed: Vec<&str> = body["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(listed, vec![ids[3].as_str(), ids[4].as_str()]);
    let (_, body) = app
        .delete(&path, Some(json!({"device_ids": [ids[3]]})))
        .await;
    assert_eq!(body["data"]["devices"], 1);

    // From the device's side.
    let dpath = format!("/api/v1/devices/{}/groups", ids[4]);
    let (_, body) = app.post(&dpath, json!({"group_ids": [h]})).await;
    let mut want = vec![g.clone(), h.clone()];
    want.sort();
    let mut got: Vec<String> = serde_json::from_value(body["data"].clone()).expect("ids");
    got.sort();
    assert_eq!(got, want);
    let (_, body) = app.delete(&dpath, Some(json!({"group_ids": [g]}))).await;
    assert_eq!(body["data"], json!([h]));

    // A bad id anywhere in a bulk call refuses the whole call.
    let (status, body) = app.post(&path, json!({"device_ids": [ids[0], "77"]})).await;
    assert_error(status, &body, 404, "NOT_FOUND", Some("device_ids[1]"));
    let (status, body) = app.post(&path, json!({"device_ids": [ids[0], "x"]})).await;
    assert_error(
        status,
        &body,
        400,
        "INVALID_ARGUMENT",
        Some("device_ids[1]"),
    );
    let (_, body) = app.get(&format!("/api/v1/groups/{g}")).await;
    assert_eq!(body["data"]["devices"], 0, "unchanged by refused calls");
}

#[tokio::test]
async fn deleting_a_group_or_device_removes_its_memberships() {
    let app = spawn_app().await;
    let g = app.group("g").await;
    let h = app.group("h").await;
    let a = app.device("a", "SN-A").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let b = app.device("b", "SN-B").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.post(
        &format!("/api/v1/groups/{g}/devices"),
        json!({"device_ids": [a, b]}),
    )
    .await;
    app.post(
        &format!("/api/v1/groups/{h}/devices"),
        json!({"device_ids": [a]}),
    )
    .await;
    app.delete(&format!("/api/v1/devices/{a}"), None).await;
    let (_, body) = app.get(&format!("/api/v1/groups/{g}")).await;
    assert_eq!(body["data"]["devices"], 1);
    let (_, body) = app.get(&format!("/api/v1/groups/{h}")).await;
    assert_eq!(body["data"]["devices"], 0);
    let (_, op) = app.user("oper", "operator", &[&g]).await;
    app.delete(&format!("/api/v1/groups/{g}"), None).await;
    let (_, body) = app.get(&format!("/api/v1/devices/{b}/groups")).await;
    assert_eq!(body["data"], json!([]));
    let (_, body) = app
        .call(reqwest::Method::GET, "/api/v1/groups", Some(&op), None)
        .await;
    assert_eq!(
        body["data"]["total"], 0,
        "the operator's mapping went with the group"
    );
}
