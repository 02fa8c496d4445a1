//! A real center and a real edge, linked over TLS through a fault proxy: rows written
//! at either end reach the other, and concurrent edits made while the link is cut
//! both survive once it is back, identically on both sides.

use std::sync::Arc;
use std::time::Duration;

use api_harness::fault_proxy::FaultProxy;
use fleet_store::devices;
use sea_orm::EntityTrait;
use serde_json::{json, Value};
use shared_proto::southbound::{CommandResult, Outcome, Pdu};

use crate::helpers::*;

pub(crate) struct Center {
    pub(crate) api: TestApp,
    pub(crate) node: Arc<fleet_node::Node>,
    pub(crate) links: Arc<center_cloud::link::Links>,
    pub(crate) link_port: u16,
}

pub(crate) async fn spawn_center() -> Center {
    let (dir, node) = test_settings(center_cloud::config::DEFAULTS).await;
    let mut settings = center_cloud::Settings {
        node,
        ..center_cloud::Settings::with_data_dir(dir.path())
    };
    settings.link_listen = "127.0.0.1:0".parse().expect("addr");
    settings.link_heartbeat = Duration::from_secs(1);
    let database_url = settings.node.database_url.clone();
    let center = center_cloud::Application::build(settings)
        .await
        .expect("center starts");
    Center {
        node: center.served.node.clone(),
        links: center.links.clone(),
        link_port: center.link_port,
        api: start(center.served, dir, database_url).await,
    }
}

/// A fault proxy in front of the center's link endpoint.
pub(crate) async fn proxy_to(center: &Center) -> FaultProxy {
    let upstream = format!("127.0.0.1:{}", center.link_port)
        .parse()
        .expect("addr");
    FaultProxy::start(upstream).await.expect("proxy")
}

pub(crate) struct Edge {
    pub(crate) site: TestEdge,
    pub(crate) hub: Arc<edge_cloud::hub::Hub>,
    pub(crate) uplink: Arc<edge_cloud::uplink::Uplink>,
}

impl Edge {
    pub(crate) fn stop(&self) {
        self.uplink.shutdown();
        self.hub.shutdown();
    }
}

/// Registers an edge at the center and starts it, linked through `proxy`.
pub(crate) async fn spawn_edge(center: &Center, proxy: &FaultProxy, name: &str) -> (Edge, String) {
    let url = format!("wss://localhost:{}/link", proxy.addr().port());
    spawn_edge_at(center, name, vec![url]).await
}

/// Registers an edge at the center and starts it, knowing the link URLs `urls`.
pub(crate) async fn spawn_edge_at(
    center: &Center,
    name: &str,
    urls: Vec<String>,
) -> (Edge, String) {
    spawn_edge_configured(center, name, urls, |_| {}).await
}

/// Registers an edge at the center and starts it, knowing the link URLs `urls`, with
/// `tweak` applied to its settings last.
pub(crate) async fn spawn_edge_configured(
    center: &Center,
    name: &str,
    urls: Vec<String>,
    tweak: impl FnOnce(&mut edge_cloud::Settings),
) -> (Edge, String) {
    let (status, reg) = center
        .api
        .post("/api/v1/edges", json!({"name": name, "site": name}))
        .await;
    assert_eq!(status, 201, "{reg}");
    let edge_id = reg["data"]["id"].as_str().expect("id").to_string();
    let (dir, mut node) = test_settings(edge_cloud::config::DEFAULTS).await;
    node.worker_id = reg["data"]["worker_id"].as_i64().expect("worker id");
    let mut settings = edge_cloud::Settings {
        node,
        ..edge_cloud::Settings::with_data_dir(dir.path())
    };
    settings.device_listen = "127.0.0.1:0".parse().expect("addr");
    settings.center = Some(edge_cloud::uplink::CenterLink {
        urls,
        api_urls: Vec::new(),
        edge_id: edge_id.parse().expect("numeric id"),
        secret: reg["data"]["secret"].as_str().expect("secret").into(),
        ca_file: Some(center.api.data_dir.join("tls/ca.crt")),
        heartbeat: Duration::from_secs(1),
        backoff_cap: Duration::from_millis(500),
    });
    tweak(&mut settings);
    let database_url = settings.node.database_url.clone();
    let edge_cloud::startup::Edge {
        served,
        hub,
        uplink,
        device_port,
        sessions,
        ..
    } = edge_cloud::Application::build(settings)
        .await
        .expect("edge starts");
    let node = served.node.clone();
    let api = start(served, dir, database_url).await;
    (
        Edge {
            site: TestEdge {
                api,
                device_port,
                sessions,
                hub: hub.clone(),
                node,
            },
            hub,
            uplink: uplink.expect("joined a center"),
        },
        edge_id,
    )
}

