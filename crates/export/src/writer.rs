//! The dump writer: DynamoDB JSON lines into one data part at a time, streamed to S3.
//!
//! Lines are buffered up to the upload chunk size (≥ 5 MiB, S3's minimum for non-last
//! parts); a part that stays below one chunk is written with a single PutObject, a
//! bigger one with a multipart upload whose chunks are sent as they fill — memory is
//! bounded by one chunk per segment worker whatever the table size. Each part records
//! its items, bytes, SHA-256 and per-attribute type statistics.
//!
//! Uploads are sent with an unsigned payload: S3 checks each body against the CRC32
//! the SDK sends with it (its default request checksum), and the service is reached
//! over TLS, so signing the payload would only hash every byte once more (about 5% of
//! the exporter's CPU, taken from the table's read throughput on a shared machine).

use crate::error::{s3_error, ExportError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use crossdock_core::item::{write_line, AttributeValue, Item};
use crossdock_core::manifest::{PartEntry, TypeStats};
use sha2::{Digest, Sha256};

/// S3's minimum size of a non-last multipart chunk.
pub const MIN_CHUNK_BYTES: usize = 5 * 1024 * 1024;
/// Default upload chunk size.
pub const DEFAULT_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// One data part being written.
pub struct PartWriter {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    /// Name relative to the export directory (for the manifest).
    name: String,
    chunk_bytes: usize,
    buf: Vec<u8>,
    line: String,
    hasher: Sha256,
    items: u64,
    bytes: u64,
    stats: TypeStats,
    upload: Option<(String, Vec<CompletedPart>)>,
}

impl std::fmt::Debug for PartWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartWriter").field("key", &self.key).field("items", &self.items).field("bytes", &self.bytes).finish()
    }
}

/// A part that is durable in S3.
#[derive(Debug, Clone)]
pub struct FinishedPart {
    pub entry: PartEntry,
    pub stats: TypeStats,
}

