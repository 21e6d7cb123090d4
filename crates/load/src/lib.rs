//! crossdock-load: loads a relayed DynamoDB export into Spanner, Bigtable or
//! PostgreSQL, driven only by its `_SUCCESS` marker.
//!
//! - [`marker`]: read and validate the marker (`gs://bucket/batch/table/ts/_SUCCESS`).
//! - [`schema`]: type inference → a target-neutral [`schema::TableModel`]; reversible
//!   identifier encoding; item ↔ row conversion; compatibility diff.
//! - [`sink`]: the [`sink::Target`] trait and its `spanner`, `bigtable` and
//!   `postgres` implementations.
//! - [`feed`]: files → checked bytes → chunks of rows, streaming, for the writers.
//! - [`rowparse`]: the fast path from a JSON line straight to a row.
//! - [`progress`]: per-file progress and reject records in GCS, the `_LOADED` record.
//! - `conformance` (feature `testing`): the suite every target passes, and sample data.
//! - [`run`]: orchestration (plan, load, indexes, count check) and verification.
//! - [`events`]: logs and metrics, one function per occurrence.
// Libraries report through their return values and tracing, never the terminal or exit.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr, clippy::exit))]

pub mod compare;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod decimal;
pub mod error;
pub mod events;
pub mod feed;
pub mod gcs;
pub mod linescan;
pub mod marker;
pub mod progress;
pub mod rowparse;
pub mod run;
pub mod schema;
pub mod sink;
pub mod watch;

pub use error::LoadError;
