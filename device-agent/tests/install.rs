//! `install` end to end: a real center and edge (in this process), real agent
//! processes with install hooks, rollouts made through the center's API. The agent
//! verifies the signed manifest, downloads from its edge, runs its hook, restarts
//! when the hook asks and confirms by the version file, rolls back a failed
//! install, and refuses an artifact its key does not verify.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use api_harness::*;
use reqwest::Method;
use serde_json::{json, Value};

struct Federation {
    center: TestApp,
    edge: TestApp,
    edge_id: String,
    device_port: u16,
    _links: std::sync::Arc<center_cloud::link::Links>,
}

async fn federation() -> Federation {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (dir, node) = test_settings(center_cloud::config::DEFAULTS).await;
    let mut settings = center_cloud::Settings {
        node,
        ..center_cloud::Settings::with_data_dir(dir.path())
    };
    settings.link_listen = "127.0.0.1:0".parse().expect("addr");
    settings.link_heartbeat = Duration::from_secs(1);
    let url = settings.node.database_url.clone();
    let built = center_cloud::Application::build(settings)
        .await
        .expect("center starts");
    let (link_port, links) = (built.link_port, built.links.clone());
    let center = start(built.served, dir, url).await;

    let (status, reg) = center.post("/api/v1/edges", json!({"name": "site"})).await;
    assert_eq!(status, 201, "{reg}");
    let edge_id = reg["data"]["id"].as_str().expect("id").to_string();
    let (dir, mut node) = test_settings(edge_cloud::config::DEFAULTS).await;
    node.worker_id = reg["data"]["worker_id"].as_i64().expect("worker");
    let mut settings = edge_cloud::Settings {
        node,
        ..edge_cloud::Settings::with_data_dir(dir.path())
    };
    settings.device_listen = "127.0.0.1:0".parse().expect("addr");
    settings.center = Some(edge_cloud::uplink::CenterLink {
        urls: vec![format!("wss://localhost:{link_port}/link")],
        api_urls: vec![reqwest::Url::parse(&center.address).expect("url")],
        edge_id: edge_id.parse().expect("id"),
        secret: reg["data"]["secret"].as_str().expect("secret").into(),
        ca_file: Some(center.data_dir.join("tls/ca.crt")),
        heartbeat: Duration::from_secs(1),
        backoff_cap: Duration::from_millis(500),
    });
    let url = settings.node.database_url.clone();
    let built = edge_cloud::Application::build(settings)
        .await
        .expect("edge starts");
    let device_port = built.device_port;
    let edge = start(built.served, dir, url).await;
    Federation {
        center,
        edge,
        edge_id,
        device_port,
        _links: links,
    }
}

