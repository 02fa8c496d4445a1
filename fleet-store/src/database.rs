//! Connecting to the node's database: an SQLite file by default, MySQL/MariaDB by URL.

use std::time::Duration;

use sea_orm::sqlx::sqlite::SqliteSynchronous;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL scheme in {0:?}: use sqlite:// or mysql://")]
    UnsupportedUrl(String),
    #[error("bad database URL parameter {0}")]
    BadParameter(String),
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Backend::MySql)
        } else {
            // Never echo the URL: it may carry a password.
            Err(StoreError::UnsupportedUrl(
                url.split(':').next().unwrap_or_default().to_string(),
            ))
        }
    }
}

/// How an SQLite commit reaches the disk, from the URL's `synchronous` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// The default: in WAL mode a commit is written but the log is flushed to disk
    /// only at checkpoints. A commit survives the process being killed; a power loss
    /// or a crash of the machine may undo the last ones.
    Normal,
    /// Every commit waits for the disk (`synchronous=full`): it survives a power
    /// loss, at the cost of a flush per commit.
    Full,
}

/// Takes the `synchronous` parameter out of an SQLite URL (the driver does not know
/// it). Anything but `normal` or `full` is refused by name.
fn synchronous_of(url: &str) -> Result<(String, Synchronous), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Synchronous::Normal));
    };
    let mut level = Synchronous::Normal;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("synchronous", value)) => {
                level = match value.to_ascii_lowercase().as_str() {
                    "normal" => Synchronous::Normal,
                    "full" => Synchronous::Full,
                    _ => {
                        return Err(StoreError::BadParameter(
                            "synchronous: must be normal or full".into(),
                        ))
                    }
                }
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, level))
}

/// Opens a pool. SQLite files are created if missing and put in WAL mode so readers
/// never wait on the writer, with the URL's `synchronous` level ([`Synchronous`]).
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, StoreError> {
    let backend = Backend::of_url(url)?;
    let (url, synchronous) = match backend {
        Backend::Sqlite => synchronous_of(url)?,
        Backend::MySql => (url.to_string(), Synchronous::Full),
    };
    let url = url.as_str();
    let url = match backend {
        Backend::MySql => url.replacen("mariadb://", "mysql://", 1),
        Backend::Sqlite if !url.contains("mode=") => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        }
        Backend::Sqlite => url.to_string(),
    };
    if backend == Backend::MySql {
        return connect_mysql(&url, max_connections).await;
    }
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        // A connection to a local file does not go stale, and each check would be one
        // more round trip to the connection's thread, for every statement a pooled
        // connection runs.
        .test_before_acquire(false)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |o| {
            o.synchronous(match synchronous {
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
            })
            // Checkpoints run beside the writers ([`checkpoint_forever`]), not inside
            // the commit that fills the log: that commit would wait for the copy and
            // its flushes, a stall of milliseconds for whoever wrote it. A process
            // that does not run them (a short tool) checkpoints when it closes.
            .pragma("wal_autocheckpoint", "0")
            // A statement that writes several rows inside a transaction keeps the
            // pages it changes in a statement journal, to undo itself alone should
            // it fail. In a temporary file, every batched write (a storm's events,
            // a merge) paid for creating, writing and deleting that file.
            .pragma("temp_store", "memory")
        });
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        wal(&db).await?;
    }
    Ok(db)
}

/// Opens a MySQL pool whose connections read committed data: writers run at once
/// and lock what they change (`crate::write`), so a transaction's plain reads must see
/// what the others committed since it began, not a snapshot from its first read (an
/// answer read after a locked write would show the row as it was before).
async fn connect_mysql(url: &str, max_connections: u32) -> Result<DatabaseConnection, StoreError> {
    use sea_orm::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
    use sea_orm::sqlx::{ConnectOptions as _, Executor as _};
    let sqlx_err = |e| sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e));
    let options: MySqlConnectOptions = url.parse().map_err(sqlx_err)?;
    let pool = MySqlPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await
                    .map(|_| ())
            })
        })
        .connect_with(options.disable_statement_logging())
        .await
        .map_err(sqlx_err)?;
    Ok(sea_orm::SqlxMySqlConnector::from_sqlx_mysql_pool(pool))
}

/// Puts an SQLite database in WAL mode. Switching needs the file to itself, so
/// processes opening a fresh database at once (replicas migrating it) may find it
/// busy for a moment: they retry for a few seconds, then give up.
async fn wal(db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    let mut tries = 0;
    loop {
        match db.execute_unprepared("PRAGMA journal_mode=WAL").await {
            Ok(_) => return Ok(()),
            Err(e) if tries < 50 && e.to_string().contains("database is locked") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How often [`checkpoint_forever`] moves the write-ahead log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Copies SQLite's write-ahead log into the database file every second, without
/// blocking writers (a passive checkpoint), so the log stays small. For SQLite only.
/// Runs until dropped.
pub async fn checkpoint_forever(db: DatabaseConnection) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = db
            .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
            .await
        {
            tracing::warn!(error = %e, "checkpointing the write-ahead log failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synchronous_level_is_taken_out_of_the_url() {
        let level = |url: &str| synchronous_of(url).map_err(|e| e.to_string());
        assert_eq!(
            level("sqlite:///d/f.db").expect("plain"),
            ("sqlite:///d/f.db".into(), Synchronous::Normal)
        );
        assert_eq!(
            level("sqlite:///d/f.db?synchronous=FULL&mode=rwc").expect("full"),
            ("sqlite:///d/f.db?mode=rwc".into(), Synchronous::Full)
        );
        assert_eq!(
            level("sqlite:///d/f.db?mode=rwc&synchronous=normal").expect("normal"),
            ("sqlite:///d/f.db?mode=rwc".into(), Synchronous::Normal)
        );
        let refused = level("sqlite:///d/f.db?synchronous=off").expect_err("off");
        assert!(refused.contains("synchronous"), "{refused}");
    }
}
