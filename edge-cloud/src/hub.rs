//! The device hub: the edge's WebSocket endpoint for devices (DESIGN §4).
//!
//! One task per connection, holding as little as possible while idle: the TLS and
//! WebSocket handshake and the login run boxed, so their state is freed once the
//! session is open, and the WebSocket buffers are sized for many quiet sessions.
//! Who is connected lives in memory (device id -> session); heartbeats never touch
//! the database. Only logins, refusals and disconnects are recorded, as events.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use dashmap::DashMap;
use fleet_store::commands::{self, State};
use fleet_store::{desired_configs, device_status, devices};
use futures_util::{SinkExt, StreamExt};
use operator_api::commands::{advance, Dispatch};
use operator_api::devices::Presence;
use operator_api::events::{self, NewEvent};
use operator_api::throttle::LoginThrottle;
use operator_api::Node;

use crate::uplink::Uplink;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use shared_proto::southbound::{
    Command, CommandName, DecodeError, DesiredConfig, Envelope, ErrorCode, ErrorPdu, LogUpload,
    Login, LoginOk, Outcome, Pdu, Status, StatusAck, StatusReport, StatusResync, MAX_FRAME_BYTES,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Bad frames a session may send before it is closed.
const MAX_BAD_FRAMES: u32 = 20;

#[derive(Debug, Clone)]
pub struct HubSettings {
    pub heartbeat_interval: Duration,
    pub missed_limit: u32,
    pub login_timeout: Duration,
}

/// Who is connected, and the latest status of each device.
#[derive(Default)]
pub struct Sessions {
    live: DashMap<i64, Live>,
    statuses: DashMap<i64, Held>,
    /// Devices whose status changed since the last write to the database.
    dirty: std::sync::Mutex<HashSet<i64>>,
    serial: AtomicU64,
}

/// What the rest of the edge hands to a live session.
enum Outgoing {
    Command(commands::Model),
    Config(desired_configs::Model),
}

struct Live {
    serial: u64,
    close: Arc<Notify>,
    outbox: mpsc::Sender<Outgoing>,
}

/// The status the edge holds for a device, with its version.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub version: u64,
    pub status: Status,
    /// The desired-configuration version the device reported it runs.
    pub config_version: i64,
}

impl Presence for Sessions {
    fn is_online(&self, device: i64) -> bool {
        self.live.contains_key(&device)
    }
}

impl Dispatch for Sessions {
    fn offer(&self, command: &commands::Model) -> bool {
        self.live.get(&command.device_id).is_some_and(|live| {
            live.outbox
                .try_send(Outgoing::Command(command.clone()))
                .is_ok()
        })
    }

    fn configure(&self, config: &desired_configs::Model) -> bool {
        self.live.get(&config.device_id).is_some_and(|live| {
            live.outbox
                .try_send(Outgoing::Config(config.clone()))
                .is_ok()
        })
    }
}

/// The PDU that delivers a desired configuration.
fn config_pdu(c: &desired_configs::Model) -> Pdu {
    Pdu::DesiredConfig(DesiredConfig {
        version: c.version,
        report_interval_s: u32::try_from(c.report_interval_s).unwrap_or(30),
        settings: serde_json::from_str(&c.settings).unwrap_or_default(),
    })
}

/// Where devices upload what `pull_logs` collects: the site API of this edge, reached
/// at the host the device already dials (so no public URL has to be configured).
#[derive(Debug, Clone)]
pub struct UploadTarget {
    pub scheme: &'static str,
    pub port: u16,
    pub max_bytes: u64,
}

/// The PDU that delivers a stored command. A `pull_logs` also learns where to upload.
fn command_pdu(c: &commands::Model, upload: &UploadTarget) -> Option<Pdu> {
    let name: CommandName =
        serde_json::from_value(serde_json::Value::String(c.name.clone())).ok()?;
    let mut args: serde_json::Value = serde_json::from_str(&c.args).unwrap_or_default();
    if name == CommandName::PullLogs {
        if let Some(map) = args.as_object_mut() {
            map.insert(
                "upload".into(),
                serde_json::to_value(LogUpload {
                    scheme: upload.scheme.into(),
                    port: upload.port,
                    path: format!("/api/v1/uploads/logs/{}", c.id),
                    max_bytes: upload.max_bytes,
                })
                .unwrap_or_default(),
            );
        }
    }
    Some(Pdu::Command(Command {
        command_id: c.id.to_string(),
        name,
        args,
        deadline_ms: c.deadline_at,
    }))
}

