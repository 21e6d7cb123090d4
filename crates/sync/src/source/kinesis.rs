//! Kinesis Data Streams for DynamoDB as a [`ChangeSource`]. Each Kinesis record's data
//! is one DynamoDB change in DynamoDB's Kinesis record format:
//!
//! ```json
//! {"awsRegion":"us-east-1","eventID":"…","eventName":"MODIFY","eventSource":"aws:dynamodb",
//!  "recordFormat":"application/json","tableName":"Orders","userIdentity":null,
//!  "dynamodb":{"ApproximateCreationDateTime":1764480000000,"Keys":{…},"NewImage":{…},"OldImage":{…},"SizeBytes":42}}
//! ```
//!
//! Records of other tables (a stream may be shared) are skipped. Kinesis may deliver a
//! key's records out of order or twice, so batches keep per key the change with the
//! latest `ApproximateCreationDateTime` (`SyncOptions::newest_wins`).

use super::aws_error::{message, stream_error, Codes};
use super::{epoch_ms_of, Change, ChangeKind, ChangeSource, Position, Read, ShardInfo};
use crate::error::SyncError;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use crossdock_core::item::{parse_line, Item};
use serde::Deserialize;
use std::time::Duration;

/// A Kinesis data stream carrying a table's changes.
#[derive(Debug, Clone)]
pub struct KinesisSource {
    client: Client,
    table: String,
    arn: String,
    retention: Duration,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "eventName")]
    event_name: String,
    #[serde(rename = "tableName")]
    table_name: Option<String>,
    #[serde(rename = "eventSource")]
    event_source: Option<String>,
    dynamodb: Body,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Body {
    approximate_creation_date_time: Option<f64>,
    keys: Option<serde_json::Value>,
    new_image: Option<serde_json::Value>,
}

/// Parses one record's data. `Ok(None)`: a change of another table.
pub fn parse_record(table: &str, data: &[u8], sequence: &str, arrival_ms: Option<i64>) -> Result<Option<Change>, String> {
    let env: Envelope = serde_json::from_slice(data).map_err(|e| format!("not a DynamoDB change record: {e}"))?;
    if env.event_source.as_deref().is_some_and(|s| s != "aws:dynamodb") {
        return Err(format!("eventSource {:?} is not aws:dynamodb", env.event_source.unwrap_or_default()));
    }
    if env.table_name.as_deref().is_some_and(|t| t != table) {
        return Ok(None);
    }
    let (kind, image) = match env.event_name.as_str() {
        "REMOVE" => (ChangeKind::Delete, env.dynamodb.keys),
        "INSERT" | "MODIFY" => (ChangeKind::Upsert, env.dynamodb.new_image),
        other => return Err(format!("unknown eventName {other:?}")),
    };
    let image = image.ok_or_else(|| format!("{} record without {}", env.event_name, if kind == ChangeKind::Delete { "Keys" } else { "NewImage" }))?;
    let item: Item = parse_line(&format!("{{\"Item\":{image}}}"), 1).map_err(|e| format!("image: {e}"))?;
    let created_ms = env.dynamodb.approximate_creation_date_time.map(epoch_ms_of).or(arrival_ms);
    Ok(Some(Change { kind, item, sequence: sequence.into(), created_ms }))
}

/// Kinesis' error codes (its retention is the stream's; a trimmed position reads as gone).
const CODES: Codes =
    Codes { trimmed: None, retryable: &["ProvisionedThroughputExceededException", "LimitExceededException", "KMSThrottlingException", "InternalFailure"] };

/// Kinesis sequence numbers are decimal strings of up to 56 digits (beyond u128):
/// compare by length, then text.
fn seq_gt(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

impl KinesisSource {
    /// Opens the stream `arn` (an ARN, or a name in the client's account and region).
    pub async fn open(client: Client, table: &str, arn: &str) -> Result<KinesisSource, SyncError> {
        let req = client.describe_stream_summary();
        let req = if arn.starts_with("arn:") { req.stream_arn(arn) } else { req.stream_name(arn) };
        let out = req.send().await.map_err(|e| SyncError::Source {
            table: table.into(),
            stream: arn.into(),
            shard: None,
            op: "DescribeStreamSummary",
            retryable: false,
            message: message(&e),
        })?;
        let d = out.stream_description_summary();
        let (arn, hours) = match d {
            Some(d) => (d.stream_arn().to_string(), d.retention_period_hours()),
            None => (arn.to_string(), 24),
        };
        Ok(KinesisSource { client, table: table.into(), arn, retention: Duration::from_secs(hours.max(1) as u64 * 3600) })
    }

    fn err<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(&self, op: &'static str, shard: &str, e: &SdkError<E, R>) -> SyncError {
        stream_error(&CODES, &self.table, &self.arn, op, shard, e)
    }

    async fn raw_iterator(&self, shard: &str, from: &Position) -> Result<String, SyncError> {
        let req = self.client.get_shard_iterator().stream_arn(&self.arn).shard_id(shard);
        let req = match from {
            Position::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::After(seq) => req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq),
        };
        let out = req.send().await.map_err(|e| self.err("GetShardIterator", shard, &e))?;
        out.shard_iterator().map(str::to_string).ok_or_else(|| SyncError::Expired {
            table: self.table.clone(),
            stream: self.arn.clone(),
            shard: shard.into(),
            reason: "GetShardIterator returned no iterator".into(),
        })
    }
}

