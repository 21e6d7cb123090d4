//! The few GCS calls the loader makes (JSON API through `gcloud-storage`), with errors
//! mapped to [`LoadError`] carrying bucket and key. With the `testing` feature a bucket
//! can also live in memory ([`Gcs::memory`]), so the loader's decisions run in
//! `cargo test` without a server.

use crate::error::LoadError;
use gcloud_storage::client::Client;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{UploadObjectRequest, UploadType};
use gcloud_storage::http::objects::Object;

/// A GCS client plus the bucket it works in.
#[derive(Clone)]
pub struct Gcs {
    backend: Backend,
    pub bucket: String,
}

#[derive(Clone)]
// One per marker: the size of the client is no cost worth a box.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Remote(Client),
    /// Objects by name.
    #[cfg(any(test, feature = "testing"))]
    Memory(std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>),
}

impl std::fmt::Debug for Gcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gcs").field("bucket", &self.bucket).finish()
    }
}

/// A GCS client signed in through `gcp` (anonymous only at `STORAGE_EMULATOR_HOST`).
pub async fn client(gcp: &crossdock_gcp::Gcp) -> Result<Client, LoadError> {
    let config = gcp.storage_config().await.map_err(LoadError::auth("GCS"))?;
    Ok(Client::new(config))
}

/// Splits `gs://bucket/key` into its parts.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("gs://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

fn map_err(op: &'static str, bucket: &str, key: &str, e: gcloud_storage::http::Error) -> LoadError {
    use crossdock_gcp::GcsFailure;
    match crossdock_gcp::gcs_failure(&e) {
        GcsFailure::NotFound => LoadError::NotFound { what: format!("gs://{bucket}/{key}") },
        f => LoadError::Gcs { op, bucket: bucket.into(), key: key.into(), message: e.to_string(), retryable: f == GcsFailure::Retryable },
    }
}

impl Gcs {
    pub fn new(client: Client, bucket: impl Into<String>) -> Gcs {
        Gcs { backend: Backend::Remote(client), bucket: bucket.into() }
    }

    /// An empty bucket in memory.
    #[cfg(any(test, feature = "testing"))]
    pub fn memory(bucket: impl Into<String>) -> Gcs {
        Gcs { backend: Backend::Memory(Default::default()), bucket: bucket.into() }
    }

    fn client(&self) -> &Client {
        match &self.backend {
            Backend::Remote(c) => c,
            #[cfg(any(test, feature = "testing"))]
            Backend::Memory(_) => unreachable!("the memory backend answers before any client call"),
        }
    }

    /// The memory bucket's objects, when this is one.
    #[cfg(any(test, feature = "testing"))]
    fn memory_objects(&self) -> Option<std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Vec<u8>>>> {
        match &self.backend {
            Backend::Memory(m) => Some(m.lock().unwrap_or_else(|e| e.into_inner())),
            Backend::Remote(_) => None,
        }
    }

    /// Whole object, or `NotFound`.
    pub async fn read(&self, key: &str) -> Result<Vec<u8>, LoadError> {
        #[cfg(any(test, feature = "testing"))]
        if let Some(m) = self.memory_objects() {
            return m.get(key).cloned().ok_or_else(|| LoadError::NotFound { what: format!("gs://{}/{key}", self.bucket) });
        }
        let req = GetObjectRequest { bucket: self.bucket.clone(), object: key.into(), ..Default::default() };
        // The HTTP layer retries failed requests; this retries only a body cut off
        // mid-read, which it cannot see. A missing object is an answer, not a failed
        // call: it is not counted as one.
        let cut_off = |e: &LoadError| matches!(e, LoadError::Gcs { op: "download_body", .. });
        let found = crossdock_core::retry::Policy::REQUEST
            .run("gcs", "download_body", cut_off, || async {
                match self.client().download_object(&req, &Range::default()).await {
                    Ok(b) => Ok(Some(b)),
                    Err(e) => match map_err(if crossdock_gcp::body_cut_off(&e) { "download_body" } else { "read" }, &self.bucket, key, e) {
                        LoadError::NotFound { .. } => Ok(None),
                        e => Err(e),
                    },
                }
            })
            .await?;
        found.ok_or_else(|| LoadError::NotFound { what: format!("gs://{}/{key}", self.bucket) })
    }

