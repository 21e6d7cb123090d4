//! Numbers are exact on every target: DynamoDB's extremes (38 digits, 1E-130,
//! 9.99…E+125), a 38-digit negative fraction and ordinary doubles, as a sort key, a
//! plain attribute, a number set and inside a map, loaded into Spanner, PostgreSQL and
//! Bigtable, read back digit for digit and verified; `verify` sees a rounded value; a
//! table of ordinary doubles loads into Spanner without a reject, or as FLOAT64 when the
//! pipeline asks for it.

use crossdock_core::item::{parse_line, AttributeValue, Item};
use crossdock_core::pipeline::BatchConfig;
use crossdock_core::Codec;
use crossdock_load::decimal::{canonical, numbers_equal};
use crossdock_load::run::{self, LoadOptions};
use crossdock_load::schema::{Cell, ColumnType, TableModel, TargetKind};
use crossdock_load::sink::Target;
use crossdock_load::LoadError;
use crossdock_tests::load::*;
use crossdock_tests::resources::*;

const HARD: [&str; 6] = [
    "12345678901234567890123456789012345678",
    "1E-130",
    "9.9999999999999999999999999999999999999E+125",
    "-0.000000000000000000000000000000000001",
    "37.774929123456",
    "0.7923361357004808",
];

/// One item per value: the value as sort key, plain attribute and inside a map, beside
/// a set holding every value.
fn hard_items() -> Vec<Item> {
    let set = HARD.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(",");
    HARD.iter()
        .enumerate()
        .map(|(i, n)| {
            let line =
                format!(r#"{{"Item":{{"pk":{{"S":"p{i}"}},"sk":{{"N":"{n}"}},"n":{{"N":"{n}"}},"ns":{{"NS":[{set}]}},"doc":{{"M":{{"v":{{"N":"{n}"}}}}}}}}}}"#);
            parse_line(&line, i as u64 + 1).unwrap_or_else(|e| panic!("item {i}: {e}"))
        })
        .collect()
}

/// `n` items whose `ratio` holds ordinary doubles as DynamoDB writes them (the shortest
/// text that reads back as the same double, e.g. `0.7923361357004808`).
fn double_items(n: usize) -> Vec<Item> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|i| {
            // xorshift: deterministic, spread over every digit count a double prints with.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let ratio = (state >> 11) as f64 / (1u64 << 53) as f64;
            let line = format!(r#"{{"Item":{{"pk":{{"S":"d{i:05}"}},"ratio":{{"N":"{ratio}"}}}}}}"#);
            parse_line(&line, i as u64 + 1).unwrap_or_else(|e| panic!("item {i}: {e}"))
        })
        .collect()
}

async fn load_and_verify<T: Target>(t: &T, export: &WrittenExport, model: &TableModel) {
    let marker = crossdock_load::marker::read(crossdock_tests::gcs().await, &export.marker_url).await.expect("read marker");
    let plan = run::batch_plan(&t.batch_limits(model), &BatchConfig::default());
    let n = export.items.len() as u64;
    let summary = run::load(&marker, t, model, &plan, &LoadOptions::default(), std::future::pending()).await.expect("load");
    assert_eq!((summary.rows_in_target, summary.rejected), (n, 0), "{:?}: {summary:?}", t.kind());
    let report = run::verify(&marker, t, model).await.expect("verify");
    assert!(report.ok() && report.matching == n, "{:?}: {report:?}", t.kind());
}

fn number(item: &Item, attr: &str) -> String {
    match &item[attr] {
        AttributeValue::N(n) => n.clone(),
        other => panic!("{attr} is {other:?}, not a number"),
    }
}

/// The text a target gives back for `source`: Bigtable keeps the exported text, the
/// relational targets the canonical decimal.
fn expected_text(kind: TargetKind, source: &str) -> String {
    match kind {
        TargetKind::Bigtable => source.to_string(),
        TargetKind::Spanner | TargetKind::Postgres => canonical(source).expect("a number"),
    }
}

/// Every row read back holds each number exactly, digit for digit.
async fn assert_exact<T: Target>(t: &T, model: &TableModel, items: &[Item]) {
    let rows = t.read_all(model).await.expect("read all");
    assert_eq!(rows.len(), items.len(), "{:?}: row count", t.kind());
    for row in &rows {
        let back = model.to_item(row).expect("decode row");
        let pk = &back["pk"];
        let src = items.iter().find(|i| &i["pk"] == pk).unwrap_or_else(|| panic!("unexpected row {back:?}"));
        let want = number(src, "n");
        for attr in ["sk", "n"] {
            assert_eq!(number(&back, attr), expected_text(t.kind(), &want), "{:?}: {attr} of {want}", t.kind());
        }
        let AttributeValue::Ns(set) = &back["ns"] else { panic!("ns is {:?}", back["ns"]) };
        let mut got = set.clone();
        let mut exp: Vec<String> = HARD.iter().map(|n| expected_text(t.kind(), n)).collect();
        got.sort();
        exp.sort();
        assert_eq!(got, exp, "{:?}: the set", t.kind());
        // Typed JSON keeps the exported text on every target.
        let AttributeValue::M(doc) = &back["doc"] else { panic!("doc is {:?}", back["doc"]) };
        assert_eq!(doc.get("v"), Some(&AttributeValue::N(want.clone())), "{:?}: inside a map", t.kind());
    }
}

