//! The orchestration of one export: checks, stale-lease restore, `_schema.json`, capacity
//! lease, parallel scan, restore, summary. [`plan`] is the `--dry-run`: same checks, no
//! writes.

use crate::error::{invalid, s3_error, ExportError};
use crate::lease::{self, Autoscaler, Heartbeat, Holder, LeaseCtx, RestoreAction, RestoreReport, TableInfo};
use crate::observe::{ExportEvent, Observer};
use crate::ratelimit::RateLimiter;
use crate::s3::{get_json, put_json};
use crate::scan::{run_segment, SegmentCtx, SegmentEnd};
use crate::writer::PartCodec;
use crossdock_core::layout::{self, validate_prefix, DumpFile, ExportId, Timestamp};
use crossdock_core::schema::{AttributeDefinition, BillingMode, KeyElement, KeyRole, Projection, SecondaryIndex, TableSchema, Throughput};
use crossdock_core::{sizing, TypeTag, FORMAT_VERSION};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How to change read capacity for the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Raise {
    /// Leave it as it is.
    #[default]
    None,
    /// Raise to this many RCU.
    To(i64),
    /// Raise by this many RCU (the application keeps its current share).
    By(i64),
}

impl Raise {
    /// The read capacity to raise to, from the current one (`None`: on demand, or no raise).
    pub fn target(self, current: Option<Throughput>) -> Option<i64> {
        match (self, current) {
            (Raise::None, _) | (_, None) => None,
            (Raise::To(n), Some(_)) => Some(n),
            (Raise::By(n), Some(t)) => Some(t.read.saturating_add(n)),
        }
    }
}

/// One export's settings (built from the CLI flags).
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub table: String,
    pub bucket: String,
    /// Key prefix in the bucket: empty or ending with `/`.
    pub prefix: String,
    pub batch: String,
    /// Export timestamp; `None`: now (or, with `resume`, the latest export of the batch).
    pub timestamp: Option<Timestamp>,
    /// Share of the (raised) provisioned read capacity the scan may use, in (0, 1.5].
    pub read_ratio: f64,
    pub raise: Raise,
    /// Cap on consumed RCU/s (required to limit on-demand tables).
    pub max_rcu: Option<f64>,
    /// TotalSegments; `None`: about one per GiB, at least `concurrency`, in whole rounds of it.
    pub segments: Option<u32>,
    /// Segments `start..end` of TotalSegments handled by this process.
    pub segment_range: Option<(u32, u32)>,
    /// Segments scanned at the same time.
    pub concurrency: u32,
    pub consistent: bool,
    /// Data parts roll over at the first page boundary past this size (of their lines,
    /// before compression).
    pub part_bytes: u64,
    /// How data parts are stored in S3.
    pub codec: PartCodec,
    /// Multipart upload chunk size (≥ 5 MiB).
    pub chunk_bytes: usize,
    pub resume: bool,
    /// Raise even when no capacity decrease would be left today.
    pub force: bool,
    /// How long to wait for the table to become ACTIVE after a capacity change.
    pub active_timeout: Duration,
    /// A lease this run takes counts as stale (its owner gone) once its heartbeat is
    /// this old.
    pub lease_stale_after: Duration,
    /// The run id of an `export capacity raise` this process scans under (a shard):
    /// it renews that lease's heartbeat while it runs and never restores it.
    pub capacity_run: Option<String>,
}

impl ExportConfig {
    /// Defaults for a table/bucket/batch.
    pub fn new(table: &str, bucket: &str, batch: &str) -> Self {
        ExportConfig {
            table: table.into(),
            bucket: bucket.into(),
            prefix: String::new(),
            batch: batch.into(),
            timestamp: None,
            read_ratio: 0.5,
            raise: Raise::None,
            max_rcu: None,
            segments: None,
            segment_range: None,
            concurrency: 8,
            consistent: false,
            part_bytes: 128 * 1024 * 1024,
            codec: PartCodec::default(),
            chunk_bytes: crate::writer::DEFAULT_CHUNK_BYTES,
            resume: false,
            force: false,
            active_timeout: Duration::from_secs(1800),
            lease_stale_after: lease::DEFAULT_STALE_AFTER,
            capacity_run: None,
        }
    }

