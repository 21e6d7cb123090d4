//! GCS: the HTTP client under the GCS client (timeouts, request counting), the relay's
//! object metadata (provenance), and [`Gcs`], the calls the relay makes (reads,
//! listings, resumable and small uploads, metadata patches, the create-only write used
//! for `_SUCCESS`), against GCS or, in tests, buckets in memory.

#[cfg(any(test, feature = "testing"))]
pub mod memory;

use crate::error::{gcs_status, RelayError};
use crate::stall::Progress;
use bytes::Bytes;
use crossdock_core::marker::Crc32c;
use futures::StreamExt;
use gcloud_storage::client::Client;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::patch::PatchObjectRequest;
use gcloud_storage::http::objects::upload::{UploadObjectRequest, UploadType};
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::resumable_upload_client::{ChunkSize, ResumableUploadClient, UploadStatus};
use std::collections::HashMap;
use std::future::Future;

/// Metadata keys written on every relayed object.
pub mod keys {
    pub const SOURCE_BUCKET: &str = "crossdock-source-bucket";
    pub const SOURCE_KEY: &str = "crossdock-source-key";
    pub const SOURCE_ETAG: &str = "crossdock-source-etag";
    pub const RAW_BYTES: &str = "crossdock-raw-bytes";
    pub const STORED_BYTES: &str = "crossdock-stored-bytes";
    pub const ITEMS: &str = "crossdock-items";
    pub const RAW_SHA256: &str = "crossdock-raw-sha256";
    pub const CODEC: &str = "crossdock-codec";
    pub const STORED_CRC32C: &str = "crossdock-stored-crc32c";
}

/// Where a relayed object came from and what it holds (its GCS metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub source_bucket: String,
    pub source_key: String,
    pub source_etag: String,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Lines (items) in the raw bytes.
    pub items: u64,
    pub raw_sha256: String,
    pub codec: String,
    /// CRC32C of the bytes stored, as uploaded (GCS's form); absent on objects relayed
    /// before it was recorded.
    pub stored_crc32c: Option<Crc32c>,
}

impl Provenance {
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            (keys::SOURCE_BUCKET.into(), self.source_bucket.clone()),
            (keys::SOURCE_KEY.into(), self.source_key.clone()),
            (keys::SOURCE_ETAG.into(), self.source_etag.clone()),
            (keys::RAW_BYTES.into(), self.raw_bytes.to_string()),
            (keys::STORED_BYTES.into(), self.stored_bytes.to_string()),
            (keys::ITEMS.into(), self.items.to_string()),
            (keys::RAW_SHA256.into(), self.raw_sha256.clone()),
            (keys::CODEC.into(), self.codec.clone()),
        ]);
        if let Some(c) = self.stored_crc32c {
            m.insert(keys::STORED_CRC32C.into(), c.to_gcs());
        }
        m
    }

    /// Reads the provenance of an object; `None` unless the relay finished it (a copy
    /// interrupted before its metadata was written does not count).
    pub fn from_object(o: &Object) -> Option<Provenance> {
        let m = o.metadata.as_ref()?;
        let get = |k: &str| m.get(k).cloned();
        Some(Provenance {
            source_bucket: get(keys::SOURCE_BUCKET)?,
            source_key: get(keys::SOURCE_KEY)?,
            source_etag: get(keys::SOURCE_ETAG)?,
            raw_bytes: get(keys::RAW_BYTES)?.parse().ok()?,
            stored_bytes: get(keys::STORED_BYTES).and_then(|s| s.parse().ok()).unwrap_or(o.size.max(0) as u64),
            items: get(keys::ITEMS).and_then(|s| s.parse().ok()).unwrap_or(0),
            raw_sha256: get(keys::RAW_SHA256).unwrap_or_default(),
            codec: get(keys::CODEC).unwrap_or_default(),
            stored_crc32c: get(keys::STORED_CRC32C).and_then(|s| Crc32c::from_gcs(&s)),
        })
    }
}

