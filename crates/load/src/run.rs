//! Orchestration of one load: plan, table, files (skipping finished ones unless
//! forced), indexes, row count against the marker, `_LOADED`. Also the full read-back
//! verification.

use crate::compare::Comparison;
pub use crate::compare::VerifyReport;
use crate::error::LoadError;
use crate::events;
use crate::feed::{self, Msg, Rows};
use crate::marker::{read_part, Marker};
use crate::progress::{self, FileProgress, FileStatus, Reject};
use crate::schema::{TableModel, TargetKind};
use crate::sink::{BatchLimits, Target};
use crossdock_core::item::parse_line;
use crossdock_core::marker::{LoadedRecord, MarkerFile};
use crossdock_core::pipeline::{BatchConfig, Pipeline, TargetConfig};
use crossdock_core::retry::{self, Policy};
use crossdock_core::routing::Route;
use crossdock_core::sizing::AdaptiveBatch;
use futures::future::Either;
use futures::{StreamExt as _, TryStreamExt as _};
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
    /// Seconds one write may go unanswered before it is abandoned and retried.
    pub write_timeout_secs: u64,
    pub basis: String,
}

pub fn batch_plan(limits: &BatchLimits, cfg: &BatchConfig) -> BatchPlan {
    let max_rows = cfg.max_rows.unwrap_or(limits.max).clamp(1, limits.max);
    BatchPlan {
        start_rows: cfg.rows.unwrap_or(limits.start).clamp(1, max_rows),
        max_rows,
        writers: cfg.writers.unwrap_or(limits.writers).max(1),
        adaptive: cfg.adaptive.unwrap_or(true),
        write_timeout_secs: cfg.write_timeout_secs.unwrap_or(crossdock_core::retry::TARGET_WRITE_TIMEOUT.as_secs()).max(1),
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
    /// Load every file again, whatever `_LOADED` and the progress records say about
    /// this destination (the table may have been truncated or dropped since).
    pub force: bool,
    /// This process's share of the files when several share the load (`--shard i/N`).
    pub shard: Option<Shard>,
    /// Only these files of the marker (a work item of `load --watch --fan-out`).
    pub files: Option<Vec<String>>,
    /// Rows per second this whole process may write (`--max-rows-per-sec`), shared by
    /// its writers and by every load it runs.
    pub budget: Option<std::sync::Arc<crossdock_core::pace::Pacer>>,
}

impl LoadOptions {
    /// Whether this process loads only part of the table (others load the rest, and
    /// whoever finds every file done finishes it).
    fn partial(&self) -> bool {
        self.shard.is_some() || self.files.is_some()
    }
}

/// One of `count` processes sharing a table's load (`--shard index/count`, e.g. a
/// Kubernetes Indexed Job's completion index): it writes every `count`-th file of the
/// marker from the `index`-th, a stable share that a restarted pod takes up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// `i/N` with `0 ≤ i < N`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("{s:?}: expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse::<u32>().map_err(|_| bad())?, n.trim().parse::<u32>().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether the file at `position` in the marker's list is this shard's.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count as usize == self.index as usize
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Which files of the marker a load writes, given the progress records found.
#[derive(Debug, Default, PartialEq)]
pub struct FilePlan<'a, 'r> {
    /// Files to load, in marker order.
    pub todo: Vec<&'a MarkerFile>,
    /// Files already done in this destination, with their records.
    pub skipped: Vec<&'r FileProgress>,
    /// Files whose record says done here but that a forced load writes again: their
    /// records go before anything is written, so an interrupted forced load is not
    /// followed by a run that skips them.
    pub forget: Vec<&'a MarkerFile>,
}

/// The skip decision: a file is skipped when its record says it was loaded, whole
/// (same SHA-256), into this target and destination, unless the load is forced.
pub fn plan_files<'a, 'r>(
    files: &'a [MarkerFile],
    recorded: &'r BTreeMap<String, FileProgress>,
    target: TargetKind,
    destination: &str,
    force: bool,
) -> FilePlan<'a, 'r> {
    let mut plan = FilePlan::default();
    for f in files {
        let done =
            recorded.get(&f.name).filter(|p| p.status == FileStatus::Done && p.target == target.name() && p.destination == destination && p.sha256 == f.sha256);
        match done {
            Some(p) if !force => plan.skipped.push(p),
            Some(_) => {
                plan.forget.push(f);
                plan.todo.push(f);
            }
            None => plan.todo.push(f),
        }
    }
    plan
}

/// The result of a load (`--output json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub marker: String,
    pub export: String,
    pub target: &'static str,
    pub destination: String,
    /// `loaded`, `already-loaded`, or `shard-done` (this shard's files are in; another
    /// process finishes, or finished, the table).
    pub status: &'static str,
    /// `i/N` when the load is shared (`--shard`).
    pub shard: Option<String>,
    /// Files left to the other shards.
    pub files_other_shards: usize,
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
    /// Of which the row count that checks the table against the marker (a scan of the
    /// table on Bigtable).
    pub count_ms: u64,
    /// Where `rows_in_target` comes from: `scan` (the target counted its table) or
    /// `acknowledged` (the rows the target acknowledged to this run, which created the
    /// table and wrote every file: see [`acknowledged_is_exact`]).
    pub count_basis: &'static str,
}

