//! Commands through the site API to devices on the hub, end to end.

use std::time::Duration;

use serde_json::json;
use shared_proto::southbound::{CommandProgress, CommandResult, Outcome, Pdu, Ping};

use crate::helpers::*;

async fn registered(edge: &TestEdge, sn: &str) -> (String, String) {
    let d = edge.api.device("gw", sn).await;
    (
        d["id"].as_str().expect("id").to_string(),
        d["secret"].as_str().expect("secret").to_string(),
    )
}

/// Plays a device that answers every command it gets, once, with "done <name>".
async fn answer_commands(mut device: DeviceClient) {
    while let Some(env) = device.recv().await {
        if let Pdu::Command(c) = env.pdu {
            device
                .send(Pdu::CommandProgress(CommandProgress {
                    command_id: c.command_id.clone(),
                    progress: 0,
                    message: String::new(),
                }))
                .await;
            device
                .send(Pdu::CommandResult(CommandResult {
                    command_id: c.command_id,
                    outcome: Outcome::Succeeded,
                    exit_code: Some(0),
                    output: format!("done {:?}", c.name),
                    truncated: false,
                    error: None,
                    data: serde_json::Value::Null,
                }))
                .await;
        }
    }
}

#[tokio::test]
async fn a_command_to_a_connected_device_waits_for_its_result() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (device, _) = DeviceClient::login(&edge, &id, &secret).await;
    tokio::spawn(answer_commands(device));
    let (status, body) = edge
        .api
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"name": "get_status", "timeout_s": 10, "wait": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let c = &body["data"];
    assert_eq!(c["state"], "succeeded");
    assert_eq!(c["progress"], 100);
    assert_eq!(c["result"]["exit_code"], 0);
    assert_eq!(c["result"]["output"], "done GetStatus");
    let (_, listed) = edge
        .api
        .get(&format!("/api/v1/devices/{id}/commands"))
        .await;
    assert_eq!(listed["data"]["total"], 1);
    let (status, one) = edge
        .api
        .get(&format!(
            "/api/v1/commands/{}",
            c["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(
        (status, one["data"]["state"].clone()),
        (200, json!("succeeded"))
    );
}

#[tokio::test]
async fn a_command_that_ends_at_once_is_never_written_as_sent() {
    use fleet_store::change_log;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-QUICK").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    tokio::spawn(async move {
        // Answers with the result alone, as the agent does for what ends at once.
        while let Some(env) = device.recv().await {
            if let Pdu::Command(c) = env.pdu {
                device
                    .send(Pdu::CommandResult(CommandResult {
                        command_id: c.command_id,
                        outcome: Outcome::Succeeded,
                        exit_code: Some(0),
                        output: String::new(),
                        truncated: false,
                        error: None,
                        data: serde_json::Value::Null,
                    }))
                    .await;
            }
        }
    });
    let (status, body) = edge
        .api
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"name": "get_status", "timeout_s": 10, "wait": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let command: i64 = body["data"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("command id");
    // Past the moment a command still out would be marked sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let states: Vec<serde_json::Value> = change_log::Entity::find()
        .filter(change_log::Column::TableName.eq("commands"))
        .filter(change_log::Column::RowId.eq(command))
        .all(&edge.node.db)
        .await
        .expect("change log")
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.payload).expect("payload")["state"].clone()
        })
        .collect();
    assert_eq!(
        states,
        vec![json!("queued"), json!("succeeded")],
        "written when created and when it ended, and at no step between"
    );
}

#[tokio::test]
async fn a_waiting_caller_hears_the_result_before_it_is_written() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-HEARD").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    let node = edge.node.clone();
    let (answered_tx, answered) = tokio::sync::oneshot::channel::<()>();
    let held = tokio::spawn(async move {
        let Some(Pdu::Command(c)) = device.recv().await.map(|e| e.pdu) else {
            panic!("expected the command");
        };
        // Nothing can be written while this turn is held (SQLite's single writer):
        // the answer below can only come from what the edge heard.
        let turn = node.write().await.expect("write turn");
        device
            .send(Pdu::CommandResult(CommandResult {
                command_id: c.command_id,
                outcome: Outcome::Succeeded,
                exit_code: Some(0),
                output: "heard".into(),
                truncated: false,
                error: None,
                data: serde_json::Value::Null,
            }))
            .await;
        let _ = answered.await;
        drop(turn);
        device
    });
    let (status, body) = edge
        .api
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"name": "get_status", "timeout_s": 10, "wait": true}),
        )
        .await;
    let _ = answered_tx.send(());
    let _device = held.await.expect("device task");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "succeeded");
    assert_eq!(body["data"]["progress"], 100);
    assert_eq!(body["data"]["result"]["output"], "heard");
    let command = body["data"]["id"].as_str().expect("id").to_string();
    let mut stored = json!(null);
    for _ in 0..100 {
        stored = edge.api.get(&format!("/api/v1/commands/{command}")).await.1;
        if stored["data"]["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stored["data"]["result"]["output"], "heard",
        "then written as it was heard: {stored}"
    );
}

