//! crossdock-core: the contract between crossdock's phases, with no cloud SDK.
//!
//! - [`item`]: the DynamoDB JSON line codec used by dumps.
//! - [`layout`]: S3 key ↔ export/file ↔ GCS key, the only place keys are built or parsed.
//! - [`schema`], [`manifest`], [`marker`]: the JSON files of an export and the
//!   completeness rule for `_SUCCESS`.
//! - [`routing`], [`pipeline`]: which table goes to which target, from the pipeline file.
//! - [`codec`]: compression codecs; [`sizing`]: segments, capacity and batch-size maths.
//! - [`redact`]: credentials out of URLs before they reach logs, errors or output.
// Libraries report through their return values and tracing, never the terminal or exit.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr, clippy::exit))]

pub mod codec;
mod docs;
pub mod item;
pub mod layout;
pub mod manifest;
pub mod marker;
pub mod notify;
pub mod pace;
pub mod pipeline;
pub mod redact;
pub mod retry;
pub mod routing;
pub mod schema;
pub mod sizing;
pub mod stamp;
pub mod status;

pub use codec::Codec;
pub use item::{AttributeValue, Item, TypeTag};
pub use layout::{DumpFile, DumpKey, ExportId, Timestamp};

/// Version of the on-disk format written by this build (`format_version` fields).
pub const FORMAT_VERSION: u32 = 1;

/// crossdock's version, recorded in `_schema.json`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