impl PartWriter {
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str, key: String, name: String, chunk_bytes: usize) -> Self {
        let chunk_bytes = chunk_bytes.max(MIN_CHUNK_BYTES);
        PartWriter {
            s3,
            bucket: bucket.into(),
            key,
            name,
            chunk_bytes,
            buf: Vec::with_capacity(64 * 1024),
            line: String::with_capacity(4096),
            hasher: Sha256::new(),
            items: 0,
            bytes: 0,
            stats: TypeStats::default(),
            upload: None,
        }
    }

    pub fn items(&self) -> u64 {
        self.items
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one item as a line; sends a chunk when one is full.
    pub async fn push(&mut self, item: &Item) -> Result<(), ExportError> {
        self.line.clear();
        write_line(item, &mut self.line);
        self.line.push('\n');
        let len = self.line.len();
        self.stats.observe(item, json_len);
        self.hasher.update(self.line.as_bytes());
        self.buf.extend_from_slice(self.line.as_bytes());
        self.items += 1;
        self.bytes += len as u64;
        if self.buf.len() >= self.chunk_bytes {
            self.send_chunk().await?;
        }
        Ok(())
    }

    async fn send_chunk(&mut self) -> Result<(), ExportError> {
        let r = self.try_send_chunk().await;
        if r.is_err() {
            self.abort_upload().await;
        }
        r
    }

    async fn try_send_chunk(&mut self) -> Result<(), ExportError> {
        if self.upload.is_none() {
            let out = self
                .s3
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type("application/x-ndjson")
                .send()
                .await
                .map_err(|e| s3_error(&self.bucket, &self.key, "CreateMultipartUpload", &e))?;
            let id = out.upload_id().unwrap_or_default().to_string();
            self.upload = Some((id, Vec::new()));
        }
        let body = std::mem::take(&mut self.buf);
        let Some((id, parts)) = self.upload.as_mut() else { return Ok(()) };
        let number = parts.len() as i32 + 1;
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(id.as_str())
            .part_number(number)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| s3_error(&self.bucket, &self.key, "UploadPart", &e))?;
        parts.push(CompletedPart::builder().set_e_tag(out.e_tag().map(str::to_string)).part_number(number).build());
        metrics::counter!("crossdock_export_upload_chunks_total").increment(1);
        Ok(())
    }

    /// Completes the part; it is durable when this returns. On failure a multipart
    /// upload in progress is aborted, so no invisible chunks are left billed in S3.
    pub async fn finish(mut self) -> Result<FinishedPart, ExportError> {
        if let Err(e) = self.complete().await {
            self.abort_upload().await;
            return Err(e);
        }
        let sha256 = hex::encode(self.hasher.finalize_reset());
        Ok(FinishedPart { entry: PartEntry { name: self.name, items: self.items, bytes: self.bytes, sha256 }, stats: std::mem::take(&mut self.stats) })
    }

    async fn complete(&mut self) -> Result<(), ExportError> {
        match self.upload.take() {
            None => {
                let body = std::mem::take(&mut self.buf);
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type("application/x-ndjson")
                    .body(ByteStream::from(body))
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| s3_error(&self.bucket, &self.key, "PutObject", &e))?;
            }
            Some(upload) => {
                self.upload = Some(upload);
                if !self.buf.is_empty() {
                    self.send_chunk().await?;
                }
                let Some((id, parts)) = self.upload.as_ref() else { return Ok(()) };
                self.s3
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .upload_id(id)
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts.clone())).build())
                    .send()
                    .await
                    .map_err(|e| s3_error(&self.bucket, &self.key, "CompleteMultipartUpload", &e))?;
                self.upload = None;
            }
        }
        Ok(())
    }

    /// Abandons the part (shutdown or error): aborts a multipart upload in progress.
    pub async fn abort(mut self) {
        self.abort_upload().await;
    }

    async fn abort_upload(&mut self) {
        if let Some((id, _)) = self.upload.take() {
            let r = self.s3.abort_multipart_upload().bucket(&self.bucket).key(&self.key).upload_id(id).send().await;
            if let Err(e) = r {
                tracing::warn!(bucket = %self.bucket, key = %self.key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "could not abort multipart upload");
            }
        }
    }
}

/// Size of a value's DynamoDB JSON text (without escapes), for the type statistics'
/// `max_value_bytes`; computed without encoding.
pub fn json_len(v: &AttributeValue) -> usize {
    fn list(it: impl Iterator<Item = usize>) -> usize {
        let (n, sum) = it.fold((0usize, 0usize), |(n, s), l| (n + 1, s + l));
        2 + sum + n.saturating_sub(1)
    }
    let tag = v.type_tag().as_str().len() + 5; // {"T":…}
    tag + match v {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len() + 2,
        AttributeValue::B(b) => b.len().div_ceil(3) * 4 + 2,
        AttributeValue::Bool(true) | AttributeValue::Null => 4,
        AttributeValue::Bool(false) => 5,
        AttributeValue::Ss(v) | AttributeValue::Ns(v) => list(v.iter().map(|s| s.len() + 2)),
        AttributeValue::Bs(v) => list(v.iter().map(|b| b.len().div_ceil(3) * 4 + 2)),
        AttributeValue::L(l) => list(l.iter().map(json_len)),
        AttributeValue::M(m) => list(m.iter().map(|(k, v)| k.len() + 3 + json_len(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossdock_core::item::{parse_line, to_line};

    #[test]
    fn json_len_matches_the_encoding_without_escapes() {
        let line = r#"{"Item":{"a":{"M":{"x":{"L":[{"S":"ab"},{"N":"12"},{"BOOL":false},{"NULL":true}]},"y":{"BS":["AAEC","AQ=="]},"z":{"SS":[]}}}}}"#;
        let item = parse_line(line, 1).expect("valid");
        let value = &item["a"];
        let whole = to_line(&item);
        // `{"Item":{"a":` + value + `}}`
        assert_eq!(json_len(value), whole.len() - 15);
    }
}
