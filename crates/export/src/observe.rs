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
];
