//! `GET /api/v1/artifacts/{id}/content` on the site API: a device downloads an
//! artifact it has been told to install, whole or from a byte range, from the
//! edge's cache.

use std::io::SeekFrom;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::{Error, Node};
use fleet_store::commands::{self, State};
use operator_api::{ranges, ApiError};
use sea_orm::entity::prelude::*;
use shared_proto::id::parse_id;
use shared_proto::southbound::{CommandName, Install};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Artifacts, Lookup};
use crate::device_auth::DeviceAuth;

/// Bytes read from the file per piece of the answer.
const PIECE: usize = 64 * 1024;

/// Download an artifact (a device, with HTTP Basic `device_id:secret`, for one of
/// its `install` commands not yet finished), whole or one byte range
/// (`Range: bytes=…`) to resume. While the edge fetches the file from the center
/// the answer is 503 with `Retry-After`.
#[utoipa::path(get, path = "/api/v1/artifacts/{id}/content", tag = "artifacts",
    params(("id" = String, Path, description = "Artifact id"),
           ("Range" = Option<String>, Header, description = "One range, e.g. `bytes=1000-`")),
    security(("device_basic" = [])),
    responses((status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 206, description = "The range asked for", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 401, description = "Not a device's credentials"),
              (status = 404, description = "No install of this artifact for this device"),
              (status = 416, description = "The range starts past the end"),
              (status = 503, description = "Being fetched from the center; retry after `Retry-After`")))]
pub async fn content(
    req: HttpRequest,
    node: web::Data<Node>,
    auth: web::Data<DeviceAuth>,
    artifacts: web::Data<Artifacts>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let device = auth.device(&node, &req).await?;
    let id = parse_id("id", &path)?;
    if !installs(&node, device, id).await? {
        return Err(ApiError::not_found(format!(
            "no install of artifact {id} for this device"
        )));
    }
    let artifacts = artifacts.into_inner();
    let (path, size) = match artifacts.lookup(id) {
        Lookup::Ready(path, size) => (path, size),
        Lookup::Fetching => {
            return Err(Error::Unavailable(format!(
                "this edge is fetching artifact {id} from the center; retry shortly"
            ))
            .into())
        }
        Lookup::Failed(why) => {
            return Err(Error::Unavailable(format!(
                "this edge could not fetch artifact {id} from the center: {why}"
            ))
            .into())
        }
        Lookup::Missing => {
            return Err(ApiError::not_found(format!(
                "the center has no artifact {id}"
            )))
        }
    };
    let file = std::fs::File::open(&path).map_err(disk)?;
    // The modification time orders the cache after a restart: serving is a use.
    let _ = file.set_modified(std::time::SystemTime::now());
    let mut file = tokio::fs::File::from_std(file);
    let (mut head, span) = match ranges::answer(&req, size, &id.to_string(), &id.to_string()) {
        ranges::Answer::Send(head, span) => (head, span),
        ranges::Answer::Unsatisfiable(answer) => return Ok(answer),
    };
    head.insert_header((header::CACHE_CONTROL, "private, no-store"));
    if span.length == 0 {
        return Ok(head.finish());
    }
    file.seek(SeekFrom::Start(span.first)).await.map_err(disk)?;
    Ok(head.streaming(pieces(file, span.length, artifacts)))
}

fn disk(e: std::io::Error) -> ApiError {
    ApiError(Error::Unavailable(format!(
        "reading the cached artifact: {e}"
    )))
}

/// `length` bytes of `file` from where it stands, a piece at a time, counted as
/// served as they go.
fn pieces(
    file: tokio::fs::File,
    length: u64,
    artifacts: Arc<Artifacts>,
) -> impl futures_util::Stream<Item = Result<web::Bytes, std::io::Error>> {
    futures_util::stream::unfold((file, length), move |(mut file, left)| {
        let artifacts = artifacts.clone();
        async move {
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left).unwrap_or(PIECE).min(PIECE);
            let mut buf = vec![0u8; want];
            match file.read(&mut buf).await {
                Ok(0) => Some((
                    Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                    (file, 0),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    artifacts.served(n as u64);
                    Some((Ok(web::Bytes::from(buf)), (file, left - n as u64)))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        }
    })
}

/// Whether `device` has an `install` command of artifact `artifact` not yet
/// finished.
async fn installs(node: &Node, device: i64, artifact: i64) -> Result<bool, ApiError> {
    let open = commands::Entity::find()
        .filter(commands::Column::DeviceId.eq(device))
        .filter(commands::Column::Name.eq(CommandName::Install.as_str()))
        .filter(commands::Column::Deleted.eq(false))
        .all(&node.db)
        .await?;
    let wanted = artifact.to_string();
    Ok(open.iter().any(|c| {
        !State::parse(&c.state).is_some_and(State::is_final)
            && serde_json::from_str::<Install>(&c.args).is_ok_and(|a| a.artifact_id == wanted)
    }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/artifacts/{id}/content", web::get().to(content));
}
