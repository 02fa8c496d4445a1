//! The device registry (replicated both ways).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "devices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[sea_orm(column_type = "String(StringLen::N(128))", indexed)]
    pub name: String,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub device_type: String,
    #[sea_orm(column_type = "String(StringLen::N(128))")]
    pub hw_model: String,
    #[sea_orm(column_type = "String(StringLen::N(128))", indexed)]
    pub hw_sn: String,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub sw_version: String,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub sw_last_update: String,
    /// JSON array of `{type, mac, ipv4}`.
    #[sea_orm(column_type = "Text")]
    pub nics: String,
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub status: String,
    #[sea_orm(column_type = "String(StringLen::N(1024))")]
    pub description: String,
    #[sea_orm(indexed)]
    pub edge_id: Option<i64>,
    #[sea_orm(column_type = "String(StringLen::N(128))")]
    pub secret_hash: String,
    /// `model NUL sn` while the device is live, NULL once deleted: a unique index on
    /// it makes (sn, model) unique among live devices without blocking re-creation.
    #[sea_orm(column_type = "String(StringLen::N(260))", nullable, unique)]
    pub live_key: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub hlc: i64,
    pub origin: i64,
    pub deleted: bool,
    #[sea_orm(column_type = "Text")]
    pub field_stamps: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub fn live_key(model: &str, sn: &str) -> String {
    format!("{model}\u{0}{sn}")
}

/// How a device names itself when it logs in.
#[derive(Debug, Clone, Copy)]
pub enum LoginName<'a> {
    Id(i64),
    Serial { model: &'a str, sn: &'a str },
}

impl<'a> LoginName<'a> {
    /// The device's id if it gave one, else its (model, serial number) if it gave
    /// both; `None` when it names no device.
    pub fn from_parts(
        id: Option<i64>,
        model: Option<&'a str>,
        sn: Option<&'a str>,
    ) -> Option<Self> {
        match (id, model, sn) {
            (Some(id), _, _) => Some(Self::Id(id)),
            (None, Some(model), Some(sn)) => Some(Self::Serial { model, sn }),
            _ => None,
        }
    }
}

/// The live device `name` designates, found whether or not the secret is right.
pub async fn named<C: ConnectionTrait>(
    db: &C,
    name: LoginName<'_>,
) -> Result<Option<Model>, DbErr> {
    let query = match name {
        LoginName::Id(id) => Entity::find_by_id(id),
        LoginName::Serial { model, sn } => {
            Entity::find().filter(Column::LiveKey.eq(live_key(model, sn)))
        }
    };
    query.filter(Column::Deleted.eq(false)).one(db).await
}

/// The live device `name` designates, if `secret` is its own.
pub async fn authenticate<C: ConnectionTrait>(
    db: &C,
    name: LoginName<'_>,
    secret: &str,
) -> Result<Option<Model>, DbErr> {
    Ok(named(db, name)
        .await?
        .filter(|d| crate::credentials::verify_secret(secret, &d.secret_hash)))
}
