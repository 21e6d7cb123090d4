//! The dump writer: DynamoDB JSON lines into one data part at a time, streamed to S3.
//!
//! Lines are buffered up to the upload chunk size (≥ 5 MiB, S3's minimum for non-last
//! parts); a part that stays below one chunk is written with a single PutObject, a
//! bigger one with a multipart upload whose chunks are sent as they fill — memory is
//! bounded by one chunk per segment worker whatever the table size. Each part records
//! its items, bytes, SHA-256 and per-attribute type statistics, all of the plain lines.
//!
//! Lines go through a compressor (zstd by default, see [`PartCodec`]) before they are
//! buffered: a part is stored in S3 with its codec's extension, which the relay
//! decodes like a native export's `.json.gz`. JSON lines shrink several times, so the
//! compressor's CPU buys a several-fold smaller upload and S3 bill.
//!
//! Uploads are sent with an unsigned payload: S3 checks each body against the CRC32
//! the SDK sends with it (its default request checksum), and the service is reached
//! over TLS, so signing the payload would only hash every byte once more (about 5% of
//! the exporter's CPU, taken from the table's read throughput on a shared machine).

use crate::error::{s3_error, ExportError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use crossdock_core::item::{write_item, Entries, ValueView, View};
use crossdock_core::manifest::{PartEntry, TypeStats};
use crossdock_core::Codec;
use sha2::{Digest, Sha256};
use std::io::Write;

/// S3's minimum size of a non-last multipart chunk.
pub const MIN_CHUNK_BYTES: usize = 5 * 1024 * 1024;
/// Default upload chunk size.
pub const DEFAULT_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// How the exporter stores data parts: the codec and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartCodec {
    pub codec: Codec,
    pub level: i32,
}

impl Default for PartCodec {
    fn default() -> Self {
        PartCodec::new(Codec::Zstd, None)
    }
}

impl PartCodec {
    /// The codecs the exporter writes: those with a streaming encoder here (bzip2's
    /// is the relay's parallel block encoder).
    pub const WRITABLE: [Codec; 3] = [Codec::Zstd, Codec::Gzip, Codec::None];

    /// `codec` at `level`, by default the codec's CLI default except for zstd, at 1:
    /// its fastest level already shrinks DynamoDB JSON lines several times, and the
    /// exporter's CPU competes with the scan (the relay re-encodes at its own level).
    pub fn new(codec: Codec, level: Option<i32>) -> PartCodec {
        let level = level.unwrap_or(if codec == Codec::Zstd { 1 } else { codec.default_level() });
        PartCodec { codec, level }
    }
}

/// Plain bytes compressed at once into one zstd frame. A part is a series of frames,
/// which every zstd decoder reads as one stream. A stream fed line by line spent a
/// tenth of the exporter's CPU in zstd's wrapped-window (`extDict`) path; whole blocks
/// avoid it, though the exporter's total CPU stayed within the noise of the two runs.
const ZSTD_BLOCK: usize = 1024 * 1024;

/// A part's stored bytes so far: the plain lines, or a compressor's output. Chunks are
/// taken from the front as they fill.
enum Stored {
    Plain(Vec<u8>),
    Zstd { block: Vec<u8>, out: Vec<u8>, compressor: Box<zstd::bulk::Compressor<'static>> },
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl Stored {
    fn new(codec: PartCodec) -> std::io::Result<Stored> {
        let buf = Vec::with_capacity(64 * 1024);
        Ok(match codec.codec {
            Codec::Zstd => {
                Stored::Zstd { block: Vec::with_capacity(ZSTD_BLOCK + 64 * 1024), out: buf, compressor: Box::new(zstd::bulk::Compressor::new(codec.level)?) }
            }
            Codec::Gzip => Stored::Gzip(flate2::write::GzEncoder::new(buf, flate2::Compression::new(codec.level.clamp(0, 9) as u32))),
            Codec::None | Codec::Bzip2 => Stored::Plain(buf),
        })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Stored::Plain(b) => b.extend_from_slice(line),
            Stored::Zstd { block, out, compressor } => {
                block.extend_from_slice(line);
                if block.len() >= ZSTD_BLOCK {
                    out.extend_from_slice(&compressor.compress(block)?);
                    block.clear();
                }
            }
            Stored::Gzip(e) => e.write_all(line)?,
        }
        Ok(())
    }

    /// The output not yet sent (an encoder only appends to it, so taking it is safe).
    fn out(&mut self) -> &mut Vec<u8> {
        match self {
            Stored::Plain(b) | Stored::Zstd { out: b, .. } => b,
            Stored::Gzip(e) => e.get_mut(),
        }
    }

    /// Ends the stream: the output not yet sent, with the last frame.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Stored::Plain(b) => Ok(b),
            Stored::Zstd { block, mut out, mut compressor } => {
                if !block.is_empty() {
                    out.extend_from_slice(&compressor.compress(&block)?);
                }
                Ok(out)
            }
            Stored::Gzip(e) => e.finish(),
        }
    }
}

