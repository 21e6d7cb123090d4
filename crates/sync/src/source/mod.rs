//! Where changes come from: a stream of shards, each an ordered log of item changes,
//! read with iterators. Implementations: [`streams`] (DynamoDB Streams), [`kinesis`]
//! (Kinesis Data Streams for DynamoDB), [`incremental`] (DynamoDB's INCREMENTAL exports
//! to S3, one closed shard per export) and [`fake`] (in memory, with shard splits, for
//! tests).

mod aws_error;
pub mod fake;
pub mod incremental;
pub mod kinesis;
pub mod streams;

use crate::error::SyncError;
use crossdock_core::item::Item;
use std::future::Future;
use std::time::Duration;

/// What a change does to its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// INSERT or MODIFY: the item becomes its new image.
    Upsert,
    /// REMOVE (including TTL expiry): the item is deleted.
    Delete,
}

/// One change record of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    /// The new image (upsert) or the key attributes (delete).
    pub item: Item,
    /// The record's sequence number in its shard.
    pub sequence: String,
    /// `ApproximateCreationDateTime`, Unix milliseconds.
    pub created_ms: Option<i64>,
}

/// A shard as the stream describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    /// Parent shards (one after a split, two after a Kinesis merge): read to their end
    /// before this one, so per key the older changes apply first.
    pub parents: Vec<String>,
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The oldest record the stream still has.
    TrimHorizon,
    /// Just after this sequence number (the last one applied).
    After(String),
}

/// One read of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// In stream order.
    pub changes: Vec<Change>,
    /// The iterator for the next read; `None` when the shard is closed and read to its end.
    pub next: Option<String>,
    /// The read reached the newest record of the shard (nothing more to read now).
    pub at_tip: bool,
}

/// A stream of item changes, read shard by shard.
pub trait ChangeSource: Send + Sync {
    /// The stream's name for messages and checkpoints (its ARN).
    fn stream(&self) -> &str;
    /// `streams` or `kinesis` (recorded in checkpoints).
    fn kind(&self) -> &'static str;
    /// How long the stream keeps a record.
    fn retention(&self) -> Duration;
    /// Every shard the stream still has.
    fn shards(&self) -> impl Future<Output = Result<Vec<ShardInfo>, SyncError>> + Send;
    /// An iterator at `from`; [`SyncError::Expired`] when `from` is beyond the stream's
    /// retention.
    fn iterator(&self, shard: &str, from: &Position) -> impl Future<Output = Result<String, SyncError>> + Send;
    /// The next records; [`SyncError::IteratorExpired`] when the iterator is too old
    /// (take a new one), [`SyncError::Expired`] when the records it pointed at are gone.
    fn read(&self, shard: &str, iterator: &str, limit: usize) -> impl Future<Output = Result<Read, SyncError>> + Send;
}

/// `ApproximateCreationDateTime` of Kinesis records is milliseconds or, with the
/// MICROSECOND precision, microseconds since the epoch; a value that large in
/// milliseconds would be after the year 5000.
pub fn epoch_ms_of(n: f64) -> i64 {
    if n > 1.0e14 {
        (n / 1000.0) as i64
    } else if n < 1.0e11 {
        // Seconds (DynamoDB Streams' wire format, as a float with a fraction).
        (n * 1000.0) as i64
    } else {
        n as i64
    }
}
