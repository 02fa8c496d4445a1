//! The edge's end of its federation link: it dials the center (TLS, checked against
//! the configured CA), logs in with the edge id, secret and worker id from the edge's
//! registration, and runs the two-way change-sync (`federation::Link`). When the link
//! breaks it dials again with exponential backoff and full jitter; meanwhile the edge
//! goes on serving its devices on its own, and catches up once it is back.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use federation::protocol::{Hello, Live, LiveStatus, VERSION};
use federation::session::{recv, send, ws_config};
use federation::{Ended, Link, LinkPdu, Scope};
use fleet_store::link_cursors;
use operator_api::Node;
use rand::SeedableRng;
use sea_orm::EntityTrait;
use shared_proto::backoff::Backoff;
use shared_proto::endpoint::Endpoint;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::hub::Sessions;

/// A link that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the center hears who is online and what changed in their statuses.
const LIVE_EVERY: Duration = Duration::from_secs(1);

/// How this edge joins a center.
#[derive(Debug, Clone)]
pub struct CenterLink {
    /// The center's link endpoint, `wss://host:port/…` (or `ws://` without TLS).
    pub url: String,
    pub edge_id: i64,
    pub secret: String,
    pub ca_file: Option<PathBuf>,
    pub heartbeat: Duration,
    pub backoff_cap: Duration,
}

pub struct Uplink {
    config: CenterLink,
    node: web::Data<Node>,
    sessions: Arc<Sessions>,
    tls: Option<TlsConnector>,
    stop: watch::Sender<bool>,
    online: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("center_url {0:?} is not a ws:// or wss:// URL with a host")]
    Url(String),
    #[error("center_ca: {0}")]
    Tls(#[from] operator_api::tls::TlsError),
    #[error("center_ca is required for a wss:// center_url")]
    NoCa,
}

impl Uplink {
    pub fn new(
        config: CenterLink,
        node: web::Data<Node>,
        sessions: Arc<Sessions>,
    ) -> Result<Self, UplinkError> {
        let t = Endpoint::parse(&config.url).ok_or_else(|| UplinkError::Url(config.url.clone()))?;
        let tls = match (t.tls, &config.ca_file) {
            (false, _) => None,
            (true, None) => return Err(UplinkError::NoCa),
            (true, Some(ca)) => Some(TlsConnector::from(Arc::new(
                operator_api::tls::client_config(ca)?,
            ))),
        };
        Ok(Self {
            config,
            node,
            sessions,
            tls,
            stop: watch::channel(false).0,
            online: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn is_online(&self) -> bool {
        self.online.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Keeps the link up until [`Uplink::shutdown`].
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), self.config.backoff_cap);
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut stopped = self.stop.subscribe();
        loop {
            let started = Instant::now();
            match self.once().await {
                Ok(Ended::Stopped) => return,
                Ok(ended) => tracing::warn!(reason = %ended, "center link down"),
                Err(why) => tracing::warn!(reason = %why, "center link failed"),
            }
            self.online
                .store(false, std::sync::atomic::Ordering::Relaxed);
            if started.elapsed() >= STABLE {
                backoff.reset();
            }
            let pause = backoff.next_delay(&mut rng);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped.changed() => return,
            }
        }
    }

    async fn once(&self) -> Result<Ended, String> {
        let t = Endpoint::parse(&self.config.url).ok_or("bad center URL")?;
        let tcp = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| format!("connecting: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| e.to_string())?;
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_string())?
                    .map_err(|e| format!("TLS: {e}"))?;
                self.linked(stream).await
            }
            None => self.linked(tcp).await,
        }
    }

    async fn linked<S>(&self, stream: S) -> Result<Ended, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        // An edge has one peer, the center: its one cursor row says how far it got.
        let applied = link_cursors::Entity::find()
            .one(&self.node.db)
            .await
            .map_err(|e| e.to_string())?
            .map_or(0, |c| c.applied);
        let handshake = async {
            let (mut ws, _) = tokio_tungstenite::client_async_with_config(
                &self.config.url,
                stream,
                Some(ws_config()),
            )
            .await
            .map_err(|e| format!("WebSocket: {e}"))?;
            let hello = LinkPdu::Hello(Hello {
                version: VERSION,
                edge_id: self.config.edge_id.to_string(),
                secret: self.config.secret.clone(),
                node_id: self.node.replica.node_id(),
                applied,
            });
            send(&mut ws, &hello).await.map_err(|e| e.to_string())?;
            match recv(&mut ws).await {
                Some(Ok(LinkPdu::Welcome(w))) => Ok((ws, w)),
                // A refused login gets no answer: the center just closes.
                _ => Err("the center refused the login (edge id, secret or worker id)".to_string()),
            }
        };
        let (ws, welcome) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| "no answer to the login".to_string())??;
        tracing::info!(center = %self.config.url, "center link up");
        self.online
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let link = Link {
            node: self.node.clone(),
            peer: welcome.center_node,
            scope: Scope::Everything,
            heartbeat: self.config.heartbeat,
            home: Some(self.config.edge_id),
            live: None,
        };
        let (live_tx, live) = mpsc::channel(4);
        let reporter = tokio::spawn(report_live(self.sessions.clone(), live_tx));
        let ended = link
            .run(ws, welcome.applied, live, self.stop.subscribe())
            .await;
        reporter.abort();
        Ok(ended)
    }
}

/// Sends the live view while the link is up: all of it first, then every second who
/// came and went and the statuses that changed since (one frame, however many
/// reports a device made in between).
async fn report_live(sessions: Arc<Sessions>, out: mpsc::Sender<LinkPdu>) {
    let mut sent_online: HashSet<i64> = HashSet::new();
    let mut sent_versions: HashMap<i64, (u64, i64)> = HashMap::new();
    let mut full = true;
    let mut tick = tokio::time::interval(LIVE_EVERY);
    loop {
        tick.tick().await;
        let online = sessions.online_ids();
        let mut statuses = Vec::new();
        for (device, version, config_version) in sessions.versions() {
            if sent_versions.get(&device) == Some(&(version, config_version)) {
                continue;
            }
            if let Some(held) = sessions.status(device) {
                statuses.push(LiveStatus {
                    device_id: device,
                    version: i64::try_from(version).unwrap_or(i64::MAX),
                    config_version,
                    status: serde_json::to_value(held.status).unwrap_or_default(),
                });
                sent_versions.insert(device, (version, config_version));
            }
        }
        let live = Live {
            full,
            online: if full {
                online.iter().copied().collect()
            } else {
                online.difference(&sent_online).copied().collect()
            },
            offline: if full {
                Vec::new()
            } else {
                sent_online.difference(&online).copied().collect()
            },
            statuses,
        };
        let news = !live.online.is_empty() || !live.offline.is_empty() || !live.statuses.is_empty();
        if full || news {
            if out.send(LinkPdu::Live(live)).await.is_err() {
                return;
            }
            full = false;
        }
        sent_online = online;
    }
}
