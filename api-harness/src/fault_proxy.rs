//! A loopback TCP relay that tests put between an edge and its center to break the
//! link on purpose. Reconnects, timeouts and resumption are only worth anything if they
//! are exercised against a link that really drops, lags or hangs mid-stream, and
//! killing a whole node would also lose its state, so the faults live in the wire.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{sleep, sleep_until, Instant};

#[derive(Clone, Copy, Default)]
struct Faults {
    refusing: bool,
    // Counted, not flagged, so a cut at once undone by restore still closes connections.
    cuts: u64,
    delay: Duration,
    stalled: bool,
}

#[derive(Default)]
struct Counters {
    live: AtomicUsize,
    accepted: AtomicU64,
    /// Bytes upstream may still send to clients before a connection is dropped.
    budget: std::sync::Mutex<Option<u64>>,
}

impl Counters {
    /// How much of a chunk of `n` bytes from upstream may pass, and whether the
    /// connection is dropped after it (the budget is then spent, and gone).
    fn spend(&self, n: usize) -> (usize, bool) {
        let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        let Some(left) = *budget else {
            return (n, false);
        };
        let passed = usize::try_from(left).unwrap_or(usize::MAX).min(n);
        let left = left - passed as u64;
        if left == 0 {
            *budget = None;
            return (passed, true);
        }
        *budget = Some(left);
        (passed, false)
    }
}

/// A relay on 127.0.0.1 whose link faults the test switches on and off.
pub struct FaultProxy {
    addr: SocketAddr,
    counters: Arc<Counters>,
    // Every task holds a receiver of it, so `closed()` tells when all of them are gone.
    faults: watch::Sender<Faults>,
    // As in mini-redis: every task holds a receiver and exits once this sender is
    // dropped, so dropping the proxy is enough to stop them all.
    notify_shutdown: broadcast::Sender<()>,
}

#[derive(Clone)]
struct Link {
    upstream: SocketAddr,
    faults: watch::Receiver<Faults>,
    counters: Arc<Counters>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and relays each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (faults, rx) = watch::channel(Faults::default());
        let (notify_shutdown, shutdown) = broadcast::channel(1);
        let counters = Arc::new(Counters::default());
        let link = Link {
            upstream,
            faults: rx,
            counters: counters.clone(),
        };
        let addr = listener.local_addr()?;
        tokio::spawn(link.accept_loop(listener, shutdown));
        Ok(FaultProxy {
            addr,
            counters,
            faults,
            notify_shutdown,
        })
    }

    /// The address clients dial instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every relayed connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.faults.send_modify(|f| {
            f.refusing = true;
            f.cuts += 1;
        });
    }

    pub fn restore(&self) {
        self.faults.send_modify(|f| f.refusing = false);
    }

    /// Holds each chunk read from now on for `delay` before forwarding it.
    pub fn delay(&self, delay: Duration) {
        self.faults.send_modify(|f| f.delay = delay);
    }

    /// Keeps connections open but forwards nothing until `resume`.
    pub fn stall(&self) {
        self.faults.send_modify(|f| f.stalled = true);
    }

    pub fn resume(&self) {
        self.faults.send_modify(|f| f.stalled = false);
    }

    /// Lets `bytes` more pass from upstream to clients, then drops the connection that
    /// carried the last of them, mid-transfer; later connections relay normally.
    pub fn cut_after(&self, bytes: u64) {
        *self
            .counters
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(bytes);
    }

    /// Connections currently relayed (upstream reached and not yet closed).
    pub fn connections(&self) -> usize {
        self.counters.live.load(Ordering::SeqCst)
    }

    /// Connections accepted so far, including those refused while cut.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Stops the listener and waits until every relay task has exited.
    pub async fn shutdown(self) {
        drop(self.notify_shutdown);
        self.faults.closed().await;
    }
}

impl Link {
    async fn accept_loop(self, listener: TcpListener, mut shutdown: broadcast::Receiver<()>) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.recv() => return,
            };
            let Ok((client, _)) = accepted else {
                // Running out of descriptors would otherwise make this a busy loop.
                sleep(Duration::from_millis(10)).await;
                continue;
            };
            self.counters.accepted.fetch_add(1, Ordering::SeqCst);
            let Faults { refusing, cuts, .. } = *self.faults.borrow();
            if !refusing {
                tokio::spawn(self.clone().serve(client, cuts, shutdown.resubscribe()));
            } // else dropping `client` is the refusal
        }
    }

    async fn serve(self, client: TcpStream, cuts: u64, mut shutdown: broadcast::Receiver<()>) {
        let mut faults = self.faults.clone();
        let relay = async move {
            let server = TcpStream::connect(self.upstream).await?;
            self.counters.live.fetch_add(1, Ordering::SeqCst);
            let _live = Live(self.counters.clone());
            // The proxy must not add latency of its own on top of the injected delay.
            client.set_nodelay(true)?;
            server.set_nodelay(true)?;
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::try_join!(
                pipe(client_read, server_write, self.faults.clone(), None),
                pipe(server_read, client_write, self.faults, Some(&self.counters)),
            )
        };
        // Whichever comes first drops the relay, and with it both sockets.
        tokio::select! {
            _ = relay => {}
            _ = faults.wait_for(|f| f.cuts != cuts) => {}
            _ = shutdown.recv() => {}
        }
    }
}