/// Checks a device's credentials: by id, or by hardware serial number and model.
/// `Ok(None)` is a refusal; `Err` means the database could not say.
/// How a device login names the device; `None` when it names none properly.
pub fn login_name(login: &Login) -> Option<devices::LoginName<'_>> {
    let id = match &login.device_id {
        Some(raw) => Some(shared_proto::id::parse_id("device_id", raw).ok()?),
        None => None,
    };
    devices::LoginName::from_parts(id, login.model.as_deref(), login.sn.as_deref())
}

/// The device a login is for, if its secret is right.
pub async fn authenticate<C: sea_orm::ConnectionTrait>(
    db: &C,
    login: &Login,
) -> Result<Option<i64>, sea_orm::DbErr> {
    let Some(name) = login_name(login) else {
        return Ok(None);
    };
    Ok(devices::authenticate(db, name, &login.secret)
        .await?
        .map(|d| d.id))
}

impl Sessions {
    /// Takes in the statuses stored in the database, so status versions survive a
    /// restart of the edge.
    pub async fn restore(&self, db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
        for row in device_status::Entity::find().all(db).await? {
            self.statuses.insert(
                row.device_id,
                Held {
                    version: u64::try_from(row.version).unwrap_or(0),
                    status: serde_json::from_str(&row.status).unwrap_or_default(),
                    config_version: row.config_version,
                },
            );
        }
        Ok(())
    }

    pub fn online(&self) -> usize {
        self.live.len()
    }

    /// The devices connected now.
    pub fn online_ids(&self) -> HashSet<i64> {
        self.live.iter().map(|e| *e.key()).collect()
    }

    /// Every held status as (device, version, config version), without the statuses
    /// themselves, so a caller can pick the changed ones cheaply.
    pub fn versions(&self) -> Vec<(i64, u64, i64)> {
        self.statuses
            .iter()
            .map(|e| (*e.key(), e.version, e.config_version))
            .collect()
    }

    pub fn status(&self, device: i64) -> Option<Held> {
        self.statuses.get(&device).map(|h| h.clone())
    }
}

/// What the hub counts, for `/metrics`.
#[derive(Clone, Default)]
pub struct HubMetrics {
    sessions: Gauge,
    logins: Family<OutcomeLabel, Counter>,
    messages: Family<MessageLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    direction: &'static str,
    kind: &'static str,
}

impl HubMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "device_sessions",
            "Open device sessions",
            self.sessions.clone(),
        );
        registry.register(
            "device_logins",
            "Device logins by outcome (ok, roamed, refused, unavailable)",
            self.logins.clone(),
        );
        registry.register(
            "device_messages",
            "Southbound messages by direction (in, out) and type",
            self.messages.clone(),
        );
    }

    fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    fn message(&self, direction: &'static str, pdu: &Pdu) {
        self.messages
            .get_or_create(&MessageLabels {
                direction,
                kind: kind_of(pdu),
            })
            .inc();
    }
}

fn kind_of(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::Login(_) => "login",
        Pdu::LoginOk(_) => "login_ok",
        Pdu::Ping(_) => "ping",
        Pdu::Pong(_) => "pong",
        Pdu::StatusReport(_) => "status_report",
        Pdu::StatusAck(_) => "status_ack",
        Pdu::StatusResync(_) => "status_resync",
        Pdu::DesiredConfig(_) => "desired_config",
        Pdu::ConfigApplied(_) => "config_applied",
        Pdu::Command(_) => "command",
        Pdu::CommandProgress(_) => "command_progress",
        Pdu::CommandResult(_) => "command_result",
        Pdu::Error(_) => "error",
    }
}

