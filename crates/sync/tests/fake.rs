//! The catch-up loop against the in-memory stream and an in-memory target: lineage,
//! per-key order, batching, checkpoint placement and expiry.

use crossdock_core::item::{AttributeValue, Item};
use crossdock_core::manifest::TypeStats;
use crossdock_core::schema::TableSchema;
use crossdock_load::schema::{items_equal, Row, TableModel, TargetKind};
use crossdock_load::sink::memory::MemoryTarget;
use crossdock_load::sink::{BatchLimits, CallStats, Target};
use crossdock_load::LoadError;
use crossdock_sync::checkpoint::{CheckpointStore, MemCheckpoints};
use crossdock_sync::source::fake::FakeStream;
use crossdock_sync::{run, Outcome, SyncError, SyncOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn schema() -> TableSchema {
    serde_json::from_value(serde_json::json!({
        "format_version": 1, "table": "T", "key_schema": [{"name": "pk", "role": "HASH"}],
        "attribute_definitions": [{"name": "pk", "type": "S"}],
        "global_secondary_indexes": [], "local_secondary_indexes": [], "billing_mode": "PAY_PER_REQUEST",
        "capacity_before": null, "item_count_estimate": 0, "size_bytes_estimate": 0, "total_segments": 1, "crossdock_version": "test"
    }))
    .expect("schema")
}

fn item(pk: &str, v: i64) -> Item {
    let mut it = Item::new();
    it.insert("pk".into(), AttributeValue::S(pk.into()));
    it.insert("v".into(), AttributeValue::N(v.to_string()));
    it
}

fn keys(pk: &str) -> Item {
    let mut it = Item::new();
    it.insert("pk".into(), AttributeValue::S(pk.into()));
    it
}

fn model() -> TableModel {
    let mut stats = TypeStats::default();
    stats.observe(&item("a", 1), |_| 8);
    TableModel::infer(TargetKind::Postgres, &schema(), &stats, None).expect("model")
}

/// Rows by key; every call recorded; writes can be made to fail.
#[derive(Clone, Default)]
struct MemTarget {
    rows: Arc<Mutex<BTreeMap<String, Row>>>,
    /// (op, rows) of each call that succeeded.
    calls: Arc<Mutex<Vec<(&'static str, usize)>>>,
    fail_writes: Arc<Mutex<u32>>,
    max_rows: usize,
    stats: Arc<CallStats>,
}

impl MemTarget {
    fn new(max_rows: usize) -> MemTarget {
        MemTarget { max_rows, ..Default::default() }
    }
    fn value(&self, pk: &str) -> Option<String> {
        let rows = self.rows.lock().expect("lock");
        rows.get(&format!("{:?}", crossdock_load::schema::Cell::Str(pk.into()))).map(|r| format!("{:?}", r[1]))
    }
    fn len(&self) -> usize {
        self.rows.lock().expect("lock").len()
    }
}

impl Target for MemTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Postgres
    }
    fn destination(&self, _: &TableModel) -> String {
        "mem.T".into()
    }
    fn ddl(&self, _: &TableModel) -> Vec<String> {
        vec![]
    }
    fn batch_limits(&self, _: &TableModel) -> BatchLimits {
        BatchLimits { start: self.max_rows, max: self.max_rows, writers: 1, basis: "test".into() }
    }
    async fn ensure_table(&self, _: &TableModel) -> Result<bool, LoadError> {
        Ok(false)
    }
    async fn add_columns(&self, _: &TableModel, _: &[crossdock_load::schema::Column]) -> Result<(), LoadError> {
        Ok(())
    }
    async fn write_batch(&self, _: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        assert!(rows.len() <= self.max_rows, "a call of {} rows exceeds the limit {}", rows.len(), self.max_rows);
        {
            let mut f = self.fail_writes.lock().expect("lock");
            if *f > 0 {
                *f -= 1;
                return Err(LoadError::Target { target: "mem", op: "write", table: "T".into(), message: "injected".into(), retryable: false });
            }
        }
        let mut map = self.rows.lock().expect("lock");
        for r in rows {
            map.insert(format!("{:?}", r[0]), r.clone());
        }
        self.calls.lock().expect("lock").push(("write", rows.len()));
        Ok(())
    }
    async fn create_indexes(&self, _: &TableModel) -> Result<(), LoadError> {
        Ok(())
    }
    async fn count_rows(&self, _: &TableModel) -> Result<u64, LoadError> {
        Ok(self.len() as u64)
    }
    async fn read_all(&self, _: &TableModel) -> Result<Vec<Row>, LoadError> {
        Ok(self.rows.lock().expect("lock").values().cloned().collect())
    }
    async fn read_keys(&self, _: &TableModel, rows: &[Row]) -> Result<Vec<Row>, LoadError> {
        let map = self.rows.lock().expect("lock");
        Ok(rows.iter().filter_map(|r| map.get(&format!("{:?}", r[0])).cloned()).collect())
    }
    async fn delete_keys(&self, _: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        assert!(rows.len() <= self.max_rows);
        let mut map = self.rows.lock().expect("lock");
        for r in rows {
            map.remove(&format!("{:?}", r[0]));
        }
        self.calls.lock().expect("lock").push(("delete", rows.len()));
        Ok(())
    }
    async fn list_indexes(&self, _: &TableModel) -> Result<Vec<String>, LoadError> {
        Ok(vec![])
    }
    fn stats(&self) -> &CallStats {
        &self.stats
    }
}

