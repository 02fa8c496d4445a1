//! Devices read by id, cached per node, so that reading one is no database round
//! trip. Every write to a device row is in the change log, in the write's own
//! transaction, so the log says what to forget:
//! - after this process commits a write, the next read first reads the log's new
//!   positions (one indexed read of three columns, shared by the reads waiting) and
//!   forgets the devices they name: a read that begins after a write returned sees it;
//! - writes of other processes over the same database (center replicas) are forgotten
//!   by the node's shared-log watch within its period (`node::watch_shared_log`);
//! - positions committed out of order are looked at again until they appear
//!   (`fleet_store::outbox`).
//!
//! A read that raced a forget does not keep what it read. An entry also ages out
//! after [`MAX_AGE`], a bound on staleness should a write ever bypass the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_store::outbox::Outbox;
use fleet_store::{change_log, devices, sync};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

/// How long an entry is served without being read again.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Devices kept at most.
pub const CAPACITY: usize = 50_000;
/// Change-log entries read per query while catching up.
const PAGE: u64 = 5_000;
/// How far before the log's head the first look starts: transactions in flight when
/// the cache starts may commit below the head, and are taken for gaps from here.
const IN_FLIGHT: i64 = 1_000;

#[derive(Clone)]
struct Entry {
    read_at: Instant,
    device: Arc<devices::Model>,
}

struct Reader {
    /// `None` until the first look.
    log: Option<Outbox>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ReadLabels {
    outcome: &'static str,
}

pub struct DeviceCache {
    entries: quick_cache::sync::Cache<i64, Entry>,
    /// Moves with every forget, under `fence` with the removals; a fill keeps what it
    /// read only if it has not moved since the read began, checked under `fence`.
    generation: AtomicU64,
    fence: Mutex<()>,
    reader: tokio::sync::Mutex<Reader>,
    /// One more than this process's commit count the last look began after (0: no
    /// look yet), read without the reader's lock: a read with no commit since it
    /// takes no lock at all.
    caught: AtomicU64,
    reads: Family<ReadLabels, Counter>,
}

impl DeviceCache {
    pub fn new(capacity: usize, registry: &mut Registry) -> Self {
        let reads = Family::<ReadLabels, Counter>::default();
        registry.register(
            "device_cache_reads",
            "Reads of one device by id, by outcome: hit (served from this node's cache) or \
             miss (read from the database)",
            reads.clone(),
        );
        Self {
            entries: quick_cache::sync::Cache::new(capacity),
            generation: AtomicU64::new(0),
            fence: Mutex::new(()),
            reader: tokio::sync::Mutex::new(Reader { log: None }),
            caught: AtomicU64::new(0),
            reads,
        }
    }

    /// Device `id` as the database holds it now, tombstone or not (`None`: no row).
    /// `commits` is this process's commit count ([`fleet_store::write::Writer::commits`]).
    pub async fn get<C: ConnectionTrait>(
        &self,
        db: &C,
        commits: u64,
        id: i64,
    ) -> Result<Option<Arc<devices::Model>>, DbErr> {
        self.catch_up(db, Some(commits)).await?;
        if let Some(entry) = self.entries.get(&id) {
            if entry.read_at.elapsed() < MAX_AGE {
                self.count("hit");
                return Ok(Some(entry.device));
            }
        }
        self.count("miss");
        let generation = self.generation.load(Ordering::SeqCst);
        let read_at = Instant::now();
        let Some(device) = devices::Entity::find_by_id(id).one(db).await? else {
            return Ok(None);
        };
        let device = Arc::new(device);
        self.fill(generation, read_at, device.clone());
        Ok(Some(device))
    }

    /// Reads every device into the cache (up to its capacity), so that what asks for
    /// devices in bulk right after a start (a storm of device logins) finds them
    /// there. Answers how many were read.
    pub async fn preload<C: ConnectionTrait>(
        &self,
        db: &C,
        commits: u64,
        capacity: usize,
    ) -> Result<usize, DbErr> {
        self.catch_up(db, Some(commits)).await?;
        let mut after = i64::MIN;
        let mut read = 0;
        while read < capacity {
            let generation = self.generation.load(Ordering::SeqCst);
            let read_at = Instant::now();
            let page = devices::Entity::find()
                .filter(devices::Column::Id.gt(after))
                .order_by_asc(devices::Column::Id)
                .limit(PAGE)
                .all(db)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            read += page.len();
            let full = u64::try_from(page.len()).unwrap_or(u64::MAX) >= PAGE;
            for device in page {
                self.fill(generation, read_at, Arc::new(device));
            }
            if !full {
                break;
            }
        }
        Ok(read)
    }

