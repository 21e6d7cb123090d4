//! `crossdock export`: dump one DynamoDB table to S3, raising and restoring its read
//! capacity under the table's lease; `crossdock export restore` puts back capacity left
//! raised by a crashed run (once its heartbeat is stale); `crossdock export capacity
//! raise|restore` hold one lease for all the shards of a sharded export.
//!
//! Exit codes: 0 done; 1 failed (incl. table not ACTIVE, no capacity decrease left);
//! 2 usage error (incl. a raise refused because another live export holds the table's
//! lease); 3 table or bucket not found; 4 capacity not restored (run
//! `crossdock export restore`); 5 partial (interrupted: rerun with `--resume`).

use crate::exit::{fail, Code};
use crossdock_export::lease::{AppAutoscaling, Autoscaler, Holder, LeaseCtx, NoAutoscaling, RestoreAction, RestoreReport};
use crossdock_export::writer::PartCodec;
use crossdock_export::{Clients, ExportConfig, ExportError, ExportEvent, Observer, Raise};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Flags of `crossdock export`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    export: ExportArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Restore read capacity left raised by an export that crashed: acts only on a lease
    /// whose owner's heartbeat is stale, and says why it left a live one alone.
    Restore(RestoreArgs),
    /// One capacity lease for all the shards of a sharded export: `raise` before them,
    /// `restore` after them.
    Capacity(CapacityArgs),
    /// Take a finished DynamoDB native export (ExportTableToPointInTime, DYNAMODB_JSON)
    /// as this table's export: checks every data file's MD5 against its manifest, then
    /// writes `_schema.json`, the data files as parts and the segment manifests under
    /// `{prefix}{batch}/{table}/{timestamp}/`, for the relay. No read capacity is used.
    Adopt(AdoptArgs),
}

#[derive(Debug, clap::Args)]
struct AdoptArgs {
    #[command(flatten)]
    at: Location,
    /// The native export's directory: s3://BUCKET/[PREFIX/]AWSDynamoDB/EXPORT_ID/
    #[arg(long)]
    s3: String,
    /// Batch id of the export directory written.
    #[arg(long)]
    batch: Option<String>,
    /// Export timestamp `YYYY-MM-DDTHH-MM-SSZ` (default: the native export's exportTime).
    #[arg(long)]
    timestamp: Option<String>,
    /// Data files read (and copied) at the same time.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// No progress line, even on a terminal.
    #[arg(long)]
    no_progress: bool,
}

/// How `crossdock export` reads the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    /// A rate-limited parallel Scan of the table (consumes read capacity).
    Scan,
    /// DynamoDB's export to S3 from point-in-time recovery (no read capacity; needs PITR),
    /// then adopted as with `export adopt`.
    Native,
}

#[derive(Debug, clap::Args)]
struct CapacityArgs {
    #[command(subcommand)]
    command: CapacitySub,
}

#[derive(Debug, clap::Subcommand)]
enum CapacitySub {
    /// Take the table's lease for --run-id and raise; the lease stays held (live for
    /// --hold, and for as long as shards given `--capacity-run` renew it).
    Raise(CapacityRaiseArgs),
    /// Restore the capacity raised for --run-id and release its lease (also a stale
    /// lease of another run; never a live one).
    Restore(CapacityRestoreArgs),
}

#[derive(Debug, clap::Args)]
struct CapacityRaiseArgs {
    #[command(flatten)]
    at: Location,
    /// Identifies the sharded run: the shards get it as --capacity-run, the restore step as --run-id.
    #[arg(long)]
    run_id: String,
    /// Raise read capacity to this many RCU.
    #[arg(long, conflicts_with = "raise_by", required_unless_present = "raise_by")]
    raise_to: Option<i64>,
    /// Raise read capacity by this many RCU.
    #[arg(long)]
    raise_by: Option<i64>,
    /// Raise even when no capacity decrease would be left today to restore with.
    #[arg(long)]
    force: bool,
    /// Seconds the lease stays live without heartbeats: until the shards start renewing it.
    #[arg(long, default_value_t = 3600)]
    hold: u64,
    /// Seconds without a heartbeat after which the lease counts as stale (its holders gone).
    #[arg(long, default_value_t = 180)]
    lease_stale_after: u64,
    /// Seconds to wait for the table to become ACTIVE after a capacity change.
    #[arg(long, default_value_t = 1800)]
    active_timeout: u64,
}

