//! crossdock-export: capacity lease, rate-limited parallel scan, DynamoDB JSON dump to S3.
//!
//! - [`lease`]: DescribeTable checks, the per-table capacity lease (owner, heartbeat,
//!   conditional writes), raise, restore (also after a crash, once the owner is stale).
//! - [`pages`]: one segment of a parallel Scan as rate-limited pages (export and audit).
//! - [`scan`]: one segment of the export, with checkpoints for `--resume`.
//! - [`ratelimit`]: the RCU token bucket and page-size controller.
//! - [`writer`]: data parts streamed to S3 (PutObject or multipart), checksums, stats.
//! - [`s3`]: the exporter's small S3 calls: JSON records, deletes, listings.
//! - [`convert`]: SDK attribute values ↔ core values.
//! - [`run`]: orchestration, `--dry-run` plan, summary.
//! - [`native`]: DynamoDB's own export to S3 checked and adopted as an export.
//! - [`observe`]: the events an export reports as it goes, and their [`Observer`].
//!
//! See README.md.
// Libraries report through their return values and tracing, never the terminal or exit.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr, clippy::exit))]

pub mod convert;
pub mod error;
#[cfg(test)]
mod fake_aws;
pub mod lease;
pub mod native;
pub mod observe;
pub mod pages;
pub mod ratelimit;
pub mod run;
pub mod s3;
pub mod scan;
pub mod stream;
pub mod writer;

pub use error::ExportError;
pub use observe::{ExportEvent, NoObserver, Observer};
pub use run::{plan, run, Clients, ExportConfig, ExportPlan, ExportSummary, Raise};
