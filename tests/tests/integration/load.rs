//! The loader against the real local servers: one conformance suite run against
//! Spanner, PostgreSQL and Bigtable; full loads with read-back of every value; batch
//! limits; SIGKILL + rerun of the real binary; bad inputs; `--dry-run`.

use crossdock_core::item::Item;
use crossdock_core::pipeline::BatchConfig;
use crossdock_core::Codec;
use crossdock_load::marker::Marker;
use crossdock_load::run::{self, LoadOptions, Summary};
use crossdock_load::schema::{ColumnType, Row, TableModel, TargetKind};
use crossdock_load::sink::bigtable::BigtableTarget;
use crossdock_load::sink::Target;
use crossdock_load::LoadError;
use crossdock_tests::load::*;
use crossdock_tests::pipeline::{work_dir, Proc};
use crossdock_tests::proxy::{data_download, Action, FaultProxy};
use crossdock_tests::relay::eventually;
use crossdock_tests::resources::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn model_for(kind: TargetKind, export: &WrittenExport) -> TableModel {
    TableModel::infer(kind, &export.marker.schema, &export.marker.type_stats, None).expect("model")
}

async fn marker_of(export: &WrittenExport) -> Marker {
    crossdock_load::marker::read(crossdock_tests::gcs().await, &export.marker_url).await.expect("read marker")
}

use crossdock_load::conformance::{self, assert_reads_back, sample_model};

fn sample(n: usize, sort_key: bool, gsi: bool) -> (crossdock_core::schema::TableSchema, Vec<Item>) {
    (schema(&crossdock_tests::unique_ident("tbl"), sort_key, gsi), all_types_items(n, sort_key))
}

#[tokio::test]
async fn conformance_spanner() {
    let db = TempSpannerDb::new("conf").await;
    let t = spanner(&db).await;
    let (model, items) = sample_model(TargetKind::Spanner, &crossdock_tests::unique_ident("tbl"), 40, true);
    conformance::run(&t, &model, &items).await;
}

#[tokio::test]
async fn conformance_postgres() {
    let s = TempPgSchema::new("conf").await;
    let t = postgres(&s).await;
    let (model, items) = sample_model(TargetKind::Postgres, &crossdock_tests::unique_ident("tbl"), 40, true);
    conformance::run(&t, &model, &items).await;
}

#[tokio::test]
async fn conformance_bigtable() {
    let t = bigtable().await;
    let guard = TempBigtable::name("conf");
    let (mut model, items) = sample_model(TargetKind::Bigtable, &crossdock_tests::unique_ident("tbl"), 40, false);
    model.name = guard.name.clone();
    conformance::run(&t, &model, &items).await;
}

/// Loads of one table started together (two watchers, an orchestrator's retry beside a
/// slow load): exactly one creates the table, the others find it and go on.
#[tokio::test]
async fn concurrent_table_creation_creates_once_and_every_caller_goes_on() {
    let s = TempPgSchema::new("race").await;
    let pg = postgres(&s).await;
    let (model, _) = sample_model(TargetKind::Postgres, &crossdock_tests::unique_ident("tbl"), 5, true);
    let created = futures::future::join_all((0..8).map(|_| pg.ensure_table(&model))).await;
    let created: Vec<bool> = created.into_iter().map(|r| r.expect("every concurrent ensure_table succeeds")).collect();
    assert_eq!(created.iter().filter(|c| **c).count(), 1, "postgres: {created:?}");

    let db = TempSpannerDb::new("race").await;
    let (spanner_a, spanner_b) = (spanner(&db).await, spanner(&db).await);
    let (model, _) = sample_model(TargetKind::Spanner, &crossdock_tests::unique_ident("tbl"), 5, true);
    let (a, b) = futures::join!(spanner_a.ensure_table(&model), spanner_b.ensure_table(&model));
    let created = [a.expect("first spanner caller"), b.expect("second spanner caller")];
    assert_eq!(created.iter().filter(|c| **c).count(), 1, "spanner: {created:?}");
}

async fn load_export<T: Target>(t: &T, export: &WrittenExport, batch: BatchConfig, opts: LoadOptions) -> Result<Summary, LoadError> {
    let marker = marker_of(export).await;
    let model = model_for(t.kind(), export);
    let plan = run::batch_plan(&t.batch_limits(&model), &batch);
    run::load(&marker, t, &model, &plan, &opts, std::future::pending()).await
}

async fn verify_all<T: Target>(t: &T, export: &WrittenExport) {
    let marker = marker_of(export).await;
    let model = model_for(t.kind(), export);
    let report = run::verify(&marker, t, &model).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.matching, export.items.len() as u64, "{report:?}");
    assert_reads_back(t, &model, &export.items).await;
}

async fn loaded_record(export: &WrittenExport) -> crossdock_core::marker::LoadedRecord {
    let (bucket, _) = crossdock_load::gcs::parse_url(&export.marker_url).expect("url");
    let key = export.export.gcs_key(&crossdock_core::layout::DumpFile::Loaded, Codec::None);
    let body = get(&crossdock_tests::gcs().await, &bucket, &key).await.expect("_LOADED written");
    serde_json::from_slice(&body).expect("_LOADED parses")
}

