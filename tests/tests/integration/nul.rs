//! U+0000 in DynamoDB strings, which PostgreSQL `text` and `jsonb` cannot hold: in the
//! partition key, a plain string, a string set and a nested map (value and key), loaded
//! into PostgreSQL by the library and by the real binary, and read back equal.

use crossdock_core::item::{parse_line, Item};
use crossdock_core::pipeline::BatchConfig;
use crossdock_core::Codec;
use crossdock_load::run::{self, LoadOptions};
use crossdock_load::schema::{items_equal, TableModel, TargetKind};
use crossdock_load::sink::postgres::PostgresTarget;
use crossdock_load::sink::Target;
use crossdock_tests::load::*;
use crossdock_tests::resources::*;

/// Items with U+0000 everywhere a string can be, beside ordinary ones and strings that
/// look like the escaped form (a leading U+FFFF, `\0`, a backslash at the end).
fn nul_items() -> Vec<Item> {
    let lines = [
        r#"{"Item":{"pk":{"S":"a\u0000b"},"status":{"S":"s\u0000"},"plain":{"S":"x\u0000y\\0\\"},"tags":{"SS":["t\u0000","\u0000","u"]},"doc":{"M":{"k":{"S":"v\u0000"},"k\u0000":{"M":{"deep":{"L":[{"S":"\u0000\u0000"},{"SS":["\u0000z"]}]}}}}}}}"#,
        r#"{"Item":{"pk":{"S":"\u0000"},"status":{"S":"s"},"plain":{"S":"\uffff\u0000"},"tags":{"SS":["a"]},"doc":{"M":{"\uffff":{"S":"\\0"}}}}}"#,
        r#"{"Item":{"pk":{"S":"ab"},"status":{"S":"\uffff"},"plain":{"S":"\\0"},"tags":{"SS":["\uffff\\0"]},"doc":{"M":{"k":{"N":"1"}}}}}"#,
        r#"{"Item":{"pk":{"S":"\uffffa\\0b"},"status":{"S":"s"},"plain":{"S":""},"tags":{"SS":["b"]},"doc":{"M":{}}}}"#,
    ];
    lines.iter().enumerate().map(|(i, l)| parse_line(l, i as u64 + 1).unwrap_or_else(|e| panic!("item {i}: {e}"))).collect()
}

async fn postgres(schema: &TempPgSchema) -> PostgresTarget {
    PostgresTarget::connect(&crossdock_tests::stack_var("CROSSDOCK_PG_URL"), &schema.name).await.expect("connect postgres")
}

fn model_for(export: &WrittenExport) -> TableModel {
    TableModel::infer(TargetKind::Postgres, &export.marker.schema, &export.marker.type_stats, None).expect("model")
}

async fn verify_all(t: &PostgresTarget, export: &WrittenExport) {
    let marker = crossdock_load::marker::read(crossdock_tests::gcs().await, &export.marker_url).await.expect("read marker");
    let model = model_for(export);
    let report = run::verify(&marker, t, &model).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.matching, export.items.len() as u64, "{report:?}");
    let rows = t.read_all(&model).await.expect("read all");
    assert_eq!(rows.len(), export.items.len(), "row count");
    for r in &rows {
        let back = model.to_item(r).expect("decode row");
        assert!(export.items.iter().any(|src| items_equal(src, &back)), "row read back matches no source item: {back:?}");
    }
}

#[tokio::test]
async fn nul_in_keys_strings_sets_and_maps_round_trips_through_postgres() {
    let bucket = TempGcsBucket::new("nul").await;
    let items = nul_items();
    let n = items.len() as u64;
    let s = schema(&crossdock_tests::unique_ident("nul"), false, true);
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, 2, Codec::Zstd).await;
    let pg = TempPgSchema::new("nul").await;
    let t = postgres(&pg).await;
    let marker = crossdock_load::marker::read(crossdock_tests::gcs().await, &export.marker_url).await.expect("read marker");
    let model = model_for(&export);
    let plan = run::batch_plan(&t.batch_limits(&model), &BatchConfig::default());
    let summary = run::load(&marker, &t, &model, &plan, &LoadOptions::default(), std::future::pending()).await.expect("load");
    assert_eq!((summary.rows_in_target, summary.rejected), (n, 0), "{summary:?}");
    verify_all(&t, &export).await;

    // The upsert path (every key already there) writes the same representation.
    let forced = run::load(&marker, &t, &model, &plan, &LoadOptions { force: true, ..Default::default() }, std::future::pending()).await.expect("forced load");
    assert_eq!((forced.rows_in_target, forced.rejected), (n, 0), "{forced:?}");
    verify_all(&t, &export).await;
}

#[tokio::test]
async fn binary_loads_and_verifies_nul_strings_into_postgres() {
    let bucket = TempGcsBucket::new("nulb").await;
    let items = nul_items();
    let n = items.len();
    let s = schema(&crossdock_tests::unique_ident("nulb"), false, true);
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, 1, Codec::Gzip).await;
    let pg = TempPgSchema::new("nulb").await;
    let dir = std::env::temp_dir().join(crossdock_tests::unique("nulb"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml("postgres", &pg.name, "", "")).expect("write pipeline");
    let run = |cmd: &str| {
        let args: &[&str] = if cmd == "load" { &["load", "--output", "json", "--no-progress"] } else { &["verify"] };
        std::process::Command::new(crossdock_tests::crossdock_bin())
            .args(args)
            .args(["--marker", &export.marker_url, "--pipeline"])
            .arg(&pipeline)
            .output()
            .expect("run crossdock")
    };
    let out = run("load");
    assert!(out.status.success(), "load exited {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!((summary["rows_in_target"].as_u64(), summary["rejected"].as_u64()), (Some(n as u64), Some(0)), "{summary}");
    let out = run("verify");
    assert!(out.status.success(), "verify exited {:?}: {}{}", out.status.code(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
