//! CSV export and import of devices in the seed's column order:
//! `id,name,type,hardware_model,hardware_sn,software_version,software_last_update,nic_type,nic_mac,nic_ipv4,status`.
//! A device with several NICs has their values joined with `;` in each NIC column.

use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::Error;
use fleet_node::Node;
use operator_api::{input, reply, ApiError, Caller};
use sea_orm::TransactionTrait;
use serde::{Deserialize, Serialize};
use shared_proto::id::parse_id;
use shared_proto::{DeviceDraft, Hardware, Nic, Software};
use utoipa::{IntoParams, ToSchema};

use fleet_node::devices::create_device;
use operator_api::devices::{query, DeviceFilter};

pub const COLUMNS: [&str; 11] = [
    "id",
    "name",
    "type",
    "hardware_model",
    "hardware_sn",
    "software_version",
    "software_last_update",
    "nic_type",
    "nic_mac",
    "nic_ipv4",
    "status",
];

const PROGRESS_EVERY: usize = 10_000;

fn join(nics: &[Nic], pick: fn(&Nic) -> &str) -> String {
    nics.iter().map(pick).collect::<Vec<_>>().join(";")
}

/// Export the visible devices (the list filters apply) as CSV.
#[utoipa::path(get, path = "/api/v1/devices/export", tag = "devices", params(DeviceFilter),
    security(("bearer" = [])),
    responses((status = 200, description = "CSV in the seed's column order", content_type = "text/csv", body = String)))]
pub async fn export(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let filter: DeviceFilter = input::query(&req)?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::Internal(format!("writing CSV: {e}"));
    out.write_record(COLUMNS).map_err(csv_err)?;
    let mut after = None;
    loop {
        let f = DeviceFilter {
            after: after.take(),
            page: None,
            per_page: Some(operator_api::reply::MAX_PER_PAGE),
            ..filter.clone()
        };
        let batch = query(&node.db, &caller, f).await?;
        for d in &batch.items {
            out.write_record([
                d.id.as_str(),
                &d.name,
                &d.kind,
                &d.hardware.model,
                &d.hardware.sn,
                &d.software.version,
                &d.software.last_update,
                &join(&d.nic, |n| &n.kind),
                &join(&d.nic, |n| &n.mac),
                &join(&d.nic, |n| &n.ipv4),
                &d.status,
            ])
            .map_err(csv_err)?;
        }
        if batch.items.len() < operator_api::reply::MAX_PER_PAGE as usize {
            break;
        }
        after = batch.items.last().map(|d| d.id.clone());
    }
    let body = out
        .into_inner()
        .map_err(|e| Error::Internal(format!("writing CSV: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "content-disposition",
            "attachment; filename=\"devices.csv\"",
        ))
        .body(body))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ImportOptions {
    /// Put every imported device in this group (operators must name one of theirs).
    pub group: Option<String>,
    /// Home every imported device at this edge.
    pub edge: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LineResult {
    /// 1-based line number in the file.
    pub line: u64,
    /// `created` or `rejected`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    pub created: usize,
    pub rejected: usize,
    pub lines: Vec<LineResult>,
}

fn split(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(';').collect()
    }
}

/// One CSV record as a draft, or the field that makes it unusable.
fn draft_of(
    record: &csv::StringRecord,
    opts: &ImportOptions,
) -> Result<(Option<i64>, DeviceDraft), ApiError> {
    if record.len() != COLUMNS.len() {
        return Err(ApiError::invalid(
            "line",
            format!("has {} columns; expected {}", record.len(), COLUMNS.len()),
        ));
    }
    let col = |i: usize| record.get(i).unwrap_or_default().trim().to_string();
    let id = match col(0) {
        s if s.is_empty() => None,
        s => Some(parse_id("id", &s)?),
    };
    let (kinds, macs, ips) = (col(7), col(8), col(9));
    let (kinds, macs, ips) = (split(&kinds), split(&macs), split(&ips));
    let n = kinds.len().max(macs.len()).max(ips.len());
    let nic = (0..n)
        .map(|i| Nic {
            kind: kinds.get(i).copied().unwrap_or_default().to_string(),
            mac: macs.get(i).copied().unwrap_or_default().to_string(),
            ipv4: ips.get(i).copied().unwrap_or_default().to_string(),
        })
        .collect();
    let draft = DeviceDraft {
        name: col(1),
        kind: col(2),
        hardware: Hardware {
            model: col(3),
            sn: col(4),
        },
        software: Software {
            version: col(5),
            last_update: col(6),
        },
        nic,
        status: col(10),
        description: String::new(),
        edge_id: opts.edge.clone(),
        groups: opts.group.iter().cloned().collect(),
    };
    Ok((id, draft))
}

fn rejected(line: u64, e: ApiError) -> LineResult {
    let (field, error) = match &e.0 {
        Error::InvalidArgument { field, message } => (Some(field.clone()), message.clone()),
        Error::AlreadyExists { field, message } => (Some(field.clone()), message.clone()),
        Error::NotFound { field, message } => (field.clone(), message.clone()),
        other => (None, other.to_string()),
    };
    LineResult {
        line,
        outcome: "rejected",
        id: None,
        field,
        error: Some(error),
    }
}

/// Create devices from CSV (header line optional). Each line is created or rejected
/// on its own; the report says which and why.
#[utoipa::path(post, path = "/api/v1/devices/import", tag = "devices", params(ImportOptions),
    request_body(content = String, content_type = "text/csv"),
    security(("bearer" = [])),
    responses((status = 200, description = "What happened to each line", body = ImportReport)))]
