//! The lock that makes one node at a time migrate a database, so replicas starting
//! together never apply a migration twice. It is taken on the one connection that
//! runs the migrations.
//!
//! - MySQL/MariaDB: a named lock (`GET_LOCK`) per database. The server frees it when
//!   the connection ends, so a crashed node never leaves it behind.
//! - MariaDB Galera (`wsrep_on`): named locks are local to one cluster node, so two
//!   replicas on different nodes would both get one. There the lock is a row of
//!   [`LEASE_TABLE`] with an expiry: inserting it is certified cluster-wide, so exactly
//!   one node's insert commits; a crashed holder's row is taken over once expired.
//! - SQLite: an exclusive transaction, which also makes the whole run atomic (SQLite's
//!   DDL is transactional). Another process waits on SQLite's busy timeout.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, Value};

/// The lock's name on a MySQL server, whose named locks span all its databases.
/// MySQL refuses names over 64 characters.
const MYSQL_NAME: &str = "LEFT(CONCAT('fleet migrations ', DATABASE()), 64)";

/// Where the Galera lease lives; like `seaql_migrations`, it is the migrator's own.
pub const LEASE_TABLE: &str = "fleet_migration_lock";

/// How often a node waiting for the Galera lease tries again.
const LEASE_RETRY: Duration = Duration::from_millis(250);

pub enum Lock {
    Named,
    Lease { holder: String },
    Exclusive,
}

impl Lock {
    /// Waits up to `wait` for the lock on `db`, which must be a pool of one
    /// connection. A Galera lease lasts as long as `wait`.
    pub async fn acquire(db: &DatabaseConnection, wait: Duration) -> Result<Self, DbErr> {
        match db.get_database_backend() {
            DbBackend::MySql if galera(db).await? => lease(db, wait).await,
            DbBackend::MySql => named(db, wait).await,
            DbBackend::Sqlite => {
                let ms = wait.as_millis();
                db.execute_unprepared(&format!("PRAGMA busy_timeout = {ms}"))
                    .await?;
                db.execute_unprepared("BEGIN EXCLUSIVE").await?;
                Ok(Lock::Exclusive)
            }
            DbBackend::Postgres => Err(DbErr::Migration("PostgreSQL is not supported".into())),
        }
    }

    /// Releases the lock; on SQLite commits the run if it `succeeded`, else undoes it.
    pub async fn release(self, db: &DatabaseConnection, succeeded: bool) -> Result<(), DbErr> {
        match self {
            Lock::Named => {
                db.execute_unprepared(&format!("DO RELEASE_LOCK({MYSQL_NAME})"))
                    .await?;
            }
            Lock::Lease { holder } => {
                db.execute(Statement::from_sql_and_values(
                    DbBackend::MySql,
                    format!("DELETE FROM {LEASE_TABLE} WHERE name = 'migrations' AND holder = ?"),
                    [holder.into()],
                ))
                .await?;
            }
            Lock::Exclusive if succeeded => {
                db.execute_unprepared("COMMIT").await?;
            }
            Lock::Exclusive => {
                db.execute_unprepared("ROLLBACK").await?;
            }
        }
        Ok(())
    }
}

async fn galera(db: &DatabaseConnection) -> Result<bool, DbErr> {
    // SHOW VARIABLES rather than @@wsrep_on: MySQL has no such variable.
    let row = db
        .query_one(Statement::from_string(
            DbBackend::MySql,
            "SHOW VARIABLES LIKE 'wsrep_on'",
        ))
        .await?;
    Ok(match row {
        Some(row) => row
            .try_get_by_index::<String>(1)?
            .eq_ignore_ascii_case("ON"),
        None => false,
    })
}

async fn named(db: &DatabaseConnection, wait: Duration) -> Result<Lock, DbErr> {
    let row = db
        .query_one(Statement::from_sql_and_values(
            DbBackend::MySql,
            format!("SELECT GET_LOCK({MYSQL_NAME}, ?) AS got"),
            [seconds(wait).into()],
        ))
        .await?;
    let got: Option<i64> = match row {
        Some(row) => row.try_get("", "got")?,
        None => None,
    };
    match got {
        Some(1) => Ok(Lock::Named),
        Some(_) => Err(DbErr::Migration(format!(
            "another node held the migration lock for {wait:?}"
        ))),
        None => Err(DbErr::Migration(
            "the server refused the migration lock".into(),
        )),
    }
}

async fn lease(db: &DatabaseConnection, wait: Duration) -> Result<Lock, DbErr> {
    db.execute_unprepared(&format!(
        "CREATE TABLE IF NOT EXISTS {LEASE_TABLE} (name varchar(32) NOT NULL PRIMARY KEY, \
         holder varchar(32) NOT NULL, expires_at bigint NOT NULL) ENGINE=InnoDB"
    ))
    .await?;
    let holder = format!("{:016x}", rand::random::<u64>());
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // The server's clock, one for every node, decides expiry.
        db.execute_unprepared(&format!(
            "DELETE FROM {LEASE_TABLE} WHERE name = 'migrations' AND expires_at < UNIX_TIMESTAMP()"
        ))
        .await?;
        let values: [Value; 2] = [holder.clone().into(), seconds(wait).into()];
        let inserted = db
            .execute(Statement::from_sql_and_values(
                DbBackend::MySql,
                format!(
                    "INSERT INTO {LEASE_TABLE} (name, holder, expires_at) \
                     VALUES ('migrations', ?, UNIX_TIMESTAMP() + ?)"
                ),
                values,
            ))
            .await;
        // A duplicate key (another node holds it) or a failed certification (another
        // node took it at the same moment) both mean: not ours yet.
        match inserted {
            Ok(_) => return Ok(Lock::Lease { holder }),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(DbErr::Migration(format!(
                    "another node held the migration lease for {wait:?}: {e}"
                )))
            }
            Err(_) => tokio::time::sleep(LEASE_RETRY).await,
        }
    }
}

fn seconds(wait: Duration) -> i64 {
    i64::try_from(wait.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Galera lease works on any MariaDB, so it is proven here on the test server.
    #[tokio::test]
    async fn the_lease_admits_one_holder_at_a_time_and_expires() {
        let Ok(server) = std::env::var("TEST_MYSQL_URL") else {
            eprintln!("the lease runs on MariaDB (TEST_MYSQL_URL)");
            return;
        };
        let name = format!("lease_{:016x}", rand::random::<u64>());
        let admin = sea_orm::Database::connect(server.as_str())
            .await
            .expect("MariaDB reachable");
        admin
            .execute_unprepared(&format!("CREATE DATABASE `{name}`"))
            .await
            .expect("create database");
        let url = format!("{}/{name}", server.trim_end_matches('/'));
        let first = crate::connect(&url, 1).await.expect("connect");
        let second = crate::connect(&url, 1).await.expect("connect");

        let held = lease(&first, Duration::from_secs(60))
            .await
            .expect("free: taken");
        let refused = lease(&second, Duration::ZERO).await;
        assert!(refused.is_err(), "held by the first");
        held.release(&first, true).await.expect("released");
        let held = lease(&second, Duration::ZERO)
            .await
            .expect("released: taken");

        // A holder that died: its lease ran out.
        let Lock::Lease { holder } = held else {
            panic!("a lease")
        };
        second
            .execute_unprepared(&format!(
                "UPDATE {LEASE_TABLE} SET expires_at = UNIX_TIMESTAMP() - 1 WHERE holder = '{holder}'"
            ))
            .await
            .expect("expire");
        lease(&first, Duration::ZERO)
            .await
            .expect("expired: taken over");
    }
}
