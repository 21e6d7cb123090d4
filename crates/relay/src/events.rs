//! The relay's telemetry: each occurrence is one function that both logs (tracing)
//! and counts (metrics), so logs and dashboards never disagree. Names are
//! `crossdock_relay_*`; labels are low-cardinality (no keys, no tables).

use crate::copy::CopyOutcome;
use crate::error::RelayError;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Names of every metric, for docs and the exporter's descriptions.
pub const METRICS: &[(&str, &str)] = &[
    ("crossdock_relay_messages_total", "SQS messages handled, by outcome (deleted, retry, left, released)"),
    ("crossdock_relay_objects_total", "objects handled, by outcome (copied, skipped, ignored, misrouted, failed)"),
    ("crossdock_relay_ignored_total", "event records not acted on, by reason"),
    (
        "crossdock_relay_misrouted_total",
        "event records not for this relay as configured, left on the queue (not deleted), by reason (unmapped_bucket, outside_prefix)",
    ),
    ("crossdock_relay_bytes_in_total", "raw (uncompressed) bytes relayed"),
    ("crossdock_relay_bytes_out_total", "bytes stored in GCS"),
    ("crossdock_relay_compression_ratio", "raw/stored ratio of the last relayed data part"),
    ("crossdock_relay_in_flight", "messages being processed"),
    ("crossdock_relay_errors_total", "errors, by type"),
    ("crossdock_relay_heartbeats_total", "visibility extensions, by outcome (ok, failed)"),
    ("crossdock_relay_markers_total", "_SUCCESS checks, by outcome (written, lost_race, already, incomplete)"),
    ("crossdock_relay_queue_lag_seconds", "time from the message being sent to it being received"),
    ("crossdock_relay_copy_seconds", "time to copy one object"),
    ("crossdock_relay_delete_failures_total", "messages a batch delete did not delete"),
    ("crossdock_relay_drains_total", "drains started, by reason (signal, spot, idle)"),
    (
        "crossdock_relay_gcs_requests_total",
        "HTTP requests sent to GCS, by operation (get, download, list, upload, upload_start, upload_chunk, upload_cancel, patch, delete) and purpose (copy, completion)",
    ),
    (
        "crossdock_relay_gcs_sent_bytes_total",
        "request body bytes sent to GCS (retries and resent chunks included), by operation: compare with crossdock_relay_bytes_out_total for the bytes a fault made the relay send twice",
    ),
    ("crossdock_relay_stalls_total", "copies abandoned because they moved no byte for --copy-stall-timeout"),
];

pub fn message_received(message_id: &str, lag: Option<Duration>) {
    debug!(message_id, "message received");
    metrics::gauge!("crossdock_relay_in_flight").increment(1.0);
    if let Some(l) = lag {
        metrics::histogram!("crossdock_relay_queue_lag_seconds").record(l.as_secs_f64());
    }
}

pub fn message_done(message_id: &str, outcome: &'static str) {
    debug!(message_id, outcome, "message done");
    metrics::gauge!("crossdock_relay_in_flight").decrement(1.0);
    metrics::counter!("crossdock_relay_messages_total", "outcome" => outcome).increment(1);
}

pub fn test_event(message_id: &str) {
    info!(message_id, "s3:TestEvent received; deleting it");
}

pub fn malformed(message_id: &str, why: &str) {
    warn!(message_id, error = why, "malformed message: not an S3 event notification; left for retries and the dead-letter queue");
    metrics::counter!("crossdock_relay_errors_total", "type" => "malformed_message").increment(1);
}

pub fn ignored(bucket: &str, key: &str, event: &str, reason: &'static str) {
    debug!(bucket, key, event, reason, "event ignored");
    metrics::counter!("crossdock_relay_ignored_total", "reason" => reason).increment(1);
    metrics::counter!("crossdock_relay_objects_total", "outcome" => "ignored").increment(1);
}

/// An event for a bucket missing from `--dst-bucket-map`: either the map is stale or
/// the queue gets another bucket's events; both need an operator, so the message is
/// kept (redelivered, then dead-lettered) rather than deleted.
pub fn unmapped_bucket(bucket: &str, key: &str, event: &str, configured_buckets: &str) {
    warn!(
        bucket,
        key,
        event,
        configured_buckets,
        "event for a bucket this relay is not configured for (--dst-bucket-map); not copied, left for redelivery and the dead-letter queue"
    );
    misrouted("unmapped_bucket");
}

/// An event for a mapped bucket whose key is outside `--prefix`; kept as for
/// [`unmapped_bucket`].
pub fn outside_prefix(bucket: &str, key: &str, event: &str, prefix: &str) {
    warn!(bucket, key, event, prefix, "event key outside this relay's --prefix; not copied, left for redelivery and the dead-letter queue");
    misrouted("outside_prefix");
}

fn misrouted(reason: &'static str) {
    metrics::counter!("crossdock_relay_misrouted_total", "reason" => reason).increment(1);
    metrics::counter!("crossdock_relay_objects_total", "outcome" => "misrouted").increment(1);
}

pub fn bad_key(bucket: &str, key: &str, why: &str) {
    warn!(bucket, key, error = why, "key is not a crossdock dump key; not copied, left for the dead-letter queue");
    metrics::counter!("crossdock_relay_errors_total", "type" => "bad_key").increment(1);
    metrics::counter!("crossdock_relay_objects_total", "outcome" => "failed").increment(1);
}

