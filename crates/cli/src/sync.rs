//! `crossdock sync`: replay the table's change stream (DynamoDB Streams or Kinesis)
//! onto the destination its export was loaded into, from per-shard checkpoints next to
//! the marker; long-running, or until the lag stays under `--until-lag`.
//!
//! Exit codes: 0 caught up (`--until-lag`) or stopped by a signal, 1 failure (including a
//! checkpoint beyond the stream's retention: re-export), 2 bad flags, no usable stream, or
//! an export that is not loaded, 3 marker not found, 5 interrupted before `--until-lag`
//! was reached (rerun continues).

use crate::exit::{fail, Code};
use crate::load::{connect, LoadedTable, Output, Prepared};
use anyhow::Context as _;
use crossdock_core::layout::DumpFile;
use crossdock_core::marker::LoadedRecord;
use crossdock_load::sink::Target;
use crossdock_sync::checkpoint::GcsCheckpoints;
use crossdock_sync::source::incremental::IncrementalSource;
use crossdock_sync::source::kinesis::KinesisSource;
use crossdock_sync::source::streams::{latest_stream, DynamoStreams};
use crossdock_sync::source::ChangeSource;
use crossdock_sync::{Outcome, Status, SyncError, SyncOptions};

use std::time::{Duration, Instant};

/// Which stream to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// DynamoDB Streams (24 h retention).
    Streams,
    /// Kinesis Data Streams for DynamoDB (retention configurable up to a year).
    Kinesis,
    /// DynamoDB's INCREMENTAL exports to S3 (point-in-time recovery), given with
    /// --incremental, applied in export-time order.
    Incremental,
}

/// Flags of `crossdock sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub table: LoadedTable,
    /// The stream to read (default: the one the export recorded, else the table's
    /// current DynamoDB stream).
    #[arg(long, value_enum, default_value_t = SourceKind::Streams)]
    pub source: SourceKind,
    /// Stream ARN (DynamoDB Streams) or Kinesis stream ARN or name, instead of the one the
    /// export recorded.
    #[arg(long, value_name = "ARN")]
    pub stream: Option<String>,
    /// `--source incremental`: an INCREMENTAL export's directory,
    /// s3://BUCKET/[PREFIX/]AWSDynamoDB/EXPORT_ID/; repeat for every export since the
    /// table's full export (all under one prefix, without gaps).
    #[arg(long, value_name = "S3_URL")]
    pub incremental: Vec<String>,
    /// Exit 0 once every shard stayed under this lag for --hold and nothing is unread
    /// (e.g. 5s, 500ms, 2m); without it, run until SIGTERM/Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub until_lag: Option<Duration>,
    /// How long the lag must stay under --until-lag.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub hold: Duration,
    /// Give up (exit 1) when --until-lag is not reached within this.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub until_timeout: Duration,
    /// A batch closes at this many change records…
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_changes: u64,
    /// …or this long after its first record.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub max_wait: Duration,
    /// Pause between polls of a stream that has nothing new.
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    pub poll_interval: Duration,
    /// `text` or `json` (status lines every --status-interval, then a summary, on stdout).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Seconds between JSON status lines.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub status_interval: Duration,
    /// No progress line (lag, changes applied) on stderr, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Address of the `/metrics` server (e.g. 0.0.0.0:9465), `off` for none.
    #[arg(long, default_value = "off")]
    pub metrics_addr: String,
    /// AWS region (default: the AWS default chain: AWS_REGION, the profile).
    #[arg(long)]
    pub region: Option<String>,
}

/// `5s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 5s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn code_for(e: &SyncError) -> Code {
    match e {
        SyncError::Stream { .. } | SyncError::NotLoaded { .. } => Code::Usage,
        SyncError::Load { source, .. } => crate::load::code_for(source),
        _ => Code::Failure,
    }
}

pub(crate) fn coded(e: SyncError) -> anyhow::Error {
    fail(code_for(&e), e.to_string())
}

/// The source the flags and the marker name, opened.
enum Source {
    Streams(DynamoStreams),
    Kinesis(KinesisSource),
    Incremental(IncrementalSource),
}

