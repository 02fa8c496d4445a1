//! The device hub end to end: real WSS sessions against a real edge.

use std::time::Duration;

use sea_orm::EntityTrait;
use serde_json::{json, Value};
use shared_proto::southbound::{ErrorCode, Login, Pdu, Ping, Status, StatusReport};

use crate::helpers::*;

async fn registered(edge: &TestEdge, sn: &str) -> (String, String) {
    let d = edge.api.device("gw", sn).await;
    (
        d["id"].as_str().expect("id").to_string(),
        d["secret"].as_str().expect("secret").to_string(),
    )
}

#[tokio::test]
async fn a_device_logs_in_and_shows_online() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (status, body) = edge.api.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(
        (status, body["data"]["online"].clone()),
        (200, json!(false))
    );

    let (mut device, answer) = DeviceClient::login(&edge, &id, &secret).await;
    match answer.pdu {
        Pdu::LoginOk(ok) => {
            assert_eq!(ok.device_id, id);
            assert_eq!(ok.heartbeat_interval_s, 15);
            assert_eq!(ok.status_version, 0);
        }
        other => panic!("expected login_ok, got {other:?}"),
    }
    let (_, body) = edge.api.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(body["data"]["online"], json!(true));
    let (_, body) = edge.api.get("/api/v1/devices").await;
    assert_eq!(body["data"]["items"][0]["online"], json!(true));

    // Application heartbeat: a ping is answered with the same stamp.
    device.send(Pdu::Ping(Ping { sent_ms: 42 })).await;
    assert_eq!(
        device.recv().await.map(|e| e.pdu),
        Some(Pdu::Pong(Ping { sent_ms: 42 }))
    );

    drop(device);
    let sessions = edge.sessions.clone();
    assert!(
        eventually(5, || sessions.online() == 0).await,
        "offline after the close"
    );
    let mut both = false;
    for _ in 0..50 {
        let (_, body) = edge
            .api
            .get(&format!("/api/v1/events?target_id={id}"))
            .await;
        let actions: Vec<String> = body["data"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|e| e["action"].as_str().map(str::to_string))
            .collect();
        if actions.iter().any(|a| a == "device.online")
            && actions.iter().any(|a| a == "device.offline")
        {
            both = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(both, "online and offline events are recorded");
}

#[tokio::test]
async fn a_device_can_log_in_by_serial_number_and_model() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-7").await;
    let mut device = DeviceClient::connect(&edge).await;
    device
        .send(Pdu::Login(Login {
            device_id: None,
            sn: Some("SN-7".into()),
            model: Some("Raspberry Pi 4".into()),
            secret,
            agent_version: "test".into(),
        }))
        .await;
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::LoginOk(ok)) => assert_eq!(ok.device_id, id),
        other => panic!("expected login_ok, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_login_learns_nothing_and_is_counted_not_written() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    for secret in ["wrong", "also wrong"] {
        let mut c = DeviceClient::connect(&edge).await;
        c.send(Pdu::Login(Login {
            device_id: Some(id.clone()),
            sn: None,
            model: None,
            secret: secret.into(),
            agent_version: "test".into(),
        }))
        .await;
        let answer = c.recv().await;
        assert!(
            answer.is_none(),
            "the edge closes without a word, got {answer:?}"
        );
    }
    assert_eq!(edge.sessions.online(), 0);
    assert_eq!(
        edge.metric("device_logins_total{outcome=\"refused\"}")
            .await,
        2,
        "each refusal is counted"
    );
    // A good login afterwards is recorded (as device.online); refusals never are.
    let (_device, answer) = DeviceClient::login(&edge, &id, &secret).await;
    assert!(matches!(answer.pdu, Pdu::LoginOk(_)));
    let mut online = false;
    for _ in 0..50 {
        let (_, body) = edge.api.get("/api/v1/events?action=device.online").await;
        if body["data"]["total"] == 1 {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(online, "the login is on record");
    let (_, body) = edge
        .api
        .get("/api/v1/events?action=device.login_refused")
        .await;
    assert_eq!(body["data"]["total"], 0, "no row per refused login");
}

#[tokio::test]
async fn a_silent_connection_is_dropped_at_the_login_deadline() {
    let edge = spawn_edge_with(|s| s.hub.login_timeout = Duration::from_secs(1)).await;
    // TLS and the upgrade done, then silence: the deadline from accept still ends it.
    let mut c = DeviceClient::connect(&edge).await;
    assert!(c.closed_within(10).await, "closed by the edge");
    assert_eq!(
        edge.metric("device_connections_dropped_total{reason=\"deadline\"}")
            .await,
        1
    );
    assert_eq!(edge.metric("device_unauthenticated_connections").await, 0);
}

#[tokio::test]
async fn garbage_gets_an_error_pdu_and_the_session_survives() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    device.send_text("not json".into()).await;
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::Error(e)) => assert_eq!(e.code, ErrorCode::Malformed),
        other => panic!("expected an error PDU, got {other:?}"),
    }
    device
        .send_text(r#"{"v":1,"id":9,"type":"teleport","body":{}}"#.into())
        .await;
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::Error(e)) => {
            assert_eq!(e.code, ErrorCode::UnknownType);
            assert_eq!(e.in_reply_to, Some(9));
        }
        other => panic!("expected an error PDU, got {other:?}"),
    }
    let big = format!(
        r#"{{"v":1,"id":10,"type":"ping","body":{{"sent_ms":1}},"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    device.send_text(big).await;
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::Error(e)) => assert_eq!(e.code, ErrorCode::TooLarge),
        other => panic!("expected an error PDU, got {other:?}"),
    }
    device.send(Pdu::Ping(Ping { sent_ms: 7 })).await;
    assert_eq!(
        device.recv().await.map(|e| e.pdu),
        Some(Pdu::Pong(Ping { sent_ms: 7 }))
    );
    // A flood closes the session.
    for _ in 0..30 {
        device.send_text("{".into()).await;
    }
    let mut closed = false;
    for _ in 0..40 {
        if device.recv().await.is_none() {
            closed = true;
            break;
        }
    }
    assert!(closed, "a flood of bad frames closes the session");
}

