//! Receiving an artifact: the request body is read as it arrives, hashed, and stored
//! a batch of chunks per transaction, so a gigabyte never sits in memory and a
//! transaction never holds the write path for long.

use actix_web::web;
use fleet_node::{Error, Node};
use fleet_store::artifacts::{self, chunks::CHUNK_BYTES};
use futures_util::StreamExt;
use operator_api::ApiError;
use ring::digest::{Context, SHA256};

/// Chunks stored per transaction (about a megabyte).
const CHUNKS_PER_WRITE: usize = 16;

/// What a stored file turned out to be.
pub struct Received {
    pub size: u64,
    pub sha256: String,
}

/// Stores `body` as the chunks of artifact `id` (whose row exists), refusing more than
/// `max` bytes. On failure the caller removes what was stored.
pub async fn receive(
    node: &Node,
    id: i64,
    mut body: web::Payload,
    max: u64,
) -> Result<Received, ApiError> {
    let mut digest = Context::new(&SHA256);
    let mut size: u64 = 0;
    let mut current: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    let mut full: Vec<Vec<u8>> = Vec::new();
    let mut next_seq: i32 = 0;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| ApiError::invalid("body", format!("was cut short: {e}")))?;
        size = size
            .checked_add(piece.len() as u64)
            .filter(|s| *s <= max)
            .ok_or_else(|| too_large(max))?;
        digest.update(&piece);
        let mut rest: &[u8] = &piece;
        while !rest.is_empty() {
            let take = rest.len().min(CHUNK_BYTES - current.len());
            current.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if current.len() == CHUNK_BYTES {
                full.push(std::mem::replace(
                    &mut current,
                    Vec::with_capacity(CHUNK_BYTES),
                ));
            }
        }
        if full.len() >= CHUNKS_PER_WRITE {
            next_seq = store(node, id, next_seq, std::mem::take(&mut full), size).await?;
        }
    }
    if !current.is_empty() {
        full.push(current);
    }
    store(node, id, next_seq, full, size).await?;
    if size == 0 {
        return Err(ApiError::invalid(
            "body",
            "is empty; an artifact has content",
        ));
    }
    Ok(Received {
        size,
        sha256: shared_proto::manifest::hex(digest.finish().as_ref()),
    })
}

/// The refusal of a body over the cap of `max` bytes.
pub(super) fn too_large(max: u64) -> ApiError {
    ApiError(Error::TooLarge {
        field: "body".into(),
        message: format!("is larger than the artifact limit of {max} bytes"),
    })
}

/// Stores `chunks` from `first` on and records the size so far; the next free seq.
async fn store(
    node: &Node,
    id: i64,
    first: i32,
    chunks: Vec<Vec<u8>>,
    size: u64,
) -> Result<i32, ApiError> {
    let beyond = || {
        ApiError(Error::TooLarge {
            field: "body".into(),
            message: "is larger than an artifact can be stored".into(),
        })
    };
    let count = i32::try_from(chunks.len()).map_err(|_| beyond())?;
    let next = first.checked_add(count).ok_or_else(beyond)?;
    let size = i64::try_from(size).map_err(|_| beyond())?;
    let chunks = &chunks;
    node.transact(|txn| async move {
        artifacts::chunks::store(&*txn, id, first, chunks.clone()).await?;
        artifacts::touch(&*txn, id, size, fleet_store::now_ms()).await?;
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(next)
}
