//! DynamoDB's INCREMENTAL exports to S3 as a [`ChangeSource`]: an alternative to reading
//! the stream when the table has point-in-time recovery. Each export
//! (`…/AWSDynamoDB/{export-id}/`, read and checked by `crossdock_export::native`) is one
//! closed shard whose parent is the export before it, so the exports apply in
//! export-time order and each only once the one before is finished. Its records are its
//! items' final states over the export's period (`NewImage`, or a delete when absent),
//! ordered by write time; the sequence number is the record's position.
//!
//! The exports must cover the time from the full export on without a gap: the first must
//! start no later than the full export (1 s of slack for the directory timestamp's
//! truncation) and each must start no later than the one before ends.

use super::{Change, ChangeKind, ChangeSource, Position, Read, ShardInfo};
use crate::error::SyncError;
use crossdock_export::native::IncrementalExport;
use std::time::Duration;

/// One export as a shard.
#[derive(Debug, Clone)]
struct Shard {
    id: String,
    parent: Option<String>,
    changes: Vec<Change>,
}

/// A chain of INCREMENTAL exports.
#[derive(Debug, Clone)]
pub struct IncrementalSource {
    table: String,
    name: String,
    shards: Vec<Shard>,
}

/// The export id of `s3://bucket/…/AWSDynamoDB/{export-id}/`.
fn export_id(source: &str) -> &str {
    source.trim_end_matches('/').rsplit('/').next().unwrap_or(source)
}

/// What every export's URL shares before `AWSDynamoDB/`: the source's name, the same on
/// every run whatever exports are added, so checkpoints stay valid.
fn chain_name(sources: &[&str]) -> Option<String> {
    let roots: Vec<&str> = sources.iter().map(|s| s.trim_end_matches('/').rsplit_once("/AWSDynamoDB/").map_or(*s, |(root, _)| root)).collect();
    let first = *roots.first()?;
    roots.iter().all(|r| *r == first).then(|| format!("incremental:{first}/AWSDynamoDB/"))
}

impl IncrementalSource {
    /// The exports, checked for gaps against the full export's start (`export_started_ms`).
    pub fn new(table: &str, mut exports: Vec<IncrementalExport>, export_started_ms: Option<i64>) -> Result<IncrementalSource, SyncError> {
        let stream_error = |reason: String| SyncError::Stream { table: table.into(), reason };
        if exports.is_empty() {
            return Err(stream_error("no incremental export given".into()));
        }
        exports.sort_by_key(|e| (e.from_ms, e.to_ms));
        let sources: Vec<&str> = exports.iter().map(|e| e.source.as_str()).collect();
        let name = chain_name(&sources).ok_or_else(|| stream_error(format!("the incremental exports must share one S3 prefix: {}", sources.join(", "))))?;
        if let Some(started) = export_started_ms {
            if exports[0].from_ms > started + 999 {
                return Err(stream_error(format!(
                    "the first incremental export ({}) starts at {} ms, after the export began ({started} ms): changes in between would be missed; {}",
                    exports[0].source,
                    exports[0].from_ms,
                    crate::error::REEXPORT
                )));
            }
        }
        for pair in exports.windows(2) {
            if pair[1].from_ms > pair[0].to_ms {
                return Err(stream_error(format!(
                    "incremental export {} starts at {} ms, after {} ends ({} ms): changes in between would be missed",
                    pair[1].source, pair[1].from_ms, pair[0].source, pair[0].to_ms
                )));
            }
        }
        let mut shards = Vec::with_capacity(exports.len());
        let mut parent: Option<String> = None;
        for e in exports {
            let id = export_id(&e.source).to_string();
            crossdock_core::layout::validate_segment("export id", &id).map_err(|err| stream_error(err.to_string()))?;
            let mut records = e.records;
            // Per key only the last change counts: the latest write goes last.
            records.sort_by_key(|r| r.write_micros.unwrap_or(i64::MIN));
            let changes = records
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let (kind, item) = match r.new_image {
                        Some(image) => (ChangeKind::Upsert, image),
                        None => (ChangeKind::Delete, r.keys),
                    };
                    Change { kind, item, sequence: format!("{i:012}"), created_ms: r.write_micros.map(|m| m / 1000) }
                })
                .collect();
            shards.push(Shard { id: id.clone(), parent: parent.replace(id), changes });
        }
        Ok(IncrementalSource { table: table.into(), name, shards })
    }

    /// Reads every export (`s3://bucket/…/AWSDynamoDB/{export-id}/`) in full, checking
    /// each data file against its manifest.
    pub async fn open(s3: &aws_sdk_s3::Client, table: &str, urls: &[String], export_started_ms: Option<i64>) -> Result<IncrementalSource, SyncError> {
        let mut exports = Vec::with_capacity(urls.len());
        for url in urls {
            let e = crossdock_export::native::read_incremental(s3, url).await.map_err(|e| SyncError::Source {
                table: table.into(),
                stream: url.clone(),
                shard: None,
                op: "read incremental export",
                message: e.to_string(),
                retryable: false,
            })?;
            exports.push(e);
        }
        IncrementalSource::new(table, exports, export_started_ms)
    }

    fn shard(&self, id: &str) -> Result<&Shard, SyncError> {
        self.shards.iter().find(|s| s.id == id).ok_or_else(|| SyncError::Expired {
            table: self.table.clone(),
            stream: self.name.clone(),
            shard: id.into(),
            reason: "this incremental export is no longer given (pass every export since the full one with --incremental)".into(),
        })
    }
}