#[tokio::test]
async fn gsi_table_loads_into_spanner_with_index_and_identical_values() {
    let bucket = TempGcsBucket::new("ldsp").await;
    let (s, items) = sample(120, true, true);
    let export = write_export(&bucket.client, &bucket.name, "b1", s, items, 3, Codec::Zstd).await;
    let db = TempSpannerDb::new("ld").await;
    let t = spanner(&db).await;
    let summary = load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await.expect("load");
    assert_eq!((summary.rows_in_target, summary.files_loaded, summary.rejected), (120, 3, 0));
    assert_eq!(summary.indexes.len(), 1, "{summary:?}");
    verify_all(&t, &export).await;
    let rec = loaded_record(&export).await;
    assert_eq!((rec.target.as_str(), rec.rows_in_target), ("spanner", 120));
    // A second run finds `_LOADED` and does nothing.
    let again = load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await.expect("rerun");
    assert_eq!(again.status, "already-loaded");
}

#[tokio::test]
async fn gsi_table_loads_into_postgres_with_index_and_identical_values() {
    let bucket = TempGcsBucket::new("ldpg").await;
    let (s, items) = sample(300, true, true);
    let export = write_export(&bucket.client, &bucket.name, "b1", s, items, 3, Codec::Gzip).await;
    let pg = TempPgSchema::new("ld").await;
    let t = postgres(&pg).await;
    let summary = load_export(&t, &export, BatchConfig { rows: Some(64), ..Default::default() }, LoadOptions::default()).await.expect("load");
    assert_eq!((summary.rows_in_target, summary.files_loaded), (300, 3));
    assert_eq!(summary.indexes.len(), 1, "{summary:?}");
    verify_all(&t, &export).await;
    let loaded = loaded_record(&export).await;
    assert_eq!((loaded.target.as_str(), loaded.destination), ("postgres", format!("{}.{}", pg.name, summary.destination.rsplit('.').next().unwrap_or(""))));

    // The same export into another schema is a new load, not a rerun: every file again.
    let other = TempPgSchema::new("ld2").await;
    let t2 = postgres(&other).await;
    let again = load_export(&t2, &export, BatchConfig::default(), LoadOptions::default()).await.expect("load elsewhere");
    assert_eq!((again.status, again.files_loaded, again.files_skipped, again.rows_in_target), ("loaded", 3, 0, 300));
    let rerun = load_export(&t2, &export, BatchConfig::default(), LoadOptions::default()).await.expect("rerun");
    assert_eq!(rerun.status, "already-loaded");
    // The records now name the second place; loading into the first again upserts.
    let back = load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await.expect("load into the first again");
    assert_eq!((back.status, back.files_loaded, back.rows_in_target), ("loaded", 3, 300));
}

#[tokio::test]
async fn plain_table_loads_into_bigtable_with_identical_values() {
    let bucket = TempGcsBucket::new("ldbt").await;
    let (s, items) = sample(200, true, false);
    let guard = TempBigtable { name: s.table.clone() };
    let export = write_export(&bucket.client, &bucket.name, "b1", s, items, 2, Codec::Bzip2).await;
    let t = bigtable().await;
    let summary = load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await.expect("load");
    assert_eq!((summary.rows_in_target, summary.files_loaded), (200, 2));
    verify_all(&t, &export).await;
    // Reloading (forced) replaces rows in place: same count, same values.
    let forced = load_export(&t, &export, BatchConfig::default(), LoadOptions { force: true, ..Default::default() }).await.expect("reload");
    assert_eq!((forced.status, forced.files_loaded, forced.files_skipped, forced.rows_in_target), ("loaded", 2, 0, 200), "{forced:?}");
    verify_all(&t, &export).await;
    // The table is dropped: the progress records all say done, and a forced load
    // still writes every file into the table it recreates.
    let table = guard.name.clone();
    drop(guard);
    let guard = TempBigtable { name: table };
    let forced =
        load_export(&t, &export, BatchConfig::default(), LoadOptions { force: true, ..Default::default() }).await.expect("reload into a dropped table");
    assert!(forced.table_created, "the dropped table is recreated: {forced:?}");
    assert_eq!((forced.files_loaded, forced.files_skipped), (forced.files_total, 0), "{forced:?}");
    assert_eq!(forced.rows_in_target, 200);
    verify_all(&t, &export).await;
    drop(guard);
}

/// `--force` after the target lost rows reloads every file; a forced load that stops
/// early leaves neither `_LOADED` nor a record that would let a plain rerun skip a file
/// it did not reach.
#[tokio::test]
async fn forced_load_reloads_a_truncated_table_and_an_interrupted_one_leaves_no_stale_outcome() {
    let bucket = TempGcsBucket::new("force").await;
    let (s, items) = sample(300, true, true);
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, 3, Codec::Gzip).await;
    let pg = TempPgSchema::new("force").await;
    let t = postgres(&pg).await;
    let model = model_for(TargetKind::Postgres, &export);
    let truncate = || async {
        crossdock_tests::postgres().await.batch_execute(&format!("TRUNCATE \"{}\".\"{}\"", pg.name, model.name)).await.expect("truncate");
    };
    let force = LoadOptions { force: true, ..Default::default() };
    let first = load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await.expect("load");
    assert_eq!((first.files_loaded, first.rows_in_target), (3, 300));

    truncate().await;
    let plain = load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await.expect("plain rerun");
    assert_eq!(plain.status, "already-loaded", "without --force `_LOADED` is trusted");
    let forced = load_export(&t, &export, BatchConfig::default(), force.clone()).await.expect("forced load");
    assert_eq!((forced.status, forced.files_total, forced.files_loaded, forced.files_skipped, forced.rows_in_target), ("loaded", 3, 3, 0, 300), "{forced:?}");
    assert_eq!(t.count_rows(&model).await.expect("count"), 300);
    assert_eq!(loaded_record(&export).await.rows_in_target, 300);

    // Again, but the second file is now corrupt: the forced load stops there, before
    // reaching the third.
    truncate().await;
    let key = format!("{}{}", export.export.dir(), export.marker.files[1].name);
    let good = get(&bucket.client, &bucket.name, &key).await.expect("part");
    put(&bucket.client, &bucket.name, &key, b"not gzip".to_vec()).await;
    match load_export(&t, &export, BatchConfig::default(), force).await {
        Err(LoadError::CorruptFile { key: k, .. }) => assert_eq!(k, key),
        r => panic!("expected CorruptFile, got {r:?}"),
    }
    let loaded_key = export.export.gcs_key(&crossdock_core::layout::DumpFile::Loaded, Codec::None);
    assert!(get(&bucket.client, &bucket.name, &loaded_key).await.is_none(), "an unfinished forced load leaves no _LOADED");
    put(&bucket.client, &bucket.name, &key, good).await;
    let rerun = load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await.expect("plain rerun after the interrupted forced load");
    assert_eq!((rerun.status, rerun.files_skipped, rerun.files_loaded, rerun.rows_in_target), ("loaded", 1, 2, 300), "{rerun:?}");
    verify_all(&t, &export).await;
}