/// The write side of one load: writers take batches from the feed (never across a
/// file boundary), and the last batch of a file records it done.
struct Writing<'a, T: Target> {
    marker: &'a Marker,
    target: &'a T,
    model: &'a TableModel,
    plan: &'a BatchPlan,
    opts: &'a LoadOptions,
    stop: &'a AtomicBool,
    destination: &'a str,
    todo: &'a [&'a MarkerFile],
    source: tokio::sync::Mutex<Source>,
    tallies: Mutex<Vec<Tally>>,
    /// Rejected rows so far, files skipped included (for `--max-errors`).
    rejected: AtomicU64,
    files_loaded: AtomicU64,
    rows_written: AtomicU64,
    recording: Mutex<Vec<tokio::task::JoinHandle<Result<(), LoadError>>>>,
}

struct Source {
    rx: tokio::sync::mpsc::Receiver<Msg>,
    current: Option<(usize, Rows)>,
    /// Why the feed ended early (a file missing or corrupt, too many rejects). The
    /// writers finish the batches they hold first, so earlier files still complete.
    failure: Option<LoadError>,
}

#[derive(Default)]
struct Tally {
    converted: u64,
    written: u64,
    rejects: Vec<Reject>,
    all_converted: bool,
    done: bool,
}

impl Tally {
    /// True exactly once: when every row of the file is converted and written. A
    /// `failed` file is closed without ever completing, whatever is still in flight.
    fn finish(&mut self, failed: bool) -> bool {
        let complete = !self.done && !failed && self.all_converted && self.written == self.converted;
        self.done |= complete || failed;
        complete
    }
}

fn poisoned<E>(_: E) -> LoadError {
    LoadError::Config("loader state poisoned by a panic".into())
}

