//! Artifacts through the edge: fetched from the center once (resumed when the
//! transfer breaks), kept within the cache cap, and served to the site's devices
//! with their own credentials, only for an install of their own.

use std::time::Duration;

use api_harness::fault_proxy::FaultProxy;
use fleet_node::actor::{Actor, Role};
use fleet_node::commands::NewCommand;
use reqwest::Method;
use serde_json::{json, Value};
use shared_proto::southbound::{CommandName, Install, Pdu};

use crate::federation::{spawn_center, spawn_edge_configured, until, Center, Edge};
use crate::helpers::*;

/// A file of `len` bytes that differs from chunk to chunk.
pub(crate) fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 251) as u8).collect()
}

/// Uploads `body` at the center; answers the artifact as `GET` shows it (with its
/// signed manifest).
pub(crate) async fn stored(center: &Center, version: &str, body: Vec<u8>) -> Value {
    let (status, text) = center
        .api
        .raw(
            Method::POST,
            &format!("/api/v1/artifacts?name=firmware&version={version}"),
            Some(&center.api.admin),
            "application/octet-stream",
            body,
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let made: Value = serde_json::from_str(&text).expect("json");
    let id = made["data"]["id"].as_str().expect("id");
    let (status, shown) = center.api.get(&format!("/api/v1/artifacts/{id}")).await;
    assert_eq!(status, 200, "{shown}");
    shown["data"].clone()
}

/// An edge linked straight to the center, fetching artifacts at `api` (the center's
/// API, or a proxy in front of it), with a cache of `cap` bytes.
pub(crate) async fn edge_fetching_from(center: &Center, api: String, cap: u64) -> (Edge, String) {
    let link = format!("wss://localhost:{}/link", center.link_port);
    let api = reqwest::Url::parse(&api).expect("url");
    spawn_edge_configured(center, "site-a", vec![link], move |s| {
        if let Some(c) = s.center.as_mut() {
            c.api_urls = vec![api];
        }
        s.artifact_cache_bytes = cap;
    })
    .await
}

pub(crate) fn center_api(center: &Center) -> String {
    center.api.address.clone()
}

/// A device homed at `edge_id`, once it has reached the edge: its id and secret.
pub(crate) async fn device_at(
    center: &Center,
    edge: &Edge,
    edge_id: &str,
    sn: &str,
) -> (String, String) {
    let mut body = device_json("gw", sn);
    body["edge_id"] = json!(edge_id);
    let (status, made) = center.api.post("/api/v1/devices", body).await;
    assert_eq!(status, 201, "{made}");
    let id = made["data"]["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/devices/{id}");
    until(10, "the device reaches the edge", async || {
        edge.site.api.get(&path).await.0 == 200
    })
    .await;
    (id, made["data"]["secret"].as_str().expect("secret").into())
}

/// An install of `artifact` for `device`, made at the center as a rollout makes it,
/// once it has reached the edge.
async fn install(center: &Center, edge: &Edge, device: &str, artifact: &Value) {
    let args = Install {
        artifact_id: artifact["id"].as_str().expect("id").into(),
        version: artifact["version"].as_str().expect("version").into(),
        size: artifact["size"].as_u64().expect("size"),
        sha256: artifact["sha256"].as_str().expect("sha").into(),
        manifest: artifact["manifest"].as_str().expect("manifest").into(),
        signature: artifact["signature"].as_str().expect("signature").into(),
        download: None,
    };
    let admin = Actor {
        id: 0,
        username: "admin".into(),
        role: Role::Admin,
        groups: Vec::new(),
    };
    let device = device.parse().expect("numeric id");
    let made = fleet_node::commands::send(
        &center.node,
        &admin,
        device,
        &NewCommand::install(&args, 600),
    )
    .await
    .expect("install command made");
    let path = format!("/api/v1/commands/{}", made.id);
    until(10, "the install reaches the edge", async || {
        edge.site.api.get(&path).await.0 == 200
    })
    .await;
}

/// The install command as the device receives it.
pub(crate) async fn delivered_install(client: &mut DeviceClient) -> Install {
    loop {
        match client.recv().await.expect("command delivered").pdu {
            Pdu::Command(c) if c.name == CommandName::Install => {
                return serde_json::from_value(c.args).expect("install args")
            }
            _ => continue,
        }
    }
}

struct Got {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

async fn get(edge: &Edge, path: &str, user: &str, secret: &str, range: Option<&str>) -> Got {
    let mut req = edge
        .site
        .api
        .client
        .get(format!("{}{path}", edge.site.api.address))
        .basic_auth(user, Some(secret));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let res = req.send().await.expect("sent");
    Got {
        status: res.status().as_u16(),
        retry_after: res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: res.bytes().await.expect("body").to_vec(),
    }
}

/// Asks until the edge has the file (503 meanwhile, with `Retry-After`).
pub(crate) async fn download(edge: &Edge, path: &str, user: &str, secret: &str) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = get(edge, path, user, secret, None).await;
        match got.status {
            200 => return got.body,
            503 => {
                assert!(got.retry_after.is_some(), "a 503 says when to come back");
                assert!(tokio::time::Instant::now() < deadline, "never fetched");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other}: {}", String::from_utf8_lossy(&got.body)),
        }
    }
}