#[tokio::test]
async fn spanner_commits_split_below_80000_mutations_for_wide_indexed_table() {
    let bucket = TempGcsBucket::new("spw").await;
    let mut s = schema(&crossdock_tests::unique_ident("wide"), false, true);
    s.global_secondary_indexes[0].projection = crossdock_core::schema::Projection::All;
    let rows = 600;
    let export = write_export(&bucket.client, &bucket.name, "b", s, wide_items(rows, 150, false), 1, Codec::Zstd).await;
    let db = TempSpannerDb::new("wide").await;
    let t = spanner(&db).await;
    let model = model_for(TargetKind::Spanner, &export);
    let per_row = model.spanner_mutations_per_row();
    assert!(per_row * rows > 80_000, "the whole file would be one too-large commit: {per_row} × {rows}");
    let limits = t.batch_limits(&model);
    // Start at the limit, no adaptation: the biggest commits the loader would ever send.
    let batch = BatchConfig { rows: Some(limits.max), adaptive: Some(false), writers: Some(1), ..Default::default() };
    let summary = load_export(&t, &export, batch, LoadOptions::default()).await.expect("load");
    assert_eq!(summary.rows_in_target, rows as u64);
    let max = t.stats().max_mutations.load(Ordering::Relaxed);
    assert!((60_000..=80_000).contains(&max), "largest commit had {max} mutations ({per_row} per row)");
    assert!(t.stats().calls.load(Ordering::Relaxed) >= (per_row * rows).div_ceil(80_000) as u64);
    verify_all(&t, &export).await;
}

#[tokio::test]
async fn bigtable_requests_never_exceed_100000_mutations() {
    let bucket = TempGcsBucket::new("btw").await;
    let s = schema(&crossdock_tests::unique_ident("btw").replace('_', "-"), false, false);
    let guard = TempBigtable { name: s.table.clone() };
    let rows = 2_500;
    let export = write_export(&bucket.client, &bucket.name, "b", s, wide_items(rows, 99, false), 1, Codec::Zstd).await;
    let t = bigtable().await;
    let model = model_for(TargetKind::Bigtable, &export);
    let limits = t.batch_limits(&model);
    let batch = BatchConfig { rows: Some(limits.max), adaptive: Some(false), writers: Some(1), ..Default::default() };
    let summary = load_export(&t, &export, batch, LoadOptions::default()).await.expect("load");
    assert_eq!(summary.rows_in_target, rows as u64);
    let max = t.stats().max_mutations.load(Ordering::Relaxed);
    assert!((90_000..=100_000).contains(&max), "largest request had {max} mutations");
    assert!(t.stats().calls.load(Ordering::Relaxed) >= 3);
    drop(guard);
}

// ---- bad input -------------------------------------------------------------------

#[tokio::test]
async fn marker_for_missing_file_is_not_found_and_recorded() {
    let bucket = TempGcsBucket::new("miss").await;
    let (s, items) = sample(20, true, true);
    let mut export = write_export(&bucket.client, &bucket.name, "b", s, items, 1, Codec::Zstd).await;
    let mut ghost = export.marker.files[0].clone();
    ghost.part = 7;
    ghost.name = crossdock_core::layout::DumpFile::Part { segment: 0, part: 7, codec: Codec::Zstd }.s3_name();
    export.marker.files.push(ghost);
    export.marker.totals.files += 1;
    export.marker.totals.items += 20;
    write_marker(&bucket.client, &bucket.name, &export.marker).await;
    let pg = TempPgSchema::new("miss").await;
    let t = postgres(&pg).await;
    match load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await {
        Err(LoadError::NotFound { what }) => assert!(what.contains("seg-00000-part-00007"), "{what}"),
        r => panic!("expected NotFound, got {r:?}"),
    }
    let progress = list(&bucket.client, &bucket.name, &format!("{}_progress/", export.export.dir())).await;
    assert_eq!(progress.len(), 2, "the good file done, the missing one recorded as failed: {progress:?}");
    let failed = get(&bucket.client, &bucket.name, progress.iter().find(|p| p.contains("00007")).expect("record")).await.expect("body");
    assert!(String::from_utf8_lossy(&failed).contains("\"failed\""));
}

