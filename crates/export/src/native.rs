//! DynamoDB's own export to S3 as the export step: no read capacity is consumed, the
//! backup is read instead of the table.
//!
//! [`adopt`] turns a finished native export (`…/AWSDynamoDB/{export-id}/`:
//! `manifest-summary.json`, `manifest-files.json`, `data/*.json.gz`) into a crossdock
//! export directory: every data file is read once — its MD5 checked against
//! `manifest-files.json`, its items counted, its uncompressed size, SHA-256 and type
//! statistics computed — and only when all of them pass are `_schema.json`, the data
//! files (copied by S3, server side, as `data/seg-SSSSS-part-PPPPP.json.gz`) and the
//! segment manifests written, in that order, so the relay and its completeness rule see
//! an export like any other. [`export`] asks DynamoDB for the export first
//! (ExportTableToPointInTime), waits for it, then adopts it.

use crate::error::{ddb_error, invalid, s3_error, ExportError};
use crate::lease::{self, TableInfo};
use crate::observe::{self, ExportEvent, Observer};
use crate::s3::{get_json, list, put_json};
use crate::writer::json_len;
use base64::Engine as _;
use crossdock_core::codec::Codec;
use crossdock_core::item::{parse_line, CoreValues};
use crossdock_core::layout::{self, DumpFile, ExportId, Timestamp};
use crossdock_core::manifest::{PartEntry, SegmentManifest, TypeStats};
use crossdock_core::schema::TableSchema;
use crossdock_core::FORMAT_VERSION;
use futures::{StreamExt, TryStreamExt};
use md5::Digest as _;
use serde::Deserialize;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

/// Parts listed in one segment manifest of an adopted export: part numbers have five
/// digits, so a native export of more files is spread over several segments.
pub const PARTS_PER_SEGMENT: u32 = 10_000;

/// `manifest-summary.json`, as AWS documents it. Only what crossdock reads is named;
/// AWS adds fields over time, so unknown ones are accepted (unlike crossdock's own files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSummary {
    #[serde(default)]
    pub export_arn: Option<String>,
    #[serde(default)]
    pub table_arn: Option<String>,
    /// The point in time the export reflects (RFC 3339).
    #[serde(default)]
    pub export_time: Option<String>,
    /// Key of `manifest-files.json` in the export's bucket.
    #[serde(default)]
    pub manifest_files_s3_key: Option<String>,
    #[serde(default)]
    pub item_count: Option<u64>,
    /// `DYNAMODB_JSON` or `ION`.
    #[serde(default)]
    pub output_format: Option<String>,
    /// `FULL_EXPORT` or `INCREMENTAL_EXPORT`.
    #[serde(default)]
    pub export_type: Option<String>,
    /// The period an INCREMENTAL_EXPORT covers (RFC 3339).
    #[serde(default)]
    pub export_from_time: Option<String>,
    #[serde(default)]
    pub export_to_time: Option<String>,
}

/// One line of `manifest-files.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFile {
    /// Key of the data file in the export's bucket (the export's `S3Prefix` included).
    pub data_file_s3_key: String,
    #[serde(default)]
    pub etag: Option<String>,
    /// Standard base64 of the MD5 of the file's (compressed) bytes.
    #[serde(default)]
    pub md5_checksum: Option<String>,
    #[serde(default)]
    pub item_count: Option<u64>,
}

/// Parses `manifest-files.json` (JSON lines; blank lines skipped). The error is the
/// 1-based line number and why.
pub fn parse_manifest_files(text: &str) -> Result<Vec<ManifestFile>, String> {
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1))).collect()
}

/// What reading one data file found.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedFile {
    /// MD5 of the stored (gzip) bytes.
    pub md5: [u8; 16],
    pub stored_bytes: u64,
    pub items: u64,
    /// Size and SHA-256 (hex) of the uncompressed DynamoDB JSON lines.
    pub raw_bytes: u64,
    pub sha256: String,
    pub stats: TypeStats,
    /// The change records of an INCREMENTAL export's file (empty for a full export's).
    pub records: Vec<IncrementalRecord>,
}

/// One line of an INCREMENTAL export: the item's keys, its image at the end of the
/// export's period (`None`: deleted in it), and when it was last written.
#[derive(Debug, Clone, PartialEq)]
pub struct IncrementalRecord {
    pub keys: crossdock_core::Item,
    pub new_image: Option<crossdock_core::Item>,
    /// `Metadata.WriteTimestampMicros`.
    pub write_micros: Option<i64>,
}

/// Parses one INCREMENTAL export line:
/// `{"Metadata":{"WriteTimestampMicros":{"N":"…"}},"Keys":{…},"OldImage":{…},"NewImage":{…}}`
/// (`NewImage` absent for a deleted item).
pub fn parse_incremental_line(line: &str, line_no: u64) -> Result<IncrementalRecord, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON ({e})"))?;
    let image = |name: &str| -> Result<Option<crossdock_core::Item>, String> {
        match v.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(m @ serde_json::Value::Object(_)) => {
                parse_line(&serde_json::json!({ "Item": m }).to_string(), line_no).map(Some).map_err(|e| format!("{name}: {e}"))
            }
            Some(_) => Err(format!("{name} is not an object")),
        }
    };
    let keys = image("Keys")?.ok_or("no Keys")?;
    let new_image = image("NewImage")?;
    let write_micros = v.pointer("/Metadata/WriteTimestampMicros/N").and_then(|n| n.as_str()).and_then(|n| n.parse::<i64>().ok());
    Ok(IncrementalRecord { keys, new_image, write_micros })
}

impl ScannedFile {
    /// The MD5 as `manifest-files.json` writes it.
    pub fn md5_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.md5)
    }
    /// The MD5 as a single-part upload's ETag writes it.
    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5)
    }
}

/// Why a data file could not be read: the line (0 for the file itself) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub line: u64,
    pub why: String,
}

/// Reads one gzip data file fed in chunks as they arrive: MD5 over the stored bytes,
/// and, through the decoder, items, size, SHA-256 and type statistics of the lines.
pub struct FileScanner {
    md5: md5::Md5,
    stored: u64,
    decoder: flate2::write::MultiGzDecoder<Lines>,
}

