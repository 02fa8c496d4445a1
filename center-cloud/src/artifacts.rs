//! Software artifacts: files a rollout installs on devices, with a manifest the
//! center signs. Writers (admins and operators) upload; admins delete (not while a
//! rollout that is not finished installs it); every
//! signed-in caller lists, reads and downloads them and reads the public key that
//! devices verify manifests with; an edge reads and downloads them with its own
//! credentials ([`Reader`]). Artifacts belong to no group: scoping applies to what
//! is rolled out where, not to the files.

mod download;
mod reader;
mod signing;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use fleet_node::{Error, Node};
use fleet_store::artifacts as table;
use operator_api::reply::{PageRequest, Paged};
use operator_api::{input, reply, ApiError, Caller};
use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect, Set};
use serde::{Deserialize, Serialize};
use shared_proto::device::{check_text, check_version};
use shared_proto::id::parse_id;
use shared_proto::manifest::Manifest;
use utoipa::{IntoParams, ToSchema};

pub use download::{__path_content, content};
pub use reader::Reader;
pub use signing::Signer;

/// What the artifact routes need beside the node. The signer comes from the node's
/// database, so it is set once the node is built ([`Artifacts::attach`]).
#[derive(Debug)]
pub struct Artifacts {
    signer: std::sync::OnceLock<Signer>,
    max_bytes: u64,
}

impl Artifacts {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            signer: std::sync::OnceLock::new(),
            max_bytes,
        }
    }

    /// Loads the signing key (from `file`, or the database) and starts signing.
    pub async fn attach(
        &self,
        node: &Node,
        file: Option<&std::path::Path>,
    ) -> Result<(), operator_api::server::StartupError> {
        let signer = Signer::load(node, file).await?;
        tracing::info!(public_key = %signer.public_key(), "artifact manifests are signed");
        let _ = self.signer.set(signer);
        Ok(())
    }

    fn signer(&self) -> Result<&Signer, ApiError> {
        self.signer
            .get()
            .ok_or_else(|| ApiError(Error::Unavailable("the center is starting".into())))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Artifact {
    pub id: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// Device types it is meant for (empty: any).
    pub device_types: Vec<String>,
    /// Models it is meant for (empty: any).
    pub models: Vec<String>,
    /// The signed manifest, as the exact text the signature covers.
    pub manifest: String,
    /// Base64 Ed25519 signature of `manifest`, by the key at
    /// `GET /api/v1/artifacts/signing-key`.
    pub signature: String,
    pub created_at: i64,
}

impl From<table::Model> for Artifact {
    fn from(m: table::Model) -> Self {
        Self {
            id: m.id.to_string(),
            name: m.name,
            version: m.version,
            size: u64::try_from(m.size).unwrap_or(0),
            sha256: m.sha256,
            device_types: serde_json::from_str(&m.device_types).unwrap_or_default(),
            models: serde_json::from_str(&m.models).unwrap_or_default(),
            manifest: m.manifest,
            signature: m.signature,
            created_at: m.created_at,
        }
    }
}

/// The query of an upload.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NewArtifact {
    /// The software's name, e.g. `gateway-firmware`.
    pub name: Option<String>,
    /// Its version (letters, digits and `. - + _`); a name has each version once.
    pub version: Option<String>,
    /// Comma-separated device types it is meant for.
    pub device_types: Option<String>,
    /// Comma-separated models it is meant for.
    pub models: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ArtifactFilter {
    /// Only artifacts of this name.
    pub name: Option<String>,
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKey {
    /// Always `ed25519`.
    pub algorithm: String,
    /// Base64 of the raw 32-byte public key: the agent's `update_public_key`.
    pub public_key: String,
}

/// Entries of a compatibility list, at most.
const MAX_LIST: usize = 100;

/// A comma-separated list of names, each checked like a device's type or model.
fn names(field: &str, value: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let items: Vec<String> = value.split(',').map(|s| s.trim().to_string()).collect();
    if items.len() > MAX_LIST {
        return Err(ApiError::invalid(
            field,
            format!("lists at most {MAX_LIST} entries"),
        ));
    }
    for item in &items {
        check_text(field, item, 64, true)?;
    }
    Ok(items)
}

fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

/// Upload an artifact: the raw file is the body (`application/octet-stream`), streamed
/// into the database; the answer carries its digest and signed manifest.
#[utoipa::path(post, path = "/api/v1/artifacts", tag = "artifacts", params(NewArtifact),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("bearer" = [])),
    responses((status = 201, description = "Stored and signed", body = Artifact),
              (status = 400, description = "A bad field, a body cut short or empty"),
              (status = 409, description = "The name has this version already"),
              (status = 413, description = "Larger than --artifact-max-bytes")))]