pub fn copied(table: &str, src: &str, dst: &str, outcome: &CopyOutcome) {
    let p = outcome.provenance();
    match outcome {
        CopyOutcome::Copied { duration, .. } => {
            let ratio = if p.stored_bytes > 0 { p.raw_bytes as f64 / p.stored_bytes as f64 } else { 0.0 };
            info!(
                table,
                source = src,
                destination = dst,
                raw_bytes = p.raw_bytes,
                stored_bytes = p.stored_bytes,
                items = p.items,
                ratio = format!("{ratio:.2}"),
                duration_ms = duration.as_millis() as u64,
                "object copied"
            );
            metrics::counter!("crossdock_relay_objects_total", "outcome" => "copied").increment(1);
            metrics::counter!("crossdock_relay_bytes_in_total").increment(p.raw_bytes);
            metrics::counter!("crossdock_relay_bytes_out_total").increment(p.stored_bytes);
            metrics::histogram!("crossdock_relay_copy_seconds").record(duration.as_secs_f64());
            if p.codec != "none" {
                metrics::gauge!("crossdock_relay_compression_ratio").set(ratio);
            }
        }
        CopyOutcome::Skipped { .. } => {
            info!(table, source = src, destination = dst, etag = p.source_etag, "already relayed from this ETag; skipped");
            metrics::counter!("crossdock_relay_objects_total", "outcome" => "skipped").increment(1);
        }
    }
}

pub fn source_gone(bucket: &str, key: &str) {
    warn!(bucket, key, "source object no longer exists; nothing to copy");
    metrics::counter!("crossdock_relay_errors_total", "type" => "source_not_found").increment(1);
}

/// A copy that moved no byte (S3 read, GCS upload) for the stall timeout: a hung
/// connection. It was abandoned so its heartbeat stops holding the message.
pub fn copy_stalled(src: &str, e: &RelayError) {
    warn!(source = src, error = %e, kind = e.kind(), "copy stalled (--copy-stall-timeout): abandoned; the message will be retried");
    metrics::counter!("crossdock_relay_stalls_total").increment(1);
    metrics::counter!("crossdock_relay_errors_total", "type" => e.kind()).increment(1);
    metrics::counter!("crossdock_relay_objects_total", "outcome" => "failed").increment(1);
}

/// One HTTP request to GCS (counted where the GCS client sends it, see `gcs::http_client`).
pub fn gcs_request(op: &'static str, purpose: &'static str, body_bytes: u64) {
    metrics::counter!("crossdock_relay_gcs_requests_total", "op" => op, "purpose" => purpose).increment(1);
    if body_bytes > 0 {
        metrics::counter!("crossdock_relay_gcs_sent_bytes_total", "op" => op).increment(body_bytes);
    }
}

/// A resumable upload's chunk failed and the session was asked how much it holds:
/// the upload goes on from `committed` instead of copying the part again.
pub fn upload_resumed(dst: &str, offset: u64, committed: u64, error: &RelayError) {
    warn!(destination = dst, offset, committed, error = %error, "upload chunk failed; resuming at the committed offset");
}

pub fn copy_failed(src: &str, e: &RelayError) {
    warn!(source = src, error = %e, kind = e.kind(), retryable = e.is_retryable(), "copy failed; the message will be retried");
    metrics::counter!("crossdock_relay_errors_total", "type" => e.kind()).increment(1);
    metrics::counter!("crossdock_relay_objects_total", "outcome" => "failed").increment(1);
}

pub fn marker(export: &str, outcome: &'static str, files: u64, items: u64) {
    match outcome {
        "written" => info!(export, files, items, "_SUCCESS written"),
        "lost_race" => info!(export, "_SUCCESS was written by another relay"),
        _ => debug!(export, outcome, "completion checked"),
    }
    metrics::counter!("crossdock_relay_markers_total", "outcome" => outcome).increment(1);
}

pub fn marker_failed(export: &str, e: &RelayError) {
    warn!(export, error = %e, kind = e.kind(), "completion check failed; the message will be retried");
    metrics::counter!("crossdock_relay_errors_total", "type" => e.kind()).increment(1);
}

pub fn heartbeat(message_id: &str, ok: bool, error: Option<String>) {
    if ok {
        debug!(message_id, "visibility extended");
        metrics::counter!("crossdock_relay_heartbeats_total", "outcome" => "ok").increment(1);
    } else {
        warn!(message_id, error, "visibility extension failed; no longer extending, the message will be redelivered");
        metrics::counter!("crossdock_relay_heartbeats_total", "outcome" => "failed").increment(1);
        metrics::counter!("crossdock_relay_errors_total", "type" => "heartbeat").increment(1);
    }
}

pub fn sqs_error(op: &'static str, e: &str) {
    warn!(operation = op, error = e, "SQS call failed");
    metrics::counter!("crossdock_relay_errors_total", "type" => "sqs").increment(1);
}

pub fn delete_failed(message_id: &str, why: &str) {
    warn!(message_id, error = why, "batch delete left a message; it will be redelivered and skipped as a duplicate");
    metrics::counter!("crossdock_relay_delete_failures_total").increment(1);
}

pub fn drain_started(reason: &'static str, in_flight: usize, deadline: Duration) {
    info!(reason, in_flight, deadline_s = deadline.as_secs(), "draining: no new receives; waiting for in-flight copies");
    metrics::counter!("crossdock_relay_drains_total", "reason" => reason).increment(1);
}

pub fn released(message_id: &str) {
    warn!(message_id, "drain deadline reached: copy abandoned, message made visible again");
}
