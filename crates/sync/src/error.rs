//! The catch-up leg's typed errors. Each names the table, and the stream and shard
//! where one is involved, and says what to do when the user has to act.

use crossdock_load::LoadError;

/// The instruction every "the stream no longer has what we need" error ends with.
pub const REEXPORT: &str = "changes may have been lost from the stream: re-export the table (crossdock export), relay and load it, \
and run crossdock sync from the new marker";

/// What went wrong while catching up.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The checkpoint's position is older than the stream keeps, or its shard is gone:
    /// the changes after it cannot be read any more.
    #[error("table {table}: stream {stream} shard {shard}: {reason}; {REEXPORT}")]
    Expired { table: String, stream: String, shard: String, reason: String },
    /// The stream does not carry what a catch-up needs (view type without new images,
    /// a stream other than the one the export recorded, no stream at all).
    #[error("table {table}: {reason}")]
    Stream { table: String, reason: String },
    /// A call to DynamoDB Streams or Kinesis failed.
    #[error("table {table}: {op} on {stream}{}: {message}", .shard.as_deref().map(|s| format!(" shard {s}")).unwrap_or_default())]
    Source { table: String, stream: String, shard: Option<String>, op: &'static str, message: String, retryable: bool },
    /// A shard iterator older than its 15 minutes (or 5 minutes for Kinesis) lifetime:
    /// the reader takes a new one at its last position.
    #[error("table {table}: shard {shard}: iterator expired")]
    IteratorExpired { table: String, shard: String },
    /// A change record that cannot be applied without losing data (an attribute the
    /// export's statistics do not know, a value that does not fit its column, a record
    /// without its new image). Nothing of its batch was applied; the checkpoint did not
    /// move.
    #[error("table {table}: shard {shard} change {sequence} cannot be applied: {reason}; {hint}")]
    Change { table: String, shard: String, sequence: String, reason: String, hint: &'static str },
    /// Writing to the target (or reading the marker, GCS checkpoints) failed.
    #[error("table {table}: {source}")]
    Load {
        table: String,
        #[source]
        source: LoadError,
    },
    /// A checkpoint object does not parse, or belongs to another stream.
    #[error("table {table}: checkpoint {key}: {reason}")]
    Checkpoint { table: String, key: String, reason: String },
    /// `--until-lag` was not reached in time.
    #[error("table {table}: lag did not stay under {target_ms} ms within {waited_s} s: {reason}")]
    LagNotReached { table: String, target_ms: u64, waited_s: u64, reason: String },
    /// The target does not hold the loaded export (sync would write into nothing, or
    /// a load after it would overwrite newer changes with older ones).
    #[error("table {table}: {reason}")]
    NotLoaded { table: String, reason: String },
}

impl SyncError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SyncError::Source { retryable, .. } => *retryable,
            SyncError::Load { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

/// The hint of a change whose value does not fit its attribute's column (a new type for
/// a known attribute; attributes new to the table get columns of their own).
pub const NEW_ATTRIBUTE_HINT: &str = "the target's column types come from the export's type statistics, and crossdock sync refuses a \
change it would have to drop or truncate: re-export the table (its statistics will include the new type), load it and sync from the \
new marker";

/// The hint of an INSERT/MODIFY record without its new image.
pub const NO_IMAGE_HINT: &str = "the stream must carry new images: set its view type to NEW_AND_OLD_IMAGES (or NEW_IMAGE)";