pub async fn upload(
    req: HttpRequest,
    node: web::Data<Node>,
    artifacts: web::Data<Artifacts>,
    caller: Caller,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require_writer()?;
    artifacts.signer()?;
    let Checked {
        name,
        version,
        device_types,
        models,
    } = Checked::from_request(&req, artifacts.max_bytes)?;
    let id = begin(&node, &name, &version, &device_types, &models).await?;
    let received = match upload::receive(&node, id, body, artifacts.max_bytes).await {
        Ok(r) => r,
        Err(e) => {
            remove(&node, id).await;
            return Err(e);
        }
    };
    let manifest = Manifest {
        id: id.to_string(),
        name,
        version,
        size: received.size,
        sha256: received.sha256,
    };
    let text = manifest.to_text();
    let signature = artifacts.signer()?.sign(&text);
    let done = node
        .transact(|txn| {
            let (manifest, text, signature) = (&manifest, text.clone(), signature.clone());
            async move {
                let row = table::ActiveModel {
                    id: Set(id),
                    size: Set(i64::try_from(manifest.size).unwrap_or(i64::MAX)),
                    sha256: Set(manifest.sha256.clone()),
                    manifest: Set(text),
                    signature: Set(signature),
                    ready: Set(true),
                    updated_at: Set(fleet_store::now_ms()),
                    ..Default::default()
                };
                Ok::<_, ApiError>(row.update(&*txn).await?)
            }
        })
        .await;
    match done {
        Ok(m) => {
            tracing::info!(artifact = id, size = m.size, "artifact stored");
            Ok(reply::created(id, Artifact::from(m)))
        }
        Err(e) => {
            remove(&node, id).await;
            Err(e)
        }
    }
}

/// An upload's checked query and headers.
struct Checked {
    name: String,
    version: String,
    device_types: Vec<String>,
    models: Vec<String>,
}

impl Checked {
    fn from_request(req: &HttpRequest, max_bytes: u64) -> Result<Self, ApiError> {
        let q: NewArtifact = input::query(req)?;
        let name = q.name.unwrap_or_default();
        check_text("name", &name, 128, true)?;
        let version = q.version.unwrap_or_default();
        check_text("version", &version, 64, true)?;
        check_version("version", &version)?;
        let device_types = names("device_types", q.device_types.as_deref())?;
        let models = names("models", q.models.as_deref())?;
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        if !header(header::CONTENT_TYPE).is_some_and(|t| t.starts_with("application/octet-stream"))
        {
            return Err(ApiError::invalid(
                "content-type",
                "must be application/octet-stream, with the raw file as the body",
            ));
        }
        let declared = header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes) {
            return Err(upload::too_large(max_bytes));
        }
        Ok(Self {
            name,
            version,
            device_types,
            models,
        })
    }
}

/// Claims `name` + `version` with a row not ready yet; answers its id.
async fn begin(
    node: &Node,
    name: &str,
    version: &str,
    device_types: &[String],
    models: &[String],
) -> Result<i64, ApiError> {
    let taken = || {
        ApiError::exists(
            "version",
            format!("{name} has an artifact of version {version} already"),
        )
    };
    let id = node.replica.new_id();
    let now = fleet_store::now_ms();
    // Two uploads of one version at once on MySQL: the unique index refuses the
    // second as a duplicate, which runs it again, and the check then finds the first.
    node.transact(|txn| async move {
        let exists = table::Entity::find()
            .filter(table::Column::Name.eq(name))
            .filter(table::Column::Version.eq(version))
            .count(&*txn)
            .await?;
        if exists > 0 {
            return Err(taken());
        }
        table::ActiveModel {
            id: Set(id),
            name: Set(name.to_string()),
            version: Set(version.to_string()),
            size: Set(0),
            sha256: Set(String::new()),
            device_types: Set(to_json(device_types)),
            models: Set(to_json(models)),
            manifest: Set(String::new()),
            signature: Set(String::new()),
            ready: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&*txn)
        .await?;
        Ok(())
    })
    .await?;
    Ok(id)
}

