//! The federation as real processes: a center and two edges, each its own binary with
//! its own database, linked over TLS through fault proxies. Seeded random writes go to
//! all three (devices created, edited, moved and deleted, groups and memberships)
//! while links are cut and restored and processes are killed with SIGKILL and started
//! again. Once everything is back, every device, group and membership row is identical
//! at the center and at the edge it belongs to, and every acknowledged write holds
//! (unless a later acknowledged write replaced it).
//!
//! `PROC_SEED=S` replays a seed, `PROC_STEPS=N` sets the length (default 120). Runs on
//! MariaDB when `TEST_MYSQL_URL` names a server, with the center as two replicas over
//! one database, the second killed for good halfway; `TEST_MYSQL_URL_2` names the
//! server the second writes through (another Galera node) and `TEST_GALERA_KILL_PID`
//! that node's process, killed with it. The center binary is taken from next to this
//! test's own binaries (`cargo build --workspace` builds it).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use api_harness::fault_proxy::FaultProxy;
use fleet_store::{devices, groups, memberships};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{json, Value};

mod node;
mod shutdown;

use node::{binary, free_port, Launch, Node, PASSWORD};

/// Center replica `n` (from 1). The first makes a fresh database and the TLS
/// identity; the others run over the same database (on MariaDB through the second
/// server, when there is one) with the first's TLS files, as replicas behind one name.
async fn center(root: &Path, n: usize, first: Option<&Node>) -> Node {
    let dir = root.join(format!("center-{n}"));
    std::fs::create_dir_all(dir.join("data/tls")).expect("dir");
    let database_url = match first {
        None => api_harness::fresh_database(&dir).await,
        Some(first) => {
            for file in std::fs::read_dir(first.dir.join("data/tls")).expect("tls dir") {
                let file = file.expect("tls file").path();
                let to = dir.join("data/tls").join(file.file_name().expect("name"));
                std::fs::copy(&file, to).expect("copy tls file");
            }
            api_harness::on_second_server(&first.database_url)
        }
    };
    let (port, link) = (free_port(), free_port());
    Launch {
        name: format!("center-{n}"),
        bin: binary("center-cloud"),
        args: vec![
            "serve".into(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--link-listen=127.0.0.1:{link}"),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--database-url={database_url}"),
            "--link-heartbeat-s=1".into(),
            "--workers=1".into(),
        ],
        env: vec![
            ("CENTER_ADMIN_PASSWORD".into(), PASSWORD.into()),
            ("CENTER_LOG".into(), "info".into()),
        ],
        dir,
        port,
        database_url,
    }
    .launched()
    .await
}

impl Node {
    /// A center replica's link address.
    fn link_addr(&self) -> std::net::SocketAddr {
        self.args
            .iter()
            .find_map(|a| a.strip_prefix("--link-listen="))
            .and_then(|a| a.parse().ok())
            .expect("link address")
    }
}

