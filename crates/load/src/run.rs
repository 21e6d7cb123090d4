//! Orchestration of one load: plan, table, files (skipping finished ones), indexes,
//! row count against the marker, `_LOADED`. Also the full read-back verification.

use crate::error::LoadError;
use crate::marker::{read_part, Marker};
use crate::rowparse::RowParser;
use crate::progress::{self, FileProgress, FileStatus, Reject};
use crate::schema::{items_equal, typed_json, Row, TableModel, TargetKind};
use crate::target::{BatchLimits, Target};
use crossdock_core::item::{parse_line, Item};
use crossdock_core::marker::{LoadedRecord, MarkerFile};
use crossdock_core::pipeline::{BatchConfig, Pipeline, TargetConfig};
use crossdock_core::routing::Route;
use crossdock_core::sizing::AdaptiveBatch;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a marker's table goes, per the pipeline.
#[derive(Debug, Clone)]
pub struct Routing {
    pub route: Route,
    pub target: TargetConfig,
    pub batch: BatchConfig,
    pub destination: Option<String>,
}

/// Routes the marker's table with the pipeline (`auto` or per-table overrides).
pub fn route(marker: &Marker, pipeline: &Pipeline) -> Result<Routing, LoadError> {
    let table = &marker.marker.export.table;
    let (route, target, batch) = pipeline.target_for(table, &marker.marker.schema);
    let target = target.cloned().ok_or_else(|| {
        LoadError::Config(format!(
            "table {table} routes to the {} target but pipeline {:?} has no [targets.{}]",
            match route {
                Route::Relational => "relational",
                Route::WideColumn => "wide-column",
            },
            pipeline.name,
            match route {
                Route::Relational => "relational",
                Route::WideColumn => "wide_column",
            }
        ))
    })?;
    Ok(Routing { route, target, batch, destination: pipeline.table(table).destination })
}

/// The model's target kind for a target configuration.
pub fn kind_of(t: &TargetConfig) -> TargetKind {
    match t {
        TargetConfig::Spanner { .. } => TargetKind::Spanner,
        TargetConfig::Postgres { .. } => TargetKind::Postgres,
        TargetConfig::Bigtable { .. } => TargetKind::Bigtable,
    }
}

/// The batch settings in force: target limits overridden by the pipeline, never above
/// the service limit.
#[derive(Debug, Clone, Serialize)]
pub struct BatchPlan {
    pub start_rows: usize,
    pub max_rows: usize,
    pub writers: usize,
    pub adaptive: bool,
    pub basis: String,
}

pub fn batch_plan(limits: &BatchLimits, cfg: &BatchConfig) -> BatchPlan {
    let max_rows = cfg.max_rows.unwrap_or(limits.max).clamp(1, limits.max);
    BatchPlan {
        start_rows: cfg.rows.unwrap_or(limits.start).clamp(1, max_rows),
        max_rows,
        writers: cfg.writers.unwrap_or(limits.writers).max(1),
        adaptive: cfg.adaptive.unwrap_or(true),
        basis: limits.basis.clone(),
    }
}

/// What `--dry-run` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub marker: String,
    pub export: String,
    pub route: Route,
    pub target: &'static str,
    pub destination: String,
    pub files: usize,
    pub items: u64,
    pub ddl: Vec<String>,
    pub batch: BatchPlan,
    pub model: TableModel,
}

/// Options of one load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Rows that may be rejected before the load fails.
    pub max_errors: u64,
    /// Load again even if `_LOADED` says this destination is done.
    pub force: bool,
}

/// The result of a load (`--output json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub marker: String,
    pub export: String,
    pub target: &'static str,
    pub destination: String,
    /// `loaded` or `already-loaded`.
    pub status: &'static str,
    pub table_created: bool,
    pub files_total: usize,
    pub files_loaded: usize,
    pub files_skipped: usize,
    pub rows_written: u64,
    pub rejected: u64,
    pub items_expected: u64,
    pub rows_in_target: u64,
    pub indexes: Vec<String>,
    pub batches: u64,
    pub retries: u64,
    pub max_rows_per_batch: usize,
    pub max_mutations_per_call: usize,
    pub duration_ms: u64,
}

