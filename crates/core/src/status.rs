//! Where one table export stands in every phase, derived only from the objects the
//! phases already write (`docs/format.md`): the S3 and GCS listings of its directory,
//! plus the few small records a listing cannot show (`_schema.json` for the estimate,
//! `_SUCCESS` for the per-file item counts, `_LOADED`, the catch-up checkpoints). No state
//! of its own, so `crossdock status` can run anywhere, any time, as often as wanted.

use crate::layout::{DumpFile, ExportId};
use crate::manifest::PartEntry;
use crate::marker::{LoadedRecord, SuccessMarker};
use crate::schema::TableSchema;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One object of a listing, by its name relative to the export directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    /// Last modification, Unix milliseconds.
    pub modified_ms: Option<i64>,
}

/// A catch-up checkpoint, as much of it as the status shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncShard {
    pub finished: bool,
    /// `ApproximateCreationDateTime` of the last applied change, Unix milliseconds.
    pub last_change_ms: Option<i64>,
}

/// What is known of one export.
#[derive(Debug, Clone, Default)]
pub struct Observed<'a> {
    /// The export directory in S3 (empty when the exporter's side is gone or elsewhere).
    pub s3: &'a [Listed],
    /// The export directory in GCS.
    pub gcs: &'a [Listed],
    pub schema: Option<&'a TableSchema>,
    pub marker: Option<&'a SuccessMarker>,
    pub loaded: Option<&'a LoadedRecord>,
    pub sync: &'a [SyncShard],
    /// Parts with their plain sizes (a segment checkpoint's), to tell how much the
    /// stored parts are compressed: the export's ETA compares plain bytes with the
    /// table's size estimate.
    pub plain_sizes: &'a [PartEntry],
}