/// The CRC32C GCS reports for the object's bytes, if it reports one.
pub fn gcs_crc32c(o: &Object) -> Option<Crc32c> {
    o.crc32c.as_deref().and_then(Crc32c::from_gcs)
}

/// Whether the object's bytes are still those its provenance says the relay stored
/// (see [`crossdock_core::marker::StoredObject::intact`]).
pub fn intact(o: &Object, p: &Provenance) -> bool {
    p.stored_crc32c.is_none_or(|recorded| gcs_crc32c(o) == Some(recorded))
}

/// The GCS side of the relay: the signed-in client, or (tests) buckets in memory
/// ([`Gcs::memory`]), so the copy, completion and consumer decisions run in `cargo test`
/// without a server.
#[derive(Clone)]
pub struct Gcs {
    backend: Backend,
}

#[derive(Clone)]
// One per relay: the size of the client is no cost worth a box.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Remote(Client),
    #[cfg(any(test, feature = "testing"))]
    Memory(memory::MemoryGcs),
}

impl std::fmt::Debug for Gcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gcs")
    }
}

/// Whether a create-only write found the object already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    AlreadyExists,
}

/// How a metadata patch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patched {
    Applied,
    /// The server answered with a resource the client cannot decode (fake-gcs-server
    /// does this for PATCH; the patch itself applied): confirm by reading it back.
    Unconfirmed(String),
}

impl Gcs {
    /// The remote client (the memory backend answers before any client call).
    fn client(&self) -> &Client {
        match &self.backend {
            Backend::Remote(c) => c,
            #[cfg(any(test, feature = "testing"))]
            Backend::Memory(_) => unreachable!("the memory backend answers before any client call"),
        }
    }

    pub fn new(client: Client) -> Gcs {
        Gcs { backend: Backend::Remote(client) }
    }

    /// Empty buckets in memory (every bucket exists).
    #[cfg(any(test, feature = "testing"))]
    pub fn memory() -> (Gcs, memory::MemoryGcs) {
        let m = memory::MemoryGcs::default();
        (Gcs { backend: Backend::Memory(m.clone()) }, m)
    }