    /// Checks everything that needs no network; errors are usage errors.
    pub fn validate(&self) -> Result<(), ExportError> {
        layout::validate_table(&self.table)?;
        layout::validate_segment("batch", &self.batch)?;
        validate_prefix(&self.prefix)?;
        if self.bucket.is_empty() {
            return Err(invalid("bucket", "it is empty"));
        }
        if !(self.read_ratio > 0.0 && self.read_ratio <= 1.5) {
            return Err(invalid("read ratio", format!("{} is outside (0, 1.5]", self.read_ratio)));
        }
        if let Some(m) = self.max_rcu {
            if !(m > 0.0 && m.is_finite()) {
                return Err(invalid("--max-rcu", format!("{m} must be a positive number")));
            }
        }
        match self.raise {
            Raise::To(n) | Raise::By(n) if n <= 0 => return Err(invalid("raise", format!("{n} RCU must be positive"))),
            _ => {}
        }
        if let Some(s) = self.segments {
            if s == 0 || s > sizing::DYNAMODB_MAX_SEGMENTS {
                return Err(invalid("--segments", format!("{s} is outside 1..={}", sizing::DYNAMODB_MAX_SEGMENTS)));
            }
        }
        if let Some((a, b)) = self.segment_range {
            if self.raise != Raise::None {
                return Err(invalid(
                    "--segment-range",
                    "a shard must not raise capacity (--raise-to/--raise-by): raise once for all shards with `crossdock export capacity raise`, give the shards its run id with --capacity-run, and restore after them with `crossdock export capacity restore`",
                ));
            }
            if a >= b {
                return Err(invalid("--segment-range", format!("{a}..{b} is empty (the end is exclusive)")));
            }
            if let Some(s) = self.segments {
                if b > s {
                    return Err(invalid("--segment-range", format!("{a}..{b} is outside TotalSegments {s} (segments 0..{s})")));
                }
            }
        }
        if self.capacity_run.is_some() && self.raise != Raise::None {
            return Err(invalid("--capacity-run", "the lease of `export capacity raise` already raised the table: drop --raise-to/--raise-by"));
        }
        if let Some(run) = &self.capacity_run {
            layout::validate_segment("--capacity-run", run)?;
        }
        if self.lease_stale_after < Duration::from_secs(1) {
            return Err(invalid("--lease-stale-after", "must be at least 1 s"));
        }
        if self.concurrency == 0 {
            return Err(invalid("--concurrency", "must be at least 1"));
        }
        if self.part_bytes == 0 {
            return Err(invalid("--part-size", "must be positive"));
        }
        let PartCodec { codec, level } = self.codec;
        if !PartCodec::WRITABLE.contains(&codec) {
            return Err(invalid("--codec", format!("the exporter writes zstd, gzip or none, not {codec} (the relay can still store parts as {codec} in GCS)")));
        }
        codec.level(Some(level)).map_err(|e| invalid("--level", e.to_string()))?;
        Ok(())
    }
}

/// The clients an export needs.
#[derive(Clone)]
pub struct Clients {
    pub ddb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub autoscaler: Arc<dyn Autoscaler>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clients")
    }
}

/// What `--dry-run` prints: the plan, computed without touching anything.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportPlan {
    pub table: String,
    pub billing_mode: BillingMode,
    pub capacity_now: Option<Throughput>,
    /// Read capacity during the export, if raised.
    pub raise_to: Option<i64>,
    pub decreases_today: i64,
    /// RCU/s the scan may consume (`None`: unlimited).
    pub rcu_budget: Option<f64>,
    pub total_segments: u32,
    pub segments: (u32, u32),
    pub concurrency: u32,
    pub item_count_estimate: u64,
    pub size_bytes_estimate: u64,
    /// RCU a full scan of the table's size estimate consumes.
    pub expected_rcu: f64,
    /// Seconds at the budget (`None`: unlimited budget or unknown size).
    pub expected_seconds: Option<f64>,
    /// `s3://bucket/prefix/batch/table/` (the timestamp is added at the start).
    pub s3_prefix: String,
    /// Unrestored leases of earlier runs, restored before this export starts.
    pub stale_leases: Vec<String>,
}

