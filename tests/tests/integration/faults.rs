//! The network as real services present it: a share of requests answered 503, others
//! cut by a connection reset before or after the server acted on them. A proxy the
//! test controls sits between crossdock and moto (S3, SQS) or fake-gcs-server and
//! deals the faults by count (every n-th request), so a run meets the same share on a
//! fast machine and a loaded one. Nothing may be lost or duplicated, and a failed
//! upload chunk is resumed where GCS stopped, not copied again.

use crossdock_core::layout::ExportId;
use crossdock_core::Codec;
use crossdock_tests::pipeline::*;
use crossdock_tests::proxy::{any, upload_chunk, Action, FaultProxy};
use crossdock_tests::relay::{eventually, get, list_names, FakeExport, RelayProcess, Wired};
use crossdock_tests::resources::{TempBigtable, TempPgSchema, TempTable};
use crossdock_tests::tcp::TcpCutter;
use std::time::Duration;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The `host:port` of a PostgreSQL URL, for a TCP proxy to stand in for.
fn pg_server(url: &str) -> String {
    url.split('@').nth(1).and_then(|r| r.split('/').next()).expect("host:port in the stack's PostgreSQL URL").to_string()
}

fn tmp_log(name: &str) -> std::path::PathBuf {
    crossdock_tests::tmp_log("crossdock-fault-tests", name)
}