/// `pending`, `running` or `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Running,
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportPhase {
    pub state: State,
    pub segments_done: u32,
    pub segments_total: u32,
    pub parts: u64,
    pub bytes: u64,
    /// The table's size estimate from `_schema.json` (DescribeTable's, ~6 h old).
    pub bytes_estimate: u64,
    /// Items in the finished segments' manifests are not listed; the table's estimate is.
    pub items_estimate: u64,
    pub eta_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayPhase {
    pub state: State,
    pub files_copied: u64,
    /// Data parts written by the exporter so far (all of them once the export is done).
    pub files_total: u64,
    /// Sizes in S3 of the copied parts, and of their copies in GCS.
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub eta_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadPhase {
    pub state: State,
    /// Files with a progress record, of the marker's files.
    pub files_done: u64,
    pub files_total: u64,
    /// Items of the files with a progress record (the `_LOADED` count once finished).
    pub rows: u64,
    pub rows_total: u64,
    /// Files with rejected rows (`_rejects/`), or the rejected rows once finished.
    pub rejects: u64,
    pub destination: Option<String>,
    pub eta_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncPhase {
    pub shards: usize,
    pub shards_finished: usize,
    /// Now − the newest applied change of the unfinished shards (an upper bound of the
    /// lag: an idle table looks behind by its idle time).
    pub since_last_change_s: Option<u64>,
}

/// One row of `crossdock status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableStatus {
    pub batch: String,
    pub table: String,
    pub timestamp: String,
    pub export: ExportPhase,
    pub relay: RelayPhase,
    /// `_SUCCESS` is written.
    pub success: bool,
    pub load: LoadPhase,
    /// `_LOADED` is written.
    pub loaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncPhase>,
}

/// Remaining work at the rate seen so far (`done` units between `first_ms` and `last_ms`).
fn eta(done: u64, total: u64, first_ms: Option<i64>, last_ms: Option<i64>, now_ms: i64) -> Option<u64> {
    let (first, last) = (first_ms?, last_ms?);
    if done == 0 || total <= done || last <= first {
        return None;
    }
    let rate = done as f64 / (last - first) as f64;
    let left_ms = (total - done) as f64 / rate;
    // The time since the last object counts against the remaining time: a stalled
    // phase does not keep promising the same ETA.
    Some(((left_ms - (now_ms - last).max(0) as f64).max(0.0) / 1000.0).ceil() as u64)
}

fn is_compressed_part(f: &DumpFile) -> bool {
    matches!(f, DumpFile::Part { codec, .. } if *codec != crate::Codec::None)
}

/// Whether `status` (computed without [`Observed::plain_sizes`]) would be better with
/// them: its export is running with an ETA, and `s3` lists compressed parts.
pub fn wants_plain_sizes(status: &TableStatus, s3: &[Listed]) -> bool {
    status.export.eta_s.is_some() && s3.iter().any(|o| DumpFile::parse(&o.name).is_some_and(|f| is_compressed_part(&f)))
}

/// Plain bytes per stored byte of the listed parts: 1 for uncompressed parts, else
/// measured on the `sample` parts that are listed (1 without any).
fn plain_per_stored(listed: &[(DumpFile, Listed)], sample: &[PartEntry]) -> f64 {
    let compressed = listed.iter().any(|(f, _)| is_compressed_part(f));
    let (plain, stored) = sample
        .iter()
        .filter_map(|p| Some((p.bytes, listed.iter().find(|(_, l)| l.name == p.name)?.1.size)))
        .fold((0u64, 0u64), |(a, b), (p, s)| (a + p, b + s));
    if compressed && plain > 0 && stored > 0 {
        plain as f64 / stored as f64
    } else {
        1.0
    }
}

fn state(started: bool, done: bool) -> State {
    match (started, done) {
        (_, true) => State::Done,
        (true, false) => State::Running,
        (false, false) => State::Pending,
    }
}

/// The status of `export` from what was observed of it, at `now_ms`.
pub fn table_status(id: &ExportId, seen: &Observed<'_>, now_ms: i64) -> TableStatus {
    let parse = |l: &[Listed]| -> Vec<(DumpFile, Listed)> { l.iter().filter_map(|o| Some((DumpFile::parse(&o.name)?, o.clone()))).collect() };
    let s3 = parse(seen.s3);
    let gcs = parse(seen.gcs);
    let has = |files: &[(DumpFile, Listed)], f: DumpFile| files.iter().any(|(d, _)| *d == f);

    // Export: manifests are written as segments finish; their names carry the total.
    let mut segments_total = seen.schema.map_or(0, |s| s.total_segments);
    let mut manifests = BTreeSet::new();
    for (f, _) in s3.iter().chain(&gcs) {
        if let DumpFile::Manifest { segment, total } = f {
            manifests.insert(*segment);
            segments_total = segments_total.max(*total);
        }
    }
    fn parts(files: &[(DumpFile, Listed)]) -> BTreeMap<(u32, u32), &Listed> {
        files.iter().filter_map(|(f, l)| if let DumpFile::Part { segment, part, .. } = f { Some(((*segment, *part), l)) } else { None }).collect()
    }
    let (s3_parts, gcs_parts) = (parts(&s3), parts(&gcs));
    let success = has(&gcs, DumpFile::Success);
    let export_done = success || (segments_total > 0 && manifests.len() as u32 >= segments_total);
    let bytes: u64 = s3_parts.values().map(|l| l.size).sum();
    let bytes_estimate = seen.schema.map_or(0, |s| s.size_bytes_estimate);
    let plain_bytes = (bytes as f64 * plain_per_stored(&s3, seen.plain_sizes)) as u64;
    let s3_first = s3.iter().filter(|(f, _)| *f == DumpFile::Schema).find_map(|(_, l)| l.modified_ms);
    let s3_last = s3_parts.values().filter_map(|l| l.modified_ms).max();
    let export = ExportPhase {
        state: state(!s3.is_empty() || !gcs.is_empty(), export_done),
        segments_done: manifests.len() as u32,
        segments_total,
        parts: s3_parts.len() as u64,
        bytes,
        bytes_estimate,
        items_estimate: seen.schema.map_or(0, |s| s.item_count_estimate),
        eta_s: if export_done { None } else { eta(plain_bytes, bytes_estimate, s3_first, s3_last, now_ms) },
    };

    // Relay: data parts present in GCS, of those the exporter wrote (or the marker lists).
    let files_total = seen.marker.map_or(s3_parts.len().max(gcs_parts.len()) as u64, |m| m.files.len() as u64);
    let files_copied = gcs_parts.len() as u64;
    let raw_bytes = match seen.marker {
        Some(m) => m.totals.raw_bytes,
        None => gcs_parts.keys().filter_map(|k| s3_parts.get(k)).map(|l| l.size).sum(),
    };
    let gcs_times: Vec<i64> = gcs_parts.values().filter_map(|l| l.modified_ms).collect();
    let relay = RelayPhase {
        state: state(files_copied > 0, success),
        files_copied,
        files_total,
        raw_bytes,
        stored_bytes: gcs_parts.values().map(|l| l.size).sum(),
        eta_s: if success || !export_done {
            None
        } else {
            eta(files_copied, files_total, gcs_times.iter().min().copied(), gcs_times.iter().max().copied(), now_ms)
        },
    };

    // Load: a progress record per finished file; `_LOADED` once counted.
    let progress: BTreeSet<(u32, u32)> =
        gcs.iter().filter_map(|(f, _)| if let DumpFile::LoadProgress { segment, part } = f { Some((*segment, *part)) } else { None }).collect();
    let rejects = gcs.iter().filter(|(f, _)| matches!(f, DumpFile::LoadRejects { .. })).count() as u64;
    let (rows_total, rows_done) = match seen.marker {
        Some(m) => (m.totals.items, m.files.iter().filter(|f| progress.contains(&(f.segment, f.part))).map(|f| f.items).sum()),
        None => (0, 0),
    };
    let progress_times: Vec<i64> = gcs.iter().filter(|(f, _)| matches!(f, DumpFile::LoadProgress { .. })).filter_map(|(_, l)| l.modified_ms).collect();
    let load = match seen.loaded {
        Some(rec) => LoadPhase {
            state: State::Done,
            files_done: files_total,
            files_total,
            rows: rec.rows_in_target,
            rows_total: rec.items_expected,
            rejects: rec.rejected,
            destination: Some(rec.destination.clone()),
            eta_s: None,
        },
        None => LoadPhase {
            state: state(!progress.is_empty(), false),
            files_done: progress.len() as u64,
            files_total: if success { files_total } else { 0 },
            rows: rows_done,
            rows_total,
            rejects,
            destination: None,
            eta_s: eta(rows_done, rows_total, progress_times.iter().min().copied(), progress_times.iter().max().copied(), now_ms),
        },
    };

    let sync = (!seen.sync.is_empty()).then(|| {
        let open: Vec<&SyncShard> = seen.sync.iter().filter(|s| !s.finished).collect();
        let newest = open.iter().filter_map(|s| s.last_change_ms).max();
        SyncPhase {
            shards: seen.sync.len(),
            shards_finished: seen.sync.len() - open.len(),
            since_last_change_s: newest.map(|t| ((now_ms - t).max(0) / 1000) as u64),
        }
    });

    TableStatus {
        batch: id.batch.clone(),
        table: id.table.clone(),
        timestamp: id.timestamp.to_string(),
        export,
        relay,
        success,
        load,
        loaded: seen.loaded.is_some(),
        sync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Timestamp;

    fn l(name: &str, size: u64, at: i64) -> Listed {
        Listed { name: name.into(), size, modified_ms: Some(at) }
    }

    fn id() -> ExportId {
        ExportId::new("b", "Orders", Timestamp::parse("2026-11-30T09-00-00Z").expect("ts")).expect("id")
    }

    #[test]
    fn an_export_half_way_shows_segments_bytes_and_an_eta() {
        let s3 = [
            l("_schema.json", 1, 0),
            l("data/seg-00000-part-00000.json", 100, 10_000),
            l("data/seg-00001-part-00000.json", 100, 20_000),
            l("manifests/seg-00000-of-00004.json", 1, 20_000),
        ];
        let st = table_status(&id(), &Observed { s3: &s3, ..Default::default() }, 20_000);
        assert_eq!((st.export.state, st.export.segments_done, st.export.segments_total, st.export.parts, st.export.bytes), (State::Running, 1, 4, 2, 200));
        assert_eq!(st.export.eta_s, None, "no estimate without _schema.json");
        assert_eq!((st.relay.state, st.relay.files_copied, st.relay.files_total), (State::Pending, 0, 2));
        assert!(!st.success && !st.loaded && st.sync.is_none());
    }

    #[test]
    fn the_eta_of_compressed_parts_counts_the_plain_bytes_a_checkpoint_records() {
        let s3 = [l("_schema.json", 1, 0), l("data/seg-00000-part-00000.json.zst", 100, 10_000), l("data/seg-00001-part-00000.json.zst", 100, 20_000)];
        let schema: TableSchema = serde_json::from_value(serde_json::json!({
            "format_version": 1, "table": "Orders", "key_schema": [{"name": "pk", "role": "HASH"}],
            "attribute_definitions": [{"name": "pk", "type": "S"}], "global_secondary_indexes": [], "local_secondary_indexes": [],
            "billing_mode": "PAY_PER_REQUEST", "capacity_before": null, "item_count_estimate": 0, "size_bytes_estimate": 1600,
            "total_segments": 2, "crossdock_version": "0"
        }))
        .expect("schema");
        let sample = [PartEntry { name: "data/seg-00000-part-00000.json.zst".into(), items: 1, bytes: 400, sha256: String::new() }];
        let eta = |plain_sizes: &[PartEntry]| {
            table_status(&id(), &Observed { s3: &s3, schema: Some(&schema), plain_sizes, ..Default::default() }, 20_000).export.eta_s
        };
        // 200 stored bytes in 20 s are 800 plain bytes of 1,600: 20 s left, not 140 s.
        assert_eq!((eta(&sample), eta(&[])), (Some(20), Some(140)));
        let without = table_status(&id(), &Observed { s3: &s3, schema: Some(&schema), ..Default::default() }, 20_000);
        assert!(wants_plain_sizes(&without, &s3));
        let plain = [l("_schema.json", 1, 0), l("data/seg-00000-part-00000.json", 100, 10_000)];
        assert!(!wants_plain_sizes(&without, &plain), "uncompressed parts need no plain sizes");
    }

    #[test]
    fn relayed_loading_and_syncing_are_read_from_their_records() {
        let s3: Vec<Listed> = ["_schema.json", "data/seg-00000-part-00000.json", "data/seg-00000-part-00001.json", "manifests/seg-00000-of-00001.json"]
            .iter()
            .map(|n| l(n, 50, 0))
            .collect();
        let gcs = [
            l("data/seg-00000-part-00000.json.zst", 10, 1_000),
            l("data/seg-00000-part-00001.json.zst", 12, 2_000),
            l("_SUCCESS", 1, 2_000),
            l("_progress/seg-00000-part-00000.json", 1, 5_000),
            l("_rejects/seg-00000-part-00000.jsonl", 1, 5_000),
        ];
        let marker: SuccessMarker = serde_json::from_value(serde_json::json!({
            "format_version": 1, "export": {"batch": "b", "table": "Orders", "timestamp": "2026-11-30T09-00-00Z"}, "codec": "zstd",
            "schema": {
                "format_version": 1, "table": "Orders", "key_schema": [{"name": "pk", "role": "HASH"}],
                "attribute_definitions": [{"name": "pk", "type": "S"}], "global_secondary_indexes": [], "local_secondary_indexes": [],
                "billing_mode": "PAY_PER_REQUEST", "capacity_before": null, "item_count_estimate": 0, "size_bytes_estimate": 0,
                "total_segments": 1, "crossdock_version": "test"
            },
            "files": [
                {"name": "data/seg-00000-part-00000.json.zst", "segment": 0, "part": 0, "items": 30, "raw_bytes": 50, "stored_bytes": 10, "sha256": "x"},
                {"name": "data/seg-00000-part-00001.json.zst", "segment": 0, "part": 1, "items": 70, "raw_bytes": 50, "stored_bytes": 12, "sha256": "x"}],
            "totals": {"files": 2, "items": 100, "raw_bytes": 100, "stored_bytes": 22}, "type_stats": {}, "written_at": "", "written_by": ""
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let sync = [SyncShard { finished: false, last_change_ms: Some(7_000) }, SyncShard { finished: true, last_change_ms: Some(1) }];
        let seen = Observed { s3: &s3, gcs: &gcs, marker: Some(&marker), sync: &sync, ..Default::default() };
        let st = table_status(&id(), &seen, 9_000);
        assert_eq!(st.export.state, State::Done);
        assert_eq!((st.relay.state, st.relay.files_copied, st.relay.raw_bytes, st.relay.stored_bytes), (State::Done, 2, 100, 22));
        assert!(st.success);
        assert_eq!(
            (st.load.state, st.load.files_done, st.load.files_total, st.load.rows, st.load.rows_total, st.load.rejects),
            (State::Running, 1, 2, 30, 100, 1)
        );
        let sync = st.sync.expect("sync");
        assert_eq!((sync.shards, sync.shards_finished, sync.since_last_change_s), (2, 1, Some(2)));
    }

    #[test]
    fn the_eta_follows_the_rate_and_counts_a_stall_against_it() {
        // 10 of 40 in 10 s: 30 s left at the end of the window…
        assert_eq!(eta(10, 40, Some(0), Some(10_000), 10_000), Some(30));
        // …and 20 s left ten seconds later with nothing new.
        assert_eq!(eta(10, 40, Some(0), Some(10_000), 20_000), Some(20));
        assert_eq!(eta(40, 40, Some(0), Some(10_000), 10_000), None, "done");
        assert_eq!(eta(0, 40, Some(0), Some(10_000), 10_000), None, "no rate yet");
    }
}