#[tokio::test]
async fn marker_listing_a_file_twice_is_refused_naming_marker_and_file() {
    let bucket = TempGcsBucket::new("dup").await;
    let (s, items) = sample(20, true, true);
    let mut export = write_export(&bucket.client, &bucket.name, "b", s, items, 2, Codec::Zstd).await;
    // Totals that agree with the doubled list, as a relay counting it twice would write.
    let twice = export.marker.files[0].clone();
    export.marker.totals.files += 1;
    export.marker.totals.items += twice.items;
    export.marker.totals.raw_bytes += twice.raw_bytes;
    export.marker.totals.stored_bytes += twice.stored_bytes;
    export.marker.files.push(twice.clone());
    write_marker(&bucket.client, &bucket.name, &export.marker).await;
    match crossdock_load::marker::read(crossdock_tests::gcs().await, &export.marker_url).await {
        Err(e @ LoadError::InvalidMarker { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&export.marker_url) && text.contains(&twice.name) && text.contains("more than once"), "{text}");
        }
        r => panic!("expected InvalidMarker, got {:?}", r.map(|m| m.marker.files.len())),
    }
}

#[tokio::test]
async fn corrupt_data_file_is_refused_before_any_write() {
    let bucket = TempGcsBucket::new("corr").await;
    let (s, items) = sample(20, true, true);
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, 1, Codec::Zstd).await;
    let key = format!("{}{}", export.export.dir(), export.marker.files[0].name);
    let mut body = get(&bucket.client, &bucket.name, &key).await.expect("part");
    let mid = body.len() / 2;
    body[mid] ^= 0xFF;
    put(&bucket.client, &bucket.name, &key, body).await;
    let pg = TempPgSchema::new("corr").await;
    let t = postgres(&pg).await;
    match load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await {
        Err(e @ LoadError::CorruptFile { .. }) => assert!(e.to_string().contains(&key), "{e}"),
        r => panic!("expected CorruptFile, got {r:?}"),
    }
    let model = model_for(TargetKind::Postgres, &export);
    assert_eq!(t.count_rows(&model).await.expect("count"), 0, "nothing from the corrupt file was written");
}

#[tokio::test]
async fn value_that_cannot_fit_is_rejected_and_recorded() {
    let bucket = TempGcsBucket::new("rej").await;
    let (s, mut items) = sample(30, true, true);
    items[4].insert("count".into(), crossdock_core::AttributeValue::N("1.5".into()));
    let mut export = write_export(&bucket.client, &bucket.name, "b", s, items, 1, Codec::Zstd).await;
    // Statistics that promise integers (as a stale or wrong manifest would): INT64 column.
    export.marker.type_stats.0.get_mut("count").expect("count stats").fractional_numbers = 0;
    write_marker(&bucket.client, &bucket.name, &export.marker).await;
    let pg = TempPgSchema::new("rej").await;
    let t = postgres(&pg).await;
    match load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await {
        Err(LoadError::TooManyRejects { rejected: 1, max: 0, key, .. }) => {
            let body = get(&bucket.client, &bucket.name, &key).await.expect("rejects file");
            let line: serde_json::Value = serde_json::from_slice(body.split(|&b| b == b'\n').next().expect("line")).expect("json");
            assert_eq!(line["line"], 5);
            assert!(line["reason"].as_str().is_some_and(|r| r.contains("count") && r.contains("64-bit integer")), "{line}");
        }
        r => panic!("expected TooManyRejects, got {r:?}"),
    }
    let model = model_for(TargetKind::Postgres, &export);
    assert_eq!(t.count_rows(&model).await.expect("count"), 0, "the file was refused whole");
    let summary = load_export(&t, &export, BatchConfig::default(), LoadOptions { max_errors: 1, ..Default::default() }).await.expect("load with 1 allowed");
    assert_eq!((summary.rows_in_target, summary.rejected), (29, 1));
    assert_eq!(loaded_record(&export).await.rejected, 1);
}

/// A reject past `--max-errors` in a later chunk of a file (files are converted in chunks
/// of `feed::CHUNK_LINES` lines) while earlier rows of it are being written: the file is
/// recorded failed, never done, and a rerun allowed that reject loads the rest.
#[tokio::test]
async fn reject_in_a_later_chunk_leaves_the_file_failed_and_a_rerun_completes_it() {
    let bucket = TempGcsBucket::new("rej2").await;
    // The last chunk holds only the bad row: it arrives while chunk 1 is still in flight.
    let n = crossdock_load::feed::CHUNK_LINES + 1;
    let (s, mut items) = sample(n, true, false);
    items[n - 1].insert("count".into(), crossdock_core::AttributeValue::N("1.5".into()));
    let mut export = write_export(&bucket.client, &bucket.name, "b", s, items, 1, Codec::Zstd).await;
    export.marker.type_stats.0.get_mut("count").expect("count stats").fractional_numbers = 0;
    write_marker(&bucket.client, &bucket.name, &export.marker).await;
    let pg = TempPgSchema::new("rej2").await;
    let t = postgres(&pg).await;
    let r = load_export(&t, &export, BatchConfig { rows: Some(1000), ..Default::default() }, LoadOptions::default()).await;
    assert!(matches!(r, Err(LoadError::TooManyRejects { rejected: 1, max: 0, .. })), "{r:?}");
    let progress = list(&bucket.client, &bucket.name, &format!("{}_progress/", export.export.dir())).await;
    assert_eq!(progress.len(), 1, "{progress:?}");
    let record = get(&bucket.client, &bucket.name, &progress[0]).await.expect("record");
    assert!(String::from_utf8_lossy(&record).contains("\"failed\""), "{}", String::from_utf8_lossy(&record));
    let summary = load_export(&t, &export, BatchConfig::default(), LoadOptions { max_errors: 1, ..Default::default() }).await.expect("rerun");
    assert_eq!((summary.files_loaded, summary.rows_in_target, summary.rejected), (1, n as u64 - 1, 1));
}

