//! Whole relay runs on the in-memory queue, source and buckets: what happens to each
//! message and object, with tokio's clock paused so every run is exact.

use super::*;
use crate::fixtures::{s3_export, S3File};
use crate::gcs::memory::MemoryGcs;
use crate::gcs::{Gcs, Provenance};
use crate::queue::memory::{Fate as MessageFate, MemoryQueue};
use crate::source::memory::{Body, MemorySource};
use crate::source::Source;
use crossdock_core::marker::SuccessMarker;
use crossdock_core::Codec;
use std::collections::BTreeMap;

const DIR: &str = "b1/Orders/2026-11-30T00-00-00Z/";

struct World {
    source: Source,
    s3: MemorySource,
    queue: Queue,
    sqs: MemoryQueue,
    gcs: Gcs,
    dst: MemoryGcs,
}

fn event(name: &str, bucket: &str, key: &str, etag: &str) -> String {
    serde_json::json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag}}}]})
    .to_string()
}

impl World {
    fn new() -> World {
        let (source, s3) = Source::memory();
        let (queue, sqs) = Queue::memory();
        let (gcs, dst) = Gcs::memory();
        World { source, s3, queue, sqs, gcs, dst }
    }

    /// Short polls, one encoder thread, no stall watch; stops once idle for 3 s.
    fn settings(&self) -> RelaySettings {
        let mut s = RelaySettings::new("memory://queue", BTreeMap::from([("src".to_string(), "dst".to_string())]));
        s.visibility_timeout_secs = Some(30);
        s.wait_time_secs = 1;
        s.retry_delay_secs = 60;
        s.copy_stall_timeout_secs = 0;
        s.drain_deadline_secs = 5;
        s.until_idle_secs = Some(3);
        s.threads = Some(1);
        s.chunk_size = 256 << 10;
        s.instance_id = Some("test".into());
        s
    }

    async fn relay(&self, s: RelaySettings) -> Relay {
        s.build_on(self.source.clone(), self.queue.clone(), self.gcs.clone()).await.expect("valid settings")
    }

    async fn run(&self, s: RelaySettings, shutdown: impl Future<Output = ()>) -> Summary {
        run(self.relay(s).await, shutdown).await.expect("relay runs")
    }

    /// Writes the file to the source bucket and sends its event, as S3 notifies.
    fn upload(&self, f: &S3File) -> String {
        self.upload_notified(f, 1).remove(0)
    }

    /// [`World::upload`], its event sent `times` times (S3 may notify a write more than once).
    fn upload_notified(&self, f: &S3File, times: usize) -> Vec<String> {
        let etag = self.s3.put("src", &f.key, f.bytes.clone());
        (0..times).map(|_| self.sqs.send(event("ObjectCreated:Put", "src", &f.key, &etag))).collect()
    }

    /// The message's history, without the heartbeat's extensions (to the visibility
    /// timeout, 30 s): how many of those a copy gets depends on how long its encoder
    /// thread runs, which paused time does not govern.
    fn fate(&self, id: &str) -> MessageFate {
        let mut f = self.sqs.fate(id).expect("message sent");
        f.visibility_changes.retain(|&v| v != 30);
        f
    }

    /// The message is still on the queue, and nothing is in the destination bucket.
    fn assert_nothing_relayed(&self, id: &str) {
        let fate = self.fate(id);
        assert!(!fate.deleted, "{fate:?}");
        assert!(self.dst.names("dst").is_empty(), "no object: {:?}", self.dst.names("dst"));
    }

    /// Every create-only write of a `_SUCCESS`: whether it created the marker.
    fn marker_writes(&self) -> Vec<bool> {
        self.dst.creates().into_iter().filter(|(_, name, _)| name.ends_with("_SUCCESS")).map(|(_, _, created)| created).collect()
    }
}

fn never() -> std::future::Pending<()> {
    std::future::pending()
}

fn after(secs: u64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_secs(secs))
}

