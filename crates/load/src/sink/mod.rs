//! One small trait every target implements, so the loader and one shared conformance
//! suite work the same against Spanner, Bigtable and PostgreSQL; [`any::AnyTarget`] is
//! the one type callers hold, whichever target the routing picked.

pub mod any;
pub mod bigtable;
mod contention;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod pgcopy;
pub mod pgtls;
pub mod postgres;
pub mod spanner;

use crate::error::LoadError;
use crate::schema::{Column, Row, TableModel, TargetKind};
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

pub use any::{connect, AnyTarget};

/// `call` (a write to a target) bounded by `limit`: a call that goes unanswered that
/// long is abandoned and reported as retryable. Dropping the call drops the connection
/// it had taken (PostgreSQL) or cancels its stream (gRPC), so the retry starts afresh.
pub async fn within<F>(limit: std::time::Duration, target: TargetKind, op: &'static str, table: &str, call: F) -> Result<(), LoadError>
where
    F: Future<Output = Result<(), LoadError>>,
{
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(LoadError::Target {
            target: target.name(),
            op,
            table: table.into(),
            message: format!("no answer within {}s; abandoned, to be retried", limit.as_secs()),
            retryable: true,
        })
    })
}

/// Whether a gRPC call (Spanner, Bigtable) that failed with `s` may be made again: the
/// codes Google's client libraries retry, `extra` (a target's own additions), and any
/// failure of the connection itself, which tonic reports as `Unknown` with the
/// transport error as its source (a reset, a broken pipe). Every write the loader
/// makes is idempotent, so a call cut off after the server applied it is safe to make
/// again.
pub(crate) fn grpc_retryable(s: &tonic::Status, extra: &[tonic::Code]) -> bool {
    use tonic::Code;
    matches!(s.code(), Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::DeadlineExceeded)
        || extra.contains(&s.code())
        || connection_failed(s)
}

fn connection_failed(s: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(s);
    while let Some(e) = cause {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// What a target tells the planner about batches for a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchLimits {
    /// Tuned starting rows per batch.
    pub start: usize,
    /// Service limit in rows per batch for this model.
    pub max: usize,
    /// Parallel writers by default.
    pub writers: usize,
    /// How the limit was derived (for `--dry-run`).
    pub basis: String,
}

/// Counters of calls made to a target: the tests read them to prove limits hold.
#[derive(Debug, Default)]
pub struct CallStats {
    /// Write calls (commits, MutateRows requests, COPY transactions).
    pub calls: AtomicU64,
    /// Retried calls.
    pub retries: AtomicU64,
    /// Largest number of service mutations in one call.
    pub max_mutations: AtomicUsize,
    /// Largest number of rows in one call.
    pub max_rows: AtomicUsize,
    /// Admin (schema) connections opened (Bigtable): tests prove a load into an existing
    /// table needs no admin permission with it.
    pub admin_connections: AtomicU64,
}

impl CallStats {
    pub fn record(&self, rows: usize, mutations: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.max_mutations.fetch_max(mutations, Ordering::Relaxed);
        self.max_rows.fetch_max(rows, Ordering::Relaxed);
    }
}

/// A fast path set aside for a while after it fails: the next 1, 2, 4 … 64 calls take
/// the slow path (each failure doubles the pause) until the caller resets it
/// ([`Pause::fast_succeeded`]). Shared by a target's writers.
#[derive(Debug)]
pub(crate) struct Pause {
    left: AtomicU32,
    next: AtomicU32,
}

impl Pause {
    pub(crate) fn new() -> Pause {
        Pause { left: AtomicU32::new(0), next: AtomicU32::new(1) }
    }

    /// Whether this call may take the fast path; if not, it uses up one paused call.
    pub(crate) fn fast(&self) -> bool {
        self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err()
    }

    /// A fast call succeeded.
    pub(crate) fn fast_succeeded(&self) {
        self.next.store(1, Ordering::Relaxed);
    }

    /// A fast call failed: returns how many calls now take the slow path.
    pub(crate) fn fast_failed(&self) -> u32 {
        let pause = self.next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some((p * 2).min(64))).unwrap_or(1);
        self.left.store(pause, Ordering::Relaxed);
        pause
    }
}

