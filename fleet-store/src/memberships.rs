//! Device <-> group memberships (replicated both ways). A removed membership is a
//! tombstone; adding it again revives the same row, so (group, device) stays unique.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "memberships")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    pub group_id: i64,
    #[sea_orm(indexed)]
    pub device_id: i64,
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

use sea_orm::sea_query::IntoCondition;
use sea_orm::{ColumnTrait, ConnectionTrait, QueryFilter, QuerySelect};

use crate::Replica;

/// Live memberships matching `filter`.
async fn live<C: ConnectionTrait>(
    conn: &C,
    filter: impl IntoCondition,
) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .filter(filter)
        .filter(Column::Deleted.eq(false))
        .all(conn)
        .await
}

/// Puts `devices` in `group`, reviving tombstoned memberships rather than adding
/// duplicates. Returns how many memberships were added.
pub async fn add<C: ConnectionTrait>(
    conn: &C,
    replica: &Replica,
    group: i64,
    devices: &[i64],
) -> Result<usize, DbErr> {
    // Locked (MySQL), so two writers adding the same membership at once do not both
    // insert it: the database makes one of them wait or run again.
    let existing = Entity::find()
        .filter(Column::GroupId.eq(group))
        .filter(Column::DeviceId.is_in(devices.to_vec()))
        .lock_exclusive()
        .all(conn)
        .await?;
    let mut added = 0;
    let now = crate::now_ms();
    for device in dedup(devices) {
        match existing.iter().find(|m| m.device_id == device) {
            Some(m) if !m.deleted => {}
            Some(m) => {
                let mut revived = m.clone();
                revived.deleted = false;
                revived.updated_at = now;
                replica.update(conn, m, revived).await?;
                added += 1;
            }
            None => {
                let row = Model {
                    id: id_for(group, device),
                    group_id: group,
                    device_id: device,
                    created_at: now,
                    updated_at: now,
                    hlc: 0,
                    origin: 0,
                    deleted: false,
                    field_stamps: String::new(),
                };
                replica.insert(conn, row).await?;
                added += 1;
            }
        }
    }
    Ok(added)
}

/// A membership's id follows from its group and device, so the same membership added
/// on two nodes while they were apart is one row when they meet, not two rows that
/// clash on the (group, device) index.
pub fn id_for(group: i64, device: i64) -> i64 {
    // splitmix64: a fixed, well-mixed function, the same on every build and node.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let bits = mix(mix(group as u64) ^ device as u64);
    // Positive, and never 0.
    i64::try_from(bits >> 1).unwrap_or(i64::MAX).max(1)
}

fn dedup(ids: &[i64]) -> Vec<i64> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// Tombstones the live memberships matching `filter`; returns how many.
pub async fn remove_where<C: ConnectionTrait>(
    conn: &C,
    replica: &Replica,
    filter: impl IntoCondition,
) -> Result<usize, DbErr> {
    let rows = live(conn, filter).await?;
    for m in &rows {
        let mut gone = m.clone();
        gone.updated_at = crate::now_ms();
        gone.deleted = true;
        replica.update(conn, m, gone).await?;
    }
    Ok(rows.len())
}

/// Group ids `device` is in.
pub async fn groups_of<C: ConnectionTrait>(conn: &C, device: i64) -> Result<Vec<i64>, DbErr> {
    Ok(live(conn, Column::DeviceId.eq(device))
        .await?
        .into_iter()
        .map(|m| m.group_id)
        .collect())
}
