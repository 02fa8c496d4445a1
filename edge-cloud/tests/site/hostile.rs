//! A device with real credentials trying to act for another device: on its
//! commands, its log upload, its configuration and status. Each attempt is refused
//! (an error PDU, or an HTTP refusal), nothing changes for the other device, and the
//! honest device carries on.

use serde_json::{json, Value};
use shared_proto::southbound::{
    Command, CommandName, CommandProgress, CommandResult, ConfigApplied, ErrorCode, Login, Outcome,
    Pdu, Ping, Status, StatusReport,
};

use crate::helpers::*;

async fn registered(edge: &TestEdge, sn: &str) -> (String, String) {
    let d = edge.api.device("gw", sn).await;
    (
        d["id"].as_str().expect("id").to_string(),
        d["secret"].as_str().expect("secret").to_string(),
    )
}

/// The next PDU, which must be an error refusing the request.
async fn refused(device: &mut DeviceClient, what: &str) {
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::Error(e)) => assert_eq!(e.code, ErrorCode::BadRequest, "{what}: {e:?}"),
        other => panic!("{what}: expected an error PDU, got {other:?}"),
    }
}

async fn command(edge: &TestEdge, device: &str, body: Value) -> String {
    let (status, answer) = edge
        .api
        .post(&format!("/api/v1/devices/{device}/commands"), body)
        .await;
    assert_eq!(status, 202, "{answer}");
    answer["data"]["id"].as_str().expect("id").to_string()
}

async fn command_state(edge: &TestEdge, id: &str) -> Value {
    let (_, body) = edge.api.get(&format!("/api/v1/commands/{id}")).await;
    body["data"].clone()
}

