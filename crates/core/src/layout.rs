//! The one place that maps object keys between the phases:
//! S3 dump key ↔ (batch, table, timestamp, relative name) ↔ GCS key.
//!
//! ```text
//! s3://{src}/{prefix}{batch}/{table}/{timestamp}/{relative}
//! gs://{dst}/{batch}/{table}/{timestamp}/{relative, data parts with the codec's extension}
//! ```

use crate::codec::Codec;
use std::fmt;

/// Why a key or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("key {key:?} is not under prefix {prefix:?}")]
    OutsidePrefix { key: String, prefix: String },
    #[error("key {key:?} does not have the form {{batch}}/{{table}}/{{timestamp}}/{{file}}")]
    Shape { key: String },
    #[error("{what} {value:?} is not allowed: {why}")]
    Invalid { what: &'static str, value: String, why: &'static str },
    #[error("file {name:?} in {key:?} is not a crossdock dump file (expected _schema.json, data/seg-NNNNN-part-NNNNN.json[.gz|.zst|.bz2], manifests/seg-NNNNN-of-NNNNN.json, _SUCCESS or _LOADED)")]
    UnknownFile { key: String, name: String },
}

fn invalid(what: &'static str, value: &str, why: &'static str) -> LayoutError {
    LayoutError::Invalid { what, value: value.to_string(), why }
}

/// Checks one path segment used for a batch id: non-empty, no `/`, not `.`/`..`, no
/// control characters. Spaces, `+`, `%` and unicode are fine (keys are not URLs).
pub fn validate_segment(what: &'static str, s: &str) -> Result<(), LayoutError> {
    if s.is_empty() {
        return Err(invalid(what, s, "it is empty"));
    }
    if s == "." || s == ".." {
        return Err(invalid(what, s, "`.` and `..` would escape the table's prefix"));
    }
    if s.contains('/') {
        return Err(invalid(what, s, "it contains `/`"));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(what, s, "it contains control characters"));
    }
    if s.len() > 512 {
        return Err(invalid(what, s, "it is longer than 512 bytes"));
    }
    Ok(())
}

