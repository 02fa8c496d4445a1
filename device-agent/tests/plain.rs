//! The agent over plain WebSocket (`ws://`) against an edge started like
//! `edge-cloud serve --insecure-http`: no TLS anywhere, so no CA file either.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use api_harness::*;
use device_agent::config::{AgentConfig, ConfigError};
use device_agent::fleet::{FleetError, Simulation};
use device_agent::link::{Agent, End};
use serde_json::json;

struct Site {
    api: TestApp,
    device_port: u16,
}

/// An edge whose site API and device endpoint both speak plain TCP.
async fn spawn_plain_edge() -> Site {
    let (dir, mut node) = test_settings(edge_cloud::config::DEFAULTS).await;
    // Resolved the way the command line resolves `--insecure-http`.
    let mut flags = edge_cloud::config::ServeArgs::default();
    flags.node.insecure_http = Some(true);
    node.tls = edge_cloud::Settings::resolve(flags)
        .expect("settings")
        .node
        .tls;
    let mut settings = edge_cloud::Settings {
        node,
        ..edge_cloud::Settings::with_data_dir(dir.path())
    };
    settings.device_listen = "127.0.0.1:0".parse().expect("addr");
    let database_url = settings.node.database_url.clone();
    let edge = edge_cloud::Application::build(settings)
        .await
        .expect("edge starts");
    let device_port = edge.device_port;
    let api = start(edge.served, dir, database_url).await;
    assert!(api.address.starts_with("http://"), "{}", api.address);
    Site { api, device_port }
}