fn event_file(target: TargetKind, file: &str, outcome: &'static str, rows: u64, rejected: u64) {
    tracing::info!(target_kind = target.name(), file, outcome, rows, rejected, "load file {outcome}");
    metrics::counter!("crossdock_load_files_total", "target" => target.name(), "outcome" => outcome).increment(1);
    metrics::counter!("crossdock_load_rows_total", "target" => target.name()).increment(rows);
    metrics::counter!("crossdock_load_rejects_total", "target" => target.name()).increment(rejected);
}

fn event_batch(target: TargetKind, rows: usize, secs: f64, retried: bool) {
    tracing::debug!(target_kind = target.name(), rows, secs, retried, "batch written");
    metrics::counter!("crossdock_load_batches_total", "target" => target.name()).increment(1);
    metrics::histogram!("crossdock_load_batch_seconds", "target" => target.name()).record(secs);
    if retried {
        metrics::counter!("crossdock_load_retries_total", "target" => target.name()).increment(1);
    }
}

/// Rows of one file, and its rejects.
struct Converted {
    rows: Vec<Row>,
    rejects: Vec<Reject>,
}

fn convert(model: &TableModel, file: &str, raw: &[u8]) -> Converted {
    // Bigtable needs a row key it can build; other targets take any row.
    let check = |row: &Row| -> Result<(), String> {
        if model.target == TargetKind::Bigtable {
            crate::target::bigtable::row_key(model, row).map(|_| ())
        } else {
            Ok(())
        }
    };
    let parser = RowParser::new(model);
    let mut rows = Vec::new();
    let mut rejects = Vec::new();
    for (i, line) in raw.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let n = i as u64 + 1;
        let reject = |reason: String| Reject { file: file.into(), line: n, reason, item: String::from_utf8_lossy(line).into_owned() };
        let Ok(text) = std::str::from_utf8(line) else {
            rejects.push(reject("not UTF-8".into()));
            continue;
        };
        let row = match parser.parse(text) {
            Some(row) => Ok(row),
            None => parse_line(text, n).map_err(|e| e.to_string()).and_then(|item| model.into_row(item)),
        };
        match row.and_then(|row| check(&row).map(|_| row)) {
            Ok(row) => rows.push(row),
            Err(reason) => rejects.push(reject(reason)),
        }
    }
    Converted { rows, rejects }
}

/// Writes `rows` with `plan.writers` concurrent writers, each with its own adaptive
/// batch size; retryable failures halve the writer's batch and back off.
async fn write_rows<'a, T: Target>(target: &T, model: &TableModel, rows: Vec<Row>, plan: &BatchPlan, sizes: &'a [Mutex<AdaptiveBatch>], stop: &AtomicBool) -> Result<u64, LoadError> {
    let queue = &Mutex::new(rows.into_iter());
    let written = &AtomicU64::new(0);
    let writer = |slot: &'a Mutex<AdaptiveBatch>| async move {
        // Each writer's batch size carries over from file to file.
        let mut size = slot.lock().map(|s| s.clone()).unwrap_or_else(|_| AdaptiveBatch::new(plan.start_rows, 1, plan.max_rows));
        let r = write_some(target, model, plan, queue, written, &mut size, stop).await;
        if let Ok(mut s) = slot.lock() {
            *s = size;
        }
        r
    };
    futures::future::try_join_all(sizes.iter().map(writer)).await?;
    Ok(written.load(Ordering::Relaxed))
}

