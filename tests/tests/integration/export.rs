//! `crossdock export` against the local stack: dynalite (DynamoDB, with real UPDATING
//! phases and ConsumedCapacity) and moto (S3, Application Auto Scaling).

use crossdock_core::manifest::{AutoscalingBounds, CapacityLease};
use crossdock_core::TypeTag;
use crossdock_export::lease::{AppAutoscaling, Autoscaler, NoAutoscaling};
use crossdock_export::{Clients, ExportConfig, ExportError, ExportEvent, Observer, Raise};
use crossdock_tests::export::{
    create_table, decreases_today, export_dir, fill, lease, list, read_capacity, read_dump, same_items, scan_lines, wait_lease_stale,
};
use crossdock_tests::pipeline::{run, work_dir, Proc};
use crossdock_tests::proxy::{checkpoint_put, part_put, Action, FaultProxy};
use crossdock_tests::resources::{TempBucket, TempTable};
use crossdock_tests::unique;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn clients(autoscaler: Arc<dyn Autoscaler>) -> Clients {
    Clients { ddb: crossdock_tests::dynamodb().await, s3: crossdock_tests::s3().await, autoscaler }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_export_of_50k_items_of_every_type_is_exactly_once_and_matches_manifests() {
    let c = clients(Arc::new(NoAutoscaling)).await;
    let table = TempTable::name("expfull");
    create_table(&c.ddb, &table.name, 1000, 1000).await;
    fill(&c.ddb, &table.name, 50_000, 200, 16).await;
    let bucket = TempBucket::new("expfull").await;

    let mut cfg = ExportConfig::new(&table.name, &bucket.name, "2026-11-23");
    cfg.segments = Some(4);
    cfg.concurrency = 4;
    cfg.read_ratio = 1.5;
    cfg.part_bytes = 6 << 20;
    cfg.chunk_bytes = 5 << 20;
    // Stored as they are, so a part of more than 5 MiB of lines takes a multipart upload.
    cfg.codec = crossdock_export::writer::PartCodec::new(crossdock_core::Codec::None, None);
    let summary = crossdock_export::run(&c, &cfg, &crossdock_export::NoObserver, std::future::pending()).await.expect("export");
    assert!(summary.complete && !summary.interrupted, "{summary:?}");
    assert_eq!(summary.items, 50_000);
    assert!(summary.consumed_rcu > 0.0);

    let dir = export_dir(&c.s3, &bucket.name, "2026-11-23", &table.name).await;
    let dump = read_dump(&c.s3, &bucket.name, &dir).await;
    let scan = scan_lines(&c.ddb, &table.name).await;
    assert_eq!(scan.len(), 50_000);
    same_items(&dump.lines, &scan).expect("every item exactly once");
    assert_eq!(dump.manifests.len(), 4);
    assert!(dump.keys.iter().any(|k| k.ends_with("_schema.json")));
    // Parts above one 5 MiB chunk went through multipart upload.
    assert!(dump.manifests.iter().flat_map(|m| &m.parts).any(|p| p.bytes > 5 << 20), "no multipart-sized part");
    // Type statistics: every DynamoDB type seen, counts match the items.
    let mut stats = crossdock_core::manifest::TypeStats::default();
    for m in &dump.manifests {
        stats.merge(&m.type_stats);
    }
    let seen: std::collections::BTreeSet<TypeTag> = stats.0.values().flat_map(|s| s.types.keys().copied()).collect();
    assert_eq!(seen.len(), TypeTag::ALL.len(), "{seen:?}");
    assert_eq!(stats.0["blob"].types[&TypeTag::B], 50_000);
    assert_eq!(stats.0["price"].fractional_numbers, 50_000 - 50_000 / 100);
}

/// Records events; on the first scanned page, reads the table's real capacity and
/// autoscaling bounds (on a helper thread, while the export waits).
struct Watch {
    table: String,
    events: Mutex<Vec<ExportEvent>>,
    at_first_page: Mutex<Option<(i64, Option<AutoscalingBounds>)>>,
}

impl Observer for Watch {
    fn event(&self, e: &ExportEvent) {
        let first_page = matches!(e, ExportEvent::Page { .. }) && !self.events.lock().expect("lock").iter().any(|x| matches!(x, ExportEvent::Page { .. }));
        self.events.lock().expect("lock").push(e.clone());
        if first_page {
            let table = self.table.clone();
            let seen = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
                rt.block_on(async {
                    let ddb = crossdock_tests::dynamodb().await;
                    let aas = AppAutoscaling::from_conf(&crossdock_tests::aws_config().await);
                    (read_capacity(&ddb, &table).await, aas.read_bounds(&table).await.expect("bounds"))
                })
            })
            .join()
            .expect("probe");
            *self.at_first_page.lock().expect("lock") = Some(seen);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_and_autoscaling_minimum_are_raised_before_the_first_scan_and_restored_after() {
    let conf = crossdock_tests::aws_config().await;
    let aas = AppAutoscaling::from_conf(&conf);
    let c = clients(Arc::new(aas.clone())).await;
    let table = TempTable::name("expcap");
    create_table(&c.ddb, &table.name, 5, 5).await;
    fill(&c.ddb, &table.name, 1500, 500, 8).await;
    // The table is autoscaled: a scalable target on moto's Application Auto Scaling.
    let original = AutoscalingBounds { min_capacity: 5, max_capacity: 20 };
    aas.set_read_bounds(&table.name, original).await.expect("register scalable target");
    let bucket = TempBucket::new("expcap").await;

    let mut cfg = ExportConfig::new(&table.name, &bucket.name, "b");
    cfg.raise = Raise::To(60);
    cfg.read_ratio = 1.0;
    cfg.segments = Some(2);
    let watch = Watch { table: table.name.clone(), events: Mutex::default(), at_first_page: Mutex::default() };
    let summary = crossdock_export::run(&c, &cfg, &watch, std::future::pending()).await.expect("export");
    assert!(summary.complete);
    assert_eq!(summary.items, 1500);

    let (read_during, bounds_during) = watch.at_first_page.lock().expect("lock").expect("a page was scanned");
    assert_eq!(read_during, 60, "raised before the first Scan");
    assert_eq!(bounds_during, Some(AutoscalingBounds { min_capacity: 60, max_capacity: 60 }), "MinCapacity raised with it");
    // The bounds go back; the capacity is left to autoscaling, which scales in by itself:
    // forcing it down would spend one of the day's capacity decreases.
    assert_eq!(aas.read_bounds(&table.name).await.expect("bounds"), Some(original), "autoscaling bounds restored");
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 60, "no forced UpdateTable on an autoscaled table");
    assert_eq!(decreases_today(&c.ddb, &table.name).await, 0, "no capacity decrease spent");
    let events = watch.events.lock().expect("lock").clone();
    let pos = |f: &dyn Fn(&ExportEvent) -> bool| events.iter().position(f).expect("event present");
    assert!(pos(&|e| matches!(e, ExportEvent::LeaseTaken { .. })) < pos(&|e| matches!(e, ExportEvent::CapacityRaised { read: 60 })));
    assert!(pos(&|e| matches!(e, ExportEvent::Page { .. })) < pos(&|e| matches!(e, ExportEvent::CapacityRestored { read: 5 })));
    let lease: CapacityLease = lease(&c.s3, &bucket.name, &table.name).await.expect("lease");
    assert!(lease.restored && lease.original.read == 5 && lease.autoscaling == Some(original), "{lease:?}");
    assert_eq!(lease.owner.pid, std::process::id(), "the lease names its owner");

    aas.deregister_read(&table.name).await.expect("deregister scalable target");
}

/// A table of ~4 MB for the fault tests: 3000 items of ~1.3 KB at 5 RCU.
async fn fault_table(prefix: &str) -> (TempTable, TempBucket, Clients) {
    let c = clients(Arc::new(NoAutoscaling)).await;
    let table = TempTable::name(prefix);
    create_table(&c.ddb, &table.name, 5, 5).await;
    fill(&c.ddb, &table.name, 3000, 900, 8).await;
    let bucket = TempBucket::new(prefix).await;
    (table, bucket, c)
}

/// The binary exporting `table` with its S3 traffic through `s3` (a [`FaultProxy`]);
/// stdout and stderr go to files in `dir`.
fn spawn_export(dir: &std::path::Path, name: &str, s3: &FaultProxy, table: &str, bucket: &str, extra: &[&str]) -> Proc {
    Proc::spawn_with_env(dir, name, &export_args(table, bucket, extra), &[("AWS_ENDPOINT_URL_S3", &s3.url)])
}

/// Holds every checkpoint write after the first and waits until the export is blocked
/// in one: a part is durable and checkpointed, and at least one more part is uploaded
/// but not yet checkpointed. Starts the export through the proxy it returns.
async fn export_held_mid_scan(dir: &std::path::Path, name: &str, table: &str, bucket: &str, extra: &[&str]) -> (Proc, FaultProxy) {
    let s3 = FaultProxy::s3().await;
    s3.rule(1, Action::Hold, checkpoint_put);
    let mut child = spawn_export(dir, name, &s3, table, bucket, extra);
    let held = s3.wait_held(1, Duration::from_secs(120)).await;
    assert!(held && child.exited().is_none(), "the export blocked in its second checkpoint write; log:\n{}", child.log_tail());
    (child, s3)
}

async fn lease_of(s3: &aws_sdk_s3::Client, bucket: &str, table: &str) -> CapacityLease {
    lease(s3, bucket, table).await.expect("lease written")
}

fn restore_cmd(table: &str, bucket: &str) -> (Option<i32>, String, String) {
    let out = Command::new(crossdock_tests::crossdock_bin())
        .args(["export", "restore", "--no-autoscaling", "--table", table, "--bucket", bucket])
        .output()
        .expect("run restore");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_scan_restores_capacity_and_exits_partial() {
    let (table, bucket, c) = fault_table("expterm").await;
    let dir = work_dir("expterm");
    let (mut child, s3) = export_held_mid_scan(&dir, "export", &table.name, &bucket.name, &["--raise-to", "40", "--read-ratio", "1", "--output", "json"]).await;
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 40, "raised while scanning");
    child.signal("TERM");
    // The process has seen the signal before the held write goes through, so it cannot
    // scan on to the end.
    child.wait_log("shutdown requested", Duration::from_secs(60)).await;
    s3.release();
    let status = child.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(5), "partial exit code\n{}", child.log_tail());
    let summary = child.json();
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["complete"], false);
    assert!(summary["items"].as_u64().is_some_and(|n| n > 0 && n < 3000), "stopped mid-scan: {summary}");
    assert_eq!(summary["capacity_restored"], true);
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 5, "restored after SIGTERM");
    assert!(lease_of(&c.s3, &bucket.name, &table.name).await.restored);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_raising_export_of_a_table_is_refused_naming_the_running_owner() {
    let (table, bucket, c) = fault_table("exptwo").await;
    let dir = work_dir("exptwo");
    let (mut first, s3) =
        export_held_mid_scan(&dir, "export-1", &table.name, &bucket.name, &["--raise-to", "40", "--read-ratio", "1", "--output", "json"]).await;
    let pid = first.child.id().expect("running");
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 40);

    // Another batch, same table: the lease is per table.
    let (code, _, stderr) = export_cmd(&["--table", &table.name, "--bucket", &bucket.name, "--batch", "other", "--raise-to", "50", "--segments", "2"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("leased by another export") && stderr.contains(&format!("pid {pid}")), "names the owner: {stderr}");
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 40, "the first export's raise is untouched");
    let l = lease_of(&c.s3, &bucket.name, &table.name).await;
    assert!(!l.restored && l.owner.pid == pid && l.raised_to.read == 40, "{l:?}");

    s3.release();
    let status = first.wait(Duration::from_secs(180)).await;
    assert_eq!(status.code(), Some(0), "{}", first.log_tail());
    assert_eq!(first.json()["items"], 3000);
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 5, "restored once by its owner");
    assert_eq!(decreases_today(&c.ddb, &table.name).await, 1);
    let l = lease_of(&c.s3, &bucket.name, &table.name).await;
    assert!(l.restored && l.restored_by.as_deref().is_some_and(|b| b.contains(&l.owner.run_id)), "{l:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_restore_during_a_live_export_leaves_its_lease_alone_and_says_why() {
    let (table, bucket, c) = fault_table("explive").await;
    let dir = work_dir("explive");
    // A short stale period: the lease stays live only because the heartbeat renews it.
    let (mut child, s3) =
        export_held_mid_scan(&dir, "export", &table.name, &bucket.name, &["--raise-to", "40", "--read-ratio", "1", "--lease-stale-after", "2"]).await;
    let pid = child.child.id().expect("running");
    // Observable: renewals come at least a sixth of the stale period apart, so seven
    // distinct heartbeats mean the lease has lived past its stale period on renewals alone.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut beats = std::collections::BTreeSet::new();
    while beats.len() < 8 {
        beats.insert(lease_of(&c.s3, &bucket.name, &table.name).await.heartbeat_at);
        assert!(std::time::Instant::now() < deadline, "the heartbeat was not renewed: {beats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, stdout, stderr) = restore_cmd(&table.name, &bucket.name);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("left alone") && stdout.contains(&format!("pid {pid}")) && stdout.contains("heartbeat"), "says which and why: {stdout}");
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 40, "the live export keeps its capacity");
    assert!(!lease_of(&c.s3, &bucket.name, &table.name).await.restored);

    s3.release();
    assert_eq!(child.wait(Duration::from_secs(180)).await.code(), Some(0), "{}", child.log_tail());
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_scan_then_export_restore_puts_capacity_back_once_the_heartbeat_is_stale() {
    let (table, bucket, c) = fault_table("expkill").await;
    let dir = work_dir("expkill");
    let (mut child, _s3) =
        export_held_mid_scan(&dir, "export", &table.name, &bucket.name, &["--raise-to", "40", "--read-ratio", "1", "--lease-stale-after", "2"]).await;
    child.signal("KILL");
    assert!(!child.wait(Duration::from_secs(10)).await.success());
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 40, "a SIGKILLed export leaves the raise");
    assert!(!lease_of(&c.s3, &bucket.name, &table.name).await.restored);

    wait_lease_stale(&c.s3, &bucket.name, &table.name, Duration::from_secs(60)).await;
    let (code, stdout, stderr) = restore_cmd(&table.name, &bucket.name);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("restored to 5") && stdout.contains("stale"), "{stdout}");
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 5);
    assert!(lease_of(&c.s3, &bucket.name, &table.name).await.restored);

    let (code, stdout, _) = restore_cmd(&table.name, &bucket.name);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("nothing to do"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_scan_then_resume_exports_every_item_exactly_once_and_restores() {
    let (table, bucket, c) = fault_table("expresume").await;
    let dir = work_dir("expresume");
    // Killed while a part is uploaded but its checkpoint is not: the resumed run must
    // neither lose nor repeat that part's items.
    let (mut child, _s3) =
        export_held_mid_scan(&dir, "export-1", &table.name, &bucket.name, &["--raise-to", "40", "--read-ratio", "1", "--lease-stale-after", "2"]).await;
    child.signal("KILL");
    assert!(!child.wait(Duration::from_secs(10)).await.success());
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 40);
    wait_lease_stale(&c.s3, &bucket.name, &table.name, Duration::from_secs(60)).await;
    let parts_at_kill = list(&c.s3, &bucket.name, "b/").await.iter().filter(|k| k.contains("/data/")).count();
    assert!(parts_at_kill >= 2, "a part beyond the last checkpoint was uploaded ({parts_at_kill} parts)");

    // The next export of the table restores the stale lease first, then resumes.
    let (code, summary, log) = run(
        &dir,
        "export-2",
        &export_args(&table.name, &bucket.name, &["--resume", "--raise-to", "400", "--read-ratio", "1", "--output", "json"]),
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["restored_stale_leases"].as_array().map(Vec::len), Some(1), "{summary}");
    assert_eq!(summary["restored_stale_leases"][0]["action"], "restored", "{summary}");
    assert_eq!(summary["items"], 3000);
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 5);

    let dump_dir = export_dir(&c.s3, &bucket.name, "b", &table.name).await;
    let dump = read_dump(&c.s3, &bucket.name, &dump_dir).await;
    same_items(&dump.lines, &scan_lines(&c.ddb, &table.name).await).expect("exactly once after resume");
    // No part outside the manifests.
    let listed: Vec<&String> = dump.keys.iter().filter(|k| k.contains("/data/")).collect();
    assert_eq!(listed.len(), dump.manifests.iter().map(|m| m.parts.len()).sum::<usize>(), "{listed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_slowdowns_on_parts_are_retried_and_the_export_completes() {
    let (table, bucket, c) = fault_table("exp503").await;
    let dir = work_dir("exp503");
    // Five 503s in a row, more than an SDK client's default three attempts.
    let s3 = FaultProxy::s3().await;
    s3.rule_n(1, 5, Action::Status(503), part_put);
    let mut child = spawn_export(&dir, "export", &s3, &table.name, &bucket.name, &["--raise-to", "400", "--read-ratio", "1", "--output", "json"]);
    let status = child.wait(Duration::from_secs(180)).await;
    assert_eq!(s3.faulted(), 5, "every injected fault was met");
    assert_eq!(status.code(), Some(0), "{}", child.log_tail());
    let summary = child.json();
    assert_eq!((summary["complete"].as_bool(), summary["items"].as_u64()), (Some(true), Some(3000)), "{summary}");
    let dump_dir = export_dir(&c.s3, &bucket.name, "b", &table.name).await;
    let dump = read_dump(&c.s3, &bucket.name, &dump_dir).await;
    same_items(&dump.lines, &scan_lines(&c.ddb, &table.name).await).expect("exactly once despite the faults");
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_failing_for_good_mid_upload_exits_resumable_aborts_the_upload_and_the_resume_finishes() {
    let c = clients(Arc::new(NoAutoscaling)).await;
    let table = TempTable::name("expabort");
    create_table(&c.ddb, &table.name, 5, 5).await;
    fill(&c.ddb, &table.name, 2000, 4000, 8).await; // ~8 MB: one part of two 5 MiB chunks
    let bucket = TempBucket::new("expabort").await;
    let dir = work_dir("expabort");
    // The first chunk of the multipart upload goes through; every later part write fails.
    let s3 = FaultProxy::s3().await;
    s3.rule(1, Action::Status(503), |m, p| part_put(m, p) && p.contains("partNumber="));
    // Stored uncompressed, so the part's bytes are more than one chunk.
    let args = ["--segments", "1", "--part-size", "64M", "--chunk-size", "5M", "--codec", "none", "--raise-to", "400", "--read-ratio", "1", "--output", "json"];
    let mut child = spawn_export(&dir, "export-1", &s3, &table.name, &bucket.name, &args);
    let status = child.wait(Duration::from_secs(300)).await;
    let log = child.log_text();
    assert_eq!(status.code(), Some(5), "resumable exit; log:\n{}", child.log_tail());
    assert!(s3.faulted() >= 2 && log.contains("rerun with --resume"), "retried, then told what to do; log:\n{}", child.log_tail());
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 5, "capacity restored");
    let uploads = c.s3.list_multipart_uploads().bucket(&bucket.name).send().await.expect("list uploads");
    assert!(uploads.uploads().is_empty(), "the multipart upload was aborted: {:?}", uploads.uploads());
    drop(s3);

    let (code, summary, log) =
        run(&dir, "export-2", &export_args(&table.name, &bucket.name, &[&["--resume"][..], &args].concat()), Duration::from_secs(300)).await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!((summary["complete"].as_bool(), summary["items"].as_u64()), (Some(true), Some(2000)), "{summary}");
    let dump_dir = export_dir(&c.s3, &bucket.name, "b", &table.name).await;
    let dump = read_dump(&c.s3, &bucket.name, &dump_dir).await;
    same_items(&dump.lines, &scan_lines(&c.ddb, &table.name).await).expect("exactly once after the resume");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Parts are stored with zstd unless `--codec` says otherwise; each codec's parts hold
/// every item once.
#[tokio::test]
async fn parts_are_stored_with_the_codec_asked_for() {
    let c = clients(Arc::new(NoAutoscaling)).await;
    let table = TempTable::name("expcodec");
    create_table(&c.ddb, &table.name, 200, 200).await;
    fill(&c.ddb, &table.name, 300, 500, 4).await;
    let scan = scan_lines(&c.ddb, &table.name).await;
    let dir = work_dir("expcodec");
    for (codec, ext) in [(None, ".json.zst"), (Some("gzip"), ".json.gz"), (Some("none"), "-00000.json")] {
        let bucket = TempBucket::new("expcodec").await;
        let mut extra = vec!["--output", "json"];
        extra.extend(codec.map(|c| ["--codec", c]).into_iter().flatten());
        let (code, _, log) = run(&dir, "export", &export_args(&table.name, &bucket.name, &extra), Duration::from_secs(120)).await;
        assert_eq!(code, Some(0), "{codec:?}: {log}");
        let dump = read_dump(&c.s3, &bucket.name, &export_dir(&c.s3, &bucket.name, "b", &table.name).await).await;
        let names: Vec<&str> = dump.manifests.iter().flat_map(|m| &m.parts).map(|p| p.name.as_str()).collect();
        assert!(!names.is_empty() && names.iter().all(|n| n.ends_with(ext)), "{codec:?}: {names:?}");
        same_items(&dump.lines, &scan).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `crossdock export` of `table` into `bucket`, batch `b`: two segments of 256 KiB
/// parts unless `extra` says otherwise.
fn export_args(table: &str, bucket: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<&str> = vec!["export", "--no-autoscaling", "--table", table, "--bucket", bucket, "--batch", "b", "--no-progress"];
    if !extra.contains(&"--segments") {
        a.extend(["--segments", "2"]);
    }
    if !extra.contains(&"--part-size") {
        a.extend(["--part-size", "256K"]);
    }
    a.iter().chain(extra).map(|x| x.to_string()).collect()
}

fn export_cmd(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(crossdock_tests::crossdock_bin()).arg("export").arg("--no-autoscaling").args(args).output().expect("run");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_clear_errors_and_nothing_raised() {
    let c = clients(Arc::new(NoAutoscaling)).await;
    let table = TempTable::name("expbad");
    create_table(&c.ddb, &table.name, 5, 5).await;
    let bucket = TempBucket::new("expbad").await;
    let t = table.name.as_str();
    let b = bucket.name.as_str();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--table", "no-such-table-xyz", "--bucket", b, "--batch", "x", "--raise-to", "50"], 3, "does not exist"),
        (vec!["--table", t, "--bucket", "no-such-bucket-xyz", "--batch", "x", "--raise-to", "50"], 3, "no-such-bucket-xyz"),
        (vec!["--table", t, "--bucket", b, "--batch", "x", "--read-ratio", "0"], 2, "outside (0, 1.5]"),
        (vec!["--table", t, "--bucket", b, "--batch", "x", "--read-ratio", "1.6"], 2, "outside (0, 1.5]"),
        (vec!["--table", t, "--bucket", b, "--batch", "x", "--segments", "4", "--segment-range", "2..5"], 2, "outside TotalSegments 4"),
        (vec!["--bucket", b, "--batch", "x"], 2, "--table is required"),
        (vec!["--table", t, "--bucket", b, "--batch", "x", "--segments", "4", "--segment-range", "0..2", "--raise-to", "50"], 2, "export capacity raise"),
    ];
    for (args, code, needle) in cases {
        let (got, _, stderr) = export_cmd(&args);
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert_eq!(read_capacity(&c.ddb, t).await, 5);
    assert!(list(&c.s3, b, "").await.is_empty(), "nothing written");

    // A table that is UPDATING (dynalite takes ~1 s): refused, nothing raised or written.
    let pt = aws_sdk_dynamodb::types::ProvisionedThroughput::builder().read_capacity_units(7).write_capacity_units(5).build().expect("pt");
    c.ddb.update_table().table_name(t).provisioned_throughput(pt).send().await.expect("update");
    let mut cfg = ExportConfig::new(t, b, "x");
    cfg.raise = Raise::To(50);
    let err = crossdock_export::run(&c, &cfg, &crossdock_export::NoObserver, std::future::pending()).await.expect_err("UPDATING");
    assert!(matches!(&err, ExportError::TableNotActive { status, .. } if status == "UPDATING"), "{err}");
    crossdock_tests::export::wait_active(&c.ddb, t).await;
    assert_eq!(read_capacity(&c.ddb, t).await, 7, "only the test's own update happened");
    assert!(list(&c.s3, b, "").await.iter().all(|k| !k.ends_with("_capacity.json")), "no lease");

    // An on-demand table has no capacity to take a share of: --max-rcu is required.
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let od = TempTable::name("expod");
    c.ddb
        .create_table()
        .table_name(&od.name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build().expect("def"))
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().expect("key"))
        .send()
        .await
        .expect("create on-demand table");
    crossdock_tests::export::wait_active(&c.ddb, &od.name).await;
    let (got, _, stderr) = export_cmd(&["--table", &od.name, "--bucket", b, "--batch", "x"]);
    assert_eq!(got, Some(2), "{stderr}");
    assert!(stderr.contains("--max-rcu") && stderr.contains("on-demand"), "{stderr}");
    assert!(list(&c.s3, b, "").await.is_empty(), "nothing written for the on-demand table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_as_json_and_touches_nothing() {
    let c = clients(Arc::new(NoAutoscaling)).await;
    let table = TempTable::name("expdry");
    create_table(&c.ddb, &table.name, 5, 5).await;
    let bucket = TempBucket::new("expdry").await;
    let (code, stdout, stderr) =
        export_cmd(&["--table", &table.name, "--bucket", &bucket.name, "--batch", "x", "--raise-by", "45", "--segments", "3", "--dry-run", "--output", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json plan");
    assert_eq!(plan["raise_to"], 50);
    assert_eq!(plan["total_segments"], 3);
    assert_eq!(plan["rcu_budget"], 25.0);
    assert_eq!(plan["capacity_now"]["read"], 5);
    assert_eq!(read_capacity(&c.ddb, &table.name).await, 5);
    assert!(list(&c.s3, &bucket.name, "").await.is_empty());
}

fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(crossdock_tests::crossdock_bin()).args(args).output().expect("run");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_export_of_three_processes_under_the_capacity_step_is_raised_and_restored_exactly_once() {
    let (table, bucket, c) = fault_table("expshard").await;
    let (t, b) = (table.name.as_str(), bucket.name.as_str());
    let dir = work_dir("expshard");
    let run_id = unique("run");
    let ts = "2026-11-23T10-00-00Z";
    let at = ["--no-autoscaling", "--table", t, "--bucket", b];
    let capacity = |sub: &str, extra: &[&str]| -> Vec<String> {
        ["export", "capacity", sub].iter().chain(at.iter()).chain(["--run-id", run_id.as_str()].iter()).chain(extra).map(|x| x.to_string()).collect()
    };

    let (code, stdout, stderr) =
        cli(&capacity("raise", &["--raise-to", "60", "--hold", "600", "--output", "json"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("\"raised\""), "{stdout}");
    assert_eq!(read_capacity(&c.ddb, t).await, 60);
    // The same step again (a retried init container) changes nothing.
    let (code, stdout, stderr) = cli(&capacity("raise", &["--raise-to", "60"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("already_held"), "{stdout}");

    let shard = |i: u32| {
        export_args(
            t,
            b,
            &[
                "--segments",
                "3",
                "--segment-range",
                &format!("{i}..{}", i + 1),
                "--timestamp",
                ts,
                "--resume",
                "--capacity-run",
                &run_id,
                "--read-ratio",
                "1",
                "--output",
                "json",
            ],
        )
    };
    let mut shards: Vec<Proc> = (0..3).map(|i| Proc::spawn(&dir, &format!("shard-{i}"), &shard(i))).collect();
    let mut items = 0;
    for p in &mut shards {
        let status = p.wait(Duration::from_secs(300)).await;
        assert_eq!(status.code(), Some(0), "{}: {}", p.name, p.log_tail());
        let summary = p.json();
        assert_eq!(summary["complete"], true, "{summary}");
        assert_eq!(summary["restored_stale_leases"].as_array().map(Vec::len), Some(0), "{summary}");
        items += summary["items"].as_u64().expect("items");
    }
    assert_eq!(items, 3000);
    assert_eq!(read_capacity(&c.ddb, t).await, 60, "no shard restored the capacity step's raise");
    assert_eq!(decreases_today(&c.ddb, t).await, 0);
    let l = lease_of(&c.s3, b, t).await;
    assert!(!l.restored && l.owner.run_id == run_id, "{l:?}");

    // A shard run again without --resume would rescan over existing parts: refused.
    let (code, _, stderr) = cli(&shard(1).iter().map(String::as_str).filter(|a| *a != "--resume").collect::<Vec<_>>());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("already has data") && stderr.contains("--resume"), "{stderr}");

    // Every shard tries the restore as its last step; it happens once, when complete.
    let restore = capacity("restore", &["--when-complete", "--batch", "b", "--timestamp", ts]);
    let restore: Vec<&str> = restore.iter().map(String::as_str).collect();
    let outs: Vec<String> = (0..3)
        .map(|_| cli(&restore))
        .map(|(code, out, err)| {
            assert_eq!(code, Some(0), "{err}");
            out
        })
        .collect();
    assert!(outs[0].contains("restored to 5"), "{outs:?}");
    assert!(outs[1..].iter().all(|o| o.contains("nothing to do")), "{outs:?}");
    assert_eq!(read_capacity(&c.ddb, t).await, 5);
    assert_eq!(decreases_today(&c.ddb, t).await, 1, "restored exactly once");
    let l = lease_of(&c.s3, b, t).await;
    assert!(l.restored && l.restored_by.as_deref().is_some_and(|by| by.contains(&run_id)), "{l:?}");

    let dump_dir = export_dir(&c.s3, b, "b", t).await;
    let dump = read_dump(&c.s3, b, &dump_dir).await;
    same_items(&dump.lines, &scan_lines(&c.ddb, t).await).expect("every item exactly once across the shards");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--pipeline` gives the export its bucket, prefix and read ratio (the pipeline's
/// targets, and the variables they name, are not needed); a flag still wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_file_gives_bucket_prefix_and_read_ratio() {
    let c = clients(Arc::new(NoAutoscaling)).await;
    let table = TempTable::name("exppipe");
    create_table(&c.ddb, &table.name, 1000, 1000).await;
    fill(&c.ddb, &table.name, 50, 100, 2).await;
    let bucket = TempBucket::new("exppipe").await;
    let dir = work_dir("exppipe");
    let pipeline = dir.join("p.toml");
    let text = format!(
        "name = \"p\"\n[source]\nbucket = \"{}\"\nprefix = \"from-pipeline/\"\nread_ratio = 0.25\n[relay]\ncodec = \"zstd\"\n[targets.relational]\nkind = \"postgres\"\nurl = \"${{NOT_SET_HERE}}\"\n",
        bucket.name
    );
    std::fs::write(&pipeline, text).expect("pipeline");
    let pipeline = pipeline.to_string_lossy().into_owned();
    let args = |batch: &str, extra: &[&str]| -> Vec<String> {
        ["export", "--no-autoscaling", "--table", &table.name, "--pipeline", &pipeline, "--batch", batch, "--output", "json", "--dry-run"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let (code, plan, log) = run(&dir, "plan", &args("b", &[]), Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(plan["s3_prefix"].as_str().is_some_and(|p| p.starts_with(&format!("s3://{}/from-pipeline/b/", bucket.name))), "{plan}");
    assert_eq!(plan["rcu_budget"].as_f64(), Some(250.0), "the pipeline's read ratio of 1000 RCU: {plan}");
    let (code, plan, log) = run(&dir, "plan2", &args("b", &["--prefix", "flag/", "--read-ratio", "0.5"]), Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(plan["s3_prefix"].as_str().is_some_and(|p| p.contains("/flag/b/")), "the flag wins: {plan}");
    assert_eq!(plan["rcu_budget"].as_f64(), Some(500.0), "{plan}");
}
