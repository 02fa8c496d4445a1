//! The connection manager: picks the nearest edge (lowest TCP connect time), logs in,
//! keeps the session (two-way heartbeat, status reports, commands), and on loss
//! reconnects with exponential backoff and full jitter, failing over to the next
//! edge in order. The backoff restarts after a session that stayed up a while.
//!
//! Edges are `wss://` (TLS) or `ws://` (plain TCP, for a site whose TLS ends in
//! front of the edge, and for measuring the hub without TLS).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::SeedableRng;
use shared_proto::southbound::{Envelope, Login, LoginOk, Pdu, Status, MAX_FRAME_BYTES};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use shared_proto::endpoint::Endpoint as Target;

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::executor::Executor;
use crate::reporter::StatusSource;

mod session;

/// A session that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting, the TLS and WebSocket handshakes and the login together.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("reading the CA file {path}: {message}")]
    Ca { path: String, message: String },
    #[error("state directory: {0}")]
    State(#[from] std::io::Error),
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Lost,
    /// The edge said it is going away (it is stopping): dial again at once.
    Away,
    Shutdown,
    /// A `reboot` without a hook: the caller restarts the agent.
    Restart,
}

pub struct Agent {
    config: AgentConfig,
    /// `None` when every edge is `ws://` (no CA needed).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Local address the agent's connections leave from; `None` lets the system choose.
    local: Option<IpAddr>,
    executor: Executor,
    source: StatusSource,
    /// Simulated devices reboot instantly instead of restarting the process.
    simulated: bool,
    /// Counts successful logins, for progress displays.
    logins: Option<Arc<AtomicU64>>,
    /// The last status this agent reported, with its version.
    last: Option<(u64, Status)>,
    report_every: Duration,
    /// The host of the edge of the current session: uploads go there too.
    edge_host: String,
    /// Simulated devices: the share of installs that fail, in percent.
    install_fail_pct: u8,
    /// The version the last install put on the device (without a version file).
    installed: Option<String>,
}

/// The client side of the WebSocket: small buffers, because a simulator holds tens of
/// thousands of sessions in one process and the default 128 KiB read buffer per session
/// would dominate its memory.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(4 * MAX_FRAME_BYTES))
        .max_frame_size(Some(4 * MAX_FRAME_BYTES))
}

impl Agent {
    pub fn new(config: AgentConfig) -> Result<Self, AgentError> {
        let mut tls = None;
        for target in config.edges.iter().filter_map(|url| Target::parse(url)) {
            if target.tls {
                if tls.is_none() {
                    tls = Some(client_tls(&config.ca_file)?);
                }
            } else {
                tracing::warn!(edge = %target.url, "plain ws:// edge: the session, secret included, is not encrypted");
            }
        }
        Ok(Self {
            local: None,
            executor: Executor::new(&config)?,
            source: StatusSource::Host(Box::default()),
            simulated: false,
            logins: None,
            last: None,
            report_every: config.report_interval(),
            edge_host: String::new(),
            install_fail_pct: 0,
            installed: None,
            tls,
            config,
        })
    }

    /// A simulated device: synthetic status, no programs, nothing on disk. `tls` is
    /// needed for `wss://` edges; `local` is the address to connect from.
    pub fn simulated(
        config: AgentConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        local: Option<IpAddr>,
        seed: u64,
        logins: Arc<AtomicU64>,
    ) -> Self {
        Self {
            local,
            executor: Executor::in_memory(),
            source: StatusSource::synthetic(seed),
            simulated: true,
            logins: Some(logins),
            last: None,
            report_every: config.report_interval(),
            edge_host: String::new(),
            install_fail_pct: 0,
            installed: None,
            tls,
            config,
        }
    }

    /// A simulated device whose installs fail this often (in percent).
    pub fn with_install_fail_pct(mut self, pct: u8) -> Self {
        self.install_fail_pct = pct.min(100);
        self
    }