/// The one-object summary of an export (`--output json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    pub table: String,
    pub export: ExportId,
    /// `s3://bucket/prefix/batch/table/timestamp/`
    pub s3_prefix: String,
    /// Every segment of this process's range is done (manifests written).
    pub complete: bool,
    /// Stopped by the shutdown future (Ctrl-C, SIGTERM): rerun with `--resume`.
    pub interrupted: bool,
    pub total_segments: u32,
    pub segments: (u32, u32),
    pub segments_done: u32,
    /// Items, bytes and parts durable in S3 (including parts of resumed segments).
    pub items: u64,
    pub bytes: u64,
    pub parts: u64,
    /// RCU consumed by this run.
    pub consumed_rcu: f64,
    pub rcu_budget: Option<f64>,
    pub duration_secs: f64,
    pub capacity_before: Option<Throughput>,
    pub capacity_raised_to: Option<Throughput>,
    pub capacity_after: Option<Throughput>,
    /// False only if a raise happened and could not be undone.
    pub capacity_restored: bool,
    pub throttled_requests: u64,
    /// Leases of earlier crashed runs restored before starting.
    pub restored_stale_leases: Vec<RestoreReport>,
    /// RCU consumed in each second of the scan.
    pub consumed_rcu_per_second: Vec<f64>,
}

struct Prepared {
    info: TableInfo,
    raise_to: Option<Throughput>,
    budget: Option<f64>,
    total: u32,
    range: (u32, u32),
    workers: u32,
}

pub(crate) async fn check_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(), ExportError> {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let not_found = matches!(&e, aws_sdk_s3::error::SdkError::ServiceError(s) if s.raw().status().as_u16() == 404 || s.err().is_not_found());
            if not_found {
                Err(ExportError::BucketNotFound { bucket: bucket.into() })
            } else {
                Err(s3_error(bucket, "", "HeadBucket", &e))
            }
        }
    }
}

fn prepare(cfg: &ExportConfig, info: TableInfo, schema_segments: Option<u32>) -> Result<Prepared, ExportError> {
    if !info.is_active() {
        return Err(ExportError::TableNotActive { table: cfg.table.clone(), status: info.status.clone() });
    }
    let target = cfg.raise.target(info.throughput);
    let raise_to = lease::plan_raise(&info, target, cfg.force)?;
    let total = match (cfg.segments, schema_segments) {
        (Some(s), Some(existing)) if s != existing => {
            return Err(invalid("--segments", format!("{s} differs from the {existing} segments of the export being resumed")))
        }
        (Some(s), _) => s,
        (None, Some(existing)) => existing,
        (None, None) => sizing::default_segments(info.size_bytes, cfg.concurrency),
    };
    let range = cfg.segment_range.unwrap_or((0, total));
    if range.1 > total || range.0 >= range.1 {
        return Err(invalid("--segment-range", format!("{}..{} is outside TotalSegments {total} (segments 0..{total})", range.0, range.1)));
    }
    let budget = sizing::scan_budget(raise_to.or(info.throughput).map(|t| t.read), cfg.read_ratio, cfg.max_rcu).ok_or_else(|| {
        invalid(
            "--max-rcu",
            format!("table {} is on-demand (PAY_PER_REQUEST): give --max-rcu so the export cannot take the application's throughput", cfg.table),
        )
    })?;
    // The budget is the whole table's: a process scanning a slice of the segments gets
    // the same slice of it, so N pods of a sharded export stay within it together.
    let budget = Some(budget * f64::from(range.1 - range.0) / f64::from(total));
    let workers = cfg.concurrency.min(range.1 - range.0).max(1);
    Ok(Prepared { info, raise_to, budget, total, range, workers })
}

/// The latest export timestamp of the table in the batch.
async fn latest_timestamp(s3: &aws_sdk_s3::Client, cfg: &ExportConfig) -> Result<Option<Timestamp>, ExportError> {
    let dir = layout::table_prefix(&cfg.prefix, &cfg.batch, &cfg.table);
    let (_, prefixes) = crate::s3::list(s3, &cfg.bucket, &dir, Some("/")).await?;
    Ok(layout::timestamps_under(&dir, &prefixes).into_iter().max())
}

/// Whether every segment of the export has its manifest: the point after which no shard
/// scans any more, so `export capacity restore --when-complete` may release the lease.
pub async fn export_complete(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str, export: &ExportId) -> Result<bool, ExportError> {
    let schema_key = export.s3_key(prefix, &DumpFile::Schema);
    let Some(schema) = get_json::<TableSchema>(s3, bucket, &schema_key, "table schema").await? else { return Ok(false) };
    let dir = export.s3_manifests_dir(prefix);
    let (keys, _) = crate::s3::list(s3, bucket, &dir, None).await?;
    let mut done: Vec<u32> = keys
        .iter()
        .filter_map(|k| layout::DumpKey::from_s3_key(prefix, k).ok())
        .filter_map(|k| match k.file {
            DumpFile::Manifest { segment, total } if total == schema.total_segments => Some(segment),
            _ => None,
        })
        .collect();
    done.sort_unstable();
    done.dedup();
    Ok(done.len() as u32 == schema.total_segments)
}

