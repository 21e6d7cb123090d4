//! The `_SUCCESS` marker (written once per table export by the relay) and the
//! `_LOADED` record (written by the loader), plus the completeness rule that decides
//! when a marker may be written.

use crate::codec::Codec;
use crate::layout::{DumpFile, ExportId};
use crate::manifest::{PartEntry, SegmentManifest, TypeStats};
use crate::schema::TableSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One relayed data part, as listed in the marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkerFile {
    /// GCS object name relative to the export directory (with the codec's extension).
    pub name: String,
    pub segment: u32,
    pub part: u32,
    pub items: u64,
    /// Uncompressed size (as in the manifest).
    pub raw_bytes: u64,
    /// Size of the stored (compressed) object.
    pub stored_bytes: u64,
    /// SHA-256 of the uncompressed bytes, from the manifest.
    pub sha256: String,
}

/// Totals over all files of the export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub files: u64,
    pub items: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}

/// Contents of `_SUCCESS`: everything a loader needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessMarker {
    pub format_version: u32,
    /// Batch, table and export timestamp.
    pub export: ExportId,
    pub codec: Codec,
    pub schema: TableSchema,
    pub files: Vec<MarkerFile>,
    pub totals: Totals,
    /// Merged type statistics of all segments.
    pub type_stats: TypeStats,
    /// RFC 3339 time the marker was written, and by which relay instance.
    pub written_at: String,
    pub written_by: String,
}

/// Contents of `_LOADED`, written next to the marker when a load finishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadedRecord {
    pub format_version: u32,
    /// Batch, table and export timestamp.
    pub export: ExportId,
    /// `spanner`, `postgres` or `bigtable`.
    pub target: String,
    /// Table (or Bigtable table) written.
    pub destination: String,
    /// Items in the marker, rows counted in the target afterwards, rows rejected.
    pub items_expected: u64,
    pub rows_in_target: u64,
    pub rejected: u64,
    pub duration_ms: u64,
    pub finished_at: String,
}

/// What a relay knows about one object present in GCS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub stored_bytes: u64,
    /// Uncompressed size recorded in the object's metadata by the relay.
    pub raw_bytes: Option<u64>,
}

/// The verdict of [`check_complete`].
#[derive(Debug, Clone, PartialEq)]
pub enum Completeness {
    /// Everything is present: the files and totals for the marker.
    Complete { files: Vec<MarkerFile>, totals: Totals, type_stats: TypeStats },
    /// Still waiting; the names that are missing or do not match yet.
    Incomplete { missing: Vec<String> },
}

/// The completeness rule: the schema, all `total_segments` manifests and every part they
/// list are present in GCS, with each part's recorded raw size equal to the manifest's.
///
/// `objects` maps names relative to the export directory to what is stored there;
/// `manifests` are the parsed manifests found (any order).
pub fn check_complete(
    schema: Option<&TableSchema>,
    manifests: &[SegmentManifest],
    objects: &BTreeMap<String, StoredObject>,
    codec: Codec,
) -> Completeness {
    let Some(schema) = schema else {
        return Completeness::Incomplete { missing: vec![DumpFile::Schema.s3_name()] };
    };
    let by_segment: BTreeMap<u32, &SegmentManifest> = manifests.iter().map(|m| (m.segment, m)).collect();
    let mut missing = Vec::new();
    let mut files = Vec::new();
    let mut totals = Totals::default();
    let mut type_stats = TypeStats::default();
    for segment in 0..schema.total_segments {
        let Some(m) = by_segment.get(&segment) else {
            missing.push(DumpFile::Manifest { segment, total: schema.total_segments }.s3_name());
            continue;
        };
        type_stats.merge(&m.type_stats);
        for p in &m.parts {
            match marker_file(p, objects, codec) {
                Some(f) => {
                    totals.files += 1;
                    totals.items += f.items;
                    totals.raw_bytes += f.raw_bytes;
                    totals.stored_bytes += f.stored_bytes;
                    files.push(f);
                }
                None => missing.push(p.name.clone()),
            }
        }
    }
    if missing.is_empty() {
        Completeness::Complete { files, totals, type_stats }
    } else {
        Completeness::Incomplete { missing }
    }
}