/// A database the loader writes into.
pub trait Target: Send + Sync + 'static {
    fn kind(&self) -> TargetKind;
    /// Where the model's table lives, fully qualified (`schema.table`, the database or
    /// instance path + table): progress records and `_LOADED` name it, so loading the
    /// same export into a second place is not mistaken for a rerun.
    fn destination(&self, model: &TableModel) -> String;
    /// The statements `ensure_table` + `create_indexes` run for this model (dry run).
    fn ddl(&self, model: &TableModel) -> Vec<String>;
    /// Batch sizes for this model under the service limits.
    fn batch_limits(&self, model: &TableModel) -> BatchLimits;
    /// Creates the table if absent (`Ok(true)`); if present, checks it is compatible
    /// (`Ok(false)`) or fails with [`LoadError::Incompatible`] and the diff.
    fn ensure_table(&self, model: &TableModel) -> impl Future<Output = Result<bool, LoadError>> + Send;
    /// Adds nullable `columns` (already in `model`) to the existing table; a column that
    /// is already there is no error, so a retry after a crash is harmless. The catch-up
    /// uses it for attributes that first appear in the change stream.
    fn add_columns(&self, model: &TableModel, columns: &[Column]) -> impl Future<Output = Result<(), LoadError>> + Send;
    /// Upserts rows (all or nothing per call). Retryable failures are marked so.
    fn write_batch(&self, model: &TableModel, rows: &[Row]) -> impl Future<Output = Result<(), LoadError>> + Send;
    /// Whether the loader hands this target its rows as binary COPY tuples
    /// ([`Target::write_copy`]) rather than as cells.
    fn takes_copy(&self) -> bool {
        false
    }
    /// [`Target::write_batch`] of rows already encoded as binary COPY tuples; only
    /// called when [`Target::takes_copy`].
    fn write_copy(&self, model: &TableModel, rows: pgcopy::CopyRows) -> impl Future<Output = Result<(), LoadError>> + Send {
        let _ = rows;
        let message = format!("{} does not take binary COPY rows", self.kind().name());
        std::future::ready(Err(LoadError::Target { target: self.kind().name(), op: "write batch", table: model.name.clone(), message, retryable: false }))
    }
    /// Creates the secondary indexes of the model (after the data is in); idempotent.
    fn create_indexes(&self, model: &TableModel) -> impl Future<Output = Result<(), LoadError>> + Send;
    fn count_rows(&self, model: &TableModel) -> impl Future<Output = Result<u64, LoadError>> + Send;
    /// Whether [`Target::count_rows`] reads every row back to the loader (Bigtable has
    /// no server-side count) rather than the service counting in place. Such a target's
    /// load into a table it created itself takes the rows it acknowledged as the count.
    fn count_reads_every_row(&self) -> bool {
        false
    }
    /// Every row of the table, in model column order. Holds the table in memory: for
    /// tests and small tables; `verify` uses [`Target::read_keys`].
    fn read_all(&self, model: &TableModel) -> impl Future<Output = Result<Vec<Row>, LoadError>> + Send;
    /// The rows, in model column order and any row order, whose primary keys are those
    /// of `rows` (only their key cells are read); keys absent from the table are
    /// absent from the answer. Callers keep `rows` to a few hundred.
    fn read_keys(&self, model: &TableModel, rows: &[Row]) -> impl Future<Output = Result<Vec<Row>, LoadError>> + Send;
    /// Deletes the rows with the primary keys of `rows` (only their key cells are read);
    /// absent keys are no error. All or nothing per call, like `write_batch`.
    fn delete_keys(&self, model: &TableModel, rows: &[Row]) -> impl Future<Output = Result<(), LoadError>> + Send;
    /// Names of the secondary indexes present on the table.
    fn list_indexes(&self, model: &TableModel) -> impl Future<Output = Result<Vec<String>, LoadError>> + Send;
    fn stats(&self) -> &CallStats;
}

#[cfg(test)]
mod grpc_tests {
    use super::grpc_retryable;
    use tonic::{Code, Status};

    #[test]
    fn a_cut_connection_is_retryable_and_a_refused_write_is_not() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let mut cut = Status::unknown("transport error");
        cut.set_source(std::sync::Arc::new(reset));
        assert!(grpc_retryable(&cut, &[]));
        assert!(grpc_retryable(&Status::unavailable("try again"), &[]));
        assert!(!grpc_retryable(&Status::unknown("no cause given"), &[]));
        assert!(!grpc_retryable(&Status::invalid_argument("bad column"), &[]));
        assert!(!grpc_retryable(&Status::internal("rst"), &[]));
        assert!(grpc_retryable(&Status::internal("rst"), &[Code::Internal]));
    }
}
