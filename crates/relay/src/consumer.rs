//! The receive loop: long-polls SQS, runs one task per message (with a visibility
//! heartbeat), deletes messages in batches once everything they name is durable in
//! GCS, and drains on shutdown, spot notice or idleness.

use crate::copy::{CopyOutcome, CopyRequest};
use crate::error::RelayError;
use crate::health::Health;
use crate::queue::{Queue, Received};
use crate::s3_event::{parse_body, Notification, S3Record};
use crate::{complete, events, spot, Relay, RelaySettings};
use crossdock_core::layout::{self, DumpFile, DumpKey, LayoutError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
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
    /// Records not meant for this relay as configured (bucket not in the map, key
    /// outside the prefix); their messages were left on the queue, not deleted.
    pub misrouted: u64,
    pub failed: u64,
    /// Copies abandoned because they moved no byte for the stall timeout (also in `failed`).
    pub stalled: u64,
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
    misrouted: AtomicU64,
    failed: AtomicU64,
    stalled: AtomicU64,
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
    /// Every message task, so a drain can wait for them all.
    tasks: TaskTracker,
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
    let shared = Arc::new(Shared { relay, stats: Stats::default(), inflight: Arc::default(), tasks: TaskTracker::new(), deletes: del_tx });
    let deleter = tokio::spawn(delete_loop(shared.relay.queue.clone(), del_rx));
    let stop = CancellationToken::new();
    let idle = CancellationToken::new();
    let sem = Arc::new(Semaphore::new(settings.concurrency));
    let receiver = tokio::spawn(receive_loop(shared.clone(), stop.clone(), idle.clone(), sem.clone()));
    info!(queue = settings.queue_url, codec = %settings.codec, concurrency = settings.concurrency, visibility_s = shared.relay.visibility, "relay started");

    let spot = async {
        match settings.imds_endpoint.clone() {
            Some(ep) => spot::spot_notice(ep, Duration::from_secs(settings.spot_poll_secs.max(1))).await,
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
    events::drain_started(label, lock(&shared.inflight).len(), deadline);
    let _ = receiver.await;
    // The receiver is gone, so no message task starts after this.
    shared.tasks.close();
    if tokio::time::timeout(deadline, shared.tasks.wait()).await.is_err() {
        let abandoned: Vec<(String, InFlight)> = lock(&shared.inflight).drain().collect();
        for (id, f) in abandoned {
            f.abort.abort();
            release(&shared, &f.receipt).await;
            events::released(&id);
            events::message_done(&id, "released");
            inc(&shared.stats.released);
        }
        shared.tasks.wait().await;
    }
    // Every task (and with it every other clone of `shared` and of the delete sender)
    // is gone now; dropping the last clone ends the deleter once it has sent the rest.
    let stats = match Arc::try_unwrap(shared) {
        Ok(s) => s.stats,
        Err(_) => unreachable!("tracked tasks hold the only other clones of the relay's state"),
    };
    let _ = deleter.await;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let summary = Summary {
        messages: l(&stats.messages),
        copied: l(&stats.copied),
        skipped: l(&stats.skipped),
        ignored: l(&stats.ignored),
        misrouted: l(&stats.misrouted),
        failed: l(&stats.failed),
        stalled: l(&stats.stalled),
        markers_written: l(&stats.markers_written),
        heartbeats: stats.heartbeats.load(Ordering::Relaxed),
        released: l(&stats.released),
        reason: Some(reason),
        errors: stats.errors.into_inner().unwrap_or_else(|p| p.into_inner()),
    };
    info!(?summary, "relay stopped");
    Ok(summary)
}

/// Makes a message visible again at once, for another relay (or this one's successor).
async fn release(shared: &Shared, receipt: &str) {
    if let Err(e) = shared.relay.queue.set_visibility(receipt, 0).await {
        events::sqs_error("ChangeMessageVisibility", &e);
    }
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
        let call = shared.relay.queue.receive(permits.len(), wait, shared.relay.visibility);
        let mut call = std::pin::pin!(call);
        let resp = tokio::select! {
            r = &mut call => r,
            _ = stop.cancelled() => {
                // The long poll may already have taken messages off the queue; dropped,
                // they would stay hidden for a whole visibility timeout. Let it finish
                // and hand back what it took.
                if let Ok(Ok(taken)) = tokio::time::timeout(Duration::from_secs(u64::from(wait) + 5), call).await {
                    for m in taken {
                        release(&shared, &m.receipt).await;
                    }
                }
                break;
            }
        };
        let messages = match resp {
            Ok(messages) => {
                shared.relay.health.progressed();
                messages
            }
            Err(e) => {
                events::sqs_error("ReceiveMessage", &e);
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
            let (id, receipt) = (m.id.clone(), m.receipt.clone());
            let task_shared = shared.clone();
            let mut reg = lock(&shared.inflight);
            let task_id = id.clone();
            let h = shared.tasks.spawn(async move {
                let _permit = permit;
                handle_message(&task_shared, &task_id, m).await;
                lock(&task_shared.inflight).remove(&task_id);
            });
            reg.insert(id, InFlight { receipt, abort: h.abort_handle() });
        }
    }
}

/// What happens to a message once its records are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Everything it names is durable in GCS, or needs nothing: delete it.
    Delete,
    /// Something failed: make it visible again after `--retry-delay`.
    Retry,
    /// It is not for this relay as configured: neither delete it nor touch its
    /// visibility. It comes back when the visibility timeout runs out, to a relay
    /// configured for it or, after `maxReceiveCount` receives, to the dead-letter
    /// queue, where a stale `--dst-bucket-map` or `--prefix` shows instead of eating
    /// every event.
    Leave,
}

/// What one record needs from its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Done,
    Retry,
    Misrouted,
}

