//! The edge's end of its federation link: it dials the center (TLS, checked against
//! the configured CA), logs in with the edge id, secret and worker id from the edge's
//! registration, and runs the two-way change-sync (`federation::Link`). It may know
//! several center replicas: when a dial fails or the link breaks it moves to the next
//! URL, and pauses with exponential backoff and full jitter once every URL has been
//! tried; meanwhile the edge goes on serving its devices on its own, and catches up
//! once it is back.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use federation::protocol::{Changes, Hello, Live, LiveStatus, Roam, VERSION};
use federation::session::{recv, send, ws_config};
use federation::{Ended, Link, LinkPdu, Scope};
use fleet_node::Node;
use fleet_store::devices::{self, LoginName};
use fleet_store::link_cursors;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::SeedableRng;
use sea_orm::EntityTrait;
use shared_proto::backoff::Backoff;
use shared_proto::endpoint::Endpoint;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::hub::Sessions;

/// A link that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the center hears who is online and what changed in their statuses.
const LIVE_EVERY: Duration = Duration::from_secs(1);
/// Results a second that go up the link ahead of the change log; past it, they go
/// with the log alone.
const FAST_RESULTS_PER_S: usize = 200;
/// How long a roaming login waits for the center's answer, then for the device's
/// rows; together well inside a device's login timeout.
const ROAM_ANSWER: Duration = Duration::from_secs(3);
const ROAM_ARRIVAL: Duration = Duration::from_secs(4);

/// How this edge joins a center.
#[derive(Debug, Clone)]
pub struct CenterLink {
    /// The link endpoints of the center's replicas, `wss://host:port/…` (or `ws://`
    /// without TLS), dialled in turn.
    pub urls: Vec<String>,
    /// The center replicas' REST APIs, where artifacts are fetched, tried in turn.
    pub api_urls: Vec<reqwest::Url>,
    pub edge_id: i64,
    pub secret: String,
    pub ca_file: Option<PathBuf>,
    pub heartbeat: Duration,
    pub backoff_cap: Duration,
}

/// Which center URL the link runs over, for `/metrics`.
#[derive(Clone, Default)]
pub struct UplinkMetrics {
    linked: Family<UrlLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabel {
    url: String,
}

impl UplinkMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "center_link_up",
            "1 for the center URL the link runs over now, 0 for the edge's other center URLs",
            self.linked.clone(),
        );
    }

    fn set(&self, url: &str, up: bool) {
        self.linked
            .get_or_create(&UrlLabel { url: url.into() })
            .set(i64::from(up));
    }
}

pub struct Uplink {
    config: CenterLink,
    metrics: UplinkMetrics,
    /// `config.urls`, parsed once.
    centers: Vec<Endpoint>,
    node: Arc<Node>,
    sessions: Arc<Sessions>,
    tls: Option<TlsConnector>,
    stop: watch::Sender<bool>,
    /// 0 while the link is down, else 1 + the index of the URL it runs over: one
    /// word, so a reader never pairs "up" with the URL of another attempt.
    linked: AtomicUsize,
    /// Frames for the center on the link that is up now.
    to_center: std::sync::Mutex<Option<mpsc::Sender<LinkPdu>>>,
    /// Roaming requests waiting for the center's answer.
    roaming: DashMap<u64, oneshot::Sender<Option<i64>>>,
    next_request: AtomicU64,
}

/// Why a roaming device could not be taken in.
#[derive(Debug, thiserror::Error)]
pub enum RoamError {
    #[error("the center is not reachable")]
    Unreachable,
    #[error("the center refused the device")]
    Refused,
    #[error("the device's rows did not arrive in time")]
    NotArrived,
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
}

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("center_url {0:?} is not a ws:// or wss:// URL with a host")]
    Url(String),
    #[error("center_url: at least one URL is required")]
    NoUrl,
    #[error("center_ca: {0}")]
    Tls(#[from] fleet_node::tls::TlsError),
    #[error("center_ca is required for a wss:// center_url")]
    NoCa,
}

