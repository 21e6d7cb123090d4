//! `crossdock load --watch` end to end: fake-gcs-server publishes OBJECT_FINALIZE
//! notifications to the Pub/Sub emulator, the real binary pulls them and loads each
//! `_SUCCESS` into PostgreSQL, ignores every other object, and stops cleanly on SIGTERM.
//!
//! The watcher runs against a fake-gcs-server of the test's own with its own topic (see
//! `crossdock_tests::watch` for why); the stack's shared server is checked separately
//! to publish to `$CROSSDOCK_GCS_EVENTS_TOPIC`.

use crossdock_core::layout::DumpFile;
use crossdock_core::marker::LoadedRecord;
use crossdock_core::Codec;
use crossdock_load::schema::{TableModel, TargetKind};
use crossdock_load::sink::{AnyTarget, Target};
use crossdock_load::watch::{ObjectEvent, Work};
use crossdock_tests::load::pipeline_toml;
use crossdock_tests::load::{all_types_items, get, list, put, schema, wide_items, write_export, WrittenExport};
use crossdock_tests::pipeline::{pg_tables, work_dir, write_pipeline, Proc};
use crossdock_tests::relay::eventually;
use crossdock_tests::resources::{TempGcsBucket, TempPgSchema, TempSpannerDb};
use crossdock_tests::watch::{poll_for, pull_and_ack, subscription_topic, FakeGcs, PubsubTopic};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The watcher's log (`--log-format json`): its JSON events, and every other line.
fn log_of(p: &Proc) -> (Vec<Value>, Vec<String>) {
    let (mut events, mut other) = (vec![], vec![]);
    for line in p.log_text().lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => events.push(v),
            _ if line.trim().is_empty() => {}
            _ => other.push(line.to_string()),
        }
    }
    (events, other)
}

/// The values of `field` in the log events whose message is `message`.
fn logged(p: &Proc, message: &str, field: &str) -> Vec<String> {
    log_of(p).0.iter().filter(|e| e["message"] == message).filter_map(|e| e[field].as_str().map(str::to_string)).collect()
}

async fn loaded_record(gcs: &gcloud_storage::client::Client, bucket: &str, w: &WrittenExport) -> Option<LoadedRecord> {
    let body = get(gcs, bucket, &w.export.gcs_key(&DumpFile::Loaded, Codec::None)).await?;
    Some(serde_json::from_slice(&body).expect("_LOADED parses"))
}

async fn pg_count(schema: &str, table: &str) -> i64 {
    crossdock_tests::postgres().await.query_one(&format!("SELECT count(*) FROM \"{schema}\".\"{table}\""), &[]).await.expect("count rows").get(0)
}

