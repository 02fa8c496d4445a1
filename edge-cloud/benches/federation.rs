//! Federation benchmarks (docs/design.md §8), printed, never asserted:
//!
//! - change propagation latency, center -> edge and edge -> center, p50/p99: a write
//!   through one node's API until the row is in the other node's database;
//! - snapshot bootstrap: a new edge whose center holds 100,000 devices homed there,
//!   from start until every device is in the edge's database.
//!
//! A center and an edge run in this process from their library entry points, linked
//! over TLS on loopback, on SQLite, or on MariaDB when `BENCH_MYSQL_URL` names a server
//! (`tests/bench-federation.sh` runs both). Settings: `BENCH_SAMPLES` (propagation
//! writes each way, default 300), `BENCH_BOOTSTRAP` (devices, default 100000).

// Printing the figures is what a benchmark is for.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_store::{devices, sync};
use operator_api::settings::NodeSettings;
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait, TransactionTrait};
use serde_json::{json, Value};

const PASSWORD: &str = "bench-password";

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn new(port: u16, ca: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(ca)?;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .use_rustls_tls()
            .build()?;
        let base = format!("https://localhost:{port}");
        let login: Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": "admin", "password": PASSWORD}))
            .send()
            .await?
            .json()
            .await?;
        let token = login["data"]["token"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("login failed: {login}"))?
            .to_string();
        Ok(Self {
            client,
            base,
            token,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
        Ok(body)
    }
}

async fn database_url(dir: &Path, name: &str) -> anyhow::Result<String> {
    match std::env::var("BENCH_MYSQL_URL") {
        Ok(server) => {
            let db_name = format!("bench_{name}_{:08x}", rand::random::<u32>());
            let admin = sea_orm::Database::connect(server.as_str()).await?;
            sea_orm::ConnectionTrait::execute_unprepared(
                &admin,
                &format!("CREATE DATABASE `{db_name}`"),
            )
            .await?;
            Ok(format!("{}/{db_name}", server.trim_end_matches('/')))
        }
        Err(_) => Ok(format!(
            "sqlite://{}",
            dir.join(format!("{name}.db")).display()
        )),
    }
}

async fn node_settings(
    dir: &Path,
    name: &str,
    defaults: operator_api::settings::NodeDefaults,
) -> anyhow::Result<NodeSettings> {
    let data = dir.join(name);
    let mut node = NodeSettings::with_data_dir(defaults, &data);
    node.listen = "127.0.0.1:0".parse()?;
    node.database_url = database_url(dir, name).await?;
    node.admin_password = Some(PASSWORD.into());
    node.log = "warn".into();
    Ok(node)
}

struct Center {
    api: Api,
    link_port: u16,
    dir: std::path::PathBuf,
    db: DatabaseConnection,
}

async fn center(dir: &Path) -> anyhow::Result<Center> {
    let node = node_settings(dir, "center", center_cloud::config::DEFAULTS).await?;
    let database_url = node.database_url.clone();
    let mut settings = center_cloud::Settings {
        node,
        ..center_cloud::Settings::with_data_dir(&dir.join("center"))
    };
    settings.link_listen = "127.0.0.1:0".parse()?;
    let built = center_cloud::Application::build(settings).await?;
    let port = built.served.port();
    let link_port = built.link_port;
    tokio::spawn(built.served.run_until_stopped());
    let data = dir.join("center");
    Ok(Center {
        api: Api::new(port, &data.join("tls/ca.crt")).await?,
        link_port,
        db: fleet_store::connect(&database_url, 4).await?,
        dir: data,
    })
}

struct Edge {
    api: Api,
    db: DatabaseConnection,
}

async fn edge(dir: &Path, name: &str, center: &Center, reg: &Value) -> anyhow::Result<Edge> {
    let mut node = node_settings(dir, name, edge_cloud::config::DEFAULTS).await?;
    node.worker_id = reg["worker_id"].as_i64().unwrap_or(2);
    let database_url = node.database_url.clone();
    let mut settings = edge_cloud::Settings {
        node,
        ..edge_cloud::Settings::with_data_dir(&dir.join(name))
    };
    settings.device_listen = "127.0.0.1:0".parse()?;
    settings.center = Some(edge_cloud::uplink::CenterLink {
        urls: vec![format!("wss://localhost:{}/link", center.link_port)],
        api_urls: Vec::new(),
        edge_id: reg["id"].as_str().unwrap_or_default().parse()?,
        secret: reg["secret"].as_str().unwrap_or_default().into(),
        ca_file: Some(center.dir.join("tls/ca.crt")),
        heartbeat: Duration::from_secs(5),
        backoff_cap: Duration::from_secs(1),
    });
    let built = edge_cloud::Application::build(settings).await?;
    let port = built.served.port();
    tokio::spawn(built.served.run_until_stopped());
    Ok(Edge {
        api: Api::new(port, &dir.join(name).join("tls/ca.crt")).await?,
        db: fleet_store::connect(&database_url, 4).await?,
    })
}

async fn register_edge(center: &Center, name: &str) -> anyhow::Result<Value> {
    let reg = center
        .api
        .send(
            reqwest::Method::POST,
            "/api/v1/edges",
            json!({"name": name, "site": name}),
        )
        .await?;
    Ok(reg["data"].clone())
}

fn device_body(name: &str, sn: &str) -> Value {
    json!({
        "name": name, "type": "gateway",
        "hardware": {"model": "bench", "sn": sn},
        "software": {"version": "1.0.0", "last_update": "2026-01-01 00:00:00"},
        "nic": [], "status": "active"
    })
}

/// Polls `db` until device `id` satisfies `done`; how long it took from `since`.
async fn seen(
    db: &DatabaseConnection,
    id: i64,
    since: Instant,
    done: impl Fn(&devices::Model) -> bool,
) -> anyhow::Result<Duration> {
    let deadline = since + Duration::from_secs(30);
    loop {
        if devices::Entity::find_by_id(id)
            .one(db)
            .await?
            .is_some_and(|d| done(&d))
        {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "device {id} did not arrive in 30 s"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

async fn propagation(dir: &Path, samples: usize) -> anyhow::Result<()> {
    let center = center(dir).await?;
    let reg = register_edge(&center, "edge-latency").await?;
    let edge = edge(dir, "edge-latency", &center, &reg).await?;
    let edge_id = reg["id"].as_str().unwrap_or_default().to_string();
    let (mut down, mut up) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let mut body = device_body(&format!("lat-{i}"), &format!("LAT-{i}"));
        body["edge_id"] = json!(edge_id);
        let start = Instant::now();
        let made = center
            .api
            .send(reqwest::Method::POST, "/api/v1/devices", body)
            .await?;
        let id: i64 = made["data"]["id"].as_str().unwrap_or_default().parse()?;
        down.push(seen(&edge.db, id, start, |_| true).await?);

        let name = format!("renamed-{i}");
        let start = Instant::now();
        edge.api
            .send(
                reqwest::Method::PATCH,
                &format!("/api/v1/devices/{id}"),
                json!({"name": name}),
            )
            .await?;
        up.push(seen(&center.db, id, start, |d| d.name == name).await?);
    }
    let (d50, d99) = percentiles(down);
    let (u50, u99) = percentiles(up);
    println!("| center -> edge | {samples} | {d50:.1} | {d99:.1} |");
    println!("| edge -> center | {samples} | {u50:.1} | {u99:.1} |");
    Ok(())
}

async fn bootstrap(dir: &Path, count: usize) -> anyhow::Result<()> {
    let center = center(dir).await?;
    let reg = register_edge(&center, "edge-new").await?;
    let edge_id: i64 = reg["id"].as_str().unwrap_or_default().parse()?;
    // Written straight through the store (the API would take minutes for 100,000):
    // the same rows, stamps and change log an API write makes.
    let replica = fleet_store::Replica::new(fleet_store::ids::Snowflake::new(1)?);
    let started = Instant::now();
    let now = fleet_store::now_ms();
    for chunk in 0..count.div_ceil(5_000) {
        let txn = center.db.begin().await?;
        for i in chunk * 5_000..((chunk + 1) * 5_000).min(count) {
            let sn = format!("BOOT-{i}");
            let row = devices::Model {
                id: replica.new_id(),
                name: format!("boot-{i}"),
                device_type: "gateway".into(),
                hw_model: "bench".into(),
                hw_sn: sn.clone(),
                sw_version: "1.0.0".into(),
                sw_last_update: String::new(),
                nics: "[]".into(),
                status: "active".into(),
                description: String::new(),
                edge_id: Some(edge_id),
                secret_hash: String::new(),
                live_key: Some(devices::live_key("bench", &sn)),
                created_at: now,
                updated_at: now,
                hlc: 0,
                origin: 0,
                deleted: false,
                field_stamps: String::new(),
            };
            replica.insert(&txn, row).await?;
        }
        txn.commit().await?;
        eprint!(
            "\rwriting {count} devices at the center: {}",
            ((chunk + 1) * 5_000).min(count)
        );
    }
    eprintln!(" ({:.1} s)", started.elapsed().as_secs_f64());
    // As a center that has run a while: its log compacted, so the edge gets a snapshot.
    while sync::compact(&center.db, 0).await? > 0 {}
    let started = Instant::now();
    let edge = edge(dir, "edge-new", &center, &reg).await?;
    let deadline = started + Duration::from_secs(1800);
    loop {
        let have = devices::Entity::find().count(&edge.db).await?;
        eprint!("\redge bootstrap: {have}/{count} devices");
        if have >= count as u64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "bootstrap did not finish in 30 min"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!();
    println!(
        "| snapshot bootstrap | {count} devices | {secs:.1} s | {:.0} devices/s |",
        count as f64 / secs
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let samples = std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let count = std::env::var("BENCH_BOOTSTRAP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let backend = if std::env::var("BENCH_MYSQL_URL").is_ok() {
        "MariaDB"
    } else {
        "SQLite"
    };
    let dir = tempfile::tempdir()?;
    println!("federation benchmark on {backend}");
    println!("| propagation | writes | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    propagation(dir.path(), samples).await?;
    println!();
    bootstrap(dir.path(), count).await?;
    Ok(())
}
