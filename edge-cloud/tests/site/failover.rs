//! Two center replicas over one database, and an edge that knows both link URLs:
//! when the replica it is linked to goes away it links to the other, and changes keep
//! flowing both ways through the shared database.

use std::time::Duration;

use api_harness::fault_proxy::FaultProxy;
use serde_json::json;

use crate::federation::{device_row, proxy_to, spawn_center, until, Center, Edge};
use crate::helpers::*;

/// A second center process over the first one's database and data directory, so both
/// serve the same development CA, as replicas started the same way would.
async fn spawn_replica(first: &Center) -> Center {
    let (dir, mut node) = test_settings(center_cloud::config::DEFAULTS).await;
    node.database_url = first.api.database_url.clone();
    node.data_dir = first.api.data_dir.clone();
    let mut settings = center_cloud::Settings {
        node,
        ..center_cloud::Settings::with_data_dir(&first.api.data_dir)
    };
    settings.link_listen = "127.0.0.1:0".parse().expect("addr");
    settings.link_heartbeat = Duration::from_secs(1);
    let database_url = settings.node.database_url.clone();
    let center = center_cloud::Application::build(settings)
        .await
        .expect("the replica starts");
    Center {
        node: center.served.node.clone(),
        links: center.links.clone(),
        link_port: center.link_port,
        api: start(center.served, dir, database_url).await,
    }
}

fn link_url(proxy: &FaultProxy) -> String {
    format!("wss://localhost:{}/link", proxy.addr().port())
}

/// Registers an edge (through the first center) that knows every URL in `urls`.
async fn spawn_edge_with_urls(center: &Center, urls: Vec<String>) -> (Edge, i64) {
    let (edge, id) = crate::federation::spawn_edge_at(center, "edge-f", urls).await;
    (edge, id.parse().expect("numeric id"))
}

