//! Snowflake worker ids leased by center replicas. Several center processes run over
//! one database, started the same way, and each needs a worker id no other node
//! uses: its row ids and stamps carry it. A replica takes the first free id at start
//! and renews its lease while it runs; a replica that dies stops renewing, and its id
//! is free again once the lease expires. Edges get their ids at registration, upwards
//! from 2; leases are taken from 1 and then downwards from 1023, never an id an edge
//! holds or held, and an edge is never given an id a replica ever leased.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{IntoActiveModel, QuerySelect};
use serde::{Deserialize, Serialize};

use crate::ids::MAX_WORKER;

/// How long a lease lasts without renewal.
pub const TTL_MS: i64 = 30_000;
/// How often a replica renews its lease.
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// The setting that holds the highest worker id ever issued to an edge.
pub const EDGE_HIGH_WATER: &str = "edge_worker_high_water";

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "worker_leases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub worker_id: i64,
    /// Who holds it: a random name per process.
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub holder: String,
    /// Milliseconds since the epoch; past it, another replica may take the id.
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Why no worker id could be leased.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("every worker id is leased or issued to an edge")]
    Exhausted,
    #[error("database: {0}")]
    Db(#[from] DbErr),
}

/// The ids edges hold or held: those in the registry, and all up to the high-water
/// mark of issued ids.
async fn edge_ids<C: ConnectionTrait>(db: &C) -> Result<(i64, Vec<i64>), DbErr> {
    let held: Vec<i64> = crate::edges::Entity::find()
        .select_only()
        .column(crate::edges::Column::WorkerId)
        .into_tuple()
        .all(db)
        .await?;
    let high = crate::settings::get(db, EDGE_HIGH_WATER)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    Ok((high, held))
}

/// Takes the first free worker id for `holder` (see the module's order).
pub async fn take<C: ConnectionTrait>(db: &C, holder: &str) -> Result<i64, LeaseError> {
    let (high, held) = edge_ids(db).await?;
    let candidates = std::iter::once(1).chain((2..=MAX_WORKER).rev());
    for id in candidates.filter(|id| *id == 1 || (*id > high && !held.contains(id))) {
        let now = crate::now_ms();
        let row = Model {
            worker_id: id,
            holder: holder.to_string(),
            expires_at: now + TTL_MS,
        };
        let taken = match Entity::find_by_id(id).one(db).await? {
            // Inserting races with other replicas starting: the primary key decides.
            None => Entity::insert(row.into_active_model())
                .exec_without_returning(db)
                .await
                .is_ok(),
            Some(lease) if lease.expires_at < now => {
                Entity::update_many()
                    .col_expr(Column::Holder, Expr::value(holder))
                    .col_expr(Column::ExpiresAt, Expr::value(now + TTL_MS))
                    .filter(Column::WorkerId.eq(id))
                    .filter(Column::ExpiresAt.eq(lease.expires_at))
                    .exec(db)
                    .await?
                    .rows_affected
                    == 1
            }
            Some(_) => false,
        };
        if taken {
            return Ok(id);
        }
    }
    Err(LeaseError::Exhausted)
}

/// Extends `holder`'s lease of `id`; false when it no longer holds it (it stalled past
/// the expiry and another replica took the id over).
pub async fn renew<C: ConnectionTrait>(db: &C, id: i64, holder: &str) -> Result<bool, DbErr> {
    Ok(Entity::update_many()
        .col_expr(Column::ExpiresAt, Expr::value(crate::now_ms() + TTL_MS))
        .filter(Column::WorkerId.eq(id))
        .filter(Column::Holder.eq(holder))
        .exec(db)
        .await?
        .rows_affected
        == 1)
}

/// Gives the id back at a clean stop, so the next start may take it at once.
pub async fn release<C: ConnectionTrait>(db: &C, id: i64, holder: &str) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::ExpiresAt, Expr::value(0))
        .filter(Column::WorkerId.eq(id))
        .filter(Column::Holder.eq(holder))
        .exec(db)
        .await?;
    Ok(())
}

/// Whether a replica ever leased `id` (an edge must never be given it).
pub async fn ever_leased<C: ConnectionTrait>(db: &C, id: i64) -> Result<bool, DbErr> {
    Ok(Entity::find_by_id(id).one(db).await?.is_some())
}