fn marker_file(p: &PartEntry, objects: &BTreeMap<String, StoredObject>, codec: Codec) -> Option<MarkerFile> {
    let DumpFile::Part { segment, part, .. } = DumpFile::parse(&p.name)? else {
        return None;
    };
    let name = DumpFile::Part { segment, part, codec }.s3_name();
    let o = objects.get(&name)?;
    (o.raw_bytes == Some(p.bytes)).then(|| MarkerFile {
        name,
        segment,
        part,
        items: p.items,
        raw_bytes: p.bytes,
        stored_bytes: o.stored_bytes,
        sha256: p.sha256.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Timestamp;
    use crate::schema::tests::sample_schema;

    fn manifest(segment: u32, parts: &[(u32, u64)]) -> SegmentManifest {
        let parts: Vec<PartEntry> = parts
            .iter()
            .map(|&(part, bytes)| PartEntry {
                name: format!("data/seg-{segment:05}-part-{part:05}.json"),
                items: bytes / 10,
                bytes,
                sha256: "00".repeat(32),
            })
            .collect();
        SegmentManifest {
            format_version: 1,
            table: "Orders".into(),
            segment,
            total_segments: 2,
            items: parts.iter().map(|p| p.items).sum(),
            bytes: parts.iter().map(|p| p.bytes).sum(),
            parts,
            consumed_rcu: 0.0,
            type_stats: TypeStats::default(),
        }
    }

    fn stored(raw: u64) -> StoredObject {
        StoredObject { stored_bytes: raw / 4, raw_bytes: Some(raw) }
    }

    #[test]
    fn complete_only_when_schema_every_manifest_and_part_match() {
        let mut schema = sample_schema();
        schema.total_segments = 2;
        let ms = vec![manifest(0, &[(0, 100), (1, 50)]), manifest(1, &[(0, 70)])];
        let mut objects = BTreeMap::new();
        let zst = |s: u32, p: u32| format!("data/seg-{s:05}-part-{p:05}.json.zst");

        assert_eq!(
            check_complete(None, &ms, &objects, Codec::Zstd),
            Completeness::Incomplete { missing: vec!["_schema.json".into()] }
        );
        objects.insert(zst(0, 0), stored(100));
        objects.insert(zst(0, 1), stored(50));
        let only_first = check_complete(Some(&schema), &ms[..1], &objects, Codec::Zstd);
        assert_eq!(only_first, Completeness::Incomplete { missing: vec!["manifests/seg-00001-of-00002.json".into()] });

        objects.insert(zst(1, 0), stored(69)); // an older, different object
        let Completeness::Incomplete { missing } = check_complete(Some(&schema), &ms, &objects, Codec::Zstd) else {
            panic!("size mismatch must not count as present");
        };
        assert_eq!(missing, vec!["data/seg-00001-part-00000.json".to_string()]);

        objects.insert(zst(1, 0), stored(70));
        let Completeness::Complete { files, totals, .. } = check_complete(Some(&schema), &ms, &objects, Codec::Zstd) else {
            panic!("all present");
        };
        assert_eq!(files.len(), 3);
        assert_eq!(totals, Totals { files: 3, items: 22, raw_bytes: 220, stored_bytes: 25 + 12 + 17 });
        assert_eq!(files[2].name, zst(1, 0));
    }

    #[test]
    fn marker_and_loaded_snapshots() {
        let export = ExportId::new("2026-11-23", "Orders", Timestamp::parse("2026-11-23T09-30-00Z").expect("ts")).expect("id");
        let marker = SuccessMarker {
            format_version: 1,
            export: export.clone(),
            codec: Codec::Zstd,
            schema: sample_schema(),
            files: vec![MarkerFile {
                name: "data/seg-00000-part-00000.json.zst".into(),
                segment: 0,
                part: 0,
                items: 2,
                raw_bytes: 120,
                stored_bytes: 80,
                sha256: "ab".repeat(32),
            }],
            totals: Totals { files: 1, items: 2, raw_bytes: 120, stored_bytes: 80 },
            type_stats: TypeStats::default(),
            written_at: "2026-11-23T09:41:00Z".into(),
            written_by: "relay-host-1234".into(),
        };
        insta::assert_json_snapshot!("success_marker", marker);
        let back: SuccessMarker = serde_json::from_str(&serde_json::to_string(&marker).expect("ser")).expect("de");
        assert_eq!(back, marker);
        let loaded = LoadedRecord {
            format_version: 1,
            export,
            target: "spanner".into(),
            destination: "Orders".into(),
            items_expected: 2,
            rows_in_target: 2,
            rejected: 0,
            duration_ms: 1234,
            finished_at: "2026-11-23T09:45:00Z".into(),
        };
        insta::assert_json_snapshot!("loaded_record", loaded);
    }
}
