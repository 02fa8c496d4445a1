//! The center's end of the federation links: a TLS WebSocket endpoint that edges
//! dial. An edge logs in with the id, secret and worker id it got at registration; a
//! wrong one learns nothing (the connection is dropped) and failures are throttled
//! per source. A logged-in edge gets its part of the center's changes and sends its
//! own, which are checked against the authoring rules before they are merged
//! (`federation::authoring`). A second link of the same edge replaces the first; a
//! rotated or deleted secret closes the link at once ([`Links::close`]).
//!
//! Before login a connection costs little: the TLS handshake, the WebSocket upgrade
//! and the login share one deadline from accept, unauthenticated connections are
//! capped per source and in total, and the login frame is small.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use federation::authoring::{Author, Rule};
use federation::protocol::{Changes, Hello, Welcome, VERSION};
use federation::session::{recv, send, ws_config};
use federation::{Ended, Link, LinkPdu, Scope};
use fleet_node::admission::Admission;
use fleet_node::throttle::LoginThrottle;
use fleet_node::Node;
use fleet_store::sync::Change;
use fleet_store::{credentials, device_presence, edges, link_cursors, link_leases};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sea_orm::EntityTrait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

use crate::presence::Elsewhere;

mod inbox;
mod lease;

/// From accept to a logged-in edge: TLS, the WebSocket upgrade and the login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest login frame: an edge id, a secret and a few numbers fit many times over.
const LOGIN_FRAME_BYTES: usize = 4 * 1024;
/// Unauthenticated link connections: few edges dial a center, so the caps are low.
const UNAUTHENTICATED_PER_SOURCE: usize = 16;
const UNAUTHENTICATED_TOTAL: usize = 1024;

/// An edge that logged in and was welcomed.
struct Up {
    edge: edges::Model,
    /// The link lease this replica holds for it.
    lease: i64,
    skew_ms: i64,
    /// How far the edge has merged the center's log.
    applied: i64,
}

/// The live link of one edge.
struct Live {
    serial: u64,
    fast: mpsc::Sender<LinkPdu>,
    replaced: watch::Sender<bool>,
    since_ms: i64,
    skew_ms: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    edge: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    outcome: &'static str,
}

impl fleet_node::devices::Presence for Links {
    /// Online at an edge linked here, as its live view says; or at an edge another
    /// replica holds, as that replica last wrote (`crate::presence`).
    fn is_online(&self, device: i64) -> bool {
        self.online.contains_key(&device)
            || self
                .elsewhere
                .is_online(device, |edge| self.live.contains_key(&edge))
    }
}

/// What `GET /api/v1/edges` shows of an edge's link.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkState {
    pub online: bool,
    pub since_ms: i64,
    pub clock_skew_ms: Option<i64>,
}

pub struct Links {
    live: DashMap<i64, Live>,
    /// Devices online at an edge linked here, as the edges report them: device id ->
    /// edge id.
    online: DashMap<i64, i64>,
    /// Who is online at edges other replicas hold.
    elsewhere: Elsewhere,
    serial: AtomicU64,
    stop: watch::Sender<bool>,
    /// The edge connections, so a stop can wait until every link has ended (and
    /// given its lease back).
    connections: TaskTracker,
    throttle: LoginThrottle,
    admission: Admission,
    heartbeat: Duration,
    /// Changes and live-view entries refused, by edge and rule.
    refused: Family<RefusalLabels, Counter>,
    /// Connections that ended before a login, by why.
    unauthenticated: Family<ConnectionLabels, Counter>,
    /// This process as a holder of edges' link leases.
    holder: String,
}

