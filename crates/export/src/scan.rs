//! One segment of the export: its pages ([`crate::pages`], under the shared
//! [`RateLimiter`]) into data parts that roll over at the first page boundary past the size limit; after each durable part
//! a checkpoint (`_checkpoint/seg-SSSSS.json`) records the parts and the page's
//! `LastEvaluatedKey`, so `--resume` continues after the last durable part and every item
//! lands exactly once. The segment's manifest is written when it ends.

use crate::convert::Scanned;
use crate::error::ExportError;
use crate::observe::ExportEvent;
use crate::pages::{Pages, Segment};
use crate::ratelimit::RateLimiter;
use crate::s3::{delete, get_json, put_json};
use crate::writer::{PartCodec, PartWriter};
use crossdock_core::item::Entries;
use crossdock_core::layout::{DumpFile, ExportId};
use crossdock_core::manifest::{SegmentCheckpoint, SegmentManifest, TypeStats};
use crossdock_core::FORMAT_VERSION;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything a segment task shares with the others. Each segment runs as a task of
/// its own ([`crate::run`] spawns them), so the segments' CPU work (response parsing,
/// line encoding, compression) spreads over the runtime's threads instead
/// of taking turns on one; the context is owned for that.
pub(crate) struct SegmentCtx {
    pub ddb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub prefix: String,
    pub export: ExportId,
    pub total: u32,
    pub workers: u32,
    pub consistent: bool,
    pub part_bytes: u64,
    pub codec: PartCodec,
    pub chunk_bytes: usize,
    pub resume: bool,
    pub limiter: Arc<RateLimiter>,
    pub cancel: CancellationToken,
    /// The run's events go back to the run's task, which hands them to its observer.
    pub events: mpsc::UnboundedSender<ExportEvent>,
    pub throttled: Arc<AtomicU64>,
}

impl SegmentCtx {
    fn event(&self, event: ExportEvent) {
        // The receiver lives as long as the scan; after it, nobody is listening.
        let _ = self.events.send(event);
    }
}

/// How a segment ended: its durable progress either way.
#[derive(Debug)]
pub(crate) struct SegmentEnd {
    pub checkpoint: SegmentCheckpoint,
    pub done: bool,
}

fn fresh(segment: u32, total: u32) -> SegmentCheckpoint {
    SegmentCheckpoint {
        segment,
        total_segments: total,
        parts: Vec::new(),
        last_evaluated_key: None,
        done: false,
        consumed_rcu: 0.0,
        type_stats: TypeStats::default(),
    }
}

/// The checkpoint the segment continues from (`--resume`), or a fresh one.
async fn starting_checkpoint(ctx: &SegmentCtx, segment: u32, cp_key: &str) -> Result<SegmentCheckpoint, ExportError> {
    if !ctx.resume {
        return Ok(fresh(segment, ctx.total));
    }
    match get_json::<SegmentCheckpoint>(&ctx.s3, &ctx.bucket, cp_key, "segment checkpoint").await? {
        Some(cp) if cp.total_segments != ctx.total => Err(ExportError::Corrupt {
            bucket: ctx.bucket.clone(),
            key: cp_key.into(),
            what: "checkpoint for this export",
            why: format!("it is for {} segments, this run has {}", cp.total_segments, ctx.total),
        }),
        Some(cp) => Ok(cp),
        None => Ok(fresh(segment, ctx.total)),
    }
}