#[tokio::test]
async fn devices_download_what_their_edge_fetched_once_and_only_for_their_installs() {
    let center = spawn_center().await;
    let (edge, edge_id) = edge_fetching_from(&center, center_api(&center), 64 << 20).await;
    let content = file(3_000_000);
    let artifact = stored(&center, "2.0.0", content.clone()).await;
    let artifact_id = artifact["id"].as_str().expect("id").to_string();
    let (one, one_secret) = device_at(&center, &edge, &edge_id, "SN-ART-1").await;
    let (two, two_secret) = device_at(&center, &edge, &edge_id, "SN-ART-2").await;
    let (idle, idle_secret) = device_at(&center, &edge, &edge_id, "SN-ART-3").await;
    let (mut client, _) = DeviceClient::login(&edge.site, &one, &one_secret).await;
    install(&center, &edge, &one, &artifact).await;
    install(&center, &edge, &two, &artifact).await;

    let delivered = delivered_install(&mut client).await;
    assert_eq!(delivered.artifact_id, artifact_id);
    assert_eq!(
        delivered.manifest,
        artifact["manifest"].as_str().expect("m")
    );
    let download_at = delivered.download.expect("the edge says where to download");
    let path = format!("/api/v1/artifacts/{artifact_id}/content");
    assert_eq!(download_at.path, path);
    assert_eq!(download_at.scheme, "https");
    let site_port = edge.site.api.address.rsplit(':').next().expect("port");
    assert_eq!(download_at.port.to_string(), site_port);

    assert!(download(&edge, &path, &one, &one_secret).await == content);
    let tail = get(&edge, &path, &one, &one_secret, Some("bytes=2999000-")).await;
    assert_eq!(tail.status, 206);
    assert!(tail.body == content[2_999_000..], "the range resumes");
    let past = get(&edge, &path, &one, &one_secret, Some("bytes=3000000-")).await;
    assert_eq!(past.status, 416);
    assert!(download(&edge, &path, &two, &two_secret).await == content);
    assert_eq!(
        edge.site.metric("artifact_fetched_bytes_total").await,
        3_000_000,
        "fetched once for both devices"
    );
    assert_eq!(
        edge.site.metric("artifact_served_bytes_total").await,
        3_000_000 * 2 + 1000
    );

    // Who may not: a device with no install of it, a wrong secret, no credentials.
    assert_eq!(
        get(&edge, &path, &idle, &idle_secret, None).await.status,
        404
    );
    assert_eq!(
        get(&edge, &path, &one, "not-the-secret", None).await.status,
        401
    );
    let bare = edge
        .site
        .api
        .client
        .get(format!("{}{path}", edge.site.api.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(bare.status(), 401);
    // An operator's token is not a device's credentials.
    let operator = edge
        .site
        .api
        .client
        .get(format!("{}{path}", edge.site.api.address))
        .bearer_auth(&edge.site.api.admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(operator.status(), 401);
    let bad_id = get(
        &edge,
        "/api/v1/artifacts/x1/content",
        &one,
        &one_secret,
        None,
    )
    .await;
    assert_eq!(bad_id.status, 400);
}

#[tokio::test]
async fn a_fetch_cut_mid_transfer_resumes_where_it_stopped() {
    let center = spawn_center().await;
    let port: u16 = center
        .api
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the center's port");
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = FaultProxy::start(upstream).await.expect("proxy");
    let api = format!("https://localhost:{}", proxy.addr().port());
    let (edge, edge_id) = edge_fetching_from(&center, api, 64 << 20).await;
    let content = file(4_000_000);
    let artifact = stored(&center, "3.0.0", content.clone()).await;
    let artifact_id = artifact["id"].as_str().expect("id").to_string();
    let (device, secret) = device_at(&center, &edge, &edge_id, "SN-ART-R").await;
    install(&center, &edge, &device, &artifact).await;

    proxy.cut_after(1_500_000);
    let path = format!("/api/v1/artifacts/{artifact_id}/content");
    assert!(download(&edge, &path, &device, &secret).await == content);
    assert!(proxy.accepted() >= 2, "the fetch reconnected after the cut");
    assert_eq!(
        edge.site.metric("artifact_fetched_bytes_total").await,
        4_000_000,
        "the bytes before the cut were kept, not fetched again"
    );
    assert_eq!(
        edge.site
            .metric("artifact_fetches_total{outcome=\"ok\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn the_cache_keeps_to_its_cap_and_refuses_what_cannot_fit() {
    let center = spawn_center().await;
    let (edge, edge_id) = edge_fetching_from(&center, center_api(&center), 2_500_000).await;
    let (device, secret) = device_at(&center, &edge, &edge_id, "SN-ART-C").await;
    let first = stored(&center, "1.0.0", file(1_500_000)).await;
    let second = stored(&center, "1.1.0", file(1_400_000)).await;
    let huge = stored(&center, "9.0.0", file(2_600_000)).await;
    for artifact in [&first, &second, &huge] {
        install(&center, &edge, &device, artifact).await;
    }
    let path = |a: &Value| {
        format!(
            "/api/v1/artifacts/{}/content",
            a["id"].as_str().expect("id")
        )
    };
    download(&edge, &path(&first), &device, &secret).await;
    download(&edge, &path(&second), &device, &secret).await;
    assert_eq!(
        edge.site.metric("artifact_cache_bytes").await,
        1_400_000,
        "the first went to make room for the second"
    );
    let cached = |a: &Value| {
        edge.site
            .api
            .data_dir
            .join("artifacts")
            .join(a["id"].as_str().expect("id"))
    };
    assert!(!cached(&first).exists() && cached(&second).exists());

    let refused = loop {
        let got = get(&edge, &path(&huge), &device, &secret, None).await;
        let body: Value = serde_json::from_slice(&got.body).unwrap_or(Value::Null);
        if body["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not fetch"))
        {
            break (got.status, body);
        }
        assert_eq!(got.status, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.0, 503);
    let message = refused.1["message"].as_str().expect("message");
    assert!(message.contains("artifact_cache_bytes"), "{message}");
    assert!(cached(&second).exists(), "nothing was evicted for it");
}