impl Links {
    pub fn new(heartbeat: Duration) -> Self {
        Self {
            live: DashMap::new(),
            online: DashMap::new(),
            elsewhere: Elsewhere::default(),
            serial: AtomicU64::new(0),
            stop: watch::channel(false).0,
            connections: TaskTracker::new(),
            throttle: LoginThrottle::default(),
            admission: Admission::new(UNAUTHENTICATED_PER_SOURCE, UNAUTHENTICATED_TOTAL),
            heartbeat,
            refused: Family::default(),
            unauthenticated: Family::default(),
            holder: format!("{:016x}", rand::random::<u64>()),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "federation_refused_changes",
            "Changes (and live-view entries) from edges that the center refused, by edge and rule",
            self.refused.clone(),
        );
        registry.register(
            "federation_link_unauthenticated",
            "Link connections that ended before an edge logged in, by outcome",
            self.unauthenticated.clone(),
        );
        registry.register(
            "federation_link_unauthenticated_open",
            "Link connections open and not logged in yet",
            self.admission.gauge(),
        );
    }

    fn count_refused(&self, edge: i64, rule: &str, n: u64) {
        self.refused
            .get_or_create(&RefusalLabels {
                edge: edge.to_string(),
                rule: rule.to_string(),
            })
            .inc_by(n);
    }

    fn count_unauthenticated(&self, outcome: &'static str) {
        self.unauthenticated
            .get_or_create(&ConnectionLabels { outcome })
            .inc();
    }

    pub fn state(&self, edge: i64) -> LinkState {
        self.live
            .get(&edge)
            .map_or(LinkState::default(), |l| LinkState {
                online: true,
                since_ms: l.since_ms,
                clock_skew_ms: Some(l.skew_ms),
            })
    }

    /// Closes an edge's live link at once (its secret was rotated or it was deleted):
    /// the edge must log in again, with what holds now.
    pub fn close(&self, edge: i64) {
        if let Some((_, live)) = self.live.remove(&edge) {
            live.replaced.send_replace(true);
            self.online.retain(|_, at| *at != edge);
            tracing::info!(edge, "edge link closed: its credentials changed");
        }
    }

    /// Pushes changes down an edge's link ahead of the change log, if it is up.
    pub fn push(&self, edge: i64, changes: Vec<Change>) -> bool {
        let pdu = LinkPdu::Changes(Changes { changes, upto: 0 });
        self.live
            .get(&edge)
            .is_some_and(|l| l.fast.try_send(pdu).is_ok())
    }

    /// Reads who is online at edges other replicas hold, for as long as the process
    /// runs.
    pub async fn watch_presence(self: Arc<Self>, node: Arc<Node>) {
        self.elsewhere.watch(&node, &self.holder).await;
    }