    /// The object's resource, or `None` if it does not exist.
    pub async fn get(&self, bucket: &str, name: &str) -> Result<Option<Object>, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return m.get(bucket, name);
        }
        let client = self.client();
        let req = GetObjectRequest { bucket: bucket.into(), object: name.into(), ..Default::default() };
        match client.get_object(&req).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if gcs_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(RelayError::gcs(bucket, name, &e)),
        }
    }

    /// The object's bytes, or `None` if it does not exist.
    pub async fn download(&self, bucket: &str, name: &str) -> Result<Option<Vec<u8>>, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return m.download(bucket, name);
        }
        let client = self.client();
        let req = GetObjectRequest { bucket: bucket.into(), object: name.into(), ..Default::default() };
        match client.download_object(&req, &Range::default()).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if gcs_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(RelayError::gcs(bucket, name, &e)),
        }
    }

    /// Every object under `prefix` (all pages).
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Object>, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return m.list(bucket, prefix);
        }
        let client = self.client();
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let req = ListObjectsRequest { bucket: bucket.into(), prefix: Some(prefix.into()), page_token: token, ..Default::default() };
            let page = client.list_objects(&req).await.map_err(|e| RelayError::gcs(bucket, prefix, &e))?;
            out.extend(page.items.unwrap_or_default());
            token = page.next_page_token;
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Deletes the object (with `generation`, only while that generation is the live
    /// one); one already gone is not an error.
    pub async fn delete(&self, bucket: &str, name: &str, generation: Option<i64>) -> Result<(), RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return m.delete(bucket, name, generation);
        }
        let client = self.client();
        let req = DeleteObjectRequest { bucket: bucket.into(), object: name.into(), if_generation_match: generation, ..Default::default() };
        match client.delete_object(&req).await {
            Ok(()) => Ok(()),
            Err(e) if gcs_status(&e) == Some(404) => Ok(()),
            Err(e) => Err(RelayError::gcs(bucket, name, &e)),
        }
    }

    /// Creates a small JSON object (the `_SUCCESS` marker) in one multipart request
    /// carrying `ifGenerationMatch=0`, so it fails (→ [`Created::AlreadyExists`]) if the
    /// object exists; fake-gcs-server enforces this for multipart uploads only, which is
    /// why markers are written this way.
    pub async fn create_json(&self, bucket: &str, name: &str, body: Vec<u8>) -> Result<Created, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return m.create(bucket, name, body);
        }
        let client = self.client();
        match upload_small(client, bucket, name, body.clone(), "application/json", None, true).await {
            Ok(_) => Ok(Created::Created),
            // A retried request whose first try landed also answers 412: the object then
            // holds exactly these bytes (they name this relay and the time it wrote).
            Err(e) if gcs_status(&e) == Some(412) => match self.download(bucket, name).await? {
                Some(found) if found == body => Ok(Created::Created),
                _ => Ok(Created::AlreadyExists),
            },
            Err(e) => Err(RelayError::gcs(bucket, name, &e)),
        }
    }

    /// Writes a small object with its metadata in one multipart request, returning the
    /// stored object's resource (with the CRC32C GCS computed of what it received).
    pub async fn upload_small(
        &self,
        bucket: &str,
        name: &str,
        body: Vec<u8>,
        content_type: &str,
        metadata: HashMap<String, String>,
    ) -> Result<Object, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return m.finish_upload(bucket, name, body, content_type, Some(metadata));
        }
        let client = self.client();
        upload_small(client, bucket, name, body, content_type, Some(metadata), false).await.map_err(|e| RelayError::gcs(bucket, name, &e))
    }

    /// Starts a resumable upload session for `name`.
    pub async fn start_upload(&self, bucket: &str, name: &str, content_type: &str) -> Result<Upload, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return Ok(Upload { bucket: bucket.into(), name: name.into(), session: Session::Memory(m.session(bucket, name, content_type)) });
        }
        let client = self.client();
        let req = UploadObjectRequest { bucket: bucket.into(), ..Default::default() };
        let meta = Object { name: name.into(), content_type: Some(content_type.into()), ..Default::default() };
        let s = client.prepare_resumable_upload(&req, &UploadType::Multipart(Box::new(meta))).await.map_err(|e| RelayError::gcs(bucket, name, &e))?;
        Ok(Upload { bucket: bucket.into(), name: name.into(), session: Session::Remote(s) })
    }

    /// Replaces the object's metadata, only while `generation` is its live one.
    pub async fn patch_metadata(&self, bucket: &str, name: &str, generation: i64, metadata: HashMap<String, String>) -> Result<Patched, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return m.patch_metadata(bucket, name, generation, metadata);
        }
        let client = self.client();
        let patch = PatchObjectRequest {
            bucket: bucket.into(),
            object: name.into(),
            if_generation_match: Some(generation),
            metadata: Some(Object { metadata: Some(metadata), ..Default::default() }),
            ..Default::default()
        };
        match client.patch_object(&patch).await {
            Ok(_) => Ok(Patched::Applied),
            Err(gcloud_storage::http::Error::HttpClient(e)) if e.is_decode() => Ok(Patched::Unconfirmed(e.to_string())),
            Err(e) => Err(RelayError::gcs(bucket, name, &e)),
        }
    }
}

/// A resumable upload session.
pub struct Upload {
    bucket: String,
    name: String,
    session: Session,
}

enum Session {
    Remote(ResumableUploadClient),
    #[cfg(any(test, feature = "testing"))]
    Memory(memory::Session),
}

impl Upload {
    fn remote(&self) -> &ResumableUploadClient {
        match &self.session {
            Session::Remote(s) => s,
            #[cfg(any(test, feature = "testing"))]
            Session::Memory(_) => unreachable!("the memory session answers before any client call"),
        }
    }

