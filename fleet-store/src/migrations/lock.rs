//! The lock that makes one node at a time migrate a database, so replicas starting
//! together never apply a migration twice.
//!
//! MySQL/MariaDB: a named lock (`GET_LOCK`), per database, held by the one connection
//! that runs the migrations; the server frees it if that connection dies, so a
//! crashed node never leaves it behind. SQLite: an exclusive transaction on that
//! connection, which also makes the whole run atomic (SQLite's DDL is
//! transactional); a second process waits on SQLite's busy timeout.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

/// The lock's name on a MySQL server, whose named locks span all its databases.
/// MySQL refuses names over 64 characters.
const MYSQL_NAME: &str = "LEFT(CONCAT('fleet migrations ', DATABASE()), 64)";

pub struct Lock {
    backend: DbBackend,
}

impl Lock {
    /// Waits up to `wait` for the lock on `db`, which must be a pool of one connection.
    pub async fn acquire(db: &DatabaseConnection, wait: Duration) -> Result<Self, DbErr> {
        let backend = db.get_database_backend();
        match backend {
            DbBackend::MySql => {
                let row = db
                    .query_one(Statement::from_sql_and_values(
                        backend,
                        format!("SELECT GET_LOCK({MYSQL_NAME}, ?) AS got"),
                        [i64::try_from(wait.as_secs()).unwrap_or(i64::MAX).into()],
                    ))
                    .await?;
                let got: Option<i64> = match row {
                    Some(row) => row.try_get("", "got")?,
                    None => None,
                };
                match got {
                    Some(1) => {}
                    Some(_) => {
                        return Err(DbErr::Migration(format!(
                            "another node held the migration lock for {wait:?}"
                        )))
                    }
                    None => {
                        return Err(DbErr::Migration(
                            "the server refused the migration lock".into(),
                        ))
                    }
                }
            }
            DbBackend::Sqlite => {
                let ms = wait.as_millis();
                db.execute_unprepared(&format!("PRAGMA busy_timeout = {ms}"))
                    .await?;
                db.execute_unprepared("BEGIN EXCLUSIVE").await?;
            }
            DbBackend::Postgres => {
                return Err(DbErr::Migration("PostgreSQL is not supported".into()))
            }
        }
        Ok(Lock { backend })
    }

    /// Releases the lock; on SQLite commits the run if it `succeeded`, else undoes it.
    pub async fn release(self, db: &DatabaseConnection, succeeded: bool) -> Result<(), DbErr> {
        match self.backend {
            DbBackend::MySql => {
                db.execute_unprepared(&format!("DO RELEASE_LOCK({MYSQL_NAME})"))
                    .await?;
            }
            _ if succeeded => {
                db.execute_unprepared("COMMIT").await?;
            }
            _ => {
                db.execute_unprepared("ROLLBACK").await?;
            }
        }
        Ok(())
    }
}