pub(crate) async fn until(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {secs} s");
}

pub(crate) async fn device_row(api: &TestApp, id: i64) -> Option<Value> {
    let db = api.db().await;
    devices::Entity::find_by_id(id)
        .one(&db)
        .await
        .expect("query")
        .map(|d| serde_json::to_value(d).expect("json"))
}

#[tokio::test]
async fn rows_flow_both_ways_and_concurrent_edits_merge_after_a_cut() {
    let center = spawn_center().await;
    let proxy = proxy_to(&center).await;
    let (edge, edge_id) = spawn_edge(&center, &proxy, "edge-a").await;
    let id_num: i64 = edge_id.parse().expect("id");
    until(10, "the edge links up", async || {
        center.links.state(id_num).online
    })
    .await;
    let (status, shown) = center.api.get(&format!("/api/v1/edges/{edge_id}")).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["data"]["link"]["online"], true, "{shown}");

    // Center -> edge: a device homed at this edge appears there.
    let mut body = device_json("gw-1", "SN-F1");
    body["edge_id"] = json!(edge_id);
    let (status, made) = center.api.post("/api/v1/devices", body).await;
    assert_eq!(status, 201, "{made}");
    let device: i64 = made["data"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("num");
    until(10, "the device reaches the edge", async || {
        device_row(&edge.site.api, device).await.is_some()
    })
    .await;

    // Edge -> center: an edit at the site reaches the center.
    let (status, _) = edge
        .site
        .api
        .patch(
            &format!("/api/v1/devices/{device}"),
            json!({"name": "renamed-at-edge"}),
        )
        .await;
    assert_eq!(status, 200);
    until(10, "the edit reaches the center", async || {
        device_row(&center.api, device)
            .await
            .is_some_and(|d| d["name"] == "renamed-at-edge")
    })
    .await;

    // Cut: both sides edit different fields of the same device, and the same field.
    proxy.cut();
    until(10, "the edge sees the cut", async || {
        !center.links.state(id_num).online
    })
    .await;
    let (status, _) = center
        .api
        .patch(
            &format!("/api/v1/devices/{device}"),
            json!({"software": {"version": "2.0.0"}, "name": "center-name"}),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (status, _) = edge
        .site
        .api
        .patch(
            &format!("/api/v1/devices/{device}"),
            json!({"status": "maintenance", "name": "edge-name-later"}),
        )
        .await;
    assert_eq!(status, 200);
    // A device created at the site while the center is away.
    let (status, local) = edge
        .site
        .api
        .post("/api/v1/devices", device_json("gw-2", "SN-F2"))
        .await;
    assert_eq!(status, 201, "{local}");
    let local: i64 = local["data"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("num");

    let (_, shown) = center.api.get("/api/v1/edges").await;
    assert_eq!(
        shown["data"]["items"][0]["link"]["online"], false,
        "{shown}"
    );
    assert!(
        shown["data"]["items"][0]["link"]["pending_to_edge"].as_i64() > Some(0),
        "the center's edit waits for the edge: {shown}"
    );

    proxy.restore();
    until(15, "both sides converge", async || {
        let (c, e) = (
            device_row(&center.api, device).await,
            device_row(&edge.site.api, device).await,
        );
        c.is_some() && c == e && device_row(&center.api, local).await.is_some()
    })
    .await;
    let merged = device_row(&center.api, device).await.expect("row");
    assert_eq!(
        merged["sw_version"], "2.0.0",
        "the center's field edit survived"
    );
    assert_eq!(
        merged["status"], "maintenance",
        "the edge's field edit survived"
    );
    assert_eq!(
        merged["name"], "edge-name-later",
        "the same field: the later write won"
    );
    assert_eq!(
        device_row(&center.api, local).await,
        device_row(&edge.site.api, local).await,
        "the device made at the site is the same at the center"
    );
    edge.stop();
    center.links.shutdown();
}

#[tokio::test]
async fn a_wrong_secret_gets_no_link() {
    let center = spawn_center().await;
    let proxy = proxy_to(&center).await;
    let (status, reg) = center
        .api
        .post("/api/v1/edges", json!({"name": "edge-x"}))
        .await;
    assert_eq!(status, 201);
    let mut link = edge_cloud::uplink::CenterLink {
        urls: vec![format!("wss://localhost:{}/link", proxy.addr().port())],
        api_urls: Vec::new(),
        edge_id: reg["data"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("num"),
        secret: "not-the-secret".into(),
        ca_file: Some(center.api.data_dir.join("tls/ca.crt")),
        heartbeat: Duration::from_secs(1),
        backoff_cap: Duration::from_millis(500),
    };
    let (dir, mut node) = test_settings(edge_cloud::config::DEFAULTS).await;
    node.worker_id = reg["data"]["worker_id"].as_i64().expect("worker");
    let mut settings = edge_cloud::Settings {
        node,
        ..edge_cloud::Settings::with_data_dir(dir.path())
    };
    settings.device_listen = "127.0.0.1:0".parse().expect("addr");
    settings.center = Some(link.clone());
    let edge = edge_cloud::Application::build(settings)
        .await
        .expect("edge starts");
    until(10, "the edge tried", async || proxy.accepted() >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id: i64 = link.edge_id;
    assert!(
        !center.links.state(id).online,
        "no link with a wrong secret"
    );
    assert!(edge.uplink.as_ref().is_some_and(|u| !u.is_online()));
    link.secret.clear();
    edge.uplink.iter().for_each(|u| u.shutdown());
    edge.hub.shutdown();
    center.links.shutdown();
    drop(dir);
}

/// Plays a device that answers every command it gets with "ran <name>".
pub(crate) async fn answer_commands(mut device: DeviceClient) {
    while let Some(env) = device.recv().await {
        if let Pdu::Command(c) = env.pdu {
            device
                .send(Pdu::CommandResult(CommandResult {
                    command_id: c.command_id,
                    outcome: Outcome::Succeeded,
                    exit_code: Some(0),
                    output: format!("ran {}", c.name.as_str()),
                    truncated: false,
                    error: None,
                    data: Value::Null,
                }))
                .await;
        }
    }
}

#[tokio::test]
async fn commands_from_the_center_reach_devices_at_their_edge_and_results_come_back() {
    let center = spawn_center().await;
    let proxy = proxy_to(&center).await;
    let (edge, edge_id) = spawn_edge(&center, &proxy, "edge-c").await;
    let id_num: i64 = edge_id.parse().expect("id");
    until(10, "the edge links up", async || {
        center.links.state(id_num).online
    })
    .await;
    let (device, secret) = homed_device(&center, &edge, &edge_id, "SN-C1").await;
    let device_num: i64 = device.parse().expect("num");

    // Online: the operator waits at the center for the result.
    let (client, _) = DeviceClient::login(&edge.site, &device, &secret).await;
    let answering = tokio::spawn(answer_commands(client));
    until(10, "the center shows the device online", async || {
        center.api.get(&format!("/api/v1/devices/{device}")).await.1["data"]["online"] == true
    })
    .await;
    let (status, done) = center
        .api
        .post(
            &format!("/api/v1/devices/{device}/commands"),
            json!({"name": "get_status", "timeout_s": 10, "wait": true}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["data"]["state"], "succeeded", "{done}");
    assert_eq!(done["data"]["result"]["output"], "ran get_status", "{done}");

    // A group command: the batch at the center counts the device's result.
    let group = center.api.group("fleet").await;
    let (status, _) = center
        .api
        .post(
            &format!("/api/v1/groups/{group}/devices"),
            json!({"device_ids": [device]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, batch) = center
        .api
        .post(
            &format!("/api/v1/groups/{group}/commands"),
            json!({"name": "get_status", "timeout_s": 10}),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    let batch = batch["data"]["batch_id"]
        .as_str()
        .expect("batch")
        .to_string();
    until(10, "the group command finished at the device", async || {
        center.api.get(&format!("/api/v1/batches/{batch}")).await.1["data"]["done"] == 1
    })
    .await;
    answering.abort();

    // Offline, with the link cut: queued at the center, run once both are back.
    until(10, "the device is gone", async || {
        !fleet_node::devices::Presence::is_online(edge.site.sessions.as_ref(), device_num)
    })
    .await;
    until(10, "the center shows the device offline", async || {
        center.api.get(&format!("/api/v1/devices/{device}")).await.1["data"]["online"] == false
    })
    .await;
    proxy.cut();
    let (status, queued) = center
        .api
        .post(
            &format!("/api/v1/devices/{device}/commands"),
            json!({"name": "reboot", "timeout_s": 60}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let command = queued["data"]["id"].as_str().expect("id").to_string();
    proxy.restore();
    let (client, _) = DeviceClient::login(&edge.site, &device, &secret).await;
    let answering = tokio::spawn(answer_commands(client));
    until(
        15,
        "the queued command ran and its result reached the center",
        async || {
            let (_, c) = center.api.get(&format!("/api/v1/commands/{command}")).await;
            c["data"]["state"] == "succeeded"
        },
    )
    .await;
    answering.abort();
    edge.stop();
    center.links.shutdown();
}

/// Logs in with a device's id and secret; whether the edge let it in.
pub(crate) async fn logs_in(edge: &TestEdge, device: &str, secret: &str) -> Option<DeviceClient> {
    let mut client = DeviceClient::connect(edge).await;
    client
        .send(Pdu::Login(shared_proto::southbound::Login {
            device_id: Some(device.into()),
            sn: None,
            model: None,
            secret: secret.into(),
            agent_version: "test".into(),
        }))
        .await;
    match client.recv().await {
        Some(env) if matches!(env.pdu, Pdu::LoginOk(_)) => Some(client),
        _ => None,
    }
}

#[tokio::test]
async fn a_device_at_another_edge_is_rehomed_by_the_center_and_refused_without_it() {
    let center = spawn_center().await;
    let (proxy_a, proxy_b) = (proxy_to(&center).await, proxy_to(&center).await);
    let (a, a_id) = spawn_edge(&center, &proxy_a, "edge-a").await;
    let (b, b_id) = spawn_edge(&center, &proxy_b, "edge-b").await;
    for id in [&a_id, &b_id] {
        let id: i64 = id.parse().expect("id");
        until(10, "the edges link up", async || {
            center.links.state(id).online
        })
        .await;
    }
    let mut registered = Vec::new();
    for sn in ["SN-R1", "SN-R2"] {
        let mut body = device_json(&format!("gw-{sn}"), sn);
        body["edge_id"] = json!(a_id);
        let (status, made) = center.api.post("/api/v1/devices", body).await;
        assert_eq!(status, 201, "{made}");
        let id = made["data"]["id"].as_str().expect("id").to_string();
        let secret = made["data"]["secret"].as_str().expect("secret").to_string();
        let num: i64 = id.parse().expect("num");
        until(10, "the device reaches its home edge", async || {
            device_row(&a.site.api, num).await.is_some()
        })
        .await;
        registered.push((id, num, secret));
    }
    let (roamer, roamer_num, roamer_secret) = &registered[0];

    // A wrong secret is refused by the center too, and nothing moves.
    assert!(logs_in(&b.site, roamer, "not-the-secret").await.is_none());
    assert_eq!(
        center.api.get(&format!("/api/v1/devices/{roamer}")).await.1["data"]["edge_id"],
        json!(a_id)
    );

    // With its own secret it gets in at b: the center moved it, a dropped it.
    let client = logs_in(&b.site, roamer, roamer_secret)
        .await
        .expect("the roaming device is let in at edge b");
    assert_eq!(
        center.api.get(&format!("/api/v1/devices/{roamer}")).await.1["data"]["edge_id"],
        json!(b_id),
        "the center re-homed the device"
    );
    until(10, "edge a drops the device that left", async || {
        device_row(&a.site.api, *roamer_num).await.is_none()
    })
    .await;
    until(10, "the center shows it online", async || {
        center.api.get(&format!("/api/v1/devices/{roamer}")).await.1["data"]["online"] == true
    })
    .await;
    let (_, events) = center.api.get("/api/v1/events?action=device.roamed").await;
    assert!(
        events.to_string().contains(roamer.as_str()),
        "the move is on record: {events}"
    );
    drop(client);

    // With the center out of reach, edge b refuses a device it does not hold.
    proxy_b.cut();
    until(10, "edge b sees the center gone", async || {
        !b.uplink.is_online()
    })
    .await;
    let (stayer, stayer_num, stayer_secret) = &registered[1];
    assert!(logs_in(&b.site, stayer, stayer_secret).await.is_none());
    assert!(device_row(&b.site.api, *stayer_num).await.is_none());
    // At home it still logs in.
    assert!(logs_in(&a.site, stayer, stayer_secret).await.is_some());
    a.stop();
    b.stop();
}

#[tokio::test]
async fn device_events_and_pulled_logs_reach_the_center() {
    let center = spawn_center().await;
    let proxy = proxy_to(&center).await;
    let (edge, edge_id) = spawn_edge(&center, &proxy, "edge-l").await;
    let (device, secret) = homed_device(&center, &edge, &edge_id, "SN-L1").await;
    let (mut client, _) = DeviceClient::login(&edge.site, &device, &secret).await;
    until(
        10,
        "the device's login event reaches the center",
        async || {
            let (_, events) = center
                .api
                .get(&format!(
                    "/api/v1/events?action=device.online&target_id={device}"
                ))
                .await;
            events["data"]["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        },
    )
    .await;

    let (status, pull) = center
        .api
        .post(
            &format!("/api/v1/devices/{device}/commands"),
            json!({"name": "pull_logs", "timeout_s": 30}),
        )
        .await;
    assert_eq!(status, 202, "{pull}");
    let command = pull["data"]["id"].as_str().expect("id").to_string();
    let target = loop {
        match client.recv().await.expect("command delivered").pdu {
            Pdu::Command(c) => break c.args["upload"].clone(),
            _ => continue,
        }
    };
    let path = target["path"].as_str().expect("path");
    let log = b"line one\nline two\n".to_vec();
    let res = edge
        .site
        .api
        .client
        .post(format!("{}{path}", edge.site.api.address))
        .basic_auth(&device, Some(&secret))
        .body(log.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 201);
    let mut at_center = Vec::new();
    until(10, "the log reaches the center", async || {
        let res = center
            .api
            .client
            .get(format!(
                "{}/api/v1/commands/{command}/logs",
                center.api.address
            ))
            .bearer_auth(&center.api.admin)
            .send()
            .await
            .expect("sent");
        if res.status().as_u16() != 200 {
            return false;
        }
        at_center = res.bytes().await.expect("body").to_vec();
        true
    })
    .await;
    assert_eq!(at_center, log);
    edge.stop();
}

#[tokio::test]
async fn an_edge_away_longer_than_the_log_keeps_catches_up_from_a_snapshot() {
    let center = spawn_center().await;
    let proxy = proxy_to(&center).await;
    let (edge, edge_id) = spawn_edge(&center, &proxy, "edge-s").await;
    let (_, elsewhere) = center
        .api
        .post(
            "/api/v1/edges",
            json!({"name": "edge-elsewhere", "site": "x"}),
        )
        .await;
    let elsewhere = elsewhere["data"]["id"].as_str().expect("id").to_string();
    let mut ids = Vec::new();
    for sn in ["SN-S1", "SN-S2"] {
        let mut body = device_json(&format!("gw-{sn}"), sn);
        body["edge_id"] = json!(edge_id);
        let (_, made) = center.api.post("/api/v1/devices", body).await;
        let id: i64 = made["data"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("num");
        until(10, "the device reaches the edge", async || {
            device_row(&edge.site.api, id).await.is_some()
        })
        .await;
        ids.push(id);
    }
    let (moving, deleted) = (ids[0], ids[1]);

    // Once the edge has acknowledged everything, compaction drops the log it has.
    let center_db = center.api.db().await;
    let head = fleet_store::sync::head(&center_db).await.expect("head");
    until(10, "the edge acknowledges the center's log", async || {
        fleet_store::link_cursors::Entity::find()
            .all(&center_db)
            .await
            .expect("cursors")
            .iter()
            .all(|c| c.acked >= head)
    })
    .await;
    let week = 7 * 24 * 3600 * 1000;
    assert!(
        fleet_store::sync::compact(&center_db, week)
            .await
            .expect("compact")
            > 0
    );
    assert_eq!(
        fleet_store::sync::horizon(&center_db)
            .await
            .expect("horizon"),
        head - 1,
        "everything but the newest entry went"
    );

    // While the edge is away: the center moves one device elsewhere, deletes the
    // other and registers a third; the site registers one of its own and edits the
    // one that moved, so its write and the move cross.
    proxy.cut();
    until(10, "the link is down", async || !edge.uplink.is_online()).await;
    let patched = center
        .api
        .patch(
            &format!("/api/v1/devices/{moving}"),
            json!({"edge_id": elsewhere}),
        )
        .await;
    assert_eq!(patched.0, 200, "{}", patched.1);
    assert_eq!(
        center
            .api
            .delete(&format!("/api/v1/devices/{deleted}"), None)
            .await
            .0,
        200
    );
    let mut body = device_json("gw-new", "SN-S3");
    body["edge_id"] = json!(edge_id);
    let (_, made) = center.api.post("/api/v1/devices", body).await;
    let arrived: i64 = made["data"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("num");
    let (status, local) = edge
        .site
        .api
        .post("/api/v1/devices", device_json("gw-site", "SN-S4"))
        .await;
    assert_eq!(status, 201, "{local}");
    let local: i64 = local["data"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("num");
    let (status, edited) = edge
        .site
        .api
        .patch(
            &format!("/api/v1/devices/{moving}"),
            json!({"description": "edited-at-site"}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    // The log of all that is gone too: the edge can only be caught up by a snapshot.
    fleet_store::sync::compact(&center_db, 0)
        .await
        .expect("compact");

    proxy.restore();
    until(15, "the edge catches up", async || {
        device_row(&edge.site.api, arrived).await.is_some()
            && device_row(&edge.site.api, moving).await.is_none()
            && device_row(&edge.site.api, deleted)
                .await
                .is_some_and(|d| d["deleted"] == true)
            && device_row(&center.api, local).await.is_some()
    })
    .await;
    for id in [arrived, deleted, local] {
        assert_eq!(
            device_row(&center.api, id).await,
            device_row(&edge.site.api, id).await,
            "device {id} is the same on both sides"
        );
    }
    let moved = device_row(&center.api, moving).await.expect("row");
    assert_ne!(
        moved["description"],
        json!("edited-at-site"),
        "the site's write was refused"
    );
    edge.stop();
    center.links.shutdown();
}

#[tokio::test]
async fn a_peer_that_remembers_more_of_a_log_than_it_holds_starts_over_from_snapshots() {
    let center = spawn_center().await;
    let proxy = proxy_to(&center).await;
    let (edge, edge_id) = spawn_edge(&center, &proxy, "edge-r").await;
    let mut body = device_json("gw-r", "SN-RS1");
    body["edge_id"] = json!(edge_id);
    let (_, made) = center.api.post("/api/v1/devices", body).await;
    let synced: i64 = made["data"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("num");
    until(10, "the device reaches the edge", async || {
        device_row(&edge.site.api, synced).await.is_some()
    })
    .await;
    proxy.cut();
    until(10, "the link is down", async || !edge.uplink.is_online()).await;
    let (status, local) = edge
        .site
        .api
        .post("/api/v1/devices", device_json("gw-after", "SN-RS2"))
        .await;
    assert_eq!(status, 201, "{local}");
    let local: i64 = local["data"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("num");
    // What the center holds after the edge's database went back in time: it remembers
    // positions of the edge's log past its end.
    let center_db = center.api.db().await;
    let edge_head = fleet_store::sync::head(&edge.site.api.db().await)
        .await
        .expect("head");
    let reg = center.api.get(&format!("/api/v1/edges/{edge_id}")).await.1;
    let worker = reg["data"]["worker_id"].as_i64().expect("worker id");
    fleet_store::link_cursors::set_applied(&center_db, worker, edge_head + 1_000)
        .await
        .expect("cursor");

    proxy.restore();
    until(
        15,
        "the edge's new device reaches the center anyway",
        async || device_row(&center.api, local).await.is_some(),
    )
    .await;
    assert_eq!(
        device_row(&center.api, local).await,
        device_row(&edge.site.api, local).await
    );
    until(
        10,
        "the center's cursor is back within the edge's log",
        async || {
            fleet_store::link_cursors::get(&center_db, worker)
                .await
                .expect("cursor")
                .applied
                <= edge_head + 100
        },
    )
    .await;
    edge.stop();
    center.links.shutdown();
}

/// Registers a device at the center, homed at `edge`, and waits for it there.
pub(crate) async fn homed_device(
    center: &Center,
    edge: &Edge,
    edge_id: &str,
    sn: &str,
) -> (String, String) {
    let mut body = device_json(&format!("gw-{sn}"), sn);
    body["edge_id"] = json!(edge_id);
    let (status, made) = center.api.post("/api/v1/devices", body).await;
    assert_eq!(status, 201, "{made}");
    let id = made["data"]["id"].as_str().expect("id").to_string();
    let secret = made["data"]["secret"].as_str().expect("secret").to_string();
    let num: i64 = id.parse().expect("num");
    until(10, "the device reaches its edge", async || {
        device_row(&edge.site.api, num).await.is_some()
    })
    .await;
    (id, secret)
}

#[tokio::test]
async fn the_center_commands_devices_on_two_edges_cancels_and_sees_expiry() {
    let center = spawn_center().await;
    let (proxy_a, proxy_b) = (proxy_to(&center).await, proxy_to(&center).await);
    let (a, a_id) = spawn_edge(&center, &proxy_a, "edge-ga").await;
    let (b, b_id) = spawn_edge(&center, &proxy_b, "edge-gb").await;
    let (on_a, secret_a) = homed_device(&center, &a, &a_id, "SN-GA").await;
    let (on_b, secret_b) = homed_device(&center, &b, &b_id, "SN-GB").await;
    let (away, _) = homed_device(&center, &a, &a_id, "SN-GAWAY").await;
    for (edge, device, secret) in [(&a, &on_a, &secret_a), (&b, &on_b, &secret_b)] {
        let (client, _) = DeviceClient::login(&edge.site, device, secret).await;
        tokio::spawn(answer_commands(client));
    }

    // A group over both edges: one batch, both results counted at the center.
    let group = center.api.group("both-sites").await;
    let (status, body) = center
        .api
        .post(
            &format!("/api/v1/groups/{group}/devices"),
            json!({"device_ids": [on_a, on_b]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, batch) = center
        .api
        .post(
            &format!("/api/v1/groups/{group}/commands"),
            json!({"name": "get_status", "timeout_s": 20}),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    let batch = batch["data"]["batch_id"]
        .as_str()
        .expect("batch")
        .to_string();
    until(15, "both edges' devices answered", async || {
        center.api.get(&format!("/api/v1/batches/{batch}")).await.1["data"]["done"] == 2
    })
    .await;
    let (_, view) = center.api.get(&format!("/api/v1/batches/{batch}")).await;
    assert_eq!(view["data"]["total"], 2, "{view}");

    // Cancelled at the center while the device is away: the edge learns it too.
    let (status, queued) = center
        .api
        .post(
            &format!("/api/v1/devices/{away}/commands"),
            json!({"name": "reboot", "timeout_s": 60}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let cancelled = queued["data"]["id"].as_str().expect("id").to_string();
    let (status, body) = center
        .api
        .post(&format!("/api/v1/commands/{cancelled}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "cancelled", "{body}");
    until(10, "the edge holds the command cancelled", async || {
        a.site
            .api
            .get(&format!("/api/v1/commands/{cancelled}"))
            .await
            .1["data"]["state"]
            == "cancelled"
    })
    .await;

    // Never delivered before its timeout: expired, as the center sees it.
    let (status, late) = center
        .api
        .post(
            &format!("/api/v1/devices/{away}/commands"),
            json!({"name": "get_status", "timeout_s": 1}),
        )
        .await;
    assert_eq!(status, 202, "{late}");
    let late = late["data"]["id"].as_str().expect("id").to_string();
    until(15, "the command expired", async || {
        center.api.get(&format!("/api/v1/commands/{late}")).await.1["data"]["state"] == "expired"
    })
    .await;
    let (status, listed) = center
        .api
        .get(&format!("/api/v1/devices/{away}/commands"))
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["data"]["items"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    a.stop();
    b.stop();
}
