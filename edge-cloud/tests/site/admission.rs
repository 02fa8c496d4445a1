//! Unauthenticated connections at the device endpoint: one deadline from accept, a
//! cap per source and in total, a small login frame, all counted in metrics.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::SinkExt;
use shared_proto::southbound::{Login, Pdu, Ping};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

async fn registered(edge: &TestEdge, sn: &str) -> (String, String) {
    let d = edge.api.device("gw", sn).await;
    (
        d["id"].as_str().expect("id").to_string(),
        d["secret"].as_str().expect("secret").to_string(),
    )
}

/// A TCP connection to the device endpoint from loopback address 127.0.0.`host`
/// that sends nothing.
async fn silent(edge: &TestEdge, host: u8) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)),
            0,
        ))
        .expect("bind a loopback source");
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], edge.device_port)))
        .await
        .expect("connect")
}

/// Whether the edge closes `stream` within `secs` seconds (reads end or fail).
async fn closed_by_edge(stream: &mut TcpStream, secs: u64) -> bool {
    let mut buf = [0u8; 256];
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn wait_metric(edge: &TestEdge, series: &str, want: u64) -> u64 {
    let mut got = 0;
    for _ in 0..200 {
        got = edge.metric(series).await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

#[tokio::test]
async fn a_thousand_silent_connections_end_at_the_deadline_and_a_device_still_logs_in() {
    let edge = spawn_edge_with(|s| s.hub.login_timeout = Duration::from_secs(3)).await;
    let (id, secret) = registered(&edge, "SN-1").await;
    // From 20 loopback sources, 50 each: under the per-source cap, so every one is
    // admitted and must be ended by the deadline, not by the gate.
    let mut silent_ones = Vec::with_capacity(1000);
    for i in 0..1000u16 {
        let host = u8::try_from(2 + i % 20).expect("small");
        silent_ones.push(silent(&edge, host).await);
    }
    assert_eq!(
        wait_metric(&edge, "device_unauthenticated_connections", 1000).await,
        1000,
        "all admitted and waiting"
    );

    // Meanwhile a real device logs in and keeps its session.
    let (mut device, answer) = DeviceClient::login(&edge, &id, &secret).await;
    assert!(
        matches!(answer.pdu, Pdu::LoginOk(_)),
        "logged in: {answer:?}"
    );

    for (n, stream) in silent_ones.iter_mut().enumerate() {
        assert!(
            closed_by_edge(stream, 15).await,
            "silent connection {n} is closed by the edge"
        );
    }
    assert_eq!(
        wait_metric(&edge, "device_unauthenticated_connections", 0).await,
        0,
        "nothing held past the deadline"
    );
    assert_eq!(
        edge.metric("device_connections_dropped_total{reason=\"deadline\"}")
            .await,
        1000
    );
    assert_eq!(edge.hub.unauthenticated(), 0);

    device.send(Pdu::Ping(Ping { sent_ms: 5 })).await;
    assert_eq!(
        device.recv().await.map(|e| e.pdu),
        Some(Pdu::Pong(Ping { sent_ms: 5 })),
        "the device's session carried on"
    );
    assert_eq!(edge.sessions.online(), 1);
}

#[tokio::test]
async fn one_source_over_its_cap_is_refused_and_over_the_total_connections_wait_their_turn() {
    let edge = spawn_edge_with(|s| {
        s.hub.login_timeout = Duration::from_secs(30);
        s.hub.max_unauthenticated_per_source = 3;
        s.hub.max_unauthenticated = 5;
    })
    .await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(silent(&edge, 2).await);
    }
    assert_eq!(
        wait_metric(&edge, "device_unauthenticated_connections", 3).await,
        3
    );
    let mut over_source = silent(&edge, 2).await;
    assert!(
        closed_by_edge(&mut over_source, 10).await,
        "a fourth from one source is closed at once"
    );
    assert_eq!(
        edge.metric("device_connections_dropped_total{reason=\"over_source_cap\"}")
            .await,
        1
    );

    // The total reached: the endpoint stops accepting, and a device waits its turn
    // in the listen backlog instead of being refused.
    for _ in 0..2 {
        held.push(silent(&edge, 3).await);
    }
    assert_eq!(
        wait_metric(&edge, "device_unauthenticated_connections", 5).await,
        5
    );
    assert_eq!(
        wait_metric(&edge, "device_accepts_paused_total", 1).await,
        1
    );
    let (ca, port) = (edge.api.data_dir.join("tls/ca.crt"), edge.device_port);
    let waiting = tokio::spawn(async move {
        let mut device = DeviceClient::connect_to(&ca, port).await;
        device
            .send(Pdu::Login(Login {
                device_id: Some(id),
                sn: None,
                model: None,
                secret,
                agent_version: "test".into(),
            }))
            .await;
        device.recv().await.map(|e| e.pdu)
    });
    assert_eq!(edge.sessions.online(), 0, "not in while the total is full");
    drop(held);
    let answer = waiting.await.expect("login task");
    assert!(
        matches!(answer, Some(Pdu::LoginOk(_))),
        "logged in once places freed: {answer:?}"
    );
    assert_eq!(
        wait_metric(&edge, "device_unauthenticated_connections", 0).await,
        0
    );
    assert_eq!(
        edge.metric("device_connections_dropped_total{reason=\"deadline\"}")
            .await,
        0,
        "nothing waited out its deadline"
    );
}

#[tokio::test]
async fn a_login_frame_larger_than_the_login_limit_is_dropped_unanswered() {
    let edge = spawn_edge().await;
    let (id, secret) = registered(&edge, "SN-1").await;
    let mut device = DeviceClient::connect(&edge).await;
    let padded = format!(
        r#"{{"v":1,"id":1,"type":"login","body":{{"device_id":"{id}","secret":"{secret}","agent_version":"{}"}}}}"#,
        "x".repeat(shared_proto::southbound::MAX_LOGIN_FRAME_BYTES)
    );
    device.send_text(padded).await;
    assert!(device.recv().await.is_none(), "closed without an answer");
    assert_eq!(
        edge.metric("device_connections_dropped_total{reason=\"bad_login\"}")
            .await,
        1
    );

    // A peer announcing a huge frame before login is cut at the read budget, long
    // before the session's frame limit.
    let mut device = DeviceClient::connect(&edge).await;
    let huge = "y".repeat(200 * 1024);
    let _ = device.ws_mut().send(Message::Text(huge.into())).await;
    assert!(device.closed_within(10).await, "closed");
    assert_eq!(edge.sessions.online(), 0);
    assert_eq!(
        wait_metric(&edge, "device_unauthenticated_connections", 0).await,
        0
    );
}