impl Uplink {
    pub fn new(
        config: CenterLink,
        node: Arc<Node>,
        sessions: Arc<Sessions>,
        metrics: UplinkMetrics,
    ) -> Result<Self, UplinkError> {
        let centers = config
            .urls
            .iter()
            .map(|url| Endpoint::parse(url).ok_or_else(|| UplinkError::Url(url.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        if centers.is_empty() {
            return Err(UplinkError::NoUrl);
        }
        // Every URL shows from the start, so a scrape tells which ones the edge knows.
        for center in &centers {
            metrics.set(&center.url, false);
        }
        // One connector serves every wss:// URL: each is checked against the same CA,
        // under its own host name.
        let tls = match (centers.iter().any(|c| c.tls), &config.ca_file) {
            (false, _) => None,
            (true, None) => return Err(UplinkError::NoCa),
            (true, Some(ca)) => Some(TlsConnector::from(Arc::new(
                fleet_node::tls::client_config(ca)?,
            ))),
        };
        Ok(Self {
            config,
            metrics,
            centers,
            node,
            sessions,
            tls,
            stop: watch::channel(false).0,
            linked: AtomicUsize::new(0),
            to_center: std::sync::Mutex::new(None),
            roaming: DashMap::new(),
            next_request: AtomicU64::new(1),
        })
    }

    pub fn is_online(&self) -> bool {
        self.linked.load(Ordering::Relaxed) != 0
    }

    /// The center URL the link runs over now; `None` while it is down.
    pub fn center_url(&self) -> Option<&str> {
        let linked = self.linked.load(Ordering::Relaxed);
        let index = linked.checked_sub(1)?;
        self.centers.get(index).map(|c| c.url.as_str())
    }

    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Takes in a device homed elsewhere (or registered at the center and not yet
    /// here): the center checks its credentials and makes this edge its home, and
    /// the device's rows arrive by sync. Refused when the center is not reachable,
    /// as docs/design.md §5 asks: only the center may move a device.
    pub async fn roam(&self, name: LoginName<'_>, secret: &str) -> Result<i64, RoamError> {
        let out = self
            .to_center
            .lock()
            .map_err(|_| RoamError::Unreachable)?
            .clone()
            .ok_or(RoamError::Unreachable)?;
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer) = oneshot::channel();
        self.roaming.insert(request, answer_tx);
        let (device_id, model, sn) = match name {
            LoginName::Id(id) => (Some(id), None, None),
            LoginName::Serial { model, sn } => {
                (None, Some(model.to_string()), Some(sn.to_string()))
            }
        };
        let asked = out
            .send(LinkPdu::Roam(Roam {
                request,
                device_id,
                model,
                sn,
                secret: secret.to_string(),
            }))
            .await;
        let answered = match asked {
            Ok(()) => tokio::time::timeout(ROAM_ANSWER, answer).await.ok(),
            Err(_) => None,
        };
        self.roaming.remove(&request);
        let device = match answered {
            Some(Ok(Some(device))) => device,
            Some(Ok(None)) => return Err(RoamError::Refused),
            // No answer in time, or the link went down meanwhile.
            _ => return Err(RoamError::Unreachable),
        };
        self.arrival(device).await?;
        Ok(device)
    }

    /// Waits until the device's row, homed here, has been merged.
    async fn arrival(&self, device: i64) -> Result<(), RoamError> {
        let deadline = Instant::now() + ROAM_ARRIVAL;
        loop {
            let notified = self.node.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let row = devices::Entity::find_by_id(device)
                .one(&self.node.db)
                .await?;
            if row.is_some_and(|d| !d.deleted && d.edge_id == Some(self.config.edge_id)) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(RoamError::NotArrived);
            }
        }
    }

    /// Keeps the link up until [`Uplink::shutdown`].
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), self.config.backoff_cap);
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut stopped = self.stop.subscribe();
        let mut index = 0;
        // URLs tried since the last pause or stable link: the backoff waits only once
        // all of them failed, so one dead replica never delays dialling the others.
        let mut tried = 0;
        loop {
            // Checked here too: within a round no pause notices a shutdown.
            if *self.stop.borrow() {
                return;
            }
            let started = Instant::now();
            let center = &self.centers[index];
            match self.once(index).await {
                Ok(Ended::Stopped) => return,
                Ok(ended) => {
                    tracing::warn!(center = %center.url, reason = %ended, "center link down")
                }
                Err(why) => {
                    tracing::warn!(center = %center.url, reason = %why, "center link failed")
                }
            }
            self.linked.store(0, Ordering::Relaxed);
            self.metrics.set(&center.url, false);
            if started.elapsed() >= STABLE {
                backoff.reset();
                tried = 0;
            }
            tried += 1;
            index = self.next_center(index);
            if tried < self.centers.len() {
                continue;
            }
            tried = 0;
            let pause = backoff.next_delay(&mut rng);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped.changed() => return,
            }
        }
    }

    /// The URL after `index`, round robin; one line in the log when it is another.
    fn next_center(&self, index: usize) -> usize {
        let next = (index + 1) % self.centers.len();
        if next != index {
            tracing::info!(
                from = %self.centers[index].url,
                to = %self.centers[next].url,
                "switching to another center URL"
            );
        }
        next
    }

    async fn once(&self, index: usize) -> Result<Ended, String> {
        let t = &self.centers[index];
        let tcp = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| format!("connecting: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match self.tls.as_ref().filter(|_| t.tls) {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| e.to_string())?;
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_string())?
                    .map_err(|e| format!("TLS: {e}"))?;
                self.linked(index, stream).await
            }
            None => self.linked(index, tcp).await,
        }
    }

    async fn linked<S>(&self, index: usize, stream: S) -> Result<Ended, String>
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
                &self.centers[index].url,
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
                wall_ms: fleet_store::now_ms(),
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
        if applied != 0
            && welcome.applied
                > fleet_store::sync::head(&self.node.db)
                    .await
                    .map_err(|e| e.to_string())?
        {
            // The center remembers more of this edge's log than the edge holds: the
            // edge's database was restored from a backup. Forget the center's log
            // too and link again: the center then sends everything (a snapshot),
            // which brings back what this edge wrote after the backup, and the edge
            // sends its own snapshot, which resets the center's cursor.
            tracing::warn!(
                remembered = welcome.applied,
                "the center remembers more of this edge's log than it holds (restored from a backup?); exchanging snapshots"
            );
            let center = welcome.center_node;
            self.node
                .transact(|txn| async move { link_cursors::set_applied(&*txn, center, 0).await })
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Ended::Lost("starting over from snapshots".into()));
        }
        federation::protocol::warn_on_skew(
            "center",
            welcome.wall_ms,
            self.node.replica.max_ahead_ms(),
        );
        tracing::info!(center = %self.centers[index].url, "center link up");
        self.linked.store(index + 1, Ordering::Relaxed);
        self.metrics.set(&self.centers[index].url, true);
        let (out_tx, out) = mpsc::channel(64);
        let (inbox_tx, mut inbox) = mpsc::channel(64);
        let link = Link {
            node: self.node.clone(),
            peer: welcome.center_node,
            scope: Scope::Everything,
            heartbeat: self.config.heartbeat,
            home: Some(self.config.edge_id),
            inbox: Some(inbox_tx),
            author: None,
            on_refusal: None,
        };
        if let Ok(mut slot) = self.to_center.lock() {
            *slot = Some(out_tx.clone());
        }
        let reporter = tokio::spawn(report_live(self.sessions.clone(), out_tx.clone()));
        let results = tokio::spawn(forward_results(self.node.clone(), out_tx));
        let answers = async {
            while let Some(pdu) = inbox.recv().await {
                if let LinkPdu::Roamed(answer) = pdu {
                    if let Some((_, waiting)) = self.roaming.remove(&answer.request) {
                        let _ = waiting.send(answer.device_id);
                    }
                }
            }
        };
        let ended = tokio::select! {
            ended = link.run(ws, welcome.applied, out, self.stop.subscribe()) => ended,
            () = answers => Ended::Lost("the link's inbox closed".into()),
        };
        reporter.abort();
        results.abort();
        if let Ok(mut slot) = self.to_center.lock() {
            *slot = None;
        }
        // Whoever still waits hears the center is gone.
        self.roaming.clear();
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