async fn open_source(args: &Args, p: &Prepared, conf: &aws_config::SdkConfig) -> anyhow::Result<Source> {
    let schema = &p.marker.marker.schema;
    let table = schema.table.as_str();
    let recorded = schema.stream.as_ref();
    if args.source != SourceKind::Incremental && !args.incremental.is_empty() {
        return Err(fail(Code::Usage, "--incremental needs --source incremental"));
    }
    match args.source {
        SourceKind::Incremental => {
            if args.incremental.is_empty() {
                return Err(fail(Code::Usage, "--source incremental needs --incremental s3://BUCKET/…/AWSDynamoDB/EXPORT_ID/ (repeat for each export)"));
            }
            let started = p.marker.marker.export.timestamp.unix_micros() / 1000;
            let s3 = crate::aws::s3(conf);
            Ok(Source::Incremental(IncrementalSource::open(&s3, table, &args.incremental, Some(started)).await.map_err(coded)?))
        }
        SourceKind::Kinesis => {
            let arn = args
                .stream
                .clone()
                .or_else(|| recorded.and_then(|s| s.kinesis.first()).map(|k| k.arn.clone()))
                .ok_or_else(|| fail(Code::Usage, format!("the export of {table} records no Kinesis stream: pass --stream ARN")))?;
            let client = crate::aws::kinesis(conf);
            Ok(Source::Kinesis(KinesisSource::open(client, table, &arn).await.map_err(coded)?))
        }
        SourceKind::Streams => {
            let recorded_arn = recorded.and_then(|s| s.dynamodb.as_ref()).map(|d| d.arn.clone());
            let ddb = crate::aws::dynamodb(conf);
            let current = latest_stream(&ddb, table).await;
            let arn = match (&args.stream, &recorded_arn, current) {
                (Some(a), _, _) => a.clone(),
                (None, Some(rec), Ok(Some((cur, _)))) if &cur != rec => {
                    return Err(fail(
                        Code::Failure,
                        format!(
                            "table {table}: the export recorded stream {rec} but the table's stream is now {cur} (disabled and enabled again?): {}",
                            crossdock_sync::error::REEXPORT
                        ),
                    ))
                }
                (None, Some(rec), Ok(_)) => rec.clone(),
                (None, Some(rec), Err(e)) => {
                    tracing::warn!(table, error = %e, "cannot check the table's current stream; using the one the export recorded");
                    rec.clone()
                }
                (None, None, Ok(Some((cur, label)))) => {
                    // The export predates stream recording: the stream must be older than the
                    // export, or the changes made in between were never captured.
                    let started = p.marker.marker.export.timestamp.unix_micros() / 1000;
                    if let Some(created) = label_ms(&label) {
                        if created > started + 999 {
                            return Err(fail(
                                Code::Failure,
                                format!("table {table}: stream {cur} was created at {label}, after the export started ({}): changes made in between were never captured; {}", p.marker.marker.export.timestamp, crossdock_sync::error::REEXPORT),
                            ));
                        }
                    }
                    tracing::warn!(table, stream = %cur, "the export records no stream; using the table's current one");
                    cur
                }
                (None, None, Ok(None)) => {
                    return Err(fail(Code::Usage, format!("table {table} has no DynamoDB stream: {}", crossdock_export::stream::no_stream_warning(table))))
                }
                (None, None, Err(e)) => return Err(coded(e)),
            };
            let client = crate::aws::streams(conf);
            Ok(Source::Streams(DynamoStreams::open(client, table, &arn).await.map_err(coded)?))
        }
    }
}

