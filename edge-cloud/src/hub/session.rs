//! One open device session: heartbeat both ways, frames in and out, commands and
//! configuration pushed by the rest of the edge, until it ends for a reason.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fleet_node::commands::Dispatch;
use fleet_store::commands::State;
use futures_util::StreamExt;
use shared_proto::southbound::{DecodeError, Envelope, ErrorCode, ErrorPdu, Pdu, Ping};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::delivery::{config_pdu, Answers, Pending};
use super::login::Opened;
use super::sessions::{Live, Mail, Mailbox, Outgoing};
use super::{send, End, Hub};

/// What a session says back to one frame: now, or once the moves it queued commit.
enum Reply {
    Now(Option<Pdu>),
    Later(Pending),
}

/// Answers a session holds for queued command moves before it stops reading the
/// device's frames until some are given.
const MAX_PENDING_ANSWERS: usize = 32;

/// Bad frames a session may send before it is closed.
const MAX_BAD_FRAMES: u32 = 20;

pub(super) fn error_pdu(code: ErrorCode, message: String, in_reply_to: u64) -> Pdu {
    Pdu::Error(ErrorPdu {
        code,
        message,
        in_reply_to: Some(in_reply_to),
    })
}

/// What woke a session.
enum Event {
    Mail(Mail),
    Answer(Option<Pdu>),
    Tick,
    Frame(Option<Result<Message, WsError>>),
}

/// When the device was last heard from, and how many bad frames it sent.
struct Heard {
    last: Instant,
    bad: u32,
}

/// Where a session stands between frames: the id of the last frame it sent, and
/// what it still owes the device.
struct Open {
    next_id: u64,
    /// Commands sent at login; one offered meanwhile is not sent twice.
    opened_with: HashSet<i64>,
    answers: Answers,
}

