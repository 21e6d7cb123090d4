//! The progress line of `crossdock load` on a terminal: files done/total, rows written,
//! rows/s and elapsed time, redrawn on stderr twice a second (the exporter's approach:
//! counters + a ticker task, only on a terminal and not with `--output json`).
//!
//! The counters are fed by the loader's own metrics through a small recorder that
//! the first load installs as the process's `metrics` recorder (`crossdock load` installs
//! no other): `crossdock_load_files_total{outcome=loaded|skipped}` and
//! `crossdock_load_rows_total` move when a file is finished;
//! `crossdock_load_batch_rows_total`, when the loader emits it, moves with every batch
//! written, so rows and rows/s also move within a file. Each load draws from the
//! difference to the counters at its start, so `--watch` shows one line per marker.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
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
/// installed already (then there is no progress line).
fn meter() -> Option<Arc<Meter>> {
    static METER: OnceLock<Option<Arc<Meter>>> = OnceLock::new();
    METER
        .get_or_init(|| {
            let m = Arc::new(Meter::default());
            metrics::set_global_recorder(Recorder(m.clone())).ok().map(|()| m)
        })
        .clone()
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The text of the line.
fn line(files_done: u64, files_total: u64, rows: u64, secs: f64) -> String {
    let rate = if secs > 0.0 { (rows as f64 / secs).round() as u64 } else { 0 };
    format!("{files_done}/{files_total} files  {} rows  {} rows/s  {secs:.1} s", grouped(rows), grouped(rate))
}

struct State {
    meter: Arc<Meter>,
    base: Snapshot,
    files_total: u64,
    started: Instant,
    drawn: AtomicBool,
}

impl State {
    /// The line now, and whether anything moved since the start.
    fn now(&self) -> (String, bool) {
        let (files, rows) = self.meter.snapshot().since(self.base);
        (line(files, self.files_total, rows, self.started.elapsed().as_secs_f64()), files > 0 || rows > 0)
    }

    fn draw(&self) {
        // Ends at column 0, so a log line written meanwhile overwrites it rather than
        // being appended to it; the next tick redraws below that line.
        eprint!("\r{}\x1b[K\r", self.now().0);
        self.drawn.store(true, Ordering::Relaxed);
    }
}

/// The progress line of one load; [`Progress::finish`] prints its final state.
pub struct Progress {
    state: Arc<State>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts the line for a load of `files_total` files if `enabled` (not
    /// `--no-progress`, not `--output json`) and stderr is a terminal.
    pub fn start(files_total: usize, enabled: bool) -> Option<Progress> {
        if !enabled || !std::io::stderr().is_terminal() {
            return None;
        }
        let meter = meter()?;
        let state = Arc::new(State { base: meter.snapshot(), meter, files_total: files_total as u64, started: Instant::now(), drawn: AtomicBool::new(false) });
        let s = state.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                s.draw();
            }
        });
        Some(Progress { state, ticker })
    }

    /// Stops redrawing and leaves the final line (if the load did anything) on screen.
    pub fn finish(self) {
        self.ticker.abort();
        let (text, moved) = self.state.now();
        if moved || self.state.drawn.load(Ordering::Relaxed) {
            eprintln!("\r{text}\x1b[K");
        }
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
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn line_shows_files_rows_and_rate() {
        assert_eq!(line(3, 8, 12_000, 2.0), "3/8 files  12,000 rows  6,000 rows/s  2.0 s");
        assert_eq!(line(0, 1, 0, 0.0), "0/1 files  0 rows  0 rows/s  0.0 s");
    }

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
