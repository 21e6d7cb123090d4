//! The streaming copy of one object: S3 GetObject → (decode the source's compression)
//! → encode with the relay's codec → GCS resumable upload, three stages joined by
//! bounded channels so download, compression and upload overlap and memory stays
//! bounded per file (about `chunk_size` + a few blocks) whatever the file's size.
//!
//! The object only counts as relayed once its provenance metadata is on it (see
//! [`crate::gcs::Provenance`]); a copy interrupted before that is redone. The upload
//! stage checksums (CRC32C) the bytes it sends and compares that with the CRC32C GCS
//! computed of what it stored, so bytes damaged between the relay and GCS are never
//! left looking relayed.
//!
//! Every copy runs under a stall watch ([`crate::stall`]): one that moves no byte for
//! the stall timeout is abandoned with [`RelayError::Stalled`] (retryable); an upload
//! left unfinished creates no object, so nothing of it counts.

use crate::encode::{self, EncodeParams};
use crate::error::RelayError;
use crate::gcs::{self, Gcs, Patched, Provenance, Upload};
use crate::health::Health;
use crate::source::Source;
use crate::stall::{self, Progress};
use bytes::{Bytes, BytesMut};
use crossdock_core::marker::Crc32c;
use crossdock_core::Codec;
use gcloud_storage::http::objects::Object;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// GCS resumable uploads take chunks in multiples of this.
pub const CHUNK_QUANTUM: usize = 256 << 10;

/// What the copy stages need.
#[derive(Clone)]
pub struct Copier {
    pub source: Source,
    pub gcs: Gcs,
    pub encode: EncodeParams,
    /// Upload request size (a multiple of 256 KiB).
    pub chunk_size: usize,
    /// Upload budget of the whole process in bytes per second, shared by every file
    /// in flight, if any.
    pub rate_limit: Option<Arc<crossdock_core::pace::Pacer>>,
    /// One lock per destination object, so duplicate events handled at the same time
    /// by this process copy once (the second waits, then finds the copy done).
    pub locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Stamped as source bytes arrive and upload requests finish, so a relay busy with
    /// long copies counts as alive.
    pub progress: Health,
    /// A copy that moves no byte for this long is abandoned (`None`: never).
    pub stall_timeout: Option<Duration>,
}

/// One object to copy.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub src_bucket: String,
    pub src_key: String,
    pub dst_bucket: String,
    pub dst_name: String,
    /// `Some(codec)`: a data part stored with `codec` in S3, decoded and re-encoded
    /// with the relay's codec. `None`: copied byte for byte (schema, manifests).
    pub transcode_from: Option<Codec>,
    /// ETag from the event, if it had one.
    pub event_etag: Option<String>,
}

/// What happened to one object.
#[derive(Debug, Clone)]
pub enum CopyOutcome {
    Copied {
        provenance: Provenance,
        duration: Duration,
    },
    /// Already in GCS from the same source ETag.
    Skipped {
        provenance: Provenance,
    },
}

impl CopyOutcome {
    pub fn provenance(&self) -> &Provenance {
        match self {
            CopyOutcome::Copied { provenance, .. } | CopyOutcome::Skipped { provenance } => provenance,
        }
    }
}