/// Removes an artifact, logging rather than failing: the caller is already answering
/// an error, and an upload left behind is swept later ([`sweep_forever`]).
async fn remove(node: &Node, id: i64) {
    let removed = node
        .transact(|txn| async move { table::remove(&*txn, id).await })
        .await;
    if let Err(e) = removed {
        tracing::warn!(artifact = id, error = %e, "removing a failed upload failed");
    }
}

async fn find_ready<C: ConnectionTrait>(db: &C, id: i64) -> Result<table::Model, ApiError> {
    table::Entity::find_by_id(id)
        .filter(table::Column::Ready.eq(true))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found("no such artifact"))
}

/// List artifacts, newest first.
#[utoipa::path(get, path = "/api/v1/artifacts", tag = "artifacts", params(ArtifactFilter),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of artifacts", body = inline(Paged<Artifact>))))]
pub async fn list(
    req: HttpRequest,
    node: web::Data<Node>,
    _caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let f: ArtifactFilter = input::query(&req)?;
    let page = PageRequest::new(f.page, f.per_page)?;
    let mut q = table::Entity::find().filter(table::Column::Ready.eq(true));
    if let Some(name) = f.name {
        q = q.filter(table::Column::Name.eq(name));
    }
    let total = operator_api::reply::count(&node.db, q.clone()).await?;
    let rows = q
        .order_by_desc(table::Column::Id)
        .offset(page.offset())
        .limit(page.per_page)
        .all(&node.db)
        .await?;
    let items: Vec<Artifact> = rows.into_iter().map(Artifact::from).collect();
    Ok(reply::ok(page.wrap(items, total)))
}

/// Read one artifact's description and signed manifest (operators, or an edge with
/// HTTP Basic `edge_id:secret`).
#[utoipa::path(get, path = "/api/v1/artifacts/{id}", tag = "artifacts",
    params(("id" = String, Path, description = "Artifact id")), security(("bearer" = []), ("edge" = [])),
    responses((status = 200, description = "The artifact", body = Artifact),
              (status = 404, description = "No such artifact")))]
pub async fn get(
    node: web::Data<Node>,
    _reader: Reader,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    Ok(reply::ok(Artifact::from(find_ready(&node.db, id).await?)))
}

/// Delete an artifact (admins).
#[utoipa::path(delete, path = "/api/v1/artifacts/{id}", tag = "artifacts",
    params(("id" = String, Path, description = "Artifact id")), security(("bearer" = [])),
    responses((status = 200, description = "Deleted"), (status = 404, description = "No such artifact"),
              (status = 409, description = "A rollout that is not finished installs it")))]
pub async fn delete(
    node: web::Data<Node>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = parse_id("id", &path)?;
    node.transact(|txn| async move {
        find_ready(&*txn, id).await?;
        if let Some(rollout) = fleet_node::rollouts::artifact_in_use(&*txn, id).await? {
            return Err(ApiError(Error::FailedPrecondition(format!(
                "rollout {rollout} installs this artifact; let it finish or abort it first"
            ))));
        }
        table::remove(&*txn, id).await?;
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(reply::ok(serde_json::json!({"id": id.to_string()})))
}

/// The public key devices verify artifact manifests with.
#[utoipa::path(get, path = "/api/v1/artifacts/signing-key", tag = "artifacts",
    security(("bearer" = []), ("edge" = [])),
    responses((status = 200, description = "The key", body = SigningKey)))]
pub async fn signing_key(
    artifacts: web::Data<Artifacts>,
    _reader: Reader,
) -> Result<HttpResponse, ApiError> {
    Ok(reply::ok(SigningKey {
        algorithm: "ed25519".into(),
        public_key: artifacts.signer()?.public_key(),
    }))
}

/// How often abandoned uploads are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Removes uploads nobody finished: an uploader that died mid-file leaves a row that
/// is not ready, and its name and version taken.
pub async fn sweep_forever(node: Arc<Node>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let before = fleet_store::now_ms() - table::STALE_UPLOAD_MS;
        let swept = node
            .transact(|txn| async move { table::sweep(&*txn, before).await })
            .await;
        match swept {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => tracing::info!(artifacts = ?ids, "removed abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "removing abandoned uploads failed"),
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/artifacts")
            .route(web::get().to(list))
            .route(web::post().to(upload)),
    )
    .route("/api/v1/artifacts/signing-key", web::get().to(signing_key))
    .service(
        web::resource("/api/v1/artifacts/{id}")
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    )
    .route("/api/v1/artifacts/{id}/content", web::get().to(content));
}
