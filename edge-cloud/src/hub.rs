//! The device hub: the edge's WebSocket endpoint for devices (docs/design.md §4).
//!
//! One task per connection, holding as little as possible while idle: the TLS and
//! WebSocket handshake and the login run boxed, so their state is freed once the
//! session is open, and the WebSocket buffers are sized for many quiet sessions.
//! Who is connected lives in memory (device id -> session); heartbeats never touch
//! the database, and neither does a login, unless the device has commands or a
//! configuration waiting (credentials come from the device cache). Logins and
//! disconnects are recorded as events; refused and abandoned connections only count
//! in metrics, so a flood of them writes nothing. Devices coming back after a restart
//! resume their TLS sessions (`fleet_node::tickets`).
//!
//! - [`login`]: admission, the login deadline, credentials;
//! - [`session`]: one open session, its heartbeat and the frames it exchanges;
//! - [`sessions`]: who is connected, and the recheck that ends revoked sessions;
//! - [`delivery`]: commands and configuration to devices, results back;
//! - [`statuses`]: status reports, held in memory and written in batches.

mod delivery;
mod login;
mod metrics;
mod session;
mod sessions;
mod statuses;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleet_node::admission::{Admission, Permit};
use fleet_node::events::{self, NewEvent};
use fleet_node::throttle::LoginThrottle;
use fleet_node::Node;
use futures_util::SinkExt;
use shared_proto::southbound::{Envelope, Pdu, MAX_FRAME_BYTES};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::uplink::Uplink;

pub use delivery::SiteApi;
pub use login::{authenticate, login_name, PRE_LOGIN_READ_BYTES};
pub use metrics::HubMetrics;
pub use sessions::Sessions;
pub use statuses::Held;

use login::{Budgeted, Unopened};

#[derive(Debug, Clone)]
pub struct HubSettings {
    pub heartbeat_interval: Duration,
    pub missed_limit: u32,
    /// From TCP accept to `login_ok`: TLS, WebSocket upgrade and login together.
    pub login_timeout: Duration,
    /// Connections not yet logged in, at most, from one source address.
    pub max_unauthenticated_per_source: usize,
    /// Connections not yet logged in, at most, in total.
    pub max_unauthenticated: usize,
}

/// Device events written per statement, at most.
const EVENT_BATCH: usize = 500;

pub struct Hub {
    events: mpsc::Sender<NewEvent>,
    event_queue: std::sync::Mutex<Option<mpsc::Receiver<NewEvent>>>,
    /// Turns true when the edge stops: the listener closes and every session ends.
    stop: watch::Sender<bool>,
    /// The device connections, so a stop can wait until every session has ended
    /// (and queued its last event).
    connections: TaskTracker,
    metrics: HubMetrics,
    node: Arc<Node>,
    sessions: Arc<Sessions>,
    settings: HubSettings,
    tls: Option<TlsAcceptor>,
    admission: Admission,
    throttle: LoginThrottle,
    site: SiteApi,
    /// The link to the center, which may re-home a device that is not this edge's.
    uplink: Option<Arc<Uplink>>,
    /// Commands out at their devices, not yet marked sent.
    delivered: delivery::Delivered,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Replaced,
    HeartbeatLost,
    Closed,
    TooManyBadFrames,
    EdgeStopping,
    /// The device's secret changed since this session logged in.
    Revoked,
    /// The device was deleted.
    Deleted,
    /// The device is homed at another edge now.
    MovedAway,
    /// Its row could not be re-read after a change.
    Unconfirmed,
}