    /// Writes (overwrites) an object with a single-shot multipart upload.
    pub async fn write(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), LoadError> {
        #[cfg(any(test, feature = "testing"))]
        if let Some(mut m) = self.memory_objects() {
            m.insert(key.into(), body);
            return Ok(());
        }
        let req = UploadObjectRequest { bucket: self.bucket.clone(), ..Default::default() };
        let object = Object { name: key.into(), content_type: Some(content_type.into()), ..Default::default() };
        self.client().upload_object(&req, body, &UploadType::Multipart(Box::new(object))).await.map(|_| ()).map_err(|e| map_err("write", &self.bucket, key, e))
    }

    /// Writes an object only if none exists (`ifGenerationMatch=0`); `Ok(false)` when
    /// one does, so of several writers exactly one creates it.
    pub async fn create(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<bool, LoadError> {
        #[cfg(any(test, feature = "testing"))]
        if let Some(mut m) = self.memory_objects() {
            return Ok(match m.entry(key.into()) {
                std::collections::btree_map::Entry::Occupied(_) => false,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(body);
                    true
                }
            });
        }
        let req = UploadObjectRequest { bucket: self.bucket.clone(), if_generation_match: Some(0), ..Default::default() };
        let object = Object { name: key.into(), content_type: Some(content_type.into()), ..Default::default() };
        match self.client().upload_object(&req, body.clone(), &UploadType::Multipart(Box::new(object))).await {
            Ok(_) => Ok(true),
            // A retried request whose first try landed also answers 412: the object then
            // holds exactly these bytes (they carry this writer's time and duration).
            Err(e) if crossdock_gcp::gcs_status(&e) == Some(412) => Ok(self.read(key).await? == body),
            Err(e) => Err(map_err("create", &self.bucket, key, e)),
        }
    }

    /// Deletes an object; one already absent is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), LoadError> {
        #[cfg(any(test, feature = "testing"))]
        if let Some(mut m) = self.memory_objects() {
            m.remove(key);
            return Ok(());
        }
        let req = DeleteObjectRequest { bucket: self.bucket.clone(), object: key.into(), ..Default::default() };
        match self.client().delete_object(&req).await {
            Ok(()) => Ok(()),
            Err(e) => match map_err("delete", &self.bucket, key, e) {
                LoadError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }

    /// The "directories" directly under `prefix` (`prefix` + `name/`), one listing with
    /// a `/` delimiter: cheap however many objects lie below them.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, LoadError> {
        #[cfg(any(test, feature = "testing"))]
        if let Some(m) = self.memory_objects() {
            let mut dirs: Vec<String> = m.keys().filter_map(|k| k.strip_prefix(prefix)?.split_once('/').map(|(dir, _)| format!("{prefix}{dir}/"))).collect();
            dirs.dedup();
            return Ok(dirs);
        }
        let mut dirs = Vec::new();
        let mut token = None;
        loop {
            let req = ListObjectsRequest {
                bucket: self.bucket.clone(),
                prefix: Some(prefix.into()),
                delimiter: Some("/".into()),
                page_token: token,
                ..Default::default()
            };
            let page = self.client().list_objects(&req).await.map_err(|e| map_err("list", &self.bucket, prefix, e))?;
            dirs.extend(page.prefixes.unwrap_or_default());
            token = page.next_page_token;
            if token.is_none() {
                return Ok(dirs);
            }
        }
    }

    /// Every object under `prefix` with its size and last update (Unix ms).
    pub async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, u64, Option<i64>)>, LoadError> {
        #[cfg(any(test, feature = "testing"))]
        if let Some(m) = self.memory_objects() {
            return Ok(m.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.len() as u64, None)).collect());
        }
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let req = ListObjectsRequest { bucket: self.bucket.clone(), prefix: Some(prefix.into()), page_token: token, ..Default::default() };
            let page = self.client().list_objects(&req).await.map_err(|e| map_err("list", &self.bucket, prefix, e))?;
            out.extend(page.items.unwrap_or_default().into_iter().map(|o| {
                let updated = o.updated.map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
                (o.name, o.size.max(0) as u64, updated)
            }));
            token = page.next_page_token;
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Names of all objects under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, LoadError> {
        #[cfg(any(test, feature = "testing"))]
        if let Some(m) = self.memory_objects() {
            return Ok(m.keys().filter(|k| k.starts_with(prefix)).cloned().collect());
        }
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client()
                .list_objects(&ListObjectsRequest { bucket: self.bucket.clone(), prefix: Some(prefix.into()), page_token: token, ..Default::default() })
                .await
                .map_err(|e| map_err("list", &self.bucket, prefix, e))?;
            names.extend(page.items.unwrap_or_default().into_iter().map(|o| o.name));
            token = page.next_page_token;
            if token.is_none() {
                return Ok(names);
            }
        }
    }
}