struct Live(Arc<Counters>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Relays `from` to `to`; with `budget`, only as many bytes as it allows.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut faults: watch::Receiver<Faults>,
    budget: Option<&Counters>,
) -> io::Result<()> {
    // Reading goes on while earlier chunks wait, so a delay adds latency to each
    // chunk rather than throttling the stream; the bound keeps TCP backpressure.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let delays = faults.clone();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            let due = Instant::now() + delays.borrow().delay;
            if n == 0 || tx.send((due, buf[..n].to_vec())).await.is_err() {
                return Ok::<_, io::Error>(());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            sleep_until(due).await;
            if faults.wait_for(|f| !f.stalled).await.is_err() {
                return Ok(());
            }
            let (passed, spent) = budget.map_or((chunk.len(), false), |b| b.spend(chunk.len()));
            to.write_all(&chunk[..passed]).await?;
            if spent {
                to.flush().await?;
                return Err(io::Error::other("byte budget spent"));
            }
        }
        // Pass the half-close on, so the far side sees the same EOF.
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("timed out")
    }

    async fn until(cond: impl Fn() -> bool) {
        within(async {
            while !cond() {
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    async fn echo_proxy() -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let upstream = listener.local_addr().expect("echo addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        FaultProxy::start(upstream).await.expect("proxy starts")
    }

    async fn dial(proxy: &FaultProxy) -> TcpStream {
        within(TcpStream::connect(proxy.addr()))
            .await
            .expect("dial proxy")
    }

    // Writes and reads at once, so a payload bigger than the socket buffers cannot
    // deadlock against the echo.
    async fn echo(stream: &mut TcpStream, msg: &[u8]) {
        let (mut r, mut w) = stream.split();
        let mut got = vec![0; msg.len()];
        let both = async { tokio::join!(w.write_all(msg), r.read_exact(&mut got)) };
        let (wrote, read) = within(both).await;
        wrote.expect("write");
        read.expect("read echo");
        assert!(got == msg, "echo came back altered");
    }

    async fn assert_closed(stream: &mut TcpStream) {
        let mut buf = [0u8; 1];
        let read = within(stream.read(&mut buf)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "still open: {read:?}");
    }

    #[tokio::test]
    async fn relays_both_ways_and_counts() {
        let proxy = echo_proxy().await;
        let mut a = dial(&proxy).await;
        let mut b = dial(&proxy).await;
        echo(&mut a, b"hello").await;
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        echo(&mut b, &big).await;
        until(|| proxy.connections() == 2).await;
        assert_eq!(proxy.accepted(), 2);
        drop(a);
        until(|| proxy.connections() == 1).await;
        within(proxy.shutdown()).await;
        assert_closed(&mut b).await;
    }

    #[tokio::test]
    async fn cut_after_drops_the_connection_mid_stream_once() {
        let proxy = echo_proxy().await;
        let mut first = dial(&proxy).await;
        proxy.cut_after(5);
        first.write_all(b"0123456789").await.expect("write");
        let mut got = Vec::new();
        within(first.read_to_end(&mut got))
            .await
            .expect("the relay closes, it does not fail the read");
        assert_eq!(got, b"01234", "exactly the budget passed");
        let mut second = dial(&proxy).await;
        echo(&mut second, b"whole again").await;
    }

    #[tokio::test]
    async fn cut_closes_live_connections_and_refuses_until_restore() {
        let proxy = echo_proxy().await;
        let mut live = dial(&proxy).await;
        echo(&mut live, b"before").await;
        proxy.cut();
        assert_closed(&mut live).await;
        until(|| proxy.connections() == 0).await;
        let mut refused = dial(&proxy).await;
        assert_closed(&mut refused).await;
        assert_eq!(proxy.accepted(), 2);
        proxy.restore();
        let mut again = dial(&proxy).await;
        echo(&mut again, b"after").await;
        assert_eq!((proxy.accepted(), proxy.connections()), (3, 1));
    }

    #[tokio::test]
    async fn delay_holds_each_direction() {
        let proxy = echo_proxy().await;
        let mut stream = dial(&proxy).await;
        echo(&mut stream, b"warm").await;
        let delay = Duration::from_millis(150);
        proxy.delay(delay);
        let started = Instant::now();
        echo(&mut stream, b"slow").await;
        // There and back again, each way held at least the delay.
        assert!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());
        proxy.delay(Duration::ZERO);
        echo(&mut stream, b"fast").await;
    }

    #[tokio::test]
    async fn stall_holds_bytes_and_resume_delivers_them_in_order() {
        let proxy = echo_proxy().await;
        let mut stream = dial(&proxy).await;
        echo(&mut stream, b"warm").await;
        proxy.stall();
        for part in [&b"one"[..], b"two", b"three"] {
            within(stream.write_all(part)).await.expect("write");
        }
        let mut buf = [0u8; 16];
        let early = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await;
        assert!(early.is_err(), "bytes moved while stalled: {early:?}");
        assert_eq!(proxy.connections(), 1, "stalled, not dropped");
        proxy.resume();
        let mut got = [0u8; 11];
        let read = within(stream.read_exact(&mut got)).await;
        assert_eq!((read.expect("held bytes"), &got), (11, b"onetwothree"));
    }
}
