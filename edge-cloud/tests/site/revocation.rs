//! A live session ends when the device's row stops bearing it out: a new secret, a
//! deletion, a move to another edge. Event-driven (the change calls `recheck`), so
//! the waits below are generous bounds, not timing claims.

use fleet_node::commands::Dispatch;
use fleet_store::devices;
use sea_orm::EntityTrait;
use serde_json::json;
use shared_proto::southbound::{Pdu, Ping};

use crate::helpers::*;

async fn registered(edge: &TestEdge, sn: &str) -> (String, String) {
    let d = edge.api.device("gw", sn).await;
    (
        d["id"].as_str().expect("id").to_string(),
        d["secret"].as_str().expect("secret").to_string(),
    )
}

async fn refused(edge: &TestEdge, id: &str, secret: &str) -> bool {
    let mut c = DeviceClient::connect(edge).await;
    c.send(Pdu::Login(shared_proto::southbound::Login {
        device_id: Some(id.into()),
        sn: None,
        model: None,
        secret: secret.into(),
        agent_version: "test".into(),
    }))
    .await;
    c.recv().await.is_none()
}

#[tokio::test]
async fn rotating_a_secret_closes_the_live_session_and_the_old_secret_is_refused() {
    let edge = spawn_edge().await;
    let (id, old_secret) = registered(&edge, "SN-1").await;
    let (other_id, other_secret) = registered(&edge, "SN-2").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &old_secret).await;
    let (mut bystander, _) = DeviceClient::login(&edge, &other_id, &other_secret).await;

    let (status, body) = edge
        .api
        .post(&format!("/api/v1/devices/{id}/secret"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let new_secret = body["data"]["secret"].as_str().expect("secret").to_string();
    assert!(
        device.closed_within(5).await,
        "the session opened with the old secret ends"
    );
    assert!(
        refused(&edge, &id, &old_secret).await,
        "the old secret no longer logs in"
    );
    let (_, answer) = DeviceClient::login(&edge, &id, &new_secret).await;
    assert!(matches!(answer.pdu, Pdu::LoginOk(_)), "the new one does");
    assert_eq!(
        edge.metric("device_sessions_closed_total{reason=\"revoked\"}")
            .await,
        1
    );

    bystander.send(Pdu::Ping(Ping { sent_ms: 3 })).await;
    assert_eq!(
        bystander.recv().await.map(|e| e.pdu),
        Some(Pdu::Pong(Ping { sent_ms: 3 })),
        "another device's session is untouched"
    );
}

#[tokio::test]
async fn deleting_a_device_closes_its_live_session() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    let (status, body) = edge
        .api
        .delete(&format!("/api/v1/devices/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(device.closed_within(5).await, "the session ends");
    assert!(
        refused(&edge, &id, &secret).await,
        "a deleted device cannot log in"
    );
    assert_eq!(
        edge.metric("device_sessions_closed_total{reason=\"deleted\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn a_session_ends_with_a_close_frame_that_says_why() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (other_id, other_secret) = registered(&edge, "SN-2").await;
    let (mut deleted, _) = DeviceClient::login(&edge, &id, &secret).await;
    let (mut staying, _) = DeviceClient::login(&edge, &other_id, &other_secret).await;

    let (status, body) = edge
        .api
        .delete(&format!("/api/v1/devices/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let frame = deleted.close_frame().await.expect("a close frame");
    assert_eq!(
        (frame.code, frame.reason.as_str()),
        (CloseCode::Policy, "device deleted")
    );

    // A stopping edge says it is going away, which agents take as "dial again now".
    edge.hub.shutdown();
    let frame = staying.close_frame().await.expect("a close frame");
    assert_eq!(
        (frame.code, frame.reason.as_str()),
        (CloseCode::Away, "edge stopping")
    );
}

#[tokio::test]
async fn an_edit_that_keeps_secret_and_home_keeps_the_session() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;
    let (status, body) = edge
        .api
        .patch(&format!("/api/v1/devices/{id}"), json!({"name": "renamed"}))
        .await;
    assert_eq!(status, 200, "{body}");
    // The recheck ran (the patch calls it); a ping answered after a later round
    // trip shows the session is still there.
    edge.sessions.recheck(id.parse().expect("id"));
    for n in 0..3 {
        device.send(Pdu::Ping(Ping { sent_ms: n })).await;
        assert_eq!(
            device.recv().await.map(|e| e.pdu),
            Some(Pdu::Pong(Ping { sent_ms: n }))
        );
    }
    assert_eq!(edge.sessions.online(), 1);
}

#[tokio::test]
async fn a_device_homed_at_another_edge_now_loses_its_session_here() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let device_id: i64 = id.parse().expect("id");
    let (mut device, _) = DeviceClient::login(&edge, &id, &secret).await;

    // What a merge does when the center moved the device: its row names another edge.
    let node = edge.node.clone();
    let (turn, txn) = node.write().await.expect("write turn");
    let old = devices::Entity::find_by_id(device_id)
        .one(&txn)
        .await
        .expect("query")
        .expect("row");
    let mut moved = old.clone();
    moved.edge_id = Some(424_242);
    moved.updated_at = fleet_store::now_ms();
    node.replica
        .update(&txn, &old, moved)
        .await
        .expect("update");
    txn.commit().await.expect("commit");
    drop(turn);
    edge.sessions.recheck(device_id);

    assert!(device.closed_within(5).await, "the session ends");
    assert_eq!(
        edge.metric("device_sessions_closed_total{reason=\"moved_away\"}")
            .await,
        1
    );
}