impl Copier {
    /// Copies `req` unless GCS already holds it from the same source ETag.
    pub async fn copy(&self, req: &CopyRequest) -> Result<CopyOutcome, RelayError> {
        let key = format!("{}/{}", req.dst_bucket, req.dst_name);
        let lock = {
            let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _guard = lock.lock().await;
            let progress = Progress::new(self.progress.clone());
            match stall::watch(&progress, self.stall_timeout, self.copy_unlocked(req, &progress)).await {
                Ok(r) => r,
                Err(s) => Err(RelayError::Stalled {
                    bucket: req.src_bucket.clone(),
                    key: req.src_key.clone(),
                    dst: format!("gs://{}/{}", req.dst_bucket, req.dst_name),
                    idle_secs: s.idle.as_secs(),
                }),
            }
        };
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            m.remove(&key);
        }
        result
    }

    async fn copy_unlocked(&self, req: &CopyRequest, progress: &Progress) -> Result<CopyOutcome, RelayError> {
        if let Some(p) = self.already_copied(req, progress).await? {
            return Ok(CopyOutcome::Skipped { provenance: p });
        }
        let started = Instant::now();
        let opened = self.source.open(&req.src_bucket, &req.src_key).await;
        progress.moved();
        let opened = opened?;
        let provenance = self.stream(req, opened.etag, opened.body, progress).await?;
        Ok(CopyOutcome::Copied { provenance, duration: started.elapsed() })
    }

    async fn already_copied(&self, req: &CopyRequest, progress: &Progress) -> Result<Option<Provenance>, RelayError> {
        let found = self.gcs.get(&req.dst_bucket, &req.dst_name).await?;
        progress.moved();
        let Some(o) = found else {
            return Ok(None);
        };
        let Some(p) = Provenance::from_object(&o) else {
            return Ok(None);
        };
        if p.source_bucket != req.src_bucket || p.source_key != req.src_key {
            return Ok(None);
        }
        // Bytes changed behind the relay's back (metadata kept) are not a copy: redo it.
        if !gcs::intact(&o, &p) {
            return Ok(None);
        }
        if req.event_etag.as_deref() == Some(p.source_etag.as_str()) {
            return Ok(Some(p));
        }
        // The event's ETag differs (or is missing): compare with the object as it is now.
        let now = self.source.etag(&req.src_bucket, &req.src_key).await?;
        Ok((now.as_deref() == Some(p.source_etag.as_str())).then_some(p))
    }

    /// Runs the three stages over an already-open source body, stamping `progress`
    /// as bytes move.
    pub async fn stream(
        &self,
        req: &CopyRequest,
        source_etag: String,
        body: std::pin::Pin<Box<dyn tokio::io::AsyncBufRead + Send>>,
        progress: &Progress,
    ) -> Result<Provenance, RelayError> {
        let (codec, params) = match req.transcode_from {
            Some(_) => (self.encode.codec, self.encode),
            None => (Codec::None, EncodeParams { codec: Codec::None, level: 0, threads: 1 }),
        };
        let reader: Box<dyn AsyncRead + Send + Unpin> = match req.transcode_from.unwrap_or(Codec::None) {
            Codec::None => Box::new(body),
            Codec::Gzip => {
                let mut d = async_compression::tokio::bufread::GzipDecoder::new(body);
                d.multiple_members(true);
                Box::new(d)
            }
            Codec::Zstd => {
                let mut d = async_compression::tokio::bufread::ZstdDecoder::new(body);
                d.multiple_members(true);
                Box::new(d)
            }
            Codec::Bzip2 => {
                let mut d = async_compression::tokio::bufread::BzDecoder::new(body);
                d.multiple_members(true);
                Box::new(d)
            }
        };
        let compressed_source = req.transcode_from.is_some_and(|c| c != Codec::None);
        let (raw_tx, raw_rx) = mpsc::channel::<Bytes>(2);
        let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(4);
        let block = encode::block_size(params.codec);
        let (sb, sk) = (req.src_bucket.clone(), req.src_key.clone());
        let reader_task = tokio::spawn(read_source(reader, block, raw_tx, sb, sk, compressed_source, progress.clone()));
        // An abandoned copy (stalled, or its task aborted) must not leave the reader
        // blocked on a hung S3 connection.
        let _reader_guard = AbortOnDrop(reader_task.abort_handle());
        let encoder_task = tokio::task::spawn_blocking(move || encode::run_blocking(params, raw_rx, out_tx));

        let content_type = if req.transcode_from.is_some() { codec.content_type() } else { "application/json" };
        let mut up = Uploader::new(self, req, content_type, progress.clone());
        let mut failed: Option<RelayError> = None;
        while let Some(b) = out_rx.recv().await {
            if let Err(e) = up.push(b).await {
                failed = Some(e);
                break;
            }
        }
        drop(out_rx);
        // The source's verdict comes first: a truncated source must never be finalised.
        let read = reader_task.await.map_err(|e| RelayError::Encode { bucket: req.src_bucket.clone(), key: req.src_key.clone(), message: e.to_string() });
        let enc = encoder_task.await;
        let summary = match (failed, read) {
            (_, Err(e)) | (_, Ok(Err(e))) => Err(e),
            (Some(e), _) => Err(e),
            (None, Ok(Ok(s))) => match enc {
                Ok(Ok(())) => Ok(s),
                Ok(Err(e)) => Err(RelayError::Encode { bucket: req.src_bucket.clone(), key: req.src_key.clone(), message: e.to_string() }),
                Err(e) => Err(RelayError::Encode { bucket: req.src_bucket.clone(), key: req.src_key.clone(), message: e.to_string() }),
            },
        };
        let summary = match summary {
            Ok(s) => s,
            Err(e) => {
                up.cancel().await;
                return Err(e);
            }
        };
        let stored = up.offset + up.buf.len() as u64;
        let provenance = Provenance {
            source_bucket: req.src_bucket.clone(),
            source_key: req.src_key.clone(),
            source_etag,
            raw_bytes: summary.raw_bytes,
            stored_bytes: stored,
            items: summary.lines,
            raw_sha256: summary.sha256,
            codec: codec.name().to_string(),
            stored_crc32c: Some(up.crc),
        };
        up.finish(&provenance).await?;
        Ok(provenance)
    }
}

