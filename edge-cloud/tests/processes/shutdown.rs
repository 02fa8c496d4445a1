//! An edge binary stopped with SIGTERM while devices are connected: it exits cleanly,
//! and nothing it held in memory or in a queue is lost. Each device's session end is
//! recorded, and each device's last status is stored, although the status writer's
//! next round was a minute away.

use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_store::{device_status, events};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use super::node::{binary, free_port, Launch, PASSWORD};

const DEVICES: usize = 20;

#[tokio::test]
async fn sigterm_ends_every_session_and_writes_what_was_queued() {
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("edge");
    std::fs::create_dir_all(&dir).expect("dir");
    let database_url = api_harness::fresh_database(&dir).await;
    let (port, device_port) = (free_port(), free_port());
    let mut edge = Launch {
        name: "edge".into(),
        bin: binary("edge-cloud"),
        args: vec![
            "serve".into(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--device-listen=127.0.0.1:{device_port}"),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--database-url={database_url}"),
            "--status-flush-ms=60000".into(),
            "--workers=1".into(),
        ],
        env: vec![
            ("EDGE_ADMIN_PASSWORD".into(), PASSWORD.into()),
            ("EDGE_LOG".into(), "info".into()),
        ],
        dir: dir.clone(),
        port,
        database_url,
    }
    .launched()
    .await;
    let ca = dir.join("data/tls/ca.crt");
    let credentials = dir.join("devices.csv");
    let provisioned = Command::new(binary("device-agent"))
        .args(["provision", "--site", &format!("https://localhost:{port}")])
        .arg("--ca")
        .arg(&ca)
        .args(["--count", &DEVICES.to_string(), "--prefix", "term", "--out"])
        .arg(&credentials)
        .env("AGENT_SITE_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .status()
        .expect("device-agent runs");
    assert!(provisioned.success(), "devices provisioned");
    let simulator = Command::new(binary("device-agent"))
        .arg("simulate")
        .arg("--credentials")
        .arg(&credentials)
        .args(["--edge", &format!("wss://localhost:{device_port}/devices")])
        .arg("--ca")
        .arg(&ca)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("simulator starts");
    let mut simulator = Stopped(simulator);

    // Every device is online and has reported a status, held in memory only.
    let ids: Vec<String> = std::fs::read_to_string(&credentials)
        .expect("credentials")
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), DEVICES);
    for _ in 0..400 {
        let mut reported = 0;
        for id in &ids {
            let (_, status) = edge
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/devices/{id}/status"),
                    None,
                )
                .await;
            if status["data"]["online"] == true && !status["data"]["status"].is_null() {
                reported += 1;
            }
        }
        if reported == DEVICES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db = edge.db().await;
    assert_eq!(
        device_status::Entity::find()
            .count(&db)
            .await
            .expect("count"),
        0,
        "no status written yet: the next round is a minute away"
    );

    let exited = edge.terminate().await;
    simulator.stop();
    assert!(exited.success(), "a clean exit: {exited}");

    let stored = device_status::Entity::find()
        .count(&db)
        .await
        .expect("count");
    assert_eq!(stored, DEVICES as u64, "every last status was written");
    let offline = events::Entity::find()
        .filter(events::Column::Action.eq("device.offline"))
        .filter(events::Column::Detail.eq("edge stopping"))
        .count(&db)
        .await
        .expect("count");
    assert_eq!(offline, DEVICES as u64, "every session end was recorded");
}

/// A child process stopped when the test ends, however it ends.
struct Stopped(std::process::Child);

impl Stopped {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.stop();
    }
}
