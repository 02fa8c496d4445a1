//! The federation's trust boundary beyond what an edge may author (`hostile_edge`):
//! a forged or drifting stamp never drags a clock, revoking a site's or a device's
//! secret ends its link or session at once, and silent connections cost little.

use std::time::Duration;

use federation::session::recv;
use fleet_store::clock::{physical_ms, stamp_at};
use sea_orm::EntityTrait;
use serde_json::{json, Value};

use crate::federation::{device_row, homed_device, proxy_to, spawn_center, spawn_edge, until};
use crate::helpers::*;
use crate::hostile_edge::{dial, num};

fn fields(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// A stamp the center's own database holds ahead of its wall clock (a clock that ran
/// fast before a restart) stays below every later write of the center.
#[tokio::test]
async fn a_restarted_center_stamps_above_what_it_stores_and_its_edit_wins_everywhere() {
    let center = spawn_center().await;
    let proxy = proxy_to(&center).await;
    let (edge, edge_id) = spawn_edge(&center, &proxy, "edge-clock").await;
    let (device, _) = homed_device(&center, &edge, &edge_id, "SN-CLK").await;
    let device = num(&device);

    let ahead = stamp_at(fleet_store::now_ms() + 40_000, 1);
    let db = center.api.db().await;
    let row = fleet_store::devices::Entity::find_by_id(device)
        .one(&db)
        .await
        .expect("query")
        .expect("row");
    let mut stamps: serde_json::Map<String, Value> =
        serde_json::from_str(&row.field_stamps).expect("stamps");
    stamps.insert("name".into(), json!(ahead));
    let mut active: fleet_store::devices::ActiveModel = row.into();
    active.name = sea_orm::Set("ahead".into());
    active.hlc = sea_orm::Set(ahead);
    active.field_stamps = sea_orm::Set(Value::Object(stamps).to_string());
    sea_orm::ActiveModelTrait::update(active, &db)
        .await
        .expect("update");
    sea_orm::ActiveModelTrait::insert(
        fleet_store::change_log::entry(
            "devices",
            device,
            ahead,
            false,
            fields(json!({"name": "ahead"})),
        ),
        &db,
    )
    .await
    .expect("log");
    until(10, "the stamp ahead reaches the edge", async || {
        device_row(&edge.site.api, device).await.expect("row")["name"] == json!("ahead")
    })
    .await;

    // Restart: a new center process on the same database and link port.
    center.links.shutdown();
    until(10, "the edge sees the center go", async || {
        !edge.uplink.is_online()
    })
    .await;
    let (dir, mut node) = test_settings(center_cloud::config::DEFAULTS).await;
    node.database_url = center.api.database_url.clone();
    node.data_dir = center.api.data_dir.clone();
    let mut settings = center_cloud::Settings {
        node,
        ..center_cloud::Settings::with_data_dir(&center.api.data_dir)
    };
    settings.link_listen = format!("127.0.0.1:{}", center.link_port)
        .parse()
        .expect("addr");
    settings.link_heartbeat = Duration::from_secs(1);
    let restarted = center_cloud::Application::build(settings)
        .await
        .expect("center restarts");
    let links = restarted.links.clone();
    let api = start(restarted.served, dir, center.api.database_url.clone()).await;
    until(15, "the edge links to the restarted center", async || {
        edge.uplink.is_online()
    })
    .await;

    let group = num(&api.group("after-restart").await);
    let group_row = fleet_store::groups::Entity::find_by_id(group)
        .one(&db)
        .await
        .expect("query")
        .expect("row");
    assert!(
        group_row.hlc > ahead,
        "a new row is stamped above the stored stamps"
    );
    let (status, _) = api
        .patch(
            &format!("/api/v1/devices/{device}"),
            json!({"name": "final"}),
        )
        .await;
    assert_eq!(status, 200);
    until(10, "the center's edit wins at the edge too", async || {
        device_row(&edge.site.api, device).await.expect("row")["name"] == json!("final")
    })
    .await;
    assert_eq!(
        device_row(&api, device).await.expect("row")["name"],
        json!("final")
    );
    edge.stop();
    links.shutdown();
}

/// Rotating an edge's secret or deleting the edge closes its live link at once; a
/// deleted edge's worker id is never issued again.
#[tokio::test]
async fn a_rotated_or_deleted_edge_secret_closes_the_live_link() {
    let center = spawn_center().await;
    let (proxy_a, proxy_b) = (proxy_to(&center).await, proxy_to(&center).await);
    let (a, a_id) = spawn_edge(&center, &proxy_a, "edge-rot").await;
    let (b, b_id) = spawn_edge(&center, &proxy_b, "edge-del").await;
    let (a_num, b_num) = (num(&a_id), num(&b_id));
    until(10, "both edges link up", async || {
        center.links.state(a_num).online && center.links.state(b_num).online
    })
    .await;

    let (status, _) = center
        .api
        .post(&format!("/api/v1/edges/{a_id}/secret"), json!({}))
        .await;
    assert_eq!(status, 200);
    until(5, "the rotated edge's link closes", async || {
        !center.links.state(a_num).online && !a.uplink.is_online()
    })
    .await;
    // It dials again with the old secret, and is refused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!center.links.state(a_num).online);

    let b_worker = center.api.get(&format!("/api/v1/edges/{b_id}")).await.1["data"]["worker_id"]
        .as_i64()
        .expect("worker");
    let (status, body) = center
        .api
        .delete(&format!("/api/v1/edges/{b_id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    until(5, "the deleted edge's link closes", async || {
        !center.links.state(b_num).online && !b.uplink.is_online()
    })
    .await;
    let (status, reg) = center
        .api
        .post("/api/v1/edges", json!({"name": "edge-new", "site": "new"}))
        .await;
    assert_eq!(status, 201, "{reg}");
    let new_worker = reg["data"]["worker_id"].as_i64().expect("worker");
    assert!(
        new_worker > b_worker,
        "worker {b_worker} is not issued again"
    );
    a.stop();
    b.stop();
    center.links.shutdown();
}

/// A flood of silent connections on the link endpoint holds nothing past the login
/// deadline and does not keep a real edge out; an oversized login frame is refused.
#[tokio::test]
async fn silent_link_connections_end_at_the_deadline_and_do_not_keep_edges_out() {
    let center = spawn_center().await;
    let mut silent = Vec::new();
    for n in 0..1_000u32 {
        let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (n % 60) as u8);
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::from((source, 0)))
            .expect("bind");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], center.link_port));
        silent.push(socket.connect(addr).await.expect("connect"));
    }
    let proxy = proxy_to(&center).await;
    let (edge, edge_id) = spawn_edge(&center, &proxy, "edge-flooded").await;
    let edge_num = num(&edge_id);
    until(10, "the real edge links up beside the flood", async || {
        center.links.state(edge_num).online
    })
    .await;

    let mut big = dial(&center).await;
    let oversized = format!(
        "{{\"type\":\"hello\",\"body\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(8_192)
    );
    let _ = futures_util::SinkExt::send(
        &mut big,
        tokio_tungstenite::tungstenite::Message::Text(oversized.into()),
    )
    .await;
    assert!(
        !matches!(recv(&mut big).await, Some(Ok(_))),
        "an oversized login frame gets no answer"
    );

    let closed = futures_util::future::join_all(silent.into_iter().map(|mut tcp| async move {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(
                Duration::from_secs(20),
                tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)
            )
            .await,
            Ok(Ok(0) | Err(_))
        )
    }))
    .await;
    assert!(
        closed.iter().all(|c| *c),
        "the center closed every silent connection"
    );
    let metrics = center.api.metrics().await;
    assert!(
        metrics.contains("federation_link_unauthenticated_open 0"),
        "nothing unauthenticated stays open"
    );
    assert!(metrics.contains("federation_link_unauthenticated_total{outcome=\"timed_out\"}"));
    assert!(
        center.links.state(edge_num).online,
        "the real edge stayed linked"
    );
    edge.stop();
    center.links.shutdown();
}