/// One data part of `lines` lines of 100 bytes, incompressible enough that a big one
/// takes several upload requests.
fn big_part(lines: usize) -> S3File {
    let bytes: String = (0..lines).map(|i| format!("{{\"Item\":{{\"pk\":{{\"S\":\"{i:08}-{:064x}\"}}}}}}\n", rand::random::<u128>())).collect();
    S3File { key: format!("{DIR}data/seg-00000-part-00000.json"), bytes: bytes.into_bytes() }
}

/// A world with one big part in S3, read as `body`, and its event on the queue; the
/// message's id.
fn one_part(body: Body) -> (World, String) {
    let w = World::new();
    let part = big_part(6_000);
    let id = w.upload(&part);
    w.s3.set_body("src", &part.key, body);
    (w, id)
}

#[tokio::test(start_paused = true)]
async fn a_copy_that_fails_leaves_its_message_and_no_object_and_is_retried() {
    let w = World::new();
    let part = big_part(6_000);
    let dst_name = part.key.clone();
    let mut s = w.settings();
    s.codec = Codec::None;
    s.retry_delay_secs = 1;
    // Every upload fails on its last request: nothing is durable, so nothing is deleted.
    w.dst.fail_uploads("part-00000", usize::MAX);
    let id = w.upload(&part);
    let summary = w.run(s.clone(), after(30)).await;
    let fate = w.fate(&id);
    assert!(!fate.deleted, "{fate:?}");
    assert!(fate.receives >= 2, "tried again after the retry delay: {fate:?}");
    // Each try ends visible again after the retry delay (or at once, in flight at the
    // shutdown): never deleted.
    assert!(fate.visibility_changes.iter().all(|&v| v == 1 || v == 0) && fate.visibility_changes.contains(&1), "{fate:?}");
    assert!(w.dst.names("dst").is_empty(), "an upload that never finished is no object");
    assert_eq!(summary.copied, 0);
    assert!(summary.failed >= 1);

    // The same message once GCS takes the upload: copied (several upload requests),
    // with its provenance, then deleted.
    w.dst.fail_uploads("part-00000", 0);
    let summary = w.run(s, never()).await;
    assert_eq!(summary.copied, 1, "{summary:?}");
    assert!(w.fate(&id).deleted);
    let (bytes, object) = w.dst.object("dst", &dst_name).expect("copied");
    assert_eq!(bytes, part.bytes);
    assert!(bytes.len() > 2 * (256 << 10), "a resumable upload of several requests");
    let p = Provenance::from_object(&object).expect("provenance on the finished object");
    assert_eq!((p.raw_bytes, p.items), (part.bytes.len() as u64, 6_000));
}

#[tokio::test(start_paused = true)]
async fn a_source_that_breaks_mid_body_is_never_finalised() {
    let (w, id) = one_part(Body::FailsHalfway);
    let summary = w.run(w.settings(), after(10)).await;
    assert_eq!(summary.failed, 1);
    assert_eq!(w.fate(&id).visibility_changes, [60], "retried after the delay");
    w.assert_nothing_relayed(&id);
}