    /// Runs until `shutdown` turns true (or a `reboot` asks for a restart).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> End {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.backoff_first_ms),
            Duration::from_secs(self.config.backoff_cap_s),
        );
        let mut rng = rand::rngs::StdRng::from_entropy();
        // Whether the last round skipped its pause: an edge saying "going away" earns
        // one new round at once (the stopped edge no longer answers, so it sorts last),
        // never two in a row.
        let mut rushed = false;
        loop {
            let mut away = false;
            for target in self.nearest_first().await {
                if *shutdown.borrow() {
                    return End::Shutdown;
                }
                let Some((end, lasted)) = self.attempt(&target, &mut shutdown).await else {
                    continue;
                };
                if end == End::Away {
                    tracing::info!(edge = %target.url, "edge stopping; dialling again at once");
                    away = true;
                    continue;
                }
                if end != End::Lost {
                    return end;
                }
                tracing::warn!(edge = %target.url, "session lost");
                if lasted >= STABLE {
                    backoff.reset();
                }
            }
            if away && !rushed {
                rushed = true;
                continue;
            }
            rushed = false;
            let delay = backoff.next_delay(&mut rng);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return End::Shutdown,
            }
        }
    }

    /// The configured edges, nearest (fastest TCP connect) first; unreachable ones last.
    async fn nearest_first(&self) -> Vec<Target> {
        let targets: Vec<Target> = self
            .config
            .edges
            .iter()
            .filter_map(|u| Target::parse(u))
            .collect();
        if targets.len() < 2 {
            // Nothing to choose between: a probe would only cost the edge a connection.
            return targets;
        }
        let mut timed = Vec::new();
        for target in targets {
            let started = Instant::now();
            let reachable = tokio::time::timeout(CONNECT_TIMEOUT, self.dial(&target))
                .await
                .is_ok_and(|r| r.is_ok());
            let rtt = if reachable {
                started.elapsed()
            } else {
                Duration::MAX
            };
            timed.push((rtt, target));
        }
        timed.sort_by_key(|(rtt, _)| *rtt);
        timed.into_iter().map(|(_, t)| t).collect()
    }

    /// A TCP connection to `target`, from the local address when one is set.
    async fn dial(&self, target: &Target) -> std::io::Result<TcpStream> {
        let Some(local) = self.local else {
            return TcpStream::connect((target.host.as_str(), target.port)).await;
        };
        let mut last = std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{} has no address of the family of {local}", target.host),
        );
        for addr in tokio::net::lookup_host((target.host.as_str(), target.port)).await? {
            if addr.is_ipv4() != local.is_ipv4() {
                continue;
            }
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(local, 0))?;
            match socket.connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One connection to `target`: login, then the session until it ends, with how
    /// long the session lasted. `None` when connecting or logging in failed.
    async fn attempt(
        &mut self,
        target: &Target,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<(End, Duration)> {
        // Without a CA (none configured) a wss:// edge cannot be verified: skip it.
        let tls = match (target.tls, &self.tls) {
            (true, None) => return None,
            (true, Some(tls)) => Some(tokio_rustls::TlsConnector::from(tls.clone())),
            (false, _) => None,
        };
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        let tcp = tokio::time::timeout_at(deadline, self.dial(target))
            .await
            .ok()?
            .ok()?;
        let _ = tcp.set_nodelay(true);
        let Some(connector) = tls else {
            let (ws, ok) = tokio::time::timeout_at(deadline, self.login(tcp, target))
                .await
                .ok()??;
            return Some(self.logged_in(ws, ok, target, shutdown).await);
        };
        let name = rustls::pki_types::ServerName::try_from(target.host.clone()).ok()?;
        let opened = async {
            let tls = connector.connect(name, tcp).await.ok()?;
            self.login(tls, target).await
        };
        let (ws, ok) = tokio::time::timeout_at(deadline, opened).await.ok()??;
        Some(self.logged_in(ws, ok, target, shutdown).await)
    }

    /// The WebSocket handshake and the login over an open stream.
    async fn login<S>(&self, stream: S, target: &Target) -> Option<(WebSocketStream<S>, LoginOk)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(
            target.url.as_str(),
            stream,
            Some(ws_config()),
        )
        .await
        .ok()?;
        let by_hardware = !self.config.sn.is_empty();
        let login = Pdu::Login(Login {
            device_id: (!by_hardware).then(|| self.config.device_id.clone()),
            sn: by_hardware.then(|| self.config.sn.clone()),
            model: by_hardware.then(|| self.config.model.clone()),
            secret: self.config.secret.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        });
        ws.send(Message::Text(Envelope::new(1, login).encode().into()))
            .await
            .ok()?;
        loop {
            match ws.next().await? {
                Ok(Message::Text(t)) => match Envelope::decode(&t).ok()?.pdu {
                    Pdu::LoginOk(ok) => return Some((ws, ok)),
                    _ => continue,
                },
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                _ => return None,
            }
        }
    }

    async fn logged_in<S>(
        &mut self,
        ws: WebSocketStream<S>,
        ok: LoginOk,
        target: &Target,
        shutdown: &mut watch::Receiver<bool>,
    ) -> (End, Duration)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tracing::info!(edge = %target.url, device = %ok.device_id, "connected");
        // A device that logs in by serial number learns its id here; log uploads
        // authenticate with it.
        self.config.device_id.clone_from(&ok.device_id);
        self.edge_host.clone_from(&target.host);
        if let Some(logins) = &self.logins {
            logins.fetch_add(1, Ordering::Relaxed);
        }
        let started = Instant::now();
        let end = self.session(ws, ok, shutdown).await;
        (end, started.elapsed())
    }
}

/// TLS settings for dialling edges whose certificates chain to the CA in `ca_file`.
pub fn client_tls(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, AgentError> {
    let ca_error = |message: String| AgentError::Ca {
        path: ca_file.display().to_string(),
        message,
    };
    let pem = std::fs::read(ca_file).map_err(|e| ca_error(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| ca_error(e.to_string()))?;
        roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ca_error(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(tls))
}