/// When the center moves a device to another edge, the old edge ends its session; the
/// device then logs in at its new home.
#[tokio::test]
async fn a_device_moved_to_another_edge_loses_its_session_at_the_old_one() {
    let center = spawn_center().await;
    let (proxy_x, proxy_y) = (proxy_to(&center).await, proxy_to(&center).await);
    let (x, x_id) = spawn_edge(&center, &proxy_x, "edge-x").await;
    let (y, y_id) = spawn_edge(&center, &proxy_y, "edge-y").await;
    let (device, secret) = homed_device(&center, &x, &x_id, "SN-MOVE").await;
    let mut session = crate::federation::logs_in(&x.site, &device, &secret)
        .await
        .expect("logs in at its home");
    let (status, _) = center
        .api
        .patch(
            &format!("/api/v1/devices/{device}"),
            json!({"edge_id": y_id}),
        )
        .await;
    assert_eq!(status, 200);
    while session.recv().await.is_some() {}
    until(10, "the device logs in at its new home", async || {
        crate::federation::logs_in(&y.site, &device, &secret)
            .await
            .is_some()
    })
    .await;
    x.stop();
    y.stop();
    center.links.shutdown();
}

/// An edge holds the center to the same clock bound: a change stamped too far ahead
/// is refused there, counted, and the link carries on.
#[tokio::test]
async fn an_edge_refuses_a_center_stamp_too_far_ahead_and_keeps_its_clock() {
    let center = spawn_center().await;
    let proxy = proxy_to(&center).await;
    let (edge, edge_id) = spawn_edge(&center, &proxy, "edge-skew").await;
    let (device, _) = homed_device(&center, &edge, &edge_id, "SN-SKEW").await;
    let device = num(&device);
    let far = stamp_at(fleet_store::now_ms() + 10 * 365 * 86_400_000, 1);
    sea_orm::ActiveModelTrait::insert(
        fleet_store::change_log::entry(
            "devices",
            device,
            far,
            false,
            fields(json!({"name": "from-the-future"})),
        ),
        &center.api.db().await,
    )
    .await
    .expect("log");
    let edge_db = edge.site.api.db().await;
    until(10, "the edge refuses it", async || {
        fleet_store::link_refusals::count(&edge_db, 1)
            .await
            .expect("count")
            == 1
    })
    .await;
    let (status, _) = center
        .api
        .patch(
            &format!("/api/v1/devices/{device}"),
            json!({"description": "later"}),
        )
        .await;
    assert_eq!(status, 200);
    until(10, "the link carries on", async || {
        device_row(&edge.site.api, device).await.expect("row")["description"] == json!("later")
    })
    .await;
    let row = device_row(&edge.site.api, device).await.expect("row");
    assert_ne!(row["name"], json!("from-the-future"));
    let (status, _) = edge
        .site
        .api
        .patch(
            &format!("/api/v1/devices/{device}"),
            json!({"description": "at-edge"}),
        )
        .await;
    assert_eq!(status, 200);
    let row = device_row(&edge.site.api, device).await.expect("row");
    let hlc = row["hlc"].as_i64().expect("hlc");
    assert!(
        physical_ms(hlc) < fleet_store::now_ms() + 60_000,
        "the edge's clock stayed put"
    );
    edge.stop();
    center.links.shutdown();
}

/// A device secret rotated at the center ends the device's session at its edge as soon
/// as the new hash arrives there; the old secret is refused, the new one logs in.
#[tokio::test]
async fn a_device_secret_rotated_at_the_center_closes_its_session_at_the_edge() {
    let center = spawn_center().await;
    let proxy = proxy_to(&center).await;
    let (edge, edge_id) = spawn_edge(&center, &proxy, "edge-rotd").await;
    let (device, secret) = homed_device(&center, &edge, &edge_id, "SN-ROTD").await;
    let mut session = crate::federation::logs_in(&edge.site, &device, &secret)
        .await
        .expect("logs in");
    let (status, rotated) = center
        .api
        .post(&format!("/api/v1/devices/{device}/secret"), json!({}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["data"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    while session.recv().await.is_some() {}
    assert!(crate::federation::logs_in(&edge.site, &device, &secret)
        .await
        .is_none());
    assert!(crate::federation::logs_in(&edge.site, &device, &new_secret)
        .await
        .is_some());
    edge.stop();
    center.links.shutdown();
}