/// Rewrites two rows with values equal to the originals as doubles but not as decimals;
/// `verify` must report both.
async fn assert_verify_sees_rounding<T: Target>(t: &T, export: &WrittenExport, model: &TableModel) {
    let col = model.columns.iter().position(|c| c.attribute == "n").expect("column n");
    let mut rows = Vec::new();
    for (source, rounded) in [
        // One unit in the 17th decimal: the same double.
        ("0.7923361357004808", "7.9233613570048081e-1"),
        // The 38-digit integer as a double prints it.
        ("12345678901234567890123456789012345678", "1.2345678901234568e37"),
    ] {
        assert_eq!(source.parse::<f64>().ok(), rounded.parse::<f64>().ok(), "{source} and {rounded} are one double");
        assert!(!numbers_equal(source, rounded));
        let item = export.items.iter().find(|i| number(i, "n") == source).expect("source item");
        let mut row = model.to_row(item).expect("converts");
        // As the column holds it: the exact text on Bigtable, canonical elsewhere.
        row[col] = Cell::Num(expected_text(t.kind(), rounded));
        rows.push(row);
    }
    t.write_batch(model, &rows).await.expect("rewrite two rows");
    let marker = crossdock_load::marker::read(crossdock_tests::gcs().await, &export.marker_url).await.expect("read marker");
    let report = run::verify(&marker, t, model).await.expect("verify");
    assert_eq!((report.different, report.matching), (2, export.items.len() as u64 - 2), "{:?}: {report:?}", t.kind());
}

async fn hard_export(prefix: &str) -> (TempGcsBucket, WrittenExport) {
    let bucket = TempGcsBucket::new(prefix).await;
    let s = schema(&crossdock_tests::unique_ident(prefix), true, false);
    let export = write_export(&bucket.client, &bucket.name, "b", s, hard_items(), 2, Codec::Zstd).await;
    (bucket, export)
}

fn model(kind: TargetKind, export: &WrittenExport) -> TableModel {
    TableModel::infer(kind, &export.marker.schema, &export.marker.type_stats, None).expect("model")
}

fn column_type(model: &TableModel, attr: &str) -> ColumnType {
    model.columns.iter().find(|c| c.attribute == attr).map(|c| c.ty).unwrap_or_else(|| panic!("no column {attr}"))
}

#[tokio::test]
async fn numbers_round_trip_exactly_through_spanner() {
    let (_bucket, export) = hard_export("numsp").await;
    let db = TempSpannerDb::new("num").await;
    let t = spanner(&db).await;
    let m = model(TargetKind::Spanner, &export);
    // More than NUMERIC's 29 + 9 digits: the canonical text.
    assert_eq!(
        (column_type(&m, "sk"), column_type(&m, "n"), column_type(&m, "ns")),
        (ColumnType::DecimalText, ColumnType::DecimalText, ColumnType::DecimalTextArray)
    );
    load_and_verify(&t, &export, &m).await;
    assert_exact(&t, &m, &export.items).await;
    assert_verify_sees_rounding(&t, &export, &m).await;
}

#[tokio::test]
async fn numbers_round_trip_exactly_through_postgres() {
    let (_bucket, export) = hard_export("numpg").await;
    let pg = TempPgSchema::new("num").await;
    let t = postgres(&pg).await;
    let m = model(TargetKind::Postgres, &export);
    assert_eq!((column_type(&m, "sk"), column_type(&m, "n"), column_type(&m, "ns")), (ColumnType::Numeric, ColumnType::Numeric, ColumnType::NumericArray));
    load_and_verify(&t, &export, &m).await;
    assert_exact(&t, &m, &export.items).await;
    assert_verify_sees_rounding(&t, &export, &m).await;
}

#[tokio::test]
async fn numbers_round_trip_exactly_through_bigtable() {
    let (_bucket, export) = hard_export("numbt").await;
    let _guard = TempBigtable { name: export.marker.schema.table.clone() };
    let t = bigtable().await;
    let m = model(TargetKind::Bigtable, &export);
    load_and_verify(&t, &export, &m).await;
    assert_exact(&t, &m, &export.items).await;
    assert_verify_sees_rounding(&t, &export, &m).await;
}