    /// Closes the endpoint and every link.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
        self.connections.close();
    }

    /// Waits until every edge link has ended, after [`Links::shutdown`].
    pub async fn ended(&self) {
        self.connections.wait().await;
    }

    pub async fn serve(
        self: Arc<Self>,
        node: Arc<Node>,
        listener: TcpListener,
        tls: Option<rustls::ServerConfig>,
    ) {
        let tls = tls.map(|c| TlsAcceptor::from(Arc::new(c)));
        let mut stopped = self.stop.subscribe();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.changed() => return,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let links = self.clone();
                    let (node, tls) = (node.clone(), tls.clone());
                    self.connections
                        .spawn(async move { links.connection(node, tcp, peer, tls).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an edge link failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(
        self: Arc<Self>,
        node: Arc<Node>,
        tcp: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
    ) {
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        let permit = match self.admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refused) => {
                self.count_unauthenticated(refused.label());
                return;
            }
        };
        if self.throttle.check(peer.ip()).is_err() {
            self.count_unauthenticated("throttled");
            return;
        }
        let _ = tcp.set_nodelay(true);
        match tls {
            Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => self.link(node, stream, peer, deadline, permit).await,
                Ok(Err(e)) => {
                    self.count_unauthenticated("tls_failed");
                    tracing::debug!(%peer, error = %e, "TLS handshake of an edge link failed")
                }
                Err(_) => self.count_unauthenticated("timed_out"),
            },
            None => self.link(node, tcp, peer, deadline, permit).await,
        }
    }

    /// The WebSocket upgrade and the edge's login, before `deadline`, read with a
    /// small frame limit; then the link's own limits.
    async fn login<S>(
        &self,
        node: &Node,
        stream: S,
        deadline: Instant,
    ) -> Result<(WebSocketStream<S>, edges::Model, Hello), &'static str>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let small = WebSocketConfig::default()
            .read_buffer_size(LOGIN_FRAME_BYTES)
            .max_message_size(Some(LOGIN_FRAME_BYTES))
            .max_frame_size(Some(LOGIN_FRAME_BYTES));
        let opened = tokio::time::timeout_at(deadline, async {
            let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(small))
                .await
                .map_err(|_| "upgrade_failed")?;
            let Some(Ok(LinkPdu::Hello(hello))) = recv(&mut ws).await else {
                return Err("bad_login");
            };
            let edge = self.authenticate(node, &hello).await.ok_or("refused")?;
            Ok((ws, edge, hello))
        })
        .await
        .map_err(|_| "timed_out")??;
        let (ws, edge, hello) = opened;
        // The edge waits for the welcome before it sends more, so nothing is buffered.
        let ws = WebSocketStream::from_raw_socket(ws.into_inner(), Role::Server, Some(ws_config()))
            .await;
        Ok((ws, edge, hello))
    }

    /// A connection from login to the end of its link.
    async fn link<S>(
        self: Arc<Self>,
        node: Arc<Node>,
        stream: S,
        peer: SocketAddr,
        deadline: Instant,
        permit: fleet_node::admission::Permit,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let opened = self.login(&node, stream, deadline).await;
        drop(permit);
        let (mut ws, edge, hello) = match opened {
            Ok(opened) => opened,
            Err(outcome) => {
                self.count_unauthenticated(outcome);
                self.throttle.failed(peer.ip());
                tracing::warn!(%peer, outcome, "edge link refused");
                return;
            }
        };
        self.throttle.succeeded(peer.ip());
        let skew_ms = federation::protocol::warn_on_skew(
            &format!("edge {}", edge.id),
            hello.wall_ms,
            node.replica.max_ahead_ms(),
        );
        let Some(lease) = self.take_lease(&node, edge.id, skew_ms).await else {
            return;
        };
        let applied = match self
            .resume_point(&node, edge.worker_id, hello.applied)
            .await
        {
            Ok(applied) => applied,
            Err(e) => {
                tracing::error!(error = %e, "reading a link cursor failed");
                return;
            }
        };
        let welcome = LinkPdu::Welcome(Welcome {
            center_node: federation::protocol::CENTER_NODE,
            applied,
            wall_ms: fleet_store::now_ms(),
        });
        if send(&mut ws, &welcome).await.is_err() {
            return;
        }
        let up = Up {
            edge,
            lease,
            skew_ms,
            applied: hello.applied,
        };
        let id = up.edge.id;
        tracing::info!(edge = id, name = %up.edge.name, %peer, skew_ms, "edge link up");
        match self.clone().run(node, ws, up).await {
            Ended::Stopped => tracing::info!(edge = id, "edge link closed"),
            other => tracing::warn!(edge = id, reason = %other, "edge link down"),
        }
    }

    /// Runs a logged-in edge's link until the center stops, a newer link of the edge
    /// replaces it, or this replica no longer holds the edge's link lease; then gives
    /// the lease back.
    async fn run<S>(self: Arc<Self>, node: Arc<Node>, ws: WebSocketStream<S>, up: Up) -> Ended
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let edge = up.edge.id;
        let (fast_tx, fast) = mpsc::channel(1024);
        let (replaced_tx, mut replaced) = watch::channel(false);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let live = Live {
            serial,
            fast: fast_tx.clone(),
            replaced: replaced_tx,
            since_ms: fleet_store::now_ms(),
            skew_ms: up.skew_ms,
        };
        if let Some(old) = self.live.insert(edge, live) {
            old.replaced.send_replace(true);
        }
        let (inbox_tx, inbox) = mpsc::channel(64);
        let viewer = tokio::spawn(self.clone().serve_inbox(node.clone(), edge, inbox, fast_tx));
        let on_refusal = {
            let links = self.clone();
            Arc::new(move |rule: Rule| links.count_refused(edge, rule.as_str(), 1))
        };
        let link = Link {
            node: node.clone(),
            peer: up.edge.worker_id,
            scope: Scope::Edge(edge),
            heartbeat: self.heartbeat,
            home: None,
            inbox: Some(inbox_tx),
            author: Some(Author {
                edge,
                node: up.edge.worker_id,
            }),
            on_refusal: Some(on_refusal),
        };
        let mut stop = self.stop.subscribe();
        let (either_tx, either) = watch::channel(false);
        let holding = self.clone().hold_lease(node.clone(), edge, up.lease);
        let watcher = tokio::spawn(async move {
            tokio::select! {
                _ = stop.changed() => {}
                _ = replaced.changed() => {}
                () = holding => {}
            }
            let _ = either_tx.send(true);
        });
        let ended = link.run(ws, up.applied, fast, either).await;
        watcher.abort();
        // With the link goes the inbox's sender: the viewer ends after what it holds,
        // and writes nothing after the edge's devices are marked offline.
        drop(link);
        let _ = viewer.await;
        self.let_go(&node, edge, serial, up.lease).await;
        ended
    }

    /// After an edge's link ended here: its devices are offline (before the lease
    /// goes, so the next holder writes them afresh), the lease is given back, and the
    /// link is forgotten unless a newer one replaced it.
    async fn let_go(&self, node: &Node, edge: i64, serial: u64, lease: i64) {
        let gone = device_presence::all_left(&node.db, edge, fleet_store::now_ms()).await;
        if let Err(e) = gone {
            tracing::warn!(edge, error = %e, "marking an edge's devices offline failed");
        }
        if let Err(e) = link_leases::release(&node.db, edge, &self.holder, lease).await {
            tracing::warn!(edge, error = %e, "giving back an edge's link lease failed; it expires by itself");
        }
        if self
            .live
            .remove_if(&edge, |_, l| l.serial == serial)
            .is_some()
        {
            // Nobody reports for this edge's devices any more.
            self.online.retain(|_, at| *at != edge);
        }
    }

    /// How far the center has merged the edge's log. When the edge remembers more of
    /// the center's log than the center holds, the center's database was restored
    /// from a backup: it then asks the edge for everything (a snapshot), which brings
    /// back what the center wrote after the backup and the edge still has.
    async fn resume_point(
        &self,
        node: &Node,
        worker: i64,
        theirs: i64,
    ) -> Result<i64, sea_orm::DbErr> {
        let head = fleet_store::sync::head(&node.db).await?;
        if theirs <= head {
            return Ok(link_cursors::get(&node.db, worker).await?.applied);
        }
        tracing::warn!(
            worker,
            remembered = theirs,
            head,
            "an edge remembers more of this center's log than it holds (restored from a backup?); exchanging snapshots"
        );
        node.transact(|txn| async move { link_cursors::set_applied(&*txn, worker, 0).await })
            .await?;
        Ok(0)
    }

    async fn authenticate(&self, node: &Node, hello: &Hello) -> Option<edges::Model> {
        if hello.version != VERSION {
            tracing::warn!(
                edge = %hello.edge_id,
                theirs = hello.version,
                ours = VERSION,
                "an edge speaks another link protocol version; upgrade it or the center"
            );
            return None;
        }
        let id = shared_proto::id::parse_id("edge_id", &hello.edge_id).ok()?;
        let edge = edges::Entity::find_by_id(id).one(&node.db).await.ok()??;
        (credentials::verify_secret(&hello.secret, &edge.secret_hash)
            && hello.node_id == edge.worker_id)
            .then_some(edge)
    }
}