impl<T: Target> Writing<'_, T> {
    /// One writer, with its own adaptive batch size; retryable failures halve the
    /// batch and back off.
    async fn writer(&self) -> Result<(), LoadError> {
        let plan = self.plan;
        let mut size = AdaptiveBatch::new(plan.start_rows, 1, plan.max_rows);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = if plan.adaptive { size.size() } else { plan.start_rows };
            let Some((file, batch)) = self.next_batch(n).await? else { return Ok(()) };
            let mut done = 0;
            let mut attempt = 0u32;
            while done < batch.len() {
                let n = if plan.adaptive { size.size() } else { plan.start_rows }.min(batch.len() - done);
                if let Some(budget) = &self.opts.budget {
                    budget.take(n as u64).await;
                }
                let t0 = Instant::now();
                let write = match &batch {
                    Rows::Cells(rows) => Either::Left(self.target.write_batch(self.model, &rows.as_slice()[done..done + n])),
                    Rows::Copy(rows) => Either::Right(self.target.write_copy(self.model, rows.slice(done..done + n))),
                };
                match crate::sink::within(Duration::from_secs(plan.write_timeout_secs), self.model.target, "write batch", &self.model.name, write).await {
                    Ok(()) => {
                        let secs = t0.elapsed().as_secs_f64();
                        size.success(n, secs);
                        events::batch_written(self.model.target, n, secs, attempt > 0);
                        if attempt > 0 {
                            retry::recovered("target", "write_batch", attempt);
                        }
                        done += n;
                        attempt = 0;
                    }
                    Err(e) => {
                        attempt += 1;
                        if retry::failed("target", "write_batch", e.is_retryable(), Policy::TARGET_WRITE.allows(attempt), &e) != retry::Outcome::Retried {
                            return Err(e);
                        }
                        size.backoff();
                        self.target.stats().retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, attempt, next_batch = size.size(), "retrying batch");
                        tokio::time::sleep(Policy::TARGET_WRITE.delay(attempt)).await;
                    }
                }
            }
            let complete = {
                let mut t = self.tallies.lock().map_err(poisoned)?;
                let tally = &mut t[file];
                tally.written += batch.len() as u64;
                tally.finish(false)
            };
            if complete {
                self.complete(file).await?;
            }
        }
    }

    /// Up to `n` rows of one file; `None` when every file has been handed out.
    async fn next_batch(&self, n: usize) -> Result<Option<(usize, Rows)>, LoadError> {
        let mut src = self.source.lock().await;
        loop {
            if let Some((file, rows)) = &mut src.current {
                let batch = rows.take_front(n);
                if !batch.is_empty() {
                    return Ok(Some((*file, batch)));
                }
                src.current = None;
            }
            if self.stop.load(Ordering::Relaxed) || src.failure.is_some() {
                return Ok(None);
            }
            match src.rx.recv().await {
                None => return Ok(None),
                Some(Msg::Failed { file, error }) => {
                    if matches!(error, LoadError::CorruptFile { .. } | LoadError::NotFound { .. }) {
                        let f = self.todo[file];
                        let _ = progress::record(self.marker, f, &self.record(f, FileStatus::Failed, 0, 0, Some(error.to_string()))).await;
                        events::file_finished(self.model.target, &f.name, "failed", 0, 0);
                    }
                    src.failure = Some(error);
                    src.rx.close();
                    return Ok(None);
                }
                Some(Msg::Chunk { file, rows, rejects, last }) => {
                    let new_rejects = rejects.len() as u64;
                    let total = self.rejected.fetch_add(new_rejects, Ordering::Relaxed) + new_rejects;
                    let failed = total > self.opts.max_errors;
                    let complete = {
                        let mut t = self.tallies.lock().map_err(poisoned)?;
                        let tally = &mut t[file];
                        tally.converted += rows.len() as u64;
                        tally.rejects.extend(rejects);
                        tally.all_converted |= last;
                        tally.finish(failed)
                    };
                    if failed {
                        src.failure = Some(self.too_many_rejects(file, total).await);
                        src.rx.close();
                        return Ok(None);
                    }
                    if complete {
                        self.complete(file).await?;
                    }
                    src.current = Some((file, rows));
                }
            }
        }
    }

    fn record(&self, f: &MarkerFile, status: FileStatus, rows: u64, rejected: u64, reason: Option<String>) -> FileProgress {
        progress_record(self.model.target, self.destination, f, status, rows, rejected, reason)
    }

    fn take_rejects(&self, file: usize) -> Result<(Vec<Reject>, u64), LoadError> {
        let mut t = self.tallies.lock().map_err(poisoned)?;
        Ok((std::mem::take(&mut t[file].rejects), t[file].written))
    }

    /// Every row of `file` is written: its rejects, then its progress record (in the
    /// background; awaited before the load reports success).
    async fn complete(&self, file: usize) -> Result<(), LoadError> {
        let f = self.todo[file];
        let (rejects, written) = self.take_rejects(file)?;
        if !rejects.is_empty() {
            progress::write_rejects(self.marker, f, &rejects).await?;
        }
        let rejected = rejects.len() as u64;
        let task = progress::record_in_background(self.marker, f, &self.record(f, FileStatus::Done, written, rejected, None));
        self.recording.lock().map_err(poisoned)?.push(task);
        events::file_finished(self.model.target, &f.name, "loaded", written, rejected);
        self.files_loaded.fetch_add(1, Ordering::Relaxed);
        self.rows_written.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }

    async fn too_many_rejects(&self, file: usize, total: u64) -> LoadError {
        let f = self.todo[file];
        let rejects = match self.take_rejects(file) {
            Ok((r, _)) => r,
            Err(e) => return e,
        };
        let key = match progress::write_rejects(self.marker, f, &rejects).await {
            Ok(key) => key,
            Err(e) => return e,
        };
        let reason = format!("{total} rejected rows exceed --max-errors {}; see gs://{}/{key}", self.opts.max_errors, self.marker.gcs.bucket);
        if let Err(e) = progress::record(self.marker, f, &self.record(f, FileStatus::Failed, 0, rejects.len() as u64, Some(reason))).await {
            return e;
        }
        events::file_finished(self.model.target, &f.name, "failed", 0, rejects.len() as u64);
        LoadError::TooManyRejects { rejected: total, max: self.opts.max_errors, bucket: self.marker.gcs.bucket.clone(), key }
    }
}