#[tokio::test]
async fn incompatible_existing_table_is_refused_with_a_diff() {
    let bucket = TempGcsBucket::new("inc").await;
    let (s, items) = sample(10, true, true);
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, 1, Codec::Zstd).await;
    let pg = TempPgSchema::new("inc").await;
    let model = model_for(TargetKind::Postgres, &export);
    crossdock_tests::postgres()
        .await
        .batch_execute(&format!("CREATE TABLE \"{}\".\"{}\" (pk text, sk bigint, count text, PRIMARY KEY (pk, sk))", pg.name, model.name))
        .await
        .expect("pre-existing table");
    let t = postgres(&pg).await;
    match load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await {
        Err(e @ LoadError::Incompatible { .. }) => {
            let text = e.to_string();
            assert!(text.contains("count: table has text, export needs int8") && text.contains("price"), "{text}");
        }
        r => panic!("expected Incompatible, got {r:?}"),
    }
    assert_eq!(t.count_rows(&model).await.expect("count"), 0);
}

/// Numbers travel to PostgreSQL in binary NUMERIC form: DynamoDB's extremes (38 digits,
/// exponents +125 / -130) must come back as the same numbers, alone and in arrays,
/// through the direct COPY and through the upsert path.
#[tokio::test]
async fn postgres_numeric_extremes_round_trip_exactly() {
    use crossdock_load::decimal::Decimal;
    use crossdock_load::schema::{Cell, Column};
    let pg = TempPgSchema::new("num").await;
    let t = postgres(&pg).await;
    let col = |name: &str, ty, key| Column { attribute: name.into(), name: name.into(), ty, key };
    let model = TableModel {
        target: TargetKind::Postgres,
        source_table: "nums".into(),
        name: "nums".into(),
        columns: vec![col("pk", ColumnType::String, true), col("n", ColumnType::Numeric, false), col("ns", ColumnType::NumericArray, false)],
        primary_key: vec![0],
        indexes: vec![],
        max_row_bytes: 200,
    };
    let values = [
        "1E+125",
        "-1E-130",
        "9.9999999999999999999999999999999999999E+125",
        "-12345678901234567890123456789012345678",
        "0.00012",
        "12345.678",
        "100",
        "0",
        "-0.5",
        "3.14159265358979323846264338327950288",
        "1e-3",
        "123456789e4",
    ];
    let rows: Vec<Row> = values
        .iter()
        .enumerate()
        .map(|(i, v)| vec![Cell::Str(format!("k{i}")), Cell::Num((*v).into()), Cell::NumArr(vec![(*v).into(), "-7.25".into(), "1E+20".into()])])
        .collect();
    assert!(t.ensure_table(&model).await.expect("table"));
    t.write_batch(&model, &rows).await.expect("direct COPY");
    t.write_batch(&model, &rows[..4]).await.expect("upsert of rows already there");
    let mut back = t.read_all(&model).await.expect("read");
    back.sort_by_key(|r| match &r[0] {
        Cell::Str(k) => k[1..].parse::<usize>().unwrap_or(usize::MAX),
        _ => usize::MAX,
    });
    assert_eq!(back.len(), values.len());
    let num = |c: &Cell| match c {
        Cell::Num(n) => Decimal::parse(n).unwrap_or_else(|| panic!("not a number: {n}")),
        c => panic!("not a number cell: {c:?}"),
    };
    for (row, v) in back.iter().zip(values) {
        assert_eq!(num(&row[1]), Decimal::parse(v).expect("source number"), "{v}");
        let Cell::NumArr(ns) = &row[2] else { panic!("not an array: {:?}", row[2]) };
        let ns: Vec<Decimal> = ns.iter().map(|n| Decimal::parse(n).expect("number")).collect();
        assert_eq!(
            ns,
            ["-7.25", "1E+20"].iter().fold(vec![Decimal::parse(v).expect("n")], |mut a, x| {
                a.push(Decimal::parse(x).expect("n"));
                a
            })
        );
    }
}

// ---- the real binary -------------------------------------------------------------

fn write_pipeline(dir_prefix: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(crossdock_tests::unique(dir_prefix));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).expect("write pipeline");
    p
}

#[tokio::test]
async fn dry_run_prints_route_ddl_and_batch_plan_and_writes_nothing() {
    let bucket = TempGcsBucket::new("dry").await;
    let (s, items) = sample(10, true, true);
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, 1, Codec::Zstd).await;
    let pg = TempPgSchema::new("dry").await;
    let pipeline = write_pipeline("dry", &pipeline_toml("postgres", &pg.name, "", ""));
    let out = std::process::Command::new(crossdock_tests::crossdock_bin())
        .args(["load", "--dry-run", "--marker", &export.marker_url, "--pipeline"])
        .arg(&pipeline)
        .output()
        .expect("run crossdock");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    for want in ["Relational", "postgres", "CREATE TABLE", "CREATE INDEX", "PRIMARY KEY", "batches", "per COPY"] {
        assert!(text.contains(want), "dry run output lacks {want:?}:\n{text}");
    }
    let n: i64 = crossdock_tests::postgres()
        .await
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", &[&pg.name])
        .await
        .expect("query")
        .get(0);
    assert_eq!(n, 0, "dry run created a table");
}

