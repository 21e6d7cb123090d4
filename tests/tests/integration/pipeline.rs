//! The whole flow of `scripts/demo` with the real binary, on unique resources, with
//! faults injected into every phase: the exporter SIGTERMed mid-scan and resumed, a
//! relay SIGKILLed mid-copy and replaced, a load SIGKILLed mid-run and rerun. Each
//! fault lands at a point a proxy holds the process at, never after a guessed delay.
//! The end state must still match DynamoDB item for item.

use crossdock_core::layout::ExportId;
use crossdock_tests::pipeline::*;
use crossdock_tests::proxy::{checkpoint_put, data_download, gcs_upload, Action, FaultProxy};
use crossdock_tests::relay::{eventually, get, list_names, Wired};
use crossdock_tests::resources::{TempBigtable, TempPgSchema, TempTable};
use std::time::Duration;

const ITEMS: u64 = 6_000;
const BATCH: &str = "faults";

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn export_args(table: &str, bucket: &str, extra: &[&str]) -> Vec<String> {
    let mut a = s(&["export", "--no-autoscaling", "--table", table, "--bucket", bucket, "--batch", BATCH]);
    a.extend(s(&["--segments", "2", "--part-size", "64K", "--output", "json", "--no-progress"]));
    a.extend(s(extra));
    a
}