#[tokio::test]
async fn without_wait_the_command_id_comes_back_at_once() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    let (status, body) = edge
        .api
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"name": "reboot"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let command = body["data"]["id"].as_str().expect("id").to_string();
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::Command(c)) => assert_eq!(c.command_id, command),
        other => panic!("expected the command, got {other:?}"),
    }
    let mut sent = false;
    for _ in 0..50 {
        let (_, body) = edge.api.get(&format!("/api/v1/commands/{command}")).await;
        if body["data"]["state"] == "sent" {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent, "delivered commands are marked sent");
}

#[tokio::test]
async fn a_queued_command_is_delivered_when_the_device_returns() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (status, body) = edge
        .api
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"name": "exec", "args": {"script": "uptime"}, "timeout_s": 60}),
        )
        .await;
    assert_eq!(
        (status, body["data"]["state"].clone()),
        (202, json!("queued"))
    );
    let command = body["data"]["id"].as_str().expect("id").to_string();
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::Command(c)) => {
            assert_eq!(c.command_id, command);
            assert_eq!(c.args, json!({"script": "uptime"}));
        }
        other => panic!("expected the queued command, got {other:?}"),
    }
}

/// Queues a `get_status` for a device not connected; answers the command's id.
async fn queued_status_request(edge: &TestEdge, device: &str) -> String {
    let (_, body) = edge
        .api
        .post(
            &format!("/api/v1/devices/{device}/commands"),
            json!({"name": "get_status", "timeout_s": 60}),
        )
        .await;
    body["data"]["id"].as_str().expect("id").to_string()
}

/// The command a device gets first after its login.
async fn first_command(device: &mut DeviceClient) -> String {
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::Command(c)) => c.command_id,
        other => panic!("expected a command, got {other:?}"),
    }
}

#[tokio::test]
async fn a_command_sent_but_never_answered_is_sent_again_at_the_next_login() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let command = queued_status_request(&edge, &id).await;
    for login in 1..=3 {
        let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
        assert_eq!(first_command(&mut device).await, command, "login {login}");
        drop(device);
        assert!(
            eventually(10, || !edge
                .sessions
                .online_ids()
                .contains(&id.parse().expect("id")))
            .await,
            "the session ended"
        );
    }
}

#[tokio::test]
async fn a_command_stored_before_the_edge_started_reaches_the_device_at_its_login() {
    let first = spawn_edge().await;
    let (id, secret) = registered(&first, "SN-1").await;
    let command = queued_status_request(&first, &id).await;
    // A second edge process over the same database knows nothing of it in memory.
    let url = first.api.database_url.clone();
    let restarted = spawn_edge_with(|s| s.node.database_url = url).await;
    let (mut device, _) = DeviceClient::login(&restarted, &id, &secret).await;
    assert_eq!(first_command(&mut device).await, command);
}

#[tokio::test]
async fn an_expired_command_is_never_delivered() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (_, body) = edge
        .api
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"name": "reboot", "timeout_s": 1}),
        )
        .await;
    let command = body["data"]["id"].as_str().expect("id").to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    device.send(Pdu::Ping(Ping { sent_ms: 5 })).await;
    assert_eq!(
        device.recv().await.map(|e| e.pdu),
        Some(Pdu::Pong(Ping { sent_ms: 5 })),
        "no command came first"
    );
    let (_, body) = edge.api.get(&format!("/api/v1/commands/{command}")).await;
    assert_eq!(body["data"]["state"], "expired");
}

#[tokio::test]
async fn a_late_or_repeated_result_does_not_move_a_finished_command() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    let (_, body) = edge
        .api
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"name": "reboot"}),
        )
        .await;
    let command = body["data"]["id"].as_str().expect("id").to_string();
    let _ = device.recv().await;
    let result = |outcome| {
        Pdu::CommandResult(CommandResult {
            command_id: command.clone(),
            outcome,
            exit_code: None,
            output: String::new(),
            truncated: false,
            error: None,
            data: serde_json::Value::Null,
        })
    };
    device.send(result(Outcome::Succeeded)).await;
    device.send(result(Outcome::Failed)).await;
    device
        .send(Pdu::CommandProgress(CommandProgress {
            command_id: command.clone(),
            progress: 10,
            message: String::new(),
        }))
        .await;
    device.send(Pdu::Ping(Ping { sent_ms: 1 })).await;
    let _ = device.recv().await;
    let (_, body) = edge.api.get(&format!("/api/v1/commands/{command}")).await;
    assert_eq!(body["data"]["state"], "succeeded");
}