/// An edge registered at `center`, dialing the replicas through its `proxies`, one each.
async fn edge(root: &Path, name: &str, center: &Node, proxies: &[FaultProxy]) -> (Node, i64) {
    let (status, reg) = center
        .call(
            Method::POST,
            "/api/v1/edges",
            Some(json!({"name": name, "site": name})),
        )
        .await;
    assert_eq!(status, 201, "{reg}");
    let id: i64 = reg["data"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("num");
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let database_url = api_harness::fresh_database(&dir).await;
    let port = free_port();
    let center_urls = proxies
        .iter()
        .map(|p| format!("wss://localhost:{}/link", p.addr().port()))
        .collect::<Vec<_>>()
        .join(",");
    let node = Launch {
        name: name.into(),
        bin: binary("edge-cloud"),
        args: vec![
            "serve".into(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--device-listen=127.0.0.1:{}", free_port()),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--database-url={database_url}"),
            format!("--worker-id={}", reg["data"]["worker_id"]),
            format!("--center-url={center_urls}"),
            format!("--edge-id={id}"),
            format!(
                "--center-ca={}",
                center.dir.join("data/tls/ca.crt").display()
            ),
            "--center-heartbeat-s=1".into(),
            "--center-backoff-max-s=1".into(),
            "--workers=1".into(),
        ],
        env: vec![
            (
                "EDGE_EDGE_SECRET".into(),
                reg["data"]["secret"].as_str().expect("secret").into(),
            ),
            ("EDGE_ADMIN_PASSWORD".into(), PASSWORD.into()),
            ("EDGE_LOG".into(), "info".into()),
        ],
        dir,
        port,
        database_url,
    }
    .launched()
    .await;
    (node, id)
}

/// The value each written field must end with: the last acknowledged write.
#[derive(Default)]
struct Oracle {
    fields: BTreeMap<(i64, &'static str), Value>,
    /// Fields whose last acknowledged write was made at a site. The center refuses a
    /// site's change to a device it has moved elsewhere meanwhile (the site is trusted
    /// for its own devices only), so a move makes such a write uncertain.
    at_site: std::collections::BTreeSet<(i64, &'static str)>,
    deleted: std::collections::BTreeSet<i64>,
    created: Vec<i64>,
}

/// A device the test knows of, and where it lives as far as the test knows.
#[derive(Clone, Copy)]
struct Known {
    id: i64,
    home: usize,
}

async fn rows_of(db: &DatabaseConnection, home: Option<i64>) -> Vec<Value> {
    let mut query = devices::Entity::find().order_by_asc(devices::Column::Id);
    if let Some(edge) = home {
        query = query.filter(devices::Column::EdgeId.eq(edge));
    }
    query
        .all(db)
        .await
        .expect("devices")
        .into_iter()
        .map(|d| serde_json::to_value(d).expect("json"))
        .collect()
}

async fn groups_of(db: &DatabaseConnection) -> Vec<Value> {
    groups::Entity::find()
        .order_by_asc(groups::Column::Id)
        .all(db)
        .await
        .expect("groups")
        .into_iter()
        .map(|g| serde_json::to_value(g).expect("json"))
        .collect()
}

async fn memberships_of(db: &DatabaseConnection, devices: &[i64]) -> Vec<Value> {
    memberships::Entity::find()
        .filter(memberships::Column::DeviceId.is_in(devices.to_vec()))
        .order_by_asc(memberships::Column::Id)
        .all(db)
        .await
        .expect("memberships")
        .into_iter()
        .map(|m| serde_json::to_value(m).expect("json"))
        .collect()
}

/// Whether every edge holds exactly the center's rows for what belongs to it.
async fn converged(center: &Node, edges: &[(Node, i64)]) -> Result<(), String> {
    let cdb = center.db().await;
    for (edge, id) in edges {
        let edb = edge.db().await;
        let at_center = rows_of(&cdb, Some(*id)).await;
        let at_edge = rows_of(&edb, None).await;
        if at_center != at_edge {
            return Err(format!(
                "{}: {} devices at the center, {} at the edge, or they differ",
                edge.name,
                at_center.len(),
                at_edge.len()
            ));
        }
        if groups_of(&cdb).await != groups_of(&edb).await {
            return Err(format!("{}: groups differ", edge.name));
        }
        let ids: Vec<i64> = at_center.iter().filter_map(|d| d["id"].as_i64()).collect();
        if memberships_of(&cdb, &ids).await != memberships_of(&edb, &ids).await {
            return Err(format!("{}: memberships differ", edge.name));
        }
    }
    Ok(())
}

async fn run(seed: u64, steps: usize) {
    let replay = format!("replay with PROC_SEED={seed} PROC_STEPS={steps}");
    let root = tempfile::tempdir().expect("dir");
    // On MariaDB the center runs as two replicas over one database (on a Galera
    // cluster, through two of its nodes); each edge dials both, each through its own
    // proxy, and the writes meant for the center go to either.
    let first = center(root.path(), 1, None).await;
    let mut centers = vec![first];
    if api_harness::on_mariadb() {
        let second = center(root.path(), 2, centers.first()).await;
        centers.push(second);
    }
    let mut proxies: Vec<Vec<FaultProxy>> = Vec::new();
    for _ in 0..2 {
        let mut own = Vec::new();
        for c in &centers {
            own.push(FaultProxy::start(c.link_addr()).await.expect("proxy"));
        }
        proxies.push(own);
    }
    let mut edges = vec![
        edge(root.path(), "edge-p1", &centers[0], &proxies[0]).await,
        edge(root.path(), "edge-p2", &centers[0], &proxies[1]).await,
    ];
    // Replicas still running: the second is killed for good halfway through.
    let mut live = centers.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut oracle = Oracle::default();
    let mut known: Vec<Known> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    let mut cut = [false, false];
    let (mut kills, mut writes) = (0, 0);
    for n in 0..steps {
        // Writes a few ms apart: the later acknowledged write carries the later stamp.
        tokio::time::sleep(Duration::from_millis(3)).await;
        if live > 1 && n == steps / 2 {
            // SIGKILL a replica for good (and, on Galera, the database node it writes
            // through): its edges fail over to the other one.
            centers[1].kill();
            if let Ok(pid) = std::env::var("TEST_GALERA_KILL_PID") {
                let killed = Command::new("kill").args(["-KILL", &pid]).status();
                assert!(
                    killed.is_ok_and(|s| s.success()),
                    "SIGKILL the Galera node {pid}"
                );
            }
            live = 1;
            kills += 1;
        }
        let center = &centers[rng.gen_range(0..live)];
        let roll = rng.gen_range(0..100);
        match roll {
            0..=29 => {
                // Most devices are registered at the center, some at a site.
                let home = rng.gen_range(0..edges.len());
                let at_center = roll < 20;
                let mut body =
                    api_harness::device_json(&format!("d{n}"), &format!("SN-{seed}-{n}"));
                let node = if at_center {
                    body["edge_id"] = json!(edges[home].1.to_string());
                    center
                } else {
                    &edges[home].0
                };
                let (status, made) = node.call(Method::POST, "/api/v1/devices", Some(body)).await;
                if status == 201 {
                    let id = made["data"]["id"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .expect("id");
                    known.push(Known { id, home });
                    oracle.created.push(id);
                    writes += 1;
                }
            }
            30..=59 if !known.is_empty() => {
                let device = known[rng.gen_range(0..known.len())];
                let (field, body) = if rng.gen_bool(0.5) {
                    let v = format!("name-{n}");
                    ("name", json!({"name": v}))
                } else {
                    let v = format!("description {n}");
                    ("description", json!({"description": v}))
                };
                let at_edge = rng.gen_bool(0.5);
                let node = if at_edge {
                    &edges[device.home].0
                } else {
                    center
                };
                let path = format!("/api/v1/devices/{}", device.id);
                let (status, _) = node.call(Method::PATCH, &path, Some(body.clone())).await;
                if status == 200 {
                    oracle
                        .fields
                        .insert((device.id, field), body[field].clone());
                    if at_edge {
                        oracle.at_site.insert((device.id, field));
                    } else {
                        oracle.at_site.remove(&(device.id, field));
                    }
                    writes += 1;
                }
            }
            60..=64 if !known.is_empty() => {
                let i = rng.gen_range(0..known.len());
                let device = known[i];
                let to = (device.home + 1) % edges.len();
                let path = format!("/api/v1/devices/{}", device.id);
                let body = json!({"edge_id": edges[to].1.to_string()});
                let (status, _) = center.call(Method::PATCH, &path, Some(body)).await;
                if status == 200 {
                    known[i].home = to;
                    for field in ["name", "description"] {
                        if oracle.at_site.remove(&(device.id, field)) {
                            oracle.fields.remove(&(device.id, field));
                        }
                    }
                    writes += 1;
                }
            }
            65..=69 if !known.is_empty() => {
                let i = rng.gen_range(0..known.len());
                let device = known[i];
                let node = if rng.gen_bool(0.5) {
                    &edges[device.home].0
                } else {
                    center
                };
                let path = format!("/api/v1/devices/{}", device.id);
                let (status, _) = node.call(Method::DELETE, &path, None).await;
                if status == 200 {
                    oracle.deleted.insert(device.id);
                    known.swap_remove(i);
                    writes += 1;
                }
            }
            70..=74 => {
                let (status, made) = center
                    .call(
                        Method::POST,
                        "/api/v1/groups",
                        Some(json!({"name": format!("g-{n}")})),
                    )
                    .await;
                if status == 201 {
                    groups.push(made["data"]["id"].as_str().expect("id").to_string());
                }
            }
            75..=79 if !groups.is_empty() && !known.is_empty() => {
                let group = groups[rng.gen_range(0..groups.len())].clone();
                let device = known[rng.gen_range(0..known.len())];
                let body = json!({"device_ids": [device.id.to_string()]});
                center
                    .call(
                        Method::POST,
                        &format!("/api/v1/groups/{group}/devices"),
                        Some(body),
                    )
                    .await;
            }
            80..=89 => {
                let i = rng.gen_range(0..proxies.len());
                for proxy in &proxies[i] {
                    if cut[i] {
                        proxy.restore();
                    } else {
                        proxy.cut();
                    }
                }
                cut[i] = !cut[i];
            }
            90..=95 => {
                let i = rng.gen_range(0..edges.len());
                edges[i].0.kill();
                edges[i].0.start();
                edges[i].0.ready().await;
                kills += 1;
            }
            96..=99 => {
                let c = &mut centers[rng.gen_range(0..live)];
                c.kill();
                c.start();
                c.ready().await;
                kills += 1;
            }
            _ => {}
        }
    }
    for proxy in proxies.iter().flatten() {
        proxy.restore();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match converged(&centers[0], &edges).await {
            Ok(()) => break,
            Err(why) if tokio::time::Instant::now() > deadline => {
                panic!(
                    "no convergence within 60 s: {why}; {replay}; logs in {}",
                    root.keep().display()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let cdb = centers[0].db().await;
    for id in &oracle.created {
        let row = devices::Entity::find_by_id(*id)
            .one(&cdb)
            .await
            .expect("query");
        assert!(
            row.is_some(),
            "acknowledged device {id} is missing; {replay}"
        );
    }
    for ((id, field), want) in &oracle.fields {
        let row = devices::Entity::find_by_id(*id)
            .one(&cdb)
            .await
            .expect("query")
            .expect("row");
        let have = serde_json::to_value(&row).expect("json")[*field].clone();
        assert_eq!(
            &have, want,
            "device {id} {field}: the last acknowledged write; {replay}"
        );
    }
    for id in &oracle.deleted {
        let row = devices::Entity::find_by_id(*id)
            .one(&cdb)
            .await
            .expect("query")
            .expect("row");
        assert!(row.deleted, "device {id} was deleted; {replay}");
    }
    eprintln!(
        "processes: seed {seed}: {} center replicas, {writes} acknowledged writes, {kills} SIGKILLs, converged",
        centers.len()
    );
    assert!(
        writes > 20 && kills > 0,
        "the run proved too little; {replay}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_of_processes_converges_through_cuts_and_sigkills() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seed = std::env::var("PROC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0c0f_fee0);
    let steps = std::env::var("PROC_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    run(seed, steps).await;
}