/// `crossdock status --table T --output json`: the table's row (the first JSON line;
/// the totals follow).
async fn status(dir: &std::path::Path, pipeline: &str, table: &str) -> serde_json::Value {
    let name = crossdock_tests::unique("status");
    let mut p = Proc::spawn(dir, &name, &s(&["status", "--pipeline", pipeline, "--table", table, "--output", "json", "-v"]));
    let st = p.wait(Duration::from_secs(60)).await;
    assert!(st.success(), "status: {}", p.log_tail());
    let out = std::fs::read_to_string(&p.stdout).unwrap_or_default();
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    assert_eq!(lines.len(), 2, "a row and the totals: {out}");
    assert!(p.log_text().contains("request(s) for 1 table(s)"), "-v counts requests: {}", p.log_tail());
    lines[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_injected_end_to_end_still_match_item_for_item() {
    let dir = work_dir("pipefaults");
    let ddb = crossdock_tests::dynamodb().await;
    let gcs = crossdock_tests::gcs().await;

    // Source tables: one with a GSI (→ PostgreSQL), one without (→ Bigtable), every type.
    let orders = TempTable::name("pipeorders");
    let events = TempTable::name("pipeevents");
    let _bt = TempBigtable { name: events.name.clone() }; // the loader creates it; dropped after
    create_table(&ddb, &orders.name, true, true, 5).await;
    create_table(&ddb, &events.name, false, false, 5).await;
    let (a, b) = (ddb.clone(), ddb.clone());
    let (on, en) = (orders.name.clone(), events.name.clone());
    tokio::join!(crossdock_tests::export::fill(&a, &on, ITEMS, 300, 8), crossdock_tests::export::fill(&b, &en, ITEMS, 300, 8),);

    // S3 bucket → SQS (real notification), GCS bucket, PG schema, pipeline file.
    let w = Wired::new("pipefaults", 10, None).await;
    let pg = TempPgSchema::new("pipefaults").await;
    let extra = "[batch]\nrows = 20\nmax_rows = 20\nwriters = 1\nadaptive = false";
    let pipeline = write_pipeline(&dir, &w.src.name, &w.gcs.name, &pg.name, &[&orders.name, &events.name], extra);
    let pipeline = pipeline.to_string_lossy().into_owned();
    let valid = run(&dir, "validate", &s(&["pipeline", "validate", &pipeline]), Duration::from_secs(30)).await;
    assert_eq!(valid.0, Some(0), "pipeline validates: {}", valid.2);

    // Fault 2 is prepared first: relay-0 runs alone, its GCS traffic through a proxy that
    // holds every upload, so it is known to be mid-copy when it is SIGKILLed.
    let relay_args = w.cli_args();
    let gcs_proxy = FaultProxy::gcs().await;
    gcs_proxy.rule(0, Action::Hold, gcs_upload);
    let mut relays = vec![Proc::spawn_with_env(&dir, "relay-0", &relay_args, &[("STORAGE_EMULATOR_HOST", &gcs_proxy.url)])];

    // Fault 1: the exporter of `orders` is SIGTERMed mid-scan: its second checkpoint
    // write is held, so one part is durable and the scan is not finished.
    let s3_proxy = FaultProxy::s3().await;
    s3_proxy.rule(1, Action::Hold, checkpoint_put);
    let mut exp = Proc::spawn_with_env(
        &dir,
        "export-orders-1",
        &export_args(&orders.name, &w.src.name, &["--raise-to", "40", "--read-ratio", "1"]),
        &[("AWS_ENDPOINT_URL_S3", &s3_proxy.url)],
    );
    let mid = s3_proxy.wait_held(1, Duration::from_secs(120)).await;
    assert!(mid && exp.exited().is_none(), "the export blocked in its second checkpoint; log:\n{}", exp.log_tail());
    exp.signal("TERM");
    exp.wait_log("shutdown requested", Duration::from_secs(60)).await;
    s3_proxy.release();
    let st = exp.wait(Duration::from_secs(60)).await;
    assert_eq!(st.code(), Some(5), "SIGTERM → partial exit; log:\n{}", exp.log_tail());
    let first = exp.json();
    assert_eq!(first["interrupted"], true, "{first}");
    assert!(first["items"].as_u64().is_some_and(|n| n < ITEMS), "stopped mid-scan: {first}");
    // Stopped after part of the export: status shows it running, nothing relayed to the end.
    let row = status(&dir, &pipeline, &orders.name).await;
    assert_eq!(row["export"]["state"], "running", "{row}");
    assert!(row["export"]["segments_done"].as_u64() < row["export"]["segments_total"].as_u64(), "{row}");
    assert_eq!((row["success"].as_bool(), row["loaded"].as_bool()), (Some(false), Some(false)), "{row}");

    // Fault 2: relay-0 is SIGKILLed inside an upload, then replaced; a second relay joins.
    let copying = gcs_proxy.wait_held(1, Duration::from_secs(120)).await;
    assert!(copying, "relay-0 started copying; log:\n{}", relays[0].log_tail());
    relays[0].signal("KILL");
    let killed = relays[0].wait(Duration::from_secs(10)).await;
    assert!(!killed.success(), "SIGKILLed: {killed:?}");
    drop(gcs_proxy);
    relays[0] = Proc::spawn(&dir, "relay-0b", &relay_args);
    relays.push(Proc::spawn(&dir, "relay-1", &relay_args));
    let mut exp_events = Proc::spawn(&dir, "export-events", &export_args(&events.name, &w.src.name, &["--raise-to", "200", "--read-ratio", "1"]));

    // The `orders` export resumed: same batch, same timestamp.
    let ts = first["export"]["timestamp"].as_str().expect("timestamp").to_string();
    let (code, resumed, log) = run(
        &dir,
        "export-orders-2",
        &export_args(&orders.name, &w.src.name, &["--resume", "--timestamp", &ts, "--raise-to", "400", "--read-ratio", "1"]),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(code, Some(0), "resumed export: {log}");
    assert_eq!(resumed["complete"], true, "{resumed}");
    assert_eq!(resumed["items"], ITEMS, "{resumed}");
    let st = exp_events.wait(Duration::from_secs(120)).await;
    assert!(st.success(), "events export; log:\n{}", exp_events.log_tail());
    let events_summary = exp_events.json();
    assert_eq!(events_summary["items"], ITEMS);

    let orders_id: ExportId = serde_json::from_value(resumed["export"].clone()).expect("export id");
    let events_id: ExportId = serde_json::from_value(events_summary["export"].clone()).expect("export id");
    assert_eq!(orders_id.timestamp.to_string(), ts, "resumed into the same export");

    // Both markers appear; then the fleet is stopped.
    let marked = eventually(Duration::from_secs(180), || async {
        get(&gcs, &w.gcs.name, &orders_id.marker_key()).await.is_some() && get(&gcs, &w.gcs.name, &events_id.marker_key()).await.is_some()
    })
    .await;
    let relay_logs = || relays.iter().map(|r| r.log_tail()).collect::<Vec<_>>().join("\n---\n");
    assert!(marked, "both tables got a _SUCCESS; relay logs:\n{}", relay_logs());
    for r in &relays {
        r.signal("TERM");
    }
    for r in &mut relays {
        let st = r.wait(Duration::from_secs(120)).await;
        assert!(st.success(), "{} exits 0 after SIGTERM: {st:?}\n{}", r.name, r.log_tail());
    }

    // Exactly one `_SUCCESS` per table, written once across every relay process.
    let names = list_names(&gcs, &w.gcs.name).await;
    for id in [&orders_id, &events_id] {
        let markers: Vec<&String> = names.iter().filter(|n| n.starts_with(&format!("{BATCH}/{}/", id.table)) && n.ends_with("_SUCCESS")).collect();
        assert_eq!(markers, vec![&id.marker_key()], "one marker for {}", id.table);
    }
    let written: usize = ["relay-0", "relay-1", "relay-0b"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default().lines().filter(|l| l.contains("_SUCCESS written")).count())
        .sum();
    assert_eq!(written, 2, "one _SUCCESS write per table across the fleet; logs in {}", dir.display());
    for id in [&orders_id, &events_id] {
        let m: crossdock_core::marker::SuccessMarker = serde_json::from_slice(&get_bytes(&gcs, &w.gcs.name, &id.marker_key()).await).expect("marker parses");
        assert_eq!(m.totals.items, ITEMS, "{}", id.table);
        assert!(m.totals.files >= 8, "many small parts for {}: {:?}", id.table, m.totals);
    }

    // Relayed, not loaded: every file copied, `_SUCCESS` there, the load pending.
    for id in [&orders_id, &events_id] {
        let row = status(&dir, &pipeline, &id.table).await;
        assert_eq!(
            (row["export"]["state"].as_str(), row["relay"]["state"].as_str(), row["success"].as_bool()),
            (Some("done"), Some("done"), Some(true)),
            "{row}"
        );
        assert_eq!(row["relay"]["files_copied"], row["relay"]["files_total"], "{row}");
        assert_eq!(
            (row["load"]["state"].as_str(), row["load"]["rows_total"].as_u64(), row["loaded"].as_bool()),
            (Some("pending"), Some(ITEMS), Some(false)),
            "{row}"
        );
    }

    // Fault 3: the `orders` load is SIGKILLed once some files are done and the rest
    // cannot be: its downloads after the second data file are held. Then it is rerun.
    let marker = |id: &ExportId| format!("gs://{}/{}", w.gcs.name, id.marker_key());
    let load_args = |id: &ExportId| s(&["load", "--output", "json", "--marker", &marker(id), "--pipeline", &pipeline]);
    let load_proxy = FaultProxy::gcs().await;
    load_proxy.rule(2, Action::Hold, data_download);
    let mut load = Proc::spawn_with_env(&dir, "load-orders-1", &load_args(&orders_id), &[("STORAGE_EMULATOR_HOST", &load_proxy.url)]);
    let progress = format!("{}_progress/", orders_id.dir());
    let held = load_proxy.wait_held(1, Duration::from_secs(120)).await;
    let started = eventually(Duration::from_secs(120), || async { !crossdock_tests::load::list(&gcs, &w.gcs.name, &progress).await.is_empty() }).await;
    assert!(held && started && load.exited().is_none(), "the load was mid-run; log:\n{}", load.log_tail());
    load.signal("KILL");
    assert!(!load.wait(Duration::from_secs(10)).await.success());
    drop(load_proxy);
    let (code, rerun, log) = run(&dir, "load-orders-2", &load_args(&orders_id), Duration::from_secs(180)).await;
    assert_eq!(code, Some(0), "load rerun: {log}");
    assert_eq!(rerun["rows_in_target"], ITEMS, "{rerun}");
    let (skipped, loaded) = (rerun["files_skipped"].as_u64().unwrap_or(0), rerun["files_loaded"].as_u64().unwrap_or(0));
    assert!((1..=2).contains(&skipped), "the files finished before the kill (at most 2) are skipped: {rerun}");
    assert_eq!(skipped + loaded, rerun["files_total"].as_u64().unwrap_or(0), "every other file is loaded: {rerun}");
    let (code, loaded, log) = run(&dir, "load-events", &load_args(&events_id), Duration::from_secs(180)).await;
    assert_eq!(code, Some(0), "events load: {log}");
    assert_eq!(loaded["rows_in_target"], ITEMS, "{loaded}");
    assert_eq!(loaded["target"], "bigtable", "{loaded}");
    assert_eq!(rerun["target"], "postgres", "{rerun}");

    // Loaded: `_LOADED` with the rows counted in the target.
    for id in [&orders_id, &events_id] {
        let row = status(&dir, &pipeline, &id.table).await;
        assert_eq!((row["load"]["state"].as_str(), row["load"]["rows"].as_u64(), row["loaded"].as_bool()), (Some("done"), Some(ITEMS), Some(true)), "{row}");
    }

    // `crossdock verify`: every row and attribute against the marker's files.
    for id in [&orders_id, &events_id] {
        let (code, report, log) = run(
            &dir,
            &format!("verify-{}", id.table),
            &s(&["verify", "--output", "json", "--marker", &marker(id), "--pipeline", &pipeline]),
            Duration::from_secs(180),
        )
        .await;
        assert_eq!(code, Some(0), "verify {}: {report}\n{log}", id.table);
        assert_eq!((report["missing"].as_u64(), report["extra"].as_u64(), report["different"].as_u64()), (Some(0), Some(0), Some(0)), "{report}");
        assert_eq!(report["matching"], ITEMS, "{report}");
    }

    // Independently: DynamoDB's Scan against what landed, row count and keys.
    let scan_orders = scan_keys_with_sort(&ddb, &orders.name).await;
    let scan_events = scan_keys(&ddb, &events.name).await;
    assert_eq!((scan_orders.len() as u64, scan_events.len() as u64), (ITEMS, ITEMS));
    let pgc = crossdock_tests::postgres().await;
    let tables = pg_tables(&pgc, &pg.name).await;
    assert_eq!(tables.len(), 1, "one PostgreSQL table, for the GSI table: {tables:?}");
    let (count, keys) = pg_keys(&pgc, &pg.name, &tables[0]).await;
    assert_eq!(count as u64, ITEMS, "PostgreSQL row count");
    assert!(keys == scan_orders, "PostgreSQL keys equal the Scan's ({} vs {})", keys.len(), scan_orders.len());
    let bt_keys = bigtable_row_keys(&events.name).await;
    assert_eq!(bt_keys.len() as u64, ITEMS, "Bigtable row count");
    assert!(bt_keys == scan_events, "Bigtable row keys equal the Scan's keys");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn get_bytes(gcs: &gcloud_storage::client::Client, bucket: &str, name: &str) -> Vec<u8> {
    crossdock_tests::relay::download(gcs, bucket, name).await.unwrap_or_else(|| panic!("gs://{bucket}/{name} missing"))
}