/// Three processes share one table's load (`--shard i/3`), started together: each
/// writes only its files, every file is written once, and the table is finished
/// (indexes, count, `_LOADED`) by a shard that found every file done.
#[tokio::test]
async fn three_shards_started_together_load_each_file_once_and_finish_the_table() {
    let bucket = TempGcsBucket::new("shard").await;
    let (s, items) = sample(3_000, true, true);
    let files = 7;
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, files, Codec::Zstd).await;
    let pg = TempPgSchema::new("shard").await;
    let pipeline = write_pipeline("shard", &pipeline_toml("postgres", &pg.name, "", ""));
    let dir = work_dir("shard");
    let mut procs: Vec<Proc> = (0..3)
        .map(|i| {
            let args: Vec<String> = ["load", "--output", "json", "--no-progress", "--shard", &format!("{i}/3"), "--marker", &export.marker_url, "--pipeline"]
                .iter()
                .map(|a| a.to_string())
                .chain([pipeline.to_string_lossy().into_owned()])
                .collect();
            Proc::spawn(&dir, &format!("shard{i}"), &args)
        })
        .collect();
    let mut summaries = Vec::new();
    for p in &mut procs {
        assert!(p.wait(Duration::from_secs(180)).await.success(), "a shard failed: {}", p.log_tail());
        summaries.push(crossdock_tests::pipeline::parse_json(&std::fs::read_to_string(&p.stdout).unwrap_or_default()).expect("summary json"));
    }
    let loaded: u64 = summaries.iter().map(|s| s["files_loaded"].as_u64().unwrap_or(99)).sum();
    assert_eq!(loaded, files as u64, "every file written by exactly one shard: {summaries:?}");
    // Shard i of 3 owns the files at positions i, i+3, …: 3, 2, 2 of 7.
    let own: Vec<u64> = summaries.iter().map(|s| s["files_loaded"].as_u64().unwrap_or(99)).collect();
    assert_eq!(own, vec![3, 2, 2], "{summaries:?}");
    let finished: Vec<&serde_json::Value> = summaries.iter().filter(|s| s["status"] == "loaded").collect();
    assert!(!finished.is_empty(), "a shard finished the table: {summaries:?}");
    assert!(finished.iter().all(|s| s["rows_in_target"] == 3_000), "{summaries:?}");
    assert!(summaries.iter().all(|s| s["status"] == "loaded" || s["status"] == "shard-done"), "{summaries:?}");
    let record = loaded_record(&export).await;
    assert_eq!(record.rows_in_target, 3_000);
    let t = postgres(&pg).await;
    let model = model_for(TargetKind::Postgres, &export);
    assert_eq!(t.count_rows(&model).await.expect("count"), 3_000);
    assert_eq!(t.list_indexes(&model).await.expect("indexes").len(), model.indexes.len());
}

