//! Connecting to the node's database: an SQLite file by default, MySQL/MariaDB by URL.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL scheme in {0:?}: use sqlite:// or mysql://")]
    UnsupportedUrl(String),
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

/// Opens a pool. SQLite files are created if missing and put in WAL mode so readers
/// never wait on the writer.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, StoreError> {
    let backend = Backend::of_url(url)?;
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
        .sqlx_logging(false);
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
