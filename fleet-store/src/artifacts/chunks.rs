//! The bytes of an artifact, [`CHUNK_BYTES`] to a row (the last one shorter), so a
//! read of any range touches only the rows it needs and every row fits a MySQL BLOB.

use sea_orm::entity::prelude::*;
use sea_orm::QueryOrder;
use serde::{Deserialize, Serialize};

/// Bytes of one chunk row.
pub const CHUNK_BYTES: usize = 64_000;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "artifact_chunks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub artifact_id: i64,
    /// The chunk's place in the file, from 0.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i32,
    #[sea_orm(column_type = "Blob")]
    pub data: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Stores chunks `first..` of `artifact`, one row each.
pub async fn store<C: ConnectionTrait>(
    db: &C,
    artifact: i64,
    first: i32,
    chunks: Vec<Vec<u8>>,
) -> Result<(), DbErr> {
    let mut rows = Vec::with_capacity(chunks.len());
    for (seq, data) in (first..).zip(chunks) {
        rows.push(ActiveModel {
            artifact_id: sea_orm::Set(artifact),
            seq: sea_orm::Set(seq),
            data: sea_orm::Set(data),
        });
    }
    if rows.is_empty() {
        return Ok(());
    }
    Entity::insert_many(rows).exec_without_returning(db).await?;
    Ok(())
}

/// Chunks `from..=to` of `artifact`, in order.
pub async fn read<C: ConnectionTrait>(
    db: &C,
    artifact: i64,
    from: i32,
    to: i32,
) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .filter(Column::ArtifactId.eq(artifact))
        .filter(Column::Seq.between(from, to))
        .order_by_asc(Column::Seq)
        .all(db)
        .await
}
