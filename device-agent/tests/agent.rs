//! The agent against a real edge over WSS: login, status, commands.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use api_harness::*;
use device_agent::config::AgentConfig;
use device_agent::link::Agent;
use serde_json::json;

struct Site {
    api: TestApp,
    device_port: u16,
    hub: std::sync::Arc<edge_cloud::hub::Hub>,
}

async fn spawn_edge() -> Site {
    spawn_edge_trusting(None).await
}

/// An edge; with `same_tls_as`, serving that edge's certificate (one CA for the site).
async fn spawn_edge_trusting(same_tls_as: Option<&Site>) -> Site {
    let (dir, node) = test_settings(edge_cloud::config::DEFAULTS).await;
    if let Some(other) = same_tls_as {
        // The development certificate found in the data directory is reused.
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        for file in ["ca.crt", "ca.key", "server.crt", "server.key"] {
            std::fs::copy(other.api.data_dir.join("tls").join(file), tls.join(file)).expect("copy");
        }
    }
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
    let hub = edge.hub.clone();
    Site {
        api: start(edge.served, dir, database_url).await,
        device_port,
        hub,
    }
}

fn config(site: &Site, id: &str, secret: &str, state: &std::path::Path) -> AgentConfig {
    let mut scripts = BTreeMap::new();
    scripts.insert("echo".to_string(), PathBuf::from("/bin/echo"));
    scripts.insert("sleep".to_string(), PathBuf::from("/bin/sleep"));
    AgentConfig {
        device_id: id.into(),
        sn: String::new(),
        model: String::new(),
        secret: secret.into(),
        edges: vec![format!("wss://localhost:{}/devices", site.device_port)],
        ca_file: site.api.data_dir.join("tls/ca.crt"),
        report_interval_s: 1,
        state_dir: state.to_path_buf(),
        scripts,
        reboot_hook: None,
        output_cap_bytes: 1024,
        backoff_first_ms: 500,
        backoff_cap_s: 2,
        log_path: None,
        log_max_bytes: 1024 * 1024,
        update_public_key: None,
        install_hook: None,
        rollback_hook: None,
        software_version_file: None,
    }
}