impl ChangeSource for KinesisSource {
    fn stream(&self) -> &str {
        &self.arn
    }

    fn kind(&self) -> &'static str {
        "kinesis"
    }

    fn retention(&self) -> Duration {
        self.retention
    }

    async fn shards(&self) -> Result<Vec<ShardInfo>, SyncError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // ListShards takes either the stream or a NextToken, not both.
            let req = self.client.list_shards();
            let req = match &token {
                Some(t) => req.next_token(t),
                None => req.stream_arn(&self.arn),
            };
            let resp = req.send().await.map_err(|e| self.err("ListShards", "-", &e))?;
            for s in resp.shards() {
                let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()].into_iter().flatten().map(str::to_string).collect();
                out.push(ShardInfo { id: s.shard_id().to_string(), parents });
            }
            token = resp.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn iterator(&self, shard: &str, from: &Position) -> Result<String, SyncError> {
        if let Position::After(seq) = from {
            // Kinesis hands out an iterator for a trimmed position without complaint; the
            // oldest record left tells whether the checkpoint's own record is gone, in
            // which case records after it may be gone too.
            let horizon = self.raw_iterator(shard, &Position::TrimHorizon).await?;
            let first =
                self.client.get_records().stream_arn(&self.arn).shard_iterator(horizon).limit(1).send().await.map_err(|e| self.err("GetRecords", shard, &e))?;
            if let Some(r) = first.records().first() {
                if seq_gt(r.sequence_number(), seq) {
                    return Err(SyncError::Expired {
                        table: self.table.clone(),
                        stream: self.arn.clone(),
                        shard: shard.into(),
                        reason: format!(
                            "the checkpoint's record {seq} is older than the oldest record the stream keeps ({}; retention {} h)",
                            r.sequence_number(),
                            self.retention.as_secs() / 3600
                        ),
                    });
                }
            }
        }
        self.raw_iterator(shard, from).await
    }

    async fn read(&self, shard: &str, iterator: &str, limit: usize) -> Result<Read, SyncError> {
        let out = self
            .client
            .get_records()
            .stream_arn(&self.arn)
            .shard_iterator(iterator)
            .limit(limit.clamp(1, 10_000) as i32)
            .send()
            .await
            .map_err(|e| self.err("GetRecords", shard, &e))?;
        let mut changes = Vec::with_capacity(out.records().len());
        for r in out.records() {
            let arrival = r.approximate_arrival_timestamp().and_then(|t| t.to_millis().ok());
            let parsed = parse_record(&self.table, r.data().as_ref(), r.sequence_number(), arrival).map_err(|reason| SyncError::Change {
                table: self.table.clone(),
                shard: shard.into(),
                sequence: r.sequence_number().into(),
                reason,
                hint: "the Kinesis stream must carry DynamoDB change records (Kinesis Data Streams for DynamoDB)",
            })?;
            if let Some(c) = parsed {
                changes.push(c);
            }
        }
        let at_tip = out.millis_behind_latest().is_none_or(|m| m == 0) && out.records().is_empty()
            || out.millis_behind_latest() == Some(0) && out.records().len() < limit;
        Ok(Read { changes, next: out.next_shard_iterator().map(str::to_string), at_tip })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossdock_core::item::AttributeValue;

    #[test]
    fn parses_dynamodb_kinesis_records() {
        let rec = br#"{"awsRegion":"us-east-1","eventID":"e1","eventName":"MODIFY","eventSource":"aws:dynamodb","recordFormat":"application/json","tableName":"T","userIdentity":null,
            "dynamodb":{"ApproximateCreationDateTime":1764480000123,"Keys":{"pk":{"S":"a"}},"NewImage":{"pk":{"S":"a"},"n":{"N":"1.50"}},"OldImage":{"pk":{"S":"a"}},"SizeBytes":10}}"#;
        let c = parse_record("T", rec, "49", None).expect("parse").expect("change");
        assert_eq!(c.kind, ChangeKind::Upsert);
        assert_eq!(c.item.get("n"), Some(&AttributeValue::N("1.50".into())));
        assert_eq!(c.created_ms, Some(1_764_480_000_123));
        let micros = br#"{"eventName":"REMOVE","eventSource":"aws:dynamodb","tableName":"T","dynamodb":{"ApproximateCreationDateTime":1764480000123456,"Keys":{"pk":{"S":"a"}}}}"#;
        let c = parse_record("T", micros, "50", None).expect("parse").expect("change");
        assert_eq!((c.kind, c.created_ms), (ChangeKind::Delete, Some(1_764_480_000_123)));
        assert_eq!(parse_record("Other", rec, "49", None).expect("parse"), None, "another table's record is skipped");
        let no_image = br#"{"eventName":"INSERT","eventSource":"aws:dynamodb","tableName":"T","dynamodb":{"Keys":{"pk":{"S":"a"}}}}"#;
        assert!(parse_record("T", no_image, "51", None).expect_err("no image").contains("NewImage"));
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(seq_gt("100", "99"));
        assert!(!seq_gt("99", "100"));
        assert!(seq_gt("49590338271490256608559692538361571095921575989136588898", "49590338271490256608559692538361571095921575989136588897"));
    }
}