fn opts() -> SyncOptions {
    SyncOptions {
        until_lag: Some(Duration::from_secs(5)),
        hold: Duration::from_millis(0),
        poll_interval: Duration::from_millis(5),
        max_wait: Duration::from_millis(50),
        until_timeout: Duration::from_secs(20),
        shard_refresh: Duration::from_millis(1),
        ..SyncOptions::default()
    }
}

async fn sync(stream: &FakeStream, target: &MemTarget, store: &MemCheckpoints, opts: &SyncOptions) -> Result<crossdock_sync::Summary, SyncError> {
    run(stream, target, &model(), store, opts, &mut |_| {}, std::future::pending()).await
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test]
async fn upserts_and_deletes_apply_in_stream_order_per_key() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    let now = now_ms();
    for v in 0..50 {
        s.upsert("shard-0", item("a", v), now);
    }
    s.upsert("shard-0", item("b", 1), now);
    s.delete("shard-0", keys("b"), now);
    s.upsert("shard-0", item("c", 1), now);
    s.delete("shard-0", keys("c"), now);
    s.upsert("shard-0", item("c", 2), now);
    let sum = sync(&s, &t, &store, &opts()).await.expect("sync");
    assert_eq!(sum.outcome, Outcome::CaughtUp);
    assert_eq!(t.value("a").as_deref(), Some("Int(49)"), "the last image wins");
    assert_eq!(t.value("b"), None, "deleted after its insert");
    assert_eq!(t.value("c").as_deref(), Some("Int(2)"), "re-inserted after its delete");
    assert_eq!(t.len(), 2);
    let cp = store.get("shard-0").expect("checkpoint");
    assert_eq!(cp.sequence_number.as_deref(), Some("00000000000000000055"));
    assert_eq!(cp.applied, 55);
    assert!(!cp.finished);
}

#[tokio::test]
async fn children_wait_for_their_parents() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    let now = now_ms();
    s.upsert("shard-0", item("k", 1), now);
    s.upsert("shard-0", item("k", 2), now);
    let (a, b) = s.split("shard-0");
    s.upsert(&a, item("k", 3), now);
    s.upsert(&b, item("other", 1), now);
    let (a1, a2) = s.split(&a);
    s.upsert(&a1, item("k", 4), now);
    let merged = s.merge(&a2, &b);
    s.upsert(&merged, item("other", 2), now);
    // Small reads so that a child read before its parent's end would show up.
    let o = SyncOptions { read_limit: 1, ..opts() };
    sync(&s, &t, &store, &o).await.expect("sync");
    assert_eq!(t.value("k").as_deref(), Some("Int(4)"));
    assert_eq!(t.value("other").as_deref(), Some("Int(2)"));
    let reads = s.reads();
    let first = |shard: &str| reads.iter().position(|(s, _)| s == shard).unwrap_or_else(|| panic!("{shard} never read: {reads:?}"));
    let last = |shard: &str| reads.iter().rposition(|(s, _)| s == shard).expect("read");
    assert!(last("shard-0") < first(&a) && last("shard-0") < first(&b), "{reads:?}");
    assert!(last(&a) < first(&a1), "{reads:?}");
    assert!(last(&b) < first(&merged), "a merged child waits for both parents: {reads:?}");
    for parent in ["shard-0", a.as_str(), b.as_str(), a2.as_str()] {
        assert!(store.get(parent).expect("checkpoint").finished, "{parent} is recorded finished");
    }
    // The finish of each parent was checkpointed before any checkpoint of its children.
    let log = store.log.lock().expect("lock").clone();
    let first_cp = |shard: &str| log.iter().position(|c| c.shard == shard).expect("checkpoint");
    let finished_cp = |shard: &str| log.iter().position(|c| c.shard == shard && c.finished).expect("finished");
    assert!(finished_cp("shard-0") < first_cp(&a));
    assert!(finished_cp(&a2) < first_cp(&merged) && finished_cp(&b) < first_cp(&merged));
}

