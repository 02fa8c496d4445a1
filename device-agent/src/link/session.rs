//! A logged-in session: heartbeats both ways, status reports (full, then only what
//! changed), desired configuration, and commands run by the executor with their
//! progress and results, until the edge or the agent ends it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use shared_proto::southbound::{
    Command, CommandName, CommandProgress, ConfigApplied, Envelope, LoginOk, Pdu, Ping, Status,
    StatusReport,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{Agent, End};
use crate::executor::{Delivery, Executor};
use crate::install::{Installer, Work};
use crate::logs;

/// What a session keeps between turns besides the connection.
struct Pace {
    report: tokio::time::Interval,
    /// The next report is whole: the edge does not hold the version a diff builds on.
    full_next: bool,
}

impl Agent {
    /// Runs a logged-in session until the edge, the connection or the agent ends it.
    pub(super) async fn session<S>(
        &mut self,
        mut ws: WebSocketStream<S>,
        ok: LoginOk,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let heartbeat = Duration::from_secs(u64::from(ok.heartbeat_interval_s.max(1)));
        let silence_limit = heartbeat * ok.missed_limit.max(1);
        let mut pace = Pace {
            report: tokio::time::interval(self.report_every),
            full_next: self.last.as_ref().map(|(v, _)| *v) != Some(ok.status_version),
        };
        let mut out = Outbox {
            ws: &mut ws,
            next_id: 2,
        };
        let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        let (done_tx, mut done_rx) = mpsc::channel::<Work>(64);
        let mut last_heard = Instant::now();
        if let Some(id) = self.take_reboot_pending() {
            let r = Executor::succeeded(&id, serde_json::json!({"restarted": true}));
            self.executor.remember(&r);
            if !out.send(Pdu::CommandResult(r)).await {
                return End::Lost;
            }
        }
        if let Some(r) = self.installer().confirm().await {
            self.executor.remember(&r);
            if !out.send(Pdu::CommandResult(r)).await {
                return End::Lost;
            }
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let _ = out.ws.close(None).await;
                    return End::Shutdown;
                }
                _ = pace.report.tick() => {
                    if !self.report(&mut out, pace.full_next).await {
                        return End::Lost;
                    }
                    pace.full_next = false;
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= silence_limit {
                        return End::Lost;
                    }
                    if !out.send(Pdu::Ping(Ping { sent_ms: now_ms() })).await {
                        return End::Lost;
                    }
                }
                Some(work) = done_rx.recv() => {
                    let pdu = match work {
                        Work::Progress(p) => Pdu::CommandProgress(p),
                        Work::Installed(version) => {
                            // Reported at once: the center's record follows the update.
                            self.installed = Some(version);
                            if !self.report(&mut out, false).await {
                                return End::Lost;
                            }
                            continue;
                        }
                        Work::Done(result) => {
                            self.executor.remember(&result);
                            Pdu::CommandResult(result)
                        }
                        Work::Restart => {
                            let _ = out.ws.close(None).await;
                            return End::Restart;
                        }
                    };
                    if !out.send(pdu).await {
                        return End::Lost;
                    }
                }
                frame = out.ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            last_heard = Instant::now();
                            continue;
                        }
                        Some(Ok(Message::Close(Some(f)))) if f.code == CloseCode::Away => return End::Away,
                        _ => return End::Lost,
                    };
                    last_heard = Instant::now();
                    let Ok(env) = Envelope::decode(&text) else { continue };
                    if let Some(end) = self.on_message(env.pdu, &mut out, &mut pace, &done_tx).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Answers one message from the edge. `Some(end)` when the session must end.
    async fn on_message<S>(
        &mut self,
        pdu: Pdu,
        out: &mut Outbox<'_, S>,
        pace: &mut Pace,
        done: &mpsc::Sender<Work>,
    ) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let sent = match pdu {
            Pdu::Ping(p) => out.send(Pdu::Pong(p)).await,
            Pdu::StatusResync(_) => {
                let ok = self.report(out, true).await;
                pace.full_next = false;
                ok
            }
            Pdu::DesiredConfig(c) => {
                self.report_every = Duration::from_secs(u64::from(c.report_interval_s.max(1)));
                pace.report =
                    tokio::time::interval_at(Instant::now() + self.report_every, self.report_every);
                let applied = ConfigApplied {
                    version: c.version,
                    error: None,
                };
                out.send(Pdu::ConfigApplied(applied)).await
            }
            Pdu::Command(c) => match self.command(c, out, done).await {
                Some(End::Restart) => {
                    let _ = out.ws.close(None).await;
                    return Some(End::Restart);
                }
                Some(_) => return Some(End::Lost),
                None => true,
            },
            Pdu::Error(e) => {
                tracing::debug!(code = ?e.code, message = %e.message, "edge reported an error");
                true
            }
            _ => true,
        };
        (!sent).then_some(End::Lost)
    }

    /// The version of the software the device runs: its version file's, or what it
    /// last installed.
    fn software_version(&self) -> Option<String> {
        let from_file = self.config.software_version_file.as_ref().and_then(|f| {
            let v = std::fs::read_to_string(f).ok()?.trim().to_string();
            (!v.is_empty()).then_some(v)
        });
        from_file.or_else(|| self.installed.clone())
    }

    /// How this device installs, against the edge of this session.
    fn installer(&self) -> Installer {
        let c = &self.config;
        Installer {
            device_id: c.device_id.clone(),
            secret: c.secret.clone(),
            ca_file: self.tls.is_some().then(|| c.ca_file.clone()),
            edge_host: self.edge_host.clone(),
            public_key: c.update_public_key.clone(),
            install_hook: c.install_hook.clone(),
            rollback_hook: c.rollback_hook.clone(),
            version_file: c.software_version_file.clone(),
            state_dir: (!self.simulated).then(|| c.state_dir.clone()),
            fail_pct: self.simulated.then_some(self.install_fail_pct),
        }
    }

    /// The reboot command this process was restarted for, if any (answered once).
    fn take_reboot_pending(&self) -> Option<String> {
        if self.simulated {
            return None;
        }
        let path = self.config.state_dir.join("reboot-pending");
        let id = std::fs::read_to_string(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        Some(id.trim().to_string()).filter(|id| !id.is_empty())
    }

    /// Sends a full report, or the fields changed since the last one (nothing when
    /// nothing changed). Returns false when the connection failed.
    async fn report<S>(&mut self, out: &mut Outbox<'_, S>, full: bool) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut status = self.source.collect();
        status.software_version = self.software_version();
        let version = self.last.as_ref().map_or(1, |(v, _)| v + 1);
        let report = match (&self.last, full) {
            (Some((base, before)), false) => {
                let diff = status.changed_since(before);
                if diff == Status::default() {
                    return true;
                }
                StatusReport {
                    version,
                    full: false,
                    base_version: Some(*base),
                    status: diff,
                }
            }
            _ => StatusReport {
                version,
                full: true,
                base_version: None,
                status: status.clone(),
            },
        };
        self.last = Some((version, status));
        out.send(Pdu::StatusReport(report)).await
    }

    /// Handles a delivered command. `Some(end)` when the session must end.
    async fn command<S>(
        &mut self,
        c: Command,
        out: &mut Outbox<'_, S>,
        done: &mpsc::Sender<Work>,
    ) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if c.deadline_ms < now_ms() {
            let r = Executor::expired(&c.command_id);
            self.executor.remember(&r);
            return (!out.send(Pdu::CommandResult(r)).await).then_some(End::Lost);
        }
        match self.executor.accept(&c) {
            Delivery::Ignore => return None,
            Delivery::Repeat(r) => {
                return (!out.send(Pdu::CommandResult(r)).await).then_some(End::Lost)
            }
            Delivery::Run => {}
        }
        // A command that ends at once is answered with its result alone: a progress
        // report in front of it would cost the edge a write of its own.
        let at_once = matches!(c.name, CommandName::GetStatus | CommandName::SetConfig)
            || (c.name == CommandName::Reboot && self.simulated);
        if !at_once {
            let progress = Pdu::CommandProgress(CommandProgress {
                command_id: c.command_id.clone(),
                progress: 0,
                message: "started".into(),
            });
            if !out.send(progress).await {
                return Some(End::Lost);
            }
        }
        let immediate = match c.name {
            CommandName::GetStatus => {
                let status = self.source.collect();
                Some(Executor::succeeded(
                    &c.command_id,
                    serde_json::to_value(status).unwrap_or_default(),
                ))
            }
            CommandName::SetConfig => match c
                .args
                .get("report_interval_s")
                .and_then(serde_json::Value::as_u64)
            {
                Some(s) if s > 0 => {
                    self.report_every = Duration::from_secs(s);
                    Some(Executor::succeeded(
                        &c.command_id,
                        serde_json::json!({"report_interval_s": s}),
                    ))
                }
                _ => Some(Executor::rejected(
                    &c.command_id,
                    "args.report_interval_s must be a positive number",
                )),
            },
            CommandName::Exec => match self.executor.prepare(
                &c,
                self.config.report_interval().max(Duration::from_secs(30)),
            ) {
                Err(r) => Some(*r),
                Ok(prepared) => {
                    let done = done.clone();
                    tokio::spawn(async move {
                        let _ = done.send(Work::Done(prepared.run().await)).await;
                    });
                    None
                }
            },
            CommandName::Install => {
                tokio::spawn(self.installer().run(c.clone(), done.clone()));
                None
            }
            CommandName::Reboot if self.simulated => Some(Executor::succeeded(
                &c.command_id,
                serde_json::json!({"simulated": true}),
            )),
            CommandName::Reboot => match self.executor.reboot_hook(&c).await {
                Some(r) => Some(r),
                None => {
                    // Without a hook the agent restarts itself; the result is sent
                    // by the new process once it is back.
                    if let Err(e) =
                        std::fs::write(self.config.state_dir.join("reboot-pending"), &c.command_id)
                    {
                        Some(Executor::rejected(
                            &c.command_id,
                            &format!("cannot record the reboot: {e}"),
                        ))
                    } else {
                        return Some(End::Restart);
                    }
                }
            },
            CommandName::PullLogs => match logs::prepare(
                &c,
                self.config.log_path.as_deref(),
                self.simulated.then_some(self.config.device_id.as_str()),
            ) {
                Err(r) => Some(*r),
                Ok(pull) => {
                    let url = logs::upload_url(&self.edge_host, &pull.upload);
                    let uploader = logs::Uploader {
                        device_id: self.config.device_id.clone(),
                        secret: self.config.secret.clone(),
                        ca_file: self.tls.is_some().then(|| self.config.ca_file.clone()),
                    };
                    let (done, id) = (done.clone(), c.command_id.clone());
                    tokio::spawn(async move {
                        let r = uploader.send(&id, &url, pull.body, pull.truncated).await;
                        let _ = done.send(Work::Done(r)).await;
                    });
                    None
                }
            },
        };
        if let Some(r) = immediate {
            self.executor.remember(&r);
            if !out.send(Pdu::CommandResult(r)).await {
                return Some(End::Lost);
            }
        }
        None
    }
}

struct Outbox<'a, S> {
    ws: &'a mut WebSocketStream<S>,
    next_id: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Outbox<'_, S> {
    async fn send(&mut self, mut pdu: Pdu) -> bool {
        // A result is cut to fit one frame rather than refused by the edge as too
        // large, which would leave its command to time out.
        if let Pdu::CommandResult(r) = &mut pdu {
            r.fit_frame();
        }
        self.next_id += 1;
        self.ws
            .send(Message::Text(
                Envelope::new(self.next_id, pdu).encode().into(),
            ))
            .await
            .is_ok()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