pub(crate) struct SourceSummary {
    raw_bytes: u64,
    lines: u64,
    sha256: String,
}

pub(crate) async fn read_source(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    block: usize,
    tx: mpsc::Sender<Bytes>,
    bucket: String,
    key: String,
    compressed: bool,
    progress: Progress,
) -> Result<SourceSummary, RelayError> {
    let mut sha = Sha256::new();
    let (mut raw, mut lines, mut last) = (0u64, 0u64, b'\n');
    loop {
        let mut buf = BytesMut::with_capacity(block);
        while buf.len() < block {
            let n = reader.read_buf(&mut buf).await.map_err(|e| {
                let corrupt = compressed && matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::Other);
                if corrupt {
                    RelayError::CorruptSource { bucket: bucket.clone(), key: key.clone(), message: e.to_string() }
                } else {
                    RelayError::S3 { bucket: bucket.clone(), key: key.clone(), message: format!("reading the body: {e}"), retryable: true }
                }
            })?;
            if n == 0 {
                break;
            }
            progress.moved();
        }
        if buf.is_empty() {
            break;
        }
        sha.update(&buf);
        raw += buf.len() as u64;
        lines += memchr::memchr_iter(b'\n', &buf).count() as u64;
        last = buf[buf.len() - 1];
        let full = buf.len() == block;
        if tx.send(buf.freeze()).await.is_err() {
            // The upload side stopped; its error is reported there.
            break;
        }
        if !full {
            break;
        }
    }
    if last != b'\n' {
        lines += 1;
    }
    Ok(SourceSummary { raw_bytes: raw, lines, sha256: hex::encode(sha.finalize()) })
}

/// Aborts a task when dropped (a no-op once it finished).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The upload stage: buffers encoded bytes into `chunk_size` requests of a resumable
/// session, started lazily so that small objects go in one request.
struct Uploader<'a> {
    copier: &'a Copier,
    bucket: String,
    name: String,
    content_type: &'static str,
    session: Option<Upload>,
    offset: u64,
    buf: BytesMut,
    /// CRC32C of every byte pushed so far (the whole object once the source ended).
    crc: Crc32c,
    progress: Progress,
}

/// `Ok` when GCS's CRC32C of the stored object (`reported`, as in the object resource)
/// is the one of the bytes sent.
fn check_stored(bucket: &str, key: &str, sent: Crc32c, reported: Option<&str>) -> Result<(), RelayError> {
    if reported.and_then(Crc32c::from_gcs) == Some(sent) {
        return Ok(());
    }
    Err(RelayError::StoredChecksumMismatch {
        bucket: bucket.into(),
        key: key.into(),
        sent: sent.to_gcs(),
        reported: reported.map_or_else(|| "none".to_string(), |r| format!("{r:?}")),
    })
}

impl<'a> Uploader<'a> {
    fn new(copier: &'a Copier, req: &CopyRequest, content_type: &'static str, progress: Progress) -> Self {
        Uploader {
            copier,
            bucket: req.dst_bucket.clone(),
            name: req.dst_name.clone(),
            content_type,
            session: None,
            offset: 0,
            buf: BytesMut::new(),
            crc: Crc32c::default(),
            progress,
        }
    }

    async fn push(&mut self, b: Bytes) -> Result<(), RelayError> {
        self.crc = self.crc.append(&b);
        self.buf.extend_from_slice(&b);
        let chunk = self.copier.chunk_size;
        // Keep at least one byte back so the final request always carries data.
        while self.buf.len() > chunk {
            if self.session.is_none() {
                let s = self.copier.gcs.start_upload(&self.bucket, &self.name, self.content_type).await?;
                self.progress.moved();
                self.session = Some(s);
            }
            let part = self.buf.split_to(chunk).freeze();
            let upto = self.offset + chunk as u64;
            throttle(self.copier.rate_limit.as_deref(), &self.progress, chunk as u64).await;
            let session = self.session.as_mut().ok_or_else(|| RelayError::Encode {
                bucket: self.bucket.clone(),
                key: self.name.clone(),
                message: "no upload session".into(),
            })?;
            session.put(self.offset, part, None, &self.progress).await?;
            self.offset = upto;
            self.progress.moved();
        }
        Ok(())
    }