#[tokio::test]
async fn cancel_and_bad_requests() {
    let edge = spawn_edge().await;
    let (id, _) = registered(&edge, "SN-1").await;
    let path = format!("/api/v1/devices/{id}/commands");
    for (body, field) in [
        (json!({"name": "format_disk"}), "name"),
        (json!({"name": "reboot", "timeout_s": 0}), "timeout_s"),
        (json!({"name": "exec", "args": [1]}), "args"),
        (json!({"args": {}}), "name"),
    ] {
        let (status, answer) = edge.api.post(&path, body).await;
        assert_error(status, &answer, 400, "INVALID_ARGUMENT", Some(field));
    }
    let (status, answer) = edge
        .api
        .post("/api/v1/devices/123/commands", json!({"name": "reboot"}))
        .await;
    assert_error(status, &answer, 404, "NOT_FOUND", None);
    let (_, listed) = edge.api.get(&path).await;
    assert_eq!(
        listed["data"]["total"], 0,
        "refused requests created nothing"
    );

    let (_, body) = edge.api.post(&path, json!({"name": "reboot"})).await;
    let command = body["data"]["id"].as_str().expect("id").to_string();
    let (status, body) = edge
        .api
        .post(&format!("/api/v1/commands/{command}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, body["data"]["state"].clone()),
        (200, json!("cancelled"))
    );
    let (status, body) = edge
        .api
        .post(&format!("/api/v1/commands/{command}/cancel"), json!({}))
        .await;
    assert_error(status, &body, 409, "FAILED_PRECONDITION", None);
}

/// Moves of many commands that arrive together are committed as one group, read and
/// written in a few statements: each command ends where its last allowed move left
/// it, moves apply in the order they came, and a move back is refused.
#[tokio::test]
async fn moves_arriving_together_land_in_order_and_never_go_back() {
    use fleet_node::commands::{advance, report, Reported};
    use fleet_store::commands::State;

    let edge = spawn_edge().await;
    let (device, _) = registered(&edge, "SN-MOVES").await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        let (status, body) = edge
            .api
            .post(
                &format!("/api/v1/devices/{device}/commands"),
                json!({"name": "get_status", "timeout_s": 30}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let id: i64 = body["data"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("command id");
        ids.push(id);
    }
    let node = &edge.node;
    let moves = ids.iter().map(|&id| async move {
        let result = json!({"exit_code": 0, "output": format!("done {id}")});
        let (sent, running, done) = tokio::join!(
            advance(node, id, State::Sent, None, None),
            advance(node, id, State::Running, Some(40), None),
            advance(node, id, State::Succeeded, None, Some(result)),
        );
        let back = advance(node, id, State::Running, Some(10), None).await;
        (id, sent, running, done, back)
    });
    for (id, sent, running, done, back) in futures_util::future::join_all(moves).await {
        assert_eq!(sent.expect("sent").expect("allowed").state, "sent");
        assert_eq!(running.expect("running").expect("allowed").progress, 40);
        let done = done.expect("done").expect("allowed");
        assert_eq!(done.state, "succeeded");
        assert!(
            done.hlc > 0,
            "the last move of a group is saved and stamped"
        );
        assert!(
            back.expect("back").is_none(),
            "a finished command went back"
        );
        let (status, stored) = edge.api.get(&format!("/api/v1/commands/{id}")).await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(stored["data"]["state"], "succeeded");
        assert_eq!(stored["data"]["progress"], 100);
        assert_eq!(stored["data"]["result"]["output"], format!("done {id}"));
    }

    // A device's word on a command: only its own commands are known to it.
    let (other, _) = registered(&edge, "SN-OTHER").await;
    let owner: i64 = device.parse().expect("device id");
    let stranger: i64 = other.parse().expect("device id");
    let last = ids[ids.len() - 1];
    let told = |d, state| report(node, d, last, state, None, None);
    assert!(matches!(
        told(stranger, State::Failed).await,
        Ok(Reported::Unknown)
    ));
    assert!(matches!(
        told(owner, State::Running).await,
        Ok(Reported::Ignored)
    ));
    assert!(matches!(
        report(node, owner, 1, State::Running, None, None).await,
        Ok(Reported::Unknown)
    ));
    let (_, stored) = edge.api.get(&format!("/api/v1/commands/{last}")).await;
    assert_eq!(stored["data"]["state"], "succeeded", "{stored}");
}