fn id_of(made: &serde_json::Value) -> i64 {
    made["data"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("numeric id")
}

#[tokio::test]
async fn an_edge_fails_over_to_another_center_replica() {
    let first = spawn_center().await;
    let second = spawn_replica(&first).await;
    let (proxy_a, proxy_b) = (proxy_to(&first).await, proxy_to(&second).await);
    let (url_a, url_b) = (link_url(&proxy_a), link_url(&proxy_b));
    let (edge, edge_id) = spawn_edge_with_urls(&first, vec![url_a.clone(), url_b.clone()]).await;

    until(10, "the edge links to the first URL", async || {
        edge.uplink.center_url() == Some(url_a.as_str()) && first.links.state(edge_id).online
    })
    .await;

    // The first replica's link endpoint goes away: the edge moves to the second.
    first.links.shutdown();
    until(30, "the edge links to the second replica", async || {
        edge.uplink.center_url() == Some(url_b.as_str()) && second.links.state(edge_id).online
    })
    .await;

    let metrics = edge.site.api.metrics().await;
    for (url, up) in [(&url_a, 0), (&url_b, 1)] {
        let line = format!("center_link_up{{url=\"{url}\"}} {up}");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }

    // Edge -> shared database, through the second replica.
    let (status, made) = edge
        .site
        .api
        .post("/api/v1/devices", device_json("gw-f1", "SN-FO1"))
        .await;
    assert_eq!(status, 201, "{made}");
    let at_edge = id_of(&made);
    until(
        15,
        "the site's device reaches the shared database",
        async || device_row(&first.api, at_edge).await.is_some(),
    )
    .await;

    // Second replica -> edge.
    let mut body = device_json("gw-f2", "SN-FO2");
    body["edge_id"] = json!(edge_id.to_string());
    let (status, made) = second.api.post("/api/v1/devices", body).await;
    assert_eq!(status, 201, "{made}");
    let at_center = id_of(&made);
    until(15, "the replica's device reaches the edge", async || {
        device_row(&edge.site.api, at_center).await.is_some()
    })
    .await;

    edge.stop();
    second.links.shutdown();
}

#[tokio::test]
async fn a_dead_first_url_does_not_keep_the_edge_from_the_next() {
    let center = spawn_center().await;
    let (dead, live) = (proxy_to(&center).await, proxy_to(&center).await);
    dead.cut();
    let live_url = link_url(&live);
    let (edge, edge_id) =
        spawn_edge_with_urls(&center, vec![link_url(&dead), live_url.clone()]).await;
    until(10, "the edge links through the second URL", async || {
        edge.uplink.center_url() == Some(live_url.as_str()) && center.links.state(edge_id).online
    })
    .await;
    assert!(dead.accepted() >= 1, "the first URL was tried");
    edge.stop();
    center.links.shutdown();
}

/// A command made through one replica reaches a device whose edge is linked to the
/// other (its commit wakes that replica's link through the shared log), and the
/// caller waiting on the first replica gets the result the other one merged.
#[tokio::test]
async fn a_command_through_one_replica_reaches_an_edge_linked_to_the_other() {
    let first = spawn_center().await;
    let second = spawn_replica(&first).await;
    let proxy = proxy_to(&second).await;
    let (edge, edge_id) = spawn_edge_with_urls(&first, vec![link_url(&proxy)]).await;
    let (device, secret) =
        crate::federation::homed_device(&first, &edge, &edge_id.to_string(), "SN-REPL").await;
    let (client, _) = DeviceClient::login(&edge.site, &device, &secret).await;
    tokio::spawn(crate::federation::answer_commands(client));
    // The call may wait an hour; it must come back with the result long before.
    let path = format!("/api/v1/devices/{device}/commands");
    let call = first.api.post(
        &path,
        json!({"name": "get_status", "wait": true, "timeout_s": 3600}),
    );
    let (status, done) = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the waiting caller is answered when the other replica merges the result");
    assert_eq!(status, 200, "answered with the result: {done}");
    assert_eq!(done["data"]["state"], json!("succeeded"), "{done}");
    edge.stop();
    first.links.shutdown();
    second.links.shutdown();
}

/// The edge's link state is the same through every replica: the one holding the link
/// and the other read it from the link lease in the shared database.
#[tokio::test]
async fn every_replica_shows_the_link_the_other_holds() {
    let first = spawn_center().await;
    let second = spawn_replica(&first).await;
    let (proxy_a, proxy_b) = (proxy_to(&first).await, proxy_to(&second).await);
    let (edge, edge_id) =
        spawn_edge_with_urls(&first, vec![link_url(&proxy_a), link_url(&proxy_b)]).await;
    let online_through = async |center: &Center| {
        center.api.get(&format!("/api/v1/edges/{edge_id}")).await.1["data"]["link"]["online"]
            == json!(true)
    };
    until(10, "the edge links to the first replica", async || {
        first.links.state(edge_id).online
    })
    .await;
    assert!(
        online_through(&second).await,
        "the other replica sees the link"
    );
    assert!(!second.links.state(edge_id).online);
    first.links.shutdown();
    until(
        10,
        "the edge fails over to the second replica",
        async || second.links.state(edge_id).online,
    )
    .await;
    assert!(online_through(&first).await, "and the first sees it there");
    edge.stop();
    second.links.shutdown();
}

/// Who is online is the same through every replica: the one holding the edge's link
/// writes what the edge's live view says, and the other reads it; when the device
/// leaves, both show it offline.
#[tokio::test]
async fn every_replica_shows_which_devices_are_online_at_an_edge_the_other_holds() {
    let first = spawn_center().await;
    let second = spawn_replica(&first).await;
    let proxy = proxy_to(&second).await;
    let (edge, edge_id) = spawn_edge_with_urls(&first, vec![link_url(&proxy)]).await;
    let (device, secret) =
        crate::federation::homed_device(&first, &edge, &edge_id.to_string(), "SN-LIVE").await;
    let online_through = async |center: &Center| {
        center.api.get(&format!("/api/v1/devices/{device}")).await.1["data"]["online"].clone()
    };
    assert_eq!(
        online_through(&first).await,
        json!(false),
        "not connected yet"
    );

    let (client, _) = DeviceClient::login(&edge.site, &device, &secret).await;
    until(15, "the holder sees the device online", async || {
        online_through(&second).await == json!(true)
    })
    .await;
    until(15, "the other replica sees it online too", async || {
        online_through(&first).await == json!(true)
    })
    .await;

    drop(client);
    until(15, "the other replica sees it leave", async || {
        online_through(&first).await == json!(false)
    })
    .await;
    assert_eq!(online_through(&second).await, json!(false));
    edge.stop();
    first.links.shutdown();
    second.links.shutdown();
}