#[tokio::test]
async fn status_diffs_apply_on_the_held_version_else_a_full_report_is_asked() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let device_id: i64 = id.parse().expect("id");
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    let full = Status {
        cpu_percent: Some(10.0),
        memory_used_bytes: Some(100),
        uptime_s: Some(1),
        ..Default::default()
    };
    device
        .send(Pdu::StatusReport(StatusReport {
            version: 1,
            full: true,
            base_version: None,
            status: full,
        }))
        .await;
    assert!(
        matches!(device.recv().await.map(|e| e.pdu), Some(Pdu::StatusAck(a)) if a.version == 1)
    );
    let diff = Status {
        cpu_percent: Some(55.0),
        ..Default::default()
    };
    device
        .send(Pdu::StatusReport(StatusReport {
            version: 2,
            full: false,
            base_version: Some(1),
            status: diff,
        }))
        .await;
    assert!(
        matches!(device.recv().await.map(|e| e.pdu), Some(Pdu::StatusAck(a)) if a.version == 2)
    );
    let held = edge.sessions.status(device_id).expect("held");
    assert_eq!(
        (
            held.version,
            held.status.cpu_percent,
            held.status.memory_used_bytes
        ),
        (2, Some(55.0), Some(100))
    );

    let stale = Status {
        uptime_s: Some(9),
        ..Default::default()
    };
    device
        .send(Pdu::StatusReport(StatusReport {
            version: 9,
            full: false,
            base_version: Some(7),
            status: stale,
        }))
        .await;
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::StatusResync(r)) => assert_eq!(r.have_version, 2),
        other => panic!("expected status_resync, got {other:?}"),
    }
    assert_eq!(
        edge.sessions.status(device_id).expect("held").version,
        2,
        "a stale diff changes nothing"
    );

    // A new session is told which version the edge holds.
    drop(device);
    let (_, answer) = DeviceClient::login(&edge, &id, &secret).await;
    assert!(matches!(answer.pdu, Pdu::LoginOk(ok) if ok.status_version == 2));
}

#[tokio::test]
async fn a_second_login_replaces_the_first_session() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (mut first, _) = DeviceClient::login(&edge, &id, &secret).await;
    let (mut second, _) = DeviceClient::login(&edge, &id, &secret).await;
    assert!(first.recv().await.is_none(), "the older session is closed");
    second.send(Pdu::Ping(Ping { sent_ms: 1 })).await;
    assert!(matches!(
        second.recv().await.map(|e| e.pdu),
        Some(Pdu::Pong(_))
    ));
    assert_eq!(edge.sessions.online(), 1);
}

