//! The state every request handler of a node can reach.

use std::sync::Arc;

use fleet_store::Replica;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};
use tokio::sync::{broadcast, Mutex, Notify, OwnedMutexGuard};

use crate::auth::Tokens;
use crate::commands::Dispatch;
use crate::devices::{HomeEdges, Presence};
use crate::metrics::Metrics;
use crate::throttle::LoginThrottle;

pub struct Node {
    pub db: DatabaseConnection,
    pub replica: Replica,
    pub tokens: Tokens,
    pub metrics: Metrics,
    pub login_throttle: LoginThrottle,
    /// The accounts behind tokens, cached (`accounts`).
    pub accounts: crate::accounts::Accounts,
    pub home_edges: HomeEdges,
    /// Who is connected, where this node holds device connections.
    pub presence: Option<Arc<dyn Presence>>,
    /// Where new commands go, where this node holds (or reaches) device connections.
    pub dispatch: Option<Arc<dyn Dispatch>>,
    /// Announces every command that reached a final state, as it ended.
    pub finished: broadcast::Sender<fleet_store::commands::Model>,
    /// Woken after every write transaction, so federation links push new change-log
    /// entries at once instead of polling for them.
    pub changed: Arc<Notify>,
    /// Write transactions run one at a time. SQLite has one writer anyway, and a
    /// transaction that reads before it writes fails at once with "database is
    /// locked" instead of waiting; queueing turns that into waiting. On MySQL, writes
    /// read a row, change it and write it back whole (with its per-field stamps), and
    /// two of them at once would lose one's change (a merge from a peer and an
    /// operator's edit of the same device, found by `edge-cloud/tests/processes.rs`);
    /// queueing also keeps the change log's positions in commit order.
    write_queue: Arc<Mutex<()>>,
    /// Command moves waiting to be committed together (`commands::advance`).
    pub(crate) moves: std::sync::Mutex<Vec<crate::commands::Move>>,
}

/// Holds a node's place in the write queue (if it has one) for as long as it lives.
/// Dropped after the commit, it wakes whoever waits for new changes.
pub struct WriteTurn {
    _guard: OwnedMutexGuard<()>,
    changed: Arc<Notify>,
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        self.changed.notify_waiters();
    }
}

impl Node {
    pub fn new(db: DatabaseConnection, replica: Replica, tokens: Tokens, metrics: Metrics) -> Self {
        let write_queue = Arc::new(Mutex::new(()));
        Self {
            db,
            replica,
            tokens,
            metrics,
            login_throttle: LoginThrottle::default(),
            accounts: crate::accounts::Accounts::default(),
            home_edges: HomeEdges::Registry,
            presence: None,
            dispatch: None,
            finished: broadcast::channel(1024).0,
            changed: Arc::new(Notify::new()),
            write_queue,
            moves: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Compacts the change log (`fleet_store::sync::compact`), one step per write turn
    /// so other writers get in between. Returns how many entries went.
    pub async fn compact_change_log(&self, retain: std::time::Duration) -> Result<u64, DbErr> {
        let retain_ms = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let (_turn, txn) = self.write().await?;
            let gone = fleet_store::sync::compact(&txn, retain_ms).await?;
            txn.commit().await?;
            total += gone;
            if gone == 0 {
                return Ok(total);
            }
        }
    }

    /// Begins a transaction that will write. Keep the turn until after the commit.
    pub async fn write(&self) -> Result<(WriteTurn, DatabaseTransaction), DbErr> {
        let guard = self.write_queue.clone().lock_owned().await;
        let txn = self.db.begin().await?;
        if self.db.get_database_backend() == sea_orm::DbBackend::Sqlite {
            // Takes SQLite's write lock before anything is read: a transaction that
            // reads first and writes later fails at once ("database is locked") if
            // any other connection committed in between, while one that holds the
            // lock from the start makes the others wait their turn.
            txn.execute_unprepared("DELETE FROM settings WHERE 0 = 1")
                .await?;
        }
        Ok((
            WriteTurn {
                _guard: guard,
                changed: self.changed.clone(),
            },
            txn,
        ))
    }
}

/// How often the change log is compacted.
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Compacts the change log every minute, for as long as the process runs.
pub async fn compact_forever(node: actix_web::web::Data<Node>, retain: std::time::Duration) {
    let mut tick = tokio::time::interval(COMPACT_EVERY);
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
/// replica) commits to the change log: a node's own commits wake them at once, and
/// this brings the others within [`LOG_WATCH_EVERY`]. One indexed read per tick.
pub async fn watch_shared_log(node: actix_web::web::Data<Node>) {
    let mut tick = tokio::time::interval(LOG_WATCH_EVERY);
    let mut seen = 0;
    loop {
        tick.tick().await;
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
