//! The one target type the binary holds: whichever target the routing named, behind
//! the [`Target`] trait, so callers write their code once instead of once per target.

use super::bigtable::BigtableTarget;
#[cfg(any(test, feature = "testing"))]
use super::memory::MemoryTarget;
use super::pgcopy::CopyRows;
use super::postgres::PostgresTarget;
use super::spanner::SpannerTarget;
use super::{BatchLimits, CallStats, Target};
use crate::error::LoadError;
use crate::schema::{Column, Row, TableModel, TargetKind};
use crossdock_core::pipeline::TargetConfig;

/// A connected target of any kind.
// One per load, so the size of the largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum AnyTarget {
    Spanner(SpannerTarget),
    Postgres(PostgresTarget),
    Bigtable(BigtableTarget),
    #[cfg(any(test, feature = "testing"))]
    Memory(MemoryTarget),
}

/// Connects to the target `config` names, the Google ones signed in through `gcp`.
/// `timestamp_micros` is the cell version Bigtable writes (the export's time, so a
/// later change wins over the bulk copy).
pub async fn connect(gcp: &crossdock_gcp::Gcp, config: &TargetConfig, timestamp_micros: i64) -> Result<AnyTarget, LoadError> {
    Ok(match config {
        TargetConfig::Spanner { database } => AnyTarget::Spanner(SpannerTarget::connect(gcp, database).await?),
        TargetConfig::Postgres { url, schema } => AnyTarget::Postgres(PostgresTarget::connect(url, schema).await?),
        TargetConfig::Bigtable { project, instance, column_family, create_tables } => {
            AnyTarget::Bigtable(BigtableTarget::connect(gcp, project, instance, column_family, timestamp_micros, *create_tables).await?)
        }
    })
}

/// Runs `$body` with `$t` bound to the inner target, whatever its kind.
macro_rules! each {
    ($self:expr, |$t:ident| $body:expr) => {
        match $self {
            AnyTarget::Spanner($t) => $body,
            AnyTarget::Postgres($t) => $body,
            AnyTarget::Bigtable($t) => $body,
            #[cfg(any(test, feature = "testing"))]
            AnyTarget::Memory($t) => $body,
        }
    };
}

impl Target for AnyTarget {
    fn kind(&self) -> TargetKind {
        each!(self, |t| t.kind())
    }
    fn destination(&self, model: &TableModel) -> String {
        each!(self, |t| t.destination(model))
    }
    fn ddl(&self, model: &TableModel) -> Vec<String> {
        each!(self, |t| t.ddl(model))
    }
    fn batch_limits(&self, model: &TableModel) -> BatchLimits {
        each!(self, |t| t.batch_limits(model))
    }
    async fn ensure_table(&self, model: &TableModel) -> Result<bool, LoadError> {
        each!(self, |t| t.ensure_table(model).await)
    }
    async fn add_columns(&self, model: &TableModel, columns: &[Column]) -> Result<(), LoadError> {
        each!(self, |t| t.add_columns(model, columns).await)
    }
    async fn write_batch(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        each!(self, |t| t.write_batch(model, rows).await)
    }
    fn takes_copy(&self) -> bool {
        each!(self, |t| t.takes_copy())
    }
    async fn write_copy(&self, model: &TableModel, rows: CopyRows) -> Result<(), LoadError> {
        each!(self, |t| t.write_copy(model, rows).await)
    }
    async fn create_indexes(&self, model: &TableModel) -> Result<(), LoadError> {
        each!(self, |t| t.create_indexes(model).await)
    }
    async fn count_rows(&self, model: &TableModel) -> Result<u64, LoadError> {
        each!(self, |t| t.count_rows(model).await)
    }
    fn count_reads_every_row(&self) -> bool {
        each!(self, |t| t.count_reads_every_row())
    }
    async fn read_all(&self, model: &TableModel) -> Result<Vec<Row>, LoadError> {
        each!(self, |t| t.read_all(model).await)
    }
    async fn read_keys(&self, model: &TableModel, rows: &[Row]) -> Result<Vec<Row>, LoadError> {
        each!(self, |t| t.read_keys(model, rows).await)
    }
    async fn delete_keys(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        each!(self, |t| t.delete_keys(model, rows).await)
    }
    async fn list_indexes(&self, model: &TableModel) -> Result<Vec<String>, LoadError> {
        each!(self, |t| t.list_indexes(model).await)
    }
    fn stats(&self) -> &CallStats {
        each!(self, |t| t.stats())
    }
}