/// `--dry-run`: checks and the plan; writes nothing, changes nothing.
pub async fn plan(clients: &Clients, cfg: &ExportConfig) -> Result<ExportPlan, ExportError> {
    cfg.validate()?;
    check_bucket(&clients.s3, &cfg.bucket).await?;
    let mut info = lease::describe(&clients.ddb, &cfg.table).await?;
    let mut stale = Vec::new();
    if let Some(held) = lease::read_lease(&clients.s3, &cfg.bucket, &cfg.prefix, &cfg.table).await? {
        let now = time::OffsetDateTime::now_utc();
        let standing = lease::standing(&held.lease, "", now).map_err(|why| ExportError::Corrupt {
            bucket: cfg.bucket.clone(),
            key: held.key.clone(),
            what: "capacity lease",
            why,
        })?;
        match standing {
            // The export would restore it first: plan from the capacity before its raise.
            lease::Standing::Stale { .. } => {
                info.throughput = Some(held.lease.original);
                stale.push(held.key);
            }
            s @ lease::Standing::Live { .. } if cfg.raise != Raise::None => {
                return Err(ExportError::LeaseHeld {
                    table: cfg.table.clone(),
                    bucket: cfg.bucket.clone(),
                    key: held.key.clone(),
                    owner: held.lease.owner.to_string(),
                    why: lease::describe_lease(&held.lease, s),
                })
            }
            _ => {}
        }
    }
    let p = prepare(cfg, info, None)?;
    let expected_rcu = sizing::scan_rcu(p.info.size_bytes, cfg.consistent);
    let fraction = f64::from(p.range.1 - p.range.0) / f64::from(p.total);
    Ok(ExportPlan {
        table: cfg.table.clone(),
        billing_mode: p.info.billing,
        capacity_now: p.info.throughput,
        raise_to: p.raise_to.map(|t| t.read),
        decreases_today: p.info.decreases_today,
        rcu_budget: p.budget,
        total_segments: p.total,
        segments: p.range,
        concurrency: p.workers,
        item_count_estimate: p.info.item_count,
        size_bytes_estimate: p.info.size_bytes,
        expected_rcu: expected_rcu * fraction,
        expected_seconds: p.budget.filter(|_| p.info.size_bytes > 0).map(|b| sizing::export_seconds(p.info.size_bytes, b, cfg.consistent) * fraction),
        s3_prefix: format!("s3://{}/{}", cfg.bucket, layout::table_prefix(&cfg.prefix, &cfg.batch, &cfg.table)),
        stale_leases: stale,
    })
}

/// The table's change streams, recorded in `_schema.json` for `crossdock sync`, with a
/// warning when there is none it can use. The Kinesis destinations are best effort:
/// a server (or a policy) that does not answer that call must not stop the export.
pub(crate) async fn table_stream(ddb: &aws_sdk_dynamodb::Client, info: &TableInfo) -> Option<crossdock_core::schema::StreamInfo> {
    let kinesis = match ddb.describe_kinesis_streaming_destination().table_name(&info.name).send().await {
        Ok(r) => r.kinesis_data_stream_destinations().to_vec(),
        Err(e) => {
            let (code, message) = crate::error::sdk_message(&e);
            tracing::warn!(table = %info.name, code = code.as_deref().unwrap_or("-"), error = %message, "could not list the table's Kinesis streaming destinations; recording its DynamoDB stream only");
            Vec::new()
        }
    };
    let stream = crate::stream::stream_of(&info.description, &kinesis);
    match &stream {
        None => tracing::warn!(table = %info.name, "{}", crate::stream::no_stream_warning(&info.name)),
        Some(s) => {
            if let Some(w) = crate::stream::view_type_warning(&info.name, s) {
                tracing::warn!(table = %info.name, "{w}");
            }
        }
    }
    stream
}

