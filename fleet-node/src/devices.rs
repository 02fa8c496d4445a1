//! The device registry's rules: who sees which device (operators and viewers only
//! those in the groups mapped to them), and creating, changing and deleting devices
//! with their credentials, home edge and first groups.

use fleet_store::credentials::{generate_secret, hash_secret};
use fleet_store::replica::Replicated;
use fleet_store::{devices, groups, memberships};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Expr, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, QuerySelect, SqlErr};
use shared_proto::id::{ids_from_json, parse_id};
use shared_proto::{DeviceDraft, DevicePatch, Nic};

use crate::{Actor, Error, Node};

/// Live connection state of devices, kept by whatever holds their connections.
pub trait Presence: Send + Sync {
    fn is_online(&self, device: i64) -> bool;
}

/// The condition limiting a non-admin to devices in their groups.
pub fn scope(caller: &Actor) -> Option<SimpleExpr> {
    if caller.is_admin() {
        return None;
    }
    Some(Expr::col((devices::Entity, devices::Column::Id)).in_subquery(in_groups(&caller.groups)))
}

pub fn in_groups(groups: &[i64]) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(memberships::Column::DeviceId)
        .from(memberships::Entity)
        .and_where(Expr::col(memberships::Column::GroupId).is_in(groups.to_vec()))
        .and_where(Expr::col(memberships::Column::Deleted).eq(false))
        .to_owned()
}

/// Live devices the caller may see.
pub fn visible_query(caller: &Actor) -> Select<devices::Entity> {
    let q = devices::Entity::find().filter(devices::Column::Deleted.eq(false));
    match scope(caller) {
        Some(cond) => q.filter(cond),
        None => q,
    }
}

/// The ids of the devices `caller` may see, as a query to run or to nest.
pub fn visible_ids(caller: &Actor) -> Select<devices::Entity> {
    visible_query(caller)
        .select_only()
        .column(devices::Column::Id)
}

/// A live device the caller may see, or 404.
pub async fn visible<C: ConnectionTrait>(
    db: &C,
    caller: &Actor,
    id: i64,
) -> Result<devices::Model, Error> {
    visible_query(caller)
        .filter(devices::Column::Id.eq(id))
        .one(db)
        .await?
        .ok_or_else(|| Error::not_found(format!("no device with id {id}")))
}

fn nics_json(nics: &[Nic]) -> String {
    serde_json::to_string(nics).unwrap_or_else(|_| "[]".into())
}

/// Maps a write that lost a race on the live (model, sn) key to 409.
fn unique_conflict(e: DbErr, model: &str, sn: &str) -> Error {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => duplicate(model, sn),
        _ => e.into(),
    }
}

fn duplicate(model: &str, sn: &str) -> Error {
    Error::exists(
        "hardware.sn",
        format!("a device with model {model:?} and sn {sn:?} already exists"),
    )
}

/// Which edge a node homes devices at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeEdges {
    /// The center: any registered edge, or none.
    Registry,
    /// An edge: every device registered here is homed here (`None` while the edge runs
    /// standalone and does not know its id yet).
    Fixed(Option<i64>),
}

async fn check_edge<C: ConnectionTrait>(
    db: &C,
    homes: HomeEdges,
    raw: Option<&str>,
) -> Result<Option<i64>, Error> {
    match homes {
        HomeEdges::Registry => {
            let Some(raw) = raw else { return Ok(None) };
            let id = parse_id("edge_id", raw)?;
            fleet_store::edges::Entity::find_by_id(id)
                .one(db)
                .await?
                .ok_or_else(|| Error::missing_ref("edge_id", format!("no edge with id {id}")))?;
            Ok(Some(id))
        }
        HomeEdges::Fixed(own) => match raw {
            Some(raw) if Some(parse_id("edge_id", raw)?) != own => Err(Error::invalid(
                "edge_id",
                "devices registered at an edge are homed at that edge",
            )),
            _ => Ok(own),
        },
    }
}

async fn live_key_taken<C: ConnectionTrait>(
    db: &C,
    key: &str,
    except: Option<i64>,
) -> Result<bool, Error> {
    let mut q = devices::Entity::find().filter(devices::Column::LiveKey.eq(key));
    if let Some(id) = except {
        q = q.filter(devices::Column::Id.ne(id));
    }
    Ok(q.one(db).await?.is_some())
}