#[tokio::test]
async fn numbers_in_spanner_numeric_stay_numeric() {
    // Within 29 + 9 digits, NUMERIC holds every value: it is kept, and exact.
    let bucket = TempGcsBucket::new("numnu").await;
    let s = schema(&crossdock_tests::unique_ident("numnu"), false, false);
    let items: Vec<Item> = ["12.5", "-0.000000001", "99999999999999999999999999999.999999999", "1.50", "1E2"]
        .iter()
        .enumerate()
        .map(|(i, n)| parse_line(&format!(r#"{{"Item":{{"pk":{{"S":"p{i}"}},"n":{{"N":"{n}"}}}}}}"#), 1).expect("valid"))
        .collect();
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, 1, Codec::Zstd).await;
    let db = TempSpannerDb::new("numnu").await;
    let t = spanner(&db).await;
    let m = model(TargetKind::Spanner, &export);
    assert_eq!(column_type(&m, "n"), ColumnType::Numeric);
    load_and_verify(&t, &export, &m).await;
    for row in t.read_all(&m).await.expect("read all") {
        let back = m.to_item(&row).expect("decode");
        let src = export.items.iter().find(|i| i["pk"] == back["pk"]).expect("source");
        assert_eq!(number(&back, "n"), canonical(&number(src, "n")).expect("number"));
    }
}

#[tokio::test]
async fn ordinary_doubles_load_into_spanner_without_a_reject() {
    let bucket = TempGcsBucket::new("numdb").await;
    let s = schema(&crossdock_tests::unique_ident("numdb"), false, false);
    let items = double_items(2_000);
    assert!(items.iter().any(|i| number(i, "ratio").len() > 17), "doubles with 16+ fraction digits");
    let export = write_export(&bucket.client, &bucket.name, "b", s, items, 2, Codec::Zstd).await;
    let db = TempSpannerDb::new("numdb").await;
    let t = spanner(&db).await;
    let m = model(TargetKind::Spanner, &export);
    assert_eq!(column_type(&m, "ratio"), ColumnType::DecimalText);
    load_and_verify(&t, &export, &m).await;
    for row in t.read_all(&m).await.expect("read all") {
        let back = m.to_item(&row).expect("decode");
        let src = export.items.iter().find(|i| i["pk"] == back["pk"]).expect("source");
        assert_eq!(number(&back, "ratio"), number(src, "ratio"), "doubles' text is already canonical");
    }
}

/// The binary, as a user runs it: the doubles load and verify into Spanner; with
/// `float64_attributes` the column is FLOAT64 (and a doubles' shortest text still
/// verifies exactly); a key cannot be listed.
#[tokio::test]
async fn binary_loads_doubles_exactly_or_as_float64_when_asked() {
    let bucket = TempGcsBucket::new("numbn").await;
    let table = crossdock_tests::unique_ident("numbn");
    let export = write_export(&bucket.client, &bucket.name, "b", schema(&table, false, false), double_items(300), 1, Codec::Zstd).await;
    let dir = std::env::temp_dir().join(crossdock_tests::unique("numbn"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    // No index, so `auto` would route to Bigtable: the table is sent to Spanner.
    let run = |db: &TempSpannerDb, float64: &str, args: &[&str]| {
        let pipeline = dir.join(format!("{}.toml", db.path.rsplit('/').next().unwrap_or("db")));
        let extra = format!("[[tables]]\nname = \"{table}\"\nroute = \"relational\"\nfloat64_attributes = [{float64}]\n");
        std::fs::write(&pipeline, pipeline_toml("spanner", "", &db.path, &extra)).expect("write pipeline");
        std::process::Command::new(crossdock_tests::crossdock_bin())
            .args(args)
            .args(["--marker", &export.marker_url, "--pipeline"])
            .arg(&pipeline)
            .output()
            .expect("run crossdock")
    };
    let load = ["load", "--output", "json", "--no-progress"];
    let ok = |out: &std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "{what} exited {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for (prefix, float64, want) in [("numbe", "", ColumnType::DecimalText), ("numbf", "\"ratio\"", ColumnType::Float64)] {
        let db = TempSpannerDb::new(prefix).await;
        let out = run(&db, float64, &load);
        ok(&out, "load");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
        assert_eq!((summary["rows_in_target"].as_u64(), summary["rejected"].as_u64()), (Some(300), Some(0)), "{summary}");
        ok(&run(&db, float64, &["verify"]), "verify");
        // The table has the column type asked for: the model of the other choice is refused.
        let t = spanner(&db).await;
        let float64 = if want == ColumnType::Float64 { vec!["ratio".to_string()] } else { vec![] };
        let mut m = TableModel::infer_with(TargetKind::Spanner, &export.marker.schema, &export.marker.type_stats, None, &float64).expect("model");
        assert_eq!(column_type(&m, "ratio"), want);
        assert!(!t.ensure_table(&m).await.expect("the table matches"));
        let at = m.columns.iter().position(|c| c.attribute == "ratio").expect("ratio");
        m.columns[at].ty = if want == ColumnType::Float64 { ColumnType::DecimalText } else { ColumnType::Float64 };
        assert!(matches!(t.ensure_table(&m).await, Err(LoadError::Incompatible { .. })), "{want:?}");
    }
    let db = TempSpannerDb::new("numbk").await;
    let out = run(&db, "\"pk\"", &load);
    assert!(!out.status.success(), "a key as FLOAT64 is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLOAT64"), "{}", String::from_utf8_lossy(&out.stderr));
}