#[tokio::test]
async fn a_restart_resumes_after_the_checkpoint_and_finished_parents_stay_finished() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    let now = now_ms();
    s.upsert("shard-0", item("k", 1), now);
    let (a, _) = s.split("shard-0");
    s.upsert(&a, item("k", 2), now);
    sync(&s, &t, &store, &opts()).await.expect("first run");
    s.upsert(&a, item("k", 3), now);
    // The parent is trimmed away; its finished checkpoint is enough.
    s.remove_shard("shard-0");
    let before = s.reads().len();
    sync(&s, &t, &store, &opts()).await.expect("second run");
    assert_eq!(t.value("k").as_deref(), Some("Int(3)"));
    let reads = &s.reads()[before..];
    assert_eq!(reads.len(), 1, "only the new record is read: {reads:?}");
}

#[tokio::test]
async fn batches_close_at_max_changes_and_calls_stay_within_the_target_limit() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(7);
    let store = MemCheckpoints::default();
    let now = now_ms();
    for i in 0..95 {
        s.upsert("shard-0", item(&format!("k{i:03}"), i), now);
    }
    let o = SyncOptions { max_changes: 20, ..opts() };
    let sum = sync(&s, &t, &store, &o).await.expect("sync");
    assert_eq!(t.len(), 95);
    assert_eq!(sum.status.batches, 5, "95 changes in batches of at most 20");
    let calls = t.calls.lock().expect("lock").clone();
    assert!(calls.iter().all(|(_, n)| *n <= 7), "{calls:?}");
    // One checkpoint per batch, each after its writes.
    let log = store.log.lock().expect("lock").clone();
    let seqs: Vec<u64> = log.iter().filter_map(|c| c.sequence_number.as_deref()?.parse().ok()).collect();
    assert_eq!(seqs, vec![20, 40, 60, 80, 95]);
}

#[tokio::test]
async fn a_failed_write_does_not_advance_the_checkpoint() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    let now = now_ms();
    s.upsert("shard-0", item("a", 1), now);
    sync(&s, &t, &store, &opts()).await.expect("first batch");
    let before = store.get("shard-0").expect("checkpoint");
    s.upsert("shard-0", item("a", 2), now);
    *t.fail_writes.lock().expect("lock") = 1;
    let err = sync(&s, &t, &store, &opts()).await.expect_err("write fails");
    assert!(matches!(err, SyncError::Load { .. }), "{err}");
    assert_eq!(store.get("shard-0"), Some(before), "checkpoint unchanged");
    // The rerun reapplies the change the failed batch held.
    sync(&s, &t, &store, &opts()).await.expect("rerun");
    assert_eq!(t.value("a").as_deref(), Some("Int(2)"));
}

#[tokio::test]
async fn transient_read_failures_are_retried() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    s.upsert("shard-0", item("a", 1), now_ms());
    s.fail_reads(3);
    sync(&s, &t, &store, &opts()).await.expect("sync");
    assert_eq!(t.value("a").as_deref(), Some("Int(1)"));
}

#[tokio::test]
async fn a_checkpoint_beyond_retention_is_reported_not_skipped() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    let now = now_ms();
    s.upsert("shard-0", item("a", 1), now);
    sync(&s, &t, &store, &opts()).await.expect("first run");
    s.upsert("shard-0", item("a", 2), now);
    s.upsert("shard-0", item("a", 3), now);
    s.trim("shard-0", 2);
    let err = sync(&s, &t, &store, &opts()).await.expect_err("expired");
    assert!(matches!(err, SyncError::Expired { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("re-export the table") && text.contains("shard-0"), "{text}");
    assert_eq!(t.value("a").as_deref(), Some("Int(1)"), "nothing after the gap was applied");
}

#[tokio::test]
async fn a_checkpoint_whose_shard_is_gone_is_reported() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    s.upsert("shard-0", item("a", 1), now_ms());
    sync(&s, &t, &store, &opts()).await.expect("first run");
    s.split("shard-0");
    s.remove_shard("shard-0");
    let err = sync(&s, &t, &store, &opts()).await.expect_err("gone");
    assert!(err.to_string().contains("no longer in the stream") && err.to_string().contains("re-export"), "{err}");
}

