//! The conformance suite every [`Target`] passes unchanged: the in-memory target in
//! this crate's unit tests, Spanner, PostgreSQL and Bigtable in the integration tests.
//! It also holds the sample schema and items (every DynamoDB type, awkward strings,
//! big and fractional numbers, a mixed-type attribute) the suites share, and
//! [`write_export`], which puts a relayed export (data parts + `_SUCCESS`) into a bucket
//! as the relay leaves it.

use crate::error::LoadError;
use crate::gcs::Gcs;
use crate::schema::{items_equal, typed_json, ColumnType, Row, TableModel, TargetKind};
use crate::sink::Target;
use crossdock_core::item::{parse_line, AttributeValue, Item, TypeTag};
use crossdock_core::layout::{DumpFile, ExportId, Timestamp};
use crossdock_core::manifest::TypeStats;
use crossdock_core::marker::{MarkerFile, SuccessMarker, Totals};
use crossdock_core::schema::{AttributeDefinition, BillingMode, KeyElement, KeyRole, Projection, SecondaryIndex, TableSchema};
use std::sync::atomic::Ordering;

/// A table schema: `pk` (S) [+ `sk` (N)], with an optional GSI `by_status` on `status` (S).
pub fn sample_schema(table: &str, with_sort_key: bool, gsi: bool) -> TableSchema {
    let key = |name: &str, role| KeyElement { name: name.into(), role };
    let mut key_schema = vec![key("pk", KeyRole::Hash)];
    let mut defs = vec![AttributeDefinition { name: "pk".into(), kind: TypeTag::S }];
    if with_sort_key {
        key_schema.push(key("sk", KeyRole::Range));
        defs.push(AttributeDefinition { name: "sk".into(), kind: TypeTag::N });
    }
    let mut gsis = vec![];
    if gsi {
        defs.push(AttributeDefinition { name: "status".into(), kind: TypeTag::S });
        gsis.push(SecondaryIndex { name: "by_status".into(), key_schema: vec![key("status", KeyRole::Hash)], projection: Projection::KeysOnly });
    }
    TableSchema {
        format_version: 1,
        table: table.into(),
        key_schema,
        attribute_definitions: defs,
        global_secondary_indexes: gsis,
        local_secondary_indexes: vec![],
        billing_mode: BillingMode::PayPerRequest,
        capacity_before: None,
        item_count_estimate: 0,
        size_bytes_estimate: 0,
        total_segments: 1,
        crossdock_version: crossdock_core::VERSION.into(),
        stream: None,
    }
}