impl Open {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Hub {
    /// Runs a logged-in session until it ends. `since` is the recheck count from
    /// before the login read the device's row.
    ///
    /// Written as a block, not an `async fn`, so the stream is held once: an async
    /// function keeps room for its arguments and again for their copies in its body.
    /// The greeting and the end run boxed: their database futures are large and would
    /// otherwise be part of every idle session's task for its whole life.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the stream twice"
    )]
    pub(super) fn session<S>(
        self: Arc<Self>,
        mut ws: WebSocketStream<S>,
        opened: Opened,
        since: u64,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        async move {
            let device = opened.device;
            let serial = self.sessions.serial.fetch_add(1, Ordering::Relaxed);
            let mailbox = Arc::new(Mailbox::default());
            let old = self.sessions.live.insert(
                device,
                Live {
                    serial,
                    mailbox: mailbox.clone(),
                    credentials: opened.credentials,
                },
            );
            if let Some(old) = old {
                old.mailbox.close(End::Replaced);
            }
            self.sessions.went_live(device, since);
            self.metrics.sessions.inc();
            self.record(device, "device.online", String::new());

            // Each boxed in a statement of its own: a temporary in the statement of
            // an await would be kept in this future's state for its whole life.
            let greeting = Box::pin(self.greet(&mut ws, device));
            let mut open = greeting.await;
            let end = self.converse(&mut ws, device, &mailbox, &mut open).await;
            let ending = Box::pin(self.end(ws, device, serial, open.answers, end));
            ending.await;
        }
    }

    /// Sends what waited for the device: its desired configuration if newer than
    /// what it runs, then its pending commands. Most devices have nothing waiting,
    /// and their login reads nothing from the database (`Sessions::take_waiting`).
    async fn greet<S>(&self, ws: &mut WebSocketStream<S>, device: i64) -> Open
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut open = Open {
            next_id: 2,
            opened_with: HashSet::new(),
            answers: Answers::default(),
        };
        if !self.sessions.take_waiting(device) {
            return open;
        }
        let config = self.desired(device).await;
        let pending = self.pending(device).await;
        if config.is_some() || !pending.is_empty() {
            // Until the device confirms (a later login looks again).
            self.sessions.expect(device);
        }
        if let Some(config) = config {
            let id = open.id();
            let _ = send(ws, id, config_pdu(&config)).await;
        }
        for command in pending {
            let id = open.id();
            open.opened_with.insert(command.id);
            match self.deliver(ws, id, &command).await {
                Ok(Some(pending)) => open.answers.push(pending),
                Ok(None) => {}
                Err(_) => break,
            }
        }
        open
    }

    /// The session's life between greeting and end: heartbeats, the device's
    /// frames, and what the rest of the edge posts; answers why it ended. Each turn
    /// waits for one event, handles it without waiting, and sends at most one frame,
    /// which keeps what an idle session holds small.
    async fn converse<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        device: i64,
        mailbox: &Mailbox,
        open: &mut Open,
    ) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let interval = self.settings.heartbeat_interval;
        let silence_limit = interval * self.settings.missed_limit;
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut heard = Heard {
            last: Instant::now(),
            bad: 0,
        };
        let mut stopped = self.stop.subscribe();
        loop {
            // A stop that came while the session was opening has already been seen
            // by this new receiver, so look at the value too.
            if *stopped.borrow() {
                return End::EdgeStopping;
            }
            let event = tokio::select! {
                _ = stopped.changed() => return End::EdgeStopping,
                mail = mailbox.next() => Event::Mail(mail),
                answer = open.answers.next(), if !open.answers.is_empty() => Event::Answer(answer),
                _ = tick.tick() => Event::Tick,
                // A device does not get ahead of its own stored word: past this many
                // answers pending, its frames wait in the socket (backpressure).
                frame = ws.next(), if open.answers.len() < MAX_PENDING_ANSWERS => Event::Frame(frame),
            };
            let reply = match event {
                Event::Mail(Mail::Close(why)) => return why,
                Event::Mail(Mail::Send(items)) => {
                    let handing = Box::pin(self.hand_over(ws, open, items));
                    if handing.await.is_err() {
                        return End::Closed;
                    }
                    continue;
                }
                Event::Answer(answer) => answer,
                Event::Tick if heard.last.elapsed() >= silence_limit => return End::HeartbeatLost,
                Event::Tick => Some(Pdu::Ping(Ping {
                    sent_ms: fleet_store::now_ms(),
                })),
                Event::Frame(frame) => match self.on_frame(device, frame, open, &mut heard) {
                    Ok(reply) => reply,
                    Err(end) => return end,
                },
            };
            if let Some(pdu) = reply {
                self.metrics.message("out", &pdu);
                if send(ws, open.id(), pdu).await.is_err() {
                    return End::Closed;
                }
            }
            if heard.bad > MAX_BAD_FRAMES {
                return End::TooManyBadFrames;
            }
        }
    }

    /// What to answer one frame from the device, if anything; or why the session
    /// ends.
    fn on_frame(
        &self,
        device: i64,
        frame: Option<Result<Message, WsError>>,
        open: &mut Open,
        heard: &mut Heard,
    ) -> Result<Option<Pdu>, End> {
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                heard.last = Instant::now();
                return Ok(None);
            }
            Some(Ok(Message::Binary(_))) => {
                heard.last = Instant::now();
                heard.bad += 1;
                let e = DecodeError {
                    code: ErrorCode::Malformed,
                    message: "frames are JSON text".into(),
                    id: None,
                };
                return Ok(Some(e.to_pdu()));
            }
            _ => return Err(End::Closed),
        };
        heard.last = Instant::now();
        let env = match Envelope::decode(&text) {
            Ok(env) => env,
            Err(e) => {
                heard.bad += 1;
                return Ok(Some(e.to_pdu()));
            }
        };
        self.metrics.message("in", &env.pdu);
        Ok(match self.handle(device, env) {
            Reply::Now(reply) => reply,
            Reply::Later(pending) => {
                open.answers.push(pending);
                None
            }
        })
    }

    /// Sends the items the rest of the edge posted to the session, in order.
    async fn hand_over<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        open: &mut Open,
        items: Vec<Outgoing>,
    ) -> Result<(), WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        for item in items {
            let id = open.id();
            match item {
                Outgoing::Command(command) if open.opened_with.remove(&command.id) => {}
                Outgoing::Command(command) => {
                    if let Some(pending) = self.deliver(ws, id, &command).await? {
                        open.answers.push(pending);
                    }
                }
                Outgoing::Config(config) => {
                    let pdu = config_pdu(&config);
                    self.metrics.message("out", &pdu);
                    send(ws, id, pdu).await?;
                }
            }
        }
        Ok(())
    }

    /// Ends a session: what the device said is stored before the session counts as
    /// ended (an edge stopping waits for its sessions), though the answers no longer
    /// go out; then the close frame, and the device goes offline if no newer session
    /// replaced this one.
    async fn end<S>(
        &self,
        mut ws: WebSocketStream<S>,
        device: i64,
        serial: u64,
        mut answers: Answers,
        end: End,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        while !answers.is_empty() {
            answers.next().await;
        }
        let _ = ws.close(end.close_frame()).await;
        self.metrics.sessions.dec();
        if let Some(label) = end.label() {
            self.metrics.closed(label);
        }
        let ours = self
            .sessions
            .live
            .remove_if(&device, |_, live| live.serial == serial)
            .is_some();
        if ours {
            self.record(device, "device.offline", end.reason().into());
        }
        tracing::debug!(device, reason = end.reason(), "session ended");
    }

    /// The answer to one decoded frame, if any. Everything a device says applies to
    /// itself only: commands are looked up as its own, statuses are filed under it.
    fn handle(&self, device: i64, env: Envelope) -> Reply {
        let refuse = |message: &str| {
            Some(Pdu::Error(ErrorPdu {
                code: ErrorCode::BadRequest,
                message: message.into(),
                in_reply_to: Some(env.id),
            }))
        };
        let now = match env.pdu {
            Pdu::Ping(p) => Some(Pdu::Pong(p)),
            Pdu::Pong(_) => None,
            Pdu::StatusReport(report) => Some(self.sessions.apply_report(device, report)),
            Pdu::Login(_) => refuse("already logged in"),
            Pdu::CommandProgress(p) => {
                let word = (State::Running, Some(i32::from(p.progress.min(100))), None);
                return Reply::Later(self.command_moved(device, &p.command_id, word, env.id));
            }
            Pdu::CommandResult(r) => return Reply::Later(self.command_result(device, r, env.id)),
            Pdu::ConfigApplied(applied) => {
                match applied.error {
                    None => self.sessions.config_applied(device, applied.version),
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
        };
        Reply::Now(now)
    }
}