#[derive(Debug, clap::Args)]
struct CapacityRestoreArgs {
    #[command(flatten)]
    at: Location,
    /// The run id given to `export capacity raise`.
    #[arg(long)]
    run_id: String,
    /// Only once every segment of this export has its manifest (needs --batch and
    /// --timestamp): lets each shard try the restore as its last step, and the last one
    /// to finish do it.
    #[arg(long, requires_all = ["batch", "timestamp"])]
    when_complete: bool,
    #[arg(long)]
    batch: Option<String>,
    #[arg(long)]
    timestamp: Option<String>,
    /// Seconds to wait for the table to become ACTIVE after a capacity change.
    #[arg(long, default_value_t = 1800)]
    active_timeout: u64,
}

/// Where exports of a table live.
#[derive(Debug, Clone, clap::Args)]
struct Location {
    /// DynamoDB table name.
    #[arg(long)]
    table: Option<String>,
    /// Pipeline file: its `[source]` gives the bucket, prefix, region and read ratio
    /// (the flags below override it).
    #[arg(long)]
    pipeline: Option<std::path::PathBuf>,
    /// S3 bucket the dump is written to.
    #[arg(long, env = "CROSSDOCK_EXPORT_BUCKET")]
    bucket: Option<String>,
    /// Key prefix in the bucket (empty, or ending with `/`; default: empty).
    #[arg(long)]
    prefix: Option<String>,
    /// AWS region (default: from the environment).
    #[arg(long)]
    region: Option<String>,
    /// Do not read or change Application Auto Scaling targets.
    #[arg(long)]
    no_autoscaling: bool,
    /// Print a one-object JSON summary on stdout.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

impl Location {
    /// Fills what the flags left out from `--pipeline`'s `[source]`; returns its read
    /// ratio, if a pipeline was given.
    fn resolve(&mut self) -> anyhow::Result<Option<f64>> {
        let Some(path) = &self.pipeline else { return Ok(None) };
        let source = crate::pipeline::load_source(path)?.source;
        self.bucket.get_or_insert(source.bucket);
        self.prefix.get_or_insert(source.prefix);
        if self.region.is_none() {
            self.region = source.region;
        }
        Ok(Some(source.read_ratio))
    }

    fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    at: Location,
    /// Batch id: groups the tables of one migration run (`{prefix}{batch}/{table}/{timestamp}/`).
    #[arg(long)]
    batch: Option<String>,
    /// Export timestamp `YYYY-MM-DDTHH-MM-SSZ` (default: now; with --resume, the latest).
    #[arg(long)]
    timestamp: Option<String>,
    /// Share of the (raised) provisioned read capacity the scan may consume, in (0, 1.5]
    /// (default: the pipeline's `read_ratio`, else 0.5).
    #[arg(long)]
    read_ratio: Option<f64>,
    /// Raise read capacity to this many RCU for the export.
    #[arg(long, conflicts_with = "raise_by")]
    raise_to: Option<i64>,
    /// Raise read capacity by this many RCU (the application keeps its current share).
    #[arg(long)]
    raise_by: Option<i64>,
    /// Cap on consumed RCU per second (the only limit for on-demand tables).
    #[arg(long)]
    max_rcu: Option<f64>,
    /// Parallel-scan TotalSegments (default: ~1 per GiB, at least --concurrency, in whole rounds of it).
    #[arg(long)]
    segments: Option<u32>,
    /// Only segments a..b (end exclusive) of TotalSegments, e.g. one slice per pod.
    #[arg(long, value_parser = parse_range)]
    segment_range: Option<(u32, u32)>,
    /// Segments scanned at the same time.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Strongly consistent reads (twice the RCU).
    #[arg(long)]
    consistent: bool,
    /// Data parts roll over past this size (bytes; K, M, G suffixes = KiB, MiB, GiB).
    #[arg(long, default_value = "128M", value_parser = parse_size)]
    part_size: u64,
    /// How data parts are stored in S3: zstd, gzip or none (the relay reads each).
    #[arg(long, default_value = "zstd")]
    codec: crossdock_core::Codec,
    /// Compression level of --codec (default: zstd 1, gzip 6).
    #[arg(long)]
    level: Option<i32>,
    /// Multipart upload chunk size (≥ 5M).
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    chunk_size: u64,
    /// Continue an interrupted export (same batch; latest timestamp unless --timestamp).
    #[arg(long)]
    resume: bool,
    /// Raise even when no capacity decrease would be left today to restore with.
    #[arg(long)]
    force: bool,
    /// Print the plan (segments, RCU, expected duration) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// `scan` (default) reads the table; `native` has DynamoDB export it from its
    /// point-in-time recovery backup to the bucket and adopts the result.
    #[arg(long, value_enum, default_value = "scan")]
    method: Method,
    /// `--method native`: the point in time to export, RFC 3339 (default: now).
    #[arg(long)]
    export_time: Option<String>,
    /// `--method native`: seconds between DescribeExport calls while the export runs.
    #[arg(long, default_value_t = 10)]
    poll_interval: u64,
    /// `--method native`: seconds to wait for the export before giving up (it keeps
    /// running in AWS; adopt it later with `export adopt`).
    #[arg(long, default_value_t = 43_200)]
    native_timeout: u64,
    /// Seconds to wait for the table to become ACTIVE after a capacity change.
    #[arg(long, default_value_t = 1800)]
    active_timeout: u64,
    /// Seconds without a heartbeat after which this run's capacity lease counts as stale
    /// (the run gone), so another export or `export restore` may restore it.
    #[arg(long, default_value_t = 180)]
    lease_stale_after: u64,
    /// Scan as a shard of the run raised by `export capacity raise --run-id ID`: renew
    /// that lease's heartbeat while scanning; its restore step releases it.
    #[arg(long, conflicts_with_all = ["raise_to", "raise_by"])]
    capacity_run: Option<String>,
    /// No progress line, even on a terminal.
    #[arg(long)]
    no_progress: bool,
    /// Address of the `/metrics` (Prometheus) and `/healthz` server while the export
    /// runs (e.g. 0.0.0.0:9467), `off` for none.
    #[arg(long, default_value = "off")]
    metrics_addr: String,
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    #[command(flatten)]
    at: Location,
}

fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("{s:?}: expected START..END, e.g. 0..4"))?;
    let n = |x: &str| x.trim().parse::<u32>().map_err(|_| format!("{s:?}: {x:?} is not a segment number"));
    Ok((n(a)?, n(b)?))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>().map(|n| n * mult).map_err(|_| format!("{s:?}: expected a size such as 1048576, 512K, 128M, 1G"))
}

fn require(v: &Option<String>, flag: &str) -> anyhow::Result<String> {
    v.clone().ok_or_else(|| fail(Code::Usage, format!("{flag} is required")))
}

/// The exit code for an exporter error (also used by `crossdock plan`).
pub(crate) fn code_for(e: &ExportError) -> Code {
    match e {
        ExportError::CapacityNotRestored { .. } => Code::CapacityNotRestored,
        e if e.is_usage() => Code::Usage,
        e if e.is_not_found() => Code::NotFound,
        e if e.is_resumable() => Code::Partial,
        _ => Code::Failure,
    }
}

async fn clients(at: &Location) -> Clients {
    let conf = crate::aws::config(at.region.clone()).await;
    let autoscaler: Arc<dyn Autoscaler> = if at.no_autoscaling { Arc::new(NoAutoscaling) } else { Arc::new(AppAutoscaling(crate::aws::autoscaling(&conf))) };
    Clients { ddb: crate::aws::dynamodb(&conf), s3: crate::aws::s3(&conf), autoscaler }
}

