//! The catch-up leg's telemetry: each occurrence is one function that both logs
//! (tracing) and counts (metrics), so logs and dashboards never disagree. Names are
//! `crossdock_sync_*`; labels are the table and, for lag, the shard (a stream has a
//! handful of open shards at a time).

use std::time::Duration;
use tracing::{debug, info, warn};

/// Every metric with its help text, for the binary's descriptions and docs.
pub const METRICS: &[(&str, &str)] = &[
    ("crossdock_sync_records_total", "change records read from the stream"),
    ("crossdock_sync_applied_total", "changes applied to the target after keeping the last per key in a batch, by op (upsert, delete)"),
    ("crossdock_sync_batches_total", "batches applied"),
    ("crossdock_sync_batch_seconds", "time to apply one batch and write its checkpoints"),
    ("crossdock_sync_batch_changes", "change records per batch"),
    ("crossdock_sync_lag_seconds", "now minus the creation time of the last applied change, per shard (0 when caught up)"),
    ("crossdock_sync_lag_observed_seconds", "the largest shard lag, observed after every batch and idle poll"),
    ("crossdock_sync_shards", "shards by state (reading, waiting for a parent, finished)"),
    ("crossdock_sync_checkpoints_total", "checkpoints written"),
    ("crossdock_sync_retries_total", "retried calls, by operation"),
    ("crossdock_sync_errors_total", "errors that stopped the sync, by type"),
    ("crossdock_sync_columns_added_total", "columns added for attributes first seen in the stream"),
];

/// Explicit histogram buckets (seconds or changes), set by the binary's exporter.
pub const BUCKETS: &[(&str, &[f64])] = &[
    ("crossdock_sync_batch_seconds", &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
    ("crossdock_sync_batch_changes", &[1.0, 10.0, 100.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 50_000.0]),
    ("crossdock_sync_lag_observed_seconds", &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3_600.0, 86_400.0]),
];

pub fn started(table: &str, stream: &str, shards: usize, checkpoints: usize) {
    info!(table, stream, shards, checkpoints, "sync started");
}

pub fn shard_started(table: &str, shard: &str, from: &str) {
    info!(table, shard, from, "reading shard");
}

pub fn shard_finished(table: &str, shard: &str) {
    info!(table, shard, "shard finished: closed and every change applied");
}

pub fn shards(table: &str, reading: usize, waiting: usize, finished: usize) {
    for (state, n) in [("reading", reading), ("waiting", waiting), ("finished", finished)] {
        metrics::gauge!("crossdock_sync_shards", "table" => table.to_string(), "state" => state).set(n as f64);
    }
}

pub fn records_read(table: &str, shard: &str, n: usize) {
    debug!(table, shard, records = n, "records read");
    metrics::counter!("crossdock_sync_records_total", "table" => table.to_string()).increment(n as u64);
}

pub fn batch_applied(table: &str, records: usize, upserts: usize, deletes: usize, took: Duration) {
    info!(table, records, upserts, deletes, ms = took.as_millis() as u64, "batch applied");
    metrics::counter!("crossdock_sync_batches_total", "table" => table.to_string()).increment(1);
    metrics::counter!("crossdock_sync_applied_total", "table" => table.to_string(), "op" => "upsert").increment(upserts as u64);
    metrics::counter!("crossdock_sync_applied_total", "table" => table.to_string(), "op" => "delete").increment(deletes as u64);
    metrics::histogram!("crossdock_sync_batch_seconds", "table" => table.to_string()).record(took.as_secs_f64());
    metrics::histogram!("crossdock_sync_batch_changes", "table" => table.to_string()).record(records as f64);
}

pub fn columns_added(table: &str, attributes: &[String]) {
    info!(table, ?attributes, "attributes first seen in the stream: added JSON columns for them");
    metrics::counter!("crossdock_sync_columns_added_total", "table" => table.to_string()).increment(attributes.len() as u64);
}

pub fn checkpoint_written(table: &str, shard: &str, sequence: Option<&str>, finished: bool) {
    debug!(table, shard, sequence, finished, "checkpoint written");
    metrics::counter!("crossdock_sync_checkpoints_total", "table" => table.to_string()).increment(1);
}

pub fn lag(table: &str, shard: &str, lag: Duration) {
    metrics::gauge!("crossdock_sync_lag_seconds", "table" => table.to_string(), "shard" => shard.to_string()).set(lag.as_secs_f64());
}

pub fn max_lag(table: &str, lag: Duration) {
    metrics::histogram!("crossdock_sync_lag_observed_seconds", "table" => table.to_string()).record(lag.as_secs_f64());
}

pub fn retry(table: &str, op: &'static str, attempt: u32, error: &str) {
    warn!(table, op, attempt, error, "retrying");
    metrics::counter!("crossdock_sync_retries_total", "op" => op).increment(1);
}

pub fn iterator_renewed(table: &str, shard: &str) {
    debug!(table, shard, "shard iterator expired: renewed at the last read position");
}

pub fn caught_up(table: &str, lag_ms: u64, held: Duration) {
    info!(table, lag_ms, held_ms = held.as_millis() as u64, "caught up: every shard under --until-lag for the hold period");
}

pub fn failed(table: &str, kind: &'static str, error: &str) {
    warn!(table, kind, error, "sync stopped");
    metrics::counter!("crossdock_sync_errors_total", "type" => kind).increment(1);
}

pub fn interrupted(table: &str) {
    info!(table, "sync interrupted: unapplied records will be read again on restart");
}