/// A failed record brings the message back soonest, so it wins over a misrouted one;
/// a misrouted record keeps the message from being deleted.
fn verdict(fates: impl IntoIterator<Item = Fate>) -> Verdict {
    let mut v = Verdict::Delete;
    for f in fates {
        match f {
            Fate::Retry => return Verdict::Retry,
            Fate::Misrouted => v = Verdict::Leave,
            Fate::Done => {}
        }
    }
    v
}

/// Why a record is not copied, decided from the settings alone.
#[derive(Debug)]
enum Skip {
    /// Nothing to copy and nothing wrong (label: the reason).
    Ignore(&'static str),
    /// A created object in a bucket that is not in the map.
    UnmappedBucket,
    /// A created object in a mapped bucket, outside the prefix.
    OutsidePrefix,
    /// Under the prefix but not a dump key.
    BadKey(LayoutError),
}

impl Skip {
    fn fate(&self) -> Fate {
        match self {
            Skip::Ignore(_) => Fate::Done,
            Skip::UnmappedBucket | Skip::OutsidePrefix => Fate::Misrouted,
            Skip::BadKey(_) => Fate::Retry,
        }
    }
}

/// The destination bucket and dump key of a record to copy, or why it is not copied.
fn route<'a>(s: &'a RelaySettings, r: &S3Record) -> Result<(&'a str, DumpKey), Skip> {
    // Removals and other event types are never relayed, whoever they were meant for.
    if !r.is_object_created() {
        return Err(Skip::Ignore("event_type"));
    }
    let Some(dst_bucket) = s.buckets.get(&r.bucket) else {
        return Err(Skip::UnmappedBucket);
    };
    // A DynamoDB native export's own files (`_started`, its manifests and checksums, its
    // data files) are meant for no relay, wherever they sit: `crossdock export adopt`
    // copies the data files into an export directory, and those copies are relayed.
    if layout::is_native_export_key(&r.key) {
        return Err(Skip::Ignore("native_export"));
    }
    if !r.key.starts_with(&s.prefix) {
        return Err(Skip::OutsidePrefix);
    }
    match DumpKey::from_s3_key(&s.prefix, &r.key) {
        Err(e) => Err(Skip::BadKey(e)),
        // Exporter state (`_checkpoint/`, `_capacity.json`) is not relayed.
        Ok(k) if !k.file.is_relayed() => Err(Skip::Ignore("not_relayed")),
        Ok(k) => Ok((dst_bucket, k)),
    }
}