impl End {
    fn reason(self) -> &'static str {
        match self {
            End::Replaced => "replaced by a newer session",
            End::HeartbeatLost => "heartbeat lost",
            End::Closed => "connection closed",
            End::TooManyBadFrames => "too many bad frames",
            End::EdgeStopping => "edge stopping",
            End::Revoked => "credentials revoked",
            End::Deleted => "device deleted",
            End::MovedAway => "device moved to another edge",
            End::Unconfirmed => "credentials could not be confirmed",
        }
    }

    /// The close frame the device gets, with why as its reason: "going away" when
    /// the edge stops, so an agent dials again at once, its other edges first.
    fn close_frame(self) -> Option<CloseFrame> {
        let code = match self {
            End::Closed => return None,
            End::EdgeStopping => CloseCode::Away,
            End::HeartbeatLost => CloseCode::Normal,
            End::Replaced
            | End::TooManyBadFrames
            | End::Revoked
            | End::Deleted
            | End::MovedAway
            | End::Unconfirmed => CloseCode::Policy,
        };
        Some(CloseFrame {
            code,
            reason: self.reason().into(),
        })
    }

    /// The metric label, for ends the edge chose.
    fn label(self) -> Option<&'static str> {
        Some(match self {
            End::Replaced => "replaced",
            End::HeartbeatLost => "heartbeat_lost",
            End::TooManyBadFrames => "bad_frames",
            End::Revoked => "revoked",
            End::Deleted => "deleted",
            End::MovedAway => "moved_away",
            End::Unconfirmed => "unconfirmed",
            End::Closed | End::EdgeStopping => return None,
        })
    }
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: most sessions are idle, and heartbeats are tens of bytes. The
    // read buffer grows to hold a larger frame when one arrives (it does not shrink
    // back: tungstenite keeps it), and nothing waits in a write buffer.
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(4 * MAX_FRAME_BYTES))
        .max_frame_size(Some(4 * MAX_FRAME_BYTES))
}

impl Hub {
    pub fn new(
        node: Arc<Node>,
        sessions: Arc<Sessions>,
        settings: HubSettings,
        tls: Option<rustls::ServerConfig>,
        metrics: HubMetrics,
        site: SiteApi,
        uplink: Option<Arc<Uplink>>,
    ) -> Self {
        let (events, event_queue) = mpsc::channel(100_000);
        let admission = Admission::with_gauge(
            settings.max_unauthenticated_per_source,
            settings.max_unauthenticated,
            metrics.unauthenticated.clone(),
        );
        Self {
            events,
            event_queue: std::sync::Mutex::new(Some(event_queue)),
            stop: watch::channel(false).0,
            connections: TaskTracker::new(),
            metrics,
            node,
            sessions,
            settings,
            tls: tls.map(|c| TlsAcceptor::from(Arc::new(c))),
            admission,
            throttle: LoginThrottle::default(),
            site,
            uplink,
            delivered: delivery::Delivered::default(),
        }
    }