pub async fn run(mut args: Args) -> anyhow::Result<Code> {
    match args.command {
        Some(Sub::Restore(mut r)) => {
            r.at.resolve()?;
            restore(r).await
        }
        Some(Sub::Capacity(CapacityArgs { command: CapacitySub::Raise(mut r) })) => {
            r.at.resolve()?;
            capacity_raise(r).await
        }
        Some(Sub::Capacity(CapacityArgs { command: CapacitySub::Restore(mut r) })) => {
            r.at.resolve()?;
            capacity_restore(r).await
        }
        Some(Sub::Adopt(mut a)) => {
            a.at.resolve()?;
            adopt(a).await
        }
        None => {
            let ratio = args.export.at.resolve()?;
            args.export.read_ratio = args.export.read_ratio.or(ratio);
            if let Some(addr) = crate::serve::addr(&args.export.metrics_addr)? {
                crate::serve::serve(addr, crate::serve::Phase { metrics: crossdock_export::observe::METRICS, buckets: &[] }, crate::serve::alive).await?;
            }
            export(args.export).await
        }
    }
}

fn lease_ctx<'a>(c: &'a Clients, bucket: &'a str, active_timeout: u64) -> LeaseCtx<'a> {
    LeaseCtx { ddb: &c.ddb, s3: &c.s3, autoscaler: c.autoscaler.as_ref(), bucket, active_timeout: Duration::from_secs(active_timeout) }
}

/// The table, bucket and prefix of a lease command, checked.
fn lease_target(at: &Location) -> anyhow::Result<(String, String)> {
    let table = require(&at.table, "--table")?;
    let bucket = require(&at.bucket, "--bucket")?;
    crossdock_core::layout::validate_prefix(at.prefix()).map_err(|e| fail(Code::Usage, e.to_string()))?;
    crossdock_core::layout::validate_table(&table).map_err(|e| fail(Code::Usage, e.to_string()))?;
    Ok((table, bucket))
}

fn restore_failed(table: &str) -> impl Fn(ExportError) -> anyhow::Error + '_ {
    move |e| {
        let code = if e.is_not_found() {
            Code::NotFound
        } else if e.is_usage() {
            Code::Usage
        } else {
            Code::CapacityNotRestored
        };
        fail(code, format!("restore of table {table}: {e}"))
    }
}

fn print_restore(r: &RestoreReport, bucket: &str, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "table": r.table, "restored": r }));
        return;
    }
    let lease = format!("lease s3://{bucket}/{}", r.key);
    match r.action {
        RestoreAction::Restored if r.autoscaled => println!(
            "{}: autoscaling bounds restored, capacity left to autoscaling (it was {} before the raise; forcing it would spend a capacity decrease) ({lease}: {})",
            r.table,
            r.restored_to.unwrap_or_default(),
            r.why
        ),
        RestoreAction::Restored => println!("{}: read capacity restored to {} ({lease}: {})", r.table, r.restored_to.unwrap_or_default(), r.why),
        RestoreAction::LeftLive => println!("{}: {lease} left alone, nothing restored: {}", r.table, r.why),
        RestoreAction::AlreadyRestored => println!("{}: nothing to do: {lease} is already {}", r.table, r.why),
        RestoreAction::NoLease => println!("{}: no capacity lease at s3://{bucket}/{}; nothing to do", r.table, r.key),
        RestoreAction::Lost => println!("{}: {lease} was taken over by another run: {}", r.table, r.why),
    }
}

async fn restore(a: RestoreArgs) -> anyhow::Result<Code> {
    let (table, bucket) = lease_target(&a.at)?;
    let c = clients(&a.at).await;
    // A run of its own: it restores only a stale lease, never a live export's.
    let holder = Holder::new(None, crossdock_export::lease::DEFAULT_STALE_AFTER);
    let report =
        crossdock_export::lease::restore_table(&lease_ctx(&c, &bucket, 1800), &holder, a.at.prefix(), &table, false).await.map_err(restore_failed(&table))?;
    print_restore(&report, &bucket, a.at.output == Output::Json);
    Ok(Code::Ok)
}