pub(crate) fn build_schema(info: &TableInfo, total: u32) -> TableSchema {
    use aws_sdk_dynamodb::types::{KeyType, ProjectionType, ScalarAttributeType};
    let d = &info.description;
    let keys = |ks: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<KeyElement> {
        ks.iter()
            .map(|k| KeyElement { name: k.attribute_name().to_string(), role: if *k.key_type() == KeyType::Range { KeyRole::Range } else { KeyRole::Hash } })
            .collect()
    };
    let projection = |p: Option<&aws_sdk_dynamodb::types::Projection>| match p.and_then(|p| p.projection_type()) {
        Some(ProjectionType::KeysOnly) => Projection::KeysOnly,
        Some(ProjectionType::Include) => Projection::Include { attributes: p.map(|p| p.non_key_attributes().to_vec()).unwrap_or_default() },
        _ => Projection::All,
    };
    // Global and local index descriptions are distinct SDK types with the same three parts.
    let index = |name: Option<&str>, key_schema: &[aws_sdk_dynamodb::types::KeySchemaElement], p: Option<&aws_sdk_dynamodb::types::Projection>| {
        SecondaryIndex { name: name.unwrap_or_default().to_string(), key_schema: keys(key_schema), projection: projection(p) }
    };
    TableSchema {
        format_version: FORMAT_VERSION,
        table: info.name.clone(),
        key_schema: keys(d.key_schema()),
        attribute_definitions: d
            .attribute_definitions()
            .iter()
            .map(|a| AttributeDefinition {
                name: a.attribute_name().to_string(),
                kind: match a.attribute_type() {
                    ScalarAttributeType::N => TypeTag::N,
                    ScalarAttributeType::B => TypeTag::B,
                    _ => TypeTag::S,
                },
            })
            .collect(),
        global_secondary_indexes: d.global_secondary_indexes().iter().map(|g| index(g.index_name(), g.key_schema(), g.projection())).collect(),
        local_secondary_indexes: d.local_secondary_indexes().iter().map(|l| index(l.index_name(), l.key_schema(), l.projection())).collect(),
        billing_mode: info.billing,
        capacity_before: info.throughput,
        item_count_estimate: info.item_count,
        size_bytes_estimate: info.size_bytes,
        total_segments: total,
        crossdock_version: crossdock_core::VERSION.to_string(),
        stream: None,
    }
}

/// The table's lease before this run starts: a stale one (a crashed earlier run left the
/// table raised) is restored first; a live one is left alone and forbids this run's
/// raise, or is joined when it is this shard's capacity step's. Returns the leases
/// restored and the one joined.
async fn settle_earlier_lease(
    clients: &Clients,
    cfg: &ExportConfig,
    ctx: &LeaseCtx<'_>,
    holder: &Holder,
) -> Result<(Vec<RestoreReport>, Option<lease::HeldLease>), ExportError> {
    // A crashed earlier run may have left the table raised: put it back first. A live
    // run's lease is left alone, and forbids this run's raise.
    let found = lease::restore_table(ctx, holder, &cfg.prefix, &cfg.table, false).await?;
    let mut restored_stale_leases = Vec::new();
    let mut joined = None;
    match found.action {
        RestoreAction::Restored => {
            tracing::warn!(table = %cfg.table, key = %found.key, restored_to = ?found.restored_to, why = %found.why, "restored the capacity lease of an earlier run");
            restored_stale_leases.push(found);
        }
        RestoreAction::LeftLive if cfg.raise != Raise::None => {
            return Err(ExportError::LeaseHeld {
                table: cfg.table.clone(),
                bucket: cfg.bucket.clone(),
                key: found.key,
                owner: found.owner.map(|o| o.to_string()).unwrap_or_default(),
                why: found.why,
            });
        }
        RestoreAction::LeftLive if found.owner.as_ref().map(|o| &o.run_id) == cfg.capacity_run.as_ref() => {
            // A shard of the run whose capacity step raised the table: keep its lease alive.
            joined = lease::read_lease(&clients.s3, &cfg.bucket, &cfg.prefix, &cfg.table).await?;
        }
        RestoreAction::LeftLive => {
            tracing::info!(table = %cfg.table, why = %found.why, "the table's capacity lease belongs to another live run; leaving it alone")
        }
        _ => {}
    }
    if let (Some(run), None) = (&cfg.capacity_run, &joined) {
        tracing::warn!(table = %cfg.table, run = %run, "--capacity-run: the table has no live lease of that run (not raised, or already restored); scanning at the current capacity");
    }
    Ok((restored_stale_leases, joined))
}