#[tokio::test]
async fn a_first_run_long_after_the_export_is_refused() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    let o = SyncOptions { export_started_ms: Some(now_ms() - 25 * 3600 * 1000), ..opts() };
    let err = sync(&s, &t, &store, &o).await.expect_err("too old");
    assert!(matches!(err, SyncError::Expired { .. }) && err.to_string().contains("re-export"), "{err}");
}

#[tokio::test]
async fn an_attribute_first_seen_in_the_stream_gets_a_column_that_a_restart_keeps() {
    let s = FakeStream::new("T");
    let t = MemoryTarget::new(TargetKind::Postgres);
    t.ensure_table(&model()).await.expect("the loaded table");
    let store = MemCheckpoints::default();
    let mut a = item("a", 1);
    a.insert("tier".into(), AttributeValue::S("gold".into()));
    s.upsert("shard-0", a.clone(), now_ms());
    run(&s, &t, &model(), &store, &opts(), &mut |_| {}, std::future::pending()).await.expect("sync");
    assert_eq!(store.load_added().await.expect("load"), vec!["tier".to_string()], "recorded for every later reader");
    // A restart widens its model from the record before any change needs the column;
    // the JSON column takes another type of the same attribute as well.
    let mut b = item("b", 2);
    b.insert("tier".into(), AttributeValue::N("3".into()));
    s.upsert("shard-0", b.clone(), now_ms());
    run(&s, &t, &model(), &store, &opts(), &mut |_| {}, std::future::pending()).await.expect("second run");
    let mut wide = model();
    crossdock_sync::columns::widen(&mut wide, &store.load_added().await.expect("load")).expect("widen");
    assert_eq!(wide.columns.len(), model().columns.len() + 1, "one column, added once");
    let back: Vec<Item> = t.read_all(&wide).await.expect("read").iter().map(|r| wide.to_item(r).expect("decode")).collect();
    assert_eq!(back.len(), 2);
    for want in [&a, &b] {
        assert!(back.iter().any(|got| items_equal(got, want)), "{want:?} not in {back:?}");
    }
}

#[tokio::test]
async fn a_new_type_for_a_known_attribute_stops_the_sync_without_losing_it() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    let mut it = item("a", 1);
    it.insert("v".into(), AttributeValue::S("not a number".into()));
    s.upsert("shard-0", it, now_ms());
    let err = sync(&s, &t, &store, &opts()).await.expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("\"v\"") && text.contains("re-export"), "{text}");
    assert_eq!(t.len(), 0);
    assert_eq!(store.load_all().await.expect("load").len(), 0, "no checkpoint moved");
}

#[tokio::test]
async fn until_lag_gives_up_with_the_reason() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    // Caught up at once, but the hold is longer than the time allowed.
    s.upsert("shard-0", item("a", 1), now_ms());
    let o = SyncOptions { until_timeout: Duration::from_millis(200), until_lag: Some(Duration::from_millis(1)), hold: Duration::from_secs(60), ..opts() };
    let err = sync(&s, &t, &store, &o).await.expect_err("cannot hold 60 s");
    assert!(matches!(err, SyncError::LagNotReached { .. }), "{err}");
}

#[tokio::test]
async fn shutdown_stops_between_batches() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    s.upsert("shard-0", item("a", 1), now_ms());
    let o = SyncOptions { until_lag: None, ..opts() };
    let sum = run(&s, &t, &model(), &store, &o, &mut |_| {}, tokio::time::sleep(Duration::from_millis(300))).await.expect("run");
    assert_eq!(sum.outcome, Outcome::Interrupted);
    assert_eq!(t.value("a").as_deref(), Some("Int(1)"), "applied before the shutdown");
}

#[tokio::test]
async fn lag_is_reported_per_shard() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    s.upsert("shard-0", item("a", 1), now_ms() - 60_000);
    s.upsert("shard-0", item("a", 2), now_ms() - 60_000);
    let mut statuses = Vec::new();
    let o = SyncOptions { read_limit: 1, ..opts() };
    run(&s, &t, &model(), &store, &o, &mut |st| statuses.push(st.clone()), std::future::pending()).await.expect("run");
    assert!(statuses.iter().any(|st| st.shards[0].lag_ms.is_some_and(|l| l >= 60_000)), "the minute-old change shows as lag: {statuses:?}");
    let last = statuses.last().expect("status");
    assert_eq!((last.lag_ms, last.caught_up), (Some(0), true));
}