impl std::fmt::Debug for FileScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileScanner").field("stored", &self.stored).finish()
    }
}

/// The decoder's output: lines parsed as they complete.
struct Lines {
    pending: Vec<u8>,
    line_no: u64,
    items: u64,
    raw: u64,
    sha: sha2::Sha256,
    stats: TypeStats,
    /// `Some` when the lines are an INCREMENTAL export's change records.
    records: Option<Vec<IncrementalRecord>>,
    error: Option<ScanError>,
}

impl Lines {
    fn line(&mut self, bytes: &[u8]) -> Result<(), ScanError> {
        self.line_no += 1;
        let text = std::str::from_utf8(bytes).map_err(|e| ScanError { line: self.line_no, why: format!("not UTF-8: {e}") })?;
        if text.trim().is_empty() {
            return Ok(());
        }
        if let Some(records) = &mut self.records {
            records.push(parse_incremental_line(text, self.line_no).map_err(|why| ScanError { line: self.line_no, why })?);
        } else {
            let item = parse_line(text, self.line_no).map_err(|e| ScanError { line: self.line_no, why: e.to_string() })?;
            self.stats.observe(&item, json_len::<CoreValues>);
        }
        self.items += 1;
        Ok(())
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        self.sha.update(buf);
        self.raw += buf.len() as u64;
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let r = if self.pending.is_empty() {
                self.line(&rest[..i])
            } else {
                self.pending.extend_from_slice(&rest[..i]);
                let line = std::mem::take(&mut self.pending);
                self.line(&line)
            };
            if let Err(e) = r {
                let message = e.why.clone();
                self.error = Some(e);
                return Err(std::io::Error::other(message));
            }
            rest = &rest[i + 1..];
        }
        self.pending.extend_from_slice(rest);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Default for FileScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl FileScanner {
    /// A full export's file: `{"Item":…}` lines, with type statistics.
    pub fn new() -> Self {
        Self::with_records(None)
    }

    /// An INCREMENTAL export's file: change records, kept.
    pub fn incremental() -> Self {
        Self::with_records(Some(Vec::new()))
    }

    fn with_records(records: Option<Vec<IncrementalRecord>>) -> Self {
        let lines = Lines { pending: Vec::new(), line_no: 0, items: 0, raw: 0, sha: sha2::Digest::new(), stats: TypeStats::default(), records, error: None };
        FileScanner { md5: md5::Md5::new(), stored: 0, decoder: flate2::write::MultiGzDecoder::new(lines) }
    }

    fn fail(&mut self, e: std::io::Error) -> ScanError {
        self.decoder.get_mut().error.take().unwrap_or_else(|| ScanError { line: 0, why: format!("not a gzip file: {e}") })
    }

    /// Feeds the next stored bytes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        self.md5.update(chunk);
        self.stored += chunk.len() as u64;
        self.decoder.write_all(chunk).map_err(|e| self.fail(e))
    }

    /// Ends the file: a last line without a newline still counts.
    pub fn finish(mut self) -> Result<ScannedFile, ScanError> {
        use sha2::Digest as _;
        if let Err(e) = self.decoder.try_finish() {
            return Err(self.fail(e));
        }
        let md5: [u8; 16] = self.md5.finalize().into();
        let mut lines = self.decoder.finish().map_err(|e| ScanError { line: 0, why: format!("not a gzip file: {e}") })?;
        if !lines.pending.is_empty() {
            let last = std::mem::take(&mut lines.pending);
            lines.line(&last)?;
        }
        Ok(ScannedFile {
            md5,
            stored_bytes: self.stored,
            items: lines.items,
            raw_bytes: lines.raw,
            sha256: hex::encode(lines.sha.finalize()),
            stats: lines.stats,
            records: lines.records.unwrap_or_default(),
        })
    }
}

/// Which check a data file passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Checked {
    /// `md5Checksum` of `manifest-files.json`.
    ManifestMd5,
    /// The object's ETag, which for a single-part upload is the hex MD5 of its bytes.
    Etag,
    /// Nothing to check against (no manifest, multipart ETag): read and counted only.
    Unverified,
}

impl Checked {
    pub fn as_str(self) -> &'static str {
        match self {
            Checked::ManifestMd5 => "manifest_md5",
            Checked::Etag => "etag",
            Checked::Unverified => "unverified",
        }
    }
}

/// Checks a scanned file against its manifest line (if any) and the ETag S3 served it
/// with. Errors name the key.
pub fn check_file(bucket: &str, key: &str, listed: Option<&ManifestFile>, etag: &str, got: &ScannedFile) -> Result<Checked, ExportError> {
    let mismatch = |expected: &str, actual: String, recorded_in| {
        observe::native_checksum_mismatch(bucket, key, expected, &actual);
        ExportError::ChecksumMismatch { bucket: bucket.into(), key: key.into(), expected: expected.into(), actual, recorded_in }
    };
    let checked = match listed.and_then(|l| l.md5_checksum.as_deref()) {
        Some(expected) => {
            if expected.trim() != got.md5_base64() {
                return Err(mismatch(expected, got.md5_base64(), "manifest-files.json"));
            }
            Checked::ManifestMd5
        }
        None => {
            let etag = etag.trim_matches('"');
            // A multipart upload's ETag (`…-N`) is not an MD5 of the bytes.
            if etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
                if !etag.eq_ignore_ascii_case(&got.md5_hex()) {
                    return Err(mismatch(etag, got.md5_hex(), "its ETag"));
                }
                Checked::Etag
            } else {
                Checked::Unverified
            }
        }
    };
    if let Some(expected) = listed.and_then(|l| l.item_count) {
        if expected != got.items {
            return Err(ExportError::Corrupt {
                bucket: bucket.into(),
                key: key.into(),
                what: "native export data file",
                why: format!("it holds {} items, manifest-files.json says {expected}", got.items),
            });
        }
    }
    Ok(checked)
}