/// The AWS SDK retries S3 and SQS calls itself: each such retry is counted in
/// `crossdock_retries_total` as crossdock's own are (two S3 reads refused once each:
/// two recovered, two retried).
#[tokio::test]
async fn retries_the_aws_sdk_makes_are_counted_by_service_operation_and_outcome() {
    let w = Wired::new("faultawscount", 30, None).await;
    let e = FakeExport::new("awscount", "Counted", 1, 2, 100);
    let aws = FaultProxy::start(&crossdock_tests::stack_var("AWS_ENDPOINT_URL")).await;
    // Each part's first read is refused once (one rule per part: with one rule for both,
    // a part's retry could meet the second refusal before the other part is read).
    for part in ["/data/seg-00000-part-00000.", "/data/seg-00000-part-00001."] {
        aws.rule_n(0, 1, Action::Status(503), move |m, p| m == "GET" && p.contains(part));
    }
    let port = crossdock_tests::relay::free_port();
    let mut args: Vec<String> = w.cli_args().into_iter().filter(|a| a != "off").collect();
    let pos = args.iter().position(|a| a == "--metrics-addr").expect("flag");
    args.insert(pos + 1, format!("127.0.0.1:{port}"));
    let mut relay = RelayProcess::spawn_with_env(&args, &tmp_log("awscount"), &[("AWS_ENDPOINT_URL_S3", aws.url.as_str())]);
    e.put_all(&w.src.client, &w.src.name, "").await;
    let gcs = crossdock_tests::gcs().await;
    assert!(eventually(Duration::from_secs(60), || async { get(&gcs, &w.gcs.name, &e.export.marker_key()).await.is_some() }).await, "{}", relay.log_text());
    assert_eq!(aws.faulted(), 2, "both data reads were refused once");
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.expect("metrics").text().await.expect("text");
    let count = |outcome: &str| -> f64 {
        body.lines()
            .filter(|l| {
                l.starts_with("crossdock_retries_total{")
                    && l.contains("service=\"s3\"")
                    && l.contains("op=\"GetObject\"")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!((count("retried"), count("recovered"), count("gave_up")), (2.0, 2.0, 0.0), "{body}");
    relay.signal("TERM");
    assert!(relay.wait(Duration::from_secs(30)).await.expect("exits").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_chunk_is_resumed_at_the_committed_offset_not_recopied() {
    let w = Wired::new("faultresume", 30, None).await;
    let e = FakeExport::new("resume", "Resumed", 1, 3, 30_000); // ~2 MiB parts: 8 chunks each
    let mut args = w.cli_args();
    args.extend(s(&["--codec", "none", "--chunk-mib", "0.25", "--until-idle", "5"]));
    // Of each part's upload requests, every 3rd reply is lost after GCS took the bytes
    // and every 4th is refused with a 503 before it reaches GCS. Counted per part: the
    // parts upload concurrently, and with one count for all, how the requests
    // interleaved decided which chunk met the faults (once, one chunk met five in a row
    // and its copy started over).
    let proxy = FaultProxy::gcs().await;
    for part in 0..e.parts_per_segment {
        let name = format!("part-{part:05}.");
        let (lose, refuse) = (name.clone(), name);
        proxy.every(3, Action::Lose, move |m, p| upload_chunk(m, p) && p.contains(&lose));
        proxy.every(4, Action::Status(503), move |m, p| upload_chunk(m, p) && p.contains(&refuse));
    }
    let log = tmp_log("resume");
    let mut relay = RelayProcess::spawn_with_env(&args, &log, &[("STORAGE_EMULATOR_HOST", &proxy.url)]);
    e.put_all(&w.src.client, &w.src.name, "").await;
    let status = relay.wait(Duration::from_secs(180)).await.expect("the relay goes idle and exits");
    assert!(status.success(), "{status:?}; log {}", log.display());

    let gcs = crossdock_tests::gcs().await;
    e.verify_in_gcs(&gcs, &w.gcs.name, Codec::None).await;
    let text = relay.log_text();
    let lines = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert!(proxy.faulted() >= 6, "faults were dealt: {}", proxy.faulted());
    assert!(lines("resuming at the committed offset") >= 6, "chunks were resumed: {text}");
    assert_eq!(lines("copy failed"), 0, "no copy failed and started over: {text}");
    assert_eq!(lines("object copied"), e.file_count(), "each file copied once: {text}");
    // What reached GCS against what it stores: a recopied part would send it twice.
    let mut stored = 0u64;
    for name in list_names(&gcs, &w.gcs.name).await {
        stored += get(&gcs, &w.gcs.name, &name).await.map_or(0, |o| o.size as u64);
    }
    let sent = proxy.uploaded_bytes();
    assert!(sent as f64 <= 1.05 * stored as f64, "bytes uploaded {sent} ≤ 1.05 × bytes stored {stored}");
}

const ITEMS: u64 = 3_000;
const BATCH: &str = "noisy";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_network_loses_and_duplicates_nothing_from_export_to_verify() {
    let dir = work_dir("noisy");
    let ddb = crossdock_tests::dynamodb().await;
    let gcs = crossdock_tests::gcs().await;
    let orders = TempTable::name("noisyorders");
    let events = TempTable::name("noisyevents");
    let _bt = TempBigtable { name: events.name.clone() };
    create_table(&ddb, &orders.name, true, true, 5).await;
    create_table(&ddb, &events.name, false, false, 5).await;
    let (a, b) = (ddb.clone(), ddb.clone());
    let (on, en) = (orders.name.clone(), events.name.clone());
    tokio::join!(crossdock_tests::export::fill(&a, &on, ITEMS, 300, 8), crossdock_tests::export::fill(&b, &en, ITEMS, 300, 8));

    let w = Wired::new("noisy", 10, None).await;
    let pg = TempPgSchema::new("noisy").await;
    let pipeline = write_pipeline(&dir, &w.src.name, &w.gcs.name, &pg.name, &[&orders.name, &events.name], "");
    let pipeline = pipeline.to_string_lossy().into_owned();

    // S3 and SQS (moto): 5% answered 503, one in 40 reset before it arrives. GCS: 5%
    // 503, one in 40 reset before and one in 30 after the server acted (a lost reply).
    let aws = FaultProxy::start(&crossdock_tests::stack_var("AWS_ENDPOINT_URL")).await;
    aws.every(20, Action::Status(503), any);
    aws.every(40, Action::Reset, any);
    let gcs_proxy = FaultProxy::gcs().await;
    gcs_proxy.every(20, Action::Status(503), any);
    gcs_proxy.every(40, Action::Reset, any);
    gcs_proxy.every(30, Action::Lose, any);
    let aws_env = [("AWS_ENDPOINT_URL_S3", aws.url.as_str()), ("AWS_ENDPOINT_URL_SQS", aws.url.as_str())];
    let all_env = [aws_env[0], aws_env[1], ("STORAGE_EMULATOR_HOST", gcs_proxy.url.as_str())];

    let mut relay_args = w.cli_args();
    relay_args.extend(s(&["--concurrency", "8"]));
    let mut relay = Proc::spawn_with_env(&dir, "relay", &relay_args, &all_env);

    let mut ids = Vec::new();
    for t in [&orders.name, &events.name] {
        let args = s(&[
            "export",
            "--no-autoscaling",
            "--table",
            t,
            "--bucket",
            &w.src.name,
            "--batch",
            BATCH,
            // Many small segments: one data part each, so ≥ 200 files to relay.
            "--segments",
            "110",
            "--raise-to",
            "400",
            "--read-ratio",
            "1",
            "--output",
            "json",
            "--no-progress",
        ]);
        let mut exp = Proc::spawn_with_env(&dir, &format!("export-{t}"), &args, &aws_env);
        let st = exp.wait(Duration::from_secs(300)).await;
        assert!(st.success(), "export {t}: {st:?}\n{}", exp.log_tail());
        let summary = exp.json();
        assert_eq!(summary["items"], ITEMS, "{summary}");
        ids.push(serde_json::from_value::<ExportId>(summary["export"].clone()).expect("export id"));
    }

    let marked = eventually(Duration::from_secs(400), || async {
        let mut all = true;
        for id in &ids {
            all &= get(&gcs, &w.gcs.name, &id.marker_key()).await.is_some();
        }
        all
    })
    .await;
    assert!(marked, "both tables got a _SUCCESS; relay log:\n{}", relay.log_tail());
    relay.signal("TERM");
    let st = relay.wait(Duration::from_secs(120)).await;
    assert!(st.success(), "relay exits 0 after SIGTERM: {st:?}\n{}", relay.log_tail());
    assert!(aws.faulted() >= 20, "S3/SQS faults were dealt: {}", aws.faulted());
    let relay_log = relay.log_text();
    assert_eq!(relay_log.lines().filter(|l| l.contains("_SUCCESS written")).count(), 2, "one marker write per table");
    let mut files = 0;
    for id in &ids {
        let m: crossdock_core::marker::SuccessMarker =
            serde_json::from_slice(&crossdock_tests::relay::download(&gcs, &w.gcs.name, &id.marker_key()).await.expect("marker")).expect("marker parses");
        assert_eq!(m.totals.items, ITEMS, "{}", id.table);
        files += m.totals.files;
    }
    assert!(files >= 200, "a relay of at least 200 files: {files}");

    // Loads into PostgreSQL (the GSI table) and Bigtable, then the GSI table once more
    // into Spanner; then verify. All read GCS through the same faults, and reach their
    // target through a TCP proxy that resets each connection after 256 KiB.
    let pg_url = crossdock_tests::stack_var("CROSSDOCK_PG_URL");
    let pg_server = pg_server(&pg_url);
    let pg_cut = TcpCutter::start(&pg_server, 256 << 10, 0).await;
    let bt_cut = TcpCutter::start(&crossdock_tests::stack_var("BIGTABLE_EMULATOR_HOST"), 256 << 10, 0).await;
    let sp_cut = TcpCutter::start(&crossdock_tests::stack_var("SPANNER_EMULATOR_HOST"), 256 << 10, 0).await;
    let pg_cut_url = pg_url.replace(&pg_server, &pg_cut.addr);
    let mut cut_env = all_env.to_vec();
    cut_env.extend([
        ("CROSSDOCK_PG_URL", pg_cut_url.as_str()),
        ("BIGTABLE_EMULATOR_HOST", bt_cut.addr.as_str()),
        ("SPANNER_EMULATOR_HOST", sp_cut.addr.as_str()),
    ]);
    let db = crossdock_tests::resources::TempSpannerDb::new("noisy").await;
    let spanner_pipeline = dir.join("spanner.toml");
    let relational = format!("kind = \"postgres\"\nurl = \"${{CROSSDOCK_PG_URL}}\"\nschema = \"{}\"", pg.name);
    let text = std::fs::read_to_string(&pipeline).expect("pipeline");
    assert!(text.contains(&relational), "{text}");
    std::fs::write(&spanner_pipeline, text.replace(&relational, &format!("kind = \"spanner\"\ndatabase = \"{}\"", db.path))).expect("pipeline");
    let spanner_pipeline = spanner_pipeline.to_string_lossy().into_owned();
    let marker = |id: &ExportId| format!("gs://{}/{}", w.gcs.name, id.marker_key());
    for (id, pipeline, name) in [(&ids[0], &pipeline, "postgres"), (&ids[1], &pipeline, "bigtable"), (&ids[0], &spanner_pipeline, "spanner")] {
        let args = s(&["load", "--output", "json", "--marker", &marker(id), "--pipeline", pipeline]);
        let mut load = Proc::spawn_with_env(&dir, &format!("load-{name}"), &args, &cut_env);
        let st = load.wait(Duration::from_secs(300)).await;
        assert!(st.success(), "load {name}: {st:?}\n{}", load.log_tail());
        let summary = load.json();
        assert_eq!((summary["target"].as_str(), &summary["rows_in_target"]), (Some(name), &ITEMS.into()), "{summary}");
        let args = s(&["verify", "--output", "json", "--marker", &marker(id), "--pipeline", pipeline]);
        let mut verify = Proc::spawn_with_env(&dir, &format!("verify-{name}"), &args, &all_env);
        let st = verify.wait(Duration::from_secs(300)).await;
        let report = verify.json();
        assert!(st.success(), "verify {}: {report}\n{}", id.table, verify.log_tail());
        assert_eq!((report["missing"].as_u64(), report["extra"].as_u64(), report["different"].as_u64()), (Some(0), Some(0), Some(0)), "{report}");
        assert_eq!(report["matching"], ITEMS, "{report}");
    }
    assert!(gcs_proxy.faulted() >= 50, "GCS faults were dealt: {}", gcs_proxy.faulted());
    for (name, cut) in [("postgres", &pg_cut), ("bigtable", &bt_cut), ("spanner", &sp_cut)] {
        assert!(cut.cuts() >= 1, "{name} connections were reset mid-load: {}", cut.cuts());
    }
    let names = list_names(&gcs, &w.gcs.name).await;
    for id in &ids {
        let loaded = names.iter().filter(|n| n.starts_with(&id.dir()) && n.ends_with("_LOADED")).count();
        assert_eq!(loaded, 1, "one _LOADED for {}", id.table);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// PostgreSQL connections reset mid-load (every connection past its first 256 KiB, at
/// the TCP level, before or during a batch's transaction): each failed batch is written
/// again on a new connection, and the table ends with exactly its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_postgres_connections_are_reset_ends_with_exactly_its_rows() {
    use crossdock_tests::load::{pipeline_toml, schema, wide_items, write_export};
    const ROWS: usize = 20_000;
    let bucket = crossdock_tests::resources::TempGcsBucket::new("pgreset").await;
    let table = crossdock_tests::unique_ident("pgr");
    let export = write_export(&bucket.client, &bucket.name, "b", schema(&table, false, true), wide_items(ROWS, 4, false), 8, Codec::Zstd).await;
    let pg = TempPgSchema::new("pgreset").await;
    let server = pg_server(&crossdock_tests::stack_var("CROSSDOCK_PG_URL"));
    let cutter = crossdock_tests::tcp::TcpCutter::start(&server, 256 << 10, 0).await;
    let dir = work_dir("pgreset");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml("postgres", &pg.name, "", "").replace(&server, &cutter.addr)).expect("pipeline");
    let args = s(&["load", "--output", "json", "--no-progress", "--marker", &export.marker_url, "--pipeline", &pipeline.to_string_lossy()]);
    let mut load = Proc::spawn(&dir, "load", &args);
    let st = load.wait(Duration::from_secs(300)).await;
    assert!(st.success(), "{st:?}\n{}", load.log_tail());
    let summary = load.json();
    assert!(cutter.cuts() >= 3, "connections were reset mid-load: {}", cutter.cuts());
    assert!(summary["retries"].as_u64().unwrap_or(0) >= 1, "failed batches were written again: {summary}");
    assert_eq!(summary["rows_in_target"], ROWS as u64, "{summary}");
    let rows: i64 = crossdock_tests::postgres().await.query_one(&format!("SELECT count(*) FROM \"{}\".\"{table}\"", pg.name), &[]).await.expect("count").get(0);
    assert_eq!(rows, ROWS as i64);
}

/// A PostgreSQL connection that goes silent mid-batch (no reset, no byte either way) is
/// abandoned after the pipeline's `write_timeout_secs` and the batch is written again on
/// a new connection; the table ends with exactly its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_postgres_connection_stalls_abandons_it_and_ends_with_exactly_its_rows() {
    use crossdock_tests::load::{pipeline_toml, schema, wide_items, write_export};
    const ROWS: usize = 6_000;
    let bucket = crossdock_tests::resources::TempGcsBucket::new("pgstall").await;
    let table = crossdock_tests::unique_ident("pgs");
    let export = write_export(&bucket.client, &bucket.name, "b", schema(&table, false, true), wide_items(ROWS, 4, false), 4, Codec::Zstd).await;
    let pg = TempPgSchema::new("pgstall").await;
    let server = pg_server(&crossdock_tests::stack_var("CROSSDOCK_PG_URL"));
    // One writer, so one connection carries the table's set-up and then its batches:
    // it stalls mid-COPY once it has carried 128 KiB, and only it.
    let cutter = crossdock_tests::tcp::TcpCutter::stalling(&server, 128 << 10, 1).await;
    let dir = work_dir("pgstall");
    let pipeline = dir.join("pipeline.toml");
    let extra = "[batch]\nwrite_timeout_secs = 2\nwriters = 1";
    std::fs::write(&pipeline, pipeline_toml("postgres", &pg.name, "", extra).replace(&server, &cutter.addr)).expect("pipeline");
    let args = s(&["load", "--output", "json", "--no-progress", "--marker", &export.marker_url, "--pipeline", &pipeline.to_string_lossy()]);
    let mut load = Proc::spawn(&dir, "load", &args);
    let st = load.wait(Duration::from_secs(300)).await;
    assert!(st.success(), "{st:?}\n{}", load.log_tail());
    let summary = load.json();
    assert_eq!(cutter.cuts(), 1, "a connection stalled mid-load");
    assert!(load.log_text().contains("no answer within 2s"), "the stalled write was abandoned at its timeout:\n{}", load.log_tail());
    assert!(summary["retries"].as_u64().unwrap_or(0) >= 1, "the abandoned batch was written again: {summary}");
    assert_eq!(summary["rows_in_target"], ROWS as u64, "{summary}");
    let rows: i64 = crossdock_tests::postgres().await.query_one(&format!("SELECT count(*) FROM \"{}\".\"{table}\"", pg.name), &[]).await.expect("count").get(0);
    assert_eq!(rows, ROWS as i64);
}

/// The gRPC targets' connections reset mid-load, the same way: the Spanner emulator
/// (sessions, commits) and the Bigtable emulator (table check, MutateRows) are reached
/// only through a [`TcpCutter`](crossdock_tests::tcp::TcpCutter) that resets each HTTP/2
/// connection after `cut_after` client bytes. The clients open new connections and the
/// failed writes are made again; the target's own count is exact.
async fn grpc_load_with_resets(kind: crossdock_load::schema::TargetKind, rows: usize, cut_after: usize) {
    use crossdock_load::schema::{TableModel, TargetKind};
    use crossdock_load::sink::{AnyTarget, Target};
    use crossdock_tests::load::{pipeline_toml, schema, wide_items, write_export};
    let name = if kind == TargetKind::Spanner { "spreset" } else { "btreset" };
    let bucket = crossdock_tests::resources::TempGcsBucket::new(name).await;
    let table = crossdock_tests::unique_ident(name);
    // Indexed tables go to the relational target, the others to Bigtable.
    let indexed = kind == TargetKind::Spanner;
    let export = write_export(&bucket.client, &bucket.name, "b", schema(&table, false, indexed), wide_items(rows, 3, false), 8, Codec::Zstd).await;
    let db = crossdock_tests::resources::TempSpannerDb::new(name).await;
    let var = if kind == TargetKind::Spanner { "SPANNER_EMULATOR_HOST" } else { "BIGTABLE_EMULATOR_HOST" };
    let cutter = crossdock_tests::tcp::TcpCutter::start(&crossdock_tests::stack_var(var), cut_after, 0).await;
    let dir = work_dir(name);
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml("spanner", "unused", &db.path, "")).expect("pipeline");
    let args = s(&["load", "--output", "json", "--no-progress", "--marker", &export.marker_url, "--pipeline", &pipeline.to_string_lossy()]);
    let mut load = Proc::spawn_with_env(&dir, "load", &args, &[(var, cutter.addr.as_str())]);
    let st = load.wait(Duration::from_secs(300)).await;
    assert!(st.success(), "{st:?}\n{}", load.log_tail());
    let summary = load.json();
    assert!(cutter.cuts() >= 2, "connections were reset mid-load: {}", cutter.cuts());
    assert!(summary["retries"].as_u64().unwrap_or(0) >= 1, "failed batches were written again: {summary}");
    assert_eq!(summary["rows_in_target"], rows as u64, "{summary}");
    // Counted on a connection of the test's own, not through the cutter.
    let model = TableModel::infer(kind, &export.marker.schema, &export.marker.type_stats, None).expect("model");
    let target = match kind {
        TargetKind::Spanner => AnyTarget::Spanner(crossdock_tests::load::spanner(&db).await),
        _ => AnyTarget::Bigtable(crossdock_tests::load::bigtable().await),
    };
    assert_eq!(target.count_rows(&model).await.expect("count"), rows as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spanner_load_whose_grpc_connections_are_reset_ends_with_exactly_its_rows() {
    grpc_load_with_resets(crossdock_load::schema::TargetKind::Spanner, 6_000, 32 << 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bigtable_load_whose_grpc_connections_are_reset_ends_with_exactly_its_rows() {
    grpc_load_with_resets(crossdock_load::schema::TargetKind::Bigtable, 10_000, 256 << 10).await;
}