/// Static sharing with a shard that dies: shard 0 of 3 is SIGKILLed while it holds a
/// data download (the proxy in front of its GCS holds every one after its first 3), the
/// other two finish their files and leave the table to it (`shard-done`), and shard 0
/// rerun — as a Job restarts its pod — loads only what it had not recorded and finishes
/// the table: exact rows, one `_LOADED`, the index created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shard_rerun_loads_only_its_unfinished_files_and_finishes_the_table() {
    killed_shard_rerun(TargetKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_spanner_shard_rerun_loads_only_its_unfinished_files_and_finishes_the_table() {
    killed_shard_rerun(TargetKind::Spanner).await;
}

async fn killed_shard_rerun(kind: TargetKind) {
    const FILES: usize = 40;
    const ROWS: usize = FILES * 50;
    let bucket = TempGcsBucket::new("shardkill").await;
    let table = crossdock_tests::unique_ident("shk");
    let export = write_export(&bucket.client, &bucket.name, "b", schema(&table, false, true), wide_items(ROWS, 3, false), FILES, Codec::Zstd).await;
    let pg = TempPgSchema::new("shardkill").await;
    let db = TempSpannerDb::new("shardkill").await;
    let relational = if kind == TargetKind::Spanner { "spanner" } else { "postgres" };
    let pipeline = write_pipeline("shardkill", &pipeline_toml(relational, &pg.name, &db.path, "")).to_string_lossy().into_owned();
    let dir = work_dir("shardkill");
    let args = |i: usize| -> Vec<String> {
        ["load", "--output", "json", "--no-progress", "--shard", &format!("{i}/3"), "--marker", &export.marker_url, "--pipeline", &pipeline]
            .map(String::from)
            .into()
    };
    let proxy = FaultProxy::gcs().await;
    proxy.rule(3, Action::Hold, data_download);
    let mut doomed = Proc::spawn_with_env(&dir, "shard0", &args(0), &[("STORAGE_EMULATOR_HOST", &proxy.url)]);
    assert!(proxy.wait_held(1, Duration::from_secs(90)).await, "shard 0 is inside a download; log:\n{}", doomed.log_tail());
    doomed.signal("KILL");
    assert!(!doomed.wait(Duration::from_secs(10)).await.success());
    drop(proxy);

    let mut summaries = Vec::new();
    for i in [1, 2] {
        let mut p = Proc::spawn(&dir, &format!("shard{i}"), &args(i));
        assert!(p.wait(Duration::from_secs(180)).await.success(), "shard {i}: {}", p.log_tail());
        summaries.push(p.json());
    }
    // Shards 1 and 2 own 13 files each (positions i, i+3, …); shard 0's are not all done.
    for s in &summaries {
        assert_eq!((s["status"].as_str(), s["files_loaded"].as_u64()), (Some("shard-done"), Some(13)), "{s}");
    }
    let names = list(&bucket.client, &bucket.name, &export.export.dir()).await;
    assert!(!names.iter().any(|k| k.ends_with("/_LOADED")), "nobody finished the table while shard 0's files were missing");

    let mut rerun = Proc::spawn(&dir, "shard0-rerun", &args(0));
    assert!(rerun.wait(Duration::from_secs(180)).await.success(), "{}", rerun.log_tail());
    let s = rerun.json();
    assert_eq!((s["status"].as_str(), s["rows_in_target"].as_u64()), (Some("loaded"), Some(ROWS as u64)), "{s}");
    // Shard 0 owns 14 files; what its first run recorded before the kill is skipped.
    let again = s["files_loaded"].as_u64().unwrap_or(99);
    assert!((11..=14).contains(&again), "the rerun loaded {again} of shard 0's 14 files: {s}");
    assert_eq!(loaded_record(&export).await.rows_in_target, ROWS as u64);
    let names = list(&bucket.client, &bucket.name, &export.export.dir()).await;
    assert_eq!(names.iter().filter(|k| k.ends_with("/_LOADED")).count(), 1);
    let model = model_for(kind, &export);
    let t = match kind {
        TargetKind::Spanner => crossdock_load::sink::AnyTarget::Spanner(spanner(&db).await),
        _ => crossdock_load::sink::AnyTarget::Postgres(postgres(&pg).await),
    };
    assert_eq!(t.count_rows(&model).await.expect("count"), ROWS as u64);
    assert_eq!(t.list_indexes(&model).await.expect("indexes").len(), model.indexes.len());
}

#[tokio::test]
async fn sigkill_mid_load_then_rerun_gives_exact_rows_and_skips_finished_files() {
    let bucket = TempGcsBucket::new("kill").await;
    let (s, items) = sample(12_000, true, true);
    let files = 8;
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, files, Codec::Zstd).await;
    let pg = TempPgSchema::new("kill").await;
    let extra = "[batch]\nrows = 20\nmax_rows = 20\nwriters = 1\nadaptive = false";
    let pipeline = write_pipeline("kill", &pipeline_toml("postgres", &pg.name, "", extra));
    // Downloads after the second data file are held: the load is then known to be
    // mid-run, with at most two files written, when it is killed.
    let proxy = FaultProxy::gcs().await;
    proxy.rule(2, Action::Hold, data_download);
    let dir = work_dir("kill");
    let args: Vec<String> = ["load", "--output", "json", "--marker", &export.marker_url, "--pipeline"]
        .iter()
        .map(|a| a.to_string())
        .chain([pipeline.to_string_lossy().into_owned()])
        .collect();
    let mut child = Proc::spawn_with_env(&dir, "load", &args, &[("STORAGE_EMULATOR_HOST", &proxy.url)]);
    let progress_prefix = format!("{}_progress/", export.export.dir());
    let held = proxy.wait_held(1, Duration::from_secs(60)).await;
    let started = eventually(Duration::from_secs(60), || async { !list(&bucket.client, &bucket.name, &progress_prefix).await.is_empty() }).await;
    assert!(held && started && child.exited().is_none(), "the load was mid-run; log:\n{}", child.log_tail());
    child.signal("KILL");
    assert!(!child.wait(Duration::from_secs(10)).await.success());
    drop(proxy);
    let model = model_for(TargetKind::Postgres, &export);
    let t = postgres(&pg).await;
    let partial = t.count_rows(&model).await.expect("count");
    assert!(partial < 12_000, "{partial}");

    let out = std::process::Command::new(crossdock_tests::crossdock_bin())
        .args(["load", "--output", "json", "--marker", &export.marker_url, "--pipeline"])
        .arg(&pipeline)
        .output()
        .expect("rerun");
    assert!(out.status.success(), "rerun failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!(summary["rows_in_target"], 12_000);
    assert!(summary["files_skipped"].as_u64().is_some_and(|n| (1..=2).contains(&n)), "the files done before the kill are skipped: {summary}");
    assert_eq!(summary["files_skipped"].as_u64().unwrap_or(0) + summary["files_loaded"].as_u64().unwrap_or(0), files as u64);
    let distinct: i64 = crossdock_tests::postgres()
        .await
        .query_one(&format!("SELECT count(DISTINCT (pk, sk)) FROM \"{}\".\"{}\"", pg.name, model.name), &[])
        .await
        .expect("distinct")
        .get(0);
    assert_eq!(distinct, 12_000);
    verify_all(&t, &export).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_url_gets_load_finished_and_load_failed_events() {
    let bucket = TempGcsBucket::new("notify").await;
    let (s, items) = sample(25, true, true);
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, 1, Codec::Zstd).await;
    let pg = TempPgSchema::new("notify").await;
    let pipeline = write_pipeline("notify", &pipeline_toml("postgres", &pg.name, "", ""));
    let (url, got) = crossdock_tests::webhook().await;
    let load = |marker: String| {
        let pipeline = pipeline.clone();
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(crossdock_tests::crossdock_bin())
                .args(["load", "--notify-url", &url, "--marker", &marker, "--pipeline"])
                .arg(&pipeline)
                .output()
                .expect("run crossdock")
        })
    };
    let ok = load(export.marker_url.clone()).await.expect("join");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let missing = export.marker_url.replace("/_SUCCESS", "-nope/_SUCCESS");
    let bad = load(missing.clone()).await.expect("join");
    assert!(!bad.status.success());

    let events = got.lock().expect("lock").clone();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "load_finished");
    assert_eq!(events[0]["marker"], export.marker_url.as_str());
    assert_eq!(events[0]["details"]["rows"], 25);
    assert!(events[0]["text"].as_str().is_some_and(|t| t.contains("25 row(s)")), "{}", events[0]);
    assert_eq!(events[1]["event"], "load_failed");
    assert_eq!(events[1]["marker"], missing.as_str());
}