async fn capacity_raise(a: CapacityRaiseArgs) -> anyhow::Result<Code> {
    let (table, bucket) = lease_target(&a.at)?;
    crossdock_core::layout::validate_segment("--run-id", &a.run_id).map_err(|e| fail(Code::Usage, e.to_string()))?;
    let raise = match (a.raise_to, a.raise_by) {
        (Some(n), _) => Raise::To(n),
        (None, Some(n)) => Raise::By(n),
        (None, None) => return Err(fail(Code::Usage, "--raise-to or --raise-by is required")),
    };
    if matches!(raise, Raise::To(n) | Raise::By(n) if n <= 0) {
        return Err(fail(Code::Usage, "the raise must be a positive number of RCU"));
    }
    if a.lease_stale_after == 0 {
        return Err(fail(Code::Usage, "--lease-stale-after must be at least 1 s"));
    }
    let c = clients(&a.at).await;
    let holder = Holder::new(Some(&a.run_id), Duration::from_secs(a.lease_stale_after));
    let r = crossdock_export::lease::capacity_raise(
        &lease_ctx(&c, &bucket, a.active_timeout),
        &holder,
        a.at.prefix(),
        &table,
        |current| raise.target(current),
        a.force,
        Duration::from_secs(a.hold),
    )
    .await
    .map_err(|e| fail(code_for(&e), format!("capacity raise of table {table}: {e}")))?;
    if a.at.output == Output::Json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        for s in &r.restored_stale {
            print_restore(s, &bucket, false);
        }
        let read = |t: Option<crossdock_core::schema::Throughput>| t.map_or_else(|| "-".to_string(), |t| t.read.to_string());
        println!(
            "{table}: {} (run {}, read capacity {} → {}, lease s3://{bucket}/{} held until {})",
            r.action,
            r.run_id,
            read(r.original),
            read(r.raised_to),
            r.key,
            r.held_until.as_deref().unwrap_or("-")
        );
    }
    Ok(Code::Ok)
}

async fn capacity_restore(a: CapacityRestoreArgs) -> anyhow::Result<Code> {
    let (table, bucket) = lease_target(&a.at)?;
    crossdock_core::layout::validate_segment("--run-id", &a.run_id).map_err(|e| fail(Code::Usage, e.to_string()))?;
    let c = clients(&a.at).await;
    if a.when_complete {
        let (Some(batch), Some(ts)) = (&a.batch, &a.timestamp) else {
            return Err(fail(Code::Usage, "--when-complete needs --batch and --timestamp"));
        };
        let ts = crossdock_core::Timestamp::parse(ts).map_err(|e| fail(Code::Usage, e.to_string()))?;
        let export = crossdock_core::ExportId::new(batch, &table, ts).map_err(|e| fail(Code::Usage, e.to_string()))?;
        let complete = crossdock_export::run::export_complete(&c.s3, &bucket, a.at.prefix(), &export).await.map_err(|e| fail(code_for(&e), e.to_string()))?;
        if !complete {
            println!("{table}: export {export} is not complete yet; the lease of run {} stays held for the shards still scanning", a.run_id);
            return Ok(Code::Ok);
        }
    }
    let holder = Holder::new(Some(&a.run_id), crossdock_export::lease::DEFAULT_STALE_AFTER);
    let report = crossdock_export::lease::restore_table(&lease_ctx(&c, &bucket, a.active_timeout), &holder, a.at.prefix(), &table, true)
        .await
        .map_err(restore_failed(&table))?;
    print_restore(&report, &bucket, a.at.output == Output::Json);
    Ok(Code::Ok)
}