impl Site {
    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/devices", self.device_port)
    }

    async fn online(&self, id: &str) -> bool {
        for _ in 0..200 {
            let (_, body) = self.api.get(&format!("/api/v1/devices/{id}")).await;
            if body["data"]["online"] == json!(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn get_status(&self, id: &str) -> serde_json::Value {
        let (status, answer) = self
            .api
            .post(
                &format!("/api/v1/devices/{id}/commands"),
                json!({"name": "get_status", "args": {}, "timeout_s": 10, "wait": true}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["data"].clone()
    }
}

/// An agent configuration as a device would write it, loaded through the file path.
fn load(dir: &Path, toml: &str) -> Result<AgentConfig, ConfigError> {
    let path = dir.join("agent.toml");
    std::fs::write(&path, toml).expect("config written");
    AgentConfig::load(&path)
}

/// Runs an agent until device `id` is online at the site and has answered a
/// `get_status`, then stops it.
async fn runs_a_command_then_stops(site: &Site, config: AgentConfig, id: &str) {
    let agent = Agent::new(config).expect("agent");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(agent.run(stopped));
    assert!(site.online(id).await, "device {id} is online at the edge");
    let c = site.get_status(id).await;
    assert_eq!(c["state"], "succeeded", "{c}");
    let _ = stop.send(true);
    let end = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the agent stops")
        .expect("task");
    assert_eq!(end, End::Shutdown);
}

#[tokio::test]
async fn an_agent_logs_in_over_plain_websocket_without_a_ca() {
    let site = spawn_plain_edge().await;
    let d = site.api.device("plain-1", "SN-P1").await;
    let id = d["id"].as_str().expect("id");
    let dir = tempfile::tempdir().expect("dir");
    let config = load(
        dir.path(),
        &format!(
            "device_id = {id:?}\nsecret = {:?}\nedges = [{:?}]\nca_file = \"\"\nreport_interval_s = 1\nstate_dir = {:?}\n",
            d["secret"].as_str().expect("secret"),
            site.ws_url(),
            dir.path().join("state"),
        ),
    )
    .expect("a ws:// edge needs no CA file");
    runs_a_command_then_stops(&site, config, id).await;
}

#[tokio::test]
async fn an_agent_logs_in_by_serial_number_and_model_and_learns_its_id() {
    let site = spawn_plain_edge().await;
    let d = site.api.device("by-sn", "SN-BY-SN").await;
    let id = d["id"].as_str().expect("id");
    let dir = tempfile::tempdir().expect("dir");
    let config = load(
        dir.path(),
        &format!(
            "sn = \"SN-BY-SN\"\nmodel = \"Raspberry Pi 4\"\nsecret = {:?}\nedges = [{:?}]\nca_file = \"\"\nstate_dir = {:?}\n",
            d["secret"].as_str().expect("secret"),
            site.ws_url(),
            dir.path().join("state"),
        ),
    )
    .expect("sn and model stand for the device id");
    runs_a_command_then_stops(&site, config, id).await;

    // One identity, whole: an id and a serial number together, or half of the pair,
    // is refused and names the field.
    for (toml, field) in [
        (
            "device_id = \"1\"\nsn = \"S\"\nmodel = \"M\"\n",
            "device_id",
        ),
        ("sn = \"S\"\n", "model"),
        ("model = \"M\"\n", "sn"),
        ("", "device_id"),
    ] {
        let text =
            format!("{toml}secret = \"s\"\nedges = [\"ws://edge:9444/devices\"]\nca_file = \"\"\n");
        match load(dir.path(), &text) {
            Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{toml}"),
            other => panic!("{toml}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn simulated_devices_log_in_over_plain_websocket_from_several_sources() {
    let site = spawn_plain_edge().await;
    let mut devices = Vec::new();
    for i in 0..6 {
        let d = site
            .api
            .device(&format!("sim-{i}"), &format!("SN-S{i}"))
            .await;
        devices.push((
            d["id"].as_str().expect("id").to_string(),
            d["secret"].as_str().expect("secret").to_string(),
        ));
    }
    let ids: Vec<String> = devices.iter().map(|(id, _)| id.clone()).collect();
    let simulation = Simulation {
        edges: vec![site.ws_url()],
        ca_file: None,
        report_interval_s: 1,
        source_ips: ["127.0.0.2", "127.0.0.3"]
            .iter()
            .map(|ip| ip.parse().expect("ip"))
            .collect(),
        install_fail_pct: 0,
        update_public_key: None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(simulation.run(devices, stopped));
    for id in &ids {
        assert!(site.online(id).await, "device {id} is online");
    }
    let c = site.get_status(&ids[5]).await;
    assert_eq!(c["state"], "succeeded", "{c}");
    assert_eq!(
        c["result"]["data"]["memory_total_bytes"],
        1024 * 1024 * 1024
    );
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the simulator stops")
        .expect("task")
        .expect("ran");
}

#[tokio::test]
async fn simulated_devices_connect_from_the_given_source_addresses_in_turn() {
    // A bare listener instead of an edge: only where the connections come from matters.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let sources: Vec<IpAddr> = ["127.0.0.5", "127.0.0.6"]
        .iter()
        .map(|ip| ip.parse().expect("ip"))
        .collect();
    let simulation = Simulation {
        edges: vec![format!("ws://127.0.0.1:{port}/devices")],
        ca_file: None,
        report_interval_s: 30,
        source_ips: sources.clone(),
        install_fail_pct: 0,
        update_public_key: None,
    };
    let devices = (0..4).map(|i| (format!("{i}"), "secret".to_string()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(simulation.run(devices.collect(), stopped));
    let mut seen = Vec::new();
    let mut held = Vec::new();
    while seen.len() < 4 {
        let (tcp, peer) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("each device connects within 10 s")
            .expect("accepted");
        seen.push(peer.ip());
        held.push(tcp);
    }
    for source in &sources {
        assert_eq!(
            seen.iter().filter(|ip| *ip == source).count(),
            2,
            "{seen:?}"
        );
    }
    let _ = stop.send(true);
    drop(held);
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("the simulator stops")
        .expect("task")
        .expect("ran");
}

#[test]
fn edge_urls_must_be_ws_or_wss_and_tls_needs_a_ca() {
    let dir = tempfile::tempdir().expect("dir");
    let with = |edges: &str, ca: &str| {
        load(
            dir.path(),
            &format!("device_id = \"1\"\nsecret = \"s\"\nedges = [{edges}]\nca_file = {ca:?}\n"),
        )
    };
    match with("\"ftp://127.0.0.1:9444/devices\"", "ca.crt") {
        Err(ConfigError::Invalid { field, message }) => {
            assert_eq!(field, "edges");
            assert!(message.contains("ftp://"), "{message}");
        }
        other => panic!("an ftp:// edge is refused naming edges: {other:?}"),
    }
    match with("\"wss://127.0.0.1:9444/devices\"", "") {
        Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "ca_file"),
        other => panic!("a wss:// edge without a CA is refused naming ca_file: {other:?}"),
    }
    with("\"ws://127.0.0.1:9444/devices\"", "").expect("ws:// without a CA");
    with(
        "\"wss://127.0.0.1:9444/devices\", \"ws://127.0.0.2:9444/devices\"",
        "ca.crt",
    )
    .expect("TLS and plain edges side by side");
}

#[tokio::test]
async fn the_simulator_refuses_a_bad_edge_url_naming_the_field() {
    let simulation = Simulation {
        edges: vec!["ftp://127.0.0.1:9444/devices".into()],
        ca_file: None,
        report_interval_s: 30,
        source_ips: Vec::new(),
        install_fail_pct: 0,
        update_public_key: None,
    };
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let refused = simulation
        .run(vec![("1".into(), "secret".into())], stopped)
        .await;
    match refused {
        Err(FleetError::Config(ConfigError::Invalid { field, .. })) => assert_eq!(field, "edges"),
        other => panic!("refused naming edges: {other:?}"),
    }
}
