//! What the loader records in GCS next to the export, so a restart skips finished
//! files and nothing is half-written without a record of it:
//!
//! - `_progress/seg-SSSSS-part-PPPPP.json` ([`FileProgress`]) after each file: `done`
//!   (skipped on rerun into the same destination) or `failed` with the reason;
//! - `_rejects/seg-SSSSS-part-PPPPP.jsonl` ([`Reject`] lines) before that record,
//!   when some rows of the file could not be converted;
//! - `_LOADED` ([`LoadedRecord`]) when the whole load has finished and been counted.
//!
//! A forced load removes `_LOADED` and the records that would let a run skip a file
//! before it writes anything, so a forced load that does not finish leaves nothing
//! claiming the old outcome.

use crate::error::LoadError;
use crate::marker::Marker;
use crossdock_core::layout::DumpFile;
use crossdock_core::marker::{LoadedRecord, MarkerFile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Outcome of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Done,
    Failed,
}

/// `_progress/seg-SSSSS-part-PPPPP.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProgress {
    pub format_version: u32,
    /// Data part name relative to the export directory.
    pub file: String,
    pub status: FileStatus,
    /// `spanner`, `postgres` or `bigtable`, and the table written.
    pub target: String,
    pub destination: String,
    pub rows_written: u64,
    pub rejected: u64,
    pub sha256: String,
    /// Why the file failed (`failed` only).
    pub reason: Option<String>,
    pub finished_at: String,
}

/// One line of a reject file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reject {
    pub file: String,
    /// 1-based line number in the decompressed part.
    pub line: u64,
    pub reason: String,
    /// The line as found.
    pub item: String,
}

/// GCS key of a file's progress record.
pub fn progress_key(m: &Marker, f: &MarkerFile) -> String {
    m.key(&DumpFile::LoadProgress { segment: f.segment, part: f.part })
}

/// GCS key of a file's reject lines.
pub fn rejects_key(m: &Marker, f: &MarkerFile) -> String {
    m.key(&DumpFile::LoadRejects { segment: f.segment, part: f.part })
}

/// All progress records of the export, by file name.
pub async fn read_all(m: &Marker) -> Result<BTreeMap<String, FileProgress>, LoadError> {
    let prefix = m.marker.export.progress_prefix();
    let mut out = BTreeMap::new();
    for key in m.gcs.list(&prefix).await? {
        let body = match m.gcs.read(&key).await {
            Ok(b) => b,
            Err(LoadError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        // A record that does not parse is ignored: the file is simply loaded again.
        if let Ok(p) = serde_json::from_slice::<FileProgress>(&body) {
            out.insert(p.file.clone(), p);
        }
    }
    Ok(out)
}

pub async fn record(m: &Marker, f: &MarkerFile, p: &FileProgress) -> Result<(), LoadError> {
    let body = serde_json::to_vec_pretty(p).unwrap_or_default();
    m.gcs.write(&progress_key(m, f), body, "application/json").await
}

/// [`record`] as a task of its own, so the next file's writes need not wait for it.
pub fn record_in_background(m: &Marker, f: &MarkerFile, p: &FileProgress) -> tokio::task::JoinHandle<Result<(), LoadError>> {
    let (gcs, key, body) = (m.gcs.clone(), progress_key(m, f), serde_json::to_vec_pretty(p).unwrap_or_default());
    tokio::spawn(async move { gcs.write(&key, body, "application/json").await })
}

pub async fn write_rejects(m: &Marker, f: &MarkerFile, rejects: &[Reject]) -> Result<String, LoadError> {
    let mut body = Vec::new();
    for r in rejects {
        body.extend(serde_json::to_vec(r).unwrap_or_default());
        body.push(b'\n');
    }
    let key = rejects_key(m, f);
    m.gcs.write(&key, body, "application/x-ndjson").await?;
    Ok(key)
}

/// Removes a file's progress record, so no later run skips the file on its account.
pub async fn forget(m: &Marker, f: &MarkerFile) -> Result<(), LoadError> {
    m.gcs.delete(&progress_key(m, f)).await
}

/// Removes `_LOADED`, so no later run reports the export as already loaded.
pub async fn forget_loaded(m: &Marker) -> Result<(), LoadError> {
    m.gcs.delete(&m.key(&DumpFile::Loaded)).await
}

pub async fn read_loaded(m: &Marker) -> Result<Option<LoadedRecord>, LoadError> {
    match m.gcs.read(&m.key(&DumpFile::Loaded)).await {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(LoadError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn write_loaded(m: &Marker, r: &LoadedRecord) -> Result<(), LoadError> {
    let body = serde_json::to_vec_pretty(r).unwrap_or_default();
    m.gcs.write(&m.key(&DumpFile::Loaded), body, "application/json").await
}

/// [`write_loaded`] as a create-only write: `Ok(false)` when another process sharing
/// the load wrote it first.
pub async fn write_loaded_once(m: &Marker, r: &LoadedRecord) -> Result<bool, LoadError> {
    let body = serde_json::to_vec_pretty(r).unwrap_or_default();
    m.gcs.create(&m.key(&DumpFile::Loaded), body, "application/json").await
}
