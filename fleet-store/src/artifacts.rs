//! Software artifacts at the center: each file is kept in the database in chunks, so
//! every center replica serves any artifact and a backup of the database holds them.
//! Not replicated: edges fetch a file over HTTPS when they need it. A row becomes
//! `ready` once its last chunk is stored and its manifest signed; until then nobody
//! sees it, and an upload abandoned for [`STALE_UPLOAD_MS`] is removed.

pub mod chunks;

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::Expr;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "artifacts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[sea_orm(column_type = "String(StringLen::N(128))")]
    pub name: String,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub version: String,
    /// Bytes of the file (so far, while uploading).
    pub size: i64,
    /// Lowercase hex SHA-256 of the file; empty while uploading.
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub sha256: String,
    /// JSON array of the device types it is meant for (empty: any).
    #[sea_orm(column_type = "Text")]
    pub device_types: String,
    /// JSON array of the models it is meant for (empty: any).
    #[sea_orm(column_type = "Text")]
    pub models: String,
    /// The signed manifest's exact text; empty while uploading.
    #[sea_orm(column_type = "Text")]
    pub manifest: String,
    /// Base64 Ed25519 signature of `manifest`.
    #[sea_orm(column_type = "String(StringLen::N(128))")]
    pub signature: String,
    pub ready: bool,
    pub created_at: i64,
    /// Touched by every stored chunk while uploading.
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// An upload that stored nothing for this long is taken as abandoned (its uploader
/// died or hung up without the request ending).
pub const STALE_UPLOAD_MS: i64 = 10 * 60 * 1000;

/// Removes an artifact and its chunks.
pub async fn remove<C: ConnectionTrait>(db: &C, id: i64) -> Result<(), DbErr> {
    chunks::Entity::delete_many()
        .filter(chunks::Column::ArtifactId.eq(id))
        .exec(db)
        .await?;
    Entity::delete_by_id(id).exec(db).await?;
    Ok(())
}

/// Removes uploads not ready and untouched since `before_ms` (their uploader died
/// mid-file); answers their ids.
pub async fn sweep<C: ConnectionTrait>(db: &C, before_ms: i64) -> Result<Vec<i64>, DbErr> {
    let stale: Vec<i64> = Entity::find()
        .filter(Column::Ready.eq(false))
        .filter(Column::UpdatedAt.lt(before_ms))
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    for id in &stale {
        remove(db, *id).await?;
    }
    Ok(stale)
}

/// Records that an upload stored `size` bytes so far.
pub async fn touch<C: ConnectionTrait>(db: &C, id: i64, size: i64, now: i64) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::Size, Expr::value(size))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}