#[test]
fn checkpoint_keys_sit_next_to_the_marker() {
    use crossdock_core::layout::{sync_checkpoint_key, sync_shard_of, ExportId, Timestamp};
    let e = ExportId::new("b", "T1x", Timestamp::parse("2026-11-23T09-30-00Z").expect("ts")).expect("id");
    let key = sync_checkpoint_key(&e, "shardId-00000001-abc").expect("key");
    assert_eq!(key, "b/T1x/2026-11-23T09-30-00Z/_sync/shardId-00000001-abc.json");
    assert_eq!(sync_shard_of(&e, &key).as_deref(), Some("shardId-00000001-abc"));
    assert!(sync_checkpoint_key(&e, "../x").is_err());
}

#[tokio::test]
async fn with_newest_wins_a_late_older_record_never_overwrites_a_newer_one() {
    let s = FakeStream::new("T");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    let base = now_ms();
    // Same batch: out of order.
    s.upsert("shard-0", item("a", 3), base + 3);
    s.upsert("shard-0", item("a", 1), base + 1);
    // Separate batches: a newer record, then a late duplicate of an older one.
    s.upsert("shard-0", item("b", 2), base + 2);
    s.upsert("shard-0", item("b", 1), base + 1);
    let o = SyncOptions { newest_wins: true, ..opts() };
    sync(&s, &t, &store, &o).await.expect("sync");
    assert_eq!(t.value("a").as_deref(), Some("Int(3)"));
    assert_eq!(t.value("b").as_deref(), Some("Int(2)"));
    let t2 = MemTarget::new(100);
    let o = SyncOptions { newest_wins: true, max_changes: 1, ..opts() };
    sync(&s, &t2, &MemCheckpoints::default(), &o).await.expect("sync one change per batch");
    assert_eq!(t2.value("a").as_deref(), Some("Int(3)"), "a later batch with an older record is skipped");
    assert_eq!(t2.value("b").as_deref(), Some("Int(2)"));
}

#[tokio::test]
async fn incremental_exports_apply_in_export_time_order_and_finish() {
    use crossdock_export::native::{IncrementalExport, IncrementalRecord};
    use crossdock_sync::source::incremental::IncrementalSource;
    let rec = |pk: &str, v: Option<i64>, at_ms: i64| IncrementalRecord { keys: keys(pk), new_image: v.map(|v| item(pk, v)), write_micros: Some(at_ms * 1000) };
    let export = |id: &str, from_ms, to_ms, records| IncrementalExport { source: format!("s3://b/inc/AWSDynamoDB/{id}/"), from_ms, to_ms, records };
    let now = now_ms();
    // Given out of order: the later export's states must land last.
    let second = export("0002-b", now - 1_000, now, vec![rec("a", Some(3), now - 500), rec("b", None, now - 400)]);
    let first =
        export("0001-a", now - 2_000, now - 1_000, vec![rec("b", Some(1), now - 1_500), rec("a", Some(2), now - 1_200), rec("c", Some(7), now - 1_100)]);
    let s = IncrementalSource::new("T", vec![second, first], Some(now - 2_000)).expect("contiguous exports");
    let t = MemTarget::new(100);
    let store = MemCheckpoints::default();
    let o = SyncOptions { read_limit: 1, ..opts() };
    let sum = run(&s, &t, &model(), &store, &o, &mut |_| {}, std::future::pending()).await.expect("sync");
    assert_eq!(sum.outcome, Outcome::CaughtUp);
    assert_eq!(t.value("a").as_deref(), Some("Int(3)"), "the later export's state wins");
    assert_eq!(t.value("b"), None, "deleted in the later export");
    assert_eq!(t.value("c").as_deref(), Some("Int(7)"));
    for id in ["0001-a", "0002-b"] {
        assert!(store.get(id).expect("checkpoint").finished, "{id} is finished once read to its end");
    }
    // A rerun with the same exports applies nothing again.
    let calls = t.calls.lock().expect("lock").len();
    run(&s, &t, &model(), &store, &o, &mut |_| {}, std::future::pending()).await.expect("rerun");
    assert_eq!(t.calls.lock().expect("lock").len(), calls, "finished exports are not read again");
}
