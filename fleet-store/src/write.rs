//! The write path of a node (`docs/sync.md` §7): how a transaction that writes is
//! begun, and how one that lost a race with another writer is run again.
//!
//! On SQLite there is one writer at a time anyway: write transactions queue in the
//! process, so a transaction never finds another writer of the process between its
//! reads and its writes. On MySQL (and Galera) writers run at once and the database keeps them
//! correct: a replicated row is saved only over the version it was read as
//! ([`crate::Replica::update`]), rows a write depends on are read with locks, a row
//! read as missing is inserted (never upserted) so a concurrent insert shows as a
//! duplicate, and a
//! transaction the database gives up on (a deadlock, a lock wait timeout, a Galera
//! certification failure) or that found its row changed underneath is run again from
//! the start by [`Writer::transact`], a bounded number of times.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, RuntimeErr,
    TransactionTrait,
};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

/// Runs of one transaction at most, the first included.
const ATTEMPTS: u32 = 8;

/// Begins write transactions and runs them again when they lose a race.
#[derive(Clone)]
pub struct Writer {
    db: DatabaseConnection,
    /// SQLite's writers, one at a time; `None` on MySQL.
    queue: Option<Arc<Mutex<()>>>,
    changed: Arc<Notify>,
    commits: Arc<AtomicU64>,
}

/// A write transaction's place: in SQLite's queue (if it has one) for as long as it
/// lives. Dropped after the commit, it counts the commit and wakes whoever waits for
/// new changes.
pub struct Turn {
    _queue: Option<OwnedMutexGuard<()>>,
    changed: Arc<Notify>,
    commits: Arc<AtomicU64>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// An error that may come from a transaction that lost a race, and is then worth
/// running again.
pub trait Contended {
    fn contended(&self) -> bool;
}

impl Contended for DbErr {
    fn contended(&self) -> bool {
        contended(self)
    }
}

/// Whether the database refused a transaction because of another one at the same
/// time, so that running it again may succeed.
pub fn contended(e: &DbErr) -> bool {
    let runtime = match e {
        // A replicated row saved over a version it was not read as.
        DbErr::RecordNotUpdated => return true,
        DbErr::Exec(r) | DbErr::Query(r) | DbErr::Conn(r) => r,
        _ => return false,
    };
    let RuntimeErr::SqlxError(sea_orm::sqlx::Error::Database(db)) = runtime else {
        return false;
    };
    if let Some(mysql) = db.try_downcast_ref::<sea_orm::SqlxMySqlError>() {
        // Deadlock (also Galera's certification failure), lock wait timeout,
        // "record has changed since last read" (MariaDB's snapshot isolation), and a
        // duplicate key: a row read as missing that another writer inserted since
        // (run again, the transaction finds it). Callers for whom a duplicate is the
        // answer (a serial number taken) turn it into theirs before it gets here.
        return matches!(mysql.number(), 1213 | 1205 | 1020 | 1062);
    }
    // SQLite's "busy" family: another process holds the write lock.
    matches!(db.code().as_deref(), Some("5" | "261" | "517"))
}

impl Writer {
    pub fn new(db: DatabaseConnection, changed: Arc<Notify>) -> Self {
        let queue = (db.get_database_backend() == DbBackend::Sqlite).then(Arc::default);
        Self {
            db,
            queue,
            changed,
            commits: Arc::default(),
        }
    }

    /// How many write transactions have ended here (a rolled-back one may count):
    /// whoever saw a smaller count has not seen every commit of this process since.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Woken after every committed write transaction.
    pub fn changed(&self) -> &Arc<Notify> {
        &self.changed
    }

    /// Begins a transaction that will write. Keep the turn until after the commit.
    /// Prefer [`Writer::transact`], which also runs it again when it loses a race.
    pub async fn begin(&self) -> Result<(Turn, DatabaseTransaction), DbErr> {
        let guard = match &self.queue {
            Some(q) => Some(q.clone().lock_owned().await),
            None => None,
        };
        // On SQLite the transaction is deferred: it reads from the snapshot it
        // starts with and takes the write lock at its first write. The queue keeps
        // every writer of this process out meanwhile, so no commit lands between the
        // two; should another process write (a tool on the file), the upgrade fails
        // as busy and `transact` runs the transaction again. Taking the lock first
        // would cost a statement, a round trip to SQLite's thread, on every write.
        let txn = self.db.begin().await?;
        Ok((
            Turn {
                _queue: guard,
                changed: self.changed.clone(),
                commits: self.commits.clone(),
            },
            txn,
        ))
    }