/// A stream label is its creation time, `2026-11-30T05:34:56.123` (UTC).
fn label_ms(label: &str) -> Option<i64> {
    let with_zone = if label.ends_with('Z') || label.contains('+') { label.to_string() } else { format!("{label}Z") };
    time::OffsetDateTime::parse(&with_zone, &time::format_description::well_known::Rfc3339).ok().map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Refuses to sync into a destination the export was not loaded into: changes would
/// land in an empty table, and a load run after them would overwrite newer rows with
/// the export's older ones.
async fn check_loaded<T: Target>(p: &Prepared, t: &T) -> anyhow::Result<()> {
    let m = &p.marker;
    let table = &m.marker.export.table;
    let destination = t.destination(&p.model);
    let not_loaded = |reason: String| coded(SyncError::NotLoaded { table: table.clone(), reason });
    let key = m.key(&DumpFile::Loaded);
    let body = match m.gcs.read(&key).await {
        Ok(b) => b,
        Err(crossdock_load::LoadError::NotFound { .. }) => {
            return Err(not_loaded(format!(
                "the export is not loaded (no gs://{}/{key}): run `crossdock load --marker {}` to completion first",
                m.gcs.bucket, m.url
            )))
        }
        Err(e) => return Err(crate::load::coded(e)),
    };
    let rec: LoadedRecord = serde_json::from_slice(&body).with_context(|| format!("gs://{}/{key}", m.gcs.bucket))?;
    if rec.destination != destination {
        return Err(not_loaded(format!("the export was loaded into {}, but the pipeline routes it to {destination}", rec.destination)));
    }
    Ok(())
}

fn options(args: &Args, p: &Prepared, kinesis: bool) -> SyncOptions {
    SyncOptions {
        max_changes: args.max_changes as usize,
        max_wait: args.max_wait,
        poll_interval: args.poll_interval,
        until_lag: args.until_lag,
        hold: args.hold,
        until_timeout: args.until_timeout,
        export_started_ms: Some(p.marker.marker.export.timestamp.unix_micros() / 1000),
        newest_wins: kinesis,
        ..SyncOptions::default()
    }
}

/// Prints status lines (JSON, rate-limited) or keeps a spinner with the lag (terminal).
struct Reporter {
    json: bool,
    bar: indicatif::ProgressBar,
    every: Duration,
    last: Option<Instant>,
}

impl Reporter {
    fn status(&mut self, s: &Status) {
        if self.json && self.last.is_none_or(|t| t.elapsed() >= self.every) {
            println!("{}", serde_json::to_string(s).unwrap_or_default());
            self.last = Some(Instant::now());
        }
        let lag = s.lag_ms.map_or("?".to_string(), |l| format!("{:.1}s", l as f64 / 1000.0));
        let reading = s.shards.iter().filter(|x| x.state == "reading").count();
        self.bar.set_position(s.upserts + s.deletes);
        self.bar.set_message(format!(
            "{}: lag {lag}{} · {} upserts, {} deletes in {} batches · {reading} shard(s) reading",
            s.table,
            if s.caught_up { " (caught up)" } else { "" },
            s.upserts,
            s.deletes,
            s.batches,
        ));
    }

    fn finish(&self) {
        crate::bars::finish(&self.bar);
    }
}

async fn sync_with<S: ChangeSource, T: Target>(args: &Args, p: &Prepared, t: &T, source: &S, opts: &SyncOptions) -> anyhow::Result<Code> {
    check_loaded(p, t).await?;
    let store = GcsCheckpoints { gcs: p.marker.gcs.clone(), export: p.marker.marker.export.clone() };
    let on = crate::bars::enabled(args.no_progress, args.output == Output::Json);
    let mut reporter = Reporter {
        json: args.output == Output::Json,
        bar: crate::bars::bar(on, None, "{spinner} [{elapsed_precise}] {msg}"),
        every: args.status_interval,
        last: None,
    };
    let result = crossdock_sync::run(source, t, &p.model, &store, opts, &mut |s| reporter.status(s), crate::shutdown::signal()).await;
    reporter.finish();
    let summary = result.map_err(coded)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&summary).unwrap_or_default()),
        Output::Text => println!(
            "{}: {} — lag {} ms, {} records, {} upserts, {} deletes in {} batch(es), {} shard(s)",
            p.marker.marker.export,
            match summary.outcome {
                Outcome::CaughtUp => "caught up",
                Outcome::Interrupted => "interrupted",
            },
            summary.status.lag_ms.map_or("?".into(), |l| l.to_string()),
            summary.status.records,
            summary.status.upserts,
            summary.status.deletes,
            summary.status.batches,
            summary.status.shards.len()
        ),
    }
    Ok(match (summary.outcome, args.until_lag) {
        (Outcome::Interrupted, Some(_)) => Code::Partial,
        _ => Code::Ok,
    })
}

pub async fn run(args: Args) -> anyhow::Result<Code> {
    if let Some(addr) = crate::serve::addr(&args.metrics_addr)? {
        let phase = crate::serve::Phase { metrics: crossdock_sync::events::METRICS, buckets: crossdock_sync::events::BUCKETS };
        crate::serve::serve(addr, phase, crate::serve::alive).await?;
    }
    let (_, p) = args.table.prepare().await?;
    let conf = crate::aws::config(args.region.clone()).await;
    let source = open_source(&args, &p, &conf).await?;
    let opts = options(&args, &p, matches!(source, Source::Kinesis(_)));
    let t = connect(&p).await?;
    match &source {
        Source::Streams(s) => sync_with(&args, &p, &t, s, &opts).await,
        Source::Kinesis(s) => sync_with(&args, &p, &t, s, &opts).await,
        Source::Incremental(s) => sync_with(&args, &p, &t, s, &opts).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn stream_labels_are_utc_times() {
        assert_eq!(label_ms("2026-11-30T05:34:56.123"), Some(1_796_016_896_123));
        assert_eq!(label_ms("not a time"), None);
    }
}
