//! `crossdock load`: load a relayed table into its target from its `_SUCCESS` marker,
//! or `--watch` GCS finalize notifications and load each marker as it appears.
//!
//! Exit codes: 0 loaded (or already loaded), 1 failure, 2 bad flags/pipeline/routing,
//! 3 marker or data file not found, 5 interrupted (rerun to continue), 7 the target's
//! row count differs from the marker's.

use crate::exit::{fail, Code};
use crossdock_core::notify::Notification;
use crossdock_core::pipeline::TargetConfig;
use crossdock_load::run::{self, BatchPlan, LoadOptions, Plan, Routing};
use crossdock_load::schema::TableModel;
use crossdock_load::sink::{AnyTarget, Target};
use crossdock_load::watch::Work;
use crossdock_load::LoadError;
use std::path::PathBuf;

mod progress;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Flags of `crossdock load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The export's marker: gs://BUCKET/BATCH/TABLE/TIMESTAMP/_SUCCESS.
    #[arg(long, required_unless_present = "watch")]
    pub marker: Option<String>,
    /// Pipeline file (routing, targets, batch settings).
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Watch GCS finalize notifications (Pub/Sub) and load every `_SUCCESS` seen.
    #[arg(long, conflicts_with = "marker")]
    pub watch: bool,
    /// Pub/Sub topic of the bucket's finalize notifications (with --watch).
    #[arg(long, env = "CROSSDOCK_GCS_EVENTS_TOPIC", default_value = "crossdock-gcs-events")]
    pub topic: String,
    /// Pub/Sub subscription to pull from (created on the topic if absent, unless
    /// --no-create-subscription).
    #[arg(long, default_value = "crossdock-load")]
    pub subscription: String,
    /// With --watch: never create the subscription; a missing one is an error naming the
    /// command that creates it (for identities with subscriber permissions only).
    #[arg(long)]
    pub no_create_subscription: bool,
    /// With --watch: seconds a marker being loaded stays this watcher's without renewal
    /// (renewed every third of it; a watcher that dies hands its marker on after this).
    #[arg(long, default_value_t = crossdock_load::watch::DEFAULT_LEASE_SECS, value_parser = clap::value_parser!(u64).range(3..=600))]
    pub lease_secs: u64,
    /// With --watch: spread each marker over every watcher on the subscription. A watcher
    /// that takes a marker publishes one work item per file still to load to --topic;
    /// the watchers take files as they take markers (leased, redelivered when a watcher
    /// dies), and the one that finds every file done finishes the table.
    #[arg(long, requires = "watch")]
    pub fan_out: bool,
    /// Address of the `/metrics` (Prometheus) and `/healthz` server (e.g. 0.0.0.0:9466),
    /// `off` for none; with it there is no progress bar.
    #[arg(long, default_value = "off")]
    pub metrics_addr: String,
    /// GCP project of the topic (defaults to CROSSDOCK_GCP_PROJECT).
    #[arg(long, env = "CROSSDOCK_GCP_PROJECT")]
    pub project: Option<String>,
    /// Print the route, the DDL and the batch plan; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rows that may be rejected (recorded under _rejects/) before the load fails.
    #[arg(long, default_value_t = 0)]
    pub max_errors: u64,
    /// Rows per second this process may write, over all its writers and loads (none by
    /// default): its share of a production target, or of a fleet's quota.
    #[arg(long)]
    pub max_rows_per_sec: Option<u64>,
    /// Load every file again, even if `_LOADED` or the progress records say this
    /// destination already has them (they are rewritten as the load goes).
    #[arg(long, conflicts_with = "shard")]
    pub force: bool,
    /// Share the table's load among N processes: this one writes every N-th file from
    /// the I-th (I/N, e.g. a Kubernetes Indexed Job's completion index). Each records
    /// its files as usual; the one that finds every file done creates the indexes,
    /// checks the row count and writes `_LOADED` (create-only), the others exit 0 with
    /// status `shard-done`. A restarted shard continues from its records.
    #[arg(long, value_name = "I/N", value_parser = run::Shard::parse, conflicts_with = "watch")]
    pub shard: Option<run::Shard>,
    /// `text` or `json` (a summary object on stdout).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// No progress line (files, rows, rows/s on stderr), even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Webhook (Slack-compatible) that gets a JSON event when a load finishes or fails.
    // The URL is a bearer secret: `--help` must not show the value it read from the environment.
    #[arg(long, env = "CROSSDOCK_NOTIFY_URL", hide_env_values = true)]
    pub notify_url: Option<String>,
}

/// The exit code for a loader error.
pub fn code_for(e: &LoadError) -> Code {
    match e {
        LoadError::NotFound { .. } => Code::NotFound,
        LoadError::Config(_) | LoadError::InvalidMarker { .. } => Code::Usage,
        LoadError::Interrupted { .. } => Code::Partial,
        LoadError::CountMismatch { .. } => Code::Mismatch,
        _ => Code::Failure,
    }
}

pub(crate) fn coded(e: LoadError) -> anyhow::Error {
    let code = code_for(&e);
    fail(code, e.to_string())
}

/// The loaded table `verify`, `sync` and `audit` work on: its marker, or the table's name
/// (the newest loaded export of it in the pipeline's bucket).
#[derive(Debug, clap::Args)]
pub struct LoadedTable {
    /// The export's marker: gs://BUCKET/BATCH/TABLE/TIMESTAMP/_SUCCESS (already loaded).
    #[arg(long, required_unless_present = "table", conflicts_with = "table")]
    pub marker: Option<String>,
    /// Instead of --marker: the DynamoDB table; its newest export with a `_LOADED` record
    /// in the pipeline's GCS bucket is used.
    #[arg(long)]
    pub table: Option<String>,
    /// With --table: look only in this batch.
    #[arg(long, requires = "table")]
    pub batch: Option<String>,
    /// Pipeline file the table was loaded with.
    #[arg(long)]
    pub pipeline: PathBuf,
}

impl LoadedTable {
    /// The pipeline, and the marker resolved against it; the model includes the columns
    /// a catch-up added for attributes first seen in the stream.
    pub async fn prepare(&self) -> anyhow::Result<(crossdock_core::pipeline::Pipeline, Prepared)> {
        let pipeline = crate::pipeline::load(&self.pipeline)?;
        let url = match (&self.marker, &self.table) {
            (Some(url), _) => url.clone(),
            (None, Some(table)) => {
                let client = crossdock_load::gcs::client(crate::gcp()).await.map_err(coded)?;
                let gcs = crossdock_load::gcs::Gcs::new(client, pipeline.dst_bucket.clone());
                let found = crossdock_load::marker::latest_loaded(&gcs, table, self.batch.as_deref()).await.map_err(coded)?;
                let url = found.ok_or_else(|| {
                    let within = self.batch.as_ref().map_or(String::new(), |b| format!(" batch {b} of"));
                    fail(Code::Usage, format!("no loaded export of table {table} in{within} gs://{}: load one first, or pass --marker", pipeline.dst_bucket))
                })?;
                tracing::info!(table, marker = %url, "using the newest loaded export");
                url
            }
            (None, None) => return Err(fail(Code::Usage, "pass --marker or --table")),
        };
        let mut p = prepare(&url, &pipeline).await?;
        let store = crossdock_sync::checkpoint::GcsCheckpoints { gcs: p.marker.gcs.clone(), export: p.marker.marker.export.clone() };
        let added = crossdock_sync::checkpoint::CheckpointStore::load_added(&store).await.map_err(crate::sync::coded)?;
        crossdock_sync::columns::widen(&mut p.model, &added).map_err(crate::sync::coded)?;
        Ok((pipeline, p))
    }
}

/// Everything resolved for one marker before touching the target.
pub struct Prepared {
    pub marker: crossdock_load::marker::Marker,
    pub routing: Routing,
    pub model: TableModel,
}

pub async fn prepare(marker_url: &str, pipeline: &crossdock_core::pipeline::Pipeline) -> anyhow::Result<Prepared> {
    let client = crossdock_load::gcs::client(crate::gcp()).await.map_err(coded)?;
    let marker = crossdock_load::marker::read(client, marker_url).await.map_err(coded)?;
    let routing = run::route(&marker, pipeline).map_err(coded)?;
    let kind = run::kind_of(&routing.target);
    let float64 = pipeline.table(&marker.marker.export.table).float64_attributes;
    let model = TableModel::infer_with(kind, &marker.marker.schema, &marker.marker.type_stats, routing.destination.as_deref(), &float64).map_err(coded)?;
    Ok(Prepared { marker, routing, model })
}

pub(crate) fn export_micros(p: &Prepared) -> i64 {
    p.marker.marker.export.timestamp.unix_micros()
}

/// The target the routing names, connected.
pub(crate) async fn connect(p: &Prepared) -> anyhow::Result<AnyTarget> {
    crossdock_load::sink::connect(crate::gcp(), &p.routing.target, export_micros(p)).await.map_err(coded)
}

fn plan_of(p: &Prepared, t: &AnyTarget) -> (Plan, BatchPlan) {
    let batch = run::batch_plan(&t.batch_limits(&p.model), &p.routing.batch);
    let m = &p.marker.marker;
    let plan = Plan {
        marker: p.marker.url.clone(),
        export: m.export.to_string(),
        route: p.routing.route,
        target: t.kind().name(),
        destination: t.destination(&p.model),
        files: m.files.len(),
        items: m.totals.items,
        ddl: t.ddl(&p.model),
        batch: batch.clone(),
        model: p.model.clone(),
    };
    (plan, batch)
}

fn print_plan(plan: &Plan, output: Output) {
    if output == Output::Json {
        println!("{}", serde_json::to_string(plan).unwrap_or_default());
        return;
    }
    println!("export      {}", plan.export);
    println!("route       {:?} → {} table {}", plan.route, plan.target, plan.destination);
    println!("input       {} file(s), {} item(s)", plan.files, plan.items);
    println!("columns");
    for c in &plan.model.columns {
        println!("  {:<24} {:<14?} from {:?}{}", c.name, c.ty, c.attribute, if c.key { " (key)" } else { "" });
    }
    println!("ddl");
    for s in &plan.ddl {
        println!("  {s};");
    }
    let b = &plan.batch;
    println!("batches     start {} rows, max {} rows, {} writer(s), adaptive {}", b.start_rows, b.max_rows, b.writers, b.adaptive);
    println!("            {}", b.basis);
}

/// [`load_marker`] (of one file with `file`), then the `--notify-url` event for its
/// outcome (not for dry runs).
async fn load_one(marker_url: &str, file: Option<&str>, pipeline: &crossdock_core::pipeline::Pipeline, args: &Args) -> anyhow::Result<Code> {
    let result = load_marker(marker_url, file, pipeline, args).await.map_err(|e| scrubbed(e, pipeline));
    if let (Some(url), false) = (&args.notify_url, args.dry_run) {
        let n = match &result {
            // Only the shard that finishes the table reports it.
            Ok((_, Some(s))) if s.status == "shard-done" => return result.map(|(code, _)| code),
            Ok((_, Some(s))) => Notification::load_finished(marker_url, s.target, &s.destination, s.rows_in_target, s.items_expected, s.rejected),
            Ok((_, None)) => return result.map(|(code, _)| code),
            Err(e) => Notification::load_failed(marker_url, &format!("{e:#}")),
        };
        crate::notify::post(url, &n).await;
    }
    result.map(|(code, _)| code)
}

/// `e` with the pipeline's PostgreSQL URLs taken out of its message: a driver's error
/// may quote the URL it was given (and with it the password), and from here the text
/// goes to the webhook, the log and stderr. The exit code is kept.
fn scrubbed(e: anyhow::Error, pipeline: &crossdock_core::pipeline::Pipeline) -> anyhow::Error {
    let text = format!("{e:#}");
    let clean = [pipeline.relational.as_ref(), pipeline.wide_column.as_ref()].into_iter().flatten().fold(text.clone(), |t, target| match target {
        TargetConfig::Postgres { url, .. } => crossdock_core::redact::scrub(&t, url),
        _ => t,
    });
    if clean == text {
        e
    } else {
        fail(crate::exit::code_of(&e), clean)
    }
}

/// The process's row budget, one for every load it runs (`--watch` runs many).
fn budget(rows_per_sec: Option<u64>) -> Option<std::sync::Arc<crossdock_core::pace::Pacer>> {
    static BUDGET: std::sync::OnceLock<Option<std::sync::Arc<crossdock_core::pace::Pacer>>> = std::sync::OnceLock::new();
    BUDGET.get_or_init(|| rows_per_sec.and_then(|r| crossdock_core::pace::Pacer::new(r as f64)).map(std::sync::Arc::new)).clone()
}

async fn load_marker(
    marker_url: &str,
    file: Option<&str>,
    pipeline: &crossdock_core::pipeline::Pipeline,
    args: &Args,
) -> anyhow::Result<(Code, Option<crossdock_load::run::Summary>)> {
    let p = prepare(marker_url, pipeline).await?;
    let opts = LoadOptions {
        max_errors: args.max_errors,
        force: args.force,
        shard: args.shard,
        files: file.map(|f| vec![f.to_string()]),
        budget: budget(args.max_rows_per_sec),
    };
    let t = connect(&p).await?;
    let (plan, batch) = plan_of(&p, &t);
    if args.dry_run {
        print_plan(&plan, args.output);
        return Ok((Code::Ok, None));
    }
    let progress = progress::Progress::start(plan.files, plan.items, crate::bars::enabled(args.no_progress, args.output == Output::Json));
    let result = run::load(&p.marker, &t, &p.model, &batch, &opts, crate::shutdown::signal()).await;
    if let Some(bar) = progress {
        bar.finish();
    }
    let summary = result.map_err(coded)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&summary).unwrap_or_default()),
        Output::Text => println!(
            "{}: {} into {} table {} — {} rows in target ({} expected, {} rejected), {} file(s) loaded, {} skipped, {} batch(es), {} ms",
            summary.export,
            summary.status,
            summary.target,
            summary.destination,
            summary.rows_in_target,
            summary.items_expected,
            summary.rejected,
            summary.files_loaded,
            summary.files_skipped,
            summary.batches,
            summary.duration_ms
        ),
    }
    if let (Output::Text, Some(shard)) = (args.output, &summary.shard) {
        println!("shard {shard}: {} file(s) left to the other shards", summary.files_other_shards);
    }
    Ok((Code::Ok, Some(summary)))
}

pub async fn run(args: Args) -> anyhow::Result<Code> {
    let pipeline = crate::pipeline::load(&args.pipeline)?;
    if let Some(addr) = crate::serve::addr(&args.metrics_addr)? {
        let phase = crate::serve::Phase { metrics: crossdock_load::events::METRICS, buckets: crossdock_load::events::BUCKETS };
        crate::serve::serve(addr, phase, crate::serve::alive).await?;
    }
    if args.watch {
        let project = args.project.clone().ok_or_else(|| fail(Code::Usage, "--watch needs --project or CROSSDOCK_GCP_PROJECT"))?;
        let watcher =
            crossdock_load::watch::Watcher::new(crate::gcp(), &project, &args.topic, &args.subscription, !args.no_create_subscription).await.map_err(coded)?;
        let shutdown = crate::shutdown::signal();
        tokio::pin!(shutdown);
        loop {
            let pulled = tokio::select! {
                _ = &mut shutdown => return Ok(Code::Ok),
                r = watcher.next_work() => r.map_err(coded)?,
            };
            // One at a time: the others go back at once for an idle watcher.
            let mut pulled = pulled.into_iter();
            let Some((ack, work)) = pulled.next() else { continue };
            let rest: Vec<String> = pulled.map(|(ack, _)| ack).collect();
            watcher.release(&rest).await.map_err(coded)?;
            let (url, file) = match &work {
                Work::Marker(url) => (url.clone(), None),
                Work::File(w) => (w.marker.clone(), Some(w.file.clone())),
            };
            // A topic may announce several buckets; this pipeline lands in one.
            let bucket = crossdock_load::gcs::parse_url(&url).map(|(b, _)| b).unwrap_or_default();
            if bucket != pipeline.dst_bucket {
                tracing::info!(marker = %url, landing_bucket = %pipeline.dst_bucket, "marker in another bucket: acknowledged, not loaded");
                watcher.ack(&ack).await.map_err(coded)?;
                continue;
            }
            let job = async {
                match (&file, args.fan_out) {
                    (Some(f), _) => {
                        tracing::info!(marker = %url, file = %f, "work item: loading one file");
                        load_one(&url, Some(f), &pipeline, &args).await
                    }
                    (None, true) => fan_out(&watcher, &url, &pipeline).await,
                    (None, false) => {
                        tracing::info!(marker = %url, "marker finalized");
                        load_one(&url, None, &pipeline, &args).await
                    }
                }
            };
            match watcher.hold(&ack, std::time::Duration::from_secs(args.lease_secs), Box::pin(job)).await {
                Ok(_) => watcher.ack(&ack).await.map_err(coded)?,
                Err(e) => {
                    let stopping = tokio::select! { biased; _ = &mut shutdown => true, _ = std::future::ready(()) => false };
                    if stopping {
                        tracing::info!(marker = %url, "load interrupted by shutdown: handed back");
                        watcher.release(&[ack]).await.map_err(coded)?;
                        return Ok(Code::Ok);
                    }
                    // Left to its lease: redelivered within --lease-secs, a pause before the
                    // retry (a marker that always fails does not spin); the rerun skips
                    // finished files.
                    tracing::error!(marker = %url, file = file.as_deref().unwrap_or(""), error = %format!("{e:#}"), "load failed");
                    eprintln!("error: {url}: {e:#}");
                }
            }
        }
    }
    let marker = args.marker.clone().ok_or_else(|| fail(Code::Usage, "--marker is required"))?;
    load_one(&marker, None, &pipeline, &args).await
}

/// Publishes a work item for each file of the marker still to load (none once loaded).
async fn fan_out(watcher: &crossdock_load::watch::Watcher, url: &str, pipeline: &crossdock_core::pipeline::Pipeline) -> anyhow::Result<Code> {
    let p = prepare(url, pipeline).await?;
    let t = connect(&p).await?;
    let files = run::pending_files(&p.marker, &t, &p.model).await.map_err(coded)?;
    let n = watcher.publish_files(url, &files).await.map_err(coded)?;
    tracing::info!(marker = %url, work_items = n, "marker fanned out: one work item per file still to load");
    Ok(Code::Ok)
}