    /// Sends `data` at `offset`; `total` on the last request. `Ok(None)`: the chunk was
    /// taken and the session waits for more; `Ok(Some(object))`: the upload finished.
    ///
    /// A request that fails transiently is not the end of the upload: the session is
    /// asked how many bytes it committed (GCS's status check) and the rest of the chunk
    /// is sent from there, under the request retry policy. Only when the session lost
    /// bytes of earlier chunks (which the caller no longer holds) does the copy fail.
    pub async fn put(&mut self, offset: u64, data: Bytes, total: Option<u64>, progress: &Progress) -> Result<Option<Object>, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Session::Memory(s) = &mut self.session {
            progress.moved();
            return s.put(offset, data, total);
        }
        let policy = crossdock_core::retry::Policy::REQUEST;
        let end = offset + data.len() as u64;
        let mut from = offset;
        let mut failures = 0u32;
        loop {
            let sent = self.send(offset, &data, from, total, progress).await;
            let (e, status) = match sent {
                Ok(done) => {
                    if failures > 0 {
                        crossdock_core::retry::recovered("gcs", "upload_chunk", failures);
                    }
                    return Ok(done);
                }
                Err(e) => e,
            };
            failures += 1;
            if crossdock_core::retry::failed("gcs", "upload_chunk", e.is_retryable(), policy.allows(failures), &e) != crossdock_core::retry::Outcome::Retried {
                return Err(e);
            }
            tokio::time::sleep(policy.delay_after(failures, status)).await;
            // The status check is a plain request: the HTTP layer retries it.
            let status = self.remote().status(total).await.map_err(|e| RelayError::gcs(&self.bucket, &self.name, &e))?;
            progress.moved();
            let committed = match status {
                UploadStatus::Ok(o) if total.is_some() => return Ok(Some(o)),
                UploadStatus::Ok(_) => end,
                UploadStatus::NotStarted => 0,
                UploadStatus::ResumeIncomplete(r) => r.last_byte + 1,
            };
            crate::events::upload_resumed(&format!("gs://{}/{}", self.bucket, self.name), from, committed, &e);
            if committed < offset || committed > end {
                return Err(RelayError::Gcs {
                    bucket: self.bucket.clone(),
                    key: self.name.clone(),
                    message: format!("resumable upload session holds {committed} bytes, outside the chunk {offset}..{end} being sent; copying the part again"),
                    retryable: true,
                });
            }
            if committed == end && total.is_none() {
                return Ok(None);
            }
            from = committed;
        }
    }

    /// One request: `data` (which starts at `offset`) from byte `from` on. A failure
    /// comes with the HTTP status GCS answered, if any (for the wait before a retry).
    async fn send(&self, offset: u64, data: &Bytes, from: u64, total: Option<u64>, progress: &Progress) -> Result<Option<Object>, (RelayError, Option<u16>)> {
        let end = offset + data.len() as u64;
        let rest = data.slice((from - offset) as usize..);
        let range = ChunkSize::new(from, end.saturating_sub(1).max(from), total);
        let status = self
            .remote()
            .upload_multiple_chunk(counted_body(rest, progress), &range)
            .await
            .map_err(|e| (RelayError::gcs(&self.bucket, &self.name, &e), gcs_status(&e)))?;
        match status {
            UploadStatus::Ok(o) if total.is_some() => Ok(Some(o)),
            UploadStatus::ResumeIncomplete(r) if total.is_none() && r.last_byte + 1 == end => Ok(None),
            other => Err((
                RelayError::Gcs {
                    bucket: self.bucket.clone(),
                    key: self.name.clone(),
                    message: match total {
                        Some(t) => format!("resumable upload did not complete at {t} bytes: {other:?}"),
                        None => format!("unexpected resumable upload status after {end} bytes: {other:?}"),
                    },
                    retryable: true,
                },
                None,
            )),
        }
    }

    /// Abandons the session (best effort): nothing of it becomes an object.
    pub async fn cancel(self) {
        #[cfg(any(test, feature = "testing"))]
        if let Session::Memory(_) = &self.session {
            return;
        }
        let _ = self.remote().clone().cancel().await;
    }
}

