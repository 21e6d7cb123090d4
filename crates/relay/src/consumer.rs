//! The receive loop: long-polls SQS, runs one task per message (with a visibility
//! heartbeat), deletes messages in batches once everything they name is durable in
//! GCS, and drains on shutdown, spot notice or idleness.

use crate::copy::{CopyOutcome, CopyRequest};
use crate::error::RelayError;
use crate::event::{parse_body, Notification, S3Record};
use crate::{complete, drain, metrics, Relay};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use crossdock_core::layout::{DumpFile, DumpKey};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why the relay stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    /// The shutdown future resolved (SIGTERM, Ctrl-C, a test).
    Shutdown,
    /// A spot interruption notice was served.
    SpotNotice,
    /// `until_idle` elapsed with an empty queue.
    Idle,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub messages: u64,
    pub copied: u64,
    pub skipped: u64,
    pub ignored: u64,
    pub failed: u64,
    pub markers_written: u64,
    pub heartbeats: u64,
    /// Messages abandoned at the drain deadline and made visible again.
    pub released: u64,
    pub reason: Option<DrainReason>,
    /// The first errors met (at most 20), for reports and tests.
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Stats {
    messages: AtomicU64,
    copied: AtomicU64,
    skipped: AtomicU64,
    ignored: AtomicU64,
    failed: AtomicU64,
    markers_written: AtomicU64,
    heartbeats: Arc<AtomicU64>,
    released: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Stats {
    fn error(&self, e: impl std::fmt::Display) {
        let mut v = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 20 {
            v.push(e.to_string());
        }
    }
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

struct InFlight {
    receipt: String,
    abort: tokio::task::AbortHandle,
}

type Registry = Arc<Mutex<HashMap<String, InFlight>>>;

struct Shared {
    relay: Relay,
    stats: Stats,
    inflight: Registry,
    deletes: mpsc::UnboundedSender<(String, String)>,
}

fn lock(r: &Registry) -> std::sync::MutexGuard<'_, HashMap<String, InFlight>> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the relay until `shutdown` resolves, a spot notice arrives, or (with
/// `until_idle_secs`) the queue stays empty; then drains and returns what it did.
pub async fn run(relay: Relay, shutdown: impl Future<Output = ()>) -> Result<Summary, RelayError> {
    let (del_tx, del_rx) = mpsc::unbounded_channel();
    let settings = relay.settings.clone();
    let health = relay.health.clone();
    let shared = Arc::new(Shared { relay, stats: Stats::default(), inflight: Arc::default(), deletes: del_tx });
    let deleter = tokio::spawn(delete_loop(shared.relay.sqs.clone(), settings.queue_url.clone(), del_rx));
    let stop = CancellationToken::new();
    let idle = CancellationToken::new();
    let sem = Arc::new(Semaphore::new(settings.concurrency));
    let receiver = tokio::spawn(receive_loop(shared.clone(), stop.clone(), idle.clone(), sem.clone()));
    info!(queue = settings.queue_url, codec = %settings.codec, concurrency = settings.concurrency, visibility_s = shared.relay.visibility, "relay started");

    let spot = async {
        match settings.imds_endpoint.clone() {
            Some(ep) => drain::spot_notice(ep, Duration::from_secs(settings.spot_poll_secs.max(1))).await,
            None => std::future::pending().await,
        }
    };
    let reason = tokio::select! {
        _ = shutdown => DrainReason::Shutdown,
        _ = spot => DrainReason::SpotNotice,
        _ = idle.cancelled() => DrainReason::Idle,
    };
    health.set_draining();
    stop.cancel();
    let deadline = Duration::from_secs(settings.drain_deadline_secs);
    let label = match reason {
        DrainReason::Shutdown => "signal",
        DrainReason::SpotNotice => "spot",
        DrainReason::Idle => "idle",
    };
    metrics::drain_started(label, lock(&shared.inflight).len(), deadline);
    let _ = receiver.await;
    let until = Instant::now() + deadline;
    loop {
        if lock(&shared.inflight).is_empty() {
            break;
        }
        if Instant::now() >= until {
            let abandoned: Vec<(String, InFlight)> = lock(&shared.inflight).drain().collect();
            for (id, f) in abandoned {
                f.abort.abort();
                let r = shared
                    .relay
                    .sqs
                    .change_message_visibility()
                    .queue_url(&settings.queue_url)
                    .receipt_handle(&f.receipt)
                    .visibility_timeout(0)
                    .send()
                    .await;
                if let Err(e) = r {
                    metrics::sqs_error("ChangeMessageVisibility", &aws_sdk_sqs::error::DisplayErrorContext(&e).to_string());
                }
                metrics::released(&id);
                metrics::message_done(&id, "released");
                inc(&shared.stats.released);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every sender clone lives in `shared`; once the last task is gone the deleter ends.
    let stats = match Arc::try_unwrap(shared) {
        Ok(s) => s.stats,
        Err(shared) => {
            // Aborted tasks release their clone asynchronously; give them a moment.
            let mut shared = shared;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match Arc::try_unwrap(shared) {
                    Ok(s) => break s.stats,
                    Err(s) => shared = s,
                }
            }
        }
    };
    let _ = deleter.await;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let summary = Summary {
        messages: l(&stats.messages),
        copied: l(&stats.copied),
        skipped: l(&stats.skipped),
        ignored: l(&stats.ignored),
        failed: l(&stats.failed),
        markers_written: l(&stats.markers_written),
        heartbeats: stats.heartbeats.load(Ordering::Relaxed),
        released: l(&stats.released),
        reason: Some(reason),
        errors: stats.errors.into_inner().unwrap_or_else(|p| p.into_inner()),
    };
    info!(?summary, "relay stopped");
    Ok(summary)
}

async fn receive_loop(shared: Arc<Shared>, stop: CancellationToken, idle: CancellationToken, sem: Arc<Semaphore>) {
    let s = &shared.relay.settings;
    let concurrency = s.concurrency;
    let mut idle_since = Instant::now();
    loop {
        let first = tokio::select! {
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let mut permits = vec![first];
        while permits.len() < 10 {
            match sem.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let busy = permits.len() < concurrency;
        if busy {
            idle_since = Instant::now();
        }
        let mut wait = s.wait_time_secs;
        if let Some(idle_s) = s.until_idle_secs {
            wait = wait.min(idle_s.clamp(1, 20) as u32);
        }
        let call = shared
            .relay
            .sqs
            .receive_message()
            .queue_url(&s.queue_url)
            .max_number_of_messages(permits.len() as i32)
            .wait_time_seconds(wait as i32)
            .visibility_timeout(shared.relay.visibility as i32)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send();
        let resp = tokio::select! {
            r = call => r,
            _ = stop.cancelled() => break,
        };
        shared.relay.health.polled();
        let messages = match resp {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                metrics::sqs_error("ReceiveMessage", &aws_sdk_sqs::error::DisplayErrorContext(&e).to_string());
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
        };
        if messages.is_empty() {
            if let Some(idle_s) = s.until_idle_secs {
                if !busy && idle_since.elapsed() >= Duration::from_secs(idle_s) {
                    info!(idle_s, "queue idle; stopping (--until-idle)");
                    idle.cancel();
                    break;
                }
            }
            continue;
        }
        idle_since = Instant::now();
        for (m, permit) in messages.into_iter().zip(permits.drain(..)) {
            let Some(receipt) = m.receipt_handle.clone() else { continue };
            let id = m.message_id.clone().unwrap_or_else(|| receipt.chars().take(16).collect());
            let task_shared = shared.clone();
            let mut reg = lock(&shared.inflight);
            let task_id = id.clone();
            let h = tokio::spawn(async move {
                let _permit = permit;
                handle_message(&task_shared, &task_id, m).await;
                lock(&task_shared.inflight).remove(&task_id);
            });
            reg.insert(id, InFlight { receipt, abort: h.abort_handle() });
        }
    }
}

enum Verdict {
    Delete,
    Retry,
}

async fn handle_message(shared: &Shared, id: &str, m: Message) {
    let relay = &shared.relay;
    let receipt = m.receipt_handle.clone().unwrap_or_default();
    let lag = m
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|t| t.parse::<u64>().ok())
        .and_then(|sent| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH + Duration::from_millis(sent)).ok());
    metrics::message_received(id, lag);
    inc(&shared.stats.messages);
    let hb = tokio::spawn(heartbeat(
        relay.sqs.clone(),
        relay.settings.queue_url.clone(),
        receipt.clone(),
        id.to_string(),
        relay.visibility,
        relay.heartbeat_interval(),
        shared.stats.heartbeats.clone(),
    ));
    let verdict = process(shared, id, m.body().unwrap_or_default()).await;
    hb.abort();
    match verdict {
        Verdict::Delete => {
            let _ = shared.deletes.send((id.to_string(), receipt));
            metrics::message_done(id, "deleted");
        }
        Verdict::Retry => {
            let r = relay
                .sqs
                .change_message_visibility()
                .queue_url(&relay.settings.queue_url)
                .receipt_handle(&receipt)
                .visibility_timeout(relay.settings.retry_delay_secs as i32)
                .send()
                .await;
            if let Err(e) = r {
                metrics::sqs_error("ChangeMessageVisibility", &aws_sdk_sqs::error::DisplayErrorContext(&e).to_string());
            }
            metrics::message_done(id, "retry");
        }
    }
}

/// Extends the message's visibility every `interval` until aborted; stops at the
/// first failure so SQS redelivers. Counts extensions in `count`.
async fn heartbeat(sqs: aws_sdk_sqs::Client, queue: String, receipt: String, id: String, visibility: u32, interval: Duration, count: Arc<AtomicU64>) {
    loop {
        tokio::time::sleep(interval).await;
        let r = sqs.change_message_visibility().queue_url(&queue).receipt_handle(&receipt).visibility_timeout(visibility as i32).send().await;
        match r {
            Ok(_) => {
                count.fetch_add(1, Ordering::Relaxed);
                metrics::heartbeat(&id, true, None);
            }
            Err(e) => {
                metrics::heartbeat(&id, false, Some(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()));
                return;
            }
        }
    }
}

async fn process(shared: &Shared, id: &str, body: &str) -> Verdict {
    match parse_body(body) {
        Err(e) => {
            metrics::malformed(id, &e.to_string());
            Verdict::Retry
        }
        Ok(Notification::Test) => {
            metrics::test_event(id);
            Verdict::Delete
        }
        Ok(Notification::Records(records)) => {
            let mut ok = true;
            for r in &records {
                if !handle_record(shared, r).await {
                    ok = false;
                }
            }
            if ok {
                Verdict::Delete
            } else {
                Verdict::Retry
            }
        }
    }
}

/// Handles one record; `true` when it needs no retry.
async fn handle_record(shared: &Shared, r: &S3Record) -> bool {
    let relay = &shared.relay;
    let s = &relay.settings;
    let ignore = |reason: &'static str| {
        metrics::ignored(&r.bucket, &r.key, &r.event_name, reason);
        inc(&shared.stats.ignored);
        true
    };
    if !r.is_object_created() {
        return ignore("event_type");
    }
    let Some(dst_bucket) = s.buckets.get(&r.bucket) else {
        return ignore("foreign_bucket");
    };
    if !r.key.starts_with(&s.prefix) {
        return ignore("outside_prefix");
    }
    let dk = match DumpKey::from_s3_key(&s.prefix, &r.key) {
        Ok(k) => k,
        Err(e) => {
            metrics::bad_key(&r.bucket, &r.key, &e.to_string());
            shared.stats.error(&e);
            inc(&shared.stats.failed);
            return false;
        }
    };
    if !dk.file.is_relayed() {
        return ignore("not_relayed");
    }
    let codec = s.codec;
    let dst_name = dk.export.gcs_key(&dk.file, codec);
    let req = CopyRequest {
        src_bucket: r.bucket.clone(),
        src_key: r.key.clone(),
        dst_bucket: dst_bucket.clone(),
        dst_name: dst_name.clone(),
        transcode_from: match dk.file {
            DumpFile::Part { codec, .. } => Some(codec),
            _ => None,
        },
        event_etag: r.etag.clone(),
    };
    let src = format!("s3://{}/{}", r.bucket, r.key);
    let dst = format!("gs://{dst_bucket}/{dst_name}");
    match relay.copier.copy(&req).await {
        Ok(outcome) => {
            metrics::copied(&dk.export.table, &src, &dst, &outcome);
            match outcome {
                CopyOutcome::Copied { .. } => inc(&shared.stats.copied),
                CopyOutcome::Skipped { .. } => inc(&shared.stats.skipped),
            }
        }
        Err(RelayError::SourceNotFound { bucket, key }) => {
            metrics::source_gone(&bucket, &key);
            inc(&shared.stats.ignored);
            return true;
        }
        Err(e) => {
            metrics::copy_failed(&src, &e);
            shared.stats.error(&e);
            inc(&shared.stats.failed);
            return false;
        }
    }
    let export = dk.export.to_string();
    match complete::try_mark(&relay.gcs, dst_bucket, &dk.export, codec, &relay.instance_id).await {
        Ok(complete::MarkOutcome::Written { files, items }) => {
            metrics::marker(&export, "written", files, items);
            inc(&shared.stats.markers_written);
            if let Some(url) = &relay.settings.notify_url {
                crate::notify::post(url, &crossdock_core::notify::Notification::marker_written(dst_bucket, &dk.export, files, items)).await;
            }
            true
        }
        Ok(complete::MarkOutcome::LostRace) => {
            metrics::marker(&export, "lost_race", 0, 0);
            true
        }
        Ok(complete::MarkOutcome::AlreadyMarked) => {
            metrics::marker(&export, "already", 0, 0);
            true
        }
        Ok(complete::MarkOutcome::Incomplete { .. }) => {
            metrics::marker(&export, "incomplete", 0, 0);
            true
        }
        Err(e) => {
            metrics::marker_failed(&export, &e);
            shared.stats.error(&e);
            false
        }
    }
}

/// Deletes messages in batches of up to 10 (waiting up to 100 ms to fill a batch);
/// reports entries a batch did not delete.
async fn delete_loop(sqs: aws_sdk_sqs::Client, queue: String, mut rx: mpsc::UnboundedReceiver<(String, String)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let fill_until = tokio::time::Instant::now() + Duration::from_millis(100);
        while batch.len() < 10 {
            match tokio::time::timeout_at(fill_until, rx.recv()).await {
                Ok(Some(x)) => batch.push(x),
                _ => break,
            }
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, (_, receipt))| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(receipt).build().ok())
            .collect();
        match sqs.delete_message_batch().queue_url(&queue).set_entries(Some(entries)).send().await {
            Ok(out) => {
                for f in out.failed() {
                    let id = f.id().parse::<usize>().ok().and_then(|i| batch.get(i)).map_or("?", |(id, _)| id.as_str());
                    metrics::delete_failed(id, f.message().unwrap_or(f.code()));
                }
            }
            Err(e) => {
                let why = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                for (id, _) in &batch {
                    metrics::delete_failed(id, &why);
                }
                warn!(error = why, "batch delete failed");
            }
        }
    }
}
