//! Many devices at once: `provision` registers N devices at an edge's site API and
//! writes their credentials (`device_id,secret` CSV); `simulate` runs the devices of
//! such a file as virtual agents in one process, on one runtime.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{AgentConfig, ConfigError};
use crate::link::{client_tls, Agent, AgentError};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("credentials file {path}: {message}")]
    Credentials { path: String, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("site API: {0}")]
    Api(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Reads `device_id,secret` lines (with that header).
pub fn read_credentials(path: &Path) -> Result<Vec<(String, String)>, FleetError> {
    let err = |message: String| FleetError::Credentials {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("device_id,secret") {
        return Err(err("the first line must be `device_id,secret`".into()));
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.split_once(',')
                .map(|(id, secret)| (id.trim().to_string(), secret.trim().to_string()))
                .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
                .ok_or_else(|| err(format!("line {} is not `device_id,secret`", i + 2)))
        })
        .collect()
}

/// Runs every device of `credentials` against `edges` (over TLS, trusting `ca_file`)
/// until `shutdown`, printing progress on stderr while they connect.
pub async fn simulate(
    credentials: Vec<(String, String)>,
    edges: Vec<String>,
    ca_file: &Path,
    report_interval_s: u64,
    shutdown: watch::Receiver<bool>,
) -> Result<(), FleetError> {
    Simulation {
        edges,
        ca_file: Some(ca_file.to_path_buf()),
        report_interval_s,
        source_ips: Vec::new(),
        install_fail_pct: 0,
        update_public_key: None,
    }
    .run(credentials, shutdown)
    .await
}

/// How `simulate` runs its devices.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Edge device endpoints, `wss://` or `ws://`; each device uses the nearest.
    pub edges: Vec<String>,
    /// CA certificate of the edges, needed only for `wss://` edges.
    pub ca_file: Option<PathBuf>,
    pub report_interval_s: u64,
    /// Local addresses the devices connect from, in turn. One source address has
    /// only ~28k ephemeral ports, so larger fleets on one machine need several
    /// (e.g. 127.0.0.2, 127.0.0.3, …). Empty: the system chooses.
    pub source_ips: Vec<IpAddr>,
    /// The share of installs that fail, in percent (the download and its digest are
    /// real; the install is not).
    pub install_fail_pct: u8,
    /// The center's signing key the devices verify manifests with; without it they
    /// install unverified (a load test's devices, not real ones).
    pub update_public_key: Option<String>,
}

impl Simulation {
    /// Runs every device of `credentials` until `shutdown`, printing progress on
    /// stderr while they connect.
    pub async fn run(
        self,
        credentials: Vec<(String, String)>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), FleetError> {
        let configs: Vec<AgentConfig> = credentials
            .into_iter()
            .map(|(device_id, secret)| AgentConfig {
                device_id,
                sn: String::new(),
                model: String::new(),
                secret,
                edges: self.edges.clone(),
                ca_file: self.ca_file.clone().unwrap_or_default(),
                report_interval_s: self.report_interval_s,
                state_dir: PathBuf::new(),
                scripts: Default::default(),
                reboot_hook: None,
                output_cap_bytes: 4096,
                backoff_first_ms: 500,
                backoff_cap_s: 30,
                log_path: None,
                log_max_bytes: 0,
                update_public_key: self.update_public_key.clone(),
                install_hook: None,
                rollback_hook: None,
                software_version_file: None,
            })
            .collect();
        // Every device shares the edges and the CA: one check covers them all.
        if let Some(first) = configs.first() {
            first.validate()?;
        }
        let tls = match &self.ca_file {
            Some(ca) if self.edges.iter().any(|e| e.starts_with("wss://")) => Some(client_tls(ca)?),
            _ => None,
        };
        let logins = Arc::new(AtomicU64::new(0));
        let total = configs.len() as u64;
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(configs.len());
        let mut sources = self.source_ips.iter().copied().cycle();
        for (n, config) in configs.into_iter().enumerate() {
            let agent = Agent::simulated(
                config,
                tls.as_ref().map(own_sessions),
                sources.next(),
                n as u64,
                logins.clone(),
            )
            .with_install_fail_pct(self.install_fail_pct);
            tasks.push(tokio::spawn(agent.run(shutdown.clone())));
        }
        let mut shutdown_seen = shutdown.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut announced = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = logins.load(Ordering::Relaxed);
                    if !announced {
                        let mut err = std::io::stderr().lock();
                        let _ = write!(err, "\rconnecting: {now}/{total} devices logged in ({:.1} s)", started.elapsed().as_secs_f64());
                        if now >= total {
                            let _ = writeln!(err);
                            announced = true;
                        }
                    }
                }
                _ = shutdown_seen.changed() => break,
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }
}

/// Registers `count` devices at the site API at `site` and writes their credentials.
pub async fn provision(
    site: &str,
    ca_file: &Path,
    username: &str,
    password: &str,
    count: usize,
    prefix: &str,
    out: &Path,
) -> Result<usize, FleetError> {
    let pem = std::fs::read(ca_file)
        .map_err(|e| FleetError::Api(format!("reading {}: {e}", ca_file.display())))?;
    let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| FleetError::Api(e.to_string()))?;
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .use_rustls_tls()
        .build()
        .map_err(|e| FleetError::Api(e.to_string()))?;
    let login: serde_json::Value = client
        .post(format!("{site}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .map_err(|e| FleetError::Api(e.to_string()))?
        .json()
        .await
        .map_err(|e| FleetError::Api(e.to_string()))?;
    let token = login["data"]["token"]
        .as_str()
        .ok_or_else(|| FleetError::Api(format!("login refused: {}", login["message"])))?
        .to_string();
    let mut lines = vec!["device_id,secret".to_string()];
    let started = Instant::now();
    for batch in (0..count).collect::<Vec<_>>().chunks(32) {
        let requests = batch.iter().map(|i| {
            let body = serde_json::json!({
                "name": format!("{prefix}-{i}"),
                "type": "simulated",
                "hardware": {"model": "simulator", "sn": format!("{prefix}-{i}")},
            });
            client
                .post(format!("{site}/api/v1/devices"))
                .bearer_auth(&token)
                .json(&body)
                .send()
        });
        for response in futures_util::future::join_all(requests).await {
            let answer: serde_json::Value = response
                .map_err(|e| FleetError::Api(e.to_string()))?
                .json()
                .await
                .map_err(|e| FleetError::Api(e.to_string()))?;
            match (
                answer["data"]["id"].as_str(),
                answer["data"]["secret"].as_str(),
            ) {
                (Some(id), Some(secret)) => lines.push(format!("{id},{secret}")),
                _ => {
                    return Err(FleetError::Api(format!(
                        "registering a device: {}",
                        answer["message"]
                    )))
                }
            }
        }
        let done = lines.len() - 1;
        if done % 1000 < 32 || done == count {
            let _ = write!(
                std::io::stderr(),
                "\rregistered {done}/{count} ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let _ = writeln!(std::io::stderr());
    let text = lines.join("\n") + "\n";
    std::fs::write(out, text).map_err(|source| FleetError::Write {
        path: out.display().to_string(),
        source,
    })?;
    Ok(lines.len() - 1)
}

/// A simulated device's TLS settings: the shared trust with a memory of sessions of
/// its own, as a real device has, so each one resumes its own session after its edge
/// restarts.
fn own_sessions(shared: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut own = (**shared).clone();
    own.resumption = rustls::client::Resumption::in_memory_sessions(1);
    Arc::new(own)
}