/// Pieces a request body is handed to the HTTP client in, so that an upload's progress
/// is seen while a large request is being sent, not only when it is answered.
const BODY_PIECE: usize = 256 << 10;

/// `data` as a request body that stamps `progress` each time the client takes a piece.
fn counted_body(data: Bytes, progress: &Progress) -> reqwest_middleware::reqwest::Body {
    let progress = progress.clone();
    let pieces: Vec<Bytes> = (0..data.len()).step_by(BODY_PIECE).map(|at| data.slice(at..(at + BODY_PIECE).min(data.len()))).collect();
    reqwest_middleware::reqwest::Body::wrap_stream(futures::stream::iter(pieces).map(move |piece| {
        progress.moved();
        Ok::<_, std::io::Error>(piece)
    }))
}

/// Writes a small object in one multipart request (create-only with `create_only`).
async fn upload_small(
    client: &Client,
    bucket: &str,
    name: &str,
    body: Vec<u8>,
    content_type: &str,
    metadata: Option<HashMap<String, String>>,
    create_only: bool,
) -> Result<Object, gcloud_storage::http::Error> {
    let req = UploadObjectRequest { bucket: bucket.into(), if_generation_match: create_only.then_some(0), ..Default::default() };
    let meta = Object { name: name.into(), content_type: Some(content_type.into()), metadata, ..Default::default() };
    client.upload_object(&req, body, &UploadType::Multipart(Box::new(meta))).await
}

pub use crossdock_gcp::storage_http::Timeouts;

/// The HTTP client for `gcloud_storage::client::ClientConfig::http`: the shared GCS
/// client (`timeouts`, retries under the request policy) counting every request sent,
/// retries included, in `crossdock_relay_gcs_requests_total{op, purpose}` and its bytes
/// in `crossdock_relay_gcs_sent_bytes_total{op}`.
pub fn http_client(timeouts: Timeouts) -> Result<reqwest_middleware::ClientWithMiddleware, RelayError> {
    let counter: std::sync::Arc<dyn reqwest_middleware::Middleware> = std::sync::Arc::new(count_request);
    crossdock_gcp::storage_http::client(timeouts, crossdock_core::retry::Policy::REQUEST, vec![counter])
        .map_err(|e| RelayError::Config(format!("building the GCS HTTP client: {e}")))
}

tokio::task_local! {
    static PURPOSE: &'static str;
}

/// Runs `fut` with its GCS requests counted under `purpose` (`copy` outside any).
pub async fn counted_as<F: Future>(purpose: &'static str, fut: F) -> F::Output {
    PURPOSE.scope(purpose, fut).await
}

fn count_request<'a>(
    req: reqwest_middleware::reqwest::Request,
    extensions: &'a mut http::Extensions,
    next: reqwest_middleware::Next<'a>,
) -> std::pin::Pin<Box<dyn Future<Output = reqwest_middleware::Result<reqwest_middleware::reqwest::Response>> + Send + 'a>> {
    let purpose = PURPOSE.try_with(|p| *p).unwrap_or("copy");
    let sent =
        req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()).or_else(|| Some(req.body()?.as_bytes()?.len() as u64));
    crate::events::gcs_request(crossdock_gcp::storage_http::operation(req.method().as_str(), req.url()), purpose, sent.unwrap_or(0));
    next.run(req, extensions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_counted_under_the_purpose_they_run_in() {
        assert_eq!(counted_as("completion", async { PURPOSE.try_with(|p| *p) }).await, Ok("completion"));
        assert!(PURPOSE.try_with(|p| *p).is_err(), "outside any purpose: counted as copy");
    }
}
