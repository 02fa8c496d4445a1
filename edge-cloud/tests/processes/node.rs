//! One node of the federation as a child process: started, stopped and restarted with
//! the same data and ports, and called over HTTPS like an operator would.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use sea_orm::DatabaseConnection;
use serde_json::{json, Value};

pub(crate) const PASSWORD: &str = "process-test-pw";

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A binary built next to this crate's own (the target directory of this build).
pub(crate) fn binary(name: &str) -> PathBuf {
    let own = PathBuf::from(env!("CARGO_BIN_EXE_edge-cloud"));
    let path = own.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// One node as a child process, restartable with the same data and ports.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) bin: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) child: Option<Child>,
    pub(crate) client: Option<reqwest::Client>,
    pub(crate) token: String,
    pub(crate) database_url: String,
}

/// What a node is started with.
pub(crate) struct Launch {
    pub(crate) name: String,
    pub(crate) bin: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) database_url: String,
}

impl Launch {
    /// Starts the node for the first time and waits until it answers.
    pub(crate) async fn launched(self) -> Node {
        let mut node = Node {
            name: self.name,
            bin: self.bin,
            args: self.args,
            env: self.env,
            dir: self.dir,
            port: self.port,
            child: None,
            client: None,
            token: String::new(),
            database_url: self.database_url,
        };
        node.start();
        node.ready().await;
        node
    }
}

impl Node {
    pub(crate) fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("process.log"))
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let mut command = Command::new(&self.bin);
        command
            .args(&self.args)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().expect("the binary starts"));
    }

    /// SIGTERM, then waits for the process to exit; answers how it exited.
    pub(crate) async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("started");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
        for _ in 0..600 {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        panic!("{} did not exit within 30 s of SIGTERM", self.name);
    }

    /// SIGKILL: no shutdown, no flush, whatever it was doing.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) async fn ready(&mut self) {
        let ca = self.dir.join("data/tls/ca.crt");
        for _ in 0..300 {
            if self.client.is_none() {
                if let Ok(pem) = std::fs::read(&ca) {
                    let cert = reqwest::Certificate::from_pem(&pem).expect("CA parses");
                    self.client = Some(
                        reqwest::Client::builder()
                            .add_root_certificate(cert)
                            .use_rustls_tls()
                            .timeout(Duration::from_secs(10))
                            .build()
                            .expect("client"),
                    );
                }
            }
            if let Some(client) = &self.client {
                let url = format!("https://localhost:{}/readyz", self.port);
                if client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    if self.token.is_empty() {
                        let (status, body) = self
                            .call(
                                Method::POST,
                                "/api/v1/auth/login",
                                Some(json!({"username": "admin", "password": PASSWORD})),
                            )
                            .await;
                        assert_eq!(status, 200, "{}: {body}", self.name);
                        self.token = body["data"]["token"].as_str().expect("token").into();
                    }
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{} did not become ready; see {}",
            self.name,
            self.dir.display()
        );
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = self.client.as_ref().expect("started");
        let mut req = client
            .request(method, format!("https://localhost:{}{path}", self.port))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let text = res.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            // Not acknowledged: the test counts only what a node confirmed.
            Err(_) => (0, Value::Null),
        }
    }

    pub(crate) async fn db(&self) -> DatabaseConnection {
        fleet_store::connect(&self.database_url, 2)
            .await
            .expect("database")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