    /// Forgets the devices the change log names since the last look. With
    /// `Some(commits)`, only if this process committed since the last look began;
    /// with `None` (a watch of other processes' writes), always.
    pub async fn catch_up<C: ConnectionTrait>(
        &self,
        db: &C,
        commits: Option<u64>,
    ) -> Result<(), DbErr> {
        let seen = |commits: u64| self.caught.load(Ordering::SeqCst) > commits;
        if commits.is_some_and(seen) {
            return Ok(());
        }
        let mut reader = self.reader.lock().await;
        if commits.is_some_and(seen) {
            return Ok(());
        }
        self.read_log(db, &mut reader.log).await?;
        if let Some(commits) = commits {
            self.caught
                .fetch_max(commits.saturating_add(1), Ordering::SeqCst);
        }
        Ok(())
    }

    async fn read_log<C: ConnectionTrait>(
        &self,
        db: &C,
        log: &mut Option<Outbox>,
    ) -> Result<(), DbErr> {
        let log = match log {
            Some(log) => log,
            None => {
                let head = sync::head(db).await?;
                log.insert(Outbox::new(head.saturating_sub(IN_FLIGHT).max(0)))
            }
        };
        loop {
            let after = log.sent();
            let entries = change_log::touched(db, after, &log.gaps(), PAGE).await?;
            let (fresh, filled): (Vec<i64>, Vec<i64>) = entries
                .iter()
                .map(|(seq, _, _)| *seq)
                .partition(|seq| *seq > after);
            let changed: Vec<i64> = entries
                .iter()
                .filter(|(_, table, _)| table == "devices")
                .map(|(_, _, row)| *row)
                .collect();
            self.forget(&changed);
            log.took(&fresh, &filled, tokio::time::Instant::now());
            if u64::try_from(fresh.len()).unwrap_or(u64::MAX) < PAGE {
                return Ok(());
            }
        }
    }

    /// Forgets these devices; call after a write to them that the change log does not
    /// hold has committed.
    pub fn forget(&self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        let _fence = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        for id in ids {
            self.entries.remove(id);
        }
    }

    /// Forgets every device.
    pub fn forget_all(&self) {
        let _fence = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    fn fill(&self, generation: u64, read_at: Instant, device: Arc<devices::Model>) {
        let _fence = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) == generation {
            self.entries.insert(device.id, Entry { read_at, device });
        }
    }

    fn count(&self, outcome: &'static str) {
        self.reads.get_or_create(&ReadLabels { outcome }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: i64) -> Arc<devices::Model> {
        let row = serde_json::json!({
            "id": id, "name": "d", "device_type": "gateway", "hw_model": "m", "hw_sn": "s",
            "sw_version": "1", "sw_last_update": "", "nics": "[]", "status": "active",
            "description": "", "edge_id": null, "secret_hash": "", "live_key": null,
            "created_at": 0, "updated_at": 0, "hlc": 0, "origin": 0, "deleted": false,
            "field_stamps": "{}"
        });
        Arc::new(serde_json::from_value(row).expect("a device row"))
    }

    #[test]
    fn a_read_that_raced_a_forget_is_not_kept() {
        let cache = DeviceCache::new(16, &mut Registry::default());
        let began = cache.generation.load(Ordering::SeqCst);
        cache.forget(&[7]);
        cache.fill(began, Instant::now(), device(7));
        assert!(cache.entries.get(&7).is_none(), "read before the forget");

        let began = cache.generation.load(Ordering::SeqCst);
        cache.fill(began, Instant::now(), device(7));
        assert!(cache.entries.get(&7).is_some(), "read after it");
        cache.forget(&[7]);
        assert!(cache.entries.get(&7).is_none());
    }
}
