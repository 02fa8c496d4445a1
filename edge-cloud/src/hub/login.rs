//! From TCP accept to an open session: the admission gate, one deadline for the TLS
//! handshake, the WebSocket upgrade and the login together, a small read budget
//! before login, and the credentials check (or roaming through the center).
//!
//! A connection that has not logged in holds an admission permit, at most
//! [`PRE_LOGIN_READ_BYTES`] of input and at most the login deadline; what ends it
//! early is counted in metrics, never written to the database.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use fleet_store::devices;
use futures_util::StreamExt;
use shared_proto::southbound::{Envelope, Login, LoginOk, Pdu, MAX_LOGIN_FRAME_BYTES};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::sessions::Credentials;
use super::{send, ws_config, Hub};

/// Bytes a peer may send before its login is through: a TLS client hello and
/// finish, an HTTP upgrade request and one login frame fit several times over.
pub const PRE_LOGIN_READ_BYTES: usize = 16 * 1024;

/// A stream that reads at most a budget of bytes until the budget is lifted; past
/// it, reads fail. It bounds what an unauthenticated peer can make the edge buffer,
/// whatever frame sizes it announces.
pub struct Budgeted<S> {
    inner: S,
    /// `None` once lifted.
    left: Option<usize>,
}

impl<S> Budgeted<S> {
    pub fn new(inner: S, budget: usize) -> Self {
        Self {
            inner,
            left: Some(budget),
        }
    }

    /// From now on reads are unlimited (the session's own frame limits apply).
    pub fn lift(&mut self) {
        self.left = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(left) = self.left else {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        };
        if left == 0 {
            return Poll::Ready(Err(io::Error::other("pre-login read budget spent")));
        }
        let room = buf.remaining().min(left);
        // Read into a bounded, initialised window of `buf`, then account for it.
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let filled = limited.filled().len();
        if let Poll::Ready(Ok(())) = polled {
            buf.advance(filled);
            self.left = Some(left.saturating_sub(filled));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why a connection did not become a session (each a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unopened {
    /// TLS or WebSocket handshake failed, or the peer left before logging in.
    Handshake,
    /// The first frame was not a well-formed login of at most the login frame size.
    BadLogin,
    /// Wrong credentials, or a device neither this edge nor the center takes.
    Refused,
    /// The edge could not check (its database failed), or it is stopping.
    Unavailable,
}

impl Unopened {
    pub fn label(self) -> &'static str {
        match self {
            Unopened::Handshake => "handshake",
            Unopened::BadLogin => "bad_login",
            Unopened::Refused => "refused",
            Unopened::Unavailable => "unavailable",
        }
    }
}

/// A logged-in device, with what its session rests on.
pub(super) struct Opened {
    pub device: i64,
    pub credentials: Credentials,
}

/// How a device login names the device; `None` when it names none properly.
pub fn login_name(login: &Login) -> Option<devices::LoginName<'_>> {
    let id = match &login.device_id {
        Some(raw) => Some(shared_proto::id::parse_id("device_id", raw).ok()?),
        None => None,
    };
    devices::LoginName::from_parts(id, login.model.as_deref(), login.sn.as_deref())
}

/// The device a login is for, if its secret is right. `Ok(None)` is a refusal; `Err`
/// means the database could not say.
pub async fn authenticate<C: sea_orm::ConnectionTrait>(
    db: &C,
    login: &Login,
) -> Result<Option<devices::Model>, sea_orm::DbErr> {
    let Some(name) = login_name(login) else {
        return Ok(None);
    };
    devices::authenticate(db, name, &login.secret).await
}

impl Hub {
    /// WebSocket upgrade and login over an accepted (and, with TLS, handshaken)
    /// stream. The caller bounds it with the login deadline. A refused login gets no
    /// answer: the connection is dropped.
    pub(super) async fn open<S>(
        &self,
        stream: S,
        peer: SocketAddr,
    ) -> Result<(WebSocketStream<S>, Opened), Unopened>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
            .await
            .map_err(|_| Unopened::Handshake)?;
        let frame = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => break t,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(_)) => return Err(Unopened::BadLogin),
                None | Some(Err(_)) => return Err(Unopened::Handshake),
            }
        };
        if frame.len() > MAX_LOGIN_FRAME_BYTES {
            return Err(Unopened::BadLogin);
        }
        let envelope = Envelope::decode(&frame).map_err(|_| Unopened::BadLogin)?;
        let Pdu::Login(login) = envelope.pdu else {
            return Err(Unopened::BadLogin);
        };
        drop(frame);
        let row = match self.authenticate(&login).await {
            Ok(Some(row)) => Some(row),
            Ok(None) => self.roam(&login).await,
            Err(e) => {
                // The edge could not check: not the device's fault, so no throttling.
                // The device retries with its backoff.
                tracing::warn!(error = %e, "a device login could not be checked");
                return Err(Unopened::Unavailable);
            }
        };
        let Some(row) = row else {
            self.throttle.failed(peer.ip());
            return Err(Unopened::Refused);
        };
        self.throttle.succeeded(peer.ip());
        if *self.stop.borrow() {
            // A device told this edge is stopping dials again at once, maybe here
            // before the endpoint has closed: it is sent on, not let in.
            return Err(Unopened::Unavailable);
        }
        let status_version = self.sessions.status(row.id).map_or(0, |h| h.version);
        let ok = Pdu::LoginOk(LoginOk {
            device_id: row.id.to_string(),
            heartbeat_interval_s: u32::try_from(self.settings.heartbeat_interval.as_secs())
                .unwrap_or(u32::MAX),
            missed_limit: self.settings.missed_limit,
            status_version,
        });
        send(&mut ws, envelope.id, ok)
            .await
            .map_err(|_| Unopened::Handshake)?;
        Ok((
            ws,
            Opened {
                device: row.id,
                credentials: Credentials::of(&row),
            },
        ))
    }

    /// [`authenticate`], with a device that names itself by id read from the node's
    /// device cache: a storm of returning devices then costs no database round trip.
    async fn authenticate(&self, login: &Login) -> Result<Option<devices::Model>, sea_orm::DbErr> {
        let Some(devices::LoginName::Id(id)) = login_name(login) else {
            return authenticate(&self.node.db, login).await;
        };
        Ok(self.node.device(id).await?.and_then(|device| {
            let valid = !device.deleted
                && fleet_store::credentials::verify_secret(&login.secret, &device.secret_hash);
            valid.then(|| devices::Model::clone(&device))
        }))
    }

    /// A login this edge cannot check because the device is not one of its own:
    /// with the center reachable, the center checks it and moves the device here.
    async fn roam(&self, login: &Login) -> Option<devices::Model> {
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
                self.authenticate(login).await.ok().flatten()
            }
            Err(why) => {
                tracing::info!(reason = %why, "a roaming device was not taken in");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_stop_at_the_budget_until_it_is_lifted() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut ours = Budgeted::new(ours, 10);
        peer.write_all(&[7; 30]).await.expect("write");
        let mut got = vec![0; 30];
        let n = ours.read(&mut got).await.expect("within budget");
        assert_eq!(n, 10, "a read never goes past the budget");
        assert!(ours.read(&mut got).await.is_err(), "spent");
        ours.lift();
        let n = ours.read(&mut got).await.expect("lifted");
        assert_eq!(n, 20);
    }
}