async fn handle_message(shared: &Shared, id: &str, m: Received) {
    let relay = &shared.relay;
    let receipt = m.receipt;
    let lag = m.sent_ms.and_then(|sent| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH + Duration::from_millis(sent)).ok());
    events::message_received(id, lag);
    inc(&shared.stats.messages);
    let extend = {
        let (queue, receipt, visibility) = (relay.queue.clone(), receipt.clone(), relay.visibility);
        move || {
            let (queue, receipt) = (queue.clone(), receipt.clone());
            async move { queue.set_visibility(&receipt, visibility).await }
        }
    };
    // Stopped when processing ends, and also when this task is aborted at a drain
    // deadline: a released message must not be hidden again by an orphaned heartbeat.
    let hb = AbortOnDropHandle::new(tokio::spawn(heartbeat(
        extend,
        id.to_string(),
        relay.heartbeat_interval(),
        shared.stats.heartbeats.clone(),
        relay.health.clone(),
    )));
    let verdict = process(shared, id, &m.body).await;
    drop(hb);
    match verdict {
        Verdict::Delete => {
            let _ = shared.deletes.send((id.to_string(), receipt));
            events::message_done(id, "deleted");
        }
        Verdict::Retry => {
            if let Err(e) = relay.queue.set_visibility(&receipt, relay.settings.retry_delay_secs).await {
                events::sqs_error("ChangeMessageVisibility", &e);
            }
            events::message_done(id, "retry");
        }
        // The heartbeat is stopped above, so the message is redelivered (each time
        // costing a receive) rather than held by this relay forever.
        Verdict::Leave => events::message_done(id, "left"),
    }
}

/// Extends the message's visibility with `extend` every `interval` until aborted;
/// stops at the first failure so SQS redelivers. Counts extensions in `count`; an
/// accepted one is progress for liveness, as the relay is busy, not stuck.
async fn heartbeat<F, Fut>(mut extend: F, id: String, interval: Duration, count: Arc<AtomicU64>, health: Health)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    // A failed extension is tried again soon (jittered backoff, well inside the
    // visibility the last success bought); only a run of failures gives the message up.
    let mut failures = 0u32;
    let mut wait = interval;
    loop {
        tokio::time::sleep(wait).await;
        match extend().await {
            Ok(()) => {
                failures = 0;
                wait = interval;
                count.fetch_add(1, Ordering::Relaxed);
                health.progressed();
                events::heartbeat(&id, true, None);
            }
            Err(e) => {
                events::heartbeat(&id, false, Some(e));
                failures += 1;
                let policy = crossdock_core::retry::Policy { max: interval / 4, ..crossdock_core::retry::Policy::HEARTBEAT };
                if !policy.allows(failures) {
                    return;
                }
                wait = policy.delay(failures);
            }
        }
    }
}

async fn process(shared: &Shared, id: &str, body: &str) -> Verdict {
    match parse_body(body) {
        Err(e) => {
            events::malformed(id, &e.to_string());
            Verdict::Retry
        }
        Ok(Notification::Test) => {
            events::test_event(id);
            Verdict::Delete
        }
        Ok(Notification::Records(records)) => {
            let mut fates = Vec::with_capacity(records.len());
            for r in &records {
                fates.push(handle_record(shared, r).await);
            }
            verdict(fates)
        }
    }
}