/// Loads `export` into `t` with three faults written behind the loader's back — the
/// first row left out, the second row's `status` changed, a row added whose key the
/// export lacks — and checks `verify` counts each one (over more than one lookup batch).
async fn verify_finds_each_fault<T: Target>(t: &T, export: &WrittenExport) {
    use crossdock_core::item::AttributeValue;
    let marker = marker_of(export).await;
    let model = model_for(t.kind(), export);
    t.ensure_table(&model).await.expect("table");
    let mut items = export.items.clone();
    items[1].insert("status".into(), AttributeValue::S("tampered".into()));
    let mut extra = items[2].clone();
    extra.insert("pk".into(), AttributeValue::S("not in the export".into()));
    items.push(extra);
    let rows: Vec<Row> = items[1..].iter().map(|i| model.to_row(i).expect("converts")).collect();
    t.write_batch(&model, &rows).await.expect("write");
    let report = run::verify(&marker, t, &model).await.expect("verify");
    let n = export.items.len() as u64;
    assert_eq!(
        (report.source_items, report.target_rows, report.matching, report.missing, report.different, report.extra),
        (n, n, n - 2, 1, 1, 1),
        "{:?}: {report:?}",
        t.kind()
    );
    assert!(!report.ok());
    assert!(report.examples.iter().any(|e| e.starts_with("row ") && e.contains("status")), "{report:?}");
}

#[tokio::test]
async fn verify_finds_missing_different_and_extra_rows_on_every_target() {
    let bucket = TempGcsBucket::new("ldvf").await;
    let (s, items) = sample(1_100, true, false);
    let bt_guard = TempBigtable { name: s.table.clone() };
    let export = write_export(&bucket.client, &bucket.name, "b1", s, items, 3, Codec::Zstd).await;
    let pg = TempPgSchema::new("vf").await;
    verify_finds_each_fault(&postgres(&pg).await, &export).await;
    let db = TempSpannerDb::new("vf").await;
    verify_finds_each_fault(&spanner(&db).await, &export).await;
    verify_finds_each_fault(&bigtable().await, &export).await;
    drop(bt_guard);
}

/// A loader without table creation (the default): a table made beforehand (here with
/// `cbt`, as Terraform would) is found through the data API and loaded with no admin
/// call; a missing one is an error naming the table and the command that creates it,
/// and nothing creates it.
#[tokio::test]
async fn bigtable_without_table_creation_loads_a_pre_created_table_and_names_the_command_for_a_missing_one() {
    let bucket = TempGcsBucket::new("btpre").await;
    let pre = TempBigtable::new("btpre", &["d"]);
    let (_, items) = sample(50, true, false);
    let export = write_export(&bucket.client, &bucket.name, "b", schema(&pre.name, true, false), items, 2, Codec::Zstd).await;
    let gcp = crossdock_gcp::Gcp::from_env();
    let t = BigtableTarget::connect(&gcp, &crossdock_tests::gcp_project(), &crossdock_tests::bigtable_instance(), "d", 1_700_000_000_000_000, false)
        .await
        .expect("connect");
    let summary = load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await.expect("load into the pre-created table");
    assert_eq!((summary.rows_in_target, summary.table_created), (50, false), "{summary:?}");
    let admin = || t.stats().admin_connections.load(Ordering::Relaxed);
    assert_eq!(admin(), 0, "no admin call for an existing table");
    verify_all(&t, &export).await;

    let (s, items) = sample(5, true, false);
    let missing = s.table.clone();
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, 1, Codec::Zstd).await;
    let e = load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await.expect_err("no table, no creation");
    let text = e.to_string();
    let command = format!(
        "cbt -project {} -instance {} createtable {missing} families=d:maxversions=1",
        crossdock_tests::gcp_project(),
        crossdock_tests::bigtable_instance()
    );
    assert!(text.contains(&format!("tables/{missing}")) && text.contains(&command) && text.contains("create_tables"), "{text}");
    assert!(matches!(e, LoadError::NotFound { .. }), "{e:?}");
    let again = load_export(&t, &export, BatchConfig::default(), LoadOptions::default()).await.expect_err("still missing: nothing created it");
    assert!(again.to_string().contains(&command));
    assert_eq!(admin(), 0, "nor for a missing one the loader may not create");
    // Allowed to create, the same loader goes through the admin API once and loads.
    let creator = BigtableTarget::connect(&gcp, &crossdock_tests::gcp_project(), &crossdock_tests::bigtable_instance(), "d", 1_700_000_000_000_000, true)
        .await
        .expect("connect");
    let _cleanup = TempBigtable { name: missing.clone() };
    let created = load_export(&creator, &export, BatchConfig::default(), LoadOptions::default()).await.expect("created and loaded");
    assert!(created.table_created && created.rows_in_target == 5, "{created:?}");
    assert_eq!(creator.stats().admin_connections.load(Ordering::Relaxed), 1);
}
