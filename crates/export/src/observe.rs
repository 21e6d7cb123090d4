//! What an export reports as it goes ([`ExportEvent`]) and who listens ([`Observer`]):
//! the binary's progress line and the tests. Shared by the run and the segment scans.

use crossdock_core::layout::ExportId;

/// Something that happened during an export, for progress displays and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportEvent {
    /// Checks passed, the schema is written; scanning starts (after any raise).
    Started {
        export: ExportId,
        total_segments: u32,
        size_bytes_estimate: u64,
        rcu_budget: Option<f64>,
    },
    /// `_capacity.json` written (nothing raised yet).
    LeaseTaken {
        key: String,
    },
    /// Read capacity raised and the table ACTIVE again.
    CapacityRaised {
        read: i64,
    },
    /// One Scan page written into the current part.
    Page {
        segment: u32,
        items: u64,
        bytes: u64,
        consumed_rcu: f64,
    },
    /// A data part is durable in S3 (and its checkpoint follows).
    PartWritten {
        segment: u32,
        items: u64,
        bytes: u64,
    },
    SegmentDone {
        segment: u32,
    },
    /// Read capacity back to the original.
    CapacityRestored {
        read: i64,
    },
    /// DescribeExport of a native export that is running (`IN_PROGRESS`) or ended.
    NativeExportStatus {
        arn: String,
        status: String,
        elapsed_secs: u64,
    },
    /// A data file of a native export was read, its checksum matched and its items
    /// were counted (nothing is written until every file is checked).
    NativeFileChecked {
        key: String,
        items: u64,
        bytes: u64,
    },
    /// A checked data file was copied into the export directory as a part.
    NativeFileAdopted {
        key: String,
        part: String,
    },
}

/// Receives [`ExportEvent`]s synchronously, on the export's task.
pub trait Observer: Send + Sync {
    fn event(&self, event: &ExportEvent);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;
impl Observer for NoObserver {
    fn event(&self, _event: &ExportEvent) {}
}

/// The exporter's metrics with their help texts, for the binary's `/metrics`
/// descriptions and the docs; the counters move where they happen (`scan`, `writer`,
/// `lease`, `pages`).
pub const METRICS: &[(&str, &str)] = &[
    ("crossdock_export_items_total", "items scanned and written"),
    ("crossdock_export_consumed_rcu_total", "read capacity units consumed by the scan"),
    ("crossdock_export_parts_total", "data parts written to S3"),
    ("crossdock_export_segments_total", "segments finished (manifest written)"),
    ("crossdock_export_upload_chunks_total", "multipart upload chunks sent to S3"),
    ("crossdock_export_throttled_total", "Scan calls throttled by DynamoDB"),
    ("crossdock_export_capacity_changes_total", "read capacity changes, by direction (raise, restore)"),
    ("crossdock_export_lease_heartbeats_total", "capacity lease heartbeats, by outcome (renewed, lost, error)"),
    ("crossdock_export_native_files_total", "data files of DynamoDB native exports read, by outcome (checked, checksum_mismatch, copied)"),
    ("crossdock_export_native_bytes_total", "uncompressed bytes of DynamoDB native export data files read"),
];

/// A native export's data file whose checksum and item count matched.
pub fn native_file_checked(bucket: &str, key: &str, items: u64, bytes: u64, check: &'static str) {
    tracing::info!(bucket, key, items, bytes, check, "native export data file checked");
    metrics::counter!("crossdock_export_native_files_total", "outcome" => "checked").increment(1);
    metrics::counter!("crossdock_export_native_bytes_total").increment(bytes);
}

/// A native export's data file whose bytes are not those its manifest records.
pub fn native_checksum_mismatch(bucket: &str, key: &str, expected: &str, actual: &str) {
    tracing::error!(bucket, key, expected, actual, "native export data file fails its checksum; nothing written");
    metrics::counter!("crossdock_export_native_files_total", "outcome" => "checksum_mismatch").increment(1);
}

/// A checked data file copied into the export directory.
pub fn native_file_copied(bucket: &str, from: &str, to: &str) {
    tracing::debug!(bucket, from, to, "native export data file copied as a part");
    metrics::counter!("crossdock_export_native_files_total", "outcome" => "copied").increment(1);
}

/// A native export without `manifest-files.json` (moto writes none): its data files are
/// found by listing, and only single-part ETags can check them.
pub fn native_without_manifest(bucket: &str, dir: &str, files: usize) {
    tracing::warn!(
        bucket,
        dir,
        files,
        "native export has no manifest-files.json: adopting the data files listed under data/, checked against their ETags where those are plain MD5s"
    );
}

/// The state of a native export being waited for.
pub fn native_export_status(table: &str, arn: &str, status: &str, elapsed_secs: u64) {
    tracing::info!(table, arn, status, elapsed_secs, "native export");
}