/// One writer: takes batches off `queue` until it is empty or the load stops.
async fn write_some<T: Target>(
    target: &T,
    model: &TableModel,
    plan: &BatchPlan,
    queue: &Mutex<std::vec::IntoIter<Row>>,
    written: &AtomicU64,
    size: &mut AdaptiveBatch,
    stop: &AtomicBool,
) -> Result<(), LoadError> {
    {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = if plan.adaptive { size.size() } else { plan.start_rows };
            let batch: Vec<Row> = match queue.lock() {
                Ok(mut q) => q.by_ref().take(n).collect(),
                Err(_) => return Err(LoadError::Config("writer queue poisoned".into())),
            };
            if batch.is_empty() {
                return Ok(());
            }
            let mut done = 0;
            let mut attempt = 0u32;
            while done < batch.len() {
                let n = if plan.adaptive { size.size() } else { plan.start_rows }.min(batch.len() - done);
                let t0 = Instant::now();
                match target.write_batch(model, &batch[done..done + n]).await {
                    Ok(()) => {
                        let secs = t0.elapsed().as_secs_f64();
                        size.success(n, secs);
                        event_batch(model.target, n, secs, attempt > 0);
                        written.fetch_add(n as u64, Ordering::Relaxed);
                        done += n;
                        attempt = 0;
                    }
                    Err(e) if e.is_retryable() && attempt < 12 => {
                        attempt += 1;
                        size.backoff();
                        target.stats().retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, attempt, next_batch = size.size(), "retrying batch");
                        let jitter = rand_jitter();
                        tokio::time::sleep(Duration::from_millis((50u64 << attempt.min(7)) + jitter)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

fn rand_jitter() -> u64 {
    u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0) % 50)
}

fn progress_record(target: TargetKind, destination: &str, f: &MarkerFile, status: FileStatus, rows: u64, rejected: u64, reason: Option<String>) -> FileProgress {
    FileProgress {
        format_version: crossdock_core::FORMAT_VERSION,
        file: f.name.clone(),
        status,
        target: target.name().into(),
        destination: destination.into(),
        rows_written: rows,
        rejected,
        sha256: f.sha256.clone(),
        reason,
        finished_at: progress::now_rfc3339(),
    }
}

/// Loads the marker's files into `target`. `shutdown` stops the load between batches;
/// finished files stay recorded and a rerun continues.
pub async fn load<T: Target>(
    marker: &Marker,
    target: &T,
    model: &TableModel,
    plan: &BatchPlan,
    opts: &LoadOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Summary, LoadError> {
    let stop = AtomicBool::new(false);
    let inner = std::pin::pin!(load_inner(marker, target, model, plan, opts, &stop));
    let shutdown = std::pin::pin!(shutdown);
    match futures::future::select(inner, shutdown).await {
        futures::future::Either::Left((r, _)) => r,
        futures::future::Either::Right(((), inner)) => {
            tracing::info!("shutdown requested: finishing in-flight batches");
            stop.store(true, Ordering::Relaxed);
            inner.await
        }
    }
}

async fn load_inner<T: Target>(marker: &Marker, target: &T, model: &TableModel, plan: &BatchPlan, opts: &LoadOptions, stop: &AtomicBool) -> Result<Summary, LoadError> {
    let started = Instant::now();
    let kind = target.kind();
    let destination = target.destination(model);
    let m = &marker.marker;
    let mut summary = Summary {
        marker: marker.url.clone(),
        export: m.export.to_string(),
        target: kind.name(),
        destination: destination.clone(),
        status: "loaded",
        table_created: false,
        files_total: m.files.len(),
        files_loaded: 0,
        files_skipped: 0,
        rows_written: 0,
        rejected: 0,
        items_expected: m.totals.items,
        rows_in_target: 0,
        indexes: vec![],
        batches: 0,
        retries: 0,
        max_rows_per_batch: 0,
        max_mutations_per_call: 0,
        duration_ms: 0,
    };
    if !opts.force {
        if let Some(done) = progress::read_loaded(marker).await? {
            if done.target == kind.name() && done.destination == destination {
                summary.status = "already-loaded";
                summary.rows_in_target = done.rows_in_target;
                summary.rejected = done.rejected;
                summary.files_skipped = m.files.len();
                return Ok(summary);
            }
        }
    }
    summary.table_created = target.ensure_table(model).await?;
    let recorded = progress::read_all(marker).await?;
    let mut todo = Vec::new();
    for f in &m.files {
        match recorded.get(&f.name) {
            Some(p) if p.status == FileStatus::Done && p.target == kind.name() && p.destination == destination && p.sha256 == f.sha256 => {
                summary.files_skipped += 1;
                summary.rows_written += p.rows_written;
                summary.rejected += p.rejected;
                event_file(kind, &f.name, "skipped", 0, 0);
            }
            _ => todo.push(f),
        }
    }
    // The next file is downloaded, checked and converted while this one is written;
    // the one-slot channel, reserved before each read, keeps two files in memory at most.
    let (tx, rx) = tokio::sync::mpsc::channel::<(&MarkerFile, Result<Converted, LoadError>)>(1);
    let shared = std::sync::Arc::new(model.clone());
    let sizes: Vec<Mutex<AdaptiveBatch>> = (0..plan.writers).map(|_| Mutex::new(AdaptiveBatch::new(plan.start_rows, 1, plan.max_rows))).collect();
    let produce = async move {
        for f in todo {
            let Ok(slot) = tx.reserve().await else { return };
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let converted = match read_part(marker, f).await {
                Ok(raw) => {
                    let (model, name) = (shared.clone(), f.name.clone());
                    tokio::task::spawn_blocking(move || convert(&model, &name, &raw))
                        .await
                        .map_err(|e| LoadError::Config(format!("converting {} failed: {e}", f.name)))
                }
                Err(e) => Err(e),
            };
            let failed = converted.is_err();
            slot.send((f, converted));
            if failed {
                return;
            }
        }
    };
    let consume = async {
        // Owning the receiver: leaving early closes the channel and stops the producer.
        let mut rx = rx;
        let mut recording = Vec::new();
        while let Some((f, converted)) = rx.recv().await {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Converted { rows, rejects } = match converted {
                Ok(c) => c,
                Err(e) => {
                    if matches!(e, LoadError::CorruptFile { .. } | LoadError::NotFound { .. }) {
                        let _ = progress::record(marker, f, &progress_record(kind, &destination, f, FileStatus::Failed, 0, 0, Some(e.to_string()))).await;
                        event_file(kind, &f.name, "failed", 0, 0);
                    }
                    return Err(e);
                }
            };
            let rejected = rejects.len() as u64;
            if !rejects.is_empty() {
                let key = progress::write_rejects(marker, f, &rejects).await?;
                let total = summary.rejected + rejected;
                if total > opts.max_errors {
                    let reason = format!("{total} rejected rows exceed --max-errors {}; see gs://{}/{key}", opts.max_errors, marker.gcs.bucket);
                    progress::record(marker, f, &progress_record(kind, &destination, f, FileStatus::Failed, 0, rejected, Some(reason))).await?;
                    event_file(kind, &f.name, "failed", 0, rejected);
                    return Err(LoadError::TooManyRejects { rejected: total, max: opts.max_errors, bucket: marker.gcs.bucket.clone(), key });
                }
            }
            let expected = rows.len() as u64;
            let written = write_rows(target, model, rows, plan, &sizes, stop).await?;
            if written < expected {
                // Stopped mid-file: not recorded, so a rerun loads it again (upserts).
                break;
            }
            // The record is written while the next file loads; all are awaited below.
            recording.push(progress::record_in_background(marker, f, &progress_record(kind, &destination, f, FileStatus::Done, written, rejected, None)));
            event_file(kind, &f.name, "loaded", written, rejected);
            summary.files_loaded += 1;
            summary.rows_written += written;
            summary.rejected += rejected;
        }
        for r in recording {
            r.await.map_err(|e| LoadError::Config(format!("progress record task failed: {e}")))??;
        }
        Ok(())
    };
    let ((), consumed) = futures::join!(produce, consume);
    consumed?;
    let stats = target.stats();
    summary.batches = stats.calls.load(Ordering::Relaxed);
    summary.retries = stats.retries.load(Ordering::Relaxed);
    summary.max_rows_per_batch = stats.max_rows.load(Ordering::Relaxed);
    summary.max_mutations_per_call = stats.max_mutations.load(Ordering::Relaxed);
    if stop.load(Ordering::Relaxed) {
        return Err(LoadError::Interrupted { files_done: summary.files_loaded + summary.files_skipped, files_total: summary.files_total });
    }
    target.create_indexes(model).await?;
    summary.indexes = target.list_indexes(model).await?;
    summary.rows_in_target = target.count_rows(model).await?;
    let expected = m.totals.items.saturating_sub(summary.rejected);
    if summary.rows_in_target != expected {
        return Err(LoadError::CountMismatch {
            target: kind.name(),
            table: model.name.clone(),
            expected,
            actual: summary.rows_in_target,
            items: m.totals.items,
            rejected: summary.rejected,
        });
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    progress::write_loaded(
        marker,
        &LoadedRecord {
            format_version: crossdock_core::FORMAT_VERSION,
            export: m.export.clone(),
            target: kind.name().into(),
            destination: destination.clone(),
            items_expected: m.totals.items,
            rows_in_target: summary.rows_in_target,
            rejected: summary.rejected,
            duration_ms: summary.duration_ms,
            finished_at: progress::now_rfc3339(),
        },
    )
    .await?;
    tracing::info!(export = %m.export, target = kind.name(), rows = summary.rows_in_target, rejected = summary.rejected, "load finished");
    metrics::counter!("crossdock_load_tables_total", "target" => kind.name()).increment(1);
    Ok(summary)
}

/// The outcome of a full read-back comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub source_items: u64,
    /// Source items the model rejects (expected to be absent).
    pub rejected: u64,
    pub target_rows: u64,
    pub matching: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Up to 20 examples of each problem.
    pub examples: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }
}

fn key_text(model: &TableModel, item: &Item) -> String {
    model
        .primary_key
        .iter()
        .map(|&i| item.get(&model.columns[i].attribute).map(typed_json).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("|")
}

/// Reads every source item (through the marker) and every target row, and compares
/// all of them, attribute by attribute, with DynamoDB's equality.
pub async fn verify<T: Target>(marker: &Marker, target: &T, model: &TableModel) -> Result<VerifyReport, LoadError> {
    let mut report = VerifyReport::default();
    let mut source: BTreeMap<String, Item> = BTreeMap::new();
    for f in &marker.marker.files {
        let raw = read_part(marker, f).await?;
        for (i, line) in raw.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            report.source_items += 1;
            let item = std::str::from_utf8(line).map_err(|e| e.to_string()).and_then(|t| parse_line(t, i as u64 + 1).map_err(|e| e.to_string()));
            match item {
                Ok(item) if model.to_row(&item).is_ok() => {
                    source.insert(key_text(model, &item), item);
                }
                _ => report.rejected += 1,
            }
        }
    }
    let note = |report: &mut VerifyReport, s: String| {
        if report.examples.len() < 20 {
            report.examples.push(s);
        }
    };
    for row in target.read_all(model).await? {
        report.target_rows += 1;
        let item = model.to_item(&row).map_err(|m| LoadError::Target { target: "verify", op: "decode", table: model.name.clone(), message: m, retryable: false })?;
        let key = key_text(model, &item);
        match source.remove(&key) {
            None => {
                report.extra += 1;
                note(&mut report, format!("extra row {key}"));
            }
            Some(src) if items_equal(&src, &item) => report.matching += 1,
            Some(src) => {
                report.different += 1;
                let attrs: Vec<&String> = src
                    .keys()
                    .chain(item.keys())
                    .filter(|a| match (src.get(*a), item.get(*a)) {
                        (Some(x), Some(y)) => !crate::schema::values_equal(x, y),
                        _ => true,
                    })
                    .collect();
                note(&mut report, format!("row {key} differs in {attrs:?}"));
            }
        }
    }
    report.missing = source.len() as u64;
    for k in source.keys().take(20) {
        note(&mut report, format!("missing row {k}"));
    }
    Ok(report)
}
