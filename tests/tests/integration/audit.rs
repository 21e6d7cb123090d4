//! `crossdock audit` against the local stack: a live table on moto's DynamoDB, its
//! export loaded into PostgreSQL by the real binary, then the audit's verdict on the
//! untouched copy, on one with a difference of each kind, and on a sample.

use crossdock_core::item::{AttributeValue, Item};
use crossdock_core::Codec;
use crossdock_load::schema::{TableModel, TargetKind};
use crossdock_load::sink::postgres::PostgresTarget;
use crossdock_load::sink::Target;
use crossdock_tests::load::{pipeline_toml, schema, write_export};
use crossdock_tests::pipeline::{work_dir, Proc};
use crossdock_tests::resources::*;
use crossdock_tests::sync::*;
use std::time::Duration;

/// A 38-digit number, the most DynamoDB keeps; `last` is its last digit.
fn big(last: u8) -> AttributeValue {
    AttributeValue::N(format!("1234567890123456789012345678901234567{last}"))
}

fn audited_item(pk: &str, n: i64) -> Item {
    let mut it = item(pk, n);
    it.insert("big".into(), big(1));
    it
}

async fn audit(dir: &std::path::Path, name: &str, args: &[String], extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut a = args.to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(["--output".into(), "json".into(), "--max-rcu".into(), "1000".into()]);
    let env = [("AWS_ENDPOINT_URL_DYNAMODB", moto_url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut p = Proc::spawn_with_env(dir, name, &a, &env);
    let st = p.wait(Duration::from_secs(180)).await;
    let out = std::fs::read_to_string(&p.stdout).unwrap_or_default();
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("audit output is not JSON ({e}): {out}\n{}", p.log_text()));
    (st.code(), report, p.log_text())
}

#[tokio::test]
async fn audit_passes_an_exact_copy_finds_each_kind_of_difference_and_samples_its_share() {
    let ddb = moto_dynamodb().await;
    let (moto, _) = create_table(&ddb, "audit", None).await;
    let table = moto.name.clone();
    let n = 200;
    for i in 0..n {
        put(&ddb, &table, &audited_item(&format!("k{i:04}"), i as i64)).await;
    }
    let bucket = TempGcsBucket::new("audit").await;
    let export = write_export(&bucket.client, &bucket.name, "b", schema(&table, false, false), scan(&ddb, &table).await, 2, Codec::Zstd).await;
    let pg = TempPgSchema::new("audit").await;
    let dir = work_dir("audit");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml("postgres", &pg.name, "", &format!("[[tables]]\nname = \"{table}\"\nroute = \"relational\""))).expect("pipeline");
    let args =
        |cmd: &str| -> Vec<String> { vec![cmd.into(), "--marker".into(), export.marker_url.clone(), "--pipeline".into(), pipeline.display().to_string()] };
    let mut load = Proc::spawn(&dir, "load", &[args("load"), vec!["--no-progress".into()]].concat());
    assert!(load.wait(Duration::from_secs(180)).await.success(), "load failed: {}", load.log_tail());

    let (code, r, log) = audit(&dir, "audit-clean", &args("audit"), &[]).await;
    assert_eq!(code, Some(0), "{r}\n{log}");
    assert_eq!((r["source_items"].as_u64(), r["matching"].as_u64(), r["missing"].as_u64()), (Some(n), Some(n), Some(0)), "{r}");
    assert_eq!((r["different"].as_u64(), r["extra"].as_u64(), r["sampled"].as_f64()), (Some(0), Some(0), Some(1.0)), "{r}");

    // One difference of each kind, made in the source (missing, an attribute changed),
    // in the target (an extra row) and a number changed in its 38th digit.
    put(&ddb, &table, &audited_item("new-in-source", 7)).await;
    let mut changed = audited_item("k0003", 3);
    changed.insert("s".into(), AttributeValue::S("changed".into()));
    put(&ddb, &table, &changed).await;
    let mut digit = audited_item("k0004", 4);
    digit.insert("big".into(), big(2));
    put(&ddb, &table, &digit).await;
    let target = PostgresTarget::connect(&crossdock_tests::stack_var("CROSSDOCK_PG_URL"), &pg.name).await.expect("connect");
    let model = TableModel::infer(TargetKind::Postgres, &export.marker.schema, &export.marker.type_stats, None).expect("model");
    delete(&ddb, &table, "k0005").await;
    let (code, r, log) = audit(&dir, "audit-diff", &args("audit"), &[]).await;
    assert_eq!(code, Some(7), "{r}\n{log}");
    assert_eq!((r["missing"].as_u64(), r["different"].as_u64(), r["extra"].as_u64()), (Some(1), Some(2), Some(1)), "{r}");
    let examples = r["examples"].to_string();
    assert!(examples.contains("new-in-source") && examples.contains("[\\\"s\\\"]") && examples.contains("[\\\"big\\\"]"), "{examples}");
    assert_eq!(target.count_rows(&model).await.expect("count"), n, "the audit writes nothing");

    // A tenth of the table: whole segments of a finer split, about that many items.
    let (code, r, log) = audit(&dir, "audit-sample", &args("audit"), &["--sample", "0.1", "--segments", "4"]).await;
    let read = r["source_items"].as_u64().unwrap_or(0);
    assert!(matches!(code, Some(0) | Some(7)), "{r}\n{log}");
    assert_eq!((r["total_segments"].as_u64(), r["segments_read"].as_u64()), (Some(40), Some(4)), "{r}");
    assert!((5..=60).contains(&read), "a tenth of {n} items, read {read}: {r}");
    assert_eq!(r["extra"].as_u64(), Some(0), "extra rows are not counted in a sample: {r}");
}
