//! DynamoDB's native export as the export step, with the real binary: a fixture in the
//! layout AWS documents (several data files, manifest-summary, manifest-files with MD5s)
//! adopted, relayed, loaded into PostgreSQL and Bigtable and verified item for item; a
//! corrupted data file refused by its checksum before anything is written; and
//! `export --method native` against moto (the API call, the wait, the adoption of the
//! one data file moto writes without manifests).

use crossdock_core::item::{parse_line, to_line};
use crossdock_core::layout::ExportId;
use crossdock_core::manifest::SegmentManifest;
use crossdock_core::marker::SuccessMarker;
use crossdock_core::schema::TableSchema;
use crossdock_tests::native::{gunzip, NativeFixture};
use crossdock_tests::pipeline::*;
use crossdock_tests::relay::{list_names, Wired};
use crossdock_tests::resources::{TempBigtable, TempBucket, TempPgSchema, TempTable};
use std::time::Duration;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `n` items of every DynamoDB type, as native export lines.
fn lines(n: u64) -> Vec<String> {
    (0..n).map(|i| to_line(&crossdock_export::convert::from_sdk_item(crossdock_tests::export::item(i, 40)).expect("known types"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_export_in_aws_layout_is_adopted_relayed_loaded_and_verified_on_postgres_and_bigtable() {
    const ITEMS: u64 = 700;
    let dir = work_dir("native");
    let ddb = crossdock_tests::dynamodb().await;
    // The tables give the schema (keys, indexes); their items come from the native export.
    let orders = TempTable::name("natorders");
    let events = TempTable::name("natevents");
    let _bt = TempBigtable { name: events.name.clone() };
    create_table(&ddb, &orders.name, true, true, 5).await;
    create_table(&ddb, &events.name, false, false, 5).await;
    let w = Wired::new("native", 10, None).await;
    let pg = TempPgSchema::new("native").await;
    let pipeline = write_pipeline(&dir, &w.src.name, &w.gcs.name, &pg.name, &[&orders.name, &events.name], "").to_string_lossy().into_owned();

    // Two native exports in the pipeline's bucket, so their own files raise events too.
    let all = lines(ITEMS);
    let orders_native = NativeFixture::new("exports/ddb", &all, 4);
    let events_native = NativeFixture::new("exports/ddb", &all, 5);
    orders_native.put(&w.src.client, &w.src.name, None).await;
    events_native.put(&w.src.client, &w.src.name, None).await;

    let mut ids = Vec::new();
    for (table, native, files) in [(&orders.name, &orders_native, 4u64), (&events.name, &events_native, 5)] {
        let args = s(&["export", "adopt", "--table", table, "--pipeline", &pipeline, "--batch", "nat", "--s3", &native.url(&w.src.name), "--output", "json"]);
        let (code, summary, log) = run(&dir, &format!("adopt-{table}"), &args, Duration::from_secs(120)).await;
        assert_eq!(code, Some(0), "adopt {table}: {log}");
        assert_eq!((summary["items"].as_u64(), summary["files"].as_u64()), (Some(ITEMS), Some(files)), "{summary}");
        assert_eq!(summary["checks"]["manifest_md5"], files, "every file checked against manifest-files.json: {summary}");
        assert_eq!((summary["manifest_files"].as_bool(), summary["consumed_rcu"].as_f64()), (Some(true), Some(0.0)), "{summary}");
        let id: ExportId = serde_json::from_value(summary["export"].clone()).expect("export id");
        // The directory is timestamped with the export's point in time (exportTime).
        assert_eq!(id.timestamp.as_str(), "2026-11-23T09-30-00Z");
        ids.push(id);
    }

    // The relay sees every object of both: the adopted exports are copied and marked;
    // the native exports' own files (`_started`, manifests, `.md5`s, data) are
    // recognised and deleted from the queue, neither failed nor left for the DLQ.
    let summary = crossdock_relay::run(w.relay(w.settings()).await, std::future::pending()).await.expect("relay runs");
    assert_eq!((summary.markers_written, summary.failed, summary.misrouted), (2, 0, 0), "{summary:?}");
    let native_objects = (orders_native.keys().len() + events_native.keys().len()) as u64;
    assert!(summary.ignored >= native_objects, "{native_objects} native export objects ignored: {summary:?}");
    assert_eq!(summary.copied, 2 * 2 + 4 + 5, "schema and manifest of each export, and its parts: {summary:?}");

    let gcs = crossdock_tests::gcs().await;
    let names = list_names(&gcs, &w.gcs.name).await;
    assert!(names.iter().all(|n| !n.contains("AWSDynamoDB")), "nothing of the native layout is relayed as it is: {names:?}");
    for (id, files) in ids.iter().zip([4u64, 5]) {
        let m: SuccessMarker =
            serde_json::from_slice(&crossdock_tests::relay::download(&gcs, &w.gcs.name, &id.marker_key()).await.expect("marker")).expect("marker parses");
        assert_eq!((m.totals.items, m.totals.files), (ITEMS, files), "{:?}", m.totals);
        // Re-encoded with the pipeline's codec.
        assert!(m.files.iter().all(|f| f.name.ends_with(".json.zst")), "{:?}", m.files);
        assert!(m.type_stats.0.contains_key("price") && m.type_stats.0.contains_key("blobs"), "type statistics from the native files");
    }

    let marker = |id: &ExportId| format!("gs://{}/{}", w.gcs.name, id.marker_key());
    for (id, target) in ids.iter().zip(["postgres", "bigtable"]) {
        let (code, loaded, log) = run(
            &dir,
            &format!("load-{}", id.table),
            &s(&["load", "--output", "json", "--marker", &marker(id), "--pipeline", &pipeline]),
            Duration::from_secs(180),
        )
        .await;
        assert_eq!(code, Some(0), "load {}: {log}", id.table);
        assert_eq!((loaded["rows_in_target"].as_u64(), loaded["target"].as_str()), (Some(ITEMS), Some(target)), "{loaded}");
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
    // Independently of the marker: the keys in each target are the fixture's.
    let mut expected: Vec<String> = (0..ITEMS).map(|i| format!("pk#{i:06}|{i}")).collect();
    expected.sort();
    let pgc = crossdock_tests::postgres().await;
    let tables = pg_tables(&pgc, &pg.name).await;
    let (count, keys) = pg_keys(&pgc, &pg.name, &tables[0]).await;
    assert_eq!((count as u64, keys), (ITEMS, expected), "PostgreSQL rows");
    let mut pks: Vec<String> = (0..ITEMS).map(|i| format!("pk#{i:06}")).collect();
    pks.sort();
    assert_eq!(bigtable_row_keys(&events.name).await, pks, "Bigtable row keys");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_corrupted_native_file_is_refused_by_its_checksum_before_anything_is_written() {
    let dir = work_dir("natcorrupt");
    let ddb = crossdock_tests::dynamodb().await;
    let table = TempTable::name("natcorrupt");
    create_table(&ddb, &table.name, true, false, 5).await;
    let bucket = TempBucket::new("natcorrupt").await;
    let native = NativeFixture::new("ddb", &lines(90), 3);
    native.put(&bucket.client, &bucket.name, Some(2)).await;

    let args =
        s(&["export", "adopt", "--table", &table.name, "--bucket", &bucket.name, "--batch", "nat", "--s3", &native.url(&bucket.name), "--concurrency", "1"]);
    let (code, _, log) = run(&dir, "adopt", &args, Duration::from_secs(60)).await;
    assert_eq!(code, Some(1), "a checksum failure fails the adoption: {log}");
    assert!(log.contains(&native.files[2].key) && log.contains("MD5") && log.contains("nothing was written"), "the error names the file: {log}");
    // Only the native export's own objects are in the bucket: no schema, part or manifest.
    let mut keys = crossdock_tests::export::list(&bucket.client, &bucket.name, "").await;
    keys.sort();
    let mut fixture = native.keys();
    fixture.sort();
    assert_eq!(keys, fixture, "nothing written besides the fixture");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn export_method_native_on_moto_requests_waits_for_and_adopts_the_export() {
    use aws_sdk_dynamodb::types::PointInTimeRecoverySpecification;
    let dir = work_dir("natmoto");
    let moto = crossdock_tests::sync::moto_dynamodb().await;
    let (table, _) = crossdock_tests::sync::create_table(&moto, "natmoto", None).await;
    let items: Vec<_> = (0..50).map(|i| crossdock_tests::sync::item(&format!("k{i:03}"), i)).collect();
    for it in &items {
        crossdock_tests::sync::put(&moto, &table.name, it).await;
    }
    // ExportTableToPointInTime needs point-in-time recovery, on moto as on AWS.
    moto.update_continuous_backups()
        .table_name(&table.name)
        .point_in_time_recovery_specification(PointInTimeRecoverySpecification::builder().point_in_time_recovery_enabled(true).build().expect("spec"))
        .send()
        .await
        .expect("enable PITR");
    let bucket = TempBucket::new("natmoto").await;

    let args =
        s(&["export", "--method", "native", "--table", &table.name, "--bucket", &bucket.name, "--batch", "nm", "--poll-interval", "1", "--output", "json"]);
    let moto_url = crossdock_tests::sync::moto_url();
    let mut p = Proc::spawn_with_env(&dir, "export-native", &args, &[("AWS_ENDPOINT_URL_DYNAMODB", &moto_url)]);
    let st = p.wait(Duration::from_secs(120)).await;
    assert!(st.success(), "export --method native: {}", p.log_tail());
    let summary = p.json();
    assert!(summary["export_arn"].as_str().is_some_and(|a| a.starts_with("arn:aws:dynamodb:")), "{summary}");
    // moto writes one data file and no manifests: listed, and checked by its ETag.
    assert_eq!((summary["items"].as_u64(), summary["files"].as_u64(), summary["manifest_files"].as_bool()), (Some(50), Some(1), Some(false)), "{summary}");
    assert_eq!(summary["checks"]["etag"], 1, "{summary}");
    assert!(p.log_text().contains("no manifest-files.json"), "the log says how the files were found: {}", p.log_tail());

    // The native export sits under `_native/`, crossdock's export directory beside it.
    let id: ExportId = serde_json::from_value(summary["export"].clone()).expect("export id");
    let keys = crossdock_tests::export::list(&bucket.client, &bucket.name, "").await;
    let native_prefix = format!("_native/nm/{}/{}/AWSDynamoDB/", table.name, id.timestamp);
    assert!(keys.iter().any(|k| k.starts_with(&native_prefix) && k.contains("/data/")), "{keys:?}");
    let dir_key = id.s3_dir("");
    let schema: TableSchema =
        serde_json::from_slice(&crossdock_tests::export::get(&bucket.client, &bucket.name, &format!("{dir_key}_schema.json")).await.expect("schema"))
            .expect("schema parses");
    assert_eq!((schema.table.as_str(), schema.total_segments), (table.name.as_str(), 1));
    let m: SegmentManifest = serde_json::from_slice(
        &crossdock_tests::export::get(&bucket.client, &bucket.name, &format!("{dir_key}manifests/seg-00000-of-00001.json")).await.expect("manifest"),
    )
    .expect("manifest parses");
    assert_eq!((m.items, m.parts.len(), m.parts[0].name.as_str()), (50, 1, "data/seg-00000-part-00000.json.gz"));
    // The part is the native file: its lines are the table's items.
    let part = crossdock_tests::export::get(&bucket.client, &bucket.name, &format!("{dir_key}{}", m.parts[0].name)).await.expect("part");
    let text = gunzip(&part);
    assert_eq!((text.len() as u64, crossdock_core::stamp::sha256_hex(text.as_bytes())), (m.parts[0].bytes, m.parts[0].sha256.clone()));
    let canonical = |it: &crossdock_core::Item| {
        let mut it = it.clone();
        it.sort_keys();
        to_line(&it)
    };
    let mut got: Vec<String> = text.lines().enumerate().map(|(i, l)| canonical(&parse_line(l, i as u64 + 1).expect("line parses"))).collect();
    let mut want: Vec<String> = items.iter().map(canonical).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "the adopted part holds the table's items");
    let _ = std::fs::remove_dir_all(&dir);
}
