//! Whole exports on S3 and DynamoDB in memory ([`crate::fake_aws`]), on paused time:
//! where parts, checkpoints and manifests land, what a resumed run reads again, and the
//! capacity raised and restored on every way out.

use super::*;
use crate::fake_aws::{Call, FakeAws};
use crate::lease::FakeAutoscaling;
use crate::observe::NoObserver;
use crossdock_core::layout::DumpKey;
use crossdock_core::manifest::{AutoscalingBounds, CapacityLease, LeaseOwner, SegmentCheckpoint, SegmentManifest};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const BUCKET: &str = "bkt";

fn items(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"pk": {"S": format!("k{i:04}")}, "n": {"N": i.to_string()}, "pad": {"S": "x".repeat(200)}})).collect()
}

/// A bucket and a 200-item table of `read` RCU (`None`: on demand).
fn world(read: Option<i64>) -> FakeAws {
    let aws = FakeAws::default();
    aws.create_bucket(BUCKET);
    aws.create_table("Orders", "pk", read, items(200));
    aws
}

/// 4 segments, 2 at a time, pages of about 5 items and parts of about 4 pages.
fn config() -> ExportConfig {
    let mut c = ExportConfig::new("Orders", BUCKET, "b1");
    c.timestamp = Some(Timestamp::parse("2026-11-30T00-00-00Z").expect("ts"));
    c.segments = Some(4);
    c.concurrency = 2;
    c.read_ratio = 1.0;
    c.max_rcu = Some(20.0);
    c.part_bytes = 4096;
    c
}

fn export_id() -> ExportId {
    ExportId::new("b1", "Orders", Timestamp::parse("2026-11-30T00-00-00Z").expect("ts")).expect("id")
}

async fn export(aws: &FakeAws, autoscaler: Arc<dyn Autoscaler>, cfg: &ExportConfig) -> Result<ExportSummary, ExportError> {
    run(&aws.clients(autoscaler), cfg, &NoObserver, std::future::pending()).await
}

fn no_autoscaling() -> Arc<dyn Autoscaler> {
    Arc::new(crate::lease::NoAutoscaling)
}

/// What the export directory holds, by segment: parts (decoded), checkpoint, manifest.
#[derive(Debug, Default)]
struct Segment {
    parts: BTreeMap<String, Vec<u8>>,
    checkpoint: Option<SegmentCheckpoint>,
    manifest: Option<SegmentManifest>,
}

fn segments(aws: &FakeAws) -> BTreeMap<u32, Segment> {
    let mut out: BTreeMap<u32, Segment> = BTreeMap::new();
    for key in aws.keys(BUCKET, &export_id().s3_dir("")) {
        let body = aws.object(BUCKET, &key).expect("listed");
        match DumpKey::from_s3_key("", &key).expect("dump key").file {
            DumpFile::Part { segment, codec, .. } => {
                out.entry(segment).or_default().parts.insert(key.rsplit('/').next().unwrap_or_default().to_string(), crate::writer::decode(codec, &body));
            }
            DumpFile::Checkpoint { segment } => out.entry(segment).or_default().checkpoint = Some(serde_json::from_slice(&body).expect("checkpoint")),
            DumpFile::Manifest { segment, .. } => out.entry(segment).or_default().manifest = Some(serde_json::from_slice(&body).expect("manifest")),
            _ => {}
        }
    }
    out
}

/// The key of every item in the parts the manifests list, in order.
fn exported_keys(aws: &FakeAws) -> Vec<String> {
    let mut keys = Vec::new();
    for s in segments(aws).values() {
        let m = s.manifest.as_ref().expect("every segment has its manifest");
        assert_eq!(
            m.parts.iter().map(|p| p.name.rsplit('/').next().unwrap_or_default()).collect::<Vec<_>>(),
            s.parts.keys().map(String::as_str).collect::<Vec<_>>()
        );
        for p in &m.parts {
            let body = &s.parts[p.name.rsplit('/').next().unwrap_or_default()];
            assert_eq!((body.len() as u64, p.items), (p.bytes, body.iter().filter(|&&b| b == b'\n').count() as u64), "{}", p.name);
            for line in std::str::from_utf8(body).expect("utf-8").lines() {
                let item = crossdock_core::item::parse_line(line, 1).expect("DynamoDB JSON");
                let Some(crossdock_core::item::AttributeValue::S(k)) = item.get("pk") else { panic!("pk") };
                keys.push(k.clone());
            }
        }
    }
    keys
}

