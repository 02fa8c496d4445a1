//! REST benchmark: requests/s and p50/p99 latency for create, get-by-id and list with
//! 10,000 devices present, 64 concurrent clients over HTTPS, on SQLite and (when
//! BENCH_MYSQL_URL names a MariaDB server) on MariaDB. Bounded: a fixed number of
//! requests per operation. Prints figures; asserts nothing about time.

// Printing the figures is what a benchmark is for.
#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use center_cloud::{Application, Settings};
use sea_orm::ConnectionTrait;
use serde_json::json;

const PRESENT: usize = 10_000;
const CLIENTS: usize = 64;
const REQUESTS: u64 = 6_400;

struct Target {
    base: String,
    client: reqwest::Client,
    token: String,
}

async fn start(database_url: String, dir: &std::path::Path) -> Target {
    let mut settings = Settings::with_data_dir(dir);
    settings.node.listen = "127.0.0.1:0".parse().expect("addr");
    settings.node.database_url = database_url;
    settings.node.db_max_connections = 32;
    settings.node.admin_password = Some("bench-password".into());
    settings.node.log = "warn".into();
    settings.link_listen = "127.0.0.1:0".parse().expect("addr");
    let app = Application::build(settings)
        .await
        .expect("center starts")
        .served;
    let port = app.port();
    let pem = std::fs::read(app.ca_file.clone().expect("dev CA")).expect("ca");
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .use_rustls_tls()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    let base = format!("https://localhost:{port}");
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": "bench-password"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["data"]["token"].as_str().expect("token").to_string();
    Target {
        base,
        client,
        token,
    }
}

async fn preload(t: &Target) -> Vec<String> {
    let started = Instant::now();
    let mut csv = String::from("id,name,type,hardware_model,hardware_sn,software_version,software_last_update,nic_type,nic_mac,nic_ipv4,status\n");
    for i in 0..PRESENT {
        csv.push_str(&format!(
            ",dev-{i},gateway,bench-model,SN-{i},1.0.0,2026-01-01,eth,12:34:56:78:{:02x}:{:02x},10.0.{}.{},active\n",
            (i >> 8) & 0xff,
            i & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        ));
    }
    let report: serde_json::Value = t
        .client
        .post(format!("{}/api/v1/devices/import", t.base))
        .bearer_auth(&t.token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("import")
        .json()
        .await
        .expect("json");
    assert_eq!(report["data"]["created"], PRESENT, "preload");
    println!(
        "  preloaded {PRESENT} devices by CSV import in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    report["data"]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["id"].as_str().map(str::to_string))
        .collect()
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    Get,
    List,
    ListAfter,
}

async fn run(t: Arc<Target>, ids: Arc<Vec<String>>, op: Op, name: &str) {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (t, ids, next) = (t.clone(), ids.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= REQUESTS {
                    break;
                }
                let req = match op {
                    Op::Create => t.client.post(format!("{}/api/v1/devices", t.base)).json(&json!({
                        "name": format!("new-{n}"), "type": "gateway",
                        "hardware": {"model": "bench-new", "sn": format!("NEW-{n}-{:x}", rand::random::<u32>())},
                    })),
                    Op::Get => {
                        let id = &ids[(n as usize * 7919) % ids.len()];
                        t.client.get(format!("{}/api/v1/devices/{id}", t.base))
                    }
                    Op::List => {
                        let page = 1 + (n % 200);
                        t.client.get(format!("{}/api/v1/devices?per_page=50&page={page}", t.base))
                    }
                    Op::ListAfter => {
                        let after = &ids[(n as usize * 50) % ids.len()];
                        t.client.get(format!("{}/api/v1/devices?per_page=50&after={after}", t.base))
                    }
                };
                let sent = Instant::now();
                match req.bearer_auth(&t.token).send().await {
                    Ok(res) if res.status().is_success() => {
                        let _ = res.bytes().await;
                        latencies.push(sent.elapsed());
                    }
                    Ok(res) => {
                        errors += 1;
                        let status = res.status();
                        let body = res.text().await.unwrap_or_default();
                        first_error.get_or_insert(format!("{status}: {body}"));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (l, e, first) = task.await.expect("client task");
        all.extend(l);
        errors += e;
        first_error = first_error.or(first);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "  {name:<12} {:>8.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} ok, {errors} failed, {CLIENTS} clients)",
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        all.len()
    );
    if let Some(e) = first_error {
        println!("    first failure: {e}");
    }
}

async fn bench(label: &str, database_url: String) {
    let dir = tempfile::tempdir().expect("dir");
    println!("{label}:");
    let t = Arc::new(start(database_url, dir.path()).await);
    let ids = Arc::new(preload(&t).await);
    run(t.clone(), ids.clone(), Op::Get, "get by id").await;
    run(t.clone(), ids.clone(), Op::List, "list page").await;
    run(t.clone(), ids.clone(), Op::ListAfter, "list after").await;
    run(t.clone(), ids.clone(), Op::Create, "create").await;
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("dir");
    println!("REST benchmark: {PRESENT} devices present, {CLIENTS} concurrent HTTPS clients, {REQUESTS} requests per operation");
    bench(
        "SQLite",
        format!("sqlite://{}", dir.path().join("bench.db").display()),
    )
    .await;
    match std::env::var("BENCH_MYSQL_URL") {
        Ok(server) => {
            let name = format!("bench_{:x}", rand::random::<u32>());
            let admin = sea_orm::Database::connect(server.as_str())
                .await
                .expect("MariaDB");
            admin
                .execute_unprepared(&format!("CREATE DATABASE `{name}`"))
                .await
                .expect("create db");
            bench(
                "MariaDB",
                format!("{}/{name}", server.trim_end_matches('/')),
            )
            .await;
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE `{name}`"))
                .await;
        }
        Err(_) => println!(
            "MariaDB: skipped (set BENCH_MYSQL_URL, or run tests/bench-rest.sh which starts one)"
        ),
    }
}
