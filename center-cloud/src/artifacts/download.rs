//! Downloading an artifact, whole or one byte range, streamed from its chunks a batch
//! at a time so a large file never sits in memory.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::Node;
use fleet_store::artifacts::{chunks, chunks::CHUNK_BYTES};
use operator_api::{ranges, ApiError};
use shared_proto::id::parse_id;

use super::{find_ready, Reader};

/// Download an artifact's file, whole or one byte range (`Range: bytes=…`), so an
/// interrupted transfer resumes where it stopped (operators, or an edge with HTTP
/// Basic `edge_id:secret`).
#[utoipa::path(get, path = "/api/v1/artifacts/{id}/content", tag = "artifacts",
    params(("id" = String, Path, description = "Artifact id"),
           ("Range" = Option<String>, Header, description = "One range, e.g. `bytes=1000-`")),
    security(("bearer" = []), ("edge" = [])),
    responses((status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 206, description = "The range asked for", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 404, description = "No such artifact"),
              (status = 416, description = "The range starts past the end")))]
pub async fn content(
    req: HttpRequest,
    node: web::Data<Node>,
    _reader: Reader,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    let m = find_ready(&node.db, id).await?;
    let size = u64::try_from(m.size).unwrap_or(0);
    let filename = format!("{}-{}", m.name, m.version);
    let (mut head, span) = match ranges::answer(&req, size, &m.sha256, &filename) {
        ranges::Answer::Send(head, span) => (head, span),
        ranges::Answer::Unsatisfiable(answer) => return Ok(answer),
    };
    if span.length == 0 {
        return Ok(head.finish());
    }
    let last = span.first + span.length - 1;
    Ok(head.streaming(bytes_of(node.into_inner(), id, span.first, last)))
}

/// Chunk rows one read fetches while streaming a download (about a megabyte).
const CHUNKS_PER_READ: i32 = 16;

/// Bytes `first..=last` of artifact `id`, read a batch of chunks at a time.
fn bytes_of(
    node: Arc<Node>,
    id: i64,
    first: u64,
    last: u64,
) -> impl futures_util::Stream<Item = Result<web::Bytes, ApiError>> {
    let chunk = CHUNK_BYTES as u64;
    let end_seq = i32::try_from(last / chunk).unwrap_or(i32::MAX);
    let start_seq = i32::try_from(first / chunk).unwrap_or(i32::MAX);
    futures_util::stream::unfold(Some(start_seq), move |next| {
        let node = node.clone();
        async move {
            let from = next?;
            let to = from.saturating_add(CHUNKS_PER_READ - 1).min(end_seq);
            let rows = match chunks::read(&node.db, id, from, to).await {
                Ok(rows) => rows,
                Err(e) => return Some((Err(ApiError::from(e)), None)),
            };
            let mut out = Vec::with_capacity(rows.len() * CHUNK_BYTES);
            for row in rows {
                let at = u64::try_from(row.seq).unwrap_or(0) * chunk;
                let skip = usize::try_from(first.saturating_sub(at)).unwrap_or(0);
                let keep = usize::try_from((last + 1).saturating_sub(at)).unwrap_or(usize::MAX);
                let data = &row.data;
                out.extend_from_slice(&data[skip.min(data.len())..keep.min(data.len())]);
            }
            let more = (to < end_seq).then_some(to + 1);
            Some((Ok(web::Bytes::from(out)), more))
        }
    })
}