/// The export's directory (new, or the one being resumed), the key of its schema and
/// the schema already there, refusing to write into a directory that is not this run's.
async fn export_dir(clients: &Clients, cfg: &ExportConfig) -> Result<(ExportId, String, Option<TableSchema>), ExportError> {
    let timestamp = match (&cfg.timestamp, cfg.resume) {
        (Some(t), _) => t.clone(),
        (None, true) => latest_timestamp(&clients.s3, cfg).await?.ok_or_else(|| {
            let dir = layout::table_prefix(&cfg.prefix, &cfg.batch, &cfg.table);
            invalid("--resume", format!("no export of table {} in batch {} to resume under s3://{}/{dir}", cfg.table, cfg.batch, cfg.bucket))
        })?,
        (None, false) => Timestamp::now(),
    };
    let export = ExportId::new(&cfg.batch, &cfg.table, timestamp)?;
    let schema_key = export.s3_key(&cfg.prefix, &DumpFile::Schema);
    let existing: Option<TableSchema> = get_json(&clients.s3, &cfg.bucket, &schema_key, "table schema").await?;
    if existing.is_some() && !cfg.resume && cfg.segment_range.is_none() {
        return Err(invalid("timestamp", format!("s3://{}/{} already exists; use --resume to continue it", cfg.bucket, schema_key)));
    }
    if cfg.segment_range.is_some() && !cfg.resume {
        // A shard started afresh would rescan its segments from the start over parts
        // and checkpoints already written (by itself or a sibling): only --resume
        // continues them exactly once.
        let dir = export.s3_dir(&cfg.prefix);
        let (keys, _) = crate::s3::list(&clients.s3, &cfg.bucket, &dir, None).await?;
        let data = keys.iter().filter(|k| *k != &schema_key).count();
        if data > 0 {
            return Err(invalid(
                "--segment-range",
                format!("s3://{}/{dir} already has data ({data} objects); shards of one export write into it only with --resume (it starts segments without a checkpoint from the beginning)", cfg.bucket),
            ));
        }
    }
    Ok((export, schema_key, existing))
}

/// Scans the segments of `range`, `workers` at a time, each as a task of its own; their
/// events reach `observer` from this task. The first failure cancels the others.
async fn scan_segments(
    ctx: SegmentCtx,
    mut events: mpsc::UnboundedReceiver<ExportEvent>,
    observer: &dyn Observer,
    range: (u32, u32),
    workers: u32,
) -> Result<Vec<SegmentEnd>, ExportError> {
    let ctx = Arc::new(ctx);
    let table = ctx.export.table.clone();
    let mut pending = range.0..range.1;
    // Dropped on an early return (the run's future dropped), a JoinSet aborts its tasks.
    let mut running = tokio::task::JoinSet::new();
    let mut spawn_next = |running: &mut tokio::task::JoinSet<_>| {
        if let Some(s) = pending.next() {
            let ctx = ctx.clone();
            running.spawn(async move { run_segment(&ctx, s).await }.instrument(tracing::Span::current()));
        }
    };
    for _ in 0..workers.max(1) {
        spawn_next(&mut running);
    }
    let mut ends = Vec::new();
    let mut first_error = None;
    loop {
        let joined = tokio::select! {
            Some(e) = events.recv() => {
                observer.event(&e);
                continue;
            }
            joined = running.join_next() => joined,
        };
        let Some(joined) = joined else { break };
        match joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())) {
            Ok(end) => ends.push(end),
            Err(e) => {
                tracing::error!(table, error = %e, "segment failed; stopping the others");
                ctx.cancel.cancel();
                first_error.get_or_insert(e);
            }
        }
        spawn_next(&mut running);
    }
    // Every task has ended: what they sent is all queued.
    while let Ok(e) = events.try_recv() {
        observer.event(&e);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ends),
    }
}