    /// Runs `work` in a write transaction and commits it. When the work or the commit
    /// fails because another writer got there first ([`Contended`]), the transaction
    /// is rolled back and run again after a short random pause, up to [`ATTEMPTS`]
    /// times. `work` may run more than once: it must only touch the database (what
    /// it does elsewhere belongs after `transact` returns). The transaction is lent
    /// as an `Arc` so that the work's future borrows nothing from this call; it must
    /// not keep a clone of it.
    pub async fn transact<T, E, F, Fut>(&self, mut work: F) -> Result<T, E>
    where
        F: FnMut(Arc<DatabaseTransaction>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<DbErr> + Contended,
    {
        let mut attempt = 1;
        loop {
            let (turn, txn) = self.begin().await?;
            let txn = Arc::new(txn);
            let outcome = work(txn.clone()).await;
            let txn = Arc::try_unwrap(txn)
                .map_err(|_| DbErr::Custom("a write transaction was kept past its work".into()))?;
            let error = match outcome {
                Ok(value) => match txn.commit().await {
                    Ok(()) => {
                        drop(turn);
                        return Ok(value);
                    }
                    Err(e) => E::from(e),
                },
                Err(e) => {
                    // Rolling back explicitly frees MySQL's locks before the pause.
                    if let Err(r) = txn.rollback().await {
                        tracing::warn!(error = %r, "rolling back a write transaction failed");
                    }
                    e
                }
            };
            drop(turn);
            if attempt >= ATTEMPTS || !error.contended() {
                return Err(error);
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// A random pause growing with the attempt (1-2 ms, then up to 64 ms), so that two
/// writers that collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 1u64 << attempt.min(6);
    Duration::from_micros(rand::random::<u64>() % (ceiling * 1000) + 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_not_updated_is_contended_and_other_errors_are_not() {
        assert!(contended(&DbErr::RecordNotUpdated));
        assert!(!contended(&DbErr::Custom("x".into())));
        assert!(!contended(&DbErr::RecordNotFound("x".into())));
    }

    async fn writer() -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let db = crate::connect(&url, 2).await.expect("connect");
        db.execute_unprepared("CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            .await
            .expect("table");
        (dir, Writer::new(db, Arc::default()))
    }

    async fn count(w: &Writer) -> i64 {
        let row =
            w.db.query_one(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                "SELECT COUNT(*) FROM settings",
            ))
            .await
            .expect("query")
            .expect("row");
        row.try_get_by_index(0).expect("count")
    }

    #[tokio::test]
    async fn a_lost_race_runs_again_from_the_start_and_commits_once() {
        let (_dir, w) = writer().await;
        let runs = std::sync::atomic::AtomicU32::new(0);
        let runs = &runs;
        let out: Result<u32, DbErr> = w
            .transact(|txn| async move {
                let n = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                txn.execute_unprepared(&format!("INSERT INTO settings VALUES ('run-{n}', 'x')"))
                    .await?;
                if n < 3 {
                    return Err(DbErr::RecordNotUpdated);
                }
                Ok(n)
            })
            .await;
        assert_eq!(out, Ok(3));
        assert_eq!(count(&w).await, 1, "the lost runs were rolled back");
    }

    #[tokio::test]
    async fn a_commit_from_outside_the_queue_between_read_and_write_runs_it_again() {
        let (dir, w) = writer().await;
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let outside = crate::connect(&url, 1).await.expect("another connection");
        let runs = std::sync::atomic::AtomicU32::new(0);
        let (runs, outside) = (&runs, &outside);
        let out: Result<u32, DbErr> = w
            .transact(|txn| async move {
                let n = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                // The read starts the transaction's snapshot; a commit from another
                // process lands after it, before the transaction's first write.
                txn.execute_unprepared("SELECT COUNT(*) FROM settings")
                    .await?;
                if n == 1 {
                    outside
                        .execute_unprepared("INSERT INTO settings VALUES ('outside', 'x')")
                        .await?;
                }
                txn.execute_unprepared(&format!("INSERT INTO settings VALUES ('run-{n}', 'x')"))
                    .await?;
                Ok(n)
            })
            .await;
        assert_eq!(
            out,
            Ok(2),
            "the stale snapshot failed as busy and ran again"
        );
        assert_eq!(count(&w).await, 2, "the outside row and one run's");
    }

    #[tokio::test]
    async fn other_errors_and_endless_races_are_not_run_again_forever() {
        let (_dir, w) = writer().await;
        let runs = std::sync::atomic::AtomicU32::new(0);
        let runs = &runs;
        let out: Result<(), DbErr> = w
            .transact(|_| async move {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(DbErr::Custom("not a race".into()))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(runs.swap(0, std::sync::atomic::Ordering::SeqCst), 1);
        let out: Result<(), DbErr> = w
            .transact(|_| async move {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(DbErr::RecordNotUpdated)
            })
            .await;
        assert_eq!(out, Err(DbErr::RecordNotUpdated));
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), ATTEMPTS);
        assert_eq!(count(&w).await, 0);
    }

    #[test]
    fn pauses_stay_within_their_bounds() {
        for attempt in 1..ATTEMPTS {
            let pause = backoff(attempt);
            assert!(pause >= Duration::from_millis(1));
            assert!(pause <= Duration::from_millis(65));
        }
    }
}
