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
    /// CRC32C of the stored (compressed) bytes, computed by the relay as it uploaded them
    /// and confirmed against the CRC32C GCS reports. Absent in markers of relays that
    /// did not record it; a loader then cannot check the stored bytes before decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_crc32c: Option<Crc32c>,
}

/// A CRC32C (Castagnoli) checksum, written as GCS writes an object's `crc32c`: standard
/// base64 of the big-endian value (`"AAAAAA=="` for empty input), so a recorded value
/// compares with what GCS reports for the object as text or as a number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Crc32c(pub u32);

impl Crc32c {
    /// The checksum of `bytes`.
    pub fn of(bytes: &[u8]) -> Crc32c {
        Crc32c(crc32c::crc32c(bytes))
    }

    /// The checksum of what was checksummed so far followed by `bytes`, for data
    /// seen in pieces (the relay's upload stream).
    pub fn append(self, bytes: &[u8]) -> Crc32c {
        Crc32c(crc32c::crc32c_append(self.0, bytes))
    }

    /// Parses GCS's form; `None` unless it is base64 of exactly four bytes.
    pub fn from_gcs(text: &str) -> Option<Crc32c> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?;
        Some(Crc32c(u32::from_be_bytes(bytes.try_into().ok()?)))
    }

    /// GCS's form: base64 of the big-endian value.
    pub fn to_gcs(self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.0.to_be_bytes())
    }
}

impl std::fmt::Display for Crc32c {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_gcs())
    }
}

impl Serialize for Crc32c {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_gcs())
    }
}

impl<'de> Deserialize<'de> for Crc32c {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Crc32c, D::Error> {
        let text = String::deserialize(d)?;
        Crc32c::from_gcs(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a CRC32C (base64 of 4 bytes)")))
    }
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
    /// CRC32C of the stored bytes recorded in the object's metadata by the relay.
    pub stored_crc32c: Option<Crc32c>,
    /// CRC32C GCS reports for the object's bytes as they are now.
    pub gcs_crc32c: Option<Crc32c>,
}

impl StoredObject {
    /// Whether the bytes in GCS are still the ones the relay stored: when the relay
    /// recorded a CRC32C, GCS must report the same. An object rewritten or corrupted
    /// behind the relay's back (its metadata kept) fails this; one relayed before the
    /// CRC32C was recorded has nothing to compare and passes.
    pub fn intact(&self) -> bool {
        match self.stored_crc32c {
            Some(recorded) => self.gcs_crc32c == Some(recorded),
            None => true,
        }
    }
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
/// list are present in GCS, with each part's recorded raw size equal to the manifest's
/// and its bytes still those the relay stored ([`StoredObject::intact`]).
///
/// `objects` maps names relative to the export directory to what is stored there;
/// `manifests` are the parsed manifests found (any order).
pub fn check_complete(schema: Option<&TableSchema>, manifests: &[SegmentManifest], objects: &BTreeMap<String, StoredObject>, codec: Codec) -> Completeness {
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
    (o.raw_bytes == Some(p.bytes) && o.intact()).then(|| MarkerFile {
        name,
        segment,
        part,
        items: p.items,
        raw_bytes: p.bytes,
        stored_bytes: o.stored_bytes,
        sha256: p.sha256.clone(),
        stored_crc32c: o.stored_crc32c,
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
            .map(|&(part, bytes)| PartEntry { name: format!("data/seg-{segment:05}-part-{part:05}.json"), items: bytes / 10, bytes, sha256: "00".repeat(32) })
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
        StoredObject { stored_bytes: raw / 4, raw_bytes: Some(raw), stored_crc32c: None, gcs_crc32c: None }
    }

    #[test]
    fn complete_only_when_schema_every_manifest_and_part_match() {
        let mut schema = sample_schema();
        schema.total_segments = 2;
        let ms = vec![manifest(0, &[(0, 100), (1, 50)]), manifest(1, &[(0, 70)])];
        let mut objects = BTreeMap::new();
        let zst = |s: u32, p: u32| format!("data/seg-{s:05}-part-{p:05}.json.zst");

        assert_eq!(check_complete(None, &ms, &objects, Codec::Zstd), Completeness::Incomplete { missing: vec!["_schema.json".into()] });
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
    fn a_part_whose_gcs_crc32c_differs_from_the_recorded_one_is_missing() {
        let mut schema = sample_schema();
        schema.total_segments = 1;
        let ms = vec![manifest(0, &[(0, 100)])];
        let name = "data/seg-00000-part-00000.json.zst".to_string();
        let good = StoredObject { stored_crc32c: Some(Crc32c(7)), gcs_crc32c: Some(Crc32c(7)), ..stored(100) };
        let objects = BTreeMap::from([(name.clone(), good.clone())]);
        let Completeness::Complete { files, .. } = check_complete(Some(&schema), &ms, &objects, Codec::Zstd) else {
            panic!("matching CRC32C counts");
        };
        assert_eq!(files[0].stored_crc32c, Some(Crc32c(7)), "the recorded CRC32C goes into the marker");
        for gcs in [Some(Crc32c(8)), None] {
            let objects = BTreeMap::from([(name.clone(), StoredObject { gcs_crc32c: gcs, ..good.clone() })]);
            assert_eq!(
                check_complete(Some(&schema), &ms, &objects, Codec::Zstd),
                Completeness::Incomplete { missing: vec!["data/seg-00000-part-00000.json".into()] },
                "GCS reports {gcs:?}"
            );
        }
        // Relayed before CRC32Cs were recorded: nothing to compare, counted as before.
        let old = StoredObject { stored_crc32c: None, gcs_crc32c: Some(Crc32c(8)), ..good };
        assert!(matches!(check_complete(Some(&schema), &ms, &BTreeMap::from([(name, old)]), Codec::Zstd), Completeness::Complete { .. }));
    }

    #[test]
    fn crc32c_is_castagnoli_in_gcs_form_and_optional_in_markers() {
        // RFC 3720 B.4 test vector, and GCS's value for an empty object.
        assert_eq!(Crc32c::of(b"123456789"), Crc32c(0xE306_9283));
        assert_eq!(Crc32c::of(b"").to_gcs(), "AAAAAA==");
        assert_eq!(Crc32c::default().append(b"1234").append(b"56789"), Crc32c::of(b"123456789"));
        let c = Crc32c(0xE306_9283);
        assert_eq!(c.to_gcs(), "4waSgw==");
        assert_eq!(Crc32c::from_gcs("4waSgw=="), Some(c));
        for bad in ["", "4waS", "4waSgwAA", "not base64"] {
            assert_eq!(Crc32c::from_gcs(bad), None, "{bad:?}");
        }
        let mut f = MarkerFile {
            name: "data/seg-00000-part-00000.json.zst".into(),
            segment: 0,
            part: 0,
            items: 1,
            raw_bytes: 2,
            stored_bytes: 3,
            sha256: "ab".repeat(32),
            stored_crc32c: Some(c),
        };
        let json = serde_json::to_value(&f).expect("ser");
        assert_eq!(json["stored_crc32c"], "4waSgw==");
        assert_eq!(serde_json::from_value::<MarkerFile>(json).expect("de"), f);
        // A marker of an older relay has no such field and still parses.
        f.stored_crc32c = None;
        let json = serde_json::to_value(&f).expect("ser");
        assert!(json.get("stored_crc32c").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<MarkerFile>(json).expect("de"), f);
        let mut bad = serde_json::to_value(&f).expect("ser");
        bad["stored_crc32c"] = "xyz".into();
        assert!(serde_json::from_value::<MarkerFile>(bad).is_err());
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
                stored_crc32c: None,
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