fn progress_record(
    target: TargetKind,
    destination: &str,
    f: &MarkerFile,
    status: FileStatus,
    rows: u64,
    rejected: u64,
    reason: Option<String>,
) -> FileProgress {
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
        finished_at: crossdock_core::stamp::now_rfc3339(),
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

async fn load_inner<T: Target>(
    marker: &Marker,
    target: &T,
    model: &TableModel,
    plan: &BatchPlan,
    opts: &LoadOptions,
    stop: &AtomicBool,
) -> Result<Summary, LoadError> {
    let started = Instant::now();
    let mut summary = Summary::start(marker, target, model);
    summary.shard = opts.shard.map(|s| s.to_string());
    let m = &marker.marker;
    let loaded_here = progress::read_loaded(marker).await?.filter(|done| done.target == summary.target && done.destination == summary.destination);
    if let Some(done) = &loaded_here {
        if !opts.force {
            summary.status = "already-loaded";
            summary.rows_in_target = done.rows_in_target;
            summary.rejected = done.rejected;
            summary.files_skipped = m.files.len();
            return Ok(summary);
        }
    }
    summary.table_created = target.ensure_table(model).await?;
    let todo = files_to_load(marker, target.kind(), opts, loaded_here.is_some(), &mut summary).await?;
    write_files(marker, target, model, plan, opts, stop, &todo, &mut summary).await?;
    if stop.load(Ordering::Relaxed) {
        return Err(LoadError::Interrupted { files_done: summary.files_loaded + summary.files_skipped, files_total: summary.files_total });
    }
    if opts.partial() && !every_file_done(marker, target.kind(), &summary.destination).await? {
        summary.status = "shard-done";
        summary.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(export = %m.export, shard = summary.shard.as_deref().unwrap_or(""), "this shard's files are loaded; another shard finishes the table");
        return Ok(summary);
    }
    finish(marker, target, model, started, opts.partial(), summary).await
}

/// The files of the marker with no `done` record for `target`'s table (what
/// `load --watch --fan-out` publishes as work items); empty once the table is loaded.
pub async fn pending_files<T: Target>(marker: &Marker, target: &T, model: &TableModel) -> Result<Vec<String>, LoadError> {
    let destination = target.destination(model);
    if progress::read_loaded(marker).await?.is_some_and(|done| done.target == target.kind().name() && done.destination == destination) {
        return Ok(Vec::new());
    }
    let recorded = progress::read_all(marker).await?;
    let todo: Vec<String> = plan_files(&marker.marker.files, &recorded, target.kind(), &destination, false).todo.iter().map(|f| f.name.clone()).collect();
    // Every file done but the table not finished (its finisher died): one item for any
    // file lets a watcher find them all done and finish it.
    Ok(if todo.is_empty() { marker.marker.files.last().map(|f| vec![f.name.clone()]).unwrap_or_default() } else { todo })
}

/// Whether every file of the marker has a `done` record for this destination (the
/// shards sharing a load ask this after writing their own files; the one that finds
/// them all done finishes the table).
async fn every_file_done(marker: &Marker, kind: TargetKind, destination: &str) -> Result<bool, LoadError> {
    let recorded = progress::read_all(marker).await?;
    Ok(plan_files(&marker.marker.files, &recorded, kind, destination, false).todo.is_empty())
}

impl Summary {
    fn start<T: Target>(marker: &Marker, target: &T, model: &TableModel) -> Summary {
        let m = &marker.marker;
        Summary {
            marker: marker.url.clone(),
            export: m.export.to_string(),
            target: target.kind().name(),
            destination: target.destination(model),
            status: "loaded",
            shard: None,
            files_other_shards: 0,
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
            count_ms: 0,
            count_basis: "scan",
        }
    }
}

/// The files this run writes; the others are counted as skipped. A forced load first
/// forgets the old outcome and the records that would let a later run skip files.
async fn files_to_load<'m>(
    marker: &'m Marker,
    kind: TargetKind,
    opts: &LoadOptions,
    was_loaded: bool,
    summary: &mut Summary,
) -> Result<Vec<&'m MarkerFile>, LoadError> {
    let recorded = progress::read_all(marker).await?;
    let mut files = plan_files(&marker.marker.files, &recorded, kind, &summary.destination, opts.force);
    // This process's share: a shard's positions, or a work item's files.
    let shares: [Option<std::collections::HashSet<&str>>; 2] = [
        opts.shard.map(|shard| marker.marker.files.iter().enumerate().filter(|(i, _)| shard.owns(*i)).map(|(_, f)| f.name.as_str()).collect()),
        opts.files.as_ref().map(|only| only.iter().map(String::as_str).collect()),
    ];
    for own in shares.into_iter().flatten() {
        files.todo.retain(|f| own.contains(f.name.as_str()));
        files.forget.retain(|f| own.contains(f.name.as_str()));
        files.skipped.retain(|p| own.contains(p.file.as_str()));
        summary.files_other_shards = marker.marker.files.len() - own.len();
    }
    // A forced load is about to write: the old outcome and the records that would let
    // a later run skip files no longer hold, whether or not this load finishes.
    if was_loaded {
        progress::forget_loaded(marker).await?;
    }
    futures::stream::iter(files.forget.iter().map(|f| progress::forget(marker, f))).buffer_unordered(16).try_collect::<Vec<()>>().await?;
    for p in &files.skipped {
        summary.files_skipped += 1;
        summary.rows_written += p.rows_written;
        summary.rejected += p.rejected;
        events::file_finished(kind, &p.file, "skipped", 0, 0);
    }
    Ok(files.todo)
}