/// Scans one segment into parts, a checkpoint after each durable part, the manifest at
/// the end; a cancelled segment stops after its last durable part (`done: false`).
pub(crate) async fn run_segment(ctx: &SegmentCtx, segment: u32) -> Result<SegmentEnd, ExportError> {
    let table = ctx.export.table.as_str();
    let cp_key = ctx.export.s3_key(&ctx.prefix, &DumpFile::Checkpoint { segment });
    let mut cp = starting_checkpoint(ctx, segment, &cp_key).await?;
    if cp.done {
        tracing::info!(table, segment, "segment already complete (checkpoint); rewriting its manifest");
        write_manifest(ctx, &cp).await?;
        return Ok(SegmentEnd { checkpoint: cp, done: true });
    }
    if cp.last_evaluated_key.is_some() {
        tracing::info!(table, segment, parts = cp.parts.len(), "resuming segment after its last durable part");
    }
    let seg = Segment {
        ddb: &ctx.ddb,
        table,
        segment,
        total: ctx.total,
        workers: ctx.workers,
        consistent: ctx.consistent,
        limiter: &ctx.limiter,
        cancel: &ctx.cancel,
        throttled: &ctx.throttled,
        throttle_metric: "crossdock_export_throttled_total",
    };
    let mut pages = Pages::new(seg, cp.last_evaluated_key.as_ref());
    let mut part = new_part(ctx, segment, cp.parts.len() as u32)?;
    let mut rcu_since_checkpoint = 0.0;
    let mut next = pages.next_scanned().await;
    loop {
        let page = match next {
            Ok(Some(page)) => page,
            // Only a cancelled segment runs out of pages before its last one.
            Ok(None) => {
                part.abort().await;
                return Ok(SegmentEnd { checkpoint: cp, done: false });
            }
            Err(e) => {
                part.abort().await;
                return Err(e);
            }
        };
        let finished = page.last_evaluated_key.is_none();
        // The next page is read while this one is encoded and uploaded: the table is
        // never left waiting on this process or on S3 (a page is ≤ 1 MB, so memory
        // holds at most two per segment). The checkpoint still names the pages written.
        // The request goes out first: encoding holds this thread for milliseconds, so
        // the write starts by yielding once, letting the connection's task send the
        // request (a woken task waits on this thread, unstolen, until it yields).
        let write = async {
            tokio::task::yield_now().await;
            let consumed = page.consumed_rcu;
            rcu_since_checkpoint += consumed;
            let bytes_before = part.bytes();
            for item in &page.items {
                part.push::<Scanned>(&Entries::Unordered(item)).await?;
            }
            let page_items = page.items.len() as u64;
            metrics::counter!("crossdock_export_items_total").increment(page_items);
            metrics::counter!("crossdock_export_consumed_rcu_total").increment(consumed.round() as u64);
            ctx.event(ExportEvent::Page { segment, items: page_items, bytes: part.bytes() - bytes_before, consumed_rcu: consumed });
            if part.bytes() >= ctx.part_bytes || finished {
                let next_number = cp.parts.len() as u32 + u32::from(part.items() > 0);
                let full = std::mem::replace(&mut part, new_part(ctx, segment, next_number)?);
                if full.items() > 0 {
                    let done = full.finish().await?;
                    metrics::counter!("crossdock_export_parts_total").increment(1);
                    tracing::info!(table, segment, part = %done.entry.name, items = done.entry.items, bytes = done.entry.bytes, "part written");
                    ctx.event(ExportEvent::PartWritten { segment, items: done.entry.items, bytes: done.entry.bytes });
                    cp.parts.push(done.entry);
                    cp.type_stats.merge(&done.stats);
                }
                cp.last_evaluated_key = page.last_evaluated_key.clone();
                cp.done = finished;
                cp.consumed_rcu += rcu_since_checkpoint;
                rcu_since_checkpoint = 0.0;
                put_json(&ctx.s3, &ctx.bucket, &cp_key, &cp).await?;
            }
            Ok::<_, ExportError>(())
        };
        let read = async {
            if finished {
                Ok(None)
            } else {
                pages.next_scanned().await
            }
        };
        let (read, written) = tokio::join!(biased; read, write);
        written?;
        if finished {
            break;
        }
        next = read;
    }
    if ctx.resume {
        // A part uploaded after the last checkpoint by a killed run, beyond what this run
        // wrote, would be an orphan: remove it, whatever codec that run wrote with.
        for codec in PartCodec::WRITABLE {
            let orphan = ctx.export.s3_key(&ctx.prefix, &DumpFile::Part { segment, part: cp.parts.len() as u32, codec });
            delete(&ctx.s3, &ctx.bucket, &orphan).await?;
        }
    }
    write_manifest(ctx, &cp).await?;
    metrics::counter!("crossdock_export_segments_total").increment(1);
    tracing::info!(table, segment, parts = cp.parts.len(), "segment complete");
    ctx.event(ExportEvent::SegmentDone { segment });
    Ok(SegmentEnd { checkpoint: cp, done: true })
}

fn new_part(ctx: &SegmentCtx, segment: u32, part: u32) -> Result<PartWriter, ExportError> {
    let file = DumpFile::Part { segment, part, codec: ctx.codec.codec };
    PartWriter::new(ctx.s3.clone(), &ctx.export.table, &ctx.bucket, ctx.export.s3_key(&ctx.prefix, &file), file.s3_name(), ctx.codec, ctx.chunk_bytes)
}

/// The manifest of a finished segment of `table`, from its last checkpoint.
pub fn manifest(table: &str, cp: &SegmentCheckpoint) -> SegmentManifest {
    SegmentManifest {
        format_version: FORMAT_VERSION,
        table: table.into(),
        segment: cp.segment,
        total_segments: cp.total_segments,
        parts: cp.parts.clone(),
        items: cp.parts.iter().map(|p| p.items).sum(),
        bytes: cp.parts.iter().map(|p| p.bytes).sum(),
        consumed_rcu: cp.consumed_rcu,
        type_stats: cp.type_stats.clone(),
    }
}

async fn write_manifest(ctx: &SegmentCtx, cp: &SegmentCheckpoint) -> Result<(), ExportError> {
    let key = ctx.export.s3_key(&ctx.prefix, &DumpFile::Manifest { segment: cp.segment, total: ctx.total });
    put_json(&ctx.s3, &ctx.bucket, &key, &manifest(&ctx.export.table, cp)).await
}
