//! Runs a real node (center or edge) per test on an ephemeral port with a fresh
//! database (SQLite in a temp dir, or a new MariaDB database when TEST_MYSQL_URL names
//! a server) and talks HTTPS to it, trusting the development CA the node generated.

pub mod fault_proxy;
pub mod release;
mod schema;

use std::path::PathBuf;

pub use schema::assert_schema_matches;

use actix_web::dev::ServerHandle;
use operator_api::server::Served;
use operator_api::settings::{NodeDefaults, NodeSettings};
use reqwest::Method;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{json, Value};

pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub admin: String,
    pub database_url: String,
    pub data_dir: PathBuf,
    handle: ServerHandle,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        drop(tokio::spawn(async move { handle.stop(false).await }));
    }
}

fn random_name() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

/// A database URL for a fresh, empty database on the selected backend.
pub async fn fresh_database(dir: &std::path::Path) -> String {
    match std::env::var("TEST_MYSQL_URL") {
        Ok(server) => {
            let name = random_name();
            let admin = Database::connect(server.as_str())
                .await
                .expect("MariaDB reachable");
            admin
                .execute_unprepared(&format!("CREATE DATABASE `{name}`"))
                .await
                .expect("create test database");
            admin.close().await.expect("close");
            format!("{}/{name}", server.trim_end_matches('/'))
        }
        Err(_) => format!("sqlite://{}", dir.join("test.db").display()),
    }
}

pub fn on_mariadb() -> bool {
    std::env::var("TEST_MYSQL_URL").is_ok()
}

/// The same database through the second server `TEST_MYSQL_URL_2` names (another node
/// of a Galera cluster), so that a second center replica writes through another node;
/// the URL unchanged when there is none.
pub fn on_second_server(database_url: &str) -> String {
    let (Ok(first), Ok(second)) = (
        std::env::var("TEST_MYSQL_URL"),
        std::env::var("TEST_MYSQL_URL_2"),
    ) else {
        return database_url.to_string();
    };
    match database_url.strip_prefix(first.trim_end_matches('/')) {
        Some(rest) => format!("{}{rest}", second.trim_end_matches('/')),
        None => database_url.to_string(),
    }
}

/// Settings for a test node: an ephemeral loopback port, a fresh database, a known
/// admin password and one worker. The directory lives as long as the returned guard.
pub async fn test_settings(defaults: NodeDefaults) -> (tempfile::TempDir, NodeSettings) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = NodeSettings::with_data_dir(defaults, dir.path());
    settings.listen = "127.0.0.1:0".parse().expect("addr");
    settings.database_url = fresh_database(dir.path()).await;
    settings.db_max_connections = 8;
    settings.admin_password = Some(ADMIN_PASSWORD.into());
    settings.workers = Some(1);
    (dir, settings)
}

/// Runs a built node in the background and logs in as admin.
pub async fn start(app: Served, dir: tempfile::TempDir, database_url: String) -> TestApp {
    let port = app.port();
    let tls = app.tls;
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = &app.ca_file {
        let pem = std::fs::read(ca).expect("CA written");
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA parses"))
            .use_rustls_tls();
    }
    let client = builder.build().expect("client");
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let scheme = if tls { "https" } else { "http" };
    let mut test = TestApp {
        address: format!("{scheme}://localhost:{port}"),
        client,
        admin: String::new(),
        database_url,
        data_dir: dir.path().to_path_buf(),
        handle,
        _dir: dir,
    };
    test.admin = test.login("admin", ADMIN_PASSWORD).await;
    test
}

impl TestApp {
    pub async fn db(&self) -> DatabaseConnection {
        fleet_store::connect(&self.database_url, 2)
            .await
            .expect("test db connection")
    }

    /// Sends a request and returns the status and the JSON body (Null when not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request sent");
        (res.status().as_u16(), res.text().await.expect("body"))
    }

    /// The node's `/metrics` text (Prometheus exposition).
    pub async fn metrics(&self) -> String {
        let (status, text) = self
            .raw(Method::GET, "/metrics", None, "text/plain", Vec::new())
            .await;
        assert_eq!(status, 200, "metrics answered");
        text
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, Some(&self.admin), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(&self.admin), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PATCH, path, Some(&self.admin), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(&self.admin), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(Method::DELETE, path, Some(&self.admin), body)
            .await
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(status, 200, "login of {username}: {body}");
        body["data"]["token"].as_str().expect("token").to_string()
    }

    /// Creates an account with `role` scoped to `groups`, and logs it in.
    pub async fn user(&self, username: &str, role: &str, groups: &[&str]) -> (String, String) {
        let (status, body) = self
            .post(
                "/api/v1/users",
                json!({"username": username, "password": "password-123", "role": role, "groups": groups}),
            )
            .await;
        assert_eq!(status, 201, "create user: {body}");
        let id = body["data"]["id"].as_str().expect("id").to_string();
        (id, self.login(username, "password-123").await)
    }

    pub async fn group(&self, name: &str) -> String {
        let (status, body) = self.post("/api/v1/groups", json!({"name": name})).await;
        assert_eq!(status, 201, "create group: {body}");
        body["data"]["id"].as_str().expect("id").to_string()
    }

    /// Creates a device as admin and returns its `data`.
    pub async fn device(&self, name: &str, sn: &str) -> Value {
        let (status, body) = self.post("/api/v1/devices", device_json(name, sn)).await;
        assert_eq!(status, 201, "create device: {body}");
        body["data"].clone()
    }

    pub async fn count_devices(&self) -> u64 {
        let (status, body) = self.get("/api/v1/devices?per_page=1").await;
        assert_eq!(status, 200, "{body}");
        body["data"]["total"].as_u64().expect("total")
    }
}

pub fn device_json(name: &str, sn: &str) -> Value {
    json!({
        "name": name,
        "type": "gateway",
        "hardware": {"model": "Raspberry Pi 4", "sn": sn},
        "software": {"version": "1.2.0", "last_update": "2026-01-01 10:00:00"},
        "nic": [{"type": "eth", "mac": "12:34:56:78:9a:bc", "ipv4": "192.168.1.2"}],
        "status": "active"
    })
}

/// Asserts an error envelope: status, stable code and (when given) the field.
pub fn assert_error(status: u16, body: &Value, want_status: u16, code: &str, field: Option<&str>) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["status"], want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    if let Some(f) = field {
        assert_eq!(body["field"], f, "{body}");
    }
}