/// One data part being written.
pub struct PartWriter {
    s3: aws_sdk_s3::Client,
    table: String,
    bucket: String,
    key: String,
    /// Name relative to the export directory (for the manifest).
    name: String,
    content_type: &'static str,
    chunk_bytes: usize,
    stored: Stored,
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
    /// A writer of `table`'s part `key` (named `name` in the manifest) stored with `codec`.
    pub fn new(
        s3: aws_sdk_s3::Client,
        table: &str,
        bucket: &str,
        key: String,
        name: String,
        codec: PartCodec,
        chunk_bytes: usize,
    ) -> Result<Self, ExportError> {
        let chunk_bytes = chunk_bytes.max(MIN_CHUNK_BYTES);
        let stored = Stored::new(codec).map_err(|e| encode_error(bucket, &key, e))?;
        Ok(PartWriter {
            s3,
            table: table.into(),
            bucket: bucket.into(),
            content_type: codec.codec.content_type(),
            key,
            name,
            chunk_bytes,
            stored,
            line: String::with_capacity(4096),
            hasher: Sha256::new(),
            items: 0,
            bytes: 0,
            stats: TypeStats::default(),
            upload: None,
        })
    }

    pub fn items(&self) -> u64 {
        self.items
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one item, held in any representation `R` reads (the SDK's scanned
    /// items, core items), as a line; sends a chunk when one is full. An attribute of a
    /// type this build does not know fails the part, naming it.
    pub async fn push<R: ValueView>(&mut self, item: &Entries<'_, R::Value>) -> Result<(), ExportError> {
        self.line.clear();
        if let Err(attribute) = write_item::<R>(item, &mut self.line) {
            return Err(ExportError::UnknownAttributeType { table: self.table.clone(), attribute });
        }
        self.line.push('\n');
        let len = self.line.len();
        self.stats.observe_view::<R>(item, json_len::<R>);
        self.hasher.update(self.line.as_bytes());
        self.stored.write(self.line.as_bytes()).map_err(|e| encode_error(&self.bucket, &self.key, e))?;
        self.items += 1;
        self.bytes += len as u64;
        if self.stored.out().len() >= self.chunk_bytes {
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
                .content_type(self.content_type)
                .send()
                .await
                .map_err(|e| s3_error(&self.bucket, &self.key, "CreateMultipartUpload", &e))?;
            let id = out.upload_id().unwrap_or_default().to_string();
            self.upload = Some((id, Vec::new()));
        }
        let body = std::mem::take(self.stored.out());
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
        let last = std::mem::replace(&mut self.stored, Stored::Plain(Vec::new())).finish().map_err(|e| encode_error(&self.bucket, &self.key, e))?;
        self.stored = Stored::Plain(last);
        match self.upload.take() {
            None => {
                let body = std::mem::take(self.stored.out());
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type(self.content_type)
                    .body(ByteStream::from(body))
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| s3_error(&self.bucket, &self.key, "PutObject", &e))?;
            }
            Some(upload) => {
                self.upload = Some(upload);
                if !self.stored.out().is_empty() {
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

/// A stored part's lines (tests read back what the writer stored).
#[cfg(test)]
pub(crate) fn decode(codec: Codec, stored: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match codec {
        Codec::Zstd => zstd::stream::read::Decoder::new(stored).and_then(|mut d| d.read_to_end(&mut out)),
        Codec::Gzip => flate2::read::MultiGzDecoder::new(stored).read_to_end(&mut out),
        Codec::None | Codec::Bzip2 => std::io::Write::write_all(&mut out, stored).map(|()| 0),
    }
    .expect("a stored part decodes");
    out
}

fn encode_error(bucket: &str, key: &str, source: std::io::Error) -> ExportError {
    ExportError::Encode { bucket: bucket.into(), key: key.into(), source }
}

/// Size of a value's DynamoDB JSON text (without escapes), for the type statistics'
/// `max_value_bytes`; computed without encoding. `R` reads the value (a scanned SDK
/// value, a core one: [`CoreValues`]); one of a type it does not know counts 0.
pub fn json_len<R: ValueView>(v: &R::Value) -> usize {
    fn list(it: impl Iterator<Item = usize>) -> usize {
        let (n, sum) = it.fold((0usize, 0usize), |(n, s), l| (n + 1, s + l));
        2 + sum + n.saturating_sub(1)
    }
    let Some(view) = R::view(v) else { return 0 };
    let tag = view.type_tag().as_str().len() + 5; // {"T":…}
    tag + match view {
        View::S(s) | View::N(s) => s.len() + 2,
        View::B(b) => b.len().div_ceil(3) * 4 + 2,
        View::Bool(true) | View::Null => 4,
        View::Bool(false) => 5,
        View::Ss(v) | View::Ns(v) => list(v.iter().map(|s| s.len() + 2)),
        View::Bs(v) => list(v.iter().map(|b| b.len().div_ceil(3) * 4 + 2)),
        View::L(l) => list(l.iter().map(json_len::<R>)),
        View::M(m) => list(m.iter().map(|(k, v)| k.len() + 3 + json_len::<R>(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossdock_core::item::{parse_line, to_line, CoreValues};

    /// Lines through `Stored`, with the output taken in pieces as the writer does
    /// between chunks; returns the stored bytes.
    fn store(codec: PartCodec, lines: &[String]) -> Vec<u8> {
        let mut stored = Stored::new(codec).expect("encoder");
        let mut sent = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            stored.write(l.as_bytes()).expect("write");
            if i % 997 == 0 {
                sent.append(stored.out());
            }
        }
        sent.extend(stored.finish().expect("finish"));
        sent
    }

    #[test]
    fn every_codec_stores_lines_that_decode_back_across_blocks_and_chunks() {
        // ~3 MiB: several zstd blocks, the last one partial.
        let lines: Vec<String> =
            (0..80_000).map(|i| format!("{{\"Item\":{{\"pk\":{{\"S\":\"k{i}\"}},\"v\":{{\"N\":\"{}\"}}}}}}\n", i * 7919 % 10_007)).collect();
        let plain: Vec<u8> = lines.concat().into_bytes();
        assert!(plain.len() > 2 * ZSTD_BLOCK + 1);
        for codec in PartCodec::WRITABLE {
            let stored = store(PartCodec::new(codec, None), &lines);
            let back = decode(codec, &stored);
            assert!(back == plain, "{codec}: {} bytes back of {}", back.len(), plain.len());
            if codec != Codec::None {
                assert!(stored.len() * 3 < plain.len(), "{codec} compresses: {} of {}", stored.len(), plain.len());
            }
        }
    }

    #[test]
    fn zstd_defaults_to_its_fastest_level_and_other_codecs_to_their_cli_default() {
        assert_eq!(PartCodec::default(), PartCodec { codec: Codec::Zstd, level: 1 });
        assert_eq!(PartCodec::new(Codec::Gzip, None).level, 6);
        assert_eq!(PartCodec::new(Codec::Zstd, Some(9)).level, 9);
    }

    #[test]
    fn json_len_matches_the_encoding_without_escapes() {
        let line = r#"{"Item":{"a":{"M":{"x":{"L":[{"S":"ab"},{"N":"12"},{"BOOL":false},{"NULL":true}]},"y":{"BS":["AAEC","AQ=="]},"z":{"SS":[]}}}}}"#;
        let item = parse_line(line, 1).expect("valid");
        let value = &item["a"];
        let whole = to_line(&item);
        // `{"Item":{"a":` + value + `}}`
        assert_eq!(json_len::<CoreValues>(value), whole.len() - 15);
    }
}