#[tokio::test]
async fn a_device_that_stops_heartbeating_goes_offline() {
    let edge = spawn_edge_with(|s| {
        s.hub.heartbeat_interval = Duration::from_secs(1);
        s.hub.missed_limit = 2;
    })
    .await;
    let (id, secret) = registered(&edge, "SN-1").await;
    // Logged in, then silent: the client never reads, so it never answers pings.
    let (_silent, _) = DeviceClient::login(&edge, &id, &secret).await;
    assert_eq!(edge.sessions.online(), 1);
    let sessions = edge.sessions.clone();
    assert!(
        eventually(10, || sessions.online() == 0).await,
        "offline after missed heartbeats"
    );
    let mut recorded = false;
    for _ in 0..50 {
        let (_, body) = edge.api.get("/api/v1/events?action=device.offline").await;
        if body["data"]["items"][0]["detail"] == "heartbeat lost" {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded, "an offline event names the reason");
}

#[tokio::test]
async fn statuses_are_served_and_written_in_batches() {
    let edge = spawn_edge_with(|s| s.status_flush = Duration::from_millis(50)).await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (_, body) = edge.api.get(&format!("/api/v1/devices/{id}/status")).await;
    assert_eq!(
        body["data"],
        json!({"device_id": id, "online": false, "version": 0, "config_version": 0, "status": null})
    );
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    let status = Status {
        cpu_percent: Some(12.5),
        agent_version: Some("0.1.0".into()),
        ..Default::default()
    };
    device
        .send(Pdu::StatusReport(StatusReport {
            version: 3,
            full: true,
            base_version: None,
            status,
        }))
        .await;
    let _ = device.recv().await;
    let (_, body) = edge.api.get(&format!("/api/v1/devices/{id}/status")).await;
    assert_eq!(body["data"]["online"], json!(true));
    assert_eq!(body["data"]["version"], 3);
    assert_eq!(body["data"]["status"]["cpu_percent"], 12.5);

    let db = edge.api.db().await;
    let device_id: i64 = id.parse().expect("id");
    let mut stored = None;
    for _ in 0..100 {
        stored = fleet_store::device_status::Entity::find_by_id(device_id)
            .one(&db)
            .await
            .expect("query");
        if stored.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = stored.expect("written by the batch writer");
    assert_eq!(stored.version, 3);
    // A restarted edge starts from what was written.
    let fresh = edge_cloud::hub::Sessions::default();
    fresh.restore(&db).await.expect("restore");
    assert_eq!(fresh.status(device_id).map(|h| h.version), Some(3));
}

#[tokio::test]
async fn the_reported_software_version_becomes_the_devices_and_a_bad_one_is_ignored() {
    let edge = spawn_edge_with(|s| s.status_flush = Duration::from_millis(50)).await;
    let (id, secret) = registered(&edge, "SN-SW").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    let report = |version: u64, software: String| {
        Pdu::StatusReport(StatusReport {
            version,
            full: true,
            base_version: None,
            status: Status {
                software_version: Some(software),
                ..Default::default()
            },
        })
    };
    let path = format!("/api/v1/devices/{id}");
    let software = async || edge.api.get(&path).await.1["data"]["software"].clone();
    let before = software().await;
    device.send(report(1, "x".repeat(500))).await;
    let _ = device.recv().await;
    device.send(report(2, "not a version!".into())).await;
    let _ = device.recv().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(software().await, before, "bad versions change nothing");

    device.send(report(3, "2.4.1".into())).await;
    let _ = device.recv().await;
    let mut now = Value::Null;
    for _ in 0..100 {
        now = software().await;
        if now["version"] == "2.4.1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(now["version"], "2.4.1", "{now}");
    assert_eq!(
        now["last_update"],
        fleet_store::date_of(fleet_store::now_ms()).as_str(),
        "{now}"
    );
}

#[tokio::test]
async fn the_hub_is_measured() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    device.send(Pdu::Ping(Ping { sent_ms: 1 })).await;
    let _ = device.recv().await;
    let text = edge.api.metrics().await;
    for line in [
        "device_sessions 1",
        "device_logins_total{outcome=\"ok\"} 1",
        "device_messages_total{direction=\"in\",kind=\"ping\"} 1",
        "device_messages_total{direction=\"out\",kind=\"pong\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn desired_configuration_reaches_the_device_now_or_at_its_next_login() {
    use shared_proto::southbound::ConfigApplied;
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let path = format!("/api/v1/devices/{id}/config");
    let (status, body) = edge.api.get(&path).await;
    assert_eq!(status, 404, "{body}");
    for (bad, field) in [
        (json!({"report_interval_s": 0}), "report_interval_s"),
        (
            json!({"report_interval_s": 10, "settings": {"k": 5}}),
            "settings.k",
        ),
        (json!({"settings": {}}), "report_interval_s"),
    ] {
        let (status, answer) = edge.api.put(&path, bad).await;
        assert_error(status, &answer, 400, "INVALID_ARGUMENT", Some(field));
    }

    // Offline: it waits for the login.
    let (status, body) = edge
        .api
        .put(
            &path,
            json!({"report_interval_s": 20, "settings": {"mode": "eco"}}),
        )
        .await;
    assert_eq!((status, body["data"]["version"].clone()), (200, json!(1)));
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::DesiredConfig(c)) => {
            assert_eq!((c.version, c.report_interval_s), (1, 20));
            assert_eq!(c.settings.get("mode").map(String::as_str), Some("eco"));
        }
        other => panic!("expected the desired configuration, got {other:?}"),
    }
    device
        .send(Pdu::ConfigApplied(ConfigApplied {
            version: 1,
            error: None,
        }))
        .await;

    // Online: pushed at once.
    let (_, body) = edge.api.put(&path, json!({"report_interval_s": 5})).await;
    assert_eq!(body["data"]["version"], 2);
    match device.recv().await.map(|e| e.pdu) {
        Some(Pdu::DesiredConfig(c)) => assert_eq!(c.version, 2),
        other => panic!("expected the new configuration, got {other:?}"),
    }
    device
        .send(Pdu::ConfigApplied(ConfigApplied {
            version: 2,
            error: None,
        }))
        .await;
    device.send(Pdu::Ping(Ping { sent_ms: 1 })).await;
    let _ = device.recv().await;
    let (_, body) = edge.api.get(&format!("/api/v1/devices/{id}/status")).await;
    assert_eq!(
        body["data"]["config_version"], 2,
        "the reported side of the twin"
    );
}