/// Feeds `todo` to the writers and waits for every file's progress record; the counts
/// and call statistics go into `summary`.
#[allow(clippy::too_many_arguments)]
async fn write_files<T: Target>(
    marker: &Marker,
    target: &T,
    model: &TableModel,
    plan: &BatchPlan,
    opts: &LoadOptions,
    stop: &AtomicBool,
    todo: &[&MarkerFile],
    summary: &mut Summary,
) -> Result<(), LoadError> {
    let destination = summary.destination.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(feed::CHUNKS_AHEAD);
    let w = Writing {
        marker,
        target,
        model,
        plan,
        opts,
        stop,
        destination: &destination,
        todo,
        source: tokio::sync::Mutex::new(Source { rx, current: None, failure: None }),
        tallies: Mutex::new(todo.iter().map(|_| Tally::default()).collect()),
        rejected: AtomicU64::new(summary.rejected),
        files_loaded: AtomicU64::new(0),
        rows_written: AtomicU64::new(0),
        recording: Mutex::new(Vec::new()),
    };
    let writers = async {
        let r = futures::future::try_join_all((0..plan.writers).map(|_| w.writer())).await;
        // Unblocks the converter if the writers stopped early.
        w.source.lock().await.rx.close();
        r
    };
    let ((), written) = futures::join!(feed::produce(marker, todo, std::sync::Arc::new(model.clone()), target.takes_copy(), tx, stop), writers);
    // Files that did finish keep their records even when the load failed, so a rerun
    // skips them.
    let recording = std::mem::take(&mut *w.recording.lock().map_err(poisoned)?);
    let mut recorded = Ok(());
    for r in recording {
        let r = r.await.map_err(|e| LoadError::Config(format!("progress record task failed: {e}"))).and_then(|r| r);
        recorded = recorded.and(r);
    }
    written?;
    if let Some(e) = w.source.lock().await.failure.take() {
        return Err(e);
    }
    recorded?;
    summary.files_loaded = w.files_loaded.load(Ordering::Relaxed) as usize;
    summary.rows_written += w.rows_written.load(Ordering::Relaxed);
    summary.rejected = w.rejected.load(Ordering::Relaxed);
    let unfinished = w.tallies.lock().map_err(poisoned)?.iter().filter(|t| !t.done).count();
    if unfinished > 0 && !stop.load(Ordering::Relaxed) {
        return Err(LoadError::Config(format!("{unfinished} files were not loaded to the end and no error was reported; rerun to finish them")));
    }
    let stats = target.stats();
    summary.batches = stats.calls.load(Ordering::Relaxed);
    summary.retries = stats.retries.load(Ordering::Relaxed);
    summary.max_rows_per_batch = stats.max_rows.load(Ordering::Relaxed);
    summary.max_mutations_per_call = stats.max_mutations.load(Ordering::Relaxed);
    Ok(())
}

