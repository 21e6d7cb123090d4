//! DynamoDB Streams as a [`ChangeSource`]: DescribeStream for the shards and their
//! parents, GetShardIterator, GetRecords. A stream without new images (KEYS_ONLY,
//! OLD_IMAGE) is refused when opened.

use super::aws_error::{message, stream_error, transient, Codes};
use super::{Change, ChangeKind, ChangeSource, Position, Read, ShardInfo};
use crate::error::SyncError;
use aws_sdk_dynamodbstreams::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{OperationType, ShardIteratorType, StreamViewType};
use aws_sdk_dynamodbstreams::Client;
use std::time::Duration;

/// A table's DynamoDB stream.
#[derive(Debug, Clone)]
pub struct DynamoStreams {
    client: Client,
    table: String,
    arn: String,
    pub view_type: String,
}

/// The table's current stream (ARN and label) from DescribeTable, `None` when the table
/// has no enabled stream.
pub async fn latest_stream(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<Option<(String, String)>, SyncError> {
    let out = ddb.describe_table().table_name(table).send().await.map_err(|e| SyncError::Source {
        table: table.into(),
        stream: "-".into(),
        shard: None,
        op: "DescribeTable",
        message: message(&e),
        retryable: false,
    })?;
    let Some(d) = out.table() else { return Ok(None) };
    let enabled = d.stream_specification().is_some_and(|s| s.stream_enabled());
    Ok(match (enabled, d.latest_stream_arn()) {
        (true, Some(arn)) => Some((arn.to_string(), d.latest_stream_label().unwrap_or_default().to_string())),
        _ => None,
    })
}

/// DynamoDB Streams' error codes.
const CODES: Codes = Codes {
    trimmed: Some(("TrimmedDataAccessException", "the records after the checkpoint are beyond the stream's 24 h retention")),
    retryable: &["LimitExceededException", "InternalServerError", "ThrottlingException"],
};

impl DynamoStreams {
    /// Opens `arn`, checking that its records carry new images.
    pub async fn open(client: Client, table: &str, arn: &str) -> Result<DynamoStreams, SyncError> {
        let out = client.describe_stream().stream_arn(arn).limit(1).send().await.map_err(|e| SyncError::Source {
            table: table.into(),
            stream: arn.into(),
            shard: None,
            op: "DescribeStream",
            retryable: transient(&e),
            message: message(&e),
        })?;
        let view = out.stream_description().and_then(|d| d.stream_view_type()).cloned();
        let view_type = view.as_ref().map(|v| v.as_str().to_string()).unwrap_or_default();
        if !matches!(view, Some(StreamViewType::NewImage | StreamViewType::NewAndOldImages)) {
            return Err(SyncError::Stream {
                table: table.into(),
                reason: format!(
                    "stream {arn} has view type {}: crossdock sync needs the new image of every change. Enable a stream with view type \
                     NEW_AND_OLD_IMAGES (or NEW_IMAGE) — changing it starts a new stream, so re-export the table after that",
                    if view_type.is_empty() { "unknown" } else { &view_type }
                ),
            });
        }
        Ok(DynamoStreams { client, table: table.into(), arn: arn.into(), view_type })
    }

    fn err<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(&self, op: &'static str, shard: &str, e: &SdkError<E, R>) -> SyncError {
        stream_error(&CODES, &self.table, &self.arn, op, shard, e)
    }
}

impl ChangeSource for DynamoStreams {
    fn stream(&self) -> &str {
        &self.arn
    }

    fn kind(&self) -> &'static str {
        "streams"
    }

    fn retention(&self) -> Duration {
        Duration::from_secs(24 * 3600)
    }

    async fn shards(&self) -> Result<Vec<ShardInfo>, SyncError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let resp = self
                .client
                .describe_stream()
                .stream_arn(&self.arn)
                .set_exclusive_start_shard_id(start.clone())
                .send()
                .await
                .map_err(|e| self.err("DescribeStream", "-", &e))?;
            let Some(d) = resp.stream_description() else { break };
            for s in d.shards() {
                let Some(id) = s.shard_id() else { continue };
                out.push(ShardInfo { id: id.to_string(), parents: s.parent_shard_id().map(|p| vec![p.to_string()]).unwrap_or_default() });
            }
            start = d.last_evaluated_shard_id().map(str::to_string);
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn iterator(&self, shard: &str, from: &Position) -> Result<String, SyncError> {
        let req = self.client.get_shard_iterator().stream_arn(&self.arn).shard_id(shard);
        let req = match from {
            Position::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::After(seq) => req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq),
        };
        let out = req.send().await.map_err(|e| self.err("GetShardIterator", shard, &e))?;
        out.shard_iterator().map(str::to_string).ok_or_else(|| SyncError::Expired {
            table: self.table.clone(),
            stream: self.arn.clone(),
            shard: shard.into(),
            reason: "GetShardIterator returned no iterator (the shard is gone)".into(),
        })
    }

    async fn read(&self, shard: &str, iterator: &str, limit: usize) -> Result<Read, SyncError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| self.err("GetRecords", shard, &e))?;
        let next = out.next_shard_iterator;
        let records = out.records.unwrap_or_default();
        let mut changes = Vec::with_capacity(records.len());
        for r in records {
            let Some(d) = r.dynamodb else { continue };
            let sequence = d.sequence_number.unwrap_or_default();
            let bad = |reason: &str| SyncError::Change {
                table: self.table.clone(),
                shard: shard.into(),
                sequence: sequence.clone(),
                reason: reason.into(),
                hint: crate::error::NO_IMAGE_HINT,
            };
            let (kind, image) = match r.event_name {
                Some(OperationType::Remove) => (ChangeKind::Delete, d.keys),
                Some(OperationType::Insert | OperationType::Modify) => (ChangeKind::Upsert, d.new_image),
                other => return Err(bad(&format!("unknown event {other:?}"))),
            };
            let image = image.ok_or_else(|| bad("the record has no new image"))?;
            // Converted as the exporter converts scanned items (attributes sorted by name).
            let item = crossdock_export::convert::from_sdk_item(image).map_err(|_| bad("the record has a value of a type this build does not know"))?;
            let created_ms = d.approximate_creation_date_time.and_then(|t| t.to_millis().ok());
            changes.push(Change { kind, item, sequence, created_ms });
        }
        let at_tip = changes.is_empty();
        Ok(Read { changes, next, at_tip })
    }
}