async fn adopt(a: AdoptArgs) -> anyhow::Result<Code> {
    let table = require(&a.at.table, "--table")?;
    let batch = require(&a.batch, "--batch")?;
    let (source_bucket, source_dir) = crossdock_export::native::parse_native_url(&a.s3).map_err(|e| fail(Code::Usage, e.to_string()))?;
    // The export directory goes next to the native export unless --bucket/--pipeline says otherwise.
    let bucket = a.at.bucket.clone().unwrap_or_else(|| source_bucket.clone());
    let timestamp = a.timestamp.as_deref().map(crossdock_core::Timestamp::parse).transpose().map_err(|e| fail(Code::Usage, e.to_string()))?;
    let cfg = crossdock_export::native::AdoptConfig {
        table,
        bucket,
        prefix: a.at.prefix().to_string(),
        batch,
        timestamp,
        source_bucket,
        source_dir,
        concurrency: a.concurrency,
    };
    let c = clients(&a.at).await;
    let json = a.at.output == Output::Json;
    let progress = NativeProgress::new(crate::bars::enabled(a.no_progress, json));
    let result = crossdock_export::native::adopt(&c.s3, &c.ddb, &cfg, &progress).await;
    crate::bars::finish(&progress.bar);
    let summary = result.map_err(|e| fail(code_for(&e), e.to_string()))?;
    print_adopted(&summary, json)?;
    Ok(Code::Ok)
}

fn print_adopted(s: &crossdock_export::native::AdoptSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
        return Ok(());
    }
    let checks: Vec<String> = s.checks.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "{} adopted from {}: {} items, {} bytes ({} stored) in {} files (checks: {}), 0 RCU in {:.1} s → {}",
        s.table,
        s.source,
        s.items,
        s.bytes,
        s.stored_bytes,
        s.files,
        if checks.is_empty() { "none".to_string() } else { checks.join(", ") },
        s.duration_secs,
        s.s3_prefix
    );
    if !s.manifest_files {
        println!("  no manifest-files.json: data files were found by listing data/");
    }
    Ok(())
}

async fn export_native(a: ExportArgs) -> anyhow::Result<Code> {
    let scan_only = [
        (a.raise_to.is_some() || a.raise_by.is_some(), "--raise-to/--raise-by"),
        (a.max_rcu.is_some(), "--max-rcu"),
        (a.segments.is_some() || a.segment_range.is_some(), "--segments/--segment-range"),
        (a.resume, "--resume"),
        (a.capacity_run.is_some(), "--capacity-run"),
        (a.dry_run, "--dry-run (see `crossdock plan`)"),
    ];
    if let Some((_, flag)) = scan_only.iter().find(|(set, _)| *set) {
        return Err(fail(Code::Usage, format!("{flag} applies to --method scan only: a native export reads no capacity")));
    }
    let table = require(&a.at.table, "--table")?;
    let bucket = require(&a.at.bucket, "--bucket")?;
    let batch = require(&a.batch, "--batch")?;
    let timestamp = a.timestamp.as_deref().map(crossdock_core::Timestamp::parse).transpose().map_err(|e| fail(Code::Usage, e.to_string()))?;
    let export_time = a
        .export_time
        .as_deref()
        .map(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339))
        .transpose()
        .map_err(|e| fail(Code::Usage, format!("--export-time: expected RFC 3339 such as 2026-11-23T09:30:00Z: {e}")))?;
    if a.poll_interval == 0 {
        return Err(fail(Code::Usage, "--poll-interval must be at least 1 s"));
    }
    let cfg = crossdock_export::native::NativeConfig {
        table,
        bucket,
        prefix: a.at.prefix().to_string(),
        batch,
        timestamp,
        export_time,
        poll_interval: Duration::from_secs(a.poll_interval),
        wait_timeout: Duration::from_secs(a.native_timeout),
        concurrency: a.concurrency.max(1) as usize,
    };
    let c = clients(&a.at).await;
    let json = a.at.output == Output::Json;
    let progress = NativeProgress::new(crate::bars::enabled(a.no_progress, json));
    let result = crossdock_export::native::export(&c.s3, &c.ddb, &cfg, &progress, crate::shutdown::signal()).await;
    crate::bars::finish(&progress.bar);
    let summary = result.map_err(|e| fail(code_for(&e), e.to_string()))?;
    print_adopted(&summary, json)?;
    Ok(Code::Ok)
}