    /// Compares GCS's CRC32C of the finished object with the bytes sent; on a
    /// difference deletes the object (this generation only, so a newer copy by another
    /// relay stays) and fails the copy, which is then retried.
    async fn confirm_stored(&self, o: &Object) -> Result<(), RelayError> {
        let Err(e) = check_stored(&self.bucket, &self.name, self.crc, o.crc32c.as_deref()) else { return Ok(()) };
        // A failed delete (or a newer generation, another relay's copy) changes nothing:
        // the completion check refuses an object whose GCS CRC32C differs from the
        // recorded one, and the retry overwrites it.
        let _ = self.copier.gcs.delete(&self.bucket, &self.name, Some(o.generation)).await;
        Err(e)
    }

    async fn cancel(self) {
        if let Some(s) = self.session {
            s.cancel().await;
        }
    }

    async fn finish(mut self, p: &Provenance) -> Result<(), RelayError> {
        let rest = self.buf.split().freeze();
        let total = self.offset + rest.len() as u64;
        throttle(self.copier.rate_limit.as_deref(), &self.progress, rest.len() as u64).await;
        let gcs = &self.copier.gcs;
        let Some(mut session) = self.session.take() else {
            let o = gcs.upload_small(&self.bucket, &self.name, rest.to_vec(), self.content_type, p.to_metadata()).await?;
            self.progress.moved();
            // The provenance went on with the bytes, so a mismatch must not stay behind.
            return self.confirm_stored(&o).await;
        };
        let obj = session.put(self.offset, rest, Some(total), &self.progress).await?.ok_or_else(|| RelayError::Gcs {
            bucket: self.bucket.clone(),
            key: self.name.clone(),
            message: format!("resumable upload did not complete at {total} bytes"),
            retryable: true,
        })?;
        self.progress.moved();
        // Checked before the provenance goes on: an object of the wrong bytes never counts.
        self.confirm_stored(&obj).await?;
        // The provenance goes on last: only then does the object count as relayed.
        match gcs.patch_metadata(&self.bucket, &self.name, obj.generation, p.to_metadata()).await? {
            Patched::Applied => Ok(()),
            Patched::Unconfirmed(why) => {
                let o = gcs.get(&self.bucket, &self.name).await?;
                match o.as_ref().and_then(Provenance::from_object) {
                    Some(got) if got.source_etag == p.source_etag && got.raw_bytes == p.raw_bytes => Ok(()),
                    _ => Err(RelayError::Gcs {
                        bucket: self.bucket.clone(),
                        key: self.name.clone(),
                        message: format!("metadata patch did not apply: {why}"),
                        retryable: true,
                    }),
                }
            }
        }
    }
}

/// Waits until a request of `bytes` fits the process's upload budget, telling the
/// stall watch the pause is planned.
async fn throttle(budget: Option<&crossdock_core::pace::Pacer>, progress: &Progress, bytes: u64) {
    if let Some(budget) = budget {
        let due = budget.reserve(bytes);
        progress.quiet_until(due);
        tokio::time::sleep_until(due).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_source_that_stops_sending_is_abandoned_one_stall_timeout_later() {
        use tokio::io::AsyncWriteExt;
        let (mut src, reader) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        // A byte a minute for five minutes, then a connection that stays open and silent.
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(60)).await;
                src.write_all(b"{}").await.expect("write");
            }
            std::future::pending::<()>().await;
            drop(src);
        });
        let progress = Progress::detached();
        let read = read_source(Box::new(reader), 1 << 20, tx, "src".into(), "k".into(), false, progress.clone());
        let start = tokio::time::Instant::now();
        let out = stall::watch(&progress, Some(Duration::from_secs(120)), read).await;
        assert!(matches!(out, Err(stall::Stalled { idle }) if idle == Duration::from_secs(120)), "{:?}", out.map(|_| ()));
        assert_eq!(start.elapsed(), Duration::from_secs(5 * 60 + 120));
    }

    #[test]
    fn stored_bytes_must_have_the_crc32c_of_the_bytes_sent() {
        let sent = Crc32c::default().append(b"compressed ").append(b"bytes");
        assert_eq!(sent, Crc32c::of(b"compressed bytes"));
        assert!(check_stored("b", "k", sent, Some(&sent.to_gcs())).is_ok());
        for reported in [Some(Crc32c::of(b"compressed bytez").to_gcs()), Some("garbage".into()), None] {
            let e = check_stored("bkt", "b/T/ts/data/seg-00000-part-00000.json.zst", sent, reported.as_deref()).expect_err("mismatch");
            assert!(matches!(e, RelayError::StoredChecksumMismatch { .. }), "{e:?}");
            assert!(e.is_retryable(), "a copy that GCS stored wrongly is tried again");
            assert_eq!(e.kind(), "stored_checksum_mismatch");
            let text = e.to_string();
            assert!(text.contains("gs://bkt/b/T/ts/data/seg-00000-part-00000.json.zst") && text.contains(&sent.to_gcs()), "{text}");
        }
    }
}
