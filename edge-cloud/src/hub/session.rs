//! One open device session: heartbeat both ways, frames in and out, commands and
//! configuration pushed by the rest of the edge, until it ends for a reason.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use fleet_store::commands::State;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use shared_proto::southbound::{DecodeError, Envelope, ErrorCode, ErrorPdu, Pdu, Ping};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::delivery::{config_pdu, Pending};
use super::login::Opened;
use super::sessions::{Closer, Live, Outgoing};
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

impl Hub {
    /// Runs a logged-in session until it ends. `since` is the recheck count from
    /// before the login read the device's row.
    pub(super) async fn session<S>(&self, mut ws: WebSocketStream<S>, opened: Opened, since: u64)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let device = opened.device;
        let serial = self.sessions.serial.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Closer::default());
        let (outbox, mut commands_in) = mpsc::channel(16);
        let old = self.sessions.live.insert(
            device,
            Live {
                serial,
                close: close.clone(),
                outbox,
                credentials: opened.credentials,
            },
        );
        if let Some(old) = old {
            old.close.close(End::Replaced);
        }
        self.sessions.went_live(device, since);
        self.metrics.sessions.inc();
        self.record(device, "device.online", String::new());

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
        // A command offered while this session was opening may go out with the
        // pending ones already; it is not sent twice.
        let mut opened_with = std::collections::HashSet::new();
        // Answers waiting for queued command moves, given in the order of the frames.
        let mut answers: FuturesOrdered<Pending> = FuturesOrdered::new();
        for command in self.pending(device).await {
            next_id += 1;
            opened_with.insert(command.id);
            match self.deliver(&mut ws, next_id, &command).await {
                Ok(pending) => answers.extend(pending),
                Err(_) => break,
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
                why = close.closed() => break why,
                _ = stopped.changed() => break End::EdgeStopping,
                Some(outgoing) = commands_in.recv() => {
                    next_id += 1;
                    let sent = match outgoing {
                        Outgoing::Command(command) if opened_with.remove(&command.id) => Ok(()),
                        Outgoing::Command(command) => {
                            self.deliver(&mut ws, next_id, &command).await.map(|pending| answers.extend(pending))
                        }
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
                Some(answer) = answers.next(), if !answers.is_empty() => {
                    if let Some(pdu) = answer {
                        next_id += 1;
                        self.metrics.message("out", &pdu);
                        if send(&mut ws, next_id, pdu).await.is_err() {
                            break End::Closed;
                        }
                    }
                }
                _ = tick.tick() => {
                    if last_heard.elapsed() >= silence_limit {
                        break End::HeartbeatLost;
                    }
                    next_id += 1;
                    let ping = Pdu::Ping(Ping { sent_ms: fleet_store::now_ms() });
                    if send(&mut ws, next_id, ping).await.is_err() {
                        break End::Closed;
                    }
                }
                // A device does not get ahead of its own stored word: past this many
                // answers pending, its frames wait in the socket (backpressure).
                frame = ws.next(), if answers.len() < MAX_PENDING_ANSWERS => {
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
                            match self.handle(device, env) {
                                Reply::Now(reply) => reply,
                                Reply::Later(pending) => {
                                    answers.push_back(pending);
                                    None
                                }
                            }
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
        // What the device said is stored before the session counts as ended (an edge
        // stopping waits for its sessions), though the answers no longer go out.
        while answers.next().await.is_some() {}
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
