//! Commands to a whole group or to every device of an edge, as one batch.

use serde_json::json;

use crate::helpers::{assert_error, device_json, spawn_app};

#[tokio::test]
async fn a_group_command_makes_one_command_per_member_in_one_batch() {
    let app = spawn_app().await;
    let group = app.group("gateways").await;
    let mut members = Vec::new();
    for n in 0..3 {
        let mut d = device_json(&format!("gw-{n}"), &format!("SN-G{n}"));
        d["groups"] = json!([group]);
        let (status, made) = app.post("/api/v1/devices", d).await;
        assert_eq!(status, 201, "{made}");
        members.push(made["data"]["id"].as_str().expect("id").to_string());
    }
    app.device("outsider", "SN-OUT").await;

    let (status, batch) = app
        .post(
            &format!("/api/v1/groups/{group}/commands"),
            json!({"name": "get_status", "timeout_s": 30}),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    assert_eq!(batch["data"]["total"], 3);
    assert_eq!(batch["data"]["states"]["queued"], 3);
    assert_eq!(batch["data"]["done"], 0);
    let id = batch["data"]["batch_id"]
        .as_str()
        .expect("batch id")
        .to_string();
    let (status, view) = app.get(&format!("/api/v1/batches/{id}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["data"]["total"], 3);
    for device in &members {
        let (_, list) = app.get(&format!("/api/v1/devices/{device}/commands")).await;
        assert_eq!(list["data"]["items"][0]["name"], "get_status", "{list}");
    }

    // Cancelling one shows in the batch.
    let (_, list) = app
        .get(&format!("/api/v1/devices/{}/commands", members[0]))
        .await;
    let one = list["data"]["items"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _) = app
        .post(&format!("/api/v1/commands/{one}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let (_, view) = app.get(&format!("/api/v1/batches/{id}")).await;
    assert_eq!(
        (
            view["data"]["done"].clone(),
            view["data"]["states"]["cancelled"].clone()
        ),
        (json!(1), json!(1))
    );
}

#[tokio::test]
async fn fan_outs_refuse_bad_input_and_change_nothing() {
    let app = spawn_app().await;
    let group = app.group("empty").await;
    let (status, body) = app
        .post(
            &format!("/api/v1/groups/{group}/commands"),
            json!({"name": "get_status"}),
        )
        .await;
    assert_error(status, &body, 409, "FAILED_PRECONDITION", None);
    let mut d = device_json("gw", "SN-B1");
    d["groups"] = json!([group]);
    app.post("/api/v1/devices", d).await;
    for (bad, field) in [
        (json!({"name": "teleport"}), "name"),
        (json!({"name": "get_status", "timeout_s": 0}), "timeout_s"),
        (json!({"name": "exec", "args": [1]}), "args"),
    ] {
        let (status, body) = app
            .post(&format!("/api/v1/groups/{group}/commands"), bad)
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["field"].as_str().is_some_and(|f| f.starts_with(field)),
            "{body}"
        );
    }
    let (status, body) = app
        .post("/api/v1/groups/123/commands", json!({"name": "get_status"}))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
    let (status, body) = app.get("/api/v1/batches/123").await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
    let (status, body) = app.get("/api/v1/batches/nope").await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("id"));
    let (_, members) = app.get(&format!("/api/v1/groups/{group}/devices")).await;
    let device = members["data"]["items"][0]["id"]
        .as_str()
        .expect("member")
        .to_string();
    let (_, list) = app.get(&format!("/api/v1/devices/{device}/commands")).await;
    assert_eq!(list["data"]["total"], 0, "no command was made: {list}");
}

#[tokio::test]
async fn an_edge_command_goes_to_every_device_homed_there() {
    let app = spawn_app().await;
    let (_, edge) = app.post("/api/v1/edges", json!({"name": "edge-a"})).await;
    let edge = edge["data"]["id"].as_str().expect("id").to_string();
    for n in 0..2 {
        let mut d = device_json(&format!("e-{n}"), &format!("SN-E{n}"));
        d["edge_id"] = json!(edge);
        let (status, made) = app.post("/api/v1/devices", d).await;
        assert_eq!(status, 201, "{made}");
    }
    app.device("elsewhere", "SN-X").await;
    let (status, batch) = app
        .post(
            &format!("/api/v1/edges/{edge}/commands"),
            json!({"name": "reboot"}),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    assert_eq!(batch["data"]["total"], 2);
    let (status, body) = app
        .post("/api/v1/edges/42/commands", json!({"name": "reboot"}))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND", None);
}