impl ChangeSource for IncrementalSource {
    fn stream(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "incremental"
    }

    /// Exports stay in S3 until someone deletes them.
    fn retention(&self) -> Duration {
        Duration::MAX
    }

    async fn shards(&self) -> Result<Vec<ShardInfo>, SyncError> {
        Ok(self.shards.iter().map(|s| ShardInfo { id: s.id.clone(), parents: s.parent.iter().cloned().collect() }).collect())
    }

    async fn iterator(&self, shard: &str, from: &Position) -> Result<String, SyncError> {
        let sh = self.shard(shard)?;
        let index = match from {
            Position::TrimHorizon => 0,
            Position::After(seq) => sh.changes.iter().position(|c| c.sequence.as_str() > seq.as_str()).unwrap_or(sh.changes.len()),
        };
        Ok(index.to_string())
    }

    async fn read(&self, shard: &str, iterator: &str, limit: usize) -> Result<Read, SyncError> {
        let sh = self.shard(shard)?;
        let index = iterator.parse::<usize>().unwrap_or(0).min(sh.changes.len());
        let end = (index + limit.max(1)).min(sh.changes.len());
        let at_end = end == sh.changes.len();
        // An export is complete when it is given: read to its end, it is finished.
        Ok(Read { changes: sh.changes[index..end].to_vec(), next: (!at_end).then(|| end.to_string()), at_tip: at_end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossdock_core::item::{AttributeValue, Item};
    use crossdock_export::native::IncrementalRecord;

    fn item(pk: &str, n: i64) -> Item {
        let mut it = Item::new();
        it.insert("pk".into(), AttributeValue::S(pk.into()));
        it.insert("n".into(), AttributeValue::N(n.to_string()));
        it
    }

    fn keys(pk: &str) -> Item {
        let mut it = Item::new();
        it.insert("pk".into(), AttributeValue::S(pk.into()));
        it
    }

    fn export(id: &str, from_ms: i64, to_ms: i64, records: Vec<IncrementalRecord>) -> IncrementalExport {
        IncrementalExport { source: format!("s3://b/inc/AWSDynamoDB/{id}/"), from_ms, to_ms, records }
    }

    fn upsert(pk: &str, n: i64, at: i64) -> IncrementalRecord {
        IncrementalRecord { keys: keys(pk), new_image: Some(item(pk, n)), write_micros: Some(at * 1000) }
    }

    #[tokio::test]
    async fn exports_chain_in_export_time_order_and_read_to_their_end() {
        let later =
            export("0002-b", 2_000, 3_000, vec![upsert("a", 3, 2_500), IncrementalRecord { keys: keys("b"), new_image: None, write_micros: Some(2_100_000) }]);
        let first = export("0001-a", 1_000, 2_000, vec![upsert("a", 2, 1_900), upsert("b", 1, 1_100)]);
        let s = IncrementalSource::new("T", vec![later, first], Some(1_000)).expect("contiguous");
        assert_eq!(s.stream(), "incremental:s3://b/inc/AWSDynamoDB/");
        let shards = s.shards().await.expect("shards");
        assert_eq!(shards, vec![ShardInfo { id: "0001-a".into(), parents: vec![] }, ShardInfo { id: "0002-b".into(), parents: vec!["0001-a".into()] }]);
        // Within an export the latest write goes last.
        let it = s.iterator("0001-a", &Position::TrimHorizon).await.expect("iterator");
        let r = s.read("0001-a", &it, 1).await.expect("read");
        assert_eq!((r.changes[0].item["pk"].clone(), r.next.is_some(), r.at_tip), (AttributeValue::S("b".into()), true, false));
        let r = s.read("0001-a", r.next.as_deref().expect("more"), 10).await.expect("read");
        assert_eq!((r.changes.len(), r.changes[0].created_ms, r.next, r.at_tip), (1, Some(1_900), None, true));
        // A delete carries the keys; reading after a checkpoint skips what was applied.
        let it = s.iterator("0002-b", &Position::After("000000000000".into())).await.expect("iterator");
        let r = s.read("0002-b", &it, 10).await.expect("read");
        assert_eq!((r.changes.len(), r.changes[0].kind), (1, ChangeKind::Upsert));
        let all = s.read("0002-b", "0", 10).await.expect("read");
        assert_eq!((all.changes[0].kind, all.changes[0].item.len()), (ChangeKind::Delete, 1));
    }

    #[test]
    fn gaps_before_or_between_exports_are_refused() {
        let e = IncrementalSource::new("T", vec![export("0001-a", 5_000, 6_000, vec![])], Some(1_000)).expect_err("starts after the export");
        assert!(e.to_string().contains("would be missed"), "{e}");
        // Within the directory timestamp's second is fine.
        assert!(IncrementalSource::new("T", vec![export("0001-a", 1_999, 6_000, vec![])], Some(1_000)).is_ok());
        let e =
            IncrementalSource::new("T", vec![export("0001-a", 1_000, 2_000, vec![]), export("0002-b", 2_500, 3_000, vec![])], Some(1_000)).expect_err("gap");
        assert!(e.to_string().contains("after s3://b/inc/AWSDynamoDB/0001-a/ ends"), "{e}");
        let mut other = export("0002-b", 2_000, 3_000, vec![]);
        other.source = "s3://b/elsewhere/AWSDynamoDB/0002-b/".into();
        assert!(IncrementalSource::new("T", vec![export("0001-a", 1_000, 2_000, vec![]), other], None).is_err(), "one prefix");
        assert!(IncrementalSource::new("T", vec![], None).is_err());
    }
}
