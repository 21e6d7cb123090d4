//! An in-memory target: tables are maps from primary key to row, with the columns and
//! indexes they were created with. It passes the conformance suite like the real
//! targets, keeps the loader's, verify's and the catch-up's decisions testable in
//! `cargo test` without a server, and can be told to fail writes to exercise retries
//! and progress records.

use super::{BatchLimits, CallStats, Target};
use crate::decimal::Decimal;
use crate::error::LoadError;
use crate::schema::{compat_diff, Cell, Column, Row, TableModel, TargetKind};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Tables held in memory, with the identifier rules and types of `kind`.
#[derive(Debug)]
pub struct MemoryTarget {
    kind: TargetKind,
    tables: Mutex<HashMap<String, Table>>,
    /// The next this-many writes fail (retryably).
    fail_writes: AtomicU32,
    stats: CallStats,
}

/// One table: the shape it was created with, its indexes and its rows by key.
#[derive(Debug, Default)]
struct Table {
    /// (column name, type, nullable), as `compat_diff` compares them.
    columns: Vec<(String, String, bool)>,
    primary_key: Vec<String>,
    indexes: Vec<String>,
    rows: BTreeMap<String, Row>,
}

impl Table {
    fn of(model: &TableModel) -> Table {
        Table {
            columns: model.columns.iter().map(|c| (c.name.clone(), format!("{:?}", c.ty), !c.key)).collect(),
            primary_key: model.primary_key.iter().map(|&k| model.columns[k].name.clone()).collect(),
            ..Table::default()
        }
    }
}

impl MemoryTarget {
    pub fn new(kind: TargetKind) -> Self {
        MemoryTarget { kind, tables: Mutex::default(), fail_writes: AtomicU32::new(0), stats: CallStats::default() }
    }

    /// Makes the next `n` calls of `write_batch` or `delete_keys` fail with a retryable error.
    pub fn fail_next_writes(&self, n: u32) {
        self.fail_writes.store(n, Ordering::SeqCst);
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, HashMap<String, Table>> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn injected_failure(&self, model: &TableModel, op: &'static str) -> Result<(), LoadError> {
        let left = self.fail_writes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match left {
            Ok(_) => Err(LoadError::Target { target: "memory", op, table: model.name.clone(), message: "injected failure".into(), retryable: true }),
            Err(_) => Ok(()),
        }
    }

    fn missing(model: &TableModel, op: &'static str) -> LoadError {
        LoadError::Target { target: "memory", op, table: model.name.clone(), message: "no such table".into(), retryable: false }
    }
}

/// The primary key of a row as text; numbers in one form, as the services compare them.
fn key(model: &TableModel, row: &Row) -> String {
    model
        .primary_key
        .iter()
        .map(|&k| match &row[k] {
            Cell::Num(n) => Decimal::parse(n).map_or_else(|| n.clone(), |d| d.to_plain()),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join("\u{0}")
}

impl Target for MemoryTarget {
    fn kind(&self) -> TargetKind {
        self.kind
    }

    fn destination(&self, model: &TableModel) -> String {
        format!("memory/{}", model.name)
    }

    fn ddl(&self, model: &TableModel) -> Vec<String> {
        vec![format!("create {}", model.name)]
    }

    fn batch_limits(&self, _model: &TableModel) -> BatchLimits {
        BatchLimits { start: 100, max: 1_000, writers: 2, basis: "in memory".into() }
    }

    async fn ensure_table(&self, model: &TableModel) -> Result<bool, LoadError> {
        let mut tables = self.tables();
        let Some(table) = tables.get(&model.name) else {
            tables.insert(model.name.clone(), Table::of(model));
            return Ok(true);
        };
        // Bigtable has no column types to disagree on.
        if self.kind == TargetKind::Bigtable {
            return Ok(false);
        }
        let diff = compat_diff(model, &table.columns, &table.primary_key, |t| format!("{t:?}"));
        if diff.is_empty() {
            Ok(false)
        } else {
            Err(LoadError::Incompatible { target: "memory".into(), table: model.name.clone(), diff: diff.join("\n") })
        }
    }

    async fn add_columns(&self, model: &TableModel, columns: &[Column]) -> Result<(), LoadError> {
        let mut tables = self.tables();
        let table = tables.get_mut(&model.name).ok_or_else(|| Self::missing(model, "add columns"))?;
        for c in columns {
            if !table.columns.iter().any(|(n, _, _)| *n == c.name) {
                table.columns.push((c.name.clone(), format!("{:?}", c.ty), true));
            }
        }
        Ok(())
    }

    async fn write_batch(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        self.injected_failure(model, "write")?;
        let mut tables = self.tables();
        let table = tables.get_mut(&model.name).ok_or_else(|| Self::missing(model, "write"))?;
        for r in rows {
            table.rows.insert(key(model, r), r.clone());
        }
        self.stats.record(rows.len(), rows.len());
        Ok(())
    }

    async fn create_indexes(&self, model: &TableModel) -> Result<(), LoadError> {
        let mut tables = self.tables();
        let table = tables.get_mut(&model.name).ok_or_else(|| Self::missing(model, "create index"))?;
        for ix in &model.indexes {
            if !table.indexes.contains(&ix.name) {
                table.indexes.push(ix.name.clone());
            }
        }
        Ok(())
    }

    async fn count_rows(&self, model: &TableModel) -> Result<u64, LoadError> {
        Ok(self.tables().get(&model.name).ok_or_else(|| Self::missing(model, "count"))?.rows.len() as u64)
    }

    /// As the target of its kind.
    fn count_reads_every_row(&self) -> bool {
        self.kind == TargetKind::Bigtable
    }

    async fn read_all(&self, model: &TableModel) -> Result<Vec<Row>, LoadError> {
        Ok(self.tables().get(&model.name).ok_or_else(|| Self::missing(model, "read"))?.rows.values().cloned().collect())
    }

    async fn read_keys(&self, model: &TableModel, rows: &[Row]) -> Result<Vec<Row>, LoadError> {
        let tables = self.tables();
        let table = tables.get(&model.name).ok_or_else(|| Self::missing(model, "read"))?;
        Ok(rows.iter().filter_map(|r| table.rows.get(&key(model, r)).cloned()).collect())
    }

    async fn delete_keys(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        self.injected_failure(model, "delete")?;
        let mut tables = self.tables();
        let table = tables.get_mut(&model.name).ok_or_else(|| Self::missing(model, "delete"))?;
        for r in rows {
            table.rows.remove(&key(model, r));
        }
        Ok(())
    }

    async fn list_indexes(&self, model: &TableModel) -> Result<Vec<String>, LoadError> {
        Ok(self.tables().get(&model.name).ok_or_else(|| Self::missing(model, "list indexes"))?.indexes.clone())
    }

    fn stats(&self) -> &CallStats {
        &self.stats
    }
}
