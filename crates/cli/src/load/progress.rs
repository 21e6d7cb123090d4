//! The progress bar of `crossdock load` on a terminal: rows written against the marker's
//! items, files done, rows/s and ETA (`crate::bars`).
//!
//! The counters are fed by the loader's own metrics through a small recorder that
//! the first load installs as the process's `metrics` recorder (`crossdock load` installs
//! no other): `crossdock_load_files_total{outcome=loaded|skipped}` and
//! `crossdock_load_rows_total` move when a file is finished;
//! `crossdock_load_batch_rows_total`, when the loader emits it, moves with every batch
//! written, so rows and rows/s also move within a file. Each load draws from the
//! difference to the counters at its start, so `--watch` shows one bar per marker.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often the bar is updated.
const TICK: Duration = Duration::from_millis(500);

/// Rows of every batch written (optional: without it rows move once per file).
pub const BATCH_ROWS: &str = "crossdock_load_batch_rows_total";

/// Process-wide counters, fed by the loader's metrics.
#[derive(Debug, Default)]
struct Meter {
    /// Files loaded or skipped (already done by an earlier run).
    files: Arc<AtomicU64>,
    /// Rows of finished files.
    file_rows: Arc<AtomicU64>,
    /// Rows of written batches.
    batch_rows: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Snapshot {
    files: u64,
    file_rows: u64,
    batch_rows: u64,
}

impl Snapshot {
    fn since(self, base: Snapshot) -> (u64, u64) {
        let files = self.files.saturating_sub(base.files);
        // Batch rows run ahead of file rows when the loader reports batches; else 0.
        let rows = self.file_rows.saturating_sub(base.file_rows).max(self.batch_rows.saturating_sub(base.batch_rows));
        (files, rows)
    }
}

impl Meter {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            files: self.files.load(Ordering::Relaxed),
            file_rows: self.file_rows.load(Ordering::Relaxed),
            batch_rows: self.batch_rows.load(Ordering::Relaxed),
        }
    }
}

/// Routes the three loader counters to the [`Meter`]; every other metric is dropped.
struct Recorder(Arc<Meter>);

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let m = &self.0;
        match key.name() {
            "crossdock_load_files_total" if key.labels().any(|l| l.key() == "outcome" && matches!(l.value(), "loaded" | "skipped")) => {
                Counter::from_arc(m.files.clone())
            }
            "crossdock_load_rows_total" => Counter::from_arc(m.file_rows.clone()),
            BATCH_ROWS => Counter::from_arc(m.batch_rows.clone()),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The meter, installing its recorder on first use; `None` if another recorder is
/// installed already (then there is no progress bar).
fn meter() -> Option<Arc<Meter>> {
    static METER: OnceLock<Option<Arc<Meter>>> = OnceLock::new();
    METER
        .get_or_init(|| {
            let m = Arc::new(Meter::default());
            metrics::set_global_recorder(Recorder(m.clone())).ok().map(|()| m)
        })
        .clone()
}

/// The progress bar of one load; [`Progress::finish`] leaves its final state on screen.
pub struct Progress {
    bar: indicatif::ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
    /// Brings the bar up to the counters.
    update: Box<dyn Fn() + Send>,
}

impl Progress {
    /// Starts the bar for a load of `files_total` files and `rows_total` rows if bars are
    /// `enabled` (a terminal, not `--no-progress`, not `--output json`).
    pub fn start(files_total: usize, rows_total: u64, enabled: bool) -> Option<Progress> {
        if !enabled {
            return None;
        }
        let meter = meter()?;
        let base = meter.snapshot();
        let bar = crate::bars::bar(true, Some(rows_total), &crate::bars::counted("rows"));
        let update = {
            let bar = bar.clone();
            move || {
                let (files, rows) = meter.snapshot().since(base);
                bar.set_position(rows);
                bar.set_message(format!("{files}/{files_total} files"));
            }
        };
        let tick = update.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tick();
                tokio::time::sleep(TICK).await;
            }
        });
        Some(Progress { bar, ticker, update: Box::new(update) })
    }

    /// Stops updating and leaves the final state on screen.
    pub fn finish(self) {
        self.ticker.abort();
        (self.update)();
        crate::bars::finish(&self.bar);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loaders_metrics_feed_the_meter() {
        let meter = Arc::new(Meter::default());
        let recorder = Recorder(meter.clone());
        let base = meter.snapshot();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("crossdock_load_files_total", "target" => "postgres", "outcome" => "skipped").increment(1);
            metrics::counter!("crossdock_load_files_total", "target" => "postgres", "outcome" => "loaded").increment(1);
            metrics::counter!("crossdock_load_files_total", "target" => "postgres", "outcome" => "failed").increment(1);
            metrics::counter!("crossdock_load_rows_total", "target" => "postgres").increment(500);
            metrics::counter!("crossdock_load_rejects_total", "target" => "postgres").increment(7);
            metrics::counter!("crossdock_load_batches_total", "target" => "postgres").increment(9);
        });
        // Failed files, rejects and batches do not count; rows of finished files do.
        assert_eq!(meter.snapshot().since(base), (2, 500));
        // With per-batch rows, rows move within a file.
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(BATCH_ROWS, "target" => "postgres").increment(800);
        });
        assert_eq!(meter.snapshot().since(base), (2, 800));
        // A later load counts from its own start.
        let second = meter.snapshot();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("crossdock_load_files_total", "target" => "bigtable", "outcome" => "loaded").increment(1);
            metrics::counter!("crossdock_load_rows_total", "target" => "bigtable").increment(40);
        });
        assert_eq!(meter.snapshot().since(second), (1, 40));
    }
}
