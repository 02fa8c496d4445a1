//! Which center replica holds an edge's federation link. Several replicas over one
//! database may each be dialled by an edge, but only one may serve its link at a
//! time (two would merge the same batches and push the same log twice): a replica
//! takes the lease when the edge logs in, renews it while the link is up, and gives it
//! back when the link ends. A replica that dies stops renewing, and the lease expires.
//! Every replica reads the edge's link state here.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{IntoActiveModel, QuerySelect};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "link_leases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub edge_id: i64,
    /// The replica that holds it: a random name per process.
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub holder: String,
    /// Milliseconds since the epoch; past it, the link counts as down.
    pub expires_at: i64,
    /// When the link came up.
    pub since_ms: i64,
    /// How far the edge's clock ran ahead of the holder's at login.
    pub clock_skew_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Takes the lease of `edge`'s link for `holder`, if nobody else holds it live.
/// Answers the lease's start (ms), which names this one link: a later link of the
/// same edge through the same replica takes it over, and the earlier one's renewals
/// and release then miss.
pub async fn take<C: ConnectionTrait>(
    db: &C,
    edge: i64,
    holder: &str,
    ttl_ms: i64,
    clock_skew_ms: i64,
) -> Result<Option<i64>, DbErr> {
    let now = crate::now_ms();
    let fresh = Model {
        edge_id: edge,
        holder: holder.to_string(),
        expires_at: now + ttl_ms,
        since_ms: now,
        clock_skew_ms,
    };
    match Entity::find_by_id(edge).one(db).await? {
        // Inserting races with other replicas: the primary key decides.
        None => Ok(Entity::insert(fresh.into_active_model())
            .exec_without_returning(db)
            .await
            .ok()
            .map(|_| now)),
        Some(held) if held.holder == holder || held.expires_at < now => {
            let taken = Entity::update_many()
                .col_expr(Column::Holder, Expr::value(holder))
                .col_expr(Column::ExpiresAt, Expr::value(fresh.expires_at))
                .col_expr(Column::SinceMs, Expr::value(now))
                .col_expr(Column::ClockSkewMs, Expr::value(clock_skew_ms))
                .filter(Column::EdgeId.eq(edge))
                .filter(Column::Holder.eq(held.holder))
                .filter(Column::ExpiresAt.eq(held.expires_at))
                .exec(db)
                .await?
                .rows_affected
                == 1;
            Ok(taken.then_some(now))
        }
        Some(_) => Ok(None),
    }
}

/// Extends the lease taken at `since_ms`; false when that link no longer holds it.
pub async fn renew<C: ConnectionTrait>(
    db: &C,
    edge: i64,
    holder: &str,
    since_ms: i64,
    ttl_ms: i64,
) -> Result<bool, DbErr> {
    Ok(Entity::update_many()
        .col_expr(Column::ExpiresAt, Expr::value(crate::now_ms() + ttl_ms))
        .filter(Column::EdgeId.eq(edge))
        .filter(Column::Holder.eq(holder))
        .filter(Column::SinceMs.eq(since_ms))
        .exec(db)
        .await?
        .rows_affected
        == 1)
}

/// Gives the lease taken at `since_ms` back when its link ends, so the edge may link
/// anywhere at once.
pub async fn release<C: ConnectionTrait>(
    db: &C,
    edge: i64,
    holder: &str,
    since_ms: i64,
) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::ExpiresAt, Expr::value(0))
        .filter(Column::EdgeId.eq(edge))
        .filter(Column::Holder.eq(holder))
        .filter(Column::SinceMs.eq(since_ms))
        .exec(db)
        .await?;
    Ok(())
}

/// The live lease of `edge`'s link, if one is held now.
pub async fn live<C: ConnectionTrait>(db: &C, edge: i64) -> Result<Option<Model>, DbErr> {
    let now = crate::now_ms();
    Ok(Entity::find_by_id(edge)
        .one(db)
        .await?
        .filter(|l| l.expires_at >= now))
}

/// The edges whose link another holder than `holder` holds live.
pub async fn held_by_others<C: ConnectionTrait>(db: &C, holder: &str) -> Result<Vec<i64>, DbErr> {
    Entity::find()
        .select_only()
        .column(Column::EdgeId)
        .filter(Column::ExpiresAt.gte(crate::now_ms()))
        .filter(Column::Holder.ne(holder))
        .into_tuple()
        .all(db)
        .await
}

/// Ends whatever lease `edge`'s link has (its secret changed, or it was deleted): the
/// replica holding the link closes it at its next renewal.
pub async fn revoke<C: ConnectionTrait>(db: &C, edge: i64) -> Result<(), DbErr> {
    Entity::delete_by_id(edge).exec(db).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, sea_orm::DatabaseConnection) {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("l.db").display());
        crate::migrations::Schema::Center
            .migrate(&url)
            .await
            .expect("migrated");
        let db = crate::connect(&url, 1).await.expect("db");
        (dir, db)
    }

    #[tokio::test]
    async fn one_replica_holds_a_link_until_it_lets_go_or_its_lease_expires() {
        let (_dir, db) = db().await;
        let a = take(&db, 7, "a", 60_000, 0)
            .await
            .expect("take")
            .expect("free");
        assert_eq!(take(&db, 7, "b", 60_000, 0).await.expect("take"), None);
        assert!(live(&db, 7).await.expect("read").is_some());
        assert!(renew(&db, 7, "a", a, 60_000).await.expect("renew"));
        release(&db, 7, "a", a).await.expect("release");
        assert!(live(&db, 7).await.expect("read").is_none());
        let b = take(&db, 7, "b", 60_000, 5)
            .await
            .expect("take")
            .expect("released");
        assert!(
            !renew(&db, 7, "a", a, 60_000).await.expect("renew"),
            "a let go"
        );
        Entity::update_many()
            .col_expr(Column::ExpiresAt, Expr::value(1))
            .exec(&db)
            .await
            .expect("expire");
        let c = take(&db, 7, "c", 60_000, 0)
            .await
            .expect("take")
            .expect("expired");
        assert!(
            !renew(&db, 7, "b", b, 60_000).await.expect("renew"),
            "taken over"
        );
        revoke(&db, 7).await.expect("revoke");
        assert!(
            !renew(&db, 7, "c", c, 60_000).await.expect("renew"),
            "revoked"
        );
    }
}