/// Waits until `w`'s `_LOADED` appears (the watcher still running), then checks it and
/// the rows in PostgreSQL.
async fn assert_loaded(p: &mut Proc, gcs: &FakeGcs, bucket: &str, pg: &TempPgSchema, w: &WrittenExport) {
    let t0 = Instant::now();
    let rec = loop {
        if let Some(status) = p.exited() {
            panic!("the watcher exited ({status:?}) before loading {}; log:\n{}", w.marker_url, p.log_tail());
        }
        if let Some(rec) = loaded_record(&gcs.client, bucket, w).await {
            break rec;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "{} not loaded within 90 s; log:\n{}", w.marker_url, p.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let table = &w.marker.export.table;
    let n = w.items.len() as u64;
    assert_eq!((rec.target.as_str(), rec.destination.clone()), ("postgres", format!("{}.{table}", pg.name)), "{rec:?}");
    assert_eq!((rec.items_expected, rec.rows_in_target, rec.rejected), (n, n, 0), "{rec:?}");
    assert_eq!(pg_count(&pg.name, table).await, n as i64, "rows of {table} in PostgreSQL");
    eprintln!("{} loaded by the watcher {:.1} s after its marker was written", w.marker_url, t0.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_loads_each_marker_ignores_other_objects_and_exits_0_on_sigterm() {
    let dir = work_dir("watch");
    let topic = PubsubTopic::new("watch").await;
    let gcs = FakeGcs::start(&topic, &dir).await;
    let bucket = gcs.bucket("watch").await;
    let pg = TempPgSchema::new("watch").await;
    let pipeline = write_pipeline(&dir, "unused", &bucket, &pg.name, &[], "").to_string_lossy().into_owned();

    // The watcher creates its subscription on start; until it exists, notifications are
    // dropped, so nothing is written before it does.
    let sub = topic.subscription_name("watch");
    let args: Vec<String> = [
        "load",
        "--watch",
        "--pipeline",
        &pipeline,
        "--project",
        &crossdock_tests::gcp_project(),
        "--topic",
        &topic.name,
        "--subscription",
        &sub,
        "--log-format",
        "json",
        "--log",
        "info,crossdock_load::watch=debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::spawn_with_env(&dir, "watch", &args, &[("STORAGE_EMULATOR_HOST", &gcs.endpoint)]);
    let started = Instant::now();
    let subscribed = loop {
        if let Some(status) = p.exited() {
            panic!("the watcher exited at start ({status:?}); log:\n{}", p.log_tail());
        }
        if let Some(t) = subscription_topic(&sub).await {
            break t;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no subscription {sub} after 30 s; log:\n{}", p.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(subscribed, topic.path(), "subscribed to the test's topic");
    eprintln!("watcher subscribed {:.1} s after start", started.elapsed().as_secs_f64());

    // Objects that are not markers: acknowledged and ignored, nothing loaded.
    let decoys =
        ["README.txt", "b1/decoy/2026-01-01T00-00-00Z/_SUCCESS.tmp", "b1/decoy/2026-01-01T00-00-00Z/data/seg-00000-part-00000.json", "b1/decoy/_SUCCESS/x"];
    for d in decoys {
        put(&gcs.client, &bucket, d, b"{}\n".to_vec()).await;
    }
    let urls: Vec<String> = decoys.iter().map(|d| format!("gs://{bucket}/{d}")).collect();
    let seen = eventually(Duration::from_secs(30), || {
        let ignored = logged(&p, "not a _SUCCESS finalize: acknowledged", "object");
        let all = urls.iter().all(|u| ignored.contains(u));
        async move { all }
    })
    .await;
    assert!(seen, "the decoys' notifications were not all pulled and ignored within 30 s; log:\n{}", p.log_tail());
    assert_eq!(logged(&p, "marker finalized", "marker"), Vec::<String>::new(), "no marker yet");
    assert_eq!(pg_tables(&crossdock_tests::postgres().await, &pg.name).await, Vec::<String>::new(), "nothing loaded for non-markers");
    let mut objects = list(&gcs.client, &bucket, "").await;
    objects.sort();
    let mut want: Vec<String> = decoys.iter().map(|d| d.to_string()).collect();
    want.sort();
    assert_eq!(objects, want, "the watcher wrote nothing (no _progress/, no _LOADED)");

    // A marker in another bucket on the same topic: not this pipeline's, not loaded.
    let foreign = gcs.bucket("elsewhere").await;
    let tf = crossdock_tests::unique_ident("wf");
    let f = write_export(&gcs.client, &foreign, "b1", schema(&tf, true, true), all_types_items(20, true), 1, Codec::Zstd).await;
    let skipped = eventually(Duration::from_secs(30), || {
        let all = logged(&p, "marker in another bucket: acknowledged, not loaded", "marker").contains(&f.marker_url);
        async move { all }
    })
    .await;
    assert!(skipped, "the foreign marker was not pulled and skipped within 30 s; log:\n{}", p.log_tail());
    assert!(loaded_record(&gcs.client, &foreign, &f).await.is_none(), "nothing written into the other bucket");
    assert_eq!(pg_tables(&crossdock_tests::postgres().await, &pg.name).await, Vec::<String>::new(), "nothing loaded from the other bucket");

    // A first export: loaded once its `_SUCCESS` lands.
    let ta = crossdock_tests::unique_ident("wa");
    let a = write_export(&gcs.client, &bucket, "b1", schema(&ta, true, true), all_types_items(300, true), 3, Codec::Zstd).await;
    assert_loaded(&mut p, &gcs, &bucket, &pg, &a).await;

    // A second table's marker: loaded too, by the same running watcher.
    let tb = crossdock_tests::unique_ident("wb");
    let b = write_export(&gcs.client, &bucket, "b1", schema(&tb, false, true), wide_items(500, 4, false), 2, Codec::Gzip).await;
    assert_loaded(&mut p, &gcs, &bucket, &pg, &b).await;

    // Each marker loaded exactly once; the decoys never taken for one; no errors.
    let mut markers = logged(&p, "marker finalized", "marker");
    markers.sort();
    let mut expected = vec![a.marker_url.clone(), b.marker_url.clone()];
    expected.sort();
    assert_eq!(markers, expected, "log:\n{}", p.log_tail());
    let (events, other) = log_of(&p);
    let errors: Vec<&Value> = events.iter().filter(|e| e["level"] == "ERROR" || e["level"] == "WARN").collect();
    assert!(errors.is_empty() && other.is_empty(), "errors or warnings: {errors:?}\n{other:?}");
    let mut tables = pg_tables(&crossdock_tests::postgres().await, &pg.name).await;
    tables.sort();
    let mut want_tables = vec![ta.clone(), tb.clone()];
    want_tables.sort();
    assert_eq!(tables, want_tables);
    assert!(list(&gcs.client, &bucket, "b1/decoy/").await.iter().all(|k| decoys.contains(&k.as_str())), "nothing written next to the decoys");

    // SIGTERM while idle: exit 0, promptly; one summary line per load on stdout.
    p.signal("TERM");
    let t0 = Instant::now();
    let status = p.wait(Duration::from_secs(20)).await;
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM; log:\n{}", p.log_tail());
    assert!(took < Duration::from_secs(3), "took {took:?} to exit after SIGTERM");
    eprintln!("watcher exited 0 {:.2} s after SIGTERM", took.as_secs_f64());
    let stdout = std::fs::read_to_string(&p.stdout).unwrap_or_default();
    assert_eq!(stdout.lines().filter(|l| l.contains("loaded into postgres table")).count(), 2, "stdout:\n{stdout}");
}

#[tokio::test]
async fn stack_gcs_publishes_finalize_events_to_the_events_topic() {
    // A subscription of our own on the shared topic; other tests' objects show up too.
    let topic = PubsubTopic::stack_events();
    let sub = topic.subscribe("stackev").await;
    let bucket = TempGcsBucket::new("stackev").await;
    let marker = "b1/tbl/2026-01-01T00-00-00Z/_SUCCESS";
    let part = "b1/tbl/2026-01-01T00-00-00Z/data/seg-00000-part-00000.json";
    put(&bucket.client, &bucket.name, part, b"{}\n".to_vec()).await;
    put(&bucket.client, &bucket.name, marker, b"{}".to_vec()).await;
    let mut ours: Vec<Value> = vec![];
    let deadline = Instant::now() + Duration::from_secs(30);
    while ours.len() < 2 && Instant::now() < deadline {
        for m in pull_and_ack(&sub, Duration::from_secs(5)).await {
            if m["attributes"]["bucketId"] == bucket.name.as_str() {
                ours.push(m);
            }
        }
    }
    assert_eq!(ours.len(), 2, "finalize notifications of gs://{}: {ours:?}", bucket.name);
    for m in &ours {
        assert_eq!(m["attributes"]["eventType"], "OBJECT_FINALIZE", "{m}");
        assert_eq!(m["attributes"]["payloadFormat"], "JSON_API_V1", "{m}");
    }
    let markers: Vec<String> = ours.iter().filter_map(crossdock_load::watch::marker_url).collect();
    assert_eq!(markers, vec![format!("gs://{}/{marker}", bucket.name)], "only the marker is one");
}

/// A marker being loaded is leased: renewed while its load runs, so nobody else on the
/// subscription gets it even though the work outlasts the lease three times; and handed
/// back at once on release, long before its lease would run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_marker_is_not_redelivered_and_a_released_one_is_at_once() {
    use crossdock_load::watch::Watcher;
    let topic = PubsubTopic::new("lease").await;
    let sub = topic.subscription_name("lease");
    let gcp = crossdock_gcp::Gcp::from_env();
    let watcher = Watcher::new(&gcp, &crossdock_tests::gcp_project(), &topic.name, &sub, true).await.expect("subscribes");
    topic.publish_finalize("b", "x/T/2026-11-23T00-00-00Z/_SUCCESS").await;
    let got = tokio::time::timeout(Duration::from_secs(30), watcher.next_work()).await.expect("delivered").expect("pull");
    assert_eq!(got.len(), 1, "{got:?}");
    let (ack, work) = got.into_iter().next().expect("one marker");
    let url = "gs://b/x/T/2026-11-23T00-00-00Z/_SUCCESS".to_string();
    assert_eq!(work, Work::Marker(url.clone()));

    // Another puller polls the subscription for three leases while the marker is held.
    let lease = Duration::from_secs(3);
    let stolen = watcher.hold(&ack, lease, poll_for(&sub, 3 * lease)).await;
    assert!(stolen.is_empty(), "redelivered while held: {stolen:?}");

    // A long lease, then released: the other puller gets it within seconds.
    watcher.hold(&ack, Duration::from_secs(120), async {}).await;
    watcher.release(std::slice::from_ref(&ack)).await.expect("release");
    let t0 = Instant::now();
    let again = poll_for(&sub, Duration::from_secs(20)).await;
    assert_eq!(again.iter().filter_map(|m| ObjectEvent::of(&m["message"])).map(|o| o.url()).collect::<Vec<_>>(), [url], "after release");
    eprintln!("released marker redelivered after {:.1} s", t0.elapsed().as_secs_f64());
}

/// A watcher that may not create subscriptions (subscriber permissions only) works on
/// one made beforehand, and names the missing one and the command that makes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_without_creation_uses_a_pre_created_subscription_and_names_a_missing_one() {
    use crossdock_load::watch::Watcher;
    let gcp = crossdock_gcp::Gcp::from_env();
    let project = crossdock_tests::gcp_project();
    let topic = PubsubTopic::new("precreated").await;
    let sub = topic.subscribe("precreated").await;
    let short = sub.rsplit('/').next().unwrap_or(&sub).to_string();
    let watcher = Watcher::new(&gcp, &project, &topic.name, &short, false).await.expect("opens the existing subscription");
    topic.publish_finalize("b", "p/T/2026-11-23T00-00-00Z/_SUCCESS").await;
    let got = tokio::time::timeout(Duration::from_secs(30), watcher.next_work()).await.expect("delivered").expect("pull");
    assert_eq!(got.iter().map(|(_, w)| w.clone()).collect::<Vec<_>>(), [Work::Marker("gs://b/p/T/2026-11-23T00-00-00Z/_SUCCESS".into())]);
    watcher.ack(&got[0].0).await.expect("ack");

    let missing = topic.subscription_name("missing");
    let e = Watcher::new(&gcp, &project, &topic.name, &missing, false).await.expect_err("not created");
    let text = e.to_string();
    assert!(text.contains(&format!("Pub/Sub subscription projects/{project}/subscriptions/{missing}")), "{text}");
    assert!(text.contains(&format!("gcloud pubsub subscriptions create {missing} --project {project} --topic {}", topic.name)), "{text}");
    assert!(subscription_topic(&missing).await.is_none(), "nothing created it");
}

/// Dynamic sharing of one table: three `load --watch --fan-out` workers on one
/// subscription; the marker becomes one work item per file. One worker is SIGKILLed
/// while it holds a file (its data downloads are held by a proxy) and is not restarted:
/// its item is redelivered after its lease and the other two finish the table — each
/// file loaded about once, the exact row count, one `_LOADED`, the index created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_spreads_a_table_over_workers_and_survives_a_killed_one() {
    fan_out_survives_a_killed_worker(TargetKind::Postgres).await;
}

/// The same on the Spanner emulator: concurrent table and index creation there, and
/// the finishing steps run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_into_spanner_survives_a_killed_worker() {
    fan_out_survives_a_killed_worker(TargetKind::Spanner).await;
}

async fn fan_out_survives_a_killed_worker(kind: TargetKind) {
    const FILES: usize = 40;
    let topic = PubsubTopic::new("fanout").await;
    let sub = topic.subscribe("fanout").await;
    let bucket = TempGcsBucket::new("fanout").await;
    let table = crossdock_tests::unique_ident("fan");
    let items = wide_items(FILES * 50, 3, false);
    let export = write_export(&bucket.client, &bucket.name, "b", schema(&table, false, true), items, FILES, Codec::Zstd).await;
    assert_eq!(export.marker.files.len(), FILES);
    let pg = TempPgSchema::new("fanout").await;
    let dir = work_dir("fanout");
    let mut pipeline = write_pipeline(&dir, "unused", &bucket.name, &pg.name, &[], "");
    let db = match kind {
        TargetKind::Spanner => {
            let db = TempSpannerDb::new("fanout").await;
            let text = pipeline_toml("spanner", "", &db.path, "").replacen("[relay]\n", &format!("[relay]\nbucket = \"{}\"\n", bucket.name), 1);
            pipeline = dir.join("spanner.toml");
            std::fs::write(&pipeline, text).expect("pipeline");
            Some(db)
        }
        _ => None,
    };
    let pipeline = pipeline.to_string_lossy().into_owned();
    let args: Vec<String> = [
        "load",
        "--watch",
        "--fan-out",
        "--pipeline",
        &pipeline,
        "--project",
        &crossdock_tests::gcp_project(),
        "--topic",
        &topic.name,
        "--subscription",
        &sub,
        "--no-create-subscription",
        "--lease-secs",
        "3",
        "--no-progress",
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Worker 0 reads GCS through a proxy that holds every data download: once it holds
    // one, it is known to be inside a work item.
    let proxy = crossdock_tests::proxy::FaultProxy::gcs().await;
    proxy.rule(0, crossdock_tests::proxy::Action::Hold, crossdock_tests::proxy::data_download);
    let mut doomed = Proc::spawn_with_env(&dir, "worker-0", &args, &[("STORAGE_EMULATOR_HOST", &proxy.url)]);
    doomed.wait_log("watching for _SUCCESS finalizes", Duration::from_secs(60)).await;
    topic.publish_finalize(&bucket.name, &export.export.marker_key()).await;
    assert!(proxy.wait_held(1, Duration::from_secs(90)).await, "worker 0 took a work item; log:\n{}", doomed.log_tail());
    // Worker 1 also serves /metrics: what it emits must all be described.
    let with_metrics: Vec<String> = args.iter().cloned().chain(["--metrics-addr".to_string(), "127.0.0.1:0".to_string()]).collect();
    let mut workers = vec![Proc::spawn(&dir, "worker-1", &with_metrics), Proc::spawn(&dir, "worker-2", &args)];
    doomed.signal("KILL");
    assert!(!doomed.wait(Duration::from_secs(10)).await.success());
    drop(proxy);

    let loaded = eventually(Duration::from_secs(180), || async { loaded_record(&bucket.client, &bucket.name, &export).await.is_some() }).await;
    let logs = |ws: &[Proc]| ws.iter().map(|w| w.log_tail()).collect::<Vec<_>>().join("\n---\n");
    assert!(loaded, "the table was finished; logs:\n{}", logs(&workers));
    let rec = loaded_record(&bucket.client, &bucket.name, &export).await.expect("_LOADED");
    assert_eq!((rec.items_expected, rec.rows_in_target), ((FILES * 50) as u64, (FILES * 50) as u64));
    let model = TableModel::infer(kind, &export.marker.schema, &export.marker.type_stats, None).expect("model");
    let target: AnyTarget = match &db {
        Some(db) => AnyTarget::Spanner(crossdock_tests::load::spanner(db).await),
        None => AnyTarget::Postgres(crossdock_tests::load::postgres(&pg).await),
    };
    assert_eq!(target.count_rows(&model).await.expect("count"), (FILES * 50) as u64);
    let addr = logged(&workers[0], "serving /metrics and /healthz", "addr").pop().expect("metrics address logged");
    let scrape = reqwest::get(format!("http://{addr}/metrics")).await.expect("scrape").text().await.expect("body");
    assert_eq!(reqwest::get(format!("http://{addr}/healthz")).await.expect("healthz").status(), 200);
    let described: Vec<&str> = crossdock_load::events::METRICS.iter().chain(crossdock_core::retry::METRICS).map(|(n, _)| *n).collect();
    let emitted: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("crossdock_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| n.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count"))
        .collect();
    let undescribed: Vec<&&str> = emitted.iter().filter(|n| !described.contains(n)).collect();
    assert!(undescribed.is_empty(), "emitted but not in crossdock_load::events::METRICS or crossdock_core::retry::METRICS: {undescribed:?}");
    for name in [
        "crossdock_load_files_total",
        "crossdock_load_rows_total",
        "crossdock_load_batches_total",
        "crossdock_load_batch_seconds",
        "crossdock_load_watch_lease_renewals_total",
    ] {
        assert!(emitted.contains(name), "{name} not emitted:\n{scrape}");
    }
    assert!(scrape.contains("crossdock_load_batch_seconds_bucket{"), "batch time is a histogram with buckets");
    for w in &workers {
        w.signal("TERM");
    }
    for w in &mut workers {
        assert!(w.wait(Duration::from_secs(60)).await.success(), "{} exits 0 on SIGTERM:\n{}", w.name, w.log_tail());
    }
    // Both survivors took files; together they wrote each file about once (the killed
    // worker's file at most twice), and one of them finished the table.
    let loads: Vec<usize> = workers.iter().map(|w| logged(w, "load file loaded", "file").len()).collect();
    assert!(loads.iter().all(|&n| n > 0), "both workers loaded files: {loads:?}");
    assert!((FILES..=FILES + 2).contains(&loads.iter().sum::<usize>()), "files loaded {loads:?} for {FILES} files");
    let finished: usize = workers.iter().map(|w| logged(w, "load finished", "export").len()).sum();
    assert_eq!(finished, 1, "one worker finished the table; logs:\n{}", logs(&workers));
    assert_eq!(model.indexes.len(), 1, "the table has one GSI");
    assert_eq!(
        target.list_indexes(&model).await.expect("indexes"),
        model.indexes.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        "the GSI's index, created once"
    );
    let objects = list(&bucket.client, &bucket.name, &export.export.dir()).await;
    assert_eq!(objects.iter().filter(|k| k.ends_with("/_LOADED")).count(), 1);
}