/// Splits `s3://bucket/…/AWSDynamoDB/{export-id}/` into the bucket and the export's
/// directory (ending with `/`).
pub fn parse_native_url(url: &str) -> Result<(String, String), ExportError> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| invalid("--s3", format!("{url:?} is not an s3://bucket/…/AWSDynamoDB/<export id>/ URL")))?;
    let (bucket, dir) = rest.split_once('/').ok_or_else(|| invalid("--s3", format!("{url:?} names no directory in the bucket")))?;
    let dir = if dir.ends_with('/') { dir.to_string() } else { format!("{dir}/") };
    let segments: Vec<&str> = dir.trim_end_matches('/').split('/').collect();
    let shaped = segments.len() >= 2 && segments[segments.len() - 2] == layout::NATIVE_EXPORT_DIR && !segments[segments.len() - 1].is_empty();
    if bucket.is_empty() || !shaped {
        return Err(invalid("--s3", format!("{url:?} is not a native export's directory: expected s3://bucket/[prefix/]AWSDynamoDB/<export id>/")));
    }
    Ok((bucket.to_string(), dir))
}

/// Settings of an adoption.
#[derive(Debug, Clone)]
pub struct AdoptConfig {
    pub table: String,
    /// Bucket and prefix of crossdock's exports (the pipeline's source).
    pub bucket: String,
    pub prefix: String,
    pub batch: String,
    /// Timestamp of the export directory; `None`: the native export's `exportTime`, else now.
    pub timestamp: Option<Timestamp>,
    /// Where the native export is: its bucket and `…/AWSDynamoDB/{export-id}/`.
    pub source_bucket: String,
    pub source_dir: String,
    /// Data files read (and copied) at the same time.
    pub concurrency: usize,
}

impl AdoptConfig {
    pub fn validate(&self) -> Result<(), ExportError> {
        layout::validate_table(&self.table)?;
        layout::validate_segment("batch", &self.batch)?;
        layout::validate_prefix(&self.prefix)?;
        if self.bucket.is_empty() || self.source_bucket.is_empty() {
            return Err(invalid("bucket", "it is empty"));
        }
        if !layout::is_native_export_key(&format!("{}_started", self.source_dir)) {
            return Err(invalid("--s3", format!("{:?} is not a native export's directory (…/AWSDynamoDB/<export id>/)", self.source_dir)));
        }
        if self.concurrency == 0 {
            return Err(invalid("--concurrency", "must be at least 1"));
        }
        Ok(())
    }
}

/// What an adoption (or a native export) did (`--output json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdoptSummary {
    pub table: String,
    pub export: ExportId,
    /// `s3://bucket/prefix/batch/table/timestamp/`
    pub s3_prefix: String,
    /// `s3://bucket/…/AWSDynamoDB/{export-id}/`
    pub source: String,
    /// The native export's ARN (`export --method native`, or from its summary).
    pub export_arn: Option<String>,
    /// Whether `manifest-files.json` listed the data files (else they were listed).
    pub manifest_files: bool,
    /// Files per check passed (`manifest_md5`, `etag`, `unverified`).
    pub checks: std::collections::BTreeMap<&'static str, u64>,
    pub files: u64,
    pub items: u64,
    /// Uncompressed and stored (gzip) bytes of the data files.
    pub bytes: u64,
    pub stored_bytes: u64,
    pub total_segments: u32,
    /// Always 0: the data came from DynamoDB's backup, not the table.
    pub consumed_rcu: f64,
    /// Seconds waiting for DynamoDB's export (`export --method native`).
    pub export_wait_secs: f64,
    pub duration_secs: f64,
}

/// One data file found, checked, not written yet.
struct Found {
    key: String,
    etag: String,
    scanned: ScannedFile,
    checked: Checked,
}

async fn get_text(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<String>, ExportError> {
    let out = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => o,
        Err(aws_sdk_s3::error::SdkError::ServiceError(s)) if s.err().is_no_such_key() => return Ok(None),
        Err(e) => return Err(s3_error(bucket, key, "GetObject", &e)),
    };
    let bytes = out.body.collect().await.map_err(|e| ExportError::S3 { bucket: bucket.into(), key: key.into(), op: "GetObject", message: e.to_string() })?;
    String::from_utf8(bytes.to_vec()).map(Some).map_err(|e| ExportError::Corrupt {
        bucket: bucket.into(),
        key: key.into(),
        what: "native export manifest",
        why: e.to_string(),
    })
}

/// Reads one data file once and checks it.
async fn read_file(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: String,
    listed: Option<ManifestFile>,
    incremental: bool,
    observer: &dyn Observer,
) -> Result<Found, ExportError> {
    let out = s3.get_object().bucket(bucket).key(&key).send().await.map_err(|e| s3_error(bucket, &key, "GetObject", &e))?;
    let etag = out.e_tag().unwrap_or_default().to_string();
    let mut body = out.body;
    let mut scanner = if incremental { FileScanner::incremental() } else { FileScanner::new() };
    let corrupt = |e: ScanError| ExportError::Corrupt {
        bucket: bucket.into(),
        key: key.clone(),
        what: "native export data file",
        why: if e.line == 0 { e.why } else { format!("line {}: {}", e.line, e.why) },
    };
    while let Some(chunk) =
        body.try_next().await.map_err(|e| ExportError::S3 { bucket: bucket.into(), key: key.clone(), op: "GetObject", message: e.to_string() })?
    {
        scanner.push(&chunk).map_err(corrupt)?;
    }
    let scanned = scanner.finish().map_err(corrupt)?;
    let checked = check_file(bucket, &key, listed.as_ref(), &etag, &scanned)?;
    observe::native_file_checked(bucket, &key, scanned.items, scanned.raw_bytes, checked.as_str());
    observer.event(&ExportEvent::NativeFileChecked { key: key.clone(), items: scanned.items, bytes: scanned.raw_bytes });
    Ok(Found { key, etag, scanned, checked })
}