/// `n` items covering every DynamoDB type (S N B BOOL NULL SS NS BS L M), awkward
/// strings, big and fractional numbers, and a mixed-type attribute.
pub fn all_types_items(n: usize, with_sort_key: bool) -> Vec<Item> {
    (0..n)
        .map(|i| {
            let sk = if with_sort_key { format!(r#","sk":{{"N":"{}"}}"#, i % 7) } else { String::new() };
            let mixed = if i % 2 == 0 { format!(r#"{{"S":"m{i}"}}"#) } else { format!(r#"{{"N":"{i}"}}"#) };
            let line = format!(
                r#"{{"Item":{{"pk":{{"S":"user#{i} é\"日本\u0001"}}{sk},"status":{{"S":"s{}"}},"count":{{"N":"{}"}},"price":{{"N":"{}.{:02}"}},"big":{{"N":"1234567890123456789012345678{}"}},"blob":{{"B":"AAEC/w=="}},"flag":{{"BOOL":{}}},"nothing":{{"NULL":true}},"tags":{{"SS":["a","b c","{i}"]}},"nums":{{"NS":["1","{i}","-3"]}},"blobs":{{"BS":["AA==","/w=="]}},"list":{{"L":[{{"S":"x"}},{{"N":"1.5"}},{{"L":[]}},{{"M":{{}}}}]}},"map":{{"M":{{"k.e y":{{"S":"v"}},"n":{{"N":"-0.001"}},"nested":{{"M":{{"b":{{"BOOL":false}}}}}}}}}},"mixed":{mixed},"empty":{{"S":""}}}}}}"#,
                i % 3,
                i as i64 * 1_000_003 - 500,
                i,
                i % 100,
                i % 10,
                i % 2 == 0,
            );
            parse_line(&line, i as u64 + 1).unwrap_or_else(|e| panic!("sample item {i}: {e}\n{line}"))
        })
        .collect()
}

/// The model `kind` infers for table `table` holding `n` sample items with a sort
/// key (and the GSI when `gsi`), and the items.
pub fn sample_model(kind: TargetKind, table: &str, n: usize, gsi: bool) -> (TableModel, Vec<Item>) {
    let schema = sample_schema(table, true, gsi);
    let items = all_types_items(n, true);
    let mut stats = TypeStats::default();
    for i in &items {
        stats.observe(i, |v| typed_json(v).len());
    }
    (TableModel::infer(kind, &schema, &stats, None).expect("sample model"), items)
}

/// Reads the whole table back and checks every row equals its source item.
pub async fn assert_reads_back<T: Target>(t: &T, model: &TableModel, items: &[Item]) {
    let rows = t.read_all(model).await.expect("read all");
    assert_eq!(rows.len(), items.len(), "row count");
    let key = |i: &Item| model.primary_key.iter().map(|&k| typed_json(&i[&model.columns[k].attribute])).collect::<Vec<_>>().join("|");
    let mut by_key: std::collections::HashMap<String, &Item> = items.iter().map(|i| (key(i), i)).collect();
    for r in &rows {
        let back = model.to_item(r).expect("decode row");
        let src = by_key.remove(&key(&back)).unwrap_or_else(|| panic!("unexpected row {back:?}"));
        assert!(items_equal(src, &back), "{:?}: row differs\nsource: {src:?}\ntarget: {back:?}", t.kind());
    }
    assert!(by_key.is_empty(), "missing rows: {:?}", by_key.keys().collect::<Vec<_>>());
}

/// Writes `items` as `files` data parts of `codec` under a new export of `schema` in
/// `batch`, then its `_SUCCESS` marker (type statistics from the items, as the
/// exporter computes them). Returns the marker as written.
pub async fn write_export(gcs: &Gcs, batch: &str, schema: TableSchema, items: &[Item], files: usize, codec: crossdock_core::Codec) -> SuccessMarker {
    let export = ExportId::new(batch, &schema.table, Timestamp::now()).expect("valid export id");
    let mut stats = TypeStats::default();
    for it in items {
        stats.observe(it, |v| {
            let mut one = Item::new();
            one.insert(String::new(), v.clone());
            crossdock_core::item::to_line(&one).len()
        });
    }
    let per = items.len().div_ceil(files.max(1)).max(1);
    let mut marker_files = Vec::new();
    let mut totals = Totals::default();
    for (p, chunk) in items.chunks(per).enumerate() {
        let mut raw = Vec::new();
        for it in chunk {
            raw.extend(crossdock_core::item::to_line(it).into_bytes());
            raw.push(b'\n');
        }
        let stored = crate::marker::compress(codec, &raw).await.expect("compress");
        let file = DumpFile::Part { segment: 0, part: p as u32, codec };
        let f = MarkerFile {
            name: file.s3_name(),
            segment: 0,
            part: p as u32,
            items: chunk.len() as u64,
            raw_bytes: raw.len() as u64,
            stored_bytes: stored.len() as u64,
            sha256: crossdock_core::stamp::sha256_hex(&raw),
            stored_crc32c: Some(crossdock_core::marker::Crc32c::of(&stored)),
        };
        gcs.write(&export.gcs_key(&file, codec), stored, "application/octet-stream").await.expect("write part");
        totals.files += 1;
        totals.items += f.items;
        totals.raw_bytes += f.raw_bytes;
        totals.stored_bytes += f.stored_bytes;
        marker_files.push(f);
    }
    let marker = SuccessMarker {
        format_version: crossdock_core::FORMAT_VERSION,
        export: export.clone(),
        codec,
        schema,
        files: marker_files,
        totals,
        type_stats: stats,
        written_at: "2026-01-01T00:00:00Z".into(),
        written_by: "crossdock-tests".into(),
    };
    gcs.write(&export.marker_key(), serde_json::to_vec_pretty(&marker).expect("marker json"), "application/json").await.expect("write marker");
    marker
}

/// The suite: table creation (idempotent, incompatible shapes refused), upserts
/// without duplicates, reads of everything and by key, deletes by key, indexes. The
/// table `model` names must not exist yet.
pub async fn run<T: Target>(t: &T, model: &TableModel, items: &[Item]) {
    assert!(t.ensure_table(model).await.expect("ensure_table creates"), "{:?}: first ensure_table creates", t.kind());
    assert!(!t.ensure_table(model).await.expect("ensure_table again"), "second ensure_table finds it");
    let rows: Vec<Row> = items.iter().map(|i| model.to_row(i).expect("converts")).collect();
    let half = rows.len() / 2;
    t.write_batch(model, &rows[..half]).await.expect("first half");
    // Overlapping rewrite: upserts, no duplicates.
    t.write_batch(model, &rows).await.expect("everything");
    t.write_batch(model, &rows[..3]).await.expect("again");
    assert_eq!(t.count_rows(model).await.expect("count"), items.len() as u64);
    assert_reads_back(t, model, items).await;
    // Lookups by key: present keys come back whole, an absent one does not.
    let mut absent = items[0].clone();
    absent.insert("pk".into(), AttributeValue::S("no such key".into()));
    let asked = [rows[0].clone(), model.to_row(&absent).expect("converts"), rows[rows.len() - 1].clone()];
    let mut got: Vec<Item> = t.read_keys(model, &asked).await.expect("read keys").iter().map(|r| model.to_item(r).expect("decode")).collect();
    assert_eq!(got.len(), 2, "{:?}: {got:?}", t.kind());
    got.sort_by_key(|i| i["pk"] == items[0]["pk"]);
    assert!(items_equal(&got[1], &items[0]) && items_equal(&got[0], &items[items.len() - 1]), "{:?}: {got:?}", t.kind());
    assert!(t.read_keys(model, &[]).await.expect("no keys").is_empty());
    // Deletes by key: the rows go, an absent key is no error, the others stay.
    let gone = [rows[1].clone(), model.to_row(&absent).expect("converts"), rows[2].clone()];
    t.delete_keys(model, &gone).await.expect("delete keys");
    t.delete_keys(model, &gone[..1]).await.expect("deleting again");
    assert_eq!(t.count_rows(model).await.expect("count"), items.len() as u64 - 2, "{:?}", t.kind());
    assert!(t.read_keys(model, &gone).await.expect("read deleted").is_empty(), "{:?}", t.kind());
    t.write_batch(model, &rows[1..3]).await.expect("write back");
    t.create_indexes(model).await.expect("indexes");
    t.create_indexes(model).await.expect("indexes are idempotent");
    assert_eq!(t.list_indexes(model).await.expect("list indexes").len(), model.indexes.len());
    assert!(t.stats().calls.load(Ordering::Relaxed) >= 3);
    // An attribute first seen after the load (the catch-up's case): a JSON column added
    // to the existing table — twice without error — that the wider model fits and that
    // holds the value.
    let mut wider = model.clone();
    let added = wider.add_attribute("added later").expect("a new attribute");
    t.add_columns(&wider, std::slice::from_ref(&added)).await.expect("add column");
    t.add_columns(&wider, std::slice::from_ref(&added)).await.expect("adding it again");
    assert!(!t.ensure_table(&wider).await.expect("the table fits the wider model"), "{:?}", t.kind());
    let mut item = items[0].clone();
    item.insert("added later".into(), AttributeValue::M([("n".to_string(), AttributeValue::N("1.50".into()))].into_iter().collect()));
    let row = wider.to_row(&item).expect("converts");
    t.write_batch(&wider, std::slice::from_ref(&row)).await.expect("write with the new column");
    let back: Vec<Item> = t.read_keys(&wider, &[row]).await.expect("read back").iter().map(|r| wider.to_item(r).expect("decode")).collect();
    assert!(back.len() == 1 && items_equal(&back[0], &item), "{:?}: {back:?}", t.kind());
    // The same table seen by an export that needs another column type: refused.
    let mut other = model.clone();
    let (i, _) = other.columns.iter().enumerate().find(|(_, c)| c.attribute == "pk").expect("pk");
    other.columns[i].ty = if t.kind() == TargetKind::Bigtable { ColumnType::String } else { ColumnType::Bytes };
    if t.kind() != TargetKind::Bigtable {
        match t.ensure_table(&other).await {
            Err(LoadError::Incompatible { diff, .. }) => assert!(diff.contains(&model.columns[i].name), "{diff}"),
            r => panic!("incompatible table accepted: {r:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::memory::MemoryTarget;
    use crate::sink::AnyTarget;

    /// The suite on the in-memory target, with each real target's identifier and type
    /// rules, through the type the binary holds.
    #[tokio::test]
    async fn the_in_memory_target_passes_the_conformance_suite_for_every_kind() {
        for (kind, gsi) in [(TargetKind::Spanner, true), (TargetKind::Postgres, true), (TargetKind::Bigtable, false)] {
            let t = AnyTarget::Memory(MemoryTarget::new(kind));
            let (model, items) = sample_model(kind, "conformance", 40, gsi);
            run(&t, &model, &items).await;
        }
    }
}