fn all_keys_once(aws: &FakeAws) {
    let mut keys = exported_keys(aws);
    keys.sort();
    let expected: Vec<String> = (0..200).map(|i| format!("k{i:04}")).collect();
    assert_eq!(keys, expected, "every item exactly once");
}

fn position(calls: &[Call], f: impl Fn(&Call) -> bool) -> Vec<usize> {
    calls.iter().enumerate().filter(|(_, c)| f(c)).map(|(i, _)| i).collect()
}

#[tokio::test(start_paused = true)]
async fn every_item_once_and_each_manifest_after_its_segments_parts_and_checkpoint() {
    let aws = world(Some(100));
    let summary = export(&aws, no_autoscaling(), &config()).await.expect("export");
    assert!(summary.complete && !summary.interrupted, "{summary:?}");
    assert_eq!((summary.items, summary.segments_done), (200, 4));
    all_keys_once(&aws);
    let calls = aws.calls();
    let puts = |part: &str| position(&calls, |c| c.op == "PutObject" && c.key.contains(part));
    let schema = puts("_schema.json");
    assert_eq!(schema.len(), 1);
    for (segment, s) in segments(&aws) {
        assert!(s.parts.len() >= 2, "segment {segment} rolled over into several parts");
        let seg = format!("seg-{segment:05}");
        let manifest = puts(&format!("manifests/{seg}"));
        let parts = puts(&format!("data/{seg}-part-"));
        let checkpoints = puts(&format!("_checkpoint/{seg}"));
        assert_eq!(manifest.len(), 1, "{seg}: one manifest");
        assert!(parts.iter().chain(&checkpoints).all(|&p| p < manifest[0]), "{seg}: parts and checkpoints before the manifest");
        assert!(parts.iter().all(|&p| p > schema[0]), "the schema comes first");
        // Each part is followed by a checkpoint recording it, before the next part.
        for pair in parts.windows(2) {
            assert!(checkpoints.iter().any(|&c| pair[0] < c && c < pair[1]), "{seg}: a checkpoint between parts {pair:?}");
        }
        assert!(s.checkpoint.is_some_and(|c| c.done && c.parts.len() == s.parts.len()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_segment_whose_part_fails_gets_no_manifest_and_a_resumed_run_scans_only_what_is_left() {
    let aws = world(Some(100));
    aws.fail("PutObject", "data/seg-00002-part-00001", 0, 403, "AccessDenied");
    let err = export(&aws, no_autoscaling(), &config()).await.expect_err("a part cannot be written");
    assert!(matches!(err, ExportError::S3 { .. }) && err.is_resumable(), "{err}");
    let before = segments(&aws);
    let failed = &before[&2];
    assert!(failed.manifest.is_none(), "no manifest without every part");
    let cp = failed.checkpoint.as_ref().expect("a checkpoint after the durable part");
    assert_eq!(cp.parts.len(), 1, "only the durable part is recorded");
    let resume_from = cp.last_evaluated_key.as_ref().and_then(|k| match k.get("pk") {
        Some(crossdock_core::item::AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    });
    let finished: Vec<u32> = before.iter().filter(|(_, s)| s.manifest.is_some()).map(|(&n, _)| n).collect();

    aws.clear_faults();
    let seen = aws.calls().len();
    let mut cfg = config();
    cfg.resume = true;
    let summary = export(&aws, no_autoscaling(), &cfg).await.expect("resumed");
    assert!(summary.complete);
    all_keys_once(&aws);
    let scans: Vec<String> = aws.calls()[seen..].iter().filter(|c| c.op == "Scan").map(|c| c.key.clone()).collect();
    for n in &finished {
        assert!(!scans.iter().any(|k| k.contains(&format!("seg-{n} "))), "finished segment {n} is not scanned again: {scans:?}");
    }
    let first = scans.iter().find(|k| k.contains("seg-2 ")).expect("segment 2 scanned");
    assert_eq!(first, &format!("Orders/seg-2 from {}", resume_from.expect("a key to resume from")), "after its last durable part");
}

#[tokio::test(start_paused = true)]
async fn a_part_written_after_the_last_checkpoint_is_written_again_not_twice() {
    let aws = world(Some(100));
    // Segment 1's second checkpoint fails: its second part is in S3, unrecorded.
    aws.fail("PutObject", "_checkpoint/seg-00001", 1, 503, "SlowDown");
    export(&aws, no_autoscaling(), &config()).await.expect_err("a checkpoint cannot be written");
    let s1 = &segments(&aws)[&1];
    assert_eq!((s1.parts.len(), s1.checkpoint.as_ref().map(|c| c.parts.len())), (2, Some(1)));
    aws.clear_faults();
    let mut cfg = config();
    cfg.resume = true;
    // Larger parts this time: the unrecorded part is replaced, nothing stays beside it.
    cfg.part_bytes = 1 << 20;
    export(&aws, no_autoscaling(), &cfg).await.expect("resumed");
    all_keys_once(&aws);
}

/// How an export run ends, for the capacity tests.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Done,
    ScanFails,
    Shutdown,
}

async fn export_ending(aws: &FakeAws, autoscaler: Arc<dyn Autoscaler>, ending: Ending) -> Result<ExportSummary, ExportError> {
    let mut cfg = config();
    cfg.raise = Raise::To(50);
    cfg.max_rcu = None;
    let clients = aws.clients(autoscaler);
    match ending {
        Ending::Done => run(&clients, &cfg, &NoObserver, std::future::pending()).await,
        Ending::ScanFails => {
            aws.fail("Scan", "seg-1 ", 1, 400, "ValidationException");
            run(&clients, &cfg, &NoObserver, std::future::pending()).await
        }
        Ending::Shutdown => run(&clients, &cfg, &NoObserver, std::future::ready(())).await,
    }
}

fn lease(aws: &FakeAws) -> CapacityLease {
    let key = crossdock_core::layout::capacity_lease_key("", "Orders").expect("key");
    serde_json::from_slice(&aws.object(BUCKET, &key).expect("lease")).expect("lease JSON")
}

#[tokio::test(start_paused = true)]
async fn capacity_is_raised_before_the_scan_and_restored_on_every_way_out() {
    for ending in [Ending::Done, Ending::ScanFails, Ending::Shutdown] {
        let aws = world(Some(5));
        let out = export_ending(&aws, no_autoscaling(), ending).await;
        match ending {
            Ending::Done => assert!(out.as_ref().is_ok_and(|s| s.complete && s.capacity_restored && s.capacity_raised_to.map(|t| t.read) == Some(50))),
            Ending::ScanFails => assert!(matches!(out, Err(ExportError::DynamoDb { op: "Scan", .. })), "{ending:?}: {out:?}"),
            Ending::Shutdown => assert!(out.as_ref().is_ok_and(|s| s.interrupted && s.capacity_restored), "{out:?}"),
        }
        let calls = aws.calls();
        let updates = position(&calls, |c| c.op == "UpdateTable");
        let scans = position(&calls, |c| c.op == "Scan");
        assert_eq!(updates.len(), 2, "{ending:?}: raised once, restored once");
        assert!(scans.iter().all(|&s| updates[0] < s && s < updates[1]), "{ending:?}: every scan under the raise");
        assert_eq!(aws.table("Orders", |t| (t.read, t.decreases_today)), (Some(5), 1), "{ending:?}");
        let l = lease(&aws);
        assert!(l.restored && l.original.read == 5 && l.raised_to.read == 50, "{ending:?}: {l:?}");
    }
}

/// A scan that fails and a restore that fails after it: the capacity error is the one
/// returned (exit code 4), with the scan error as its source, so both are printed.
#[tokio::test(start_paused = true)]
async fn a_failed_restore_after_a_failed_scan_carries_the_scan_error() {
    let aws = world(Some(5));
    // The raise goes through; every later UpdateTable (the restore) is refused.
    aws.fail("UpdateTable", "Orders", 1, 400, "AccessDeniedException");
    let err = export_ending(&aws, no_autoscaling(), Ending::ScanFails).await.expect_err("the scan and the restore fail");
    assert!(matches!(err, ExportError::CapacityNotRestored { .. }), "{err}");
    assert!(err.to_string().contains("NOT restored") && err.to_string().contains("the export had failed before"), "{err}");
    // The source is the boxed error itself (`Box<ExportError>` is the `dyn Error`).
    let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<Box<ExportError>>()).expect("the scan error is the source");
    assert!(matches!(&**source, ExportError::DynamoDb { op: "Scan", .. }), "{source}");
    assert!(source.to_string().contains("ValidationException"), "{source}");
    assert!(!lease(&aws).restored, "the lease stays for `export restore`");
}

#[tokio::test(start_paused = true)]
async fn an_autoscaled_table_gets_its_bounds_back_and_no_forced_decrease() {
    for ending in [Ending::Done, Ending::ScanFails, Ending::Shutdown] {
        let aws = world(Some(5));
        let original = AutoscalingBounds { min_capacity: 5, max_capacity: 20 };
        let autoscaling = Arc::new(FakeAutoscaling::with_target("Orders", original));
        let _ = export_ending(&aws, autoscaling.clone(), ending).await;
        let raised = AutoscalingBounds { min_capacity: 50, max_capacity: 50 };
        assert_eq!(autoscaling.history(), vec![("Orders".to_string(), raised), ("Orders".to_string(), original)], "{ending:?}");
        // Raised by UpdateTable, left to autoscaling to bring down: no decrease spent.
        assert_eq!(position(&aws.calls(), |c| c.op == "UpdateTable").len(), 1, "{ending:?}");
        assert_eq!(aws.table("Orders", |t| t.decreases_today), 0);
        assert!(lease(&aws).restored);
    }
}

fn put_lease(aws: &FakeAws, run_id: &str, heartbeat_age: time::Duration) {
    let l = CapacityLease {
        table: "Orders".into(),
        original: Throughput { read: 5, write: 5 },
        raised_to: Throughput { read: 40, write: 5 },
        autoscaling: None,
        taken_at: crossdock_core::stamp::rfc3339(time::OffsetDateTime::now_utc() - time::Duration::hours(2)),
        restored: false,
        owner: LeaseOwner { run_id: run_id.into(), host: "elsewhere".into(), pid: 7 },
        heartbeat_at: crossdock_core::stamp::rfc3339(time::OffsetDateTime::now_utc() - heartbeat_age),
        stale_after_secs: 180,
        held_until: None,
        restored_by: None,
    };
    let key = crossdock_core::layout::capacity_lease_key("", "Orders").expect("key");
    aws.put_object(BUCKET, &key, serde_json::to_vec(&l).expect("json"));
}

#[tokio::test(start_paused = true)]
async fn a_live_lease_of_another_run_refuses_the_raise_and_a_stale_one_is_restored_first() {
    let aws = world(Some(40));
    put_lease(&aws, "other-run", time::Duration::seconds(10));
    let mut cfg = config();
    cfg.raise = Raise::To(50);
    let err = export(&aws, no_autoscaling(), &cfg).await.expect_err("the table is leased");
    assert!(matches!(&err, ExportError::LeaseHeld { owner, .. } if owner.contains("other-run")) && err.is_usage(), "{err}");
    let calls = aws.calls();
    assert!(!calls.iter().any(|c| matches!(c.op, "UpdateTable" | "Scan")), "nothing raised or read: {calls:?}");
    assert!(!calls.iter().any(|c| c.op == "PutObject"), "nothing written");
    assert_eq!(aws.table("Orders", |t| t.read), Some(40));

    // Its owner went silent: the next export puts the capacity back before its own run.
    put_lease(&aws, "other-run", time::Duration::hours(1));
    let summary = export(&aws, no_autoscaling(), &config()).await.expect("export");
    assert_eq!(summary.restored_stale_leases.len(), 1);
    assert_eq!(aws.table("Orders", |t| t.read), Some(5));
    let calls = aws.calls();
    let restore = position(&calls, |c| c.op == "UpdateTable");
    assert!(position(&calls, |c| c.op == "Scan").iter().all(|&s| s > restore[0]), "restored before the scan");
    assert!(lease(&aws).restored);
}

#[tokio::test(start_paused = true)]
async fn no_capacity_decrease_left_refuses_the_raise_and_writes_nothing() {
    let aws = world(Some(5));
    aws.table("Orders", |t| t.decreases_today = 27);
    let mut cfg = config();
    cfg.raise = Raise::By(45);
    let err = export(&aws, no_autoscaling(), &cfg).await.expect_err("no decrease left");
    assert!(matches!(err, ExportError::NoDecreaseLeft { decreases_today: 27, .. }), "{err}");
    assert!(!aws.calls().iter().any(|c| matches!(c.op, "PutObject" | "UpdateTable" | "Scan")));
}
