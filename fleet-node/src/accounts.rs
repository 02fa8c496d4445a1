//! The accounts behind tokens, cached per node so that an authenticated request does
//! not read the account from the database. A change to any account (role, password,
//! groups, delete) must still take effect at once, so the cache is dropped whole:
//! - on this node, right after the changing transaction commits ([`Accounts::forget`]);
//! - on every other node over the same database (center replicas), through a version
//!   the changing transaction writes to the shared `settings` table, which each node
//!   reads every [`WATCH_EVERY`] ([`watch`]).
//!
//! An entry remembers the generation it was read in; one read before a change but
//! stored after it carries an old generation and is never served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::HashMap;
use std::sync::RwLock;

use fleet_store::{user_groups, users};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use crate::{Actor, Error, Role};

/// How often a node looks for account changes made through another node.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);
/// The shared setting every account change rewrites.
const VERSION: &str = "accounts_version";

#[derive(Debug, Clone)]
struct Cached {
    generation: u64,
    actor: Actor,
    updated_at: i64,
}

#[derive(Debug, Default)]
pub struct Accounts {
    generation: AtomicU64,
    cache: RwLock<HashMap<i64, Cached>>,
    /// The shared version last seen, so only a change drops the cache.
    seen: std::sync::Mutex<Option<String>>,
}

impl Accounts {
    /// The account a token of account `id`, issued at `issued_ms`, stands for.
    pub async fn actor<C: ConnectionTrait>(
        &self,
        db: &C,
        id: i64,
        issued_ms: i64,
    ) -> Result<Actor, Error> {
        let generation = self.generation.load(Ordering::SeqCst);
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .filter(|c| c.generation == generation)
            .cloned();
        let account = match cached {
            Some(account) => account,
            None => {
                let account = load(db, id, generation).await?;
                self.cache
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, account.clone());
                account
            }
        };
        if issued_ms < account.updated_at {
            return Err(Error::Unauthenticated(
                "the account changed after this token was issued; log in again".into(),
            ));
        }
        Ok(account.actor)
    }

    /// Drops every cached account; call after an account change commits.
    pub fn forget(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Tells the other nodes over this database that an account changed: call in
    /// the changing transaction.
    pub async fn changed<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
        let version = format!("{:016x}", rand::random::<u64>());
        fleet_store::settings::put(db, VERSION, &version).await
    }

    /// Drops the cache if another node changed an account since the last look.
    async fn look<C: ConnectionTrait>(&self, db: &C) -> Result<(), DbErr> {
        let now = fleet_store::settings::get(db, VERSION).await?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen != now {
            *seen = now;
            drop(seen);
            self.forget();
        }
        Ok(())
    }
}

async fn load<C: ConnectionTrait>(db: &C, id: i64, generation: u64) -> Result<Cached, Error> {
    let user = users::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| Error::Unauthenticated("the account no longer exists".into()))?;
    let role = Role::parse(&user.role)
        .ok_or_else(|| Error::Internal(format!("user {} has role {:?}", user.id, user.role)))?;
    let groups = if role == Role::Admin {
        Vec::new()
    } else {
        user_groups::Entity::find()
            .filter(user_groups::Column::UserId.eq(user.id))
            .all(db)
            .await?
            .into_iter()
            .map(|m| m.group_id)
            .collect()
    };
    Ok(Cached {
        generation,
        updated_at: user.updated_at,
        actor: Actor {
            id: user.id,
            username: user.username,
            role,
            groups,
        },
    })
}

/// Looks for account changes made through other nodes, for as long as the process runs.
pub async fn watch(node: std::sync::Arc<crate::Node>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = node.accounts.look(&node.db).await {
            tracing::warn!(error = %e, "looking for account changes failed");
        }
    }
}