/// Runs one export to the end, or until `shutdown` resolves (then it stops scanning,
/// keeps its checkpoints, restores capacity and returns a summary with
/// `interrupted: true`). Capacity raised by this run is restored on every path; if that
/// fails the error is [`ExportError::CapacityNotRestored`].
pub async fn run(clients: &Clients, cfg: &ExportConfig, observer: &dyn Observer, shutdown: impl Future<Output = ()>) -> Result<ExportSummary, ExportError> {
    let started = tokio::time::Instant::now();
    cfg.validate()?;
    check_bucket(&clients.s3, &cfg.bucket).await?;
    let ctx = LeaseCtx { ddb: &clients.ddb, s3: &clients.s3, autoscaler: clients.autoscaler.as_ref(), bucket: &cfg.bucket, active_timeout: cfg.active_timeout };
    // A shard acts as its capacity step's run, so it never takes that run's lease for
    // stale; any other export is a run of its own.
    let holder = Holder::new(cfg.capacity_run.as_deref(), cfg.lease_stale_after);
    // Describe first, so an unknown table fails before anything else.
    lease::describe(&clients.ddb, &cfg.table).await?;
    let (mut restored_stale_leases, joined) = settle_earlier_lease(clients, cfg, &ctx, &holder).await?;
    let info = lease::describe(&clients.ddb, &cfg.table).await?;

    let (export, schema_key, existing) = export_dir(clients, cfg).await?;
    let p = prepare(cfg, info, existing.as_ref().map(|s| s.total_segments))?;
    if existing.is_none() {
        let mut schema = build_schema(&p.info, p.total);
        schema.stream = table_stream(&clients.ddb, &p.info).await;
        put_json(&clients.s3, &cfg.bucket, &schema_key, &schema).await?;
    }

    observer.event(&ExportEvent::Started { export: export.clone(), total_segments: p.total, size_bytes_estimate: p.info.size_bytes, rcu_budget: p.budget });
    let cancel = CancellationToken::new();
    let limiter = Arc::new(RateLimiter::for_budget(p.budget));
    let throttled = Arc::new(AtomicU64::new(0));
    // The lease this run took (its heartbeat), and one of a capacity step it renews.
    let mut held: Option<Heartbeat> = None;
    let joined = joined.map(|j| Heartbeat::start(clients.s3.clone(), cfg.bucket.clone(), j));
    let mut interrupted = false;
    let result = {
        let work = async {
            if let Some(raise_to) = p.raise_to {
                let (h, stale) = lease::take(&ctx, &holder, &cfg.prefix, &p.info, raise_to, None).await?;
                restored_stale_leases.extend(stale);
                observer.event(&ExportEvent::LeaseTaken { key: h.key.clone() });
                held = Some(Heartbeat::start(clients.s3.clone(), cfg.bucket.clone(), h.clone()));
                lease::raise(&ctx, &h).await?;
                observer.event(&ExportEvent::CapacityRaised { read: raise_to.read });
            }
            let (events, events_rx) = mpsc::unbounded_channel();
            let seg_ctx = SegmentCtx {
                ddb: clients.ddb.clone(),
                s3: clients.s3.clone(),
                bucket: cfg.bucket.clone(),
                prefix: cfg.prefix.clone(),
                export: export.clone(),
                total: p.total,
                workers: p.workers,
                consistent: cfg.consistent,
                part_bytes: cfg.part_bytes,
                codec: cfg.codec,
                chunk_bytes: cfg.chunk_bytes,
                resume: cfg.resume,
                limiter: limiter.clone(),
                cancel: cancel.clone(),
                events,
                throttled: throttled.clone(),
            };
            scan_segments(seg_ctx, events_rx, observer, p.range, p.workers).await
        };
        tokio::pin!(work);
        tokio::pin!(shutdown);
        tokio::select! {
            r = &mut work => r,
            _ = &mut shutdown => {
                tracing::warn!(table = %cfg.table, "shutdown requested: stopping the scan, restoring capacity");
                interrupted = true;
                cancel.cancel();
                work.await
            }
        }
    };

    // Restore — always, whatever happened above.
    let mut restored = true;
    let mut restore_error = None;
    if let Some(j) = joined {
        // The capacity step's lease: renewed while scanning, restored by its own step.
        if let Err(why) = j.stop().await {
            tracing::warn!(table = %cfg.table, why = %why, "the capacity step's lease was lost while this shard scanned");
        }
    }
    if let Some(hb) = held {
        let key = crossdock_core::layout::capacity_lease_key(&cfg.prefix, &cfg.table)?;
        match lease::release(&ctx, hb, &holder).await {
            Ok(r) if r.action == RestoreAction::Lost => {
                tracing::warn!(table = %cfg.table, why = %r.why, "this run's capacity lease was taken over and restored by another run");
            }
            Ok(r) => observer.event(&ExportEvent::CapacityRestored { read: r.restored_to.unwrap_or_default() }),
            Err(e) => {
                restored = false;
                restore_error = Some((key, e));
            }
        }
    }
    if let Some((key, cause)) = restore_error {
        tracing::error!(table = %cfg.table, key = %key, error = %cause, "capacity NOT restored");
        return Err(ExportError::CapacityNotRestored {
            table: cfg.table.clone(),
            bucket: cfg.bucket.clone(),
            key,
            cause: cause.to_string(),
            export_error: result.err().map(Box::new),
        });
    }
    let ends = result?;
    let capacity_after = lease::describe(&clients.ddb, &cfg.table).await.ok().and_then(|i| i.throughput);
    let segments_done = ends.iter().filter(|e| e.done).count() as u32;
    let parts = ends.iter().flat_map(|e| e.checkpoint.parts.iter());
    let (items, bytes, nparts) = parts.fold((0, 0, 0), |(i, b, n), p| (i + p.items, b + p.bytes, n + 1));
    let complete = segments_done == p.range.1 - p.range.0;
    let summary = ExportSummary {
        table: cfg.table.clone(),
        s3_prefix: format!("s3://{}/{}", cfg.bucket, export.s3_dir(&cfg.prefix)),
        export,
        complete,
        interrupted: interrupted || !complete,
        total_segments: p.total,
        segments: p.range,
        segments_done,
        items,
        bytes,
        parts: nparts,
        consumed_rcu: limiter.consumed(),
        rcu_budget: p.budget,
        duration_secs: started.elapsed().as_secs_f64(),
        capacity_before: p.info.throughput,
        capacity_raised_to: p.raise_to,
        capacity_after,
        capacity_restored: restored,
        throttled_requests: throttled.load(Ordering::Relaxed),
        restored_stale_leases,
        consumed_rcu_per_second: limiter.per_second(),
    };
    tracing::info!(table = %summary.table, items, bytes, parts = nparts, complete, consumed_rcu = summary.consumed_rcu, secs = summary.duration_secs, "export finished");
    Ok(summary)
}