    /// Closes the device endpoint and ends every session.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
        self.connections.close();
    }

    /// Waits until every device connection has ended, after [`Hub::shutdown`].
    pub async fn connections_ended(&self) {
        self.connections.wait().await;
    }

    /// Connections accepted and not yet logged in.
    pub fn unauthenticated(&self) -> usize {
        self.admission.open()
    }

    /// Accepts device connections until [`Hub::shutdown`]. While the total of
    /// connections not yet logged in is at its cap, it stops accepting: the next ones
    /// wait in the listen backlog, costing nothing here, instead of being refused.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut stopped = self.stop.subscribe();
        loop {
            if self.admission.is_full() {
                self.metrics.accept_paused();
                tokio::select! {
                    () = self.admission.room() => {}
                    _ = stopped.changed() => return,
                }
            }
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.changed() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let deadline = Instant::now() + self.settings.login_timeout;
                    let Some(permit) = self.admit(peer) else {
                        continue;
                    };
                    let hub = self.clone();
                    self.connections
                        .spawn(async move { hub.connection(stream, peer, permit, deadline).await });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a device connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// A place for a new connection, or `None` (counted) when its source is held
    /// back; the connection is then closed at once, before any TLS.
    fn admit(&self, peer: SocketAddr) -> Option<Permit> {
        if self.throttle.check(peer.ip()).is_err() {
            self.metrics.dropped("throttled");
            return None;
        }
        match self.admission.admit(peer.ip()) {
            Ok(permit) => Some(permit),
            Err(refused) => {
                self.metrics.dropped(refused.label());
                None
            }
        }
    }

    /// One admitted connection: opened by `deadline` (counted from accept), then the
    /// session, as a task of its own so that nothing of the opening stays with it
    /// (a future that awaits another keeps room for both). The permit is held until
    /// the login is through.
    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        permit: Permit,
        deadline: Instant,
    ) {
        let since = self.sessions.rechecks();
        let _ = tcp.set_nodelay(true);
        let tcp = Budgeted::new(tcp, PRE_LOGIN_READ_BYTES);
        match self.tls.clone() {
            Some(acceptor) => {
                let opening = Box::pin(async {
                    let tls = acceptor
                        .accept(tcp)
                        .await
                        .map_err(|_| Unopened::Handshake)?;
                    self.metrics.handshake(tls.get_ref().1.handshake_kind());
                    self.open(tls, peer).await
                });
                let Some((mut ws, opened)) = self.opened(deadline, opening).await else {
                    return;
                };
                drop(permit);
                ws.get_mut().get_mut().0.lift();
                self.connections
                    .spawn(self.clone().session(ws, opened, since));
            }
            None => {
                let opening = Box::pin(self.open(tcp, peer));
                let Some((mut ws, opened)) = self.opened(deadline, opening).await else {
                    return;
                };
                drop(permit);
                ws.get_mut().lift();
                self.connections
                    .spawn(self.clone().session(ws, opened, since));
            }
        }
    }

    /// Runs an opening until the deadline, counting why it failed if it did.
    async fn opened<T>(
        &self,
        deadline: Instant,
        opening: impl std::future::Future<Output = Result<T, Unopened>>,
    ) -> Option<T> {
        match tokio::time::timeout_at(deadline, opening).await {
            Ok(Ok(opened)) => {
                self.metrics.login("ok");
                Some(opened)
            }
            Ok(Err(why @ (Unopened::Refused | Unopened::Unavailable))) => {
                self.metrics.login(why.label());
                None
            }
            Ok(Err(why)) => {
                self.metrics.dropped(why.label());
                None
            }
            Err(_) => {
                self.metrics.dropped("deadline");
                None
            }
        }
    }

    /// Queues a device event; a writer task stores them in batches, so a reconnect
    /// storm costs a few multi-row inserts instead of one write per login.
    fn record(&self, device: i64, action: &str, detail: String) {
        let event = NewEvent {
            actor: format!("device:{device}"),
            action: action.to_string(),
            target_type: "devices".into(),
            target_id: device.to_string(),
            status: 200,
            detail,
        };
        if self.events.try_send(event).is_err() {
            tracing::warn!("device event queue full; an event was dropped");
        }
    }

    /// Writes queued device events in batches until `stop`, then writes what is
    /// still queued and returns.
    pub async fn write_events(self: Arc<Self>, stop: CancellationToken) {
        let Some(mut queue) = self
            .event_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        loop {
            let mut batch = tokio::select! {
                biased;
                Some(first) = queue.recv() => vec![first],
                () = stop.cancelled() => Vec::new(),
                else => return,
            };
            while batch.len() < EVENT_BATCH {
                match queue.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            let (replica, batch) = (&self.node.replica, &batch);
            let stored = self
                .node
                .transact(
                    |txn| async move { events::record_many(&*txn, replica, batch.clone()).await },
                )
                .await;
            if let Err(e) = stored {
                tracing::error!(error = %e, "recording device events failed");
            }
        }
    }
}

/// Sends one frame. The frame is encoded before the send is awaited, so the future
/// holds the encoded text alone and an idle session's task stays small.
fn send<S>(
    ws: &mut WebSocketStream<S>,
    id: u64,
    pdu: Pdu,
) -> futures_util::sink::Send<'_, WebSocketStream<S>, Message>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::Text(Envelope::new(id, pdu).encode().into()))
}
