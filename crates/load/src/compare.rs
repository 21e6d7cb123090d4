//! Source against target, row by row, with DynamoDB's equality (`verify`, and any
//! other reader of source items). The source streams in any order; each batch of its
//! rows is looked up in the target by primary key, so memory holds one batch whatever
//! the table's size. Target rows whose keys the source lacks cannot be named that
//! way: they are counted as the target's row count minus the source rows it holds.

use crate::error::LoadError;
use crate::schema::{items_equal, typed_json, Row, TableModel};
use crate::sink::Target;
use crossdock_core::item::{AttributeValue, Item};
use serde::Serialize;
use std::collections::HashMap;

/// The outcome of a full read-back comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub source_items: u64,
    /// Source items the model rejects (expected to be absent).
    pub rejected: u64,
    pub target_rows: u64,
    pub matching: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Up to 20 examples of each problem.
    pub examples: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }
}

/// A row's primary key as text, numbers in one form (`1.50` and `1.5` are one key, as
/// in DynamoDB), so a key read back from a target matches the exported one.
fn key_text(model: &TableModel, item: &Item) -> String {
    model
        .primary_key
        .iter()
        .map(|&i| match item.get(&model.columns[i].attribute) {
            Some(AttributeValue::N(n)) => crate::decimal::Decimal::parse(n).map(|d| format!("N:{}", d.to_plain())).unwrap_or_else(|| n.clone()),
            Some(v) => typed_json(v),
            None => String::new(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// Source rows looked up in the target per call.
const BATCH: usize = 500;

/// A comparison in progress: source items go in one at a time, in any order; every
/// [`BATCH`] of them is looked up in the target and counted.
pub struct Comparison<'a, T: Target> {
    target: &'a T,
    model: &'a TableModel,
    report: VerifyReport,
    found: u64,
    batch: Vec<(String, Item, Row)>,
}

impl<'a, T: Target> Comparison<'a, T> {
    pub fn new(target: &'a T, model: &'a TableModel) -> Self {
        Comparison { target, model, report: VerifyReport::default(), found: 0, batch: Vec::with_capacity(BATCH) }
    }

    /// One source item. Items the model rejects count as rejected (the load left them
    /// out and wrote them to its reject file).
    pub async fn push(&mut self, item: Item) -> Result<(), LoadError> {
        self.report.source_items += 1;
        match self.model.to_row(&item) {
            Ok(row) => self.batch.push((key_text(self.model, &item), item, row)),
            Err(_) => self.report.rejected += 1,
        }
        if self.batch.len() >= BATCH {
            self.found += compare_batch(self.target, self.model, &mut self.batch, &mut self.report).await?;
        }
        Ok(())
    }

    /// A source line that is not an item at all.
    pub fn reject(&mut self) {
        self.report.source_items += 1;
        self.report.rejected += 1;
    }

    /// Compares what is left and counts the target rows no source item accounted for.
    pub async fn finish(mut self) -> Result<VerifyReport, LoadError> {
        self.found += compare_batch(self.target, self.model, &mut self.batch, &mut self.report).await?;
        let mut report = self.report;
        report.target_rows = self.target.count_rows(self.model).await?;
        report.extra = report.target_rows.saturating_sub(self.found);
        if report.extra > 0 {
            let text = format!("{} target rows have keys the source does not have", report.extra);
            note(&mut report, text);
        }
        Ok(report)
    }

    /// [`Comparison::finish`] for a source that is a sample of the table: target rows
    /// outside the sample cannot be told from extra ones, so extra rows are not counted.
    pub async fn finish_sample(mut self) -> Result<VerifyReport, LoadError> {
        self.found += compare_batch(self.target, self.model, &mut self.batch, &mut self.report).await?;
        let mut report = self.report;
        report.target_rows = self.target.count_rows(self.model).await?;
        Ok(report)
    }
}

fn note(report: &mut VerifyReport, s: String) {
    if report.examples.len() < 20 {
        report.examples.push(s);
    }
}

/// Looks `batch` up in the target, records each row as matching, different or
/// missing, empties the batch and returns how many of its rows the target has.
async fn compare_batch<T: Target>(target: &T, model: &TableModel, batch: &mut Vec<(String, Item, Row)>, report: &mut VerifyReport) -> Result<u64, LoadError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let rows: Vec<Row> = batch.iter().map(|(_, _, row)| row.clone()).collect();
    let mut back: HashMap<String, Item> = HashMap::with_capacity(rows.len());
    for row in target.read_keys(model, &rows).await? {
        let item =
            model.to_item(&row).map_err(|m| LoadError::Target { target: "verify", op: "decode", table: model.name.clone(), message: m, retryable: false })?;
        back.insert(key_text(model, &item), item);
    }
    let mut found = 0;
    for (key, src, _) in batch.drain(..) {
        match back.remove(&key) {
            None => {
                report.missing += 1;
                note(report, format!("missing row {key}"));
            }
            Some(item) => {
                found += 1;
                if items_equal(&src, &item) {
                    report.matching += 1;
                } else {
                    report.different += 1;
                    let attrs: Vec<&String> = src
                        .keys()
                        .chain(item.keys().filter(|a| !src.contains_key(*a)))
                        .filter(|a| match (src.get(*a), item.get(*a)) {
                            (Some(x), Some(y)) => !crate::schema::values_equal(x, y),
                            _ => true,
                        })
                        .collect();
                    note(report, format!("row {key} differs in {attrs:?}"));
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TargetKind;
    use crate::sink::memory::MemoryTarget;
    use crossdock_core::item::parse_line;
    use crossdock_core::manifest::TypeStats;
    use crossdock_core::schema::TableSchema;

    fn schema() -> TableSchema {
        serde_json::from_value(serde_json::json!({
            "format_version": 1, "table": "t", "key_schema": [{"name": "pk", "role": "HASH"}, {"name": "sk", "role": "RANGE"}],
            "attribute_definitions": [{"name": "pk", "type": "S"}, {"name": "sk", "type": "N"}],
            "global_secondary_indexes": [], "local_secondary_indexes": [], "billing_mode": "PAY_PER_REQUEST",
            "capacity_before": null, "item_count_estimate": 0, "size_bytes_estimate": 0, "total_segments": 1, "crossdock_version": "test"
        }))
        .expect("schema")
    }

    fn item(i: usize, v: &str) -> Item {
        parse_line(&format!(r#"{{"Item":{{"pk":{{"S":"p{i}"}},"sk":{{"N":"{}.50"}},"v":{{"S":"{v}"}}}}}}"#, i % 3), 1).expect("item")
    }

    /// A model for items `0..n`, a memory target loaded with `rows`, and the report of
    /// comparing items `0..n` against it.
    async fn compare(n: usize, target_items: &[Item]) -> VerifyReport {
        let source: Vec<Item> = (0..n).map(|i| item(i, "x")).collect();
        let mut stats = TypeStats::default();
        for i in source.iter().chain(target_items) {
            stats.observe(i, |v| typed_json(v).len());
        }
        let model = TableModel::infer(TargetKind::Postgres, &schema(), &stats, None).expect("model");
        let t = MemoryTarget::new(TargetKind::Postgres);
        t.ensure_table(&model).await.expect("table");
        let rows: Vec<Row> = target_items.iter().map(|i| model.to_row(i).expect("row")).collect();
        t.write_batch(&model, &rows).await.expect("write");
        let mut cmp = Comparison::new(&t, &model);
        for i in source {
            cmp.push(i).await.expect("push");
        }
        cmp.reject();
        cmp.finish().await.expect("finish")
    }

    #[tokio::test]
    async fn equal_tables_compare_equal_across_batches() {
        let items: Vec<Item> = (0..1_234).map(|i| item(i, "x")).collect();
        let r = compare(1_234, &items).await;
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.source_items, r.rejected, r.matching, r.target_rows), (1_235, 1, 1_234, 1_234));
    }

    #[tokio::test]
    async fn a_sample_counts_no_extra_rows() {
        let items: Vec<Item> = (0..100).map(|i| item(i, "x")).collect();
        let mut stats = TypeStats::default();
        items.iter().for_each(|i| stats.observe(i, |v| typed_json(v).len()));
        let model = TableModel::infer(TargetKind::Postgres, &schema(), &stats, None).expect("model");
        let t = MemoryTarget::new(TargetKind::Postgres);
        t.ensure_table(&model).await.expect("table");
        t.write_batch(&model, &items.iter().map(|i| model.to_row(i).expect("row")).collect::<Vec<_>>()).await.expect("write");
        let mut cmp = Comparison::new(&t, &model);
        for i in items.iter().take(10) {
            cmp.push(i.clone()).await.expect("push");
        }
        let r = cmp.finish_sample().await.expect("finish");
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.matching, r.extra, r.target_rows), (10, 0, 100));
    }

    #[tokio::test]
    async fn each_kind_of_difference_is_counted_and_named() {
        let mut items: Vec<Item> = (1..700).map(|i| item(i, "x")).collect();
        items[10] = item(11, "changed");
        items.push(item(5_000, "x"));
        let r = compare(700, &items).await;
        assert_eq!((r.missing, r.different, r.extra, r.matching), (1, 1, 1, 698), "{r:?}");
        assert!(r.examples.iter().any(|e| e.starts_with("missing row") && e.contains("p0")), "{r:?}");
        assert!(r.examples.iter().any(|e| e.contains("p11") && e.contains("\"v\"")), "{r:?}");
        assert!(r.examples.iter().any(|e| e.contains("1 target rows")), "{r:?}");
    }
}