/// The once-per-load steps after the data: indexes, the row count against the marker,
/// then `_LOADED`.
async fn finish<T: Target>(
    marker: &Marker,
    target: &T,
    model: &TableModel,
    started: Instant,
    shared: bool,
    mut summary: Summary,
) -> Result<Summary, LoadError> {
    let m = &marker.marker;
    target.create_indexes(model).await?;
    summary.indexes = target.list_indexes(model).await?;
    if acknowledged_is_exact(target, &summary, shared) {
        summary.rows_in_target = summary.rows_written;
        summary.count_basis = "acknowledged";
    } else {
        let counting = Instant::now();
        summary.rows_in_target = target.count_rows(model).await?;
        summary.count_ms = counting.elapsed().as_millis() as u64;
    }
    let expected = m.totals.items.saturating_sub(summary.rejected);
    if summary.rows_in_target != expected {
        return Err(LoadError::CountMismatch {
            target: summary.target,
            table: model.name.clone(),
            expected,
            actual: summary.rows_in_target,
            items: m.totals.items,
            rejected: summary.rejected,
        });
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let record = LoadedRecord {
        format_version: crossdock_core::FORMAT_VERSION,
        export: m.export.clone(),
        target: summary.target.into(),
        destination: summary.destination.clone(),
        items_expected: m.totals.items,
        rows_in_target: summary.rows_in_target,
        rejected: summary.rejected,
        duration_ms: summary.duration_ms,
        finished_at: crossdock_core::stamp::now_rfc3339(),
    };
    // Shards that find every file done together all get here; one writes `_LOADED`.
    if shared {
        if !progress::write_loaded_once(marker, &record).await? {
            // The table is finished; the report of it (and its webhook) is the other
            // process's. This one's own files are in, as a shard's that did not finish.
            tracing::info!(export = %m.export, "another process recorded the load first");
            summary.status = "shard-done";
            return Ok(summary);
        }
    } else {
        progress::write_loaded(marker, &record).await?;
    }
    events::table_finished(&m.export, summary.target, summary.rows_in_target, summary.rejected);
    Ok(summary)
}

/// Whether the rows the target acknowledged to this run are the table's row count, so
/// a target that counts by reading every row back (Bigtable: a scan that streams every
/// key to the loader) need not. They are when this run created the table (nothing else can
/// be in it) and wrote every file itself: no file skipped as done by an earlier run, no
/// other shard writing. Row keys are one-to-one with primary keys and every write is
/// an upsert, so a row acknowledged twice (a retried call) is still one row. The full
/// read-back is `verify`'s.
fn acknowledged_is_exact<T: Target>(target: &T, summary: &Summary, shared: bool) -> bool {
    target.count_reads_every_row() && summary.table_created && summary.files_skipped == 0 && !shared
}

/// Compares the export with the target, attribute by attribute, with DynamoDB's
/// equality, streaming: see [`crate::compare`].
pub async fn verify<T: Target>(marker: &Marker, target: &T, model: &TableModel) -> Result<VerifyReport, LoadError> {
    verify_with(marker, target, model, &|_| {}).await
}

/// [`verify`], calling `compared(items)` after each file with the items it held.
pub async fn verify_with<T: Target>(marker: &Marker, target: &T, model: &TableModel, compared: &(dyn Fn(u64) + Sync)) -> Result<VerifyReport, LoadError> {
    let mut cmp = Comparison::new(target, model);
    for f in &marker.marker.files {
        let raw = read_part(marker, f).await?;
        for (i, line) in raw.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let item = std::str::from_utf8(line).map_err(|e| e.to_string()).and_then(|t| parse_line(t, i as u64 + 1).map_err(|e| e.to_string()));
            match item {
                Ok(item) => cmp.push(item).await?,
                Err(_) => cmp.reject(),
            }
        }
        compared(f.items);
    }
    cmp.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;
    use crate::gcs::Gcs;
    use crate::sink::memory::MemoryTarget;
    use crossdock_core::layout::DumpFile;
    use crossdock_core::Codec;

    /// A relayed export of `n` sample items in `files` parts, in a bucket in memory.
    async fn memory_export(n: usize, files: usize) -> (Gcs, Marker) {
        let gcs = Gcs::memory("landing");
        let m =
            conformance::write_export(&gcs, "b1", conformance::sample_schema("Orders", true, true), &conformance::all_types_items(n, true), files, Codec::Zstd)
                .await;
        let url = format!("gs://landing/{}", m.export.marker_key());
        (gcs.clone(), Marker { url, gcs, marker: m })
    }

    async fn load_into(t: &MemoryTarget, marker: &Marker, opts: &LoadOptions) -> Result<Summary, LoadError> {
        let model = TableModel::infer(t.kind(), &marker.marker.schema, &marker.marker.type_stats, None).expect("model");
        let plan = batch_plan(&t.batch_limits(&model), &BatchConfig::default());
        load(marker, t, &model, &plan, opts, std::future::pending()).await
    }

    #[tokio::test]
    async fn a_load_records_every_file_and_its_outcome_and_a_rerun_loads_nothing() {
        let (gcs, marker) = memory_export(50, 4).await;
        let t = MemoryTarget::new(TargetKind::Postgres);
        let s = load_into(&t, &marker, &LoadOptions::default()).await.expect("load");
        assert_eq!((s.status, s.rows_in_target, s.files_loaded, s.files_skipped), ("loaded", 50, 4, 0));
        assert_eq!(gcs.list(&marker.marker.export.progress_prefix()).await.expect("list").len(), 4, "one progress record per file");
        let loaded = progress::read_loaded(&marker).await.expect("read").expect("_LOADED written");
        assert_eq!((loaded.rows_in_target, loaded.destination.as_str()), (50, "memory/Orders"));
        let calls = t.stats().calls.load(Ordering::Relaxed);
        let again = load_into(&t, &marker, &LoadOptions::default()).await.expect("rerun");
        assert_eq!((again.status, again.files_skipped), ("already-loaded", 4));
        assert_eq!(t.stats().calls.load(Ordering::Relaxed), calls, "a rerun writes nothing");
    }

    #[tokio::test]
    async fn failed_writes_are_retried_and_the_load_still_ends_exact() {
        let (_, marker) = memory_export(40, 2).await;
        let t = MemoryTarget::new(TargetKind::Spanner);
        t.fail_next_writes(3);
        let s = load_into(&t, &marker, &LoadOptions::default()).await.expect("load despite three failed writes");
        assert_eq!((s.rows_in_target, s.retries), (40, 3));
    }

    #[tokio::test]
    async fn a_bigtable_load_into_a_table_it_created_counts_what_was_acknowledged() {
        let (_, marker) = memory_export(30, 3).await;
        let t = MemoryTarget::new(TargetKind::Bigtable);
        let s = load_into(&t, &marker, &LoadOptions::default()).await.expect("load");
        assert_eq!((s.table_created, s.rows_in_target, s.count_basis), (true, 30, "acknowledged"));
        // A forced reload finds the table there: it scans.
        let again = load_into(&t, &marker, &LoadOptions { force: true, ..Default::default() }).await.expect("forced reload");
        assert_eq!((again.table_created, again.rows_in_target, again.count_basis), (false, 30, "scan"));
        // Where counting is the service's own (PostgreSQL, Spanner), it always counts.
        let (_, marker) = memory_export(30, 3).await;
        let pg = MemoryTarget::new(TargetKind::Postgres);
        assert_eq!(load_into(&pg, &marker, &LoadOptions::default()).await.expect("load").count_basis, "scan");
    }

    #[tokio::test]
    async fn a_bigtable_load_into_a_table_that_was_there_scans_it_and_finds_a_stale_row() {
        let (_, marker) = memory_export(30, 3).await;
        let t = MemoryTarget::new(TargetKind::Bigtable);
        let model = TableModel::infer(t.kind(), &marker.marker.schema, &marker.marker.type_stats, None).expect("model");
        assert!(t.ensure_table(&model).await.expect("create"));
        // A row of an earlier load whose item is no longer in the export.
        let items = conformance::all_types_items(31, true);
        t.write_batch(&model, &[model.to_row(&items[30]).expect("row")]).await.expect("stale row");
        match load_into(&t, &marker, &LoadOptions::default()).await {
            Err(LoadError::CountMismatch { expected: 30, actual: 31, .. }) => {}
            other => panic!("the scan should find the stale row: {other:?}"),
        }
    }

    #[tokio::test]
    async fn shards_write_their_own_files_and_the_last_one_finishes_the_table() {
        let (gcs, marker) = memory_export(60, 5).await;
        let t = MemoryTarget::new(TargetKind::Postgres);
        let shard = |index| LoadOptions { shard: Some(Shard { index, count: 2 }), ..Default::default() };
        let first = load_into(&t, &marker, &shard(0)).await.expect("shard 0");
        assert_eq!((first.status, first.files_loaded, first.files_other_shards), ("shard-done", 3, 2));
        assert!(gcs.read(&marker.key(&DumpFile::Loaded)).await.is_err(), "no _LOADED before every file is in");
        let second = load_into(&t, &marker, &shard(1)).await.expect("shard 1");
        assert_eq!((second.status, second.files_loaded, second.rows_in_target), ("loaded", 2, 60));
        assert!(progress::read_loaded(&marker).await.expect("read").is_some());
        // A shard restarted after the table was finished finds it loaded.
        assert_eq!(load_into(&t, &marker, &shard(0)).await.expect("rerun").status, "already-loaded");
    }

    fn file(part: u32) -> MarkerFile {
        MarkerFile {
            name: format!("data/seg-00000-part-{part:05}.json.zst"),
            segment: 0,
            part,
            items: 10,
            raw_bytes: 100,
            stored_bytes: 50,
            sha256: format!("{part:064}"),
            stored_crc32c: None,
        }
    }

    fn record(f: &MarkerFile, status: FileStatus, destination: &str) -> FileProgress {
        progress_record(TargetKind::Postgres, destination, f, status, f.items, 0, None)
    }

    fn names(files: &[&MarkerFile]) -> Vec<u32> {
        files.iter().map(|f| f.part).collect()
    }

    #[test]
    fn shards_split_the_files_by_position_and_parse_strictly() {
        let s = Shard::parse("1/3").expect("1/3");
        assert_eq!((s.index, s.count, s.to_string()), (1, 3, "1/3".to_string()));
        let owned: Vec<usize> = (0..8).filter(|&i| s.owns(i)).collect();
        assert_eq!(owned, vec![1, 4, 7]);
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        // Every position belongs to exactly one shard.
        let all: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        assert!((0..100).all(|p| all.iter().filter(|s| s.owns(p)).count() == 1));
    }

    #[test]
    fn a_forced_load_writes_every_file_and_forgets_the_records_it_ignores() {
        let files: Vec<MarkerFile> = (0..5).map(file).collect();
        let here = "s.orders";
        let mut recorded = BTreeMap::new();
        for (f, status, destination) in [
            (&files[0], FileStatus::Done, here),
            (&files[1], FileStatus::Done, here),
            (&files[2], FileStatus::Failed, here),
            (&files[3], FileStatus::Done, "elsewhere.orders"),
        ] {
            recorded.insert(f.name.clone(), record(f, status, destination));
        }
        // A record of another version of the file (other checksum) does not count.
        let mut stale = record(&files[4], FileStatus::Done, here);
        stale.sha256 = "ff".repeat(32);
        recorded.insert(files[4].name.clone(), stale);

        let normal = plan_files(&files, &recorded, TargetKind::Postgres, here, false);
        assert_eq!(names(&normal.todo), [2, 3, 4]);
        assert_eq!(normal.skipped.iter().map(|p| p.file.as_str()).collect::<Vec<_>>(), [files[0].name.as_str(), files[1].name.as_str()]);
        assert!(normal.forget.is_empty());
        // Same place, another target kind: nothing is skipped.
        assert_eq!(plan_files(&files, &recorded, TargetKind::Spanner, here, false).todo.len(), 5);

        let forced = plan_files(&files, &recorded, TargetKind::Postgres, here, true);
        assert_eq!(names(&forced.todo), [0, 1, 2, 3, 4], "a forced load writes every file");
        assert!(forced.skipped.is_empty());
        assert_eq!(names(&forced.forget), [0, 1], "the records that would let a later run skip a file");
    }
}