/// Sends the results devices give up the link at once, before this edge commits them
/// and ahead of the change log that carries them too (the center merges them like any
/// change, with the same checks, so getting one twice is harmless): an operator
/// waiting at the center hears a result without waiting for this edge's commit and its
/// next push. The fast path is for the few results someone waits on: past
/// `FAST_RESULTS_PER_S`, or when the link is busy, results go with the log alone, in
/// bulk, instead of being merged twice.
async fn forward_results(node: Arc<Node>, out: mpsc::Sender<LinkPdu>) {
    let mut ending = node.ending.subscribe();
    let me = node.replica.node_id();
    let mut window = Instant::now();
    let mut sent = 0;
    loop {
        let command = match ending.recv().await {
            Ok(command) => command,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if window.elapsed() >= Duration::from_secs(1) {
            window = Instant::now();
            sent = 0;
        }
        if sent >= FAST_RESULTS_PER_S {
            continue;
        }
        sent += 1;
        let Ok(changes) = fleet_store::sync::row_changes(&command) else {
            continue;
        };
        // Only what this edge stamped: the rest of the row is the center's own.
        let changes = changes
            .into_iter()
            .filter(|c| fleet_store::clock::node_of(c.hlc) == me)
            .collect();
        let _ = out.try_send(LinkPdu::Changes(Changes { changes, upto: 0 }));
    }
}