pub async fn import(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    let opts: ImportOptions = input::query(&req)?;
    let (core, who, opts, body) = (&**node, &caller, &opts, &body);
    let report = node
        .transact(|txn| async move {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(body.as_ref());
            let mut report = ImportReport {
                created: 0,
                rejected: 0,
                lines: Vec::new(),
            };
            for (index, record) in reader.records().enumerate() {
                let (line, result) = match record {
                    Err(e) => (
                        e.position().map_or(index as u64 + 1, |p| p.line()),
                        Err(ApiError::invalid("line", format!("is not valid CSV: {e}"))),
                    ),
                    Ok(record) => {
                        let line = record.position().map_or(index as u64 + 1, |p| p.line());
                        if index == 0 && record.get(0).map(str::trim) == Some("id") {
                            continue;
                        }
                        let attempt = async {
                            let (id, draft) = draft_of(&record, opts)?;
                            // A savepoint per line: a rejected line leaves nothing behind.
                            let line_txn = txn.begin().await?;
                            let (m, _secret) =
                                create_device(&line_txn, core, who, draft, id).await?;
                            line_txn.commit().await?;
                            Ok::<i64, ApiError>(m.id)
                        };
                        (line, attempt.await)
                    }
                };
                match result {
                    Ok(id) => {
                        report.created += 1;
                        report.lines.push(LineResult {
                            line,
                            outcome: "created",
                            id: Some(id.to_string()),
                            field: None,
                            error: None,
                        });
                    }
                    // Not the line's fault: the whole import fails, or runs again.
                    Err(e @ ApiError(Error::Internal(_) | Error::Contended(_))) => return Err(e),
                    Err(e) => {
                        report.rejected += 1;
                        report.lines.push(rejected(line, e));
                    }
                }
                let done = report.created + report.rejected;
                if done % PROGRESS_EVERY == 0 {
                    tracing::info!(
                        rows = done,
                        created = report.created,
                        rejected = report.rejected,
                        "import progress"
                    );
                }
            }
            Ok(report)
        })
        .await?;
    tracing::info!(
        created = report.created,
        rejected = report.rejected,
        "import finished"
    );
    Ok(reply::ok(report))
}

pub fn configure(cfg: &mut web::ServiceConfig, import_limit: usize) {
    cfg.service(web::resource("/api/v1/devices/export").route(web::get().to(export)))
        .service(
            web::resource("/api/v1/devices/import")
                .app_data(web::PayloadConfig::new(import_limit))
                .route(web::post().to(import)),
        );
}