/// A device agent process, killed when dropped.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A device of the site with a real agent whose hooks live in `dir`.
struct Device {
    id: String,
    dir: PathBuf,
    _agent: AgentProcess,
    _kept: tempfile::TempDir,
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A device whose install hook copies the file and writes the version file, then
/// exits with `exit` (100 asks for a restart); its rollback hook leaves a mark.
async fn device(f: &Federation, sn: &str, key: &str, exit: i32) -> Device {
    let mut body = device_json("gw", sn);
    body["edge_id"] = json!(f.edge_id);
    let (status, made) = f.center.post("/api/v1/devices", body).await;
    assert_eq!(status, 201, "{made}");
    let id = made["data"]["id"].as_str().expect("id").to_string();
    let secret = made["data"]["secret"].as_str().expect("secret");
    let kept = tempfile::tempdir().expect("dir");
    let dir = kept.path().to_path_buf();
    let d = dir.display();
    script(
        &dir.join("install.sh"),
        &format!("echo \"installing $2\"\ncp \"$1\" {d}/installed.bin\necho \"$2\" > {d}/version\nexit {exit}"),
    );
    script(
        &dir.join("rollback.sh"),
        &format!("echo \"rolling back $1\"\necho \"$1\" > {d}/rolled-back"),
    );
    std::fs::write(dir.join("version"), "1.0.0\n").expect("version");
    let config = format!(
        "device_id = \"{id}\"\nsecret = \"{secret}\"\nedges = [\"wss://localhost:{}/devices\"]\n\
         ca_file = \"{}\"\nreport_interval_s = 1\nstate_dir = \"{d}/state\"\n\
         update_public_key = \"{key}\"\ninstall_hook = \"{d}/install.sh\"\n\
         rollback_hook = \"{d}/rollback.sh\"\nsoftware_version_file = \"{d}/version\"\n",
        f.device_port,
        f.edge.data_dir.join("tls/ca.crt").display(),
    );
    std::fs::write(dir.join("agent.toml"), config).expect("config");
    let agent = std::process::Command::new(env!("CARGO_BIN_EXE_device-agent"))
        .args(["run", "--config"])
        .arg(dir.join("agent.toml"))
        .env("AGENT_LOG", "warn")
        .spawn()
        .expect("agent starts");
    let path = format!("/api/v1/devices/{id}");
    for _ in 0..200 {
        if f.edge.get(&path).await.1["data"]["online"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Device {
        id,
        dir,
        _agent: AgentProcess(agent),
        _kept: kept,
    }
}

async fn artifact(f: &Federation, version: &str, content: &[u8]) -> Value {
    let (status, text) = f
        .center
        .raw(
            Method::POST,
            &format!("/api/v1/artifacts?name=fw&version={version}"),
            Some(&f.center.admin),
            "application/octet-stream",
            content.to_vec(),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    serde_json::from_str::<Value>(&text).expect("json")["data"].clone()
}

async fn signing_key(f: &Federation) -> String {
    let (_, key) = f.center.get("/api/v1/artifacts/signing-key").await;
    key["data"]["public_key"].as_str().expect("key").to_string()
}

/// Rolls `artifact` out to `device` and waits until the rollout ends or pauses.
async fn roll_out(f: &Federation, artifact: &Value, device: &Device) -> (Value, Value) {
    let (status, made) = f
        .center
        .post(
            "/api/v1/rollouts",
            json!({"name": "t", "artifact_id": artifact["id"], "target": {"device_ids": [device.id]},
                   "device_timeout_s": 60}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let id = made["data"]["id"].as_str().expect("id").to_string();
    for _ in 0..600 {
        let (_, shown) = f.center.get(&format!("/api/v1/rollouts/{id}")).await;
        if matches!(
            shown["data"]["state"].as_str(),
            Some("completed" | "paused")
        ) {
            let (_, devices) = f
                .center
                .get(&format!("/api/v1/rollouts/{id}/devices"))
                .await;
            return (shown["data"].clone(), devices["data"]["items"][0].clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rollout {id} did not end");
}

/// Waits until the center records `version` as the device's software.
async fn center_records(f: &Federation, device: &Device, version: &str) {
    let path = format!("/api/v1/devices/{}", device.id);
    let mut shown = Value::Null;
    for _ in 0..200 {
        shown = f.center.get(&path).await.1["data"]["software"].clone();
        if shown["version"] == version {
            let today = fleet_store::date_of(fleet_store::now_ms());
            assert_eq!(shown["last_update"], today.as_str(), "{shown}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the center records {shown}, not {version}");
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn the_agent_installs_a_signed_artifact_through_its_edge() {
    let f = federation().await;
    let key = signing_key(&f).await;
    let d = device(&f, "SN-IN-1", &key, 0).await;
    let file = content(1_500_000, 1);
    let a = artifact(&f, "2.0.0", &file).await;
    let (rollout, update) = roll_out(&f, &a, &d).await;
    assert_eq!(rollout["state"], "completed", "{rollout} {update}");
    assert_eq!(update["state"], "succeeded", "{update}");
    assert!(
        update["log"]
            .as_str()
            .is_some_and(|l| l.contains("installing 2.0.0")),
        "{update}"
    );
    assert!(std::fs::read(d.dir.join("installed.bin")).expect("installed") == file);
    assert_eq!(
        std::fs::read_to_string(d.dir.join("version"))
            .expect("v")
            .trim(),
        "2.0.0"
    );
    center_records(&f, &d, "2.0.0").await;
    assert!(
        std::fs::read_dir(d.dir.join("state/downloads"))
            .expect("dir")
            .next()
            .is_none(),
        "the download is not kept once installed"
    );
}

#[tokio::test]
async fn a_hook_that_asks_for_a_restart_is_confirmed_by_the_restarted_agent() {
    let f = federation().await;
    let key = signing_key(&f).await;
    let d = device(&f, "SN-IN-2", &key, 100).await;
    let a = artifact(&f, "3.0.0", &content(10_000, 2)).await;
    let (rollout, update) = roll_out(&f, &a, &d).await;
    assert_eq!(rollout["state"], "completed", "{rollout} {update}");
    assert_eq!(update["state"], "succeeded", "{update}");
    let (_, command) = f
        .center
        .get(&format!(
            "/api/v1/commands/{}",
            update["command_id"].as_str().expect("command")
        ))
        .await;
    assert_eq!(
        command["data"]["result"]["data"]["restarted"], true,
        "{command}"
    );
    assert_eq!(
        command["data"]["result"]["data"]["version"], "3.0.0",
        "{command}"
    );
    center_records(&f, &d, "3.0.0").await;
}

#[tokio::test]
async fn a_failed_install_rolls_back_and_a_foreign_signature_is_refused() {
    let f = federation().await;
    let key = signing_key(&f).await;
    let failing = device(&f, "SN-IN-3", &key, 3).await;
    let a = artifact(&f, "4.0.0", &content(10_000, 3)).await;
    let (rollout, update) = roll_out(&f, &a, &failing).await;
    assert_eq!(rollout["state"], "paused", "{rollout}");
    assert_eq!(update["state"], "failed", "{update}");
    let reason = update["reason"].as_str().expect("reason");
    assert!(
        reason.contains("exited with 3") && reason.contains("rolled back"),
        "{reason}"
    );
    assert_eq!(
        std::fs::read_to_string(failing.dir.join("rolled-back"))
            .expect("rolled back")
            .trim(),
        "4.0.0"
    );

    // Another key than the center's: the manifest does not verify, nothing is fetched.
    let stranger = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    let wary = device(&f, "SN-IN-4", stranger, 0).await;
    let b = artifact(&f, "5.0.0", &content(10_000, 4)).await;
    let (_, update) = roll_out(&f, &b, &wary).await;
    assert_eq!(update["state"], "failed", "{update}");
    let reason = update["reason"].as_str().expect("reason");
    assert!(reason.contains("does not verify"), "{reason}");
    assert!(
        !wary.dir.join("installed.bin").exists(),
        "the hook never ran"
    );
    assert!(
        !wary.dir.join("state/downloads").exists(),
        "nothing was downloaded"
    );
}

#[tokio::test]
async fn simulated_devices_download_and_verify_then_fail_as_told() {
    let f = federation().await;
    let mut credentials = Vec::new();
    for i in 0..5 {
        let mut body = device_json("sim", &format!("SN-SIM-{i}"));
        body["edge_id"] = json!(f.edge_id);
        let (status, made) = f.center.post("/api/v1/devices", body).await;
        assert_eq!(status, 201, "{made}");
        credentials.push((
            made["data"]["id"].as_str().expect("id").to_string(),
            made["data"]["secret"].as_str().expect("secret").to_string(),
        ));
    }
    let ids: Vec<String> = credentials.iter().map(|(id, _)| id.clone()).collect();
    let simulation = device_agent::fleet::Simulation {
        edges: vec![format!("wss://localhost:{}/devices", f.device_port)],
        ca_file: Some(f.edge.data_dir.join("tls/ca.crt")),
        report_interval_s: 5,
        source_ips: Vec::new(),
        install_fail_pct: 100,
        update_public_key: Some(signing_key(&f).await),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(simulation.run(credentials, stopped));
    let a = artifact(&f, "6.0.0", &content(300_000, 6)).await;
    let (status, made) = f
        .center
        .post(
            "/api/v1/rollouts",
            json!({"name": "sim", "artifact_id": a["id"], "target": {"device_ids": ids},
                   "error_threshold_pct": 100, "success_threshold_pct": 0}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let id = made["data"]["id"].as_str().expect("id");
    let mut shown = Value::Null;
    for _ in 0..600 {
        shown = f.center.get(&format!("/api/v1/rollouts/{id}")).await.1["data"].clone();
        if shown["state"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown["state"], "completed", "{shown}");
    assert_eq!(shown["counts"]["failed"], 5, "{shown}");
    let (_, failed) = f
        .center
        .get(&format!("/api/v1/rollouts/{id}/devices"))
        .await;
    assert_eq!(
        failed["data"]["items"][0]["reason"],
        "simulated install failure"
    );
    let metrics = f.edge.metrics().await;
    let served = metrics
        .lines()
        .find_map(|l| l.strip_prefix("artifact_served_bytes_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(
        served,
        Some(5 * 300_000),
        "every device downloaded it whole"
    );
    let fetched = metrics
        .lines()
        .find_map(|l| l.strip_prefix("artifact_fetched_bytes_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(fetched, Some(300_000), "the edge fetched it once");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
}