async fn handle_record(shared: &Shared, r: &S3Record) -> Fate {
    let relay = &shared.relay;
    let s = &relay.settings;
    let (dst_bucket, dk) = match route(s, r) {
        Ok(to) => to,
        Err(skip) => {
            match &skip {
                Skip::Ignore(reason) => {
                    events::ignored(&r.bucket, &r.key, &r.event_name, reason);
                    inc(&shared.stats.ignored);
                }
                Skip::UnmappedBucket => {
                    let configured: Vec<&str> = s.buckets.keys().map(String::as_str).collect();
                    events::unmapped_bucket(&r.bucket, &r.key, &r.event_name, &configured.join(","));
                    inc(&shared.stats.misrouted);
                }
                Skip::OutsidePrefix => {
                    events::outside_prefix(&r.bucket, &r.key, &r.event_name, &s.prefix);
                    inc(&shared.stats.misrouted);
                }
                Skip::BadKey(e) => {
                    events::bad_key(&r.bucket, &r.key, &e.to_string());
                    shared.stats.error(e);
                    inc(&shared.stats.failed);
                }
            }
            return skip.fate();
        }
    };
    let codec = s.codec;
    let dst_name = dk.export.gcs_key(&dk.file, codec);
    let req = CopyRequest {
        src_bucket: r.bucket.clone(),
        src_key: r.key.clone(),
        dst_bucket: dst_bucket.to_string(),
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
            events::copied(&dk.export.table, &src, &dst, &outcome);
            match outcome {
                CopyOutcome::Copied { .. } => inc(&shared.stats.copied),
                CopyOutcome::Skipped { .. } => inc(&shared.stats.skipped),
            }
        }
        Err(RelayError::SourceNotFound { bucket, key }) => {
            events::source_gone(&bucket, &key);
            inc(&shared.stats.ignored);
            return Fate::Done;
        }
        // Retried like any failed copy: the heartbeat stops with this message's
        // processing, and the message comes back after `--retry-delay`.
        Err(e @ RelayError::Stalled { .. }) => {
            events::copy_stalled(&src, &e);
            shared.stats.error(&e);
            inc(&shared.stats.failed);
            inc(&shared.stats.stalled);
            return Fate::Retry;
        }
        Err(e) => {
            events::copy_failed(&src, &e);
            shared.stats.error(&e);
            inc(&shared.stats.failed);
            return Fate::Retry;
        }
    }
    let export = dk.export.to_string();
    let check = relay.completion.try_mark(&relay.copier.gcs, dst_bucket, &dk.export, codec, &relay.instance_id);
    match crate::gcs::counted_as("completion", check).await {
        Ok(complete::MarkOutcome::Written { files, items }) => {
            events::marker(&export, "written", files, items);
            inc(&shared.stats.markers_written);
            if let Some(n) = &relay.notifier {
                n.notify(crossdock_core::notify::Notification::marker_written(dst_bucket, &dk.export, files, items)).await;
            }
            Fate::Done
        }
        Ok(complete::MarkOutcome::LostRace) => {
            events::marker(&export, "lost_race", 0, 0);
            Fate::Done
        }
        Ok(complete::MarkOutcome::AlreadyMarked) => {
            events::marker(&export, "already", 0, 0);
            Fate::Done
        }
        Ok(complete::MarkOutcome::Incomplete { .. }) => {
            events::marker(&export, "incomplete", 0, 0);
            Fate::Done
        }
        Ok(complete::MarkOutcome::Deferred) => {
            events::marker(&export, "deferred", 0, 0);
            Fate::Done
        }
        Err(e) => {
            events::marker_failed(&export, &e);
            shared.stats.error(&e);
            Fate::Retry
        }
    }
}

/// Deletes messages in batches of up to 10 (waiting up to 100 ms to fill a batch);
/// reports entries a batch did not delete.
async fn delete_loop(queue: Queue, mut rx: mpsc::UnboundedReceiver<(String, String)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let fill_until = tokio::time::Instant::now() + Duration::from_millis(100);
        while batch.len() < 10 {
            match tokio::time::timeout_at(fill_until, rx.recv()).await {
                Ok(Some(x)) => batch.push(x),
                _ => break,
            }
        }
        let receipts: Vec<&str> = batch.iter().map(|(_, receipt)| receipt.as_str()).collect();
        match queue.delete_batch(&receipts).await {
            Ok(failed) => {
                for (i, why) in failed {
                    let id = batch.get(i).map_or("?", |(id, _)| id.as_str());
                    events::delete_failed(id, &why);
                }
            }
            Err(why) => {
                for (id, _) in &batch {
                    events::delete_failed(id, &why);
                }
                warn!(error = why, "batch delete failed");
            }
        }
    }
}

