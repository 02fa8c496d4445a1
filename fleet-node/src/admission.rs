//! The gate in front of an endpoint that peers must log in to (devices at an edge,
//! edges at the center): how many connections may be open and not yet authenticated,
//! per source and in total. A connection holds a [`Permit`] from accept until its
//! login is done or refused; dropping the permit frees its place, so no path can leak
//! one. What the gate refuses costs a counter, never a database row.
//!
//! The two caps act differently. One source over its cap is refused at once: that
//! source is either abusive or a NAT whose devices retry with backoff. The total cap
//! is back-pressure instead: the accept loop waits in [`Admission::room`] until a
//! place frees, so a legitimate reconnect storm queues in the kernel's listen backlog
//! (no file descriptor, no memory here) rather than being refused and backing off.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// Defaults sized for a site: a NAT in front of a few dozen devices still fits under
/// the per-source cap, and the total keeps a flood of silent sockets far below the
/// process's file limit.
pub const DEFAULT_PER_SOURCE: usize = 64;
pub const DEFAULT_TOTAL: usize = 4096;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many unauthenticated connections from this source")]
    PerSource,
    #[error("too many unauthenticated connections")]
    Total,
}

impl Refused {
    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Refused::PerSource => "over_source_cap",
            Refused::Total => "over_total_cap",
        }
    }
}

/// Counts open unauthenticated connections; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    per_source: usize,
    total: usize,
    open: Mutex<Open>,
    gauge: Gauge,
    /// Woken when a place frees, for whoever waits in [`Admission::room`].
    freed: Notify,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<Source, usize>,
}

/// What one source is: an IPv4 address, or an IPv6 /64 (one host usually owns a whole
/// /64, so counting single IPv6 addresses would make the per-source cap meaningless).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Source::V6Prefix([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

impl Admission {
    /// At most `per_source` open unauthenticated connections from one source and
    /// `total` overall (each at least 1).
    pub fn new(per_source: usize, total: usize) -> Self {
        Self::with_gauge(per_source, total, Gauge::default())
    }

    /// The same, keeping `gauge` equal to the number open (for a gauge that is
    /// registered in a metrics registry before the gate exists).
    pub fn with_gauge(per_source: usize, total: usize, gauge: Gauge) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_source: per_source.max(1),
                total: total.max(1),
                open: Mutex::new(Open::default()),
                gauge,
                freed: Notify::new(),
            }),
        }
    }

    /// A place for a new connection from `ip`, held until the permit is dropped.
    pub fn admit(&self, ip: IpAddr) -> Result<Permit, Refused> {
        let source = Source::from(ip);
        let mut open = self.lock();
        if open.total >= self.inner.total {
            return Err(Refused::Total);
        }
        let from_source = open.by_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.inner.per_source {
            return Err(Refused::PerSource);
        }
        open.by_source.insert(source, from_source.saturating_add(1));
        open.total = open.total.saturating_add(1);
        self.inner.gauge.inc();
        Ok(Permit {
            inner: self.inner.clone(),
            source,
        })
    }

    /// Unauthenticated connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Whether the total cap is reached (a new connection would be refused).
    pub fn is_full(&self) -> bool {
        self.open() >= self.inner.total
    }

    /// Returns once the total is below its cap: an accept loop calls this before
    /// accepting, so connections over the total wait in the listen backlog.
    pub async fn room(&self) {
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a place freed in between still wakes us.
            freed.as_mut().enable();
            if !self.is_full() {
                return;
            }
            freed.await;
        }
    }

    /// The same number as a gauge, for a metrics registry.
    pub fn gauge(&self) -> Gauge {
        self.inner.gauge.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.inner.lock()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counters stay consistent under every early return, so a poisoned lock
        // still holds usable numbers.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(DEFAULT_PER_SOURCE, DEFAULT_TOTAL)
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("per_source", &self.inner.per_source)
            .field("total", &self.inner.total)
            .field("open", &self.open())
            .finish()
    }
}

/// One admitted, not yet authenticated connection. Dropping it frees the place.
#[must_use = "the place is freed when the permit is dropped"]
pub struct Permit {
    inner: Arc<Inner>,
    source: Source,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.inner.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_source.remove(&self.source);
            }
        }
        self.inner.gauge.dec();
        drop(open);
        self.inner.freed.notify_waiters();
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_source_is_capped_and_its_places_come_back_on_drop() {
        let gate = Admission::new(2, 10);
        let a = ip("10.0.0.1");
        let first = gate.admit(a).expect("first");
        let _second = gate.admit(a).expect("second");
        assert_eq!(gate.admit(a).err(), Some(Refused::PerSource));
        assert!(
            gate.admit(ip("10.0.0.2")).is_ok(),
            "another source still gets in"
        );
        drop(first);
        assert!(gate.admit(a).is_ok(), "a dropped permit frees its place");
    }

    #[test]
    fn the_total_is_capped_across_sources() {
        let gate = Admission::new(5, 3);
        let held: Vec<Permit> = (1..=3)
            .map(|i| gate.admit(ip(&format!("10.0.0.{i}"))).expect("admitted"))
            .collect();
        assert_eq!(gate.admit(ip("10.0.0.9")).err(), Some(Refused::Total));
        assert_eq!(gate.open(), 3);
        assert_eq!(gate.gauge().get(), 3);
        drop(held);
        assert_eq!(gate.open(), 0);
        assert_eq!(gate.gauge().get(), 0);
        assert!(gate.lock().by_source.is_empty(), "no entry left per source");
    }

    #[tokio::test]
    async fn room_waits_for_a_place_under_the_total() {
        let gate = Admission::new(5, 2);
        gate.room().await;
        let first = gate.admit(ip("10.0.0.1")).expect("first");
        let _second = gate.admit(ip("10.0.0.2")).expect("second");
        assert!(gate.is_full());
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room while full");
        drop(first);
        waiting.await.expect("room once a place freed");
        assert!(gate.admit(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let gate = Admission::new(1, 10);
        let _one = gate.admit(ip("2001:db8:1:2::1")).expect("first");
        assert_eq!(
            gate.admit(ip("2001:db8:1:2::ffff")).err(),
            Some(Refused::PerSource),
            "same /64"
        );
        assert!(gate.admit(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        let _v4 = gate.admit(ip("192.0.2.7")).expect("v4");
        assert_eq!(
            gate.admit(ip("::ffff:192.0.2.7")).err(),
            Some(Refused::PerSource)
        );
    }

    #[test]
    fn permits_survive_being_moved_across_threads() {
        let gate = Admission::new(1000, 1000);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let gate = gate.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let p = gate.admit(ip(&format!("10.{t}.0.{}", i % 4)));
                        drop(p);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(gate.open(), 0);
    }
}
