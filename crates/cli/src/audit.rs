//! `crossdock audit`: the consistency check before a cutover and in every rehearsal.
//! The *live* source table is read with a rate-limited parallel scan (the exporter's
//! limiter and budget rules) and every item is compared with the target row of the
//! same primary key, as `verify` compares the export: missing, different and extra
//! rows, with examples. Memory holds a few pages and one lookup batch whatever the
//! table's size. Exit 0 when equal, 7 when not.

use crate::exit::{fail, Code};
use crate::load::{coded, connect, LoadedTable, Output};
use crossdock_core::sizing;
use crossdock_export::pages::{Page, Pages, Segment};
use crossdock_export::ratelimit::RateLimiter;
use crossdock_load::compare::{Comparison, VerifyReport};
use crossdock_load::sink::Target;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Flags of `crossdock audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub table: LoadedTable,
    /// Compare about this share of the table (0 < F ≤ 1): whole segments of a finer
    /// parallel scan, spread over the key space. Extra target rows are then not counted.
    #[arg(long, value_name = "F")]
    pub sample: Option<f64>,
    /// Parallel-scan segments read (default: one per GiB of table, at least --concurrency, in whole rounds of it).
    #[arg(long, value_name = "N")]
    pub segments: Option<u32>,
    /// Share of the table's provisioned read capacity the audit may use.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Ceiling in RCU/s (required for on-demand tables, as for the export).
    #[arg(long)]
    pub max_rcu: Option<f64>,
    /// Segments read at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Strongly consistent reads (twice the read capacity).
    #[arg(long)]
    pub consistent: bool,
    /// `text` or `json`.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// AWS region of the source table (default: the pipeline's source region, else the
    /// AWS default chain: AWS_REGION, the profile).
    #[arg(long)]
    pub region: Option<String>,
}

/// What the audit prints: the comparison and how the table was read.
#[derive(Debug, serde::Serialize)]
struct AuditReport {
    table: String,
    destination: String,
    /// Share of the table read (1 for a full audit).
    sampled: f64,
    segments_read: usize,
    total_segments: u32,
    consumed_rcu: f64,
    throttled: u64,
    seconds: f64,
    #[serde(flatten)]
    comparison: VerifyReport,
}

pub async fn run(args: Args) -> anyhow::Result<Code> {
    let (pipeline, p) = args.table.prepare().await?;
    let table = p.marker.marker.export.table.clone();
    let conf = crate::aws::config(args.region.clone().or(pipeline.source.region.clone())).await;
    let ddb = crate::aws::dynamodb(&conf);
    let info = crossdock_export::lease::describe(&ddb, &table).await.map_err(source_error)?;
    let provisioned = info.throughput.map(|t| t.read);
    let budget = sizing::scan_budget(provisioned, args.read_ratio, args.max_rcu).ok_or_else(|| {
        fail(Code::Usage, format!("table {table} is on-demand (PAY_PER_REQUEST): give --max-rcu so the audit cannot take the application's throughput"))
    })?;
    let read = args.segments.unwrap_or_else(|| sizing::default_segments(info.size_bytes, args.concurrency));
    let (total, segments) = match args.sample {
        None => (read, (0..read).collect()),
        Some(f) if f > 0.0 && f <= 1.0 => sizing::sample_segments(f, read),
        Some(f) => return Err(fail(Code::Usage, format!("--sample {f}: give a share of the table in (0, 1]"))),
    };
    let share = segments.len() as f64 / f64::from(total);
    let target = connect(&p).await?;
    let started = Instant::now();
    let limiter = RateLimiter::for_budget(Some(budget));
    let cancel = CancellationToken::new();
    let throttled = AtomicU64::new(0);
    let workers = args.concurrency.min(segments.len() as u32).max(1);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Page>(2 * workers as usize);
    // One sender per segment, made now: the channel closes when the last reader ends.
    let senders: Vec<_> = segments.iter().map(|&segment| (segment, tx.clone())).collect();
    drop(tx);
    let readers = futures::stream::iter(senders.into_iter().map(|(segment, tx)| {
        let seg = Segment {
            ddb: &ddb,
            table: &table,
            segment,
            total,
            workers,
            consistent: args.consistent,
            limiter: &limiter,
            cancel: &cancel,
            throttled: &throttled,
            throttle_metric: "crossdock_audit_throttled_total",
        };
        async move {
            let mut pages = Pages::new(seg, None);
            while let Some(page) = pages.next().await? {
                if tx.send(page).await.is_err() {
                    break;
                }
            }
            Ok::<(), crossdock_export::ExportError>(())
        }
    }));
    // The first failed segment ends the read (the other readers are dropped), and with
    // it the comparison's input.
    let read_all = async {
        use futures::{StreamExt, TryStreamExt};
        readers.buffer_unordered(workers as usize).try_collect::<Vec<()>>().await
    };
    // DescribeTable's item count is up to 6 h old: the bar may end short of or past it.
    let expected = (info.item_count as f64 * share).round() as u64;
    let bar = crate::bars::bar(crate::bars::enabled(args.no_progress, args.output == Output::Json), Some(expected), &crate::bars::counted("items"));
    let compare = async {
        let mut cmp = Comparison::new(&target, &p.model);
        let mut consumed = 0.0;
        while let Some(page) = rx.recv().await {
            consumed += page.consumed_rcu;
            bar.inc(page.items.len() as u64);
            if bar.position() > bar.length().unwrap_or(0) {
                bar.set_length(bar.position());
            }
            for item in page.items {
                cmp.push(item).await?;
            }
        }
        let report = if share < 1.0 { cmp.finish_sample().await? } else { cmp.finish().await? };
        Ok::<_, crossdock_load::LoadError>((report, consumed))
    };
    let stop = crate::shutdown::signal();
    let (read, compared) = tokio::select! {
        r = async { futures::join!(read_all, compare) } => r,
        _ = stop => return Err(fail(Code::Partial, "audit interrupted; nothing was written, rerun it")),
    };
    crate::bars::finish(&bar);
    read.map_err(source_error)?;
    let (comparison, consumed_rcu) = compared.map_err(coded)?;
    let report = AuditReport {
        table,
        destination: target.destination(&p.model),
        sampled: share,
        segments_read: segments.len(),
        total_segments: total,
        consumed_rcu,
        throttled: throttled.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        comparison,
    };
    print(&report, args.output);
    Ok(if report.comparison.ok() { Code::Ok } else { Code::Mismatch })
}

fn source_error(e: crossdock_export::ExportError) -> anyhow::Error {
    fail(crate::export::code_for(&e), e.to_string())
}

fn print(r: &AuditReport, output: Output) {
    if output == Output::Json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    let c = &r.comparison;
    let extra = if r.sampled < 1.0 { "not counted (sample)".to_string() } else { c.extra.to_string() };
    println!(
        "{} → {}: {} source items read ({:.1}% of the table, {} of {} segments, {:.0} RCU, {} throttled, {:.1} s): {} equal, {} missing, {} different, extra {}",
        r.table,
        r.destination,
        c.source_items,
        r.sampled * 100.0,
        r.segments_read,
        r.total_segments,
        r.consumed_rcu,
        r.throttled,
        r.seconds,
        c.matching,
        c.missing,
        c.different,
        extra
    );
    for e in &c.examples {
        println!("  {e}");
    }
}