/// Groups named in a request that the caller may change, all existing; the first
/// bad one is named by `field[i]`.
pub async fn writable_groups<C: ConnectionTrait>(
    db: &C,
    caller: &Actor,
    field: &str,
    raw: &[serde_json::Value],
) -> Result<Vec<i64>, Error> {
    let ids = ids_from_json(field, raw)?;
    if ids.is_empty() {
        return Ok(ids);
    }
    let live: Vec<i64> = groups::Entity::find()
        .filter(groups::Column::Id.is_in(ids.clone()))
        .filter(groups::Column::Deleted.eq(false))
        .select_only()
        .column(groups::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    for (i, id) in ids.iter().enumerate() {
        if !live.contains(id) || !caller.in_group(*id) {
            return Err(Error::missing_ref(
                format!("{field}[{i}]"),
                format!("no group with id {id}"),
            ));
        }
    }
    Ok(ids)
}

/// Creates a device (and its memberships) in the caller's transaction. `id` is used
/// when given (CSV import of existing ids), otherwise a new snowflake.
pub async fn create_device<C: ConnectionTrait>(
    conn: &C,
    node: &Node,
    caller: &Actor,
    draft: DeviceDraft,
    id: Option<i64>,
) -> Result<(devices::Model, String), Error> {
    caller.require_writer()?;
    draft.validate()?;
    let group_values: Vec<serde_json::Value> = draft
        .groups
        .iter()
        .cloned()
        .map(serde_json::Value::String)
        .collect();
    let group_ids = writable_groups(conn, caller, "groups", &group_values).await?;
    if !caller.is_admin() && group_ids.is_empty() {
        return Err(Error::invalid(
            "groups",
            "must name at least one of your groups, or you could not see the new device",
        ));
    }
    let edge_id = check_edge(conn, node.home_edges, draft.edge_id.as_deref()).await?;
    // A live device with this (model, sn) fails the insert on the unique live key,
    // answered 409 below: asking first would cost a round trip on every create. An
    // import naming an id asks first all the same, so that a line clashing on both
    // is refused for its serial number, the one a person fixes.
    let key = devices::live_key(&draft.hardware.model, &draft.hardware.sn);
    let id = match id {
        Some(id) => {
            if live_key_taken(conn, &key, None).await? {
                return Err(duplicate(&draft.hardware.model, &draft.hardware.sn));
            }
            if devices::Entity::find_by_id(id).one(conn).await?.is_some() {
                return Err(Error::exists("id", format!("device id {id} is taken")));
            }
            id
        }
        None => node.replica.new_id(),
    };
    let secret = generate_secret();
    let now = fleet_store::now_ms();
    let row = devices::Model {
        id,
        name: draft.name,
        device_type: draft.kind,
        hw_model: draft.hardware.model.clone(),
        hw_sn: draft.hardware.sn.clone(),
        sw_version: draft.software.version,
        sw_last_update: draft.software.last_update,
        nics: nics_json(&draft.nic),
        status: draft.status,
        description: draft.description,
        edge_id,
        secret_hash: hash_secret(&secret),
        live_key: Some(key),
        created_at: now,
        updated_at: now,
        hlc: 0,
        origin: 0,
        deleted: false,
        field_stamps: String::new(),
    };
    let saved = node
        .replica
        .insert(conn, row)
        .await
        .map_err(|e| unique_conflict(e, &draft.hardware.model, &draft.hardware.sn))?;
    for g in group_ids {
        memberships::add(conn, &node.replica, g, &[saved.id]).await?;
    }
    Ok((saved, secret))
}

/// Applies a partial update in the caller's transaction.
pub async fn patch_device<C: ConnectionTrait>(
    conn: &C,
    node: &Node,
    old: &devices::Model,
    patch: DevicePatch,
) -> Result<devices::Model, Error> {
    patch.validate()?;
    let mut new = old.clone();
    if let Some(v) = patch.name {
        new.name = v;
    }
    if let Some(v) = patch.kind {
        new.device_type = v;
    }
    if let Some(hw) = patch.hardware {
        if let Some(v) = hw.model {
            new.hw_model = v;
        }
        if let Some(v) = hw.sn {
            new.hw_sn = v;
        }
    }
    if let Some(sw) = patch.software {
        if let Some(v) = sw.version {
            new.sw_version = v;
        }
        if let Some(v) = sw.last_update {
            new.sw_last_update = v;
        }
    }
    if let Some(nics) = patch.nic {
        new.nics = nics_json(&nics);
    }
    if let Some(v) = patch.status {
        new.status = v;
    }
    if let Some(v) = patch.description {
        new.description = v;
    }
    if let Some(edge) = patch.edge_id {
        new.edge_id = check_edge(conn, node.home_edges, edge.as_deref()).await?;
    }
    let key = devices::live_key(&new.hw_model, &new.hw_sn);
    if Some(&key) != old.live_key.as_ref() && live_key_taken(conn, &key, Some(old.id)).await? {
        return Err(duplicate(&new.hw_model, &new.hw_sn));
    }
    new.live_key = Some(key);
    if new == *old {
        return Ok(new);
    }
    new.updated_at = fleet_store::now_ms();
    node.replica
        .update(conn, old, new.clone())
        .await
        .map_err(|e| unique_conflict(e, &new.hw_model, &new.hw_sn))
}

/// Tombstones a device and its memberships in the caller's transaction.
pub async fn delete_device<C: ConnectionTrait>(
    conn: &C,
    node: &Node,
    old: &devices::Model,
) -> Result<(), Error> {
    memberships::remove_where(
        conn,
        &node.replica,
        memberships::Column::DeviceId.eq(old.id),
    )
    .await?;
    let mut gone = old.clone();
    gone.updated_at = fleet_store::now_ms();
    gone.tombstone();
    node.replica.update(conn, old, gone).await?;
    Ok(())
}
