//! Node-wide key/values kept in the database (e.g. the token signing key), so that
//! stateless replicas over one database agree on them.

use sea_orm::entity::prelude::*;
use sea_orm::QuerySelect;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "settings")]
pub struct Model {
    #[sea_orm(
        primary_key,
        auto_increment = false,
        column_type = "String(StringLen::N(64))"
    )]
    pub name: String,
    #[sea_orm(column_type = "Text")]
    pub value: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Reads a setting, or stores `make()` under `name` if there is none yet. Concurrent
/// first starts race on the primary key; the loser reads the winner's value.
pub async fn get_or_init<C: ConnectionTrait>(
    db: &C,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<String, DbErr> {
    if let Some(row) = Entity::find_by_id(name.to_string()).one(db).await? {
        return Ok(row.value);
    }
    let row = ActiveModel {
        name: sea_orm::Set(name.to_string()),
        value: sea_orm::Set(make()),
    };
    if Entity::insert(row).exec(db).await.is_err() {
        tracing::debug!(setting = name, "setting was created concurrently");
    }
    Entity::find_by_id(name.to_string())
        .one(db)
        .await?
        .map(|r| r.value)
        .ok_or_else(|| DbErr::RecordNotFound(format!("setting {name}")))
}

/// A setting's value, if it has one.
pub async fn get<C: ConnectionTrait>(db: &C, name: &str) -> Result<Option<String>, DbErr> {
    Ok(Entity::find_by_id(name.to_string())
        .one(db)
        .await?
        .map(|r| r.value))
}

/// A setting, locked until the transaction ends (MySQL), for a read-modify-write
/// that two writers must not both base on the same value.
pub async fn get_for_update<C: ConnectionTrait>(
    db: &C,
    name: &str,
) -> Result<Option<String>, DbErr> {
    Ok(Entity::find_by_id(name.to_string())
        .lock_exclusive()
        .one(db)
        .await?
        .map(|r| r.value))
}

/// Stores a setting, replacing any value it had.
pub async fn put<C: ConnectionTrait>(db: &C, name: &str, value: &str) -> Result<(), DbErr> {
    let row = ActiveModel {
        name: sea_orm::Set(name.to_string()),
        value: sea_orm::Set(value.to_string()),
    };
    Entity::insert(row)
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(Column::Name)
                .update_column(Column::Value)
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}
