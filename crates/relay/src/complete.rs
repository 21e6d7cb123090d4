//! Completion: after each durable copy, decide with [`crossdock_core::marker::check_complete`]
//! whether the table export is complete in GCS, and if so write `_SUCCESS` once
//! (create-only, `ifGenerationMatch=0`).

use crate::error::RelayError;
use crate::gcs::{self, Created, Provenance};
use crossdock_core::layout::{DumpFile, ExportId};
use crossdock_core::manifest::SegmentManifest;
use crossdock_core::marker::{check_complete, Completeness, StoredObject, SuccessMarker};
use crossdock_core::schema::TableSchema;
use crossdock_core::Codec;
use gcloud_storage::client::Client as GcsClient;
use std::collections::BTreeMap;

/// The result of one completion check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkOutcome {
    /// `_SUCCESS` was already there.
    AlreadyMarked,
    /// Not complete yet; how many files are missing (0 when the schema or a manifest
    /// count is what is missing).
    Incomplete { missing: usize },
    /// This relay wrote `_SUCCESS`.
    Written { files: u64, items: u64 },
    /// Another relay wrote it between our check and our write.
    LostRace,
}

/// Checks the export `export` in `bucket` and writes its marker when complete.
pub async fn try_mark(gcs: &GcsClient, bucket: &str, export: &ExportId, codec: Codec, written_by: &str) -> Result<MarkOutcome, RelayError> {
    let marker_key = export.marker_key();
    if gcs::get(gcs, bucket, &marker_key).await?.is_some() {
        return Ok(MarkOutcome::AlreadyMarked);
    }
    let dir = export.dir();
    let schema_key = export.gcs_key(&DumpFile::Schema, codec);
    let Some(schema_bytes) = gcs::download(gcs, bucket, &schema_key).await? else {
        return Ok(MarkOutcome::Incomplete { missing: 0 });
    };
    let schema: TableSchema = serde_json::from_slice(&schema_bytes).map_err(|e| RelayError::BadExportFile {
        bucket: bucket.into(),
        key: schema_key.clone(),
        what: "schema",
        message: e.to_string(),
    })?;

    // Manifests first: until all are there, there is no need to list the data.
    let manifest_objects = gcs::list(gcs, bucket, &format!("{dir}manifests/")).await?;
    let mut manifests = Vec::new();
    for o in &manifest_objects {
        let rel = o.name.strip_prefix(&dir).unwrap_or(&o.name);
        let Some(DumpFile::Manifest { total, .. }) = DumpFile::parse(rel) else { continue };
        if total != schema.total_segments {
            continue;
        }
        let Some(bytes) = gcs::download(gcs, bucket, &o.name).await? else { continue };
        let m: SegmentManifest = serde_json::from_slice(&bytes).map_err(|e| RelayError::BadExportFile {
            bucket: bucket.into(),
            key: o.name.clone(),
            what: "segment manifest",
            message: e.to_string(),
        })?;
        manifests.push(m);
    }
    if manifests.len() < schema.total_segments as usize {
        return Ok(MarkOutcome::Incomplete { missing: 0 });
    }

    let mut objects = BTreeMap::new();
    let mut provenance = BTreeMap::new();
    for o in gcs::list(gcs, bucket, &format!("{dir}data/")).await? {
        let rel = o.name.strip_prefix(&dir).unwrap_or(&o.name).to_string();
        let p = Provenance::from_object(&o);
        objects.insert(rel.clone(), StoredObject { stored_bytes: o.size.max(0) as u64, raw_bytes: p.as_ref().map(|p| p.raw_bytes) });
        if let Some(p) = p {
            provenance.insert(rel, p);
        }
    }
    let (files, totals, type_stats) = match check_complete(Some(&schema), &manifests, &objects, codec) {
        Completeness::Incomplete { missing } => return Ok(MarkOutcome::Incomplete { missing: missing.len() }),
        Completeness::Complete { files, totals, type_stats } => (files, totals, type_stats),
    };
    // Beyond the size rule: the bytes relayed must hash to what the exporter recorded.
    for f in &files {
        if let Some(p) = provenance.get(&f.name) {
            if !p.raw_sha256.is_empty() && !f.sha256.is_empty() && p.raw_sha256 != f.sha256 {
                return Err(RelayError::ChecksumMismatch {
                    bucket: bucket.into(),
                    key: format!("{dir}{}", f.name),
                    stored: p.raw_sha256.clone(),
                    manifest: f.sha256.clone(),
                });
            }
        }
    }
    let marker = SuccessMarker {
        format_version: crossdock_core::FORMAT_VERSION,
        export: export.clone(),
        codec,
        schema,
        files,
        totals,
        type_stats,
        written_at: now_rfc3339(),
        written_by: written_by.to_string(),
    };
    let body = serde_json::to_vec_pretty(&marker).map_err(|e| RelayError::BadExportFile {
        bucket: bucket.into(),
        key: marker_key.clone(),
        what: "marker",
        message: e.to_string(),
    })?;
    match gcs::put_small(gcs, bucket, &marker_key, body, "application/json", None, true).await? {
        Created::Created => Ok(MarkOutcome::Written { files: totals.files, items: totals.items }),
        Created::AlreadyExists => Ok(MarkOutcome::LostRace),
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