#[tokio::test(start_paused = true)]
async fn a_copy_aborted_at_the_drain_deadline_releases_its_message() {
    // S3 never answers; with no stall watch only the drain ends the copy.
    let (w, id) = one_part(Body::Hangs);
    let summary = w.run(w.settings(), after(2)).await;
    assert_eq!((summary.released, summary.reason), (1, Some(DrainReason::Shutdown)));
    assert_eq!(w.fate(&id).visibility_changes.last(), Some(&0), "visible again at once");
    w.assert_nothing_relayed(&id);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_copy_is_abandoned_and_its_message_retried() {
    let (w, id) = one_part(Body::Hangs);
    let mut s = w.settings();
    s.copy_stall_timeout_secs = 120;
    s.retry_delay_secs = 600;
    let summary = w.run(s, after(200)).await;
    assert_eq!((summary.stalled, summary.failed, summary.released), (1, 1, 0));
    // Kept hidden by its heartbeat while the copy might still move, then retried.
    assert!(summary.heartbeats >= 11, "{summary:?}");
    assert_eq!(w.fate(&id).visibility_changes, [600]);
    w.assert_nothing_relayed(&id);
}

#[tokio::test(start_paused = true)]
async fn the_marker_is_written_once_and_only_when_every_listed_file_is_relayed() {
    let files = s3_export("", 2, 2, 5);
    // Withheld until the end: a part listed in its manifest, or the last manifest.
    for withheld in [1, files.len() - 1] {
        let w = World::new();
        let mut ids = Vec::new();
        for (i, f) in files.iter().enumerate().filter(|(i, _)| *i != withheld) {
            ids.extend(w.upload_notified(f, 1 + i % 2));
        }
        let (a, b) = tokio::join!(w.run(w.settings(), never()), w.run(w.settings(), never()));
        assert_eq!(a.markers_written + b.markers_written, 0);
        assert!(w.marker_writes().is_empty(), "{withheld}: no marker attempted before every file is in GCS");
        assert!(ids.iter().all(|id| w.fate(id).deleted), "relayed files' messages are done");

        ids.push(w.upload(&files[withheld]));
        let (a, b) = tokio::join!(w.run(w.settings(), never()), w.run(w.settings(), never()));
        assert_eq!(a.markers_written + b.markers_written, 1, "{withheld}");
        let writes = w.marker_writes();
        assert_eq!(writes.iter().filter(|&&created| created).count(), 1, "{withheld}: written once, create-only: {writes:?}");
        let (body, _) = w.dst.object("dst", &crate::fixtures::export().marker_key()).expect("marker");
        let marker: SuccessMarker = serde_json::from_slice(&body).expect("marker JSON");
        assert_eq!((marker.files.len(), marker.totals.items), (4, 20));
        assert!(ids.iter().all(|id| w.fate(id).deleted));
    }
}

#[tokio::test(start_paused = true)]
async fn bad_events_are_retried_left_or_deleted_as_documented() {
    let w = World::new();
    let mut s = w.settings();
    s.prefix = "dumps/".into();
    s.until_idle_secs = None;
    let key = |rest: &str| format!("dumps/{DIR}{rest}");
    let part = key("data/seg-00000-part-00000.json");
    let send = |name: &str, bucket: &str, key: &str| w.sqs.send(event(name, bucket, key, "e1"));
    let retried = [send("ObjectCreated:Put", "src", &key("data/notes.txt")), w.sqs.send("not an S3 event")];
    let left = [send("ObjectCreated:Put", "other", &part), send("ObjectCreated:Put", "src", &format!("elsewhere/{DIR}_schema.json"))];
    let deleted = [
        send("ObjectCreated:Put", "src", &key("_checkpoint/seg-00000.json")),
        send("ObjectRemoved:Delete", "src", &part),
        w.sqs.send(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"src"}"#),
        // Named by its event, gone from S3 since.
        send("ObjectCreated:Put", "src", &part),
    ];
    let summary = w.run(s.clone(), after(20)).await;
    for id in &retried {
        assert_eq!(w.fate(id), MessageFate { receives: 1, visibility_changes: vec![60], deleted: false }, "retried after the delay");
    }
    for id in &left {
        assert_eq!(w.fate(id), MessageFate { receives: 1, visibility_changes: vec![], deleted: false }, "left: back after the visibility timeout");
    }
    for id in &deleted {
        assert!(w.fate(id).deleted, "{id}: {:?}", w.fate(id));
    }
    assert_eq!(summary.misrouted, 2);
    assert!(w.dst.names("dst").is_empty());
    // Left messages come back once the visibility timeout (30 s) runs out, and are
    // left again; retried ones not before their delay (60 s).
    let summary = w.run(s, after(30)).await;
    assert_eq!((summary.messages, summary.misrouted), (2, 2), "{summary:?}");
    assert!(left.iter().all(|id| w.fate(id).receives == 2 && !w.fate(id).deleted));
}