/// Device events written per statement, at most.
const EVENT_BATCH: usize = 500;

pub struct Hub {
    events: mpsc::Sender<NewEvent>,
    event_queue: std::sync::Mutex<Option<mpsc::Receiver<NewEvent>>>,
    /// Turns true when the edge stops: the listener closes and every session ends.
    stop: watch::Sender<bool>,
    metrics: HubMetrics,
    node: web::Data<Node>,
    sessions: Arc<Sessions>,
    settings: HubSettings,
    tls: Option<TlsAcceptor>,
    throttle: LoginThrottle,
    upload: UploadTarget,
    /// The link to the center, which may re-home a device that is not this edge's.
    uplink: Option<Arc<Uplink>>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy)]
enum End {
    Replaced,
    HeartbeatLost,
    Closed,
    TooManyBadFrames,
    EdgeStopping,
}

impl End {
    fn reason(self) -> &'static str {
        match self {
            End::Replaced => "replaced by a newer session",
            End::HeartbeatLost => "heartbeat lost",
            End::Closed => "connection closed",
            End::TooManyBadFrames => "too many bad frames",
            End::EdgeStopping => "edge stopping",
        }
    }
}

fn ws_config() -> WebSocketConfig {
    // Small eager buffers: most sessions are idle, and frames are capped anyway.
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(4 * MAX_FRAME_BYTES))
        .max_frame_size(Some(4 * MAX_FRAME_BYTES))
}

impl Hub {
    pub fn new(
        node: web::Data<Node>,
        sessions: Arc<Sessions>,
        settings: HubSettings,
        tls: Option<rustls::ServerConfig>,
        metrics: HubMetrics,
        upload: UploadTarget,
        uplink: Option<Arc<Uplink>>,
    ) -> Self {
        let (events, event_queue) = mpsc::channel(100_000);
        Self {
            events,
            event_queue: std::sync::Mutex::new(Some(event_queue)),
            stop: watch::channel(false).0,
            metrics,
            node,
            sessions,
            settings,
            tls: tls.map(|c| TlsAcceptor::from(Arc::new(c))),
            throttle: LoginThrottle::default(),
            upload,
            uplink,
        }
    }