#[tokio::test]
async fn a_device_cannot_act_for_another_device() {
    let edge = spawn_edge().await;
    let (mallory, mallory_secret) = registered(&edge, "SN-MAL").await;
    let (victim, victim_secret) = registered(&edge, "SN-VIC").await;
    let (mut attacker, _) = DeviceClient::login(&edge, &mallory, &mallory_secret).await;
    let (mut honest, _) = DeviceClient::login(&edge, &victim, &victim_secret).await;

    // The victim's commands, delivered to the victim only.
    let exec = command(
        &edge,
        &victim,
        json!({"name": "exec", "args": {"script": "uptime"}, "timeout_s": 60}),
    )
    .await;
    let pull = command(
        &edge,
        &victim,
        json!({"name": "pull_logs", "timeout_s": 60}),
    )
    .await;
    let mut upload = Value::Null;
    for _ in 0..2 {
        match honest.recv().await.map(|e| e.pdu) {
            Some(Pdu::Command(c)) if c.name == CommandName::PullLogs => {
                upload = c.args["upload"].clone();
            }
            Some(Pdu::Command(_)) => {}
            other => panic!("expected the victim's commands, got {other:?}"),
        }
    }
    let before = command_state(&edge, &exec).await;

    // Progress and results for the victim's command.
    attacker
        .send(Pdu::CommandProgress(CommandProgress {
            command_id: exec.clone(),
            progress: 50,
            message: "mine now".into(),
        }))
        .await;
    refused(&mut attacker, "progress on another device's command").await;
    for outcome in [Outcome::Succeeded, Outcome::Failed] {
        attacker
            .send(Pdu::CommandResult(CommandResult {
                command_id: exec.clone(),
                outcome,
                exit_code: Some(0),
                output: "forged".into(),
                truncated: false,
                error: None,
                data: Value::Null,
            }))
            .await;
        refused(&mut attacker, "a result for another device's command").await;
    }
    attacker
        .send(Pdu::CommandResult(CommandResult {
            command_id: pull.clone(),
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            output: String::new(),
            truncated: false,
            error: None,
            data: Value::Null,
        }))
        .await;
    refused(&mut attacker, "a result for another device's pull_logs").await;
    // Edge-to-device messages and a second login naming the victim.
    attacker
        .send(Pdu::Command(Command {
            command_id: exec.clone(),
            name: CommandName::Exec,
            args: Value::Null,
            deadline_ms: 0,
        }))
        .await;
    refused(&mut attacker, "a command PDU from a device").await;
    attacker
        .send(Pdu::Login(Login {
            device_id: Some(victim.clone()),
            sn: None,
            model: None,
            secret: mallory_secret.clone(),
            agent_version: "test".into(),
        }))
        .await;
    refused(&mut attacker, "a second login").await;
    assert_eq!(command_state(&edge, &exec).await, before, "unchanged");
    let pull_now = command_state(&edge, &pull).await;
    assert_eq!(pull_now["result"], Value::Null);

    // The victim's log upload, with the attacker's own credentials.
    let path = upload["path"].as_str().expect("upload path");
    let res = edge
        .api
        .client
        .post(format!("{}{path}", edge.api.address))
        .basic_auth(&mallory, Some(&mallory_secret))
        .body(b"forged log".to_vec())
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 404, "not the attacker's command");
    let (status, _) = edge.api.get(&format!("/api/v1/commands/{pull}/logs")).await;
    assert_eq!(status, 404, "nothing stored for the victim");

    // Configuration and status only ever land on the sender itself.
    attacker
        .send(Pdu::ConfigApplied(ConfigApplied {
            version: 99,
            error: None,
        }))
        .await;
    attacker
        .send(Pdu::StatusReport(StatusReport {
            version: 7,
            full: true,
            base_version: None,
            status: Status {
                cpu_percent: Some(99.0),
                ..Default::default()
            },
        }))
        .await;
    assert!(matches!(
        attacker.recv().await.map(|e| e.pdu),
        Some(Pdu::StatusAck(_))
    ));
    let (_, vs) = edge
        .api
        .get(&format!("/api/v1/devices/{victim}/status"))
        .await;
    assert_eq!(
        (
            vs["data"]["version"].clone(),
            vs["data"]["config_version"].clone()
        ),
        (json!(0), json!(0)),
        "the victim's twin is untouched: {vs}"
    );
    let (_, ms) = edge
        .api
        .get(&format!("/api/v1/devices/{mallory}/status"))
        .await;
    assert_eq!(ms["data"]["config_version"], 99, "filed under the sender");

    // The honest device carries on: its result lands, and its session is fine.
    honest
        .send(Pdu::CommandResult(CommandResult {
            command_id: exec.clone(),
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            output: "up 3 days".into(),
            truncated: false,
            error: None,
            data: Value::Null,
        }))
        .await;
    let mut done = Value::Null;
    for _ in 0..100 {
        done = command_state(&edge, &exec).await;
        if done["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["result"]["output"], "up 3 days");
    honest.send(Pdu::Ping(Ping { sent_ms: 1 })).await;
    assert_eq!(
        honest.recv().await.map(|e| e.pdu),
        Some(Pdu::Pong(Ping { sent_ms: 1 }))
    );
    assert_eq!(edge.sessions.online(), 2, "both sessions carried on");
}

/// A device that floods reports is read no faster than its reports are stored, and
/// every report still gets its answer, in order: a burst far past the answers a
/// session holds pending is refused report by report, and the session goes on.
#[tokio::test]
async fn a_flood_of_command_reports_is_answered_report_by_report() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-FLOOD").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    for n in 0..200 {
        device
            .send(Pdu::CommandProgress(CommandProgress {
                command_id: format!("{}", 1_000_000 + n),
                progress: 1,
                message: String::new(),
            }))
            .await;
    }
    for n in 0..200 {
        refused(
            &mut device,
            &format!("report {n} on a command that is not its own"),
        )
        .await;
    }
    device.send(Pdu::Ping(Ping { sent_ms: 7 })).await;
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::Pong(p)) => assert_eq!(p.sent_ms, 7),
        other => panic!("the session goes on: expected a pong, got {other:?}"),
    }
}
