//! The loader's telemetry: each occurrence is one function that both logs (tracing) and
//! counts (metrics), so logs and dashboards never disagree. Names are `crossdock_load_*`;
//! the label is the target kind (and an outcome where there is one).

use crate::schema::TargetKind;

/// Every metric with its help text, for the binary's descriptions and docs.
pub const METRICS: &[(&str, &str)] = &[
    ("crossdock_load_files_total", "files finished, by target and outcome (loaded, skipped: done by an earlier run, failed)"),
    ("crossdock_load_rows_total", "rows written by finished files, by target"),
    ("crossdock_load_rejects_total", "rows that could not be converted (recorded under _rejects/), by target"),
    ("crossdock_load_batches_total", "write calls (batches), by target"),
    ("crossdock_load_batch_rows_total", "rows written by batches, by target (moves within a file)"),
    ("crossdock_load_batch_seconds", "time to write one batch, by target"),
    ("crossdock_load_retries_total", "batches written only after a retry, by target"),
    ("crossdock_load_tables_total", "tables finished (indexes, count, _LOADED), by target"),
    ("crossdock_load_watch_lease_renewals_total", "lease renewals of pulled markers and work items, by outcome (ok, error)"),
];

/// Explicit histogram buckets (seconds), set by the binary's exporter.
pub const BUCKETS: &[(&str, &[f64])] = &[("crossdock_load_batch_seconds", &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])];

pub fn file_finished(target: TargetKind, file: &str, outcome: &'static str, rows: u64, rejected: u64) {
    tracing::info!(target_kind = target.name(), file, outcome, rows, rejected, "load file {outcome}");
    metrics::counter!("crossdock_load_files_total", "target" => target.name(), "outcome" => outcome).increment(1);
    metrics::counter!("crossdock_load_rows_total", "target" => target.name()).increment(rows);
    metrics::counter!("crossdock_load_rejects_total", "target" => target.name()).increment(rejected);
}

pub fn batch_written(target: TargetKind, rows: usize, secs: f64, retried: bool) {
    tracing::debug!(target_kind = target.name(), rows, secs, retried, "batch written");
    metrics::counter!("crossdock_load_batches_total", "target" => target.name()).increment(1);
    metrics::counter!("crossdock_load_batch_rows_total", "target" => target.name()).increment(rows as u64);
    metrics::histogram!("crossdock_load_batch_seconds", "target" => target.name()).record(secs);
    if retried {
        metrics::counter!("crossdock_load_retries_total", "target" => target.name()).increment(1);
    }
}

pub fn table_finished(export: &crossdock_core::layout::ExportId, target: &'static str, rows: u64, rejected: u64) {
    tracing::info!(export = %export, target, rows, rejected, "load finished");
    metrics::counter!("crossdock_load_tables_total", "target" => target).increment(1);
}

pub fn lease_renewed(subscription: &str, error: Option<&str>) {
    if let Some(error) = error {
        tracing::warn!(subscription, error, "could not renew a lease; another watcher may load it too");
    }
    metrics::counter!("crossdock_load_watch_lease_renewals_total", "outcome" => if error.is_some() { "error" } else { "ok" }).increment(1);
}