async fn online(site: &Site, id: &str) -> bool {
    for _ in 0..100 {
        let (_, body) = site.api.get(&format!("/api/v1/devices/{id}")).await;
        if body["data"]["online"] == json!(true) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn command(site: &Site, id: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, answer) = site
        .api
        .post(&format!("/api/v1/devices/{id}/commands"), body)
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["data"].clone()
}

#[tokio::test]
async fn the_agent_connects_reports_and_runs_commands() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let site = spawn_edge().await;
    let d = site.api.device("agent-1", "SN-A1").await;
    let id = d["id"].as_str().expect("id").to_string();
    let state = tempfile::tempdir().expect("state dir");
    let agent = Agent::new(config(
        &site,
        &id,
        d["secret"].as_str().expect("secret"),
        state.path(),
    ))
    .expect("agent");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(agent.run(stopped));
    assert!(online(&site, &id).await, "the agent's device comes online");

    let mut reported = false;
    for _ in 0..100 {
        let (_, body) = site.api.get(&format!("/api/v1/devices/{id}/status")).await;
        if body["data"]["status"]["agent_version"].is_string()
            && body["data"]["status"]["memory_total_bytes"].as_u64() > Some(0)
        {
            reported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reported, "a full status report from sysinfo arrived");

    let c = command(&site, &id, json!({"name": "exec", "args": {"script": "echo", "args": ["hello", "edge"]}, "wait": true, "timeout_s": 10})).await;
    assert_eq!(
        (c["state"].clone(), c["result"]["exit_code"].clone()),
        (json!("succeeded"), json!(0))
    );
    assert_eq!(c["result"]["output"], "hello edge\n");

    let c = command(&site, &id, json!({"name": "exec", "args": {"script": "rm", "args": ["-rf", "/"]}, "wait": true, "timeout_s": 10})).await;
    assert_eq!(c["state"], "failed");
    assert!(
        c["result"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not allowed")),
        "{c}"
    );

    let c = command(&site, &id, json!({"name": "exec", "args": {"script": "sleep", "args": ["5"], "timeout_s": 1}, "wait": true, "timeout_s": 10})).await;
    assert_eq!(c["state"], "timed_out", "{c}");

    let c = command(
        &site,
        &id,
        json!({"name": "get_status", "wait": true, "timeout_s": 10}),
    )
    .await;
    assert_eq!(c["state"], "succeeded");
    assert!(c["result"]["data"]["uptime_s"].as_u64().is_some(), "{c}");

    let c = command(&site, &id, json!({"name": "set_config", "args": {"report_interval_s": 5}, "wait": true, "timeout_s": 10})).await;
    assert_eq!(
        (
            c["state"].clone(),
            c["result"]["data"]["report_interval_s"].clone()
        ),
        (json!("succeeded"), json!(5))
    );

    let (status, _) = site
        .api
        .put(
            &format!("/api/v1/devices/{id}/config"),
            json!({"report_interval_s": 7}),
        )
        .await;
    assert_eq!(status, 200);
    let mut applied = false;
    for _ in 0..100 {
        let (_, body) = site.api.get(&format!("/api/v1/devices/{id}/status")).await;
        if body["data"]["config_version"] == 1 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        applied,
        "the agent applied the desired configuration and said so"
    );

    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops")
        .expect("task");
}

#[test]
fn a_command_id_runs_at_most_once_even_across_a_restart() {
    use device_agent::executor::{Delivery, Executor};
    use shared_proto::southbound::{Command, CommandName};
    let state = tempfile::tempdir().expect("state dir");
    let site_less = AgentConfig {
        device_id: "1".into(),
        sn: String::new(),
        model: String::new(),
        secret: "s".into(),
        edges: vec!["wss://localhost:1/devices".into()],
        ca_file: PathBuf::from("unused"),
        report_interval_s: 1,
        state_dir: state.path().to_path_buf(),
        scripts: BTreeMap::new(),
        reboot_hook: None,
        output_cap_bytes: 1024,
        backoff_first_ms: 500,
        backoff_cap_s: 2,
        log_path: None,
        log_max_bytes: 1024 * 1024,
        update_public_key: None,
        install_hook: None,
        rollback_hook: None,
        software_version_file: None,
    };
    let command = Command {
        command_id: "42".into(),
        name: CommandName::GetStatus,
        args: json!({}),
        deadline_ms: i64::MAX,
    };
    let mut executor = Executor::new(&site_less).expect("executor");
    assert!(matches!(executor.accept(&command), Delivery::Run));
    assert!(
        matches!(executor.accept(&command), Delivery::Ignore),
        "a second delivery while it runs"
    );
    executor.remember(&Executor::succeeded("42", json!(null)));
    assert!(
        matches!(executor.accept(&command), Delivery::Repeat(_)),
        "a finished one answers its result again"
    );
    let mut restarted = Executor::new(&site_less).expect("executor");
    assert!(
        matches!(restarted.accept(&command), Delivery::Ignore),
        "not run again after a restart"
    );
}

#[tokio::test]
async fn provisioned_devices_run_in_the_simulator() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let site = spawn_edge().await;
    let dir = tempfile::tempdir().expect("dir");
    let credentials = dir.path().join("devices.csv");
    let ca = site.api.data_dir.join("tls/ca.crt");
    let n = device_agent::fleet::provision(
        &site.api.address,
        &ca,
        "admin",
        ADMIN_PASSWORD,
        20,
        "sim",
        &credentials,
    )
    .await
    .expect("provisioned");
    assert_eq!(n, 20);
    let devices = device_agent::fleet::read_credentials(&credentials).expect("credentials");
    assert_eq!(devices.len(), 20);
    let first = devices[0].0.clone();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let edges = vec![format!("wss://localhost:{}/devices", site.device_port)];
    let ca_file = ca.clone();
    let running = tokio::spawn(async move {
        device_agent::fleet::simulate(devices, edges, &ca_file, 1, stopped).await
    });
    let mut all_online = false;
    for _ in 0..200 {
        let (_, body) = site.api.get("/api/v1/devices?per_page=100").await;
        let items = body["data"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if items.len() == 20 && items.iter().all(|d| d["online"] == json!(true)) {
            all_online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(all_online, "every simulated device logged in");
    let c = command(
        &site,
        &first,
        json!({"name": "get_status", "wait": true, "timeout_s": 10}),
    )
    .await;
    assert_eq!(c["state"], "succeeded");
    assert_eq!(
        c["result"]["data"]["memory_total_bytes"],
        1024 * 1024 * 1024
    );
    let c = command(
        &site,
        &first,
        json!({"name": "reboot", "wait": true, "timeout_s": 10}),
    )
    .await;
    assert_eq!(c["state"], "succeeded");
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the simulator stops")
        .expect("task")
        .expect("ran");
}

#[test]
fn a_malformed_credentials_file_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.csv");
    std::fs::write(&path, "id,key\n1,2\n").expect("write");
    assert!(device_agent::fleet::read_credentials(&path).is_err());
    std::fs::write(&path, "device_id,secret\n1\n").expect("write");
    assert!(device_agent::fleet::read_credentials(&path).is_err());
}

/// An edge that stops says it is going away, and its devices dial their other edge at
/// once. The backoff is set to an hour, so a device that waited for it instead would
/// not be back within the test.
#[tokio::test]
async fn the_agent_fails_over_to_the_next_edge_at_once_when_its_edge_goes_away() {
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = spawn_edge().await;
    let b = spawn_edge_trusting(Some(&a)).await;
    let d = a.api.device("roamer", "SN-R").await;
    let id = d["id"].as_str().expect("id").to_string();

    // Known at A alone at first, so the agent's session is at A whichever edge it
    // tries first (B refuses the unknown device).
    let state = tempfile::tempdir().expect("state dir");
    let mut cfg = config(&a, &id, d["secret"].as_str().expect("secret"), state.path());
    cfg.edges
        .push(format!("wss://localhost:{}/devices", b.device_port));
    cfg.backoff_first_ms = 3_600_000;
    cfg.backoff_cap_s = 3_600;
    let agent = Agent::new(cfg).expect("agent");
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(agent.run(stopped));
    assert!(online(&a, &id).await, "the agent logs in at A");

    // Until the edges sync with the center, copy the registration to the second edge.
    let row = fleet_store::devices::Entity::find_by_id(id.parse::<i64>().expect("id"))
        .one(&a.api.db().await)
        .await
        .expect("query")
        .expect("row");
    row.into_active_model()
        .reset_all()
        .insert(&b.api.db().await)
        .await
        .expect("copied");
    a.hub.shutdown();
    assert!(
        online(&b, &id).await,
        "the agent moved to B without a backoff"
    );
    assert!(!online_now(&a, &id).await);
}

async fn online_now(site: &Site, id: &str) -> bool {
    let (_, body) = site.api.get(&format!("/api/v1/devices/{id}")).await;
    body["data"]["online"] == json!(true)
}

#[tokio::test]
async fn reboot_without_a_hook_restarts_the_agent_which_confirms() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let site = spawn_edge().await;
    let d = site.api.device("rebooter", "SN-B").await;
    let id = d["id"].as_str().expect("id").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let config = format!(
        "device_id = \"{id}\"\nsecret = \"{}\"\nedges = [\"wss://localhost:{}/devices\"]\nca_file = \"{}\"\nreport_interval_s = 1\nstate_dir = \"{}\"\n",
        d["secret"].as_str().expect("secret"),
        site.device_port,
        site.api.data_dir.join("tls/ca.crt").display(),
        dir.path().join("state").display(),
    );
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config).expect("config");
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_device-agent"))
        .args(["run", "--config"])
        .arg(&path)
        .env("AGENT_LOG", "warn")
        .spawn()
        .expect("agent starts");
    let result = async {
        assert!(online(&site, &id).await, "the agent came online");
        let c = command(
            &site,
            &id,
            json!({"name": "reboot", "wait": true, "timeout_s": 20}),
        )
        .await;
        assert_eq!(c["state"], "succeeded", "{c}");
        assert_eq!(
            c["result"]["data"]["restarted"], true,
            "confirmed by the restarted agent: {c}"
        );
        assert!(online(&site, &id).await, "back online after the restart");
    };
    result.await;
    let _ = agent.kill();
    let _ = agent.wait();
}

async fn download_log(site: &Site, command: &str) -> String {
    let res = site
        .api
        .client
        .get(format!(
            "{}/api/v1/commands/{command}/logs",
            site.api.address
        ))
        .bearer_auth(&site.api.admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    res.text().await.expect("log")
}

#[tokio::test]
async fn pull_logs_uploads_the_agents_own_log_file() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let site = spawn_edge().await;
    let d = site.api.device("logger", "SN-L").await;
    let id = d["id"].as_str().expect("id").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("logs/agent.log");
    let config = format!(
        "device_id = \"{id}\"\nsecret = \"{}\"\nedges = [\"wss://localhost:{}/devices\"]\nca_file = \"{}\"\nreport_interval_s = 1\nstate_dir = \"{}\"\nlog_path = \"{}\"\nlog_max_bytes = 65536\n",
        d["secret"].as_str().expect("secret"),
        site.device_port,
        site.api.data_dir.join("tls/ca.crt").display(),
        dir.path().join("state").display(),
        log.display(),
    );
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config).expect("config");
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_device-agent"))
        .args(["run", "--config"])
        .arg(&path)
        .env("AGENT_LOG", "info")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("agent starts");
    let result = async {
        assert!(online(&site, &id).await, "the agent came online");
        let c = command(
            &site,
            &id,
            json!({"name": "pull_logs", "wait": true, "timeout_s": 20}),
        )
        .await;
        assert_eq!(c["state"], "succeeded", "{c}");
        let uploaded = c["result"]["data"]["uploaded_bytes"]
            .as_u64()
            .expect("size");
        let text = download_log(&site, c["id"].as_str().expect("id")).await;
        assert_eq!(text.len() as u64, uploaded);
        assert!(text.contains("connected"), "the agent's own log: {text}");
        assert!(
            !text.contains(d["secret"].as_str().expect("secret")),
            "no secret in the log"
        );
    };
    result.await;
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test]
async fn pull_logs_without_a_log_file_is_rejected_and_simulated_devices_send_theirs() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let site = spawn_edge().await;
    let d = site.api.device("quiet", "SN-Q").await;
    let id = d["id"].as_str().expect("id").to_string();
    let state = tempfile::tempdir().expect("state dir");
    let agent = Agent::new(config(
        &site,
        &id,
        d["secret"].as_str().expect("secret"),
        state.path(),
    ))
    .expect("agent");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(agent.run(stopped));
    assert!(online(&site, &id).await);
    let c = command(
        &site,
        &id,
        json!({"name": "pull_logs", "wait": true, "timeout_s": 10}),
    )
    .await;
    assert_eq!(c["state"], "failed", "{c}");
    assert!(
        c["result"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("log_path")),
        "{c}"
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;

    let sim = site.api.device("sim", "SN-SIM").await;
    let sim_id = sim["id"].as_str().expect("id").to_string();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let devices = vec![(
        sim_id.clone(),
        sim["secret"].as_str().expect("secret").to_string(),
    )];
    let edges = vec![format!("wss://localhost:{}/devices", site.device_port)];
    let ca = site.api.data_dir.join("tls/ca.crt");
    let running = tokio::spawn(async move {
        device_agent::fleet::simulate(devices, edges, &ca, 1, stopped).await
    });
    assert!(online(&site, &sim_id).await);
    let c = command(
        &site,
        &sim_id,
        json!({"name": "pull_logs", "wait": true, "timeout_s": 10}),
    )
    .await;
    assert_eq!(c["state"], "succeeded", "{c}");
    let text = download_log(&site, c["id"].as_str().expect("id")).await;
    assert!(
        text.starts_with(&format!("simulated device {sim_id}")),
        "{text}"
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
}

/// The agent binary, killed when dropped (also when a test fails half-way).
struct AgentProcess(std::process::Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_largest_output_arrives_whole_or_cut_with_a_flag_and_the_command_succeeds() {
    use std::os::unix::fs::PermissionsExt;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let site = spawn_edge().await;
    let d = site.api.device("printer", "SN-OUT").await;
    let id = d["id"].as_str().expect("id").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let script = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    };
    // 64 KiB (the default cap) of a control character that JSON escapes sixfold.
    let control = script("control.sh", "head -c 65536 /dev/zero | tr '\\000' '\\001'");
    let plain = script("plain.sh", "head -c 65536 /dev/zero | tr '\\000' 'a'");
    // Far more than the cap and the pipe buffers, on both pipes.
    let flood = script(
        "flood.sh",
        "head -c 400000 /dev/zero | tr '\\000' 'b'; head -c 200000 /dev/zero | tr '\\000' 'c' >&2",
    );
    let config = format!(
        "device_id = \"{id}\"\nsecret = \"{}\"\nedges = [\"wss://localhost:{}/devices\"]\nca_file = \"{}\"\nreport_interval_s = 30\nstate_dir = \"{}\"\n[scripts]\ncontrol = \"{}\"\nplain = \"{}\"\nflood = \"{}\"\n",
        d["secret"].as_str().expect("secret"),
        site.device_port,
        site.api.data_dir.join("tls/ca.crt").display(),
        dir.path().join("state").display(),
        control.display(),
        plain.display(),
        flood.display(),
    );
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config).expect("config");
    let _agent = AgentProcess(
        std::process::Command::new(env!("CARGO_BIN_EXE_device-agent"))
            .args(["run", "--config"])
            .arg(&path)
            .env("AGENT_LOG", "warn")
            .spawn()
            .expect("agent starts"),
    );
    assert!(online(&site, &id).await, "the agent came online");

    let run = |script: &'static str| json!({"name": "exec", "args": {"script": script, "timeout_s": 20}, "wait": true, "timeout_s": 30});
    let c = command(&site, &id, run("control")).await;
    assert_eq!(c["state"], "succeeded", "{c}");
    assert_eq!(c["result"]["truncated"], true, "cut to fit one frame");
    let output = c["result"]["output"].as_str().expect("output");
    assert!(!output.is_empty(), "as much as fits arrives");
    assert!(output.chars().all(|ch| ch == '\u{1}'), "a clean prefix");

    let c = command(&site, &id, run("plain")).await;
    assert_eq!(c["state"], "succeeded", "{c}");
    let output = c["result"]["output"].as_str().expect("output");
    assert!(output.chars().all(|ch| ch == 'a'));
    // Whole if it fits the frame with its envelope, else cut and flagged.
    assert_eq!(
        c["result"]["truncated"] == true,
        output.len() < 65536,
        "{} bytes",
        output.len()
    );

    let c = command(&site, &id, run("flood")).await;
    assert_eq!(c["state"], "succeeded", "never blocks on a full pipe: {c}");
    assert_eq!(c["result"]["truncated"], true);
    assert!(c["result"]["output"]
        .as_str()
        .is_some_and(|o| o.starts_with('b')));
}