#[cfg(test)]
mod runs;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::read_source;
    use crate::health::HealthStatus;
    use std::collections::BTreeMap;
    use tokio::io::AsyncWriteExt;

    fn settings(prefix: &str) -> RelaySettings {
        let mut s = RelaySettings::new("q", BTreeMap::from([("src".to_string(), "dst".to_string())]));
        s.prefix = prefix.into();
        s
    }

    fn record(event: &str, bucket: &str, key: &str) -> S3Record {
        S3Record { event_name: event.into(), event_time: None, bucket: bucket.into(), key: key.into(), etag: None, size: None }
    }

    const PART: &str = "b1/Orders/2026-11-23T09-30-00Z/data/seg-00000-part-00000.json";

    /// The fate of a message holding `records`, as `process` decides it when nothing is
    /// copied.
    fn message_verdict(s: &RelaySettings, records: &[S3Record]) -> Verdict {
        verdict(records.iter().map(|r| route(s, r).map_or_else(|skip| skip.fate(), |_| Fate::Done)))
    }

    #[test]
    fn misrouted_events_are_left_for_redelivery_not_deleted() {
        let s = settings("dumps/");
        let unmapped = record("ObjectCreated:Put", "other", &format!("dumps/{PART}"));
        assert!(matches!(route(&s, &unmapped), Err(Skip::UnmappedBucket)));
        assert_eq!(message_verdict(&s, std::slice::from_ref(&unmapped)), Verdict::Leave);
        let outside = record("ObjectCreated:Put", "src", PART);
        assert!(matches!(route(&s, &outside), Err(Skip::OutsidePrefix)));
        assert_eq!(message_verdict(&s, &[outside]), Verdict::Leave);
        // One misrouted record holds back a message whose other records are done.
        let done = record("ObjectCreated:Put", "src", "dumps/b1/Orders/2026-11-23T09-30-00Z/_checkpoint/seg-00000.json");
        assert_eq!(message_verdict(&s, &[done.clone(), unmapped.clone()]), Verdict::Leave);
        // A failed record brings it back sooner.
        let bad = record("ObjectCreated:Put", "src", "dumps/b1/../Orders/2026-11-23T09-30-00Z/_schema.json");
        assert!(matches!(route(&s, &bad), Err(Skip::BadKey(_))));
        assert_eq!(message_verdict(&s, &[unmapped, bad]), Verdict::Retry);
        assert_eq!(message_verdict(&s, &[done]), Verdict::Delete);
    }

    #[test]
    fn other_event_types_and_exporter_state_are_still_deleted() {
        let s = settings("dumps/");
        // Whatever bucket or prefix: a removal is never relayed.
        for r in [record("ObjectRemoved:Delete", "other", PART), record("ObjectRemoved:Delete", "src", &format!("dumps/{PART}"))] {
            assert!(matches!(route(&s, &r), Err(Skip::Ignore("event_type"))), "{r:?}");
            assert_eq!(message_verdict(&s, &[r]), Verdict::Delete);
        }
        let capacity = record("ObjectCreated:Put", "src", "dumps/b1/Orders/2026-11-23T09-30-00Z/_capacity.json");
        assert!(matches!(route(&s, &capacity), Err(Skip::Ignore("not_relayed"))));
        assert_eq!(message_verdict(&s, &[capacity]), Verdict::Delete);
        // A dump key under the prefix of a mapped bucket is copied to the mapped bucket.
        let (dst, key) = route(&s, &record("ObjectCreated:CompleteMultipartUpload", "src", &format!("dumps/{PART}"))).expect("copied");
        assert_eq!((dst, key.export.table.as_str()), ("dst", "Orders"));
        // A native export's bookkeeping and data files are recognised and deleted, under
        // the prefix or not; a foreign bucket's are still left alone.
        for key in [
            "dumps/_native/b1/Orders/2026-11-23T09-30-00Z/AWSDynamoDB/01700000000000-abcd/_started",
            "dumps/_native/b1/Orders/2026-11-23T09-30-00Z/AWSDynamoDB/01700000000000-abcd/manifest-summary.md5",
            "elsewhere/AWSDynamoDB/01700000000000-abcd/data/3kq2x.json.gz",
        ] {
            let r = record("ObjectCreated:Put", "src", key);
            assert!(matches!(route(&s, &r), Err(Skip::Ignore("native_export"))), "{key}");
            assert_eq!(message_verdict(&s, &[r]), Verdict::Delete);
        }
        let foreign = record("ObjectCreated:Put", "other", "elsewhere/AWSDynamoDB/01700000000000-abcd/_started");
        assert!(matches!(route(&s, &foreign), Err(Skip::UnmappedBucket)));
        // With no prefix nothing is outside it.
        assert!(route(&settings(""), &record("ObjectCreated:Put", "src", PART)).is_ok());
    }

    #[test]
    fn misrouted_bodies_as_delivered_are_left() {
        let s = settings("");
        let body = serde_json::json!({"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
            "s3":{"bucket":{"name":"stale-map-bucket"},"object":{"key": PART,"eTag":"\"e\""}}}]})
        .to_string();
        let Ok(Notification::Records(records)) = parse_body(&body) else { panic!("parses") };
        assert_eq!(message_verdict(&s, &records), Verdict::Leave);
        // The bucket's notification test event is still deleted (by `process`).
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"stale-map-bucket"}"#;
        assert_eq!(parse_body(test), Ok(Notification::Test));
    }

    /// A copy whose source sends `piece` bytes every `every`, `pieces` times, through
    /// the real read stage; the writer is returned so a stalled source stays open.
    fn long_copy(health: &Health, every: Duration, piece: usize, pieces: usize) -> tokio::task::JoinHandle<tokio::io::DuplexStream> {
        let (mut src, reader) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(read_source(Box::new(reader), 1 << 20, tx, "src".into(), PART.into(), false, crate::stall::Progress::new(health.clone())));
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        tokio::spawn(async move {
            for _ in 0..pieces {
                tokio::time::sleep(every).await;
                if src.write_all(&vec![b'x'; piece]).await.is_err() {
                    break;
                }
            }
            src
        })
    }

    /// Every permit taken, so the receive loop waits and stamps nothing.
    fn all_permits_taken(concurrency: usize) -> Vec<tokio::sync::OwnedSemaphorePermit> {
        let sem = Arc::new(Semaphore::new(concurrency));
        let permits: Vec<_> = (0..concurrency).map(|_| sem.clone().try_acquire_owned().expect("permit")).collect();
        assert_eq!(sem.available_permits(), 0);
        permits
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_busy_with_long_copies_is_healthy() {
        let health = Health::new(Health::window_for(30));
        let _permits = all_permits_taken(4);
        // Four copies trickling 4 KiB every 30 s for an hour: far longer than the window,
        // with no receive in all that time.
        let copies: Vec<_> = (0..4).map(|_| long_copy(&health, Duration::from_secs(30), 4096, 120)).collect();
        for minute in 0..60 {
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert!(health.check().is_healthy(), "minute {minute}: {:?}", health.check());
        }
        drop(copies);
    }

    #[tokio::test(start_paused = true)]
    async fn accepted_heartbeats_keep_a_relay_healthy() {
        let health = Health::new(Health::window_for(30));
        let _permits = all_permits_taken(1);
        // A copy that moves no byte for a long while (one slow upload request, say),
        // whose message's visibility keeps being extended.
        let _copy = long_copy(&health, Duration::from_secs(3600), 1, 1);
        let count = Arc::new(AtomicU64::new(0));
        let hb = tokio::spawn(heartbeat(|| async { Ok(()) }, "m".into(), Duration::from_secs(10), count.clone(), health.clone()));
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert!(health.check().is_healthy(), "{:?}", health.check());
        }
        assert!(count.load(Ordering::Relaxed) >= 170);
        hb.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_retries_failed_extensions_and_goes_on() {
        let health = Health::new(Health::window_for(30));
        let count = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        // The second and third extensions fail (a throttled or reset SQS call).
        let flaky = move || {
            let n = c.fetch_add(1, Ordering::Relaxed);
            async move {
                if n == 1 || n == 2 {
                    Err("throttled".to_string())
                } else {
                    Ok(())
                }
            }
        };
        let hb = tokio::spawn(heartbeat(flaky, "m".into(), Duration::from_secs(10), count.clone(), health.clone()));
        // t = 10 s: extended; 20 s: fails; retried within 250 ms, fails; within 500 ms
        // more, extended: all before 21 s, not an interval later.
        tokio::time::sleep(Duration::from_secs(21)).await;
        assert_eq!((calls.load(Ordering::Relaxed), count.load(Ordering::Relaxed)), (4, 2));
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert!(!hb.is_finished(), "two failures in a row do not stop the heartbeat");
        assert!(count.load(Ordering::Relaxed) >= 5, "extensions went on every interval: {}", count.load(Ordering::Relaxed));
        hb.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_wedged_relay_turns_unhealthy_after_the_window() {
        let window = Health::window_for(30);
        let health = Health::new(window);
        let _permits = all_permits_taken(4);
        // Sources that never send a byte, and heartbeats that fail (so they stop).
        let copies: Vec<_> = (0..4).map(|_| long_copy(&health, Duration::from_secs(86_400), 1, 1)).collect();
        let count = Arc::new(AtomicU64::new(0));
        let failing = || async { Err("expired receipt".to_string()) };
        let hb = tokio::spawn(heartbeat(failing, "m".into(), Duration::from_secs(10), count.clone(), health.clone()));
        tokio::time::sleep(window - Duration::from_secs(1)).await;
        assert!(health.check().is_healthy(), "within the window: {:?}", health.check());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(matches!(health.check(), HealthStatus::Stale { since } if since > window), "{:?}", health.check());
        assert!(hb.is_finished(), "the heartbeat gave up after its retries");
        assert_eq!(count.load(Ordering::Relaxed), 0);
        drop(copies);
    }
}
