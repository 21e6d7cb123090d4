//! crossdock-sync: the catch-up leg. Replays a table's change stream onto the target
//! its export was loaded into, so the target follows the live table until cutover.
//!
//! - [`source`]: the [`source::ChangeSource`] trait, with DynamoDB Streams, Kinesis Data
//!   Streams for DynamoDB and an in-memory fake that splits shards.
//! - [`apply`]: one batch → last change per key → upserts and deletes on the `Target`.
//! - [`checkpoint`]: per-shard positions in GCS under the export's `_sync/`.
//! - [`columns`]: attributes first seen in the stream get JSON columns.
//! - [`run`]: the loop (lineage, batching, checkpoints after durability, lag, `until_lag`).
//! - [`events`]: logs and metrics, one function per occurrence.
//!
//! See README.md.
// Libraries report through their return values and tracing, never the terminal or exit.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr, clippy::exit))]

pub mod apply;
pub mod checkpoint;
pub mod columns;
pub mod error;
pub mod events;
pub mod run;
pub mod source;

pub use error::SyncError;
pub use run::{run, Outcome, Status, Summary, SyncOptions};