/// DynamoDB table names: 3–255 characters of `[A-Za-z0-9_.-]`.
pub fn validate_table(name: &str) -> Result<(), LayoutError> {
    if !(3..=255).contains(&name.len()) {
        return Err(invalid("table name", name, "DynamoDB table names are 3 to 255 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(invalid("table name", name, "DynamoDB table names use only A-Z a-z 0-9 _ . -"));
    }
    if name == ".." || name.chars().all(|c| c == '.') {
        return Err(invalid("table name", name, "`..` would escape the prefix"));
    }
    Ok(())
}

/// An export timestamp: `YYYY-MM-DDTHH-MM-SSZ` (UTC, sortable, no `:`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp(String);

const TS_FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!("[year]-[month]-[day]T[hour]-[minute]-[second]Z");

impl Timestamp {
    pub fn parse(s: &str) -> Result<Self, LayoutError> {
        time::PrimitiveDateTime::parse(s, TS_FORMAT).map_err(|_| invalid("timestamp", s, "expected YYYY-MM-DDTHH-MM-SSZ (UTC)"))?;
        Ok(Timestamp(s.to_string()))
    }
    pub fn from_datetime(t: time::OffsetDateTime) -> Self {
        let utc = t.to_offset(time::UtcOffset::UTC);
        // Formatting a valid datetime with a static description cannot fail.
        Timestamp(utc.format(TS_FORMAT).unwrap_or_default())
    }
    pub fn now() -> Self {
        Self::from_datetime(time::OffsetDateTime::now_utc())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The instant as Unix microseconds (e.g. Bigtable cell timestamps).
    pub fn unix_micros(&self) -> i64 {
        // Always parses: construction validated the text.
        time::PrimitiveDateTime::parse(&self.0, TS_FORMAT).map_or(0, |t| t.assume_utc().unix_timestamp() * 1_000_000)
    }
}

impl TryFrom<String> for Timestamp {
    type Error = LayoutError;
    fn try_from(s: String) -> Result<Self, LayoutError> {
        Timestamp::parse(&s)
    }
}
impl From<Timestamp> for String {
    fn from(t: Timestamp) -> String {
        t.0
    }
}
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One table export: everything under `{batch}/{table}/{timestamp}/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportId {
    pub batch: String,
    pub table: String,
    pub timestamp: Timestamp,
}

impl ExportId {
    pub fn new(batch: &str, table: &str, timestamp: Timestamp) -> Result<Self, LayoutError> {
        validate_segment("batch", batch)?;
        validate_table(table)?;
        Ok(ExportId { batch: batch.into(), table: table.into(), timestamp })
    }

    /// `{batch}/{table}/{timestamp}/`, the part shared by S3 and GCS keys.
    pub fn dir(&self) -> String {
        format!("{}/{}/{}/", self.batch, self.table, self.timestamp)
    }

    /// S3 prefix of this export's directory under the source prefix (`{prefix}{batch}/{table}/{timestamp}/`).
    pub fn s3_dir(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.dir())
    }

    /// S3 prefix of this export's segment manifests (`…/manifests/`).
    pub fn s3_manifests_dir(&self, prefix: &str) -> String {
        format!("{}manifests/", self.s3_dir(prefix))
    }

    /// GCS prefix of this export's relayed data parts (`…/data/`).
    pub fn gcs_data_prefix(&self) -> String {
        format!("{}data/", self.dir())
    }

    /// GCS prefix of the loader's per-file progress records (`…/_progress/`).
    pub fn progress_prefix(&self) -> String {
        format!("{}_progress/", self.dir())
    }

    /// S3 key of a file of this export under the source prefix.
    pub fn s3_key(&self, prefix: &str, file: &DumpFile) -> String {
        format!("{prefix}{}{}", self.dir(), file.s3_name())
    }

    /// GCS object name of a file of this export once relayed with `codec`.
    pub fn gcs_key(&self, file: &DumpFile, codec: Codec) -> String {
        format!("{}{}", self.dir(), file.gcs_name(codec))
    }

    /// GCS object name of the table's `_SUCCESS` marker.
    pub fn marker_key(&self) -> String {
        self.gcs_key(&DumpFile::Success, Codec::None)
    }
}

impl fmt::Display for ExportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.batch, self.table, self.timestamp)
    }
}

/// S3 prefix holding every export of `table` in `batch`: `{prefix}{batch}/{table}/`.
pub fn table_prefix(prefix: &str, batch: &str, table: &str) -> String {
    format!("{prefix}{batch}/{table}/")
}

/// The export timestamps among a listing's common prefixes under [`table_prefix`]
/// (anything else under it is ignored).
pub fn timestamps_under(table_prefix: &str, common_prefixes: &[String]) -> Vec<Timestamp> {
    common_prefixes.iter().filter_map(|p| Timestamp::parse(p.strip_prefix(table_prefix)?.strip_suffix('/')?).ok()).collect()
}

/// The batch name reserved for per-table exporter state: `{prefix}_leases/{table}/…`.
pub const LEASE_BATCH: &str = "_leases";

/// S3 key of `table`'s capacity lease under `prefix`:
/// `{prefix}_leases/{table}/1970-01-01T00-00-00Z/_capacity.json`. One per table, whatever
/// the batch or timestamp, so every export of the table meets the same lease. It has the
/// shape of an export's `_capacity.json` (reserved batch, epoch timestamp) because the
/// relay sees every key under the prefix: it parses this one as exporter state and
/// never copies it.
pub fn capacity_lease_key(prefix: &str, table: &str) -> Result<String, LayoutError> {
    let export = ExportId::new(LEASE_BATCH, table, Timestamp("1970-01-01T00-00-00Z".into()))?;
    Ok(export.s3_key(prefix, &DumpFile::Capacity))
}

/// The batch name reserved for DynamoDB's own exports requested by crossdock:
/// `{prefix}_native/{batch}/{table}/{timestamp}/AWSDynamoDB/{export-id}/…`. Kept out of
/// export directories so a listing of one shows crossdock's files only; `_`-names are
/// never batches.
pub const NATIVE_BATCH: &str = "_native";

/// The path segment DynamoDB's native export puts between the requested S3 prefix and
/// the export id (`{S3Prefix}/AWSDynamoDB/{export-id}/…`).
pub const NATIVE_EXPORT_DIR: &str = "AWSDynamoDB";

/// The `S3Prefix` crossdock gives ExportTableToPointInTime for `export`: without a
/// trailing `/`, since DynamoDB adds `/AWSDynamoDB/…` itself.
pub fn native_export_prefix(prefix: &str, export: &ExportId) -> String {
    format!("{prefix}{NATIVE_BATCH}/{}/{}/{}", export.batch, export.table, export.timestamp)
}

/// Whether `key` belongs to a DynamoDB native export (`…/AWSDynamoDB/{id}/{file}`:
/// `_started`, `manifest-summary.json`, `manifest-files.json`, their `.md5`, `data/…`).
/// Such files are never relayed as they are: `crossdock export adopt` copies the data
/// files into an export directory, where they are relayed like any part.
pub fn is_native_export_key(key: &str) -> bool {
    let segments: Vec<&str> = key.split('/').collect();
    // The marker segment, then at least the export id and a file name after it.
    segments.iter().take(segments.len().saturating_sub(2)).any(|s| *s == NATIVE_EXPORT_DIR)
}

/// GCS prefix of the catch-up checkpoints of an export: `{batch}/{table}/{timestamp}/_sync/`,
/// next to the marker the sync was started from.
pub fn sync_prefix(export: &ExportId) -> String {
    format!("{}_sync/", export.dir())
}

/// GCS key of the catch-up checkpoint of one stream shard:
/// `{batch}/{table}/{timestamp}/_sync/{shard}.json`. Shard ids (DynamoDB Streams
/// `shardId-…`, Kinesis `shardId-000000000000`) are one path segment; anything else is
/// refused rather than written somewhere unexpected.
pub fn sync_checkpoint_key(export: &ExportId, shard: &str) -> Result<String, LayoutError> {
    validate_segment("shard id", shard)?;
    Ok(format!("{}{shard}.json", sync_prefix(export)))
}

/// GCS key of the attributes the catch-up added columns for (first seen in the stream):
/// `{batch}/{table}/{timestamp}/_sync/_columns.json`. Shard ids never begin with `_`, so
/// it is never taken for a checkpoint.
pub fn sync_columns_key(export: &ExportId) -> String {
    format!("{}_columns.json", sync_prefix(export))
}

/// The shard id of a key under [`sync_prefix`], `None` for anything else.
pub fn sync_shard_of(export: &ExportId, key: &str) -> Option<String> {
    let shard = key.strip_prefix(&sync_prefix(export))?.strip_suffix(".json")?;
    if shard.starts_with('_') {
        return None;
    }
    validate_segment("shard id", shard).ok()?;
    Some(shard.to_string())
}

/// A file of an export, by role. Data parts carry the codec they are stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DumpFile {
    /// `_schema.json`
    Schema,
    /// `data/seg-SSSSS-part-PPPPP.json[ext]`
    Part { segment: u32, part: u32, codec: Codec },
    /// `manifests/seg-SSSSS-of-NNNNN.json`
    Manifest { segment: u32, total: u32 },
    /// `_capacity.json` (exporter state; not relayed)
    Capacity,
    /// `_checkpoint/seg-SSSSS.json` (exporter state; not relayed)
    Checkpoint { segment: u32 },
    /// `_SUCCESS` (GCS only; written by the relay)
    Success,
    /// `_LOADED` (GCS only; written by the loader)
    Loaded,
    /// `_progress/…` per-file load progress (GCS only; written by the loader)
    LoadProgress { segment: u32, part: u32 },
    /// `_rejects/…` per-file rows the loader could not convert (GCS only, JSON lines)
    LoadRejects { segment: u32, part: u32 },
}

impl DumpFile {
    /// Name relative to the export directory, as stored in S3.
    pub fn s3_name(&self) -> String {
        match *self {
            DumpFile::Schema => "_schema.json".into(),
            DumpFile::Part { segment, part, codec } => {
                format!("data/seg-{segment:05}-part-{part:05}.json{}", codec.extension())
            }
            DumpFile::Manifest { segment, total } => format!("manifests/seg-{segment:05}-of-{total:05}.json"),
            DumpFile::Capacity => "_capacity.json".into(),
            DumpFile::Checkpoint { segment } => format!("_checkpoint/seg-{segment:05}.json"),
            DumpFile::Success => "_SUCCESS".into(),
            DumpFile::Loaded => "_LOADED".into(),
            DumpFile::LoadProgress { segment, part } => format!("_progress/seg-{segment:05}-part-{part:05}.json"),
            DumpFile::LoadRejects { segment, part } => format!("_rejects/seg-{segment:05}-part-{part:05}.jsonl"),
        }
    }

    /// Name relative to the export directory once relayed with `codec`: data parts are
    /// re-encoded and get the codec's extension; everything else is copied as is.
    pub fn gcs_name(&self, codec: Codec) -> String {
        match *self {
            DumpFile::Part { segment, part, .. } => DumpFile::Part { segment, part, codec }.s3_name(),
            other => other.s3_name(),
        }
    }

    /// Whether the relay copies this file to GCS (exporter state stays in S3).
    pub fn is_relayed(&self) -> bool {
        matches!(self, DumpFile::Schema | DumpFile::Part { .. } | DumpFile::Manifest { .. })
    }

    /// Parses a relative name (`data/seg-00001-part-00002.json.gz`, …).
    pub fn parse(name: &str) -> Option<DumpFile> {
        fn num(s: &str) -> Option<u32> {
            (s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
        }
        match name {
            "_schema.json" => return Some(DumpFile::Schema),
            "_capacity.json" => return Some(DumpFile::Capacity),
            "_SUCCESS" => return Some(DumpFile::Success),
            "_LOADED" => return Some(DumpFile::Loaded),
            _ => {}
        }
        if let Some(rest) = name.strip_prefix("data/seg-") {
            let (seg, rest) = rest.split_once("-part-")?;
            let (part, ext) = rest.split_at(rest.find('.')?);
            let codec = ext.strip_prefix(".json").and_then(Codec::from_extension)?;
            return Some(DumpFile::Part { segment: num(seg)?, part: num(part)?, codec });
        }
        if let Some(rest) = name.strip_prefix("manifests/seg-") {
            let (seg, rest) = rest.split_once("-of-")?;
            let total = rest.strip_suffix(".json")?;
            return Some(DumpFile::Manifest { segment: num(seg)?, total: num(total)? });
        }
        if let Some(rest) = name.strip_prefix("_checkpoint/seg-") {
            return Some(DumpFile::Checkpoint { segment: num(rest.strip_suffix(".json")?)? });
        }
        if let Some(rest) = name.strip_prefix("_progress/seg-") {
            let (seg, rest) = rest.split_once("-part-")?;
            return Some(DumpFile::LoadProgress { segment: num(seg)?, part: num(rest.strip_suffix(".json")?)? });
        }
        if let Some(rest) = name.strip_prefix("_rejects/seg-") {
            let (seg, rest) = rest.split_once("-part-")?;
            return Some(DumpFile::LoadRejects { segment: num(seg)?, part: num(rest.strip_suffix(".jsonl")?)? });
        }
        None
    }
}

/// A parsed object key: which export, which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpKey {
    pub export: ExportId,
    pub file: DumpFile,
}

impl DumpKey {
    /// Parses an S3 key under `prefix` (which is empty or ends with `/`).
    pub fn from_s3_key(prefix: &str, key: &str) -> Result<DumpKey, LayoutError> {
        let rest = key.strip_prefix(prefix).ok_or_else(|| LayoutError::OutsidePrefix { key: key.into(), prefix: prefix.into() })?;
        Self::from_relative(key, rest)
    }

    /// Parses a GCS object name (`{batch}/{table}/{timestamp}/{file}`).
    pub fn from_gcs_key(key: &str) -> Result<DumpKey, LayoutError> {
        Self::from_relative(key, key)
    }

    fn from_relative(key: &str, rest: &str) -> Result<DumpKey, LayoutError> {
        let mut it = rest.splitn(4, '/');
        let (Some(batch), Some(table), Some(ts), Some(name)) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(LayoutError::Shape { key: key.into() });
        };
        for seg in name.split('/') {
            validate_segment("file name", seg)?;
        }
        let export = ExportId::new(batch, table, Timestamp::parse(ts)?)?;
        let file = DumpFile::parse(name).ok_or_else(|| LayoutError::UnknownFile { key: key.into(), name: name.into() })?;
        Ok(DumpKey { export, file })
    }
}

/// Checks an S3 source prefix: empty, or `/`-terminated segments that are each valid.
pub fn validate_prefix(prefix: &str) -> Result<(), LayoutError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let Some(body) = prefix.strip_suffix('/') else {
        return Err(invalid("prefix", prefix, "a non-empty prefix must end with `/`"));
    };
    body.split('/').try_for_each(|s| validate_segment("prefix segment", s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        Timestamp::parse("2026-11-23T09-30-00Z").expect("valid")
    }

    #[test]
    fn timestamps_are_read_from_a_tables_listing() {
        let dir = table_prefix("exports/", "b1", "Orders");
        assert_eq!(dir, "exports/b1/Orders/");
        let listed =
            ["exports/b1/Orders/2026-01-02T03-04-05Z/".to_string(), "exports/b1/Orders/notes/".into(), "exports/b1/Other/2026-01-02T03-04-05Z/".into()];
        assert_eq!(timestamps_under(&dir, &listed), vec![Timestamp::parse("2026-01-02T03-04-05Z").expect("ts")]);
        let id = ExportId::new("b1", "Orders", Timestamp::parse("2026-01-02T03-04-05Z").expect("ts")).expect("id");
        assert_eq!(id.s3_dir("exports/"), "exports/b1/Orders/2026-01-02T03-04-05Z/");
        assert_eq!(id.progress_prefix(), "b1/Orders/2026-01-02T03-04-05Z/_progress/");
        assert_eq!(id.s3_manifests_dir("x/"), "x/b1/Orders/2026-01-02T03-04-05Z/manifests/");
        assert!(id.gcs_key(&DumpFile::Part { segment: 0, part: 0, codec: Codec::Zstd }, Codec::Zstd).starts_with(&id.gcs_data_prefix()));
        assert!(DumpFile::parse(&id.gcs_key(&DumpFile::LoadProgress { segment: 0, part: 1 }, Codec::None)[id.dir().len()..]).is_some());
    }

    #[test]
    fn awkward_batch_names_round_trip_s3_to_gcs_to_parts() {
        let export = ExportId::new("run 1+été%20", "Orders.v2-x_y", ts()).expect("valid export id");
        let part = DumpFile::Part { segment: 3, part: 12, codec: Codec::None };
        let s3 = export.s3_key("dumps/", &part);
        assert_eq!(s3, "dumps/run 1+été%20/Orders.v2-x_y/2026-11-23T09-30-00Z/data/seg-00003-part-00012.json");
        let parsed = DumpKey::from_s3_key("dumps/", &s3).expect("parses");
        assert_eq!(parsed, DumpKey { export: export.clone(), file: part });

        let gcs = export.gcs_key(&parsed.file, Codec::Zstd);
        assert_eq!(gcs, "run 1+été%20/Orders.v2-x_y/2026-11-23T09-30-00Z/data/seg-00003-part-00012.json.zst");
        let back = DumpKey::from_gcs_key(&gcs).expect("parses");
        assert_eq!(back.export, export);
        assert_eq!(back.file, DumpFile::Part { segment: 3, part: 12, codec: Codec::Zstd });
    }

    #[test]
    fn every_file_kind_round_trips() {
        let files = [
            DumpFile::Schema,
            DumpFile::Part { segment: 0, part: 0, codec: Codec::Gzip },
            DumpFile::Part { segment: 99999, part: 1, codec: Codec::Bzip2 },
            DumpFile::Manifest { segment: 4, total: 8 },
            DumpFile::Capacity,
            DumpFile::Checkpoint { segment: 2 },
            DumpFile::Success,
            DumpFile::Loaded,
            DumpFile::LoadProgress { segment: 1, part: 2 },
            DumpFile::LoadRejects { segment: 1, part: 2 },
        ];
        for f in files {
            assert_eq!(DumpFile::parse(&f.s3_name()), Some(f), "{}", f.s3_name());
        }
        assert!(DumpFile::Schema.is_relayed() && !DumpFile::Capacity.is_relayed());
    }

    #[test]
    fn the_capacity_lease_key_is_per_table_and_parses_as_unrelayed_state() {
        let key = capacity_lease_key("dumps/", "Orders").expect("valid");
        assert_eq!(key, "dumps/_leases/Orders/1970-01-01T00-00-00Z/_capacity.json");
        let parsed = DumpKey::from_s3_key("dumps/", &key).expect("parses");
        assert!(parsed.file == DumpFile::Capacity && !parsed.file.is_relayed());
        assert!(capacity_lease_key("", "a/b").is_err());
    }

    #[test]
    fn native_export_keys_are_recognised_wherever_they_sit() {
        let export = ExportId::new("b1", "Orders", ts()).expect("id");
        let native = native_export_prefix("dumps/", &export);
        assert_eq!(native, "dumps/_native/b1/Orders/2026-11-23T09-30-00Z");
        for file in ["_started", "manifest-summary.json", "manifest-files.md5", "data/x7f3.json.gz"] {
            assert!(is_native_export_key(&format!("{native}/AWSDynamoDB/01700000000000-abcd/{file}")), "{file}");
        }
        assert!(is_native_export_key("AWSDynamoDB/01700000000000-abcd/_started"));
        assert!(!is_native_export_key("b1/Orders/2026-11-23T09-30-00Z/_schema.json"));
        // The segment alone, or as a file name, is not an export.
        assert!(!is_native_export_key("x/AWSDynamoDB/"));
        assert!(!is_native_export_key("b/AWSDynamoDB"));
        assert!(!is_native_export_key("b/AWSDynamoDBx/id/_started"));
    }

    #[test]
    fn dot_dot_and_bad_names_are_refused() {
        let e = DumpKey::from_s3_key("", "../Orders/2026-11-23T09-30-00Z/_schema.json").expect_err("..");
        assert!(e.to_string().contains("escape"), "{e}");
        assert!(DumpKey::from_s3_key("", "b/Orders/2026-11-23T09-30-00Z/data/../_schema.json").is_err());
        assert!(DumpKey::from_s3_key("", "b//2026-11-23T09-30-00Z/_schema.json").is_err());
        assert!(DumpKey::from_s3_key("", "b/no spaces in tables/2026-11-23T09-30-00Z/_schema.json").is_err());
        assert!(DumpKey::from_s3_key("", "b/Orders/2026-11-23 09:30/_schema.json").is_err());
        assert!(matches!(DumpKey::from_s3_key("", "b/Orders/2026-11-23T09-30-00Z/notes.txt"), Err(LayoutError::UnknownFile { .. })));
        assert!(matches!(DumpKey::from_s3_key("dumps/", "other/b/Orders/2026-11-23T09-30-00Z/_schema.json"), Err(LayoutError::OutsidePrefix { .. })));
        assert!(ExportId::new("..", "Orders", ts()).is_err());
        assert!(ExportId::new("b", "ab", ts()).is_err());
        assert!(validate_prefix("dumps").is_err());
        assert!(validate_prefix("a/../").is_err());
        assert_eq!(validate_prefix("a/b/"), Ok(()));
    }

    #[test]
    fn timestamps_are_sortable_utc() {
        let t = Timestamp::from_datetime(time::macros::datetime!(2026-01-02 03:04:05 UTC));
        assert_eq!(t.as_str(), "2026-01-02T03-04-05Z");
        assert_eq!(t.unix_micros(), 1_767_323_045_000_000);
        assert!(Timestamp::parse("2026-01-02T03:04:05Z").is_err());
    }
}