    /// Closes the device endpoint and ends every session.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Accepts device connections until [`Hub::shutdown`].
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut stopped = self.stop.subscribe();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.changed() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let hub = self.clone();
                    tokio::spawn(async move { hub.connection(stream, peer).await });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a device connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        if self.throttle.check(peer.ip()).is_err() {
            return;
        }
        let _ = tcp.set_nodelay(true);
        match self.tls.clone() {
            Some(acceptor) => {
                let opened = Box::pin(async {
                    let tls = acceptor.accept(tcp).await.ok()?;
                    self.open(tls, peer).await
                });
                if let Some((ws, device)) = opened.await {
                    self.session(ws, device).await;
                }
            }
            None => {
                if let Some((ws, device)) = Box::pin(self.open(tcp, peer)).await {
                    self.session(ws, device).await;
                }
            }
        }
    }

    /// WebSocket handshake and login within the login deadline. A refused or late
    /// login gets no answer: the connection is dropped.
    async fn open<S>(&self, stream: S, peer: SocketAddr) -> Option<(WebSocketStream<S>, i64)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let deadline = self.settings.login_timeout;
        let attempt = async {
            let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
                .await
                .ok()?;
            let frame = loop {
                match ws.next().await? {
                    Ok(Message::Text(t)) => break t,
                    Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                    _ => return None,
                }
            };
            let envelope = Envelope::decode(&frame).ok()?;
            let Pdu::Login(login) = envelope.pdu else {
                return None;
            };
            Some((ws, envelope.id, login))
        };
        let (mut ws, login_id, login) = tokio::time::timeout(deadline, attempt).await.ok()??;
        let checked = match authenticate(&self.node.db, &login).await {
            Ok(checked) => checked,
            Err(e) => {
                // The edge could not check: not the device's fault, so no throttling
                // and no refusal on record. The device retries with its backoff.
                tracing::warn!(error = %e, "a device login could not be checked");
                self.metrics.login("unavailable");
                return None;
            }
        };
        let checked = match checked {
            Some(device) => Some(device),
            None => self.roam(&login).await,
        };
        let Some(device) = checked else {
            self.metrics.login("refused");
            self.throttle.failed(peer.ip());
            let who = login
                .device_id
                .clone()
                .or(login.sn.clone())
                .unwrap_or_default();
            self.record(
                &who,
                "device.login_refused",
                &who,
                401,
                format!("from {}", peer.ip()),
            )
            .await;
            return None;
        };
        self.throttle.succeeded(peer.ip());
        self.metrics.login("ok");
        let status_version = self.sessions.status(device).map_or(0, |h| h.version);
        let ok = Pdu::LoginOk(LoginOk {
            device_id: device.to_string(),
            heartbeat_interval_s: u32::try_from(self.settings.heartbeat_interval.as_secs())
                .unwrap_or(u32::MAX),
            missed_limit: self.settings.missed_limit,
            status_version,
        });
        send(&mut ws, login_id, ok).await.ok()?;
        Some((ws, device))
    }

    /// A login this edge cannot check because the device is not one of its own:
    /// with the center reachable, the center checks it and moves the device here.
    async fn roam(&self, login: &Login) -> Option<i64> {
        let uplink = self.uplink.as_ref()?;
        let name = login_name(login)?;
        // A device this edge holds with another secret is simply refused.
        if devices::named(&self.node.db, name).await.ok()?.is_some() {
            return None;
        }
        match uplink.roam(name, &login.secret).await {
            Ok(device) => {
                self.metrics.login("roamed");
                tracing::info!(device, "device roamed here; the center re-homed it");
                // Checked once more against the row that arrived.
                authenticate(&self.node.db, login).await.ok().flatten()
            }
            Err(why) => {
                tracing::info!(reason = %why, "a roaming device was not taken in");
                None
            }
        }
    }

    async fn session<S>(&self, mut ws: WebSocketStream<S>, device: i64)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let serial = self.sessions.serial.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let (outbox, mut commands_in) = mpsc::channel(16);
        let old = self.sessions.live.insert(
            device,
            Live {
                serial,
                close: close.clone(),
                outbox,
            },
        );
        if let Some(old) = old {
            old.close.notify_one();
        }
        self.metrics.sessions.inc();
        self.record(
            &format!("device:{device}"),
            "device.online",
            &device.to_string(),
            200,
            String::new(),
        )
        .await;

        let interval = self.settings.heartbeat_interval;
        let silence_limit = interval * self.settings.missed_limit;
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut last_heard = Instant::now();
        let mut next_id: u64 = 2;
        let mut bad = 0;
        if let Some(config) = self.desired(device).await {
            next_id += 1;
            let _ = send(&mut ws, next_id, config_pdu(&config)).await;
        }
        for command in self.pending(device).await {
            next_id += 1;
            if self.deliver(&mut ws, next_id, &command).await.is_err() {
                break;
            }
        }
        let mut stopped = self.stop.subscribe();
        // A stop that came while the session was opening has already been seen by
        // this new receiver, so look at the value too.
        let end = loop {
            if *stopped.borrow() {
                break End::EdgeStopping;
            }
            tokio::select! {
                () = close.notified() => break End::Replaced,
                _ = stopped.changed() => break End::EdgeStopping,
                Some(outgoing) = commands_in.recv() => {
                    next_id += 1;
                    let sent = match outgoing {
                        // A command offered while this session was starting may have
                        // gone out with the pending ones already.
                        Outgoing::Command(command) if !self.still_queued(command.id).await => Ok(()),
                        Outgoing::Command(command) => self.deliver(&mut ws, next_id, &command).await,
                        Outgoing::Config(config) => {
                            let pdu = config_pdu(&config);
                            self.metrics.message("out", &pdu);
                            send(&mut ws, next_id, pdu).await
                        }
                    };
                    if sent.is_err() {
                        break End::Closed;
                    }
                }
                _ = tick.tick() => {
                    if last_heard.elapsed() >= silence_limit {
                        break End::HeartbeatLost;
                    }
                    next_id += 1;
                    let ping = Pdu::Ping(shared_proto::southbound::Ping { sent_ms: fleet_store::now_ms() });
                    if send(&mut ws, next_id, ping).await.is_err() {
                        break End::Closed;
                    }
                }
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            last_heard = Instant::now();
                            continue;
                        }
                        Some(Ok(Message::Binary(_))) => {
                            last_heard = Instant::now();
                            bad += 1;
                            let e = DecodeError { code: ErrorCode::Malformed, message: "frames are JSON text".into(), id: None };
                            next_id += 1;
                            if send(&mut ws, next_id, e.to_pdu()).await.is_err() || bad > MAX_BAD_FRAMES {
                                break End::TooManyBadFrames;
                            }
                            continue;
                        }
                        _ => break End::Closed,
                    };
                    last_heard = Instant::now();
                    next_id += 1;
                    let reply = match Envelope::decode(&text) {
                        Err(e) => {
                            bad += 1;
                            Some(e.to_pdu())
                        }
                        Ok(env) => {
                            self.metrics.message("in", &env.pdu);
                            self.handle(device, env).await
                        }
                    };
                    if let Some(pdu) = reply {
                        self.metrics.message("out", &pdu);
                        if send(&mut ws, next_id, pdu).await.is_err() {
                            break End::Closed;
                        }
                    }
                    if bad > MAX_BAD_FRAMES {
                        break End::TooManyBadFrames;
                    }
                }
            }
        };
        let _ = ws.close(None).await;
        self.metrics.sessions.dec();
        let ours = self
            .sessions
            .live
            .remove_if(&device, |_, live| live.serial == serial)
            .is_some();
        if ours {
            self.record(
                &format!("device:{device}"),
                "device.offline",
                &device.to_string(),
                200,
                end.reason().into(),
            )
            .await;
        }
        tracing::debug!(device, reason = end.reason(), "session ended");
    }

    /// The answer to one decoded frame, if any.
    async fn handle(&self, device: i64, env: Envelope) -> Option<Pdu> {
        let refuse = |message: &str| {
            Some(Pdu::Error(ErrorPdu {
                code: ErrorCode::BadRequest,
                message: message.into(),
                in_reply_to: Some(env.id),
            }))
        };
        match env.pdu {
            Pdu::Ping(p) => Some(Pdu::Pong(p)),
            Pdu::Pong(_) => None,
            Pdu::StatusReport(report) => Some(self.status(device, report)),
            Pdu::Login(_) => refuse("already logged in"),
            Pdu::CommandProgress(p) => {
                let reply = self
                    .command_moved(
                        device,
                        &p.command_id,
                        State::Running,
                        Some(i32::from(p.progress)),
                        None,
                    )
                    .await;
                reply.map(|m| error_pdu(ErrorCode::BadRequest, m, env.id))
            }
            Pdu::CommandResult(r) => {
                let state = match r.outcome {
                    Outcome::Succeeded => State::Succeeded,
                    Outcome::Failed | Outcome::Rejected => State::Failed,
                    Outcome::TimedOut => State::TimedOut,
                    Outcome::Expired => State::Expired,
                };
                let result = serde_json::json!({
                    "outcome": r.outcome,
                    "exit_code": r.exit_code,
                    "output": r.output,
                    "truncated": r.truncated,
                    "error": r.error,
                    "data": r.data,
                });
                let reply = self
                    .command_moved(device, &r.command_id, state, None, Some(result))
                    .await;
                reply.map(|m| error_pdu(ErrorCode::BadRequest, m, env.id))
            }
            Pdu::ConfigApplied(applied) => {
                match applied.error {
                    None => {
                        self.sessions
                            .statuses
                            .entry(device)
                            .or_default()
                            .config_version = applied.version;
                        self.sessions
                            .dirty
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(device);
                    }
                    Some(e) => {
                        tracing::warn!(device, version = applied.version, error = %e, "device could not apply its configuration")
                    }
                }
                None
            }
            Pdu::LoginOk(_)
            | Pdu::StatusAck(_)
            | Pdu::StatusResync(_)
            | Pdu::DesiredConfig(_)
            | Pdu::Command(_) => refuse("devices do not send this message type"),
            Pdu::Error(e) => {
                tracing::debug!(device, code = ?e.code, message = %e.message, "device reported an error");
                None
            }
        }
    }

    /// Commands waiting for this device; those past their deadline expire instead.
    async fn pending(&self, device: i64) -> Vec<commands::Model> {
        let waiting = commands::Entity::find()
            .filter(commands::Column::DeviceId.eq(device))
            .filter(commands::Column::State.is_in([State::Queued.as_str(), State::Sent.as_str()]))
            .filter(commands::Column::Deleted.eq(false))
            .order_by_asc(commands::Column::Id)
            .all(&self.node.db)
            .await
            .unwrap_or_default();
        let now = fleet_store::now_ms();
        let mut live = Vec::with_capacity(waiting.len());
        for c in waiting {
            if c.deadline_at <= now {
                let _ = advance(&self.node, c.id, State::Expired, None, None).await;
            } else {
                live.push(c);
            }
        }
        live
    }

    /// The device's desired configuration, when it is newer than what it runs.
    async fn desired(&self, device: i64) -> Option<desired_configs::Model> {
        let config = desired_configs::Entity::find()
            .filter(desired_configs::Column::DeviceId.eq(device))
            .filter(desired_configs::Column::Deleted.eq(false))
            .one(&self.node.db)
            .await
            .ok()??;
        let applied = self
            .sessions
            .statuses
            .get(&device)
            .map_or(0, |h| h.config_version);
        (config.version > applied).then_some(config)
    }

    async fn still_queued(&self, id: i64) -> bool {
        matches!(
            commands::Entity::find_by_id(id).one(&self.node.db).await,
            Ok(Some(c)) if c.state == State::Queued.as_str()
        )
    }

    async fn deliver<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        id: u64,
        command: &commands::Model,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(pdu) = command_pdu(command, &self.upload) else {
            let _ = advance(
                &self.node,
                command.id,
                State::Failed,
                None,
                Some(serde_json::json!({"error": "unknown command name"})),
            )
            .await;
            return Ok(());
        };
        self.metrics.message("out", &pdu);
        send(ws, id, pdu).await?;
        if let Err(e) = advance(&self.node, command.id, State::Sent, None, None).await {
            tracing::error!(error = %e, command = command.id, "marking a command sent failed");
        }
        Ok(())
    }

    /// Records a device's word on a command; `Some(message)` when it cannot apply.
    async fn command_moved(
        &self,
        device: i64,
        command_id: &str,
        state: State,
        progress: Option<i32>,
        result: Option<serde_json::Value>,
    ) -> Option<String> {
        let Ok(id) = command_id.parse::<i64>() else {
            return Some(format!("unknown command {command_id:?}"));
        };
        match commands::Entity::find_by_id(id).one(&self.node.db).await {
            Ok(Some(c)) if c.device_id == device => {}
            Ok(_) => return Some(format!("unknown command {command_id:?}")),
            Err(e) => return Some(format!("could not look the command up: {e}")),
        }
        // A report that would move a finished command back is a late duplicate: ignore it.
        if let Err(e) = advance(&self.node, id, state, progress, result).await {
            tracing::error!(error = %e, command = id, "recording command progress failed");
        }
        None
    }

    /// Writes the statuses that changed since the last call, in multi-row statements.
    pub async fn flush_statuses(&self) -> Result<usize, sea_orm::DbErr> {
        let dirty: Vec<i64> = std::mem::take(
            &mut *self
                .sessions
                .dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
        .into_iter()
        .collect();
        let now = fleet_store::now_ms();
        let rows: Vec<device_status::Model> = dirty
            .iter()
            .filter_map(|id| {
                let held = self.sessions.statuses.get(id)?;
                Some(device_status::Model {
                    device_id: *id,
                    version: i64::try_from(held.version).unwrap_or(i64::MAX),
                    config_version: held.config_version,
                    status: serde_json::to_string(&held.status).unwrap_or_default(),
                    updated_at: now,
                })
            })
            .collect();
        let written = rows.len();
        for chunk in rows.chunks(500) {
            let stored = async {
                let (_turn, txn) = self.node.write().await?;
                device_status::upsert_many(&txn, chunk.to_vec()).await?;
                txn.commit().await
            };
            if let Err(e) = stored.await {
                // Keep them dirty so the next round writes them.
                self.sessions
                    .dirty
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(dirty);
                return Err(e);
            }
        }
        Ok(written)
    }

    /// Writes changed statuses every `every` until the process ends.
    pub async fn persist(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = self.flush_statuses().await {
                tracing::error!(error = %e, "writing device statuses failed; retrying next round");
            }
        }
    }

    /// Expires commands nobody picked up in time and times out those that never
    /// reported back. Runs until the process ends.
    pub async fn sweep(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = fleet_store::now_ms();
            let stale = commands::Entity::find()
                .filter(commands::Column::State.is_in([
                    State::Queued.as_str(),
                    State::Sent.as_str(),
                    State::Running.as_str(),
                ]))
                .filter(commands::Column::DeadlineAt.lt(now))
                .filter(commands::Column::Deleted.eq(false))
                .all(&self.node.db)
                .await
                .unwrap_or_default();
            for c in stale {
                let state = match State::parse(&c.state) {
                    Some(State::Running)
                        if c.deadline_at
                            .saturating_add(c.timeout_s.saturating_mul(1000))
                            < now =>
                    {
                        State::TimedOut
                    }
                    Some(State::Running) => continue,
                    _ => State::Expired,
                };
                if let Err(e) = advance(&self.node, c.id, state, None, None).await {
                    tracing::error!(error = %e, command = c.id, "expiring a command failed");
                }
            }
        }
    }

    /// Applies a full report, or a diff on the version the edge holds.
    fn status(&self, device: i64, report: StatusReport) -> Pdu {
        let mut held = self.sessions.statuses.entry(device).or_default();
        let applies = report.full || report.base_version == Some(held.version);
        if !applies {
            return Pdu::StatusResync(StatusResync {
                have_version: held.version,
            });
        }
        if report.full {
            held.status = report.status;
        } else {
            held.status.merge(report.status);
        }
        held.version = report.version;
        drop(held);
        self.sessions
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device);
        Pdu::StatusAck(StatusAck {
            version: report.version,
        })
    }

    /// Queues a device event; a writer task stores them in batches, so a reconnect
    /// storm costs a few multi-row inserts instead of one write per login.
    async fn record(&self, actor: &str, action: &str, target: &str, status: u16, detail: String) {
        let event = NewEvent {
            actor: actor.to_string(),
            action: action.to_string(),
            target_type: "devices".into(),
            target_id: target.to_string(),
            status,
            detail,
        };
        if self.events.try_send(event).is_err() {
            tracing::warn!("device event queue full; an event was dropped");
        }
    }

    /// Writes queued device events in batches, for as long as the process runs.
    pub async fn write_events(self: Arc<Self>) {
        let Some(mut queue) = self
            .event_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < EVENT_BATCH {
                match queue.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let stored = async {
                let (_turn, txn) = self.node.write().await?;
                events::record_many(&txn, &self.node.replica, batch).await?;
                txn.commit().await
            };
            if let Err(e) = stored.await {
                tracing::error!(error = %e, "recording device events failed");
            }
        }
    }
}

fn error_pdu(code: ErrorCode, message: String, in_reply_to: u64) -> Pdu {
    Pdu::Error(ErrorPdu {
        code,
        message,
        in_reply_to: Some(in_reply_to),
    })
}

async fn send<S>(
    ws: &mut WebSocketStream<S>,
    id: u64,
    pdu: Pdu,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::Text(Envelope::new(id, pdu).encode().into()))
        .await
}
