//! GCS helpers: the relay's object metadata (provenance), reads, listings and the
//! create-only write used for `_SUCCESS`.

use crate::error::{gcs_status, RelayError};
use crossdock_core::marker::Crc32c;
use gcloud_storage::client::Client;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{UploadObjectRequest, UploadType};
use gcloud_storage::http::objects::Object;
use std::collections::HashMap;

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

/// The object's resource, or `None` if it does not exist.
pub async fn get(client: &Client, bucket: &str, name: &str) -> Result<Option<Object>, RelayError> {
    let req = GetObjectRequest { bucket: bucket.into(), object: name.into(), ..Default::default() };
    match client.get_object(&req).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if gcs_status(&e) == Some(404) => Ok(None),
        Err(e) => Err(RelayError::gcs(bucket, name, &e)),
    }
}

/// The object's bytes, or `None` if it does not exist.
pub async fn download(client: &Client, bucket: &str, name: &str) -> Result<Option<Vec<u8>>, RelayError> {
    let req = GetObjectRequest { bucket: bucket.into(), object: name.into(), ..Default::default() };
    match client.download_object(&req, &Range::default()).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if gcs_status(&e) == Some(404) => Ok(None),
        Err(e) => Err(RelayError::gcs(bucket, name, &e)),
    }
}

/// Every object under `prefix` (all pages).
pub async fn list(client: &Client, bucket: &str, prefix: &str) -> Result<Vec<Object>, RelayError> {
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

/// Deletes the object (with `generation`, only while that generation is the live one);
/// one already gone is not an error.
pub async fn delete(client: &Client, bucket: &str, name: &str, generation: Option<i64>) -> Result<(), RelayError> {
    let req = DeleteObjectRequest { bucket: bucket.into(), object: name.into(), if_generation_match: generation, ..Default::default() };
    match client.delete_object(&req).await {
        Ok(()) => Ok(()),
        Err(e) if gcs_status(&e) == Some(404) => Ok(()),
        Err(e) => Err(RelayError::gcs(bucket, name, &e)),
    }
}

/// Whether a create-only write found the object already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    AlreadyExists,
}

/// Creates a small JSON object (the `_SUCCESS` marker) in one multipart request
/// carrying `ifGenerationMatch=0`, so it fails (→ [`Created::AlreadyExists`]) if the
/// object exists; fake-gcs-server enforces this for multipart uploads only, which is
/// why markers are written this way.
pub async fn create_json(client: &Client, bucket: &str, name: &str, body: Vec<u8>) -> Result<Created, RelayError> {
    match upload_small(client, bucket, name, body, "application/json", None, true).await {
        Ok(_) => Ok(Created::Created),
        Err(e) if gcs_status(&e) == Some(412) => Ok(Created::AlreadyExists),
        Err(e) => Err(RelayError::gcs(bucket, name, &e)),
    }
}

/// Writes a small object in one multipart request (create-only with `create_only`),
/// returning the stored object's resource (with the CRC32C GCS computed of what it
/// received).
pub async fn upload_small(
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
