//! A migration written as frozen SQL, one script per dialect. Released migrations
//! never change, so they are plain DDL files rather than statements derived from the
//! entity definitions, which evolve.

use sea_orm::{ConnectionTrait, DbBackend, DbErr};
use sea_orm_migration::async_trait::async_trait;
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};

/// One schema change: its recorded name and its DDL in each dialect.
pub struct Script {
    pub name: &'static str,
    pub mysql: &'static str,
    pub sqlite: &'static str,
}

impl Script {
    /// The statements of `backend`'s script, without comments.
    pub fn statements(&self, backend: DbBackend) -> Result<Vec<String>, DbErr> {
        let text = match backend {
            DbBackend::MySql => self.mysql,
            DbBackend::Sqlite => self.sqlite,
            DbBackend::Postgres => {
                return Err(DbErr::Migration(format!(
                    "{}: no PostgreSQL script",
                    self.name
                )))
            }
        };
        let without_comments: String = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        // The scripts are DDL only, with no `;` inside a literal.
        Ok(without_comments
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect())
    }
}

impl MigrationName for Script {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait]
impl MigrationTrait for Script {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in self.statements(db.get_database_backend())? {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}

/// Includes the two scripts of the migration `$name` from `fleet-store/migrations/`.
macro_rules! script {
    ($name:literal) => {
        $crate::migrations::script::Script {
            name: $name,
            mysql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/",
                $name,
                ".mysql.sql"
            )),
            sqlite: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/",
                $name,
                ".sqlite.sql"
            )),
        }
    };
}
pub(crate) use script;