async fn export(a: ExportArgs) -> anyhow::Result<Code> {
    if a.method == Method::Native {
        return export_native(a).await;
    }
    if a.export_time.is_some() {
        return Err(fail(Code::Usage, "--export-time applies to --method native only"));
    }
    let table = require(&a.at.table, "--table")?;
    let bucket = require(&a.at.bucket, "--bucket")?;
    let batch = require(&a.batch, "--batch")?;
    let timestamp = a.timestamp.as_deref().map(crossdock_core::Timestamp::parse).transpose().map_err(|e| fail(Code::Usage, e.to_string()))?;
    let mut cfg = ExportConfig::new(&table, &bucket, &batch);
    cfg.prefix = a.at.prefix().to_string();
    cfg.timestamp = timestamp;
    cfg.read_ratio = a.read_ratio.unwrap_or(0.5);
    cfg.raise = match (a.raise_to, a.raise_by) {
        (Some(n), _) => Raise::To(n),
        (None, Some(n)) => Raise::By(n),
        (None, None) => Raise::None,
    };
    cfg.max_rcu = a.max_rcu;
    cfg.segments = a.segments;
    cfg.segment_range = a.segment_range;
    cfg.concurrency = a.concurrency;
    cfg.consistent = a.consistent;
    cfg.part_bytes = a.part_size;
    cfg.codec = PartCodec::new(a.codec, a.level);
    cfg.chunk_bytes = usize::try_from(a.chunk_size).unwrap_or(usize::MAX);
    cfg.resume = a.resume;
    cfg.force = a.force;
    cfg.active_timeout = Duration::from_secs(a.active_timeout);
    cfg.lease_stale_after = Duration::from_secs(a.lease_stale_after);
    cfg.capacity_run = a.capacity_run.clone();
    if a.chunk_size < crossdock_export::writer::MIN_CHUNK_BYTES as u64 {
        return Err(fail(Code::Usage, "--chunk-size must be at least 5M (S3's minimum multipart chunk)"));
    }
    let c = clients(&a.at).await;
    let json = a.at.output == Output::Json;

    if a.dry_run {
        let plan = crossdock_export::plan(&c, &cfg).await.map_err(|e| fail(code_for(&e), e.to_string()))?;
        if json {
            println!("{}", serde_json::to_string(&plan)?);
        } else {
            let fmt_rcu = |b: Option<f64>| b.map_or_else(|| "unlimited".to_string(), |b| format!("{b:.0} RCU/s"));
            println!("plan for table {} (nothing changed):", plan.table);
            println!("  billing          {:?}, capacity now {:?}", plan.billing_mode, plan.capacity_now.map(|t| t.read));
            println!("  raise to         {}", plan.raise_to.map_or_else(|| "no raise".to_string(), |r| format!("{r} RCU")));
            println!("  decreases today  {}", plan.decreases_today);
            println!("  budget           {}", fmt_rcu(plan.rcu_budget));
            println!("  segments         {}..{} of {} ({} at a time)", plan.segments.0, plan.segments.1, plan.total_segments, plan.concurrency);
            println!("  table estimate   {} items, {} bytes", plan.item_count_estimate, plan.size_bytes_estimate);
            println!(
                "  expected         {:.0} RCU, {}",
                plan.expected_rcu,
                plan.expected_seconds.map_or_else(|| "duration unknown (no size estimate or no limit)".to_string(), |s| format!("{s:.0} s"))
            );
            println!("  destination      {}<timestamp>/", plan.s3_prefix);
            for k in &plan.stale_leases {
                println!("  stale lease      {k} (restored first)");
            }
        }
        return Ok(Code::Ok);
    }

    let progress = Progress::new(crate::bars::enabled(a.no_progress, json));
    let result = crossdock_export::run(&c, &cfg, &progress, crate::shutdown::signal()).await;
    crate::bars::finish(&progress.bar);
    let summary = result.map_err(|e| match code_for(&e) {
        Code::Partial => fail(Code::Partial, format!("{e}; what is checkpointed is kept: rerun with --resume to finish")),
        code => crate::exit::coded(code, e),
    })?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} {}: {} items, {} bytes in {} parts, {:.0} RCU in {:.1} s → {}",
            summary.table,
            if summary.complete { "exported" } else { "PARTIALLY exported (rerun with --resume)" },
            summary.items,
            summary.bytes,
            summary.parts,
            summary.consumed_rcu,
            summary.duration_secs,
            summary.s3_prefix
        );
        if let (Some(b), Some(r)) = (summary.capacity_before, summary.capacity_raised_to) {
            println!("  read capacity {} → {} → {}", b.read, r.read, summary.capacity_after.map_or(-1, |t| t.read));
        }
    }
    Ok(if summary.complete { Code::Ok } else { Code::Partial })
}

