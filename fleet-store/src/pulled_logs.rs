//! Log files that devices uploaded for a `pull_logs` command (one per command; a
//! repeated upload replaces the first). They flow edge -> center like events.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::IntoActiveModel;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "pulled_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub command_id: i64,
    #[sea_orm(indexed)]
    pub device_id: i64,
    pub bytes: i64,
    /// MEDIUMBLOB: a plain BLOB holds only 64 KiB on MySQL.
    #[sea_orm(column_type = r#"custom("MEDIUMBLOB")"#)]
    pub content: Vec<u8>,
    pub uploaded_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Stores an upload, replacing an earlier one of the same command, and queues it for
/// the center. The change log holds only a reference: the content, up to 16 MiB, is
/// read when the link sends it ([`attach`]).
pub async fn save<C: ConnectionTrait>(
    db: &C,
    replica: &crate::Replica,
    row: Model,
) -> Result<(), DbErr> {
    let id = row.command_id;
    store(db, row).await?;
    crate::replica::append_log(
        db,
        crate::Table::PulledLogs,
        id,
        replica.tick(),
        false,
        serde_json::Map::new(),
    )
    .await
}

async fn store<C: ConnectionTrait>(db: &C, row: Model) -> Result<(), DbErr> {
    Entity::insert(row.into_active_model())
        .on_conflict(
            OnConflict::column(Column::CommandId)
                .update_columns([
                    Column::DeviceId,
                    Column::Bytes,
                    Column::Content,
                    Column::UploadedAt,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// Fills a pulled-log change with the upload itself, just before it is sent; the
/// bytes it added to the frame.
pub async fn attach<C: ConnectionTrait>(
    db: &C,
    change: &mut crate::sync::Change,
) -> Result<usize, DbErr> {
    if change.table != crate::Table::PulledLogs.name() {
        return Ok(0);
    }
    let Some(row) = Entity::find_by_id(change.id).one(db).await? else {
        return Ok(0);
    };
    let content = STANDARD.encode(&row.content);
    let size = content.len();
    change.fields = serde_json::Map::from_iter([
        ("device_id".to_string(), row.device_id.into()),
        ("bytes".to_string(), row.bytes.into()),
        ("uploaded_at".to_string(), row.uploaded_at.into()),
        ("content".to_string(), content.into()),
    ]);
    Ok(size)
}

/// The content of an upload as it travels (base64).
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(text)
}

/// Takes in an upload another node sent.
pub(crate) async fn take<C: ConnectionTrait>(
    conn: &C,
    id: i64,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), DbErr> {
    let number = |name: &str| fields.get(name).and_then(serde_json::Value::as_i64);
    let (Some(device_id), Some(bytes), Some(uploaded_at), Some(content)) = (
        number("device_id"),
        number("bytes"),
        number("uploaded_at"),
        fields.get("content").and_then(serde_json::Value::as_str),
    ) else {
        return Err(DbErr::Custom(format!("pulled log {id}: fields missing")));
    };
    let content = decode(content).map_err(|e| DbErr::Custom(format!("pulled log {id}: {e}")))?;
    store(
        conn,
        Model {
            command_id: id,
            device_id,
            bytes,
            content,
            uploaded_at,
        },
    )
    .await
}