#[cfg(test)]
mod exports;

#[cfg(test)]
mod tests {
    use super::*;
    use crossdock_core::Codec;

    #[test]
    fn a_shard_refuses_to_raise_and_a_capacity_run_needs_no_raise() {
        let mut cfg = ExportConfig::new("Orders", "b", "x");
        cfg.segment_range = Some((0, 2));
        assert!(cfg.validate().is_ok());
        cfg.raise = Raise::To(100);
        let err = cfg.validate().expect_err("a shard raising");
        assert!(err.is_usage() && err.to_string().contains("export capacity raise"), "{err}");
        let mut cfg = ExportConfig::new("Orders", "b", "x");
        cfg.capacity_run = Some("run-1".into());
        cfg.raise = Raise::By(10);
        assert!(cfg.validate().is_err());
        cfg.raise = Raise::None;
        cfg.lease_stale_after = Duration::from_millis(500);
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn the_exporter_writes_zstd_gzip_or_plain_parts_at_a_level_the_codec_takes() {
        let with = |codec, level| {
            let mut cfg = ExportConfig::new("Orders", "b", "x");
            cfg.codec = PartCodec::new(codec, level);
            cfg.validate()
        };
        assert!(with(Codec::Zstd, None).is_ok() && with(Codec::Gzip, Some(9)).is_ok() && with(Codec::None, None).is_ok());
        let bzip2 = with(Codec::Bzip2, None).expect_err("bzip2");
        assert!(bzip2.is_usage() && bzip2.to_string().contains("--codec") && bzip2.to_string().contains("zstd, gzip or none"), "{bzip2}");
        let level = with(Codec::Gzip, Some(12)).expect_err("gzip 12");
        assert!(level.is_usage() && level.to_string().contains("--level") && level.to_string().contains("1..=9"), "{level}");
    }

    #[test]
    fn raise_targets() {
        let t = Some(Throughput { read: 5, write: 5 });
        assert_eq!(Raise::To(50).target(t), Some(50));
        assert_eq!(Raise::By(45).target(t), Some(50));
        assert_eq!(Raise::None.target(t), None);
        assert_eq!(Raise::To(50).target(None), None);
    }
}