/// The export's progress bar (bytes against the table's size estimate, items and RCU/s
/// in its message), fed by the export's events.
struct Progress {
    bar: indicatif::ProgressBar,
    items: AtomicU64,
    /// Consumed RCU × 1000.
    milli_rcu: AtomicU64,
    started: std::time::Instant,
}

impl Progress {
    fn new(on: bool) -> Progress {
        let template = "{spinner} [{elapsed_precise}] [{wide_bar}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, ETA {eta}) {msg}";
        Progress { bar: crate::bars::bar(on, Some(0), template), items: AtomicU64::new(0), milli_rcu: AtomicU64::new(0), started: std::time::Instant::now() }
    }
}

impl Observer for Progress {
    fn event(&self, e: &ExportEvent) {
        match e {
            // DescribeTable's size is up to 6 h old: the bar may end short of or past it.
            ExportEvent::Started { size_bytes_estimate, .. } => self.bar.set_length(*size_bytes_estimate),
            ExportEvent::Page { items, bytes, consumed_rcu, .. } => {
                let items = self.items.fetch_add(*items, Ordering::Relaxed) + items;
                let rcu = self.milli_rcu.fetch_add((consumed_rcu * 1000.0) as u64, Ordering::Relaxed) as f64 / 1000.0 + consumed_rcu;
                self.bar.inc(*bytes);
                if self.bar.position() > self.bar.length().unwrap_or(0) {
                    self.bar.set_length(self.bar.position());
                }
                self.bar.set_message(format!("{items} items, {:.0} RCU/s", rcu / self.started.elapsed().as_secs_f64().max(1e-3)));
            }
            _ => {}
        }
    }
}

/// Progress of a native export: DynamoDB's status while it runs, then the files checked
/// and copied.
struct NativeProgress {
    bar: indicatif::ProgressBar,
    checked: AtomicU64,
    items: AtomicU64,
    copied: AtomicU64,
}

impl NativeProgress {
    fn new(on: bool) -> NativeProgress {
        NativeProgress {
            bar: crate::bars::bar(on, None, "{spinner} [{elapsed_precise}] {msg}"),
            checked: AtomicU64::new(0),
            items: AtomicU64::new(0),
            copied: AtomicU64::new(0),
        }
    }
}

impl Observer for NativeProgress {
    fn event(&self, e: &ExportEvent) {
        match e {
            ExportEvent::NativeExportStatus { arn, status, elapsed_secs } => {
                self.bar.set_message(format!("DynamoDB export {status} for {elapsed_secs} s ({arn})"))
            }
            ExportEvent::NativeFileChecked { items, .. } => {
                let files = self.checked.fetch_add(1, Ordering::Relaxed) + 1;
                let items = self.items.fetch_add(*items, Ordering::Relaxed) + items;
                self.bar.set_message(format!("{files} data files checked, {items} items"));
            }
            ExportEvent::NativeFileAdopted { .. } => {
                let files = self.copied.fetch_add(1, Ordering::Relaxed) + 1;
                self.bar.set_message(format!("{files} data files copied as parts"));
            }
            _ => {}
        }
    }
}