/// The data files of the export: `manifest-files.json`, or (moto writes none) a listing
/// of `data/`.
async fn data_files(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    dir: &str,
    summary: &ManifestSummary,
) -> Result<(Vec<(String, Option<ManifestFile>)>, bool), ExportError> {
    let manifest_key = summary.manifest_files_s3_key.clone().unwrap_or_else(|| format!("{dir}manifest-files.json"));
    let files: Vec<(String, Option<ManifestFile>)> = match get_text(s3, bucket, &manifest_key).await? {
        Some(text) => {
            let listed = parse_manifest_files(&text).map_err(|why| ExportError::Corrupt {
                bucket: bucket.into(),
                key: manifest_key.clone(),
                what: "manifest-files.json",
                why,
            })?;
            for f in &listed {
                if !f.data_file_s3_key.starts_with(dir) {
                    return Err(ExportError::Corrupt {
                        bucket: bucket.into(),
                        key: manifest_key.clone(),
                        what: "manifest-files.json",
                        why: format!("it lists {:?}, outside the export's directory {dir}", f.data_file_s3_key),
                    });
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(dup) = listed.iter().find(|f| !seen.insert(f.data_file_s3_key.as_str())) {
                return Err(ExportError::Corrupt {
                    bucket: bucket.into(),
                    key: manifest_key.clone(),
                    what: "manifest-files.json",
                    why: format!("it lists {:?} twice", dup.data_file_s3_key),
                });
            }
            listed.into_iter().map(|f| (f.data_file_s3_key.clone(), Some(f))).collect()
        }
        None => {
            let data = format!("{dir}data/");
            let (mut keys, _) = list(s3, bucket, &data, None).await?;
            keys.sort();
            observe::native_without_manifest(bucket, dir, keys.len());
            return Ok((keys.into_iter().map(|k| (k, None)).collect(), false));
        }
    };
    Ok((files, true))
}

/// The part name of the `index`-th data file (in manifest order).
fn part_of(index: usize) -> DumpFile {
    let i = index as u32;
    DumpFile::Part { segment: i / PARTS_PER_SEGMENT, part: i % PARTS_PER_SEGMENT, codec: Codec::Gzip }
}

fn total_segments(files: usize) -> u32 {
    (files as u32).div_ceil(PARTS_PER_SEGMENT).max(1)
}

/// The segment manifests describing `found` (part `i` is the `i`-th file).
fn manifests(table: &str, found: &[Found]) -> Vec<SegmentManifest> {
    let total = total_segments(found.len());
    let mut out: Vec<SegmentManifest> = (0..total)
        .map(|segment| SegmentManifest {
            format_version: FORMAT_VERSION,
            table: table.into(),
            segment,
            total_segments: total,
            parts: Vec::new(),
            items: 0,
            bytes: 0,
            consumed_rcu: 0.0,
            type_stats: TypeStats::default(),
        })
        .collect();
    for (i, f) in found.iter().enumerate() {
        let DumpFile::Part { segment, .. } = part_of(i) else { continue };
        let m = &mut out[segment as usize];
        m.parts.push(PartEntry { name: part_of(i).s3_name(), items: f.scanned.items, bytes: f.scanned.raw_bytes, sha256: f.scanned.sha256.clone() });
        m.items += f.scanned.items;
        m.bytes += f.scanned.raw_bytes;
        m.type_stats.merge(&f.scanned.stats);
    }
    out
}

fn parse_time(t: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
}

/// Adopts a finished native export into `{prefix}{batch}/{table}/{timestamp}/`. Nothing
/// is written unless every data file passes its checks.
pub async fn adopt(s3: &aws_sdk_s3::Client, ddb: &aws_sdk_dynamodb::Client, cfg: &AdoptConfig, observer: &dyn Observer) -> Result<AdoptSummary, ExportError> {
    let started = std::time::Instant::now();
    cfg.validate()?;
    crate::run::check_bucket(s3, &cfg.bucket).await?;
    let info = lease::describe(ddb, &cfg.table).await?;
    let (bucket, dir) = (&cfg.source_bucket, &cfg.source_dir);
    let summary_key = format!("{dir}manifest-summary.json");
    let summary: ManifestSummary = get_json(s3, bucket, &summary_key, "manifest-summary.json").await?.unwrap_or_default();
    if let Some(format) = summary.output_format.as_deref().filter(|f| *f != "DYNAMODB_JSON") {
        return Err(invalid("--s3", format!("s3://{bucket}/{summary_key}: output format {format}; crossdock reads DYNAMODB_JSON exports only")));
    }
    if let Some(kind) = summary.export_type.as_deref().filter(|k| *k != "FULL_EXPORT") {
        return Err(invalid("--s3", format!("s3://{bucket}/{summary_key}: a {kind} holds changes, not the table; adopt a FULL_EXPORT")));
    }

    let (files, manifest_files) = data_files(s3, bucket, dir, &summary).await?;
    // Every file is read and checked before anything is written.
    let found: Vec<Found> =
        futures::stream::iter(files).map(|(key, listed)| read_file(s3, bucket, key, listed, false, observer)).buffered(cfg.concurrency).try_collect().await?;
    if let Some(expected) = summary.item_count {
        let counted: u64 = found.iter().map(|f| f.scanned.items).sum();
        if counted != expected {
            return Err(ExportError::Corrupt {
                bucket: bucket.clone(),
                key: summary_key,
                what: "native export",
                why: format!("its data files hold {counted} items, manifest-summary.json says {expected}"),
            });
        }
    }

    let timestamp = match &cfg.timestamp {
        Some(t) => t.clone(),
        None => summary.export_time.as_deref().and_then(parse_time).map_or_else(Timestamp::now, Timestamp::from_datetime),
    };
    let export = ExportId::new(&cfg.batch, &cfg.table, timestamp)?;
    let total = total_segments(found.len());
    write_export(s3, ddb, cfg, &info, &export, &found, total, observer).await?;

    let mut checks = std::collections::BTreeMap::new();
    for f in &found {
        *checks.entry(f.checked.as_str()).or_insert(0u64) += 1;
    }
    Ok(AdoptSummary {
        table: cfg.table.clone(),
        s3_prefix: format!("s3://{}/{}", cfg.bucket, export.s3_dir(&cfg.prefix)),
        export,
        source: format!("s3://{bucket}/{dir}"),
        export_arn: summary.export_arn,
        manifest_files,
        checks,
        files: found.len() as u64,
        items: found.iter().map(|f| f.scanned.items).sum(),
        bytes: found.iter().map(|f| f.scanned.raw_bytes).sum(),
        stored_bytes: found.iter().map(|f| f.scanned.stored_bytes).sum(),
        total_segments: total,
        consumed_rcu: 0.0,
        export_wait_secs: 0.0,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// Schema, parts (server-side copies, each only if the source is still the object that
/// was checked), then manifests: the order the relay's completeness rule expects.
#[allow(clippy::too_many_arguments)]
async fn write_export(
    s3: &aws_sdk_s3::Client,
    ddb: &aws_sdk_dynamodb::Client,
    cfg: &AdoptConfig,
    info: &TableInfo,
    export: &ExportId,
    found: &[Found],
    total: u32,
    observer: &dyn Observer,
) -> Result<(), ExportError> {
    let schema_key = export.s3_key(&cfg.prefix, &DumpFile::Schema);
    let manifests_dir = export.s3_manifests_dir(&cfg.prefix);
    let (written, _) = list(s3, &cfg.bucket, &manifests_dir, None).await?;
    if !written.is_empty() {
        return Err(invalid("timestamp", format!("s3://{}/{} already has manifests: this export was adopted already", cfg.bucket, manifests_dir)));
    }
    // A rerun after a failed copy continues into the same directory: parts are named by
    // the files' order in the manifest, so each lands where it did before.
    if let Some(existing) = get_json::<TableSchema>(s3, &cfg.bucket, &schema_key, "table schema").await? {
        if existing.total_segments != total {
            return Err(invalid("timestamp", format!("s3://{}/{schema_key} exists with {} segments, not {total}", cfg.bucket, existing.total_segments)));
        }
    } else {
        let mut schema = crate::run::build_schema(info, total);
        schema.stream = crate::run::table_stream(ddb, info).await;
        put_json(s3, &cfg.bucket, &schema_key, &schema).await?;
    }
    futures::stream::iter(found.iter().enumerate())
        .map(|(i, f)| async move {
            let part = part_of(i);
            let dst = export.s3_key(&cfg.prefix, &part);
            let source = format!("{}/{}", cfg.source_bucket, percent_encode_key(&f.key));
            s3.copy_object()
                .bucket(&cfg.bucket)
                .key(&dst)
                .copy_source(source)
                .copy_source_if_match(f.etag.clone())
                .send()
                .await
                .map_err(|e| s3_error(&cfg.bucket, &dst, "CopyObject", &e))?;
            observe::native_file_copied(&cfg.bucket, &f.key, &dst);
            observer.event(&ExportEvent::NativeFileAdopted { key: f.key.clone(), part: part.s3_name() });
            Ok::<_, ExportError>(())
        })
        .buffer_unordered(cfg.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    for m in manifests(&cfg.table, found) {
        let key = export.s3_key(&cfg.prefix, &DumpFile::Manifest { segment: m.segment, total: m.total_segments });
        put_json(s3, &cfg.bucket, &key, &m).await?;
    }
    Ok(())
}

/// `x-amz-copy-source` takes the key URL-encoded (`/` kept).
fn percent_encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Settings of `export --method native`.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    pub table: String,
    pub bucket: String,
    pub prefix: String,
    pub batch: String,
    /// Export directory timestamp; `None`: `export_time`, else now.
    pub timestamp: Option<Timestamp>,
    /// The point in time to export (`None`: now).
    pub export_time: Option<time::OffsetDateTime>,
    /// DescribeExport every this long while the export runs.
    pub poll_interval: Duration,
    /// Give up waiting after this long (the export keeps running in AWS).
    pub wait_timeout: Duration,
    pub concurrency: usize,
}

/// Where DynamoDB put the export: `ExportManifest` (the key of `manifest-summary.json`)
/// when given; else `{S3Prefix}/AWSDynamoDB/{id from the ARN}/`; else, when the prefix
/// holds exactly one export directory (moto names it by another id), that one.
async fn native_dir(s3: &aws_sdk_s3::Client, bucket: &str, s3_prefix: &str, arn: &str, manifest: Option<&str>) -> Result<String, ExportError> {
    if let Some(m) = manifest.filter(|m| !m.is_empty()) {
        if let Some((dir, _)) = m.rsplit_once('/') {
            return Ok(format!("{dir}/"));
        }
    }
    let root = format!("{s3_prefix}/{}/", layout::NATIVE_EXPORT_DIR);
    let id = arn.rsplit('/').next().unwrap_or_default();
    let by_arn = format!("{root}{id}/");
    let (keys, _) = list(s3, bucket, &by_arn, None).await?;
    if !keys.is_empty() {
        return Ok(by_arn);
    }
    let (_, dirs) = list(s3, bucket, &root, Some("/")).await?;
    match dirs.as_slice() {
        [one] => {
            tracing::info!(bucket, dir = %one, arn, "the export's directory is not named by its ARN; using the only one under its prefix");
            Ok(one.clone())
        }
        _ => Err(ExportError::Corrupt {
            bucket: bucket.into(),
            key: root,
            what: "native export location",
            why: format!("{} export directories and none named {id}: cannot tell which one is export {arn}", dirs.len()),
        }),
    }
}

/// `export --method native`: ExportTableToPointInTime into the bucket, wait for it
/// (DescribeExport every `poll_interval`), then [`adopt`] what it wrote. The shutdown
/// future stops the wait (the export goes on in AWS and can be adopted later).
pub async fn export(
    s3: &aws_sdk_s3::Client,
    ddb: &aws_sdk_dynamodb::Client,
    cfg: &NativeConfig,
    observer: &dyn Observer,
    shutdown: impl Future<Output = ()>,
) -> Result<AdoptSummary, ExportError> {
    use aws_sdk_dynamodb::types::{ExportFormat, ExportStatus, ExportType};
    let started = std::time::Instant::now();
    layout::validate_table(&cfg.table)?;
    layout::validate_segment("batch", &cfg.batch)?;
    layout::validate_prefix(&cfg.prefix)?;
    crate::run::check_bucket(s3, &cfg.bucket).await?;
    let info = lease::describe(ddb, &cfg.table).await?;
    let table_arn = info.description.table_arn().unwrap_or_default().to_string();
    let timestamp = match (&cfg.timestamp, cfg.export_time) {
        (Some(t), _) => t.clone(),
        (None, Some(at)) => Timestamp::from_datetime(at),
        (None, None) => Timestamp::now(),
    };
    let export_id = ExportId::new(&cfg.batch, &cfg.table, timestamp.clone())?;
    let schema_key = export_id.s3_key(&cfg.prefix, &DumpFile::Schema);
    if get_json::<TableSchema>(s3, &cfg.bucket, &schema_key, "table schema").await?.is_some() {
        return Err(invalid("timestamp", format!("s3://{}/{schema_key} already exists", cfg.bucket)));
    }
    let s3_prefix = layout::native_export_prefix(&cfg.prefix, &export_id);
    let out = ddb
        .export_table_to_point_in_time()
        .table_arn(&table_arn)
        .s3_bucket(&cfg.bucket)
        .s3_prefix(&s3_prefix)
        .export_format(ExportFormat::DynamodbJson)
        .export_type(ExportType::FullExport)
        .set_export_time(cfg.export_time.map(|t| aws_sdk_dynamodb::primitives::DateTime::from_secs(t.unix_timestamp())))
        .send()
        .await
        .map_err(|e| ddb_error(&cfg.table, "ExportTableToPointInTime", &e))?;
    let arn = out.export_description().and_then(|d| d.export_arn()).unwrap_or_default().to_string();
    let wait = async {
        loop {
            let d = ddb.describe_export().export_arn(&arn).send().await.map_err(|e| ddb_error(&cfg.table, "DescribeExport", &e))?;
            let d = d.export_description.unwrap_or_else(|| aws_sdk_dynamodb::types::ExportDescription::builder().build());
            let status = d.export_status().map_or("UNKNOWN", |s| s.as_str()).to_string();
            let elapsed = started.elapsed().as_secs();
            observe::native_export_status(&cfg.table, &arn, &status, elapsed);
            observer.event(&ExportEvent::NativeExportStatus { arn: arn.clone(), status: status.clone(), elapsed_secs: elapsed });
            match d.export_status() {
                Some(ExportStatus::Completed) => return Ok(d.export_manifest().map(str::to_string)),
                Some(ExportStatus::Failed) => {
                    return Err(ExportError::NativeExportFailed {
                        table: cfg.table.clone(),
                        arn: arn.clone(),
                        status,
                        code: d.failure_code().unwrap_or("-").to_string(),
                        message: d.failure_message().unwrap_or("-").to_string(),
                    })
                }
                _ => {}
            }
            if started.elapsed() >= cfg.wait_timeout {
                return Err(pending(cfg, &arn, &status, &s3_prefix, started.elapsed().as_secs()));
            }
            tokio::time::sleep(cfg.poll_interval).await;
        }
    };
    let manifest = tokio::select! {
        r = wait => r?,
        () = shutdown => return Err(pending(cfg, &arn, "IN_PROGRESS (wait interrupted)", &s3_prefix, started.elapsed().as_secs())),
    };
    let waited = started.elapsed().as_secs_f64();
    let dir = native_dir(s3, &cfg.bucket, &s3_prefix, &arn, manifest.as_deref()).await?;
    let adopt_cfg = AdoptConfig {
        table: cfg.table.clone(),
        bucket: cfg.bucket.clone(),
        prefix: cfg.prefix.clone(),
        batch: cfg.batch.clone(),
        timestamp: Some(timestamp),
        source_bucket: cfg.bucket.clone(),
        source_dir: dir,
        concurrency: cfg.concurrency,
    };
    let mut summary = adopt(s3, ddb, &adopt_cfg, observer).await?;
    summary.export_arn = Some(arn);
    summary.export_wait_secs = waited;
    summary.duration_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// An INCREMENTAL export read in full, every data file checked as in [`adopt`].
#[derive(Debug, Clone, PartialEq)]
pub struct IncrementalExport {
    /// `s3://bucket/…/AWSDynamoDB/{export-id}/`
    pub source: String,
    /// The period it covers, Unix milliseconds.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Its records, data file after data file in manifest order.
    pub records: Vec<IncrementalRecord>,
}

/// Reads an INCREMENTAL export (`s3://bucket/…/AWSDynamoDB/{export-id}/`): its summary
/// (which must say INCREMENTAL_EXPORT and give its period), then every data file once,
/// checked against `manifest-files.json` like a full export's.
pub async fn read_incremental(s3: &aws_sdk_s3::Client, url: &str) -> Result<IncrementalExport, ExportError> {
    let (bucket, dir) = parse_native_url(url)?;
    let summary_key = format!("{dir}manifest-summary.json");
    let summary: ManifestSummary = get_json(s3, &bucket, &summary_key, "manifest-summary.json").await?.ok_or_else(|| ExportError::Corrupt {
        bucket: bucket.clone(),
        key: summary_key.clone(),
        what: "incremental export",
        why: "it does not exist".into(),
    })?;
    let corrupt = |why: String| ExportError::Corrupt { bucket: bucket.clone(), key: summary_key.clone(), what: "incremental export", why };
    if summary.export_type.as_deref() != Some("INCREMENTAL_EXPORT") || summary.output_format.as_deref().is_some_and(|f| f != "DYNAMODB_JSON") {
        return Err(corrupt(format!("a DYNAMODB_JSON INCREMENTAL_EXPORT is needed, this is {:?} {:?}", summary.output_format, summary.export_type)));
    }
    let ms = |t: &Option<String>, what: &str| {
        t.as_deref().and_then(parse_time).map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64).ok_or_else(|| corrupt(format!("no valid {what}")))
    };
    let (from_ms, to_ms) = (ms(&summary.export_from_time, "exportFromTime")?, ms(&summary.export_to_time, "exportToTime")?);
    let (files, _) = data_files(s3, &bucket, &dir, &summary).await?;
    let found: Vec<Found> =
        futures::stream::iter(files).map(|(key, listed)| read_file(s3, &bucket, key, listed, true, &crate::NoObserver)).buffered(4).try_collect().await?;
    Ok(IncrementalExport { source: format!("s3://{bucket}/{dir}"), from_ms, to_ms, records: found.into_iter().flat_map(|f| f.scanned.records).collect() })
}

fn pending(cfg: &NativeConfig, arn: &str, status: &str, s3_prefix: &str, secs: u64) -> ExportError {
    ExportError::NativeExportPending {
        table: cfg.table.clone(),
        arn: arn.into(),
        status: status.into(),
        secs,
        dest: format!("s3://{}/{s3_prefix}", cfg.bucket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossdock_core::item::TypeTag;

    fn gzip(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).expect("in memory");
        e.finish().expect("in memory")
    }

    fn scan(bytes: &[u8], chunk: usize) -> Result<ScannedFile, ScanError> {
        let mut s = FileScanner::new();
        for c in bytes.chunks(chunk) {
            s.push(c)?;
        }
        s.finish()
    }

    const LINES: &str = concat!(
        r#"{"Item":{"pk":{"S":"user#1"},"n":{"N":"1.25"},"tags":{"SS":["a","b"]}}}"#,
        "\n",
        r#"{"Item":{"pk":{"S":"user#2"},"n":{"N":"12345"}}}"#,
        "\n",
        r#"{"Item":{"pk":{"S":"user#3"},"z":{"NULL":true}}}"#,
        "\n"
    );

    #[test]
    fn manifest_files_lines_parse_as_aws_writes_them() {
        let text = concat!(
            r#"{"itemCount":8,"md5Checksum":"sQMSpEILNgoQmarvDFonGQ==","etag":"af83d6f217c19b8b0fff8023d8ca4716-1","dataFileS3Key":"p/AWSDynamoDB/01693685827463-2d8752fd/data/asdl123dasas.json.gz"}"#,
            "\n\n",
            r#"{"itemCount":0,"md5Checksum":"1B2M2Y8AsgTpgAmY7PhCfg==","etag":"d41d8cd98f00b204e9800998ecf8427e","dataFileS3Key":"p/AWSDynamoDB/01693685827463-2d8752fd/data/empty.json.gz","newField":1}"#,
            "\n"
        );
        let files = parse_manifest_files(text).expect("parses");
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].item_count, Some(8));
        assert_eq!(files[0].md5_checksum.as_deref(), Some("sQMSpEILNgoQmarvDFonGQ=="));
        assert_eq!(files[1].data_file_s3_key, "p/AWSDynamoDB/01693685827463-2d8752fd/data/empty.json.gz");
        let bad = parse_manifest_files("{\"itemCount\":1}\n").expect_err("no key");
        assert!(bad.starts_with("line 1:"), "{bad}");
        let summary: ManifestSummary = serde_json::from_str(
            r#"{"version":"2020-06-30","exportArn":"arn:aws:dynamodb:us-east-1:123456789012:table/T/export/01693685827463-2d8752fd","startTime":"2023-09-02T20:03:47.463Z","endTime":"2023-09-02T20:08:55.011Z","tableArn":"arn:aws:dynamodb:us-east-1:123456789012:table/T","tableId":"x","exportTime":"2023-09-02T20:03:47.463Z","s3Bucket":"b","s3Prefix":"p","s3SseAlgorithm":"AES256","s3SseKmsKeyId":null,"manifestFilesS3Key":"p/AWSDynamoDB/01693685827463-2d8752fd/manifest-files.json","billedSizeBytes":0,"itemCount":8,"outputFormat":"DYNAMODB_JSON","exportType":"FULL_EXPORT"}"#,
        )
        .expect("summary parses");
        assert_eq!(summary.item_count, Some(8));
        assert_eq!(
            parse_time(summary.export_time.as_deref().expect("time")).map(|t| Timestamp::from_datetime(t).to_string()),
            Some("2023-09-02T20-03-47Z".into())
        );
    }

    #[test]
    fn a_file_is_read_once_for_checksum_counts_size_and_statistics_whatever_the_chunking() {
        let gz = gzip(LINES);
        let whole = scan(&gz, gz.len()).expect("reads");
        for chunk in [1, 7, 64] {
            assert_eq!(scan(&gz, chunk).expect("reads"), whole, "chunk {chunk}");
        }
        assert_eq!(whole.items, 3);
        assert_eq!(whole.raw_bytes, LINES.len() as u64);
        assert_eq!(whole.stored_bytes, gz.len() as u64);
        use sha2::Digest as _;
        assert_eq!(whole.sha256, hex::encode(sha2::Sha256::digest(LINES.as_bytes())));
        assert_eq!(whole.md5_hex(), hex::encode(md5::Md5::digest(&gz)));
        let n = &whole.stats.0["n"];
        assert_eq!((n.types[&TypeTag::N], n.fractional_numbers, n.max_integer_digits), (2, 1, 5));
        assert_eq!(whole.stats.0["pk"].types[&TypeTag::S], 3);
        // A last line without a newline still counts; an empty file is no item.
        assert_eq!(scan(&gzip(LINES.trim_end()), 5).expect("reads").items, 3);
        assert_eq!(scan(&gzip(""), 5).expect("reads").items, 0);
    }

    #[test]
    fn bad_bytes_are_errors_naming_the_line() {
        let e = scan(&gzip("{\"Item\":{\"pk\":{\"S\":\"a\"}}}\n{\"Item\":{\"pk\":{\"Q\":\"a\"}}}\n"), 4).expect_err("bad tag");
        assert_eq!(e.line, 2, "{e:?}");
        let e = scan(b"not gzip at all", 4).expect_err("not gzip");
        assert_eq!(e.line, 0, "{e:?}");
        let gz = gzip(LINES);
        assert!(scan(&gz[..gz.len() - 9], 8).is_err(), "a truncated file is refused");
    }

    #[test]
    fn checksums_are_checked_against_the_manifest_then_a_plain_etag() {
        let gz = gzip(LINES);
        let got = scan(&gz, 16).expect("reads");
        let listed = |md5: &str, items| ManifestFile {
            data_file_s3_key: "d/AWSDynamoDB/x/data/a.json.gz".into(),
            etag: None,
            md5_checksum: Some(md5.into()),
            item_count: Some(items),
        };
        assert_eq!(check_file("b", "k", Some(&listed(&got.md5_base64(), 3)), "\"x-2\"", &got).expect("matches"), Checked::ManifestMd5);
        let e = check_file("b", "d/k.json.gz", Some(&listed("sQMSpEILNgoQmarvDFonGQ==", 3)), "", &got).expect_err("differs");
        assert!(matches!(&e, ExportError::ChecksumMismatch { key, .. } if key == "d/k.json.gz"), "{e}");
        assert!(e.to_string().contains("s3://b/d/k.json.gz") && e.to_string().contains("nothing was written"), "{e}");
        let e = check_file("b", "k", Some(&listed(&got.md5_base64(), 4)), "", &got).expect_err("count differs");
        assert!(e.to_string().contains("3 items") && e.to_string().contains("says 4"), "{e}");
        // Without a manifest: a single-part ETag is the MD5; a multipart one checks nothing.
        assert_eq!(check_file("b", "k", None, &format!("\"{}\"", got.md5_hex()), &got).expect("etag"), Checked::Etag);
        assert!(matches!(check_file("b", "k", None, "\"0123456789abcdef0123456789abcdef\"", &got), Err(ExportError::ChecksumMismatch { .. })));
        assert_eq!(check_file("b", "k", None, "\"af83d6f217c19b8b0fff8023d8ca4716-3\"", &got).expect("multipart"), Checked::Unverified);
    }

    #[test]
    fn files_map_to_parts_and_segment_manifests_in_manifest_order() {
        let file = |items: u64| Found {
            key: String::new(),
            etag: String::new(),
            scanned: ScannedFile {
                md5: [0; 16],
                stored_bytes: 1,
                items,
                raw_bytes: items * 10,
                sha256: "ab".repeat(32),
                stats: TypeStats::default(),
                records: Vec::new(),
            },
            checked: Checked::ManifestMd5,
        };
        let found: Vec<Found> = (0..3).map(file).collect();
        let ms = manifests("Orders", &found);
        assert_eq!(ms.len(), 1);
        assert_eq!(
            ms[0].parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["data/seg-00000-part-00000.json.gz", "data/seg-00000-part-00001.json.gz", "data/seg-00000-part-00002.json.gz"]
        );
        assert_eq!((ms[0].items, ms[0].bytes, ms[0].total_segments, ms[0].consumed_rcu), (3, 30, 1, 0.0));
        // Every name parses back as a gzip part, which the relay re-encodes.
        assert!(ms[0].parts.iter().all(|p| matches!(DumpFile::parse(&p.name), Some(DumpFile::Part { codec: Codec::Gzip, .. }))));
        // An empty export is one empty segment; a large one spills into more segments.
        assert_eq!(manifests("Orders", &[]).len(), 1);
        assert_eq!(total_segments(PARTS_PER_SEGMENT as usize + 1), 2);
        assert_eq!(part_of(PARTS_PER_SEGMENT as usize + 1), DumpFile::Part { segment: 1, part: 1, codec: Codec::Gzip });
    }

    #[test]
    fn incremental_lines_are_keys_new_images_and_write_times() {
        let upsert = r#"{"Metadata":{"WriteTimestampMicros":{"N":"1680109764000000"}},"Keys":{"pk":{"S":"a"}},"OldImage":{"pk":{"S":"a"},"n":{"N":"1"}},"NewImage":{"pk":{"S":"a"},"n":{"N":"2"}}}"#;
        let r = parse_incremental_line(upsert, 1).expect("parses");
        assert_eq!((r.write_micros, r.keys.len()), (Some(1_680_109_764_000_000), 1));
        assert_eq!(r.new_image.as_ref().map(|i| i["n"].clone()), Some(crossdock_core::AttributeValue::N("2".into())));
        let delete = r#"{"Metadata":{"WriteTimestampMicros":{"N":"1680109765000000"}},"Keys":{"pk":{"S":"b"}},"OldImage":{"pk":{"S":"b"}}}"#;
        assert_eq!(parse_incremental_line(delete, 2).expect("parses").new_image, None);
        assert!(parse_incremental_line(r#"{"NewImage":{"pk":{"S":"b"}}}"#, 3).is_err(), "keys are required");
        assert!(parse_incremental_line(r#"{"Keys":{"pk":{"Q":"b"}}}"#, 3).is_err());
        // Through the scanner, as a data file is read.
        let gz = gzip(&format!("{upsert}\n{delete}\n"));
        let mut s = FileScanner::incremental();
        s.push(&gz).expect("reads");
        let f = s.finish().expect("reads");
        assert_eq!((f.items, f.records.len()), (2, 2));
    }

    #[test]
    fn native_urls_must_name_an_export_directory() {
        assert_eq!(
            parse_native_url("s3://b/exports/AWSDynamoDB/01693685827463-2d8752fd").expect("ok"),
            ("b".into(), "exports/AWSDynamoDB/01693685827463-2d8752fd/".into())
        );
        assert_eq!(parse_native_url("s3://b/AWSDynamoDB/x/").expect("ok").1, "AWSDynamoDB/x/");
        for bad in ["b/AWSDynamoDB/x/", "s3://b/exports/", "s3://b/AWSDynamoDB/", "s3:///AWSDynamoDB/x/", "s3://b"] {
            assert!(parse_native_url(bad).is_err(), "{bad}");
        }
        assert_eq!(percent_encode_key("a b/c+d.json.gz"), "a%20b/c%2Bd.json.gz");
    }
}
