//! Desired device configuration (the desired side of the device twin): a report
//! interval and custom key/values, versioned, pushed to the device when it is
//! connected and on its next login otherwise. The version the device reports it
//! runs is the reported side.

use fleet_node::Error;
use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use fleet_store::desired_configs;
use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseTransaction, QuerySelect};
use serde::{Deserialize, Serialize};
use shared_proto::device::check_text;
use shared_proto::id::parse_id;
use utoipa::ToSchema;

use crate::{input, reply, ApiError, Caller, Node};
use fleet_node::devices::visible;

const MAX_SETTINGS: usize = 64;

#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfigRequest {
    /// Seconds between status reports, 1..=86400.
    pub report_interval_s: u32,
    /// Custom settings, at most 64, keys up to 64 and values up to 1024 characters.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DesiredConfig {
    pub device_id: String,
    /// Increases by one with every change.
    pub version: i64,
    pub report_interval_s: i32,
    pub settings: BTreeMap<String, String>,
    pub updated_at: i64,
}

impl From<desired_configs::Model> for DesiredConfig {
    fn from(m: desired_configs::Model) -> Self {
        Self {
            device_id: m.device_id.to_string(),
            version: m.version,
            report_interval_s: m.report_interval_s,
            settings: serde_json::from_str(&m.settings).unwrap_or_default(),
            updated_at: m.updated_at,
        }
    }
}

fn check(req: &ConfigRequest) -> Result<(), ApiError> {
    if !(1..=86_400).contains(&req.report_interval_s) {
        return Err(ApiError::invalid("report_interval_s", "must be 1 to 86400"));
    }
    if req.settings.len() > MAX_SETTINGS {
        return Err(ApiError::invalid(
            "settings",
            format!("at most {MAX_SETTINGS} entries"),
        ));
    }
    for (k, v) in &req.settings {
        check_text("settings", k, 64, true)?;
        check_text(&format!("settings.{k}"), v, 1024, false)?;
    }
    Ok(())
}

async fn current<C: ConnectionTrait>(
    db: &C,
    device: i64,
    for_update: bool,
) -> Result<Option<desired_configs::Model>, ApiError> {
    let mut q =
        desired_configs::Entity::find().filter(desired_configs::Column::DeviceId.eq(device));
    if for_update {
        // Locked (MySQL), so two writers setting a first configuration at once do
        // not both insert it: the database makes one wait or run again.
        q = q.lock_exclusive();
    }
    Ok(q.one(db).await?)
}

/// Set a device's desired configuration; it reaches the device now or at its next login.
#[utoipa::path(put, path = "/api/v1/devices/{id}/config", tag = "devices", request_body = ConfigRequest,
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "The new desired configuration", body = DesiredConfig)))]
pub async fn put(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let device = parse_id("id", &path)?;
    let req: ConfigRequest = input::json(&body)?;
    check(&req)?;
    let settings = serde_json::to_string(&req.settings).unwrap_or_else(|_| "{}".into());
    let (core, who, req) = (&**node, &caller, &req);
    let saved = node
        .transact(|txn| {
            let settings = settings.clone();
            async move { save(core, &txn, who, device, req, settings).await }
        })
        .await?;
    if let Some(dispatch) = &node.dispatch {
        dispatch.configure(&saved);
    }
    Ok(reply::ok(DesiredConfig::from(saved)))
}

/// Saves a device's desired configuration, the next version of the one it has.
async fn save(
    node: &Node,
    txn: &DatabaseTransaction,
    caller: &Caller,
    device: i64,
    req: &ConfigRequest,
    settings: String,
) -> Result<desired_configs::Model, ApiError> {
    visible(txn, caller, device).await?;
    let now = fleet_store::now_ms();
    Ok(match current(txn, device, true).await? {
        Some(old) => {
            let mut new = old.clone();
            // A stored version is bounded where it comes in from a peer; checked all
            // the same, so no stored value can make this write panic or wrap.
            new.version = old.version.checked_add(1).ok_or_else(|| {
                Error::FailedPrecondition("the configuration version is exhausted".into())
            })?;
            new.report_interval_s = i32::try_from(req.report_interval_s).unwrap_or(i32::MAX);
            new.settings = settings;
            new.deleted = false;
            new.updated_at = now;
            node.replica.update(txn, &old, new).await?
        }
        None => {
            let row = desired_configs::Model {
                // One configuration per device: set first on two nodes while they were
                // apart, it is still one row when they meet.
                id: device,
                device_id: device,
                version: 1,
                report_interval_s: i32::try_from(req.report_interval_s).unwrap_or(i32::MAX),
                settings,
                created_at: now,
                updated_at: now,
                hlc: 0,
                origin: 0,
                deleted: false,
                field_stamps: String::new(),
            };
            node.replica.insert(txn, row).await?
        }
    })
}

/// A device's desired configuration.
#[utoipa::path(get, path = "/api/v1/devices/{id}/config", tag = "devices",
    params(("id" = String, Path, description = "Device id")), security(("bearer" = [])),
    responses((status = 200, description = "The desired configuration", body = DesiredConfig),
              (status = 404, description = "None set")))]
pub async fn get(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let device = parse_id("id", &path)?;
    visible(&node.db, &caller, device).await?;
    let config = current(&node.db, device, false).await?.ok_or_else(|| {
        ApiError::not_found(format!("device {device} has no desired configuration"))
    })?;
    Ok(reply::ok(DesiredConfig::from(config)))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/devices/{id}/config")
            .route(web::get().to(get))
            .route(web::put().to(put)),
    );
}
