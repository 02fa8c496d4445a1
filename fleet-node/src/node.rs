//! A node's state: its database and write path, and what its doors (the HTTP API,
//! the device hub, the federation link) share.

use std::sync::Arc;

use fleet_store::write::{Contended, Turn};
use fleet_store::{devices, Replica};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr};
use tokio::sync::{broadcast, Notify};

use crate::commands::Dispatch;
use crate::devices::{HomeEdges, Presence};
use crate::metrics::Metrics;
use crate::throttle::LoginThrottle;
use crate::tokens::Tokens;

pub struct Node {
    pub db: DatabaseConnection,
    pub replica: Replica,
    pub tokens: Tokens,
    pub metrics: Metrics,
    pub login_throttle: LoginThrottle,
    /// The accounts behind tokens, cached (`accounts`).
    pub accounts: crate::accounts::Accounts,
    /// Devices read by id, cached (`device_cache`): read them with [`Node::device`].
    pub device_cache: crate::device_cache::DeviceCache,
    pub home_edges: HomeEdges,
    /// Who is connected, where this node holds device connections.
    pub presence: Option<Arc<dyn Presence>>,
    /// Where new commands go, where this node holds (or reaches) device connections.
    pub dispatch: Option<Arc<dyn Dispatch>>,
    /// Announces every command that reached a final state, as it ended.
    pub finished: broadcast::Sender<fleet_store::commands::Model>,
    /// Announces every command a device ended here, inside the transaction that
    /// stores it, before its commit: for a peer that merges it like any change and
    /// answers its own waiters at once (an edge's uplink to the center). A failed
    /// commit is repaired by the device sending its result again, with a later stamp.
    pub ending: broadcast::Sender<fleet_store::commands::Model>,
    /// Announces every final result a device gave here, as it arrives, before it is
    /// written: for a caller waiting on that command here (`commands::Waiter`).
    pub heard: broadcast::Sender<Arc<crate::commands::Heard>>,
    /// Woken after every write transaction, so federation links push new change-log
    /// entries at once instead of polling for them.
    pub changed: Arc<Notify>,
    /// Begins write transactions, one at a time on SQLite, at once on MySQL with the
    /// database keeping them correct (`fleet_store::write`).
    writer: fleet_store::write::Writer,
    /// Events waiting to be written together (`Node::record`).
    pub(crate) events: crate::events::Queue,
    /// Command moves waiting to be committed together (`commands::advance`).
    pub(crate) moves: std::sync::Mutex<Vec<crate::commands::Move>>,
}

impl Node {
    pub fn new(
        db: DatabaseConnection,
        replica: Replica,
        tokens: Tokens,
        mut metrics: Metrics,
    ) -> Self {
        let changed = Arc::new(Notify::new());
        let device_cache = crate::device_cache::DeviceCache::new(
            crate::device_cache::CAPACITY,
            &mut metrics.registry,
        );
        Self {
            writer: fleet_store::write::Writer::new(db.clone(), changed.clone()),
            db,
            replica,
            tokens,
            metrics,
            login_throttle: LoginThrottle::default(),
            accounts: crate::accounts::Accounts::default(),
            device_cache,
            home_edges: HomeEdges::Registry,
            presence: None,
            dispatch: None,
            finished: broadcast::channel(1024).0,
            ending: broadcast::channel(1024).0,
            heard: broadcast::channel(1024).0,
            changed,
            events: crate::events::Queue::default(),
            moves: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Compacts the change log (`fleet_store::sync::compact`), one step per write turn
    /// so other writers get in between. Returns how many entries went.
    pub async fn compact_change_log(&self, retain: std::time::Duration) -> Result<u64, DbErr> {
        let retain_ms = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let gone = self
                .transact(|txn| async move { fleet_store::sync::compact(&*txn, retain_ms).await })
                .await?;
            total += gone;
            if gone == 0 {
                return Ok(total);
            }
        }
    }

    /// Device `id` as the database holds it now, tombstone or not (`None`: no row),
    /// from the cache when it holds it; a write this process committed before the
    /// call is always seen.
    pub async fn device(&self, id: i64) -> Result<Option<Arc<devices::Model>>, DbErr> {
        self.device_cache
            .get(&self.db, self.writer.commits(), id)
            .await
    }

    /// Reads every device into the device cache (`DeviceCache::preload`).
    pub async fn preload_devices(&self) -> Result<usize, DbErr> {
        self.device_cache
            .preload(
                &self.db,
                self.writer.commits(),
                crate::device_cache::CAPACITY,
            )
            .await
    }

    /// Begins a transaction that will write, not run again if it loses a race with
    /// another writer: for writes that cannot (a test's) or whose caller retries
    /// anyway. Keep the turn until after the commit.
    pub async fn write(&self) -> Result<(Turn, DatabaseTransaction), DbErr> {
        self.writer.begin().await
    }

    /// Runs `work` in a write transaction, again if it loses a race with another
    /// writer (`fleet_store::write::Writer::transact`): `work` may run more than once
    /// and must only touch the database.
    pub async fn transact<T, E, F, Fut>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(Arc<DatabaseTransaction>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: From<DbErr> + Contended,
    {
        self.writer.transact(work).await
    }
}

/// How often the change log is compacted.
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Compacts the change log every minute, for as long as the process runs. The first
/// pass waits a minute too: a node just started is busy taking its devices back.
pub async fn compact_forever(node: Arc<Node>, retain: std::time::Duration) {
    let first = tokio::time::Instant::now() + COMPACT_EVERY;
    let mut tick = tokio::time::interval_at(first, COMPACT_EVERY);
    loop {
        tick.tick().await;
        match node.compact_change_log(retain).await {
            Ok(0) => {}
            Ok(gone) => tracing::info!(entries = gone, "compacted the change log"),
            Err(e) => tracing::warn!(error = %e, "compacting the change log failed"),
        }
    }
}

/// How often a node looks at the shared change log for commits of other processes.
const LOG_WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Wakes this node's links when another process over the same database (a center
/// replica) commits to the change log, and forgets the devices it changed: a node's
/// own commits do both at once, and this brings the others within [`LOG_WATCH_EVERY`].
/// Two indexed reads per tick.
pub async fn watch_shared_log(node: Arc<Node>) {
    let mut tick = tokio::time::interval(LOG_WATCH_EVERY);
    let mut seen = 0;
    loop {
        tick.tick().await;
        if let Err(e) = node.device_cache.catch_up(&node.db, None).await {
            tracing::debug!(error = %e, "reading the change log for the device cache failed");
        }
        match fleet_store::sync::head(&node.db).await {
            Ok(head) if head > seen => {
                seen = head;
                node.changed.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "reading the change log's head failed"),
        }
    }
}
