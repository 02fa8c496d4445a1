//! Artifacts at the edge: the site's copy of the files its devices install, fetched
//! from the center once per edge however many devices want them, kept in a
//! size-capped cache in the data directory, and served to the site's devices
//! (`serve`). Who may do what:
//! - a device downloads an artifact with its own credentials, and only one that an
//!   `install` command of its own, not yet finished, names;
//! - the edge fetches with its own id and secret, which the center accepts for
//!   artifact reads and nothing else of its API.
//!
//! One fetch per artifact runs at a time; devices asking meanwhile are told to come
//! back (503 with `Retry-After`), so no request is held open for the length of a
//! transfer from the center. A fetch that fails on the network is retried with
//! backoff and resumes where it stopped.

mod cache;
mod fetch;
mod serve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_node::loops::Loops;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shared_proto::backoff::Backoff;
use tokio::time::Instant;

use crate::uplink::CenterLink;

pub use cache::Cache;
pub use fetch::{FetchError, Fetcher};
pub use serve::{__path_content, configure, content};

/// Attempts of one fetch on network failures before it is given up (until a device
/// asks again).
const ATTEMPTS: u32 = 6;
/// How long a failed fetch is remembered: devices asking meanwhile get its reason
/// instead of starting another fetch.
const FAILED_FOR: Duration = Duration::from_secs(10);

#[derive(Clone, Default)]
pub struct ArtifactMetrics {
    fetched: Counter,
    served: Counter,
    cached: Gauge,
    fetches: Family<OutcomeLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

impl ArtifactMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "artifact_fetched_bytes",
            "Artifact bytes fetched from the center",
            self.fetched.clone(),
        );
        registry.register(
            "artifact_served_bytes",
            "Artifact bytes served to devices from the cache",
            self.served.clone(),
        );
        registry.register(
            "artifact_cache_bytes",
            "Bytes the cached artifact files take",
            self.cached.clone(),
        );
        registry.register(
            "artifact_fetches",
            "Artifact fetches from the center, by outcome (ok, failed)",
            self.fetches.clone(),
        );
    }
}

/// Where an artifact stands at this edge, for a device that wants it.
#[derive(Debug)]
pub enum Lookup {
    /// Cached: its file and size.
    Ready(PathBuf, u64),
    /// Being fetched from the center.
    Fetching,
    /// The last fetch failed, for this reason; the next one starts after a pause.
    Failed(String),
    /// The center has no such artifact.
    Missing,
}

#[derive(Debug)]
enum Fetching {
    Running,
    Failed {
        why: String,
        missing: bool,
        until: Instant,
    },
}

pub struct Artifacts {
    cache: Cache,
    fetcher: Option<Fetcher>,
    fetches: Mutex<HashMap<i64, Fetching>>,
    metrics: ArtifactMetrics,
    loops: Loops,
}

impl Artifacts {
    /// The cache in `dir`, fetching from the center `center` names (if any).
    pub fn open(
        dir: &Path,
        cap: u64,
        center: Option<&CenterLink>,
        metrics: ArtifactMetrics,
        loops: Loops,
    ) -> Result<Self, FetchError> {
        let cache = Cache::open(dir, cap)?;
        let fetcher = match center {
            Some(link) => Fetcher::new(link)?,
            None => None,
        };
        metrics
            .cached
            .set(i64::try_from(cache.total()).unwrap_or(i64::MAX));
        Ok(Self {
            cache,
            fetcher,
            fetches: Mutex::new(HashMap::new()),
            metrics,
            loops,
        })
    }

    fn fetches(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Fetching>> {
        self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where artifact `id` stands; starts fetching it when it is neither cached nor
    /// being fetched (nor failed a moment ago).
    pub fn lookup(self: &Arc<Self>, id: i64) -> Lookup {
        if let Some((path, size)) = self.cache.get(id) {
            return Lookup::Ready(path, size);
        }
        let mut fetches = self.fetches();
        match fetches.get(&id) {
            Some(Fetching::Running) => return Lookup::Fetching,
            Some(Fetching::Failed {
                why,
                missing,
                until,
            }) if Instant::now() < *until => {
                return if *missing {
                    Lookup::Missing
                } else {
                    Lookup::Failed(why.clone())
                };
            }
            _ => {}
        }
        // Checked again under the lock: a fetch may have finished since the look.
        if let Some((path, size)) = self.cache.get(id) {
            return Lookup::Ready(path, size);
        }
        fetches.insert(id, Fetching::Running);
        self.loops.spawn(self.clone().fetch(id));
        Lookup::Fetching
    }

    /// Starts fetching artifact `id` unless it is cached or on its way: an install
    /// command for it has reached this edge, and its devices will ask for it soon.
    pub fn prefetch(self: &Arc<Self>, id: i64) {
        let _ = self.lookup(id);
    }

    /// One fetch, retried with backoff on network failures.
    async fn fetch(self: Arc<Self>, id: i64) {
        let outcome = match &self.fetcher {
            None => Err(FetchError::NoCenter),
            Some(fetcher) => {
                let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
                let mut attempt = 1;
                loop {
                    match fetcher.fetch(&self.cache, id, &self.metrics.fetched).await {
                        Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                            attempt += 1;
                            let pause = backoff.next_delay(&mut rand::thread_rng());
                            tokio::time::sleep(pause).await;
                        }
                        done => break done,
                    }
                }
            }
        };
        if let Err(FetchError::NotFound(_)) = outcome {
            fetch::discard(&self.cache.part_path(id)).await;
        }
        let mut fetches = self.fetches();
        match outcome {
            Ok(_) => {
                fetches.remove(&id);
                self.metrics
                    .fetches
                    .get_or_create(&OutcomeLabel { outcome: "ok" })
                    .inc();
            }
            Err(e) => {
                tracing::warn!(artifact = id, error = %e, "artifact not fetched");
                self.metrics
                    .fetches
                    .get_or_create(&OutcomeLabel { outcome: "failed" })
                    .inc();
                fetches.insert(
                    id,
                    Fetching::Failed {
                        missing: matches!(e, FetchError::NotFound(_)),
                        why: e.to_string(),
                        until: Instant::now() + FAILED_FOR,
                    },
                );
            }
        }
        self.metrics
            .cached
            .set(i64::try_from(self.cache.total()).unwrap_or(i64::MAX));
    }

    /// Counts bytes served to a device.
    fn served(&self, bytes: u64) {
        self.metrics.served.inc_by(bytes);
    }
}
