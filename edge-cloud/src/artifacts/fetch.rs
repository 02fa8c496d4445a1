//! Fetching an artifact from the center: its description (size, digest), then its
//! content into `<id>.part`, resumed with a `Range` request from what an earlier
//! attempt left, hashed as it arrives (the part already on disk first), and renamed
//! into the cache only when the size and SHA-256 match. The edge authenticates with
//! its own id and secret (HTTP Basic), over the center's TLS, checked against the
//! center CA it links with.

use std::io::{self, SeekFrom};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use reqwest::{header, StatusCode, Url};
use ring::digest::{Context, SHA256};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::cache::Cache;
use crate::uplink::CenterLink;

/// Why a fetch did not end with the file in the cache.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the center has no artifact {0}")]
    NotFound(i64),
    #[error(
        "the artifact is {size} bytes, more than the cache holds (artifact_cache_bytes = {cap})"
    )]
    TooLarge { size: u64, cap: u64 },
    #[error("the center refused this edge's credentials ({0})")]
    Refused(StatusCode),
    #[error("the file fetched does not match its digest; it was discarded")]
    Corrupt,
    #[error("this edge has no center_api_url to fetch artifacts from")]
    NoCenter,
    #[error("the center answered {0}")]
    Status(StatusCode),
    #[error("reaching the center: {0}")]
    Http(#[source] reqwest::Error),
    #[error("the cache directory: {0}")]
    Disk(#[source] io::Error),
}

impl FetchError {
    /// Worth trying again soon (another replica, or the same one a little later).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FetchError::Status(_) | FetchError::Http(_) | FetchError::Corrupt
        )
    }
}

impl From<io::Error> for FetchError {
    fn from(e: io::Error) -> Self {
        FetchError::Disk(e)
    }
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        FetchError::Http(e)
    }
}

/// An artifact as the center describes it (the part of `data` a fetch needs).
#[derive(Debug, Deserialize)]
struct Described {
    size: u64,
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    data: Described,
}

/// What fetches from the center with the edge's credentials.
pub struct Fetcher {
    client: reqwest::Client,
    urls: Vec<Url>,
    edge_id: String,
    secret: String,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("urls", &self.urls)
            .field("edge_id", &self.edge_id)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher for the center `link` names; `None` when it names no API URL.
    pub fn new(link: &CenterLink) -> Result<Option<Self>, FetchError> {
        if link.api_urls.is_empty() {
            return Ok(None);
        }
        // No overall timeout: a large artifact takes as long as it takes. A stalled
        // transfer is caught by the read timeout and resumed.
        let mut client = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30));
        if let Some(ca) = &link.ca_file {
            let pem = std::fs::read(ca)?;
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Some(Self {
            client: client.build()?,
            urls: link.api_urls.clone(),
            edge_id: link.edge_id.to_string(),
            secret: link.secret.clone(),
        }))
    }

    /// Fetches artifact `id` into `cache` from the first center replica that
    /// answers; counts every byte written to the part file in `fetched`.
    pub async fn fetch(
        &self,
        cache: &Cache,
        id: i64,
        fetched: &Counter,
    ) -> Result<u64, FetchError> {
        let mut last = FetchError::NoCenter;
        for base in &self.urls {
            match self.fetch_from(base, cache, id, fetched).await {
                Ok(size) => return Ok(size),
                Err(e) if e.is_transient() => {
                    tracing::warn!(artifact = id, center = %base, error = %e, "fetching an artifact failed");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn url(base: &Url, path: &str) -> Url {
        let mut url = base.clone();
        let joined = format!("{}{path}", base.path().trim_end_matches('/'));
        url.set_path(&joined);
        url
    }

    async fn fetch_from(
        &self,
        base: &Url,
        cache: &Cache,
        id: i64,
        fetched: &Counter,
    ) -> Result<u64, FetchError> {
        let described = self.describe(base, id).await?;
        if described.size > cache.cap() {
            return Err(FetchError::TooLarge {
                size: described.size,
                cap: cache.cap(),
            });
        }
        let part = cache.part_path(id);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&part)
            .await?;
        let mut have = file.metadata().await?.len();
        if have > described.size {
            file.set_len(0).await?;
            have = 0;
        }
        let mut digest = hash_prefix(&mut file, have).await?;
        if have < described.size {
            have = self
                .download(base, id, &mut file, have, &mut digest, fetched)
                .await?;
        }
        file.sync_all().await?;
        drop(file);
        let sha256 = shared_proto::manifest::hex(digest.finish().as_ref());
        if have != described.size || sha256 != described.sha256 {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(FetchError::Corrupt);
        }
        tokio::fs::rename(&part, cache.path(id)).await?;
        cache.admit(id, have);
        tracing::info!(artifact = id, size = have, center = %base, "artifact fetched and verified");
        Ok(have)
    }

    async fn describe(&self, base: &Url, id: i64) -> Result<Described, FetchError> {
        let response = self
            .client
            .get(Self::url(base, &format!("/api/v1/artifacts/{id}")))
            .basic_auth(&self.edge_id, Some(&self.secret))
            .send()
            .await?;
        check(response.status(), id)?;
        Ok(response.json::<Envelope>().await?.data)
    }

    /// Appends the rest of the file from byte `have`; answers how many bytes the
    /// part file then holds. A server that ignores the range sends it all: the part
    /// then starts over.
    async fn download(
        &self,
        base: &Url,
        id: i64,
        file: &mut tokio::fs::File,
        mut have: u64,
        digest: &mut Context,
        fetched: &Counter,
    ) -> Result<u64, FetchError> {
        let mut request = self
            .client
            .get(Self::url(base, &format!("/api/v1/artifacts/{id}/content")))
            .basic_auth(&self.edge_id, Some(&self.secret));
        if have > 0 {
            request = request.header(header::RANGE, format!("bytes={have}-"));
        }
        let response = request.send().await?;
        check(response.status(), id)?;
        if response.status() != StatusCode::PARTIAL_CONTENT && have > 0 {
            file.set_len(0).await?;
            file.seek(SeekFrom::Start(0)).await?;
            *digest = Context::new(&SHA256);
            have = 0;
        } else {
            file.seek(SeekFrom::Start(have)).await?;
        }
        let mut body = response.bytes_stream();
        while let Some(piece) = body.next().await {
            let piece = piece?;
            file.write_all(&piece).await?;
            digest.update(&piece);
            have += piece.len() as u64;
            fetched.inc_by(piece.len() as u64);
        }
        file.flush().await?;
        Ok(have)
    }
}

/// The answer's status, as a fetch error when it is not a success.
fn check(status: StatusCode, id: i64) -> Result<(), FetchError> {
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::NOT_FOUND => Err(FetchError::NotFound(id)),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(FetchError::Refused(status)),
        s => Err(FetchError::Status(s)),
    }
}

/// The digest of the first `len` bytes of `file`: what an earlier attempt wrote.
async fn hash_prefix(file: &mut tokio::fs::File, len: u64) -> io::Result<Context> {
    let mut digest = Context::new(&SHA256);
    file.seek(SeekFrom::Start(0)).await?;
    let mut left = len;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(digest)
}

/// Removes what a fetch left, when it cannot be resumed.
pub async fn discard(part: &Path) {
    let _ = tokio::fs::remove_file(part).await;
}
